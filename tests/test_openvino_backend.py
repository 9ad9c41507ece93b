"""The OpenVINO backend: label parity with ONNX Runtime on real exported graphs and on the
bundled model, the asynchronous requests, the model cache, and one-line errors.

Skipped where openvino is not installed (the JetPack venvs of .ci/jetson-env).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fcn_deploy.runtime.backends import BackendError, open_backend
from fcn_deploy.runtime.backends.openvino import is_openvino_device, parse_openvino_device, shared_core

from onnx_helpers import assert_one_line_error, exported_onnx, random_frames, run_cli, scene_frames

ov = pytest.importorskip("openvino", reason="openvino is not installed (pip install 'fcn-deploy[openvino]')")
pytest.importorskip("onnxruntime", reason="the parity tests compare with ONNX Runtime")

ASSETS = Path(__file__).resolve().parents[1] / "fcn_deploy" / "assets"
BUNDLED = ASSETS / "camvid.onnx"


def clip_frames(count: int, step: int = 12) -> np.ndarray:
    """``count`` frames of the bundled clip, ``step`` frames apart (real road scenes)."""
    import cv2

    capture = cv2.VideoCapture(str(ASSETS / "camvid_clip.mp4"))
    frames = []
    index = 0
    while len(frames) < count:
        ok, frame = capture.read()
        assert ok, "the bundled clip ended early"
        if index % step == 0:
            frames.append(frame)
        index += 1
    capture.release()
    return np.stack(frames)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    return float(np.mean(a == b))


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("openvino")
    return {
        "fp32": exported_onnx(folder / "fp32.onnx"),
        "logits": exported_onnx(folder / "logits.onnx", logits=True),
        "int8": exported_onnx(folder / "int8.onnx", precision="int8"),
    }


@pytest.mark.runtime
def test_device_strings():
    assert is_openvino_device("openvino") and is_openvino_device("OpenVINO:GPU")
    assert not is_openvino_device("cpu") and not is_openvino_device("ort-cpu")
    assert parse_openvino_device("openvino") == "CPU"
    assert parse_openvino_device("openvino:gpu") == "GPU"
    assert parse_openvino_device("openvino:GPU.1") == "GPU.1"
    with pytest.raises(BackendError, match="bad OpenVINO device"):
        parse_openvino_device("openvino:G P U")


@pytest.mark.parametrize("size", [(64, 96), (97, 131)])
def test_fp32_labels_agree_with_onnx_runtime(graphs, tmp_path, size):
    frames = scene_frames(2, *size, seed=5)
    with open_backend(graphs["fp32"], "openvino", threads=1, cache_dir=str(tmp_path)) as ovb, \
            open_backend(graphs["fp32"], "ort-cpu", threads=1) as ort:
        assert ovb.device == "openvino" and ovb.providers[0].startswith("OpenVINO")
        assert ovb.input_spec.dtype == "uint8" and ovb.input_spec.shape[3] == 3
        assert ovb.output_kind == "labels" and ovb.metadata == ort.metadata
        assert agreement(ovb.infer(frames), ort.infer(frames)) >= 0.999


def test_logits_graph_matches_onnx_runtime(graphs, tmp_path):
    frames = scene_frames(2, 64, 96, seed=6)
    with open_backend(graphs["logits"], "openvino", threads=1, cache_dir=str(tmp_path)) as ovb, \
            open_backend(graphs["logits"], threads=1) as ort:
        assert ovb.input_spec.dtype == "float32" and ovb.output_kind == "logits"
        a, b = ovb.infer(frames), ort.infer(frames)
        assert a.dtype == np.float32 and a.shape == b.shape
        assert np.abs(a - b).max() <= 1e-3 * (b.max() - b.min())
        assert agreement(ovb.infer_labels(frames), ort.infer_labels(frames)) >= 0.999


def test_int8_graph_runs_as_quantised_as_in_onnx_runtime(graphs, tmp_path):
    """The s8s8 Q/DQ graph of a small untrained net: INT8 moves its labels a few percent from
    FP32's (near-ties everywhere), in both engines, which round differently. OpenVINO must
    lose no more than ONNX Runtime does (and must not run the graph in float, which would agree
    with FP32 far more closely than ONNX Runtime's INT8)."""
    frames = np.concatenate([scene_frames(2, 64, 96, seed=3), scene_frames(2, 64, 96, seed=5)])
    with open_backend(graphs["int8"], "openvino", threads=1, cache_dir=str(tmp_path)) as ovb, \
            open_backend(graphs["int8"], threads=1) as ort, open_backend(graphs["fp32"], threads=1) as fp32:
        assert ovb.metadata.precision == "int8"
        reference = fp32.infer(frames)
        ov_labels, ort_labels = ovb.infer(frames), ort.infer(frames)
        assert abs(agreement(ov_labels, reference) - agreement(ort_labels, reference)) <= 0.02
        assert agreement(ov_labels, ort_labels) >= 0.93


@pytest.mark.runtime
def test_bundled_model_on_the_bundled_clip(tmp_path):
    frames = clip_frames(4)
    with open_backend(BUNDLED, "openvino", threads=2, cache_dir=str(tmp_path)) as ovb, \
            open_backend(BUNDLED, "ort-cpu", threads=2) as ort:
        for frame in frames:
            assert agreement(ovb.infer(frame[None]), ort.infer(frame[None])) >= 0.999


@pytest.mark.parametrize("in_flight", [1, 2])
def test_submit_and_result(graphs, tmp_path, in_flight):
    frames = [scene_frames(1, 40 + 8 * i, 56, seed=i) for i in range(5)]
    with open_backend(graphs["fp32"], "openvino", threads=2, in_flight=in_flight, cache_dir=str(tmp_path)) as b:
        assert b.in_flight == in_flight
        expected = [b.infer(f) for f in frames]
        tickets = [b.submit(b.prepare(f)) for f in frames]  # more than in_flight before any result
        for i in (4, 0, 2, 1, 3):  # any order
            np.testing.assert_array_equal(b.result(tickets[i]), expected[i])
        with pytest.raises(BackendError, match="no frame in flight with ticket"):
            b.result(tickets[0])
        with pytest.raises(BackendError, match="float32"):
            b.submit(np.zeros((1, 8, 8, 3), np.float32))
        with pytest.raises(BackendError, match="rank 3"):
            b.infer(np.zeros((8, 8, 3), np.uint8))
        # Still usable after refused inputs.
        np.testing.assert_array_equal(b.infer(frames[0]), expected[0])
    with pytest.raises(BackendError, match="closed"):
        b.submit(frames[0])
    with pytest.raises(BackendError, match="closed"):
        b.result(0)


def test_each_input_shape_gets_a_static_compile(graphs, tmp_path):
    """The first STATIC_SHAPES input shapes each run a compile reshaped to them (faster than
    the dynamic one, which is released once a static one has taken over: each holds a copy of
    the weights); later shapes run the dynamic compile, made again. Labels agree with ONNX
    Runtime's on every one, and a shape seen before reuses its compile."""
    from fcn_deploy.runtime.backends.openvino import STATIC_SHAPES

    shapes = [(1, 48 + 8 * i, 64) for i in range(STATIC_SHAPES)] + [(2, 48, 64), (1, 40, 40)]
    static = [(n, h, w, 3) for n, h, w in shapes[:STATIC_SHAPES]]
    with open_backend(graphs["fp32"], "openvino", threads=1, cache_dir=str(tmp_path)) as ovb, \
            open_backend(graphs["fp32"], "ort-cpu", threads=1) as ort:
        assert ovb.compiled_shapes == [None]  # the dynamic compile, which checked the file
        for i, (n, h, w) in enumerate(shapes):
            frames = scene_frames(n, h, w, seed=i)
            assert agreement(ovb.infer(frames), ort.infer(frames)) >= 0.999
            if i == 0:
                assert ovb.compiled_shapes == static[:1]
        assert ovb.compiled_shapes == static + [None]
        frames = scene_frames(1, 48, 64, seed=0)  # seen before: its own compile again, nothing new
        assert agreement(ovb.infer(frames), ort.infer(frames)) >= 0.999
        assert ovb.compiled_shapes == static + [None]


def test_close_waits_for_requests_in_flight(graphs, tmp_path):
    backend = open_backend(graphs["fp32"], "openvino", threads=2, in_flight=2, cache_dir=str(tmp_path))
    for frame in scene_frames(2, 128, 160):
        backend.submit(frame[None])
    backend.close()
    assert backend.compiled_shapes == []
    with pytest.raises(BackendError, match="closed"):
        backend.submit(scene_frames(1, 128, 160))


def _cache_files(folder: Path):
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def test_backends_closed_out_of_order_leave_signal_handlers_working(graphs):
    """Two backends released first-in-first-out, then a Python signal handler runs (what Ctrl-C
    does to ``run``). OpenVINO's CPU plugin swaps the thread's alternate signal stack per Core
    and unmaps its own when released: with a Core per backend this order left the stack
    unmapped and the signal killed the process with SIGSEGV. In a child process, so that the
    failure is a failed test, not a dead pytest."""
    code = (
        "import gc, os, signal, sys\n"
        "from fcn_deploy.runtime.backends import open_backend\n"
        "first = open_backend(sys.argv[1], 'openvino', cache_dir='')\n"
        "second = open_backend(sys.argv[1], 'openvino', cache_dir='')\n"
        "first.close(); del first; gc.collect()\n"
        "second.close(); del second; gc.collect()\n"
        "seen = []\n"
        "signal.signal(signal.SIGUSR1, lambda *_: seen.append(True))\n"
        "os.kill(os.getpid(), signal.SIGUSR1)\n"
        "assert seen == [True]\n"
        "print('handler ran')\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(graphs["fp32"])], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "handler ran" in result.stdout, (result.returncode, result.stderr[-2000:])


def test_model_cache(graphs, tmp_path):
    """The compiled model lands in the cache folder; opening the same model with the same
    options again reuses that entry instead of writing another."""
    cache = tmp_path / "cache"
    with open_backend(graphs["fp32"], "openvino", threads=1, cache_dir=str(cache)) as first:
        labels = first.infer(scene_frames(1, 64, 96))
    written = _cache_files(cache)
    assert written, "OpenVINO wrote nothing to its model cache"
    with open_backend(graphs["fp32"], "openvino", threads=1, cache_dir=str(cache)) as second:
        np.testing.assert_array_equal(second.infer(scene_frames(1, 64, 96)), labels)
    assert _cache_files(cache) == written
    with open_backend(graphs["fp32"], "openvino", threads=1, cache_dir="") as uncached:
        assert uncached.cache_dir == ""


def test_default_cache_is_in_the_user_cache(graphs, tmp_path, monkeypatch):
    monkeypatch.setenv("FCN_DEPLOY_CACHE", str(tmp_path / "user"))
    with open_backend(graphs["fp32"], "openvino", threads=1) as backend:
        assert backend.cache_dir == str(tmp_path / "user" / "openvino")
    assert _cache_files(tmp_path / "user" / "openvino")


def test_errors(graphs, tmp_path):
    with pytest.raises(BackendError, match="model file not found"):
        open_backend(tmp_path / "missing.onnx", "openvino")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"garbage" * 100)
    with pytest.raises(BackendError, match="cannot load ONNX model") as info:
        open_backend(corrupt, "openvino", cache_dir="")
    assert "\n" not in str(info.value)
    available = shared_core().available_devices
    if not any(d.startswith("GPU") for d in available):
        with pytest.raises(BackendError, match="has no device GPU"):
            open_backend(graphs["fp32"], "openvino:GPU")
    with pytest.raises(BackendError, match="threads must be >= 1"):
        open_backend(graphs["fp32"], "openvino", threads=0)
    with pytest.raises(BackendError, match="in_flight must be >= 1"):
        open_backend(graphs["fp32"], "openvino", in_flight=0)
    plain = exported_onnx(tmp_path / "plain.onnx", metadata=False)
    with pytest.raises(BackendError, match="no fcn-deploy metadata"):
        open_backend(plain, "openvino", cache_dir="")
    with open_backend(plain, "openvino", require_metadata=False, cache_dir="") as backend:
        assert backend.metadata is None
        assert backend.run_graph(random_frames(1, 32, 32)).shape == (1, 32, 32)
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(BackendError, match="OpenVINO runs ONNX files"):
        open_backend(engine, "openvino")
    with pytest.raises(BackendError, match="openvino"):
        open_backend(graphs["fp32"], "vino")  # the list of devices names openvino


def test_cli_run_and_eval_on_openvino(tmp_path):
    """``run`` and ``eval`` take --device openvino (the bundled model and clip; eval on real PNGs)."""
    import cv2

    env = {"FCN_DEPLOY_CACHE": str(tmp_path / "cache")}
    result = run_cli(["run", "--device", "openvino", "--threads", "2", "--max-frames", "3", "--output", "none"],
                     env_extra=env)
    assert result.returncode == 0, result.stderr
    assert "openvino" in result.stderr or "openvino" in result.stdout
    # A CamVid-layout folder of two real PNG frames and label PNGs.
    root = tmp_path / "CamVid"
    (root / "val").mkdir(parents=True)
    (root / "valannot").mkdir()
    for i, frame in enumerate(clip_frames(2)):
        cv2.imwrite(str(root / "val" / f"f{i}.png"), frame)
        cv2.imwrite(str(root / "valannot" / f"f{i}.png"), np.full(frame.shape[:2], i % 11, np.uint8))
    result = run_cli(["eval", "--model", "camvid", "--root", root, "--split", "val", "--device", "openvino",
                      "--threads", "2", "--json"], env_extra=env)
    assert result.returncode == 0, result.stderr
    assert "OpenVINO" in result.stdout
    bad = run_cli(["run", "--device", "openvino:NPU", "--max-frames", "1", "--output", "none"], env_extra=env)
    assert_one_line_error(bad, "no device NPU")
