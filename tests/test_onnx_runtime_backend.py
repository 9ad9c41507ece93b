"""The ONNX Runtime backend: both graph layouts, input checks, providers, errors, options."""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fcn_deploy.errors import FcnDeployError
from fcn_deploy.runtime.backends import BackendError, open_backend
from fcn_deploy.runtime.backends.base import check_frames, normalize_frames
from fcn_deploy.runtime.backends.onnxruntime import (
    default_engine_cache_dir,
    parse_device,
    tensorrt_options,
    tensorrt_provider_options,
)
from fcn_deploy.runtime.metadata import ModelMetadata

from onnx_helpers import (
    assert_one_line_error,
    graph_failing_off_8x8,
    random_frames,
    run_cli,
    write_checkpoint,
    write_images,
)

ort = pytest.importorskip("onnxruntime")
HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()
HAS_TRT = "TensorrtExecutionProvider" in ort.get_available_providers()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A checkpoint exported twice: the deployment graph and the plain logits graph."""
    import torch

    from fcn_deploy.converters.onnx_export import export
    from fcn_deploy.converters.resolve import model_from_checkpoint

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("backend")
    resolved = model_from_checkpoint(str(write_checkpoint(folder / "ck.pt")))
    deploy = export(resolved, str(folder / "deploy.onnx")).path
    logits = export(resolved, str(folder / "logits.onnx"), fold_preprocessing=False, fold_argmax=False).path
    torch.set_num_threads(before)
    return {"deploy": deploy, "logits": logits, "folder": folder}


def test_both_layouts_give_the_same_labels(exported):
    frames = random_frames(2, 97, 131)
    with open_backend(exported["deploy"]) as deploy, open_backend(exported["logits"]) as plain:
        assert deploy.input_spec.dtype == "uint8" and deploy.input_spec.shape == ("N", "H", "W", 3)
        assert plain.input_spec.dtype == "float32" and plain.input_spec.shape == ("N", 3, "H", "W")
        assert deploy.output_kind == "labels" and plain.output_kind == "logits"
        labels = deploy.infer(frames)
        logits = plain.infer(frames)
        assert labels.shape == (2, 97, 131) and labels.dtype == np.uint8
        assert logits.shape == (2, 5, 97, 131) and logits.dtype == np.float32
        # The numpy pre-processing is the folded one, operation for operation.
        np.testing.assert_array_equal(logits, plain.run_graph(normalize_frames(frames, plain.metadata.normalization)))
        assert np.mean(plain.infer_labels(frames) == labels) >= 0.999
        np.testing.assert_array_equal(deploy.infer_labels(frames), labels)
        assert deploy.metadata == dataclasses.replace(plain.metadata, input_layout="NHWC_BGR_UINT8", output="labels")


@pytest.mark.runtime
def test_normalize_frames_matches_hand_computation():
    from fcn_deploy.normalization import Normalization

    frames = np.array([[[[10, 20, 30]]]], dtype=np.uint8)  # one BGR pixel
    rgb = Normalization("RGB", (1.0, 2.0, 3.0), (2.0, 4.0, 8.0))
    np.testing.assert_allclose(normalize_frames(frames, rgb)[0, :, 0, 0], [(30 - 1) / 2, (20 - 2) / 4, (10 - 3) / 8])
    bgr = Normalization("BGR", (1.0, 2.0, 3.0), (1.0, 1.0, 1.0))
    np.testing.assert_allclose(normalize_frames(frames, bgr)[0, :, 0, 0], [9, 18, 27])


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((97, 131, 3), np.uint8), "rank 3"),
        (np.zeros((1, 1, 97, 131, 3), np.uint8), "rank 5"),
        (np.zeros((1, 97, 131, 4), np.uint8), "4 channels"),
        (np.zeros((1, 97, 131, 1), np.uint8), "1 channels"),
        (np.zeros((1, 97, 131, 3), np.float32), "float32"),
        (np.zeros((0, 97, 131, 3), np.uint8), "empty"),
    ],
)
def test_bad_input_is_one_clear_error(exported, bad, message):
    with open_backend(exported["deploy"]) as backend:
        with pytest.raises(BackendError, match=message) as info:
            backend.infer(bad)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, FcnDeployError)


def test_run_graph_checks_the_graph_spec(exported):
    with open_backend(exported["logits"]) as backend:
        with pytest.raises(BackendError, match="axis 1"):
            backend.run_graph(np.zeros((1, 4, 32, 32), np.float32))
        with pytest.raises(BackendError, match="rank 3"):
            backend.run_graph(np.zeros((3, 32, 32), np.float32))


@pytest.mark.runtime
def test_missing_corrupt_and_unknown_files(tmp_path):
    with pytest.raises(BackendError, match="model file not found"):
        open_backend(tmp_path / "nope.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07this is not a protobuf" * 10)
    with pytest.raises(BackendError, match="cannot load ONNX model") as info:
        open_backend(corrupt)
    assert "\n" not in str(info.value)
    other = tmp_path / "model.bin"
    other.write_bytes(b"x")
    with pytest.raises(BackendError, match="unknown model file type"):
        open_backend(other)


def test_requested_provider_must_exist(exported):
    with pytest.raises(BackendError, match="unknown device"):
        open_backend(exported["deploy"], device="npu")
    if not HAS_CUDA:
        with pytest.raises(BackendError, match="CUDAExecutionProvider"):
            open_backend(exported["deploy"], device="cuda")
    if not HAS_TRT:
        with pytest.raises(BackendError, match="TensorrtExecutionProvider"):
            open_backend(exported["deploy"], device="tensorrt")
    with pytest.raises(BackendError, match="TensorRT provider"):
        open_backend(exported["deploy"], device="cpu", fp16=True)


def test_threads_option_and_close(exported):
    with pytest.raises(BackendError, match="threads"):
        open_backend(exported["deploy"], threads=0)
    backend = open_backend(exported["deploy"], threads=1)
    assert backend.providers == ["CPUExecutionProvider"] and backend.device == "cpu"
    assert backend.infer(random_frames(1, 8, 8)).shape == (1, 8, 8)
    backend.close()
    with pytest.raises(BackendError, match="closed"):
        backend.infer(random_frames(1, 8, 8))


@pytest.mark.runtime
def test_parse_device_and_tensorrt_options():
    assert parse_device("cpu") == ("cpu", 0)
    assert parse_device("CUDA:1") == ("cuda", 1)
    with pytest.raises(BackendError):
        parse_device("cuda:x")
    opts = tensorrt_options(
        0, "input", "NHWC_BGR_UINT8", fp16=True, engine_cache_dir="/c", timing_cache_dir="/t",
        profile_shapes={"min": (1, 240, 320), "opt": (1, 360, 480), "max": (2, 720, 1280)}, workspace_gb=2,
    )
    assert opts["trt_fp16_enable"] == "True" and opts["trt_int8_enable"] == "False"
    assert opts["trt_engine_cache_enable"] == "True" and opts["trt_engine_cache_path"] == "/c"
    assert opts["trt_timing_cache_enable"] == "True" and opts["trt_timing_cache_path"] == "/t"
    assert opts["trt_profile_min_shapes"] == "input:1x240x320x3"
    assert opts["trt_profile_max_shapes"] == "input:2x720x1280x3"
    assert opts["trt_max_workspace_size"] == str(2 << 30)
    nchw = tensorrt_options(0, "input", "NCHW_FLOAT32", profile_shapes={"min": (1, 8, 8), "opt": (1, 8, 8), "max": (1, 8, 8)})
    assert nchw["trt_profile_opt_shapes"] == "input:1x3x8x8"
    with pytest.raises(BackendError, match="max"):
        tensorrt_options(0, "input", "NCHW_FLOAT32", profile_shapes={"min": (1, 8, 8), "opt": (1, 8, 8)})


@pytest.fixture(scope="module")
def precisions(exported):
    """The same checkpoint exported as FP16 and as both INT8 schemes (real calibration)."""
    import torch

    from fcn_deploy.converters.calibration import load_calibration_frames
    from fcn_deploy.converters.onnx_export import export
    from fcn_deploy.converters.resolve import model_from_checkpoint

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = exported["folder"]
    resolved = model_from_checkpoint(str(folder / "ck.pt"))
    frames = load_calibration_frames(str(write_images(folder / "calib", count=2)), limit=2)
    files = {
        "fp16": export(resolved, str(folder / "m_fp16.onnx"), precision="fp16").path,
        "s8s8": export(resolved, str(folder / "m_int8.onnx"), precision="int8", calib_frames=frames).path,
        "u8s8": export(resolved, str(folder / "m_u8s8.onnx"), precision="int8", calib_frames=frames,
                       int8_scheme="u8s8").path,
    }
    torch.set_num_threads(before)
    return files


def test_tensorrt_provider_precision_comes_from_the_model(exported, precisions, tmp_path):
    cache = str(tmp_path / "cache")

    def flags(path, **options):
        opts = tensorrt_provider_options(str(path), engine_cache_dir=cache, **options)
        return opts["trt_fp16_enable"], opts["trt_int8_enable"]

    assert flags(exported["deploy"]) == ("False", "False")
    assert flags(exported["deploy"], fp16=True) == ("True", "False")  # FP16 kernels for an FP32 graph
    assert flags(precisions["fp16"]) == ("True", "False")
    assert flags(precisions["s8s8"]) == ("False", "True")  # Q/DQ: the INT8 flag, no FP16
    int8 = tensorrt_provider_options(str(precisions["s8s8"]), engine_cache_dir=cache)
    # A Q/DQ graph carries its scales: no calibration table may be named for it.
    assert not any("calibration" in key for key in int8)
    with pytest.raises(BackendError, match="INT8 Q/DQ graph"):
        tensorrt_provider_options(str(precisions["s8s8"]), engine_cache_dir=cache, fp16=True)
    with pytest.raises(BackendError, match="u8s8 INT8 graph for ONNX Runtime on CPUs") as info:
        tensorrt_provider_options(str(precisions["u8s8"]), engine_cache_dir=str(tmp_path / "never"))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "never").exists()  # refused before any folder is made
    # The profile is written with the graph's own input name and layout.
    opts = tensorrt_provider_options(str(exported["logits"]), engine_cache_dir=cache,
                                     profile_shapes={"min": (1, 8, 8), "opt": (1, 16, 16), "max": (2, 32, 32)})
    with open_backend(exported["logits"]) as plain:
        assert opts["trt_profile_opt_shapes"] == f"{plain.input_spec.name}:1x3x16x16"


def test_tensorrt_provider_precision_of_a_foreign_graph_is_fp32(tmp_path):
    plain = _foreign_graph(tmp_path / "plain.onnx", ["N", "H", "W", 3], ["N", "H", "W"])
    opts = tensorrt_provider_options(str(plain), engine_cache_dir=str(tmp_path / "c"))
    assert (opts["trt_fp16_enable"], opts["trt_int8_enable"]) == ("False", "False")


def _sha12(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()[:12]


def test_engine_cache_beside_the_model_keyed_by_its_content(exported, tmp_path, caplog):
    models = tmp_path / "models"
    models.mkdir()
    model = models / "camvid.onnx"
    shutil.copy(exported["deploy"], model)
    with caplog.at_level(logging.INFO, logger="fcn_deploy.runtime.backends.onnxruntime"):
        opts = tensorrt_provider_options(str(model), user_cache=str(tmp_path / "user"))
    folder = models / "camvid.trt-cache" / _sha12(model)
    assert opts["trt_engine_cache_enable"] == "True" and opts["trt_engine_cache_path"] == str(folder)
    assert folder.is_dir() and not (tmp_path / "user").exists()
    # The timing cache goes with the engines (trt_timing_cache_path needs ONNX Runtime 1.17+).
    assert opts["trt_timing_cache_enable"] == "True" and "trt_timing_cache_path" not in opts
    assert any(str(folder) in record.getMessage() for record in caplog.records)

    # Re-exported weights under the same name and tensor names (ONNX Runtime's own cache key
    # would match): another folder, so the old engine is never used.
    proto = onnx.load(str(model))
    weight = next(t for t in proto.graph.initializer if t.data_type == TensorProto.FLOAT and len(t.dims) == 4)
    values = numpy_helper.to_array(weight).copy()
    values.flat[0] += 1.0
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    onnx.save(proto, str(model))
    again = tensorrt_provider_options(str(model), user_cache=str(tmp_path / "user"))
    assert again["trt_engine_cache_path"] == str(models / "camvid.trt-cache" / _sha12(model)) != str(folder)

    # engine_cache_dir and timing_cache_dir override the defaults, as they are.
    mine = tensorrt_provider_options(str(model), engine_cache_dir=str(tmp_path / "e"), timing_cache_dir=str(tmp_path / "t"))
    assert mine["trt_engine_cache_path"] == str(tmp_path / "e") and (tmp_path / "e").is_dir()
    assert mine["trt_timing_cache_path"] == str(tmp_path / "t") and (tmp_path / "t").is_dir()


def test_engine_cache_falls_back_to_the_user_cache(exported, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    model = models / "camvid.onnx"
    shutil.copy(exported["deploy"], model)
    (models / "camvid.trt-cache").write_text("a file where the cache folder would go")
    opts = tensorrt_provider_options(str(model), user_cache=str(tmp_path / "user"))
    folder = tmp_path / "user" / "ort-trt" / f"camvid-{_sha12(model)}"
    assert opts["trt_engine_cache_path"] == str(folder) and folder.is_dir()
    assert (models / "camvid.trt-cache").read_text().startswith("a file")  # left alone


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_engine_cache_of_a_model_in_a_read_only_folder(exported, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    model = models / "camvid.onnx"
    shutil.copy(exported["deploy"], model)
    models.chmod(0o555)
    try:
        folder = default_engine_cache_dir(str(model), "ab" * 32, str(tmp_path / "user"))
    finally:
        models.chmod(0o755)
    assert folder == str(tmp_path / "user" / "ort-trt" / "camvid-abababababab")


def test_in_flight_options(exported):
    with open_backend(exported["deploy"]) as backend:
        assert backend.in_flight == 1  # on a CPU two runs would share the same cores
    with pytest.raises(BackendError, match="in_flight must be >= 1"):
        open_backend(exported["deploy"], in_flight=0)
    with pytest.raises(BackendError, match="threads >= 2"):
        open_backend(exported["deploy"], in_flight=2, threads=1)


@pytest.mark.parametrize("in_flight", [1, 2])
def test_submit_and_result(exported, in_flight):
    frames = [random_frames(1, 40 + 8 * i, 56, seed=i) for i in range(5)]
    with open_backend(exported["deploy"], threads=1) as reference:
        expected = [reference.infer(f) for f in frames]
    with open_backend(exported["deploy"], threads=2, in_flight=in_flight) as backend:
        assert backend.in_flight == in_flight
        tickets = [backend.submit(backend.prepare(f)) for f in frames]
        # All five were handed over before any was collected; at most in_flight ran at once.
        assert backend.peak_outstanding == 5 and backend.running <= in_flight
        for i in (4, 0, 2, 1, 3):  # any order
            np.testing.assert_array_equal(backend.result(tickets[i]), expected[i])
        with pytest.raises(BackendError, match="no frame in flight with ticket"):
            backend.result(tickets[0])
        with pytest.raises(BackendError, match="float32"):
            backend.submit(np.zeros((1, 8, 8, 3), np.float32))


def test_a_failing_run_raises_from_result_and_the_backend_goes_on(exported, tmp_path):
    with open_backend(exported["deploy"]) as backend:
        props = backend.metadata.to_props()
    path = graph_failing_off_8x8(tmp_path / "fails.onnx", props)
    good, bad = random_frames(1, 8, 8), random_frames(1, 9, 9)
    with open_backend(path, threads=2, in_flight=2) as backend:
        first, second = backend.submit(backend.prepare(good)), backend.submit(backend.prepare(bad))
        assert backend.result(first).shape == (1, 8, 8)
        with pytest.raises(BackendError, match="ONNX Runtime failed on a frame") as info:
            backend.result(second)
        assert "\n" not in str(info.value)
        assert backend.running == 0
        np.testing.assert_array_equal(backend.infer(good), backend.result(backend.submit(good)))


def test_close_waits_for_the_runs_in_flight(exported):
    frames = random_frames(2, 360, 480)
    backend = open_backend(exported["deploy"], threads=2, in_flight=2)
    for frame in frames:
        backend.submit(backend.prepare(frame[None]))
    backend.close()
    assert backend.running == 0 and backend.session is None
    with pytest.raises(BackendError, match="closed"):
        backend.submit(frames[:1])
    with pytest.raises(BackendError, match="closed"):
        backend.result(0)


def _foreign_graph(path, input_shape, output_shape, props=None, in_type=TensorProto.UINT8, out_type=TensorProto.UINT8):
    x = helper.make_tensor_value_info("input", in_type, input_shape)
    y = helper.make_tensor_value_info("labels", out_type, output_shape)
    nodes = [helper.make_node("ReduceMax", ["input"], ["labels"], keepdims=0, axes=[len(input_shape) - 1])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (props or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def test_foreign_graphs(exported, tmp_path):
    with open_backend(exported["deploy"]) as backend:
        props = backend.metadata.to_props()
    plain = _foreign_graph(tmp_path / "plain.onnx", ["N", "H", "W", 3], ["N", "H", "W"])
    with pytest.raises(BackendError, match="no fcn-deploy metadata"):
        open_backend(plain)
    with open_backend(plain, require_metadata=False) as backend:
        assert backend.metadata is None
        frames = random_frames(1, 4, 5)
        np.testing.assert_array_equal(backend.run_graph(frames), frames.max(axis=-1))
        with pytest.raises(BackendError, match="no fcn-deploy metadata"):
            backend.infer(frames)
    # Metadata that does not describe the graph: a 4-channel input, a rank-3 input.
    four = _foreign_graph(tmp_path / "four.onnx", ["N", "H", "W", 4], ["N", "H", "W"], props)
    with pytest.raises(BackendError, match="has 4 channels"):
        open_backend(four)
    rank3 = _foreign_graph(tmp_path / "rank3.onnx", ["H", "W", 3], ["H", "W"], props)
    with pytest.raises(BackendError, match="has rank 3"):
        open_backend(rank3)


def test_cli_bad_models_are_one_line_errors(exported, tmp_path):
    """Missing, corrupt, wrong-rank and wrong-channel models through `fcn-deploy compare`."""
    with open_backend(exported["deploy"]) as backend:
        props = backend.metadata.to_props()
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"garbage" * 100)
    four = _foreign_graph(tmp_path / "four.onnx", ["N", "H", "W", 4], ["N", "H", "W"], props)
    rank3 = _foreign_graph(tmp_path / "rank3.onnx", ["H", "W", 3], ["H", "W"], props)
    cases = [
        (tmp_path / "missing.onnx", "model file not found"),
        (corrupt, "cannot load ONNX model"),
        (four, "has 4 channels"),
        (rank3, "has rank 3"),
    ]
    for path, needle in cases:
        result = run_cli(["compare", path, "--sizes", "8x8"], timeout=60)
        line = assert_one_line_error(result)
        assert needle in line or needle in result.stderr, line


@pytest.mark.runtime
def test_metadata_errors():
    with pytest.raises(FcnDeployError, match="no fcn-deploy metadata"):
        ModelMetadata.from_props({"other": "1"})
    with pytest.raises(FcnDeployError, match="upgrade fcn-deploy"):
        ModelMetadata.from_dict({"format": "fcn-deploy", "format_version": 99})
    with pytest.raises(FcnDeployError, match="malformed"):
        ModelMetadata.from_dict({"format": "fcn-deploy", "format_version": 1, "model_name": "x"})
    with pytest.raises(FcnDeployError, match="check_frames|rank"):
        check_frames(np.zeros((2, 2), np.uint8))


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="onnxruntime has no CUDAExecutionProvider here (CPU build or no GPU)")
def test_cuda_provider_matches_cpu(exported):
    frames = random_frames(2, 97, 131)
    with open_backend(exported["logits"], "cuda") as gpu, open_backend(exported["logits"]) as cpu:
        assert gpu.providers[0] == "CUDAExecutionProvider"
        a, b = gpu.infer(frames), cpu.infer(frames)
        assert np.abs(a - b).max() <= 1e-3 * (b.max() - b.min())


@pytest.mark.tensorrt
@pytest.mark.skipif(not HAS_TRT, reason="onnxruntime has no TensorrtExecutionProvider here")
def test_tensorrt_provider_runs_with_cache_and_profile(exported, tmp_path):
    frames = random_frames(1, 96, 128)
    options = dict(engine_cache_dir=str(tmp_path / "engines"), timing_cache_dir=str(tmp_path / "timing"),
                   profile_shapes={"min": (1, 64, 64), "opt": (1, 96, 128), "max": (2, 256, 256)})
    with open_backend(exported["deploy"], "tensorrt", **options) as trt, open_backend(exported["deploy"]) as cpu:
        assert trt.providers[0] == "TensorrtExecutionProvider"
        assert np.mean(trt.infer(frames) == cpu.infer(frames)) >= 0.999
    assert any((tmp_path / "engines").iterdir())


@pytest.mark.tensorrt
@pytest.mark.skipif(not HAS_TRT, reason="onnxruntime has no TensorrtExecutionProvider here")
@pytest.mark.parametrize("kind", ["fp32", "fp16", "s8s8"])
def test_tensorrt_provider_default_cache_precision_and_two_in_flight(exported, precisions, tmp_path, kind):
    model = tmp_path / f"{kind}.onnx"
    shutil.copy(exported["deploy"] if kind == "fp32" else precisions[kind], model)
    frames = [random_frames(1, 96, 128, seed=i) for i in range(4)]
    profile = {"min": (1, 64, 64), "opt": (1, 96, 128), "max": (1, 256, 256)}
    with open_backend(model, "tensorrt", profile_shapes=profile) as trt, open_backend(model) as cpu:
        assert trt.providers[0] == "TensorrtExecutionProvider" and trt.in_flight == 2
        tickets = [trt.submit(trt.prepare(f)) for f in frames]
        agreement = {"fp32": 0.999, "fp16": 0.98, "s8s8": 0.95}[kind]
        for ticket, frame in zip(tickets, frames):
            assert np.mean(trt.result(ticket) == cpu.infer(frame)) >= agreement
    cache = tmp_path / f"{kind}.trt-cache" / _sha12(model)
    engines = sorted(cache.glob("*.engine"))
    assert engines, sorted(p.name for p in cache.iterdir())
    built = {p: p.stat().st_mtime_ns for p in engines}
    with open_backend(model, "tensorrt", profile_shapes=profile) as trt:
        trt.infer(frames[0])
    assert {p: p.stat().st_mtime_ns for p in engines} == built  # loaded from the cache, not rebuilt
