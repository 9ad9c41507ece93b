"""The automatic CPU engine choice (ONNX Runtime or OpenVINO): measured once, cached per
machine, model and precision, both engines at the precision asked for, a corrupt cache
ignored, an explicit engine never second-guessed.

CPU features: the bf16 cases take OpenVINO's path on a CPU whose OpenVINO lists BF16 (AVX512_BF16
or AMX) and its one-line refusal elsewhere; both are asserted, whichever this CPU is."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fcn_deploy.errors import FcnDeployError
from fcn_deploy.runtime.engine_choice import (
    CACHE_FILE, CACHE_VERSION, OPENVINO, ORT_CPU, choose_cpu_backend, installed_cpu_engines,
)

from onnx_helpers import assert_one_line_error, exported_onnx, run_cli

pytest.importorskip("openvino", reason="the choice needs both CPU engines: openvino is not installed")
pytest.importorskip("onnxruntime", reason="the choice needs both CPU engines: onnxruntime is not installed")

BUNDLED = Path(__file__).resolve().parents[1] / "fcn_deploy" / "assets" / "camvid.onnx"
SIZE = (64, 96)


@pytest.fixture(autouse=True)
def unpinned(monkeypatch):
    """conftest pins the engine for the other tests; here the choice itself is under test."""
    monkeypatch.delenv("FCN_DEPLOY_CPU_ENGINE", raising=False)


def test_the_environment_can_pin_the_engine(model, monkeypatch, tmp_path):
    monkeypatch.setenv("FCN_DEPLOY_CPU_ENGINE", "openvino")
    cache = tmp_path / "choice.json"
    device, why = choose_cpu_backend(model, cache_file=str(cache))
    assert device == "openvino" and "FCN_DEPLOY_CPU_ENGINE" in why and not cache.exists()  # nothing measured
    monkeypatch.setenv("FCN_DEPLOY_CPU_ENGINE", "gpu")
    with pytest.raises(FcnDeployError, match="expected ort-cpu or openvino"):
        choose_cpu_backend(model, cache_file=str(cache))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return exported_onnx(tmp_path_factory.mktemp("choice") / "m.onnx")


def entries(cache: Path):
    data = json.loads(cache.read_text())
    assert data["version"] == CACHE_VERSION
    return data["entries"]


def force(cache: Path, faster: str, slower: str) -> None:
    """Rewrite every cached answer so that ``faster`` won by a margin no measurement here gives."""
    data = json.loads(cache.read_text())
    for entry in data["entries"].values():
        entry["device"], entry["ms"] = faster, {faster: 1.0, slower: 1000.0}
    cache.write_text(json.dumps(data))


def test_measured_once_then_cached(model, tmp_path):
    cache = tmp_path / CACHE_FILE
    device, why = choose_cpu_backend(model, 1, size=SIZE, cache_file=str(cache), iters=3)
    assert device in (ORT_CPU, OPENVINO)
    assert "measured now" in why and "64x96" in why and "\n" not in why
    assert "both fp32" in why  # never OpenVINO's bf16 against ONNX Runtime's fp32
    (entry,) = entries(cache).values()
    versions = installed_cpu_engines()
    assert entry["device"] == device and set(entry["ms"]) == {ORT_CPU, OPENVINO}
    assert entry["precision"] == "fp32"
    assert entry["engines"] == versions and entry["threads"] == 1 and entry["size"] == list(SIZE)
    assert entry["cpu"] and len(entry["model_sha256"]) == 64

    # A cache hit returns the stored answer without measuring: an answer edited to timings no
    # machine gives comes back as it is, both ways round.
    for faster, slower in ((OPENVINO, ORT_CPU), (ORT_CPU, OPENVINO)):
        force(cache, faster, slower)
        device, why = choose_cpu_backend(model, 1, size=SIZE, cache_file=str(cache))
        assert device == faster
        assert "1.0 ms" in why and "1000.0 ms" in why and "cached in" in why

    # Another thread count is another key: measured, kept beside the first.
    choose_cpu_backend(model, 2, size=SIZE, cache_file=str(cache), iters=2)
    assert len(entries(cache)) == 2


# Version 1 held OpenVINO timings taken in bf16 (its default on AVX512_BF16 CPUs): never reused.
@pytest.mark.parametrize("content", ["{not json", '{"version": 2, "entries": []}', '["x"]', '{"version": 99}',
                                     '{"version": 1, "entries": {}}'])
def test_a_corrupt_cache_is_ignored_and_rewritten(model, tmp_path, caplog, content):
    cache = tmp_path / CACHE_FILE
    cache.write_text(content)
    with caplog.at_level("WARNING"):
        device, why = choose_cpu_backend(model, 1, size=SIZE, cache_file=str(cache), iters=2)
    assert "measured now" in why
    assert "ignoring the CPU engine choice cache" in caplog.text
    (entry,) = entries(cache).values()
    assert entry["device"] == device


def test_a_changed_model_is_measured_again(model, tmp_path):
    cache = tmp_path / CACHE_FILE
    choose_cpu_backend(model, 1, size=SIZE, cache_file=str(cache), iters=2)
    force(cache, OPENVINO, ORT_CPU)
    other = exported_onnx(tmp_path / "other.onnx", logits=True)  # other bytes, same name pattern
    _, why = choose_cpu_backend(other, 1, size=SIZE, cache_file=str(cache), iters=2)
    assert "measured now" in why and len(entries(cache)) == 2


def test_bf16_is_openvino_unmeasured_and_never_cached(model, tmp_path):
    """bf16 has one CPU engine: OpenVINO, named without a measurement (ONNX Runtime would
    only fail to open it); fp32's cached answer does not stand for it."""
    cache = tmp_path / CACHE_FILE
    choose_cpu_backend(model, 1, size=SIZE, cache_file=str(cache), iters=1, warmup=1)
    force(cache, ORT_CPU, OPENVINO)
    device, why = choose_cpu_backend(model, 1, size=SIZE, cache_file=str(cache), precision="bf16")
    assert device == OPENVINO and "bf16" in why and "\n" not in why
    assert choose_cpu_backend(model, 1, size=SIZE, cache_file=str(cache))[0] == ORT_CPU  # fp32's own answer
    with pytest.raises(FcnDeployError, match="unknown precision 'fp8'"):
        choose_cpu_backend(model, 1, size=SIZE, cache_file=str(cache), precision="fp8")


def test_missing_model_is_one_clear_error(tmp_path):
    with pytest.raises(Exception, match="model file not found"):
        choose_cpu_backend(tmp_path / "missing.onnx", cache_file=str(tmp_path / CACHE_FILE))


def test_run_uses_the_choice_and_an_explicit_engine_bypasses_it(tmp_path):
    """``run --device cpu`` (the default) takes the cached answer for the bundled model and
    says so in one line; ``--device ort-cpu`` runs ONNX Runtime without asking."""
    root = tmp_path / "cache"
    cache = root / CACHE_FILE
    # The answer run looks up: the bundled model, 2 threads, spinning off, 360x480 frames.
    choose_cpu_backend(BUNDLED, 2, spinning=False, cache_file=str(cache), iters=1, warmup=1)
    force(cache, OPENVINO, ORT_CPU)
    env = {"FCN_DEPLOY_CACHE": str(root)}
    chosen = run_cli(["run", "--threads", "2", "--max-frames", "2", "--output", "none"], env_extra=env)
    assert chosen.returncode == 0, chosen.stderr
    lines = [l for l in chosen.stderr.splitlines() if "CPU engine:" in l]
    assert len(lines) == 1 and "OpenVINO" in lines[0] and "1.0 ms" in lines[0], chosen.stderr
    assert "(openvino)" in chosen.stderr
    explicit = run_cli(["run", "--device", "ort-cpu", "--threads", "2", "--max-frames", "2", "--output", "none"],
                       env_extra=env)
    assert explicit.returncode == 0, explicit.stderr
    assert "CPU engine:" not in explicit.stderr and "(ort-cpu) in fp32" in explicit.stderr
    assert "(openvino) in fp32" in chosen.stderr  # the compiled precision, read back from OpenVINO


def test_run_bf16_on_the_cpu_takes_openvino_or_is_refused_in_one_line(tmp_path):
    """``run --precision bf16`` (device cpu): OpenVINO in bf16 where the CPU has it (the line says
    what it compiled), one line and exit 1 where it has not; ``--device ort-cpu`` refuses bf16."""
    from fcn_deploy.runtime.backends.openvino import device_capabilities

    env = {"FCN_DEPLOY_CACHE": str(tmp_path / "cache")}
    result = run_cli(["run", "--precision", "bf16", "--threads", "2", "--max-frames", "2", "--output", "none"],
                     env_extra=env)
    if "BF16" in device_capabilities("CPU"):
        assert result.returncode == 0, result.stderr
        assert "(openvino) in bf16" in result.stderr
    else:
        assert_one_line_error(result, "bf16 is not supported by OpenVINO's CPU")
    ort = run_cli(["run", "--device", "ort-cpu", "--precision", "bf16", "--max-frames", "1", "--output", "none"],
                  env_extra=env)
    assert_one_line_error(ort, "ONNX Runtime has no bf16 mode")


def test_a_cached_choice_of_onnx_runtime_never_imports_openvino(tmp_path):
    """Start-up does no work it does not need: with the answer cached, the versions in its key
    come from the installed distributions' metadata, so OpenVINO (about 0.25 s to import) is not
    imported when ONNX Runtime runs the model; the versions are the modules' own."""
    import subprocess
    import sys

    import onnxruntime
    import openvino

    assert installed_cpu_engines() == {ORT_CPU: onnxruntime.__version__,
                                       OPENVINO: openvino.__version__.split("-")[0]}
    cache = tmp_path / CACHE_FILE
    choose_cpu_backend(BUNDLED, 1, spinning=False, cache_file=str(cache), iters=1, warmup=1)
    force(cache, ORT_CPU, OPENVINO)
    code = ("import sys\nfrom fcn_deploy.runtime.engine_choice import choose_cpu_backend\n"
            f"device, why = choose_cpu_backend({str(BUNDLED)!r}, 1, spinning=False, cache_file={str(cache)!r})\n"
            "print(device, 'openvino' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [ORT_CPU, "False"], out.stdout + out.stderr
