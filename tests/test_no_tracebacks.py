"""The last tracebacks of issue 30, each now one ``fcn-deploy: error:`` line and exit 1, run as a
user runs them (a fresh interpreter where the repro was a command line):

* ``run --input-size 100000x100000`` (was OpenCV's "Insufficient memory" traceback);
* ``run --camera 99999999999999999999`` (was OpenCV's overload-resolution traceback);
* ``export --model X.onnx`` and a foreign ``.pt`` (the error passed on PyTorch's advice to load
  with ``weights_only=False``, which runs code from the file: never repeated).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fcn_deploy.errors import FcnDeployError
from fcn_deploy.runtime.input_size import MAX_SIDE, parse_input_size, resize_frame
from onnx_helpers import assert_one_line_error
from test_clean_errors import cli, main_in  # noqa: F401 (main_in is a fixture)


def test_a_huge_input_size_is_one_line_before_the_model_loads(tmp_path):
    result = cli("run", "--input-size", "100000x100000", "--max-frames", "1", "--output", "none", cwd=tmp_path)
    line = assert_one_line_error(result)
    assert line == ("fcn-deploy: error: --input-size 100000x100000: at most 16384 pixels a side "
                    "(one frame of 100000x100000 would take 30 GB before the network)")
    assert parse_input_size(f"{MAX_SIDE}x{MAX_SIDE}") == (MAX_SIDE, MAX_SIDE)


def test_a_resize_that_cannot_be_allocated_is_one_line():
    """Through the Python API a size is not bounded: an allocation OpenCV cannot make is the
    library's one-line error, with OpenCV's own reason (here 3.3 TB, more than any machine)."""
    if Path("/proc/sys/vm/overcommit_memory").read_text().strip() == "1":
        pytest.skip("overcommit_memory=1: the allocation would succeed and fill memory")
    with pytest.raises(FcnDeployError) as info:
        resize_frame(np.zeros((36, 48, 3), np.uint8), (1 << 20, 1 << 20))
    message = str(info.value)
    assert "\n" not in message and "Insufficient memory" in message and "choose a smaller --input-size" in message


@pytest.mark.parametrize("flag", ["--camera", "--source"])
def test_a_camera_index_beyond_a_c_int_is_one_line(tmp_path, flag):
    result = cli("run", flag, "99999999999999999999", "--output", "none", cwd=tmp_path)
    line = assert_one_line_error(result)
    assert line == "fcn-deploy: error: no camera 99999999999999999999: camera indices go from 0 to 2147483647"


def test_export_of_an_onnx_file_says_what_export_takes(tmp_path, main_in):
    pytest.importorskip("torch")
    (tmp_path / "X.onnx").write_text("garbage\n")
    result = main_in("export", "--model", "X.onnx", cwd=tmp_path)
    line = assert_one_line_error(result, "X.onnx is an exported model, not a checkpoint",
                                 "fcn-deploy run --model X.onnx")
    assert "weights_only" not in result.stderr, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X.onnx"]


def test_a_file_the_safe_loader_refuses_never_suggests_an_unsafe_load(tmp_path, main_in):
    """A pickle with code in it (a real one: it would call ``print`` when loaded unsafely) and a
    file of garbage, as a checkpoint and as backbone weights."""
    torch = pytest.importorskip("torch")
    torch.save({"model_state": {}, "hook": print}, tmp_path / "code.pt")
    (tmp_path / "garbage.pt").write_text("garbage\n")
    for name in ("code.pt", "garbage.pt"):
        for args in (["export", "--model", name],
                     ["train", "--model", "fcn8s_resnet18", "--dataset", "synthetic", "--out", "run",
                      "--pretrained-backbone", name, "--epochs", "1", "--no-progress"]):
            result = main_in(*args, cwd=tmp_path)
            line = assert_one_line_error(result, "cannot read", name, "never runs code from the file")
            assert "weights_only" not in result.stderr, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["code.pt", "garbage.pt"]
