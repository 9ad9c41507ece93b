"""One table of model-file suffixes: every command reads a model file the same way.

Regression: `run --model x.trt` used to default to the CPU and be refused, because `run` and
`open_backend` kept different suffix tables.
"""
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from fcn_deploy.errors import FcnDeployError
from fcn_deploy.runtime import model_files as mf
from fcn_deploy.runtime.assets import ASSETS
from fcn_deploy.runtime.tensorrt_compat import tensorrt_available

BUNDLED_ONNX = ASSETS / "camvid.onnx"
ENGINE_SUFFIXES = mf.suffixes(mf.ENGINE)


def fcn_deploy(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "fcn_deploy.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_the_table():
    assert set(ENGINE_SUFFIXES) == {".engine", ".plan", ".trt"}
    assert set(mf.suffixes(mf.CHECKPOINT)) == {".pt", ".pth", ".ckpt"}
    assert mf.suffixes(mf.ONNX) == (".onnx",)
    for suffix, kind in mf.MODEL_SUFFIXES.items():
        assert mf.model_kind(f"dir.v1/model{suffix.upper()}") == kind
        assert mf.default_device(kind) == ("cuda" if kind == mf.ENGINE else "cpu")
    with pytest.raises(FcnDeployError, match="unknown model file type .tflite"):
        mf.model_kind("m.tflite")


def test_resolve_model_file(tmp_path):
    for suffix in mf.MODEL_SUFFIXES:
        (tmp_path / f"m{suffix}").write_bytes(b"x")
    for suffix in mf.suffixes(*mf.RUNTIME_KINDS):
        assert mf.resolve_model_file(str(tmp_path / f"m{suffix}")) == tmp_path / f"m{suffix}"
    for suffix in mf.suffixes(mf.CHECKPOINT):
        with pytest.raises(FcnDeployError, match="export a checkpoint first"):
            mf.resolve_model_file(str(tmp_path / f"m{suffix}"))
        everything = (mf.ONNX, mf.ENGINE, mf.CHECKPOINT)
        assert mf.resolve_model_file(str(tmp_path / f"m{suffix}"), everything).suffix == suffix
    with pytest.raises(FcnDeployError, match="model file not found"):
        mf.resolve_model_file(str(tmp_path / "missing.onnx"))
    with pytest.raises(FcnDeployError, match="is a folder"):
        mf.resolve_model_file(str(tmp_path))
    (tmp_path / "m.bin").write_bytes(b"x")
    with pytest.raises(FcnDeployError, match="unknown model file type"):
        mf.resolve_model_file(str(tmp_path / "m.bin"))


@pytest.mark.skipif(not BUNDLED_ONNX.is_file(), reason="the bundled model is not installed")
def test_read_metadata_without_a_session(tmp_path):
    meta = mf.read_metadata(BUNDLED_ONNX)
    assert meta.model_name == "fcn8s_efficientnet_lite0" and meta.num_classes == 11
    assert mf.resolve_model_file("camvid") == BUNDLED_ONNX
    with pytest.raises(FcnDeployError, match="sidecar"):
        shutil.copy(BUNDLED_ONNX, tmp_path / "m.engine")
        mf.read_metadata(tmp_path / "m.engine")


@pytest.mark.skipif(tensorrt_available(), reason="TensorRT is installed here: the engines below would be parsed")
@pytest.mark.parametrize("suffix", ENGINE_SUFFIXES)
@pytest.mark.parametrize("command", ["run", "eval"])
def test_every_command_takes_every_engine_suffix_to_the_gpu(tmp_path, command, suffix):
    """`run` and `eval` open `.engine`, `.plan` and `.trt` alike, with the CUDA device by
    default: what stops them here is the missing TensorRT, never the suffix or the CPU."""
    engine = tmp_path / f"model{suffix}"
    engine.write_bytes(b"not a plan")
    args = [command, "--model", str(engine)]
    if command == "run":
        frames = tmp_path / "frames"
        frames.mkdir()
        cv2.imwrite(str(frames / "f0.png"), np.zeros((32, 48, 3), np.uint8))
        args += ["--source", str(frames), "--output", "none"]
    else:
        args += ["--dataset", "synthetic"]
    result = fcn_deploy(*args, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "unknown model file type" not in lines[0] and "not on device 'cpu'" not in lines[0], lines[0]
    # The sidecar is read first: a plan without one is refused before TensorRT is needed.
    assert "sidecar" in lines[0] or "TensorRT" in lines[0], lines[0]


def test_run_threads_with_an_engine_is_one_line(tmp_path):
    engine = tmp_path / "model.trt"
    engine.write_bytes(b"not a plan")
    result = fcn_deploy("run", "--model", str(engine), "--threads", "2", "--source", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 1 and "--threads" in result.stderr and "Traceback" not in result.stderr
