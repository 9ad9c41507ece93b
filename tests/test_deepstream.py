"""DeepStream's nvinfer files from a real export: the keys, nvinfer's arithmetic, the scores graph."""
from __future__ import annotations

import configparser
import dataclasses
import json

import numpy as np
import onnx
import pytest

from fcn_deploy.converters.deepstream import APP_CONFIG, INFER_CONFIG, LABELS, ONNX_FILE, write_deepstream
from fcn_deploy.cli import main
from fcn_deploy.errors import FcnDeployError
from fcn_deploy.normalization import TORCHVISION_IMAGENET
from fcn_deploy.runtime.backends import open_backend
from fcn_deploy.runtime.metadata import ModelMetadata
from fcn_deploy.runtime.model_files import bundled_onnx

from onnx_helpers import assert_one_line_error, exported_onnx, run_cli, scene_frames

ort = pytest.importorskip("onnxruntime")

# Every key Gst-nvinfer's config-file parser knows in its [property] group, as NVIDIA's
# gstnvinfer_property_parser.h defines them (DeepStream 6.4 SDK API reference,
# https://docs.nvidia.com/metropolis/deepstream/6.4/dev-guide/sdk-api/gstnvinfer__property__parser_8h_source.html;
# the same list as the Gst-nvinfer "Gst properties / config file" table of the plugin guide).
NVINFER_KEYS = frozenset("""
gie-unique-id process-mode interval labelfile-path gpu-id secondary-reinfer-interval output-tensor-meta
enable-dla use-dla-core batch-size tensor-meta-pool-size network-mode model-engine-file int8-calib-file
workspace-size output-blob-names is-classifier network-type force-implicit-batch-dim infer-dims
output-io-formats layer-device-precision model-color-format net-scale-factor offsets mean-file
maintain-aspect-ratio symmetric-padding scaling-filter scaling-compute-hw network-input-order
input-tensor-from-meta custom-lib-path parse-bbox-func-name parse-bbox-instance-mask-func-name
engine-create-func-name parse-classifier-func-name custom-network-config model-file proto-file uff-file
uff-input-order input-dims uff-input-dims uff-input-blob-name tlt-encoded-model tlt-model-key onnx-file
num-detected-classes enable-dbscan cluster-mode classifier-type classifier-threshold classifier-async-mode
segmentation-threshold segmentation-output-order output-instance-mask input-object-min-width
input-object-min-height input-object-max-width input-object-max-height operate-on-gie-id
operate-on-class-ids filter-out-class-ids parse-func
""".split())
# What the issue asks the segmentation config to carry.
REQUIRED = ("network-type", "num-detected-classes", "output-blob-names", "segmentation-threshold", "net-scale-factor",
            "offsets", "model-color-format", "infer-dims", "network-mode", "onnx-file", "model-engine-file")


def read_property(path) -> dict:
    parser = configparser.ConfigParser(interpolation=None)  # GKeyFile syntax: [group] and key=value
    parser.optionxform = str
    parser.read(path)
    return dict(parser["property"])


def nvinfer_input(frames_bgr: np.ndarray, keys: dict) -> np.ndarray:
    """What nvinfer feeds the network: y = net-scale-factor * (x - offsets[c]), planar, in
    model-color-format's channel order (0 RGB, 1 BGR)."""
    x = frames_bgr[..., ::-1] if keys["model-color-format"] == "0" else frames_bgr
    offsets = np.array([float(v) for v in keys["offsets"].split(";")], np.float32)
    y = float(keys["net-scale-factor"]) * (x.astype(np.float32) - offsets)
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2))


def run_onnx(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_deepstream_files_from_a_real_logits_export(tmp_path):
    logits = exported_onnx(tmp_path / "logits.onnx", logits=True, num_classes=3)
    files = write_deepstream(logits, str(tmp_path / "ds"), size=(64, 96))
    keys = read_property(files.infer_config)
    assert set(keys) <= NVINFER_KEYS, set(keys) - NVINFER_KEYS
    for key in REQUIRED:
        assert key in keys, key
    assert keys["network-type"] == "2" and keys["num-detected-classes"] == "3" and keys["infer-dims"] == "3;64;96"
    assert keys["output-blob-names"] == "scores" and keys["onnx-file"] == ONNX_FILE and keys["network-mode"] == "0"
    assert (tmp_path / "ds" / LABELS).read_text().splitlines() == ["c0", "c1", "c2"]
    app = configparser.ConfigParser(interpolation=None)
    app.read(tmp_path / "ds" / APP_CONFIG)
    assert app["primary-gie"]["config-file"] == INFER_CONFIG and app["segvisual"]["enable"] == "1"

    # nvinfer's own arithmetic on the frames, then its arg-max over the scores, gives our labels.
    frames = scene_frames(2, 64, 96, seed=4)
    scores = run_onnx(files.onnx_path, nvinfer_input(frames, keys))
    assert scores.shape == (2, 3, 64, 96) and np.allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    with open_backend(logits) as backend:
        assert np.array_equal(scores.argmax(axis=1), backend.infer_labels(frames))
    # and fcn-deploy's own backend still runs the DeepStream graph correctly, from its metadata
    with open_backend(files.onnx_path) as backend:
        assert np.array_equal(backend.infer_labels(frames), scores.argmax(axis=1))

    with pytest.raises(FcnDeployError, match="exists; pass --overwrite"):
        write_deepstream(logits, str(tmp_path / "ds"), size=(64, 96))


def test_per_channel_std_goes_into_the_graph(tmp_path):
    """nvinfer has one scale factor: a per-channel std is applied by a Mul in front of the graph."""
    path = tmp_path / "imagenet_logits.onnx"
    model = onnx.load(exported_onnx(tmp_path / "base.onnx", logits=True, num_classes=3))
    props = {p.key: p.value for p in model.metadata_props}
    meta = ModelMetadata.from_props(props)
    meta = dataclasses.replace(meta, normalization=TORCHVISION_IMAGENET)  # say the net wants ImageNet's mean/std
    del model.metadata_props[:]
    for key, value in meta.to_props().items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    files = write_deepstream(str(path), str(tmp_path / "ds"), size=(48, 64))
    keys = read_property(files.infer_config)
    assert keys["net-scale-factor"] == "1.0" and keys["model-color-format"] == "0"
    frames = scene_frames(1, 48, 64, seed=8)
    scores = run_onnx(files.onnx_path, nvinfer_input(frames, keys))
    norm = TORCHVISION_IMAGENET
    reference = (frames[..., ::-1].astype(np.float32) - np.array(norm.mean, np.float32)) / np.array(norm.std, np.float32)
    logits = run_onnx(path, np.ascontiguousarray(reference.transpose(0, 3, 1, 2)))
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    assert np.allclose(scores, expected, atol=1e-5)
    written = {p.key: p.value for p in onnx.load(files.onnx_path).metadata_props}
    assert json.loads(written["normalization"])["std"] == [1.0, 1.0, 1.0]


def test_a_labels_graph_is_refused(tmp_path):
    with pytest.raises(FcnDeployError, match="export --logits"):
        write_deepstream(str(bundled_onnx("camvid")), str(tmp_path / "ds"), size=(64, 96))
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("args, needle", [
    (["--deepstream", "DS", "--int8", "--calib", "x"], "--deepstream"),
    (["--deepstream", "DS", "--output", "a.onnx"], "--deepstream"),
    (["--triton", "REPO", "--output", "a.onnx"], "--triton"),
    (["--name", "x"], "--triton"),
])
def test_export_option_conflicts_are_one_line(tmp_path, capsys, args, needle):
    args = [str(tmp_path / a) if a in ("DS", "REPO") else a for a in args]
    assert main(["export", *args]) == 1
    errors = [l for l in capsys.readouterr().err.splitlines() if l.startswith("fcn-deploy: error:")]
    assert len(errors) == 1 and needle in errors[0]
    assert not list(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.slow
def test_export_deepstream_and_triton_of_the_bundled_model(tmp_path):
    result = run_cli(["export", "--deepstream", str(tmp_path / "ds")], timeout=600)
    assert result.returncode == 0, result.stderr
    keys = read_property(tmp_path / "ds" / INFER_CONFIG)
    assert keys["infer-dims"] == "3;360;640" and keys["num-detected-classes"] == "11"  # 1080p camera, aspect kept
    assert keys["maintain-aspect-ratio"] == "1" and keys["symmetric-padding"] == "1"
    assert not list((tmp_path / "ds").glob(".*.onnx"))  # the intermediate logits graph is gone
    result = run_cli(["export", "--triton", str(tmp_path / "repo"), "--name", "road"], timeout=600)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "repo" / "road" / "config.pbtxt").is_file()
    assert (tmp_path / "repo" / "road" / "1" / "model.onnx").is_file()
    again = run_cli(["export", "--triton", str(tmp_path / "repo"), "--name", "road"])
    assert_one_line_error(again, "already holds a Triton model")
