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
    with pytest.raises(BackendError, match="OpenVINO cannot read .*corrupt.onnx: .*parsed") as info:
        open_backend(corrupt, "openvino", cache_dir="")
    # OpenVINO's whole message, on one line, without its source locations ("Exception from src/...").
    assert "\n" not in str(info.value) and "src/" not in str(info.value)
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


# -- precision: fp32 means fp32, bf16 only when asked and where the CPU has it ------------------
# CPU features: OpenVINO's CPU plugin lists BF16 in OPTIMIZATION_CAPABILITIES on CPUs with
# AVX512_BF16 or AMX, and then defaults to running FP32 graphs in bf16. The fp32 tests below hold
# on every CPU (they would fail on such a CPU if the backend left the hint to OpenVINO); the bf16
# run needs such a CPU (skipped with the reason elsewhere); its refusal is tested for real on an
# AVX2 CPU emulated by qemu-user (skipped where qemu-x86_64 is not installed).
def cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            return {flag for line in f if line.startswith("flags") for flag in line.split(":", 1)[1].split()}
    except OSError:
        return set()


def test_bf16_capability_is_what_the_cpu_has():
    """OpenVINO's BF16 capability, which the backend reads before it compiles, matches the
    CPU's own flags (AVX512_BF16 or AMX)."""
    from fcn_deploy.runtime.backends.openvino import device_capabilities

    flags = cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags to compare with")
    has_bf16 = bool(flags & {"avx512_bf16", "amx_bf16"})
    assert ("BF16" in device_capabilities("CPU")) == has_bf16


@pytest.mark.runtime
def test_fp32_graph_compiles_in_fp32_and_agrees_with_onnx_runtime(tmp_path):
    """The bundled FP32 model on OpenVINO, by default: compiled in fp32 (read back from the
    compiled model), and its labels equal ONNX Runtime's on real frames."""
    frames = clip_frames(2)
    with open_backend(BUNDLED, "openvino", threads=2, cache_dir=str(tmp_path)) as ovb, \
            open_backend(BUNDLED, "ort-cpu", threads=2) as ort:
        assert ovb.precision == "fp32" and ovb.execution_precision == "fp32"
        assert ovb.providers[0].endswith(", fp32)")
        assert ort.execution_precision == "fp32"
        assert agreement(ovb.infer(frames), ort.infer(frames)) >= 0.9999


def test_int8_graph_keeps_integer_convolutions(graphs, tmp_path):
    """fp32 for an INT8 Q/DQ graph means its float layers: the convolutions stay integer."""
    with open_backend(graphs["int8"], "openvino", threads=1, cache_dir=str(tmp_path)) as ovb:
        runs = ovb.execution_precision
        assert runs.endswith(", fp32") and " conv " in runs and runs.split()[0] in ("u8", "i8"), runs
        done, total = (int(v) for v in runs.split(" conv ")[1].split(",")[0].split("/"))
        assert done == total >= 1, runs


@pytest.mark.runtime
def test_bf16_runs_in_bf16_when_asked(tmp_path):
    from fcn_deploy.runtime.backends.openvino import device_capabilities

    if "BF16" not in device_capabilities("CPU"):
        pytest.skip("this CPU has no bf16 (OpenVINO lists no BF16 capability: AVX512_BF16 or AMX needed)")
    frames = clip_frames(2)
    with open_backend(BUNDLED, "openvino", threads=2, precision="bf16", cache_dir=str(tmp_path)) as bf16, \
            open_backend(BUNDLED, "openvino", threads=2, precision="fp32", cache_dir=str(tmp_path)) as fp32:
        assert bf16.precision == "bf16" and bf16.execution_precision == "bf16"
        a, b = bf16.infer(frames), fp32.infer(frames)
        assert 0.98 <= agreement(a, b) < 1.0  # near, and not the fp32 run under another name


def test_bf16_refusals_are_one_line():
    """Where bf16 cannot run, one line that says why: a device without the BF16 capability
    (the capability list of an AVX2 CPU), ONNX Runtime, an unknown name."""
    from fcn_deploy.runtime.backends.openvino import precision_problem

    avx2 = ["FP32", "INT8", "BIN", "EXPORT_IMPORT"]  # what OpenVINO lists on an AVX2 CPU (see the qemu test)
    line = precision_problem("bf16", "CPU", avx2, "Intel Core i7-4770")
    assert line and "\n" not in line and "AVX512_BF16 or AMX" in line and "FP32, INT8" in line
    assert precision_problem("bf16", "CPU", avx2 + ["BF16"]) is None
    assert precision_problem("fp32", "CPU", avx2) is None
    with pytest.raises(BackendError, match="ONNX Runtime has no bf16 mode"):
        open_backend(BUNDLED, "ort-cpu", precision="bf16")
    with pytest.raises(BackendError, match="unknown precision 'fp8'; expected fp32 or bf16"):
        open_backend(BUNDLED, "openvino", precision="fp8")


def test_garbage_onnx_is_one_line_with_openvino_s_message(tmp_path):
    """A file that is not ONNX: OpenVINO's message in one line, and nothing else on stderr
    (no absl lines from its TensorFlow frontend, no source locations)."""
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    result = run_cli(["run", "--model", str(garbage), "--device", "openvino", "--max-frames", "1", "--output", "none"],
                     env_extra={"FCN_DEPLOY_CACHE": str(tmp_path / "cache")})
    line = assert_one_line_error(result, "OpenVINO cannot read", "parsed")
    assert "src/" not in line
    assert "tensorflow" not in result.stderr and "absl" not in result.stderr, result.stderr


QEMU = "qemu-x86_64"


def _on_emulated_avx2(tmp_path, child: str, *args: str) -> subprocess.CompletedProcess:
    """Run Python code ``child`` under qemu-user emulating a Haswell (AVX2, no AVX-512, no bf16)
    with this Python and OpenVINO: the other CPU class, for real. (oneDNN's ONEDNN_MAX_CPU_ISA
    cannot stand in: OpenVINO still reports BF16 under it, and its convolutions fail to
    initialise below AVX-512.)"""
    import shutil

    if shutil.which(QEMU) is None:
        pytest.skip("qemu-user is not installed (apt-get install qemu-user): no AVX2 CPU to emulate")
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    result = subprocess.run([QEMU, "-cpu", "Haswell", sys.executable, "-c", child, *args],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_an_avx2_cpu_refuses_bf16_in_one_line(graphs, tmp_path):
    """On an AVX2 CPU OpenVINO lists no BF16, and the backend refuses bf16 in one line."""
    child = (
        "import sys\n"
        "from fcn_deploy.runtime.backends import BackendError, open_backend\n"
        "from fcn_deploy.runtime.backends.openvino import device_capabilities\n"
        "print('capabilities', ','.join(device_capabilities('CPU')))\n"
        "try:\n"
        "    open_backend(sys.argv[1], 'openvino', precision='bf16', cache_dir='')\n"
        "except BackendError as exc:\n"
        "    print('refused', exc)\n"
    )
    lines = _on_emulated_avx2(tmp_path, child, str(graphs["fp32"])).stdout.splitlines()
    assert "BF16" not in lines[0] and "FP32" in lines[0], lines
    assert len(lines) == 2 and lines[1].startswith("refused bf16 is not supported by OpenVINO's CPU"), lines
    assert "AVX512_BF16 or AMX" in lines[1] and "use --precision fp32" in lines[1]


@pytest.mark.slow
def test_an_avx2_cpu_runs_fp32_with_the_native_labels(graphs, tmp_path):
    """On an AVX2 CPU the same graph compiles in fp32 and gives the labels it gives here."""
    frames = scene_frames(1, 32, 48, seed=2)
    np.save(tmp_path / "frames.npy", frames)
    with open_backend(graphs["fp32"], "openvino", threads=1, cache_dir="") as native:
        expected = native.infer(frames)
    child = (
        "import sys, numpy as np\n"
        "from fcn_deploy.runtime.backends import open_backend\n"
        "with open_backend(sys.argv[1], 'openvino', threads=1, cache_dir='') as b:\n"
        "    print('fp32 runs in', b.execution_precision)\n"
        "    np.save(sys.argv[2], b.infer(np.load(sys.argv[3])))\n"
    )
    result = _on_emulated_avx2(tmp_path, child, str(graphs["fp32"]), str(tmp_path / "labels.npy"),
                               str(tmp_path / "frames.npy"))
    assert result.stdout.splitlines() == ["fp32 runs in fp32"], result.stdout
    assert agreement(np.load(tmp_path / "labels.npy"), expected) >= 0.999


def test_segmenter_takes_a_precision(tmp_path):
    """``Segmenter(..., precision=)``: fp32 by default on OpenVINO, bf16 where the CPU has it
    (its one-line refusal where not), and ONNX Runtime's refusal of bf16."""
    from fcn_deploy import Segmenter
    from fcn_deploy.errors import FcnDeployError
    from fcn_deploy.runtime.backends.openvino import device_capabilities

    frame = clip_frames(1)[0]
    with Segmenter("camvid", "openvino", threads=2, cache_dir=str(tmp_path)) as seg:
        assert seg.backend.execution_precision == "fp32"
        labels = seg(frame)
    if "BF16" in device_capabilities("CPU"):
        with Segmenter("camvid", "openvino", precision="bf16", threads=2, cache_dir=str(tmp_path)) as seg:
            assert seg.backend.execution_precision == "bf16"
            assert agreement(seg(frame), labels) >= 0.98
    else:
        with pytest.raises(FcnDeployError, match="AVX512_BF16 or AMX"):
            Segmenter("camvid", "openvino", precision="bf16")
    with pytest.raises(FcnDeployError, match="ONNX Runtime has no bf16 mode"):
        Segmenter("camvid", "ort-cpu", precision="bf16")


def test_the_backend_imports_openvino_without_its_converter_and_telemetry(tmp_path):
    """`import openvino` imports OVC, which sends a telemetry event from a child process unless
    the user opted out; the backend (which never converts with OVC) runs the bundled model with
    neither imported, and leaves no entry behind that would stop an explicit import of OVC."""
    child = (
        "import sys, numpy as np\n"
        "from fcn_deploy.runtime.backends import open_backend\n"
        "with open_backend(sys.argv[1], 'openvino', threads=1, cache_dir='') as b:\n"
        "    b.infer(np.zeros((1, 64, 96, 3), np.uint8))\n"
        "print(sorted(m for m in sys.modules if 'telemetry' in m or m.startswith('openvino.tools')))\n"
        "print('multiprocessing' in sys.modules)\n"
    )
    env = dict(os.environ, HOME=str(tmp_path))  # no consent file: OVC's import would send its event
    env.pop("CI", None)  # which OVC reads as an opt-out
    result = subprocess.run([sys.executable, "-c", child, str(BUNDLED)], capture_output=True, text=True,
                            timeout=300, env=env, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == ["[]", "False"], result.stdout
