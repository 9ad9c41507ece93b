"""Clean errors through the real CLI: one ``fcn-deploy: error:`` line and exit 1, never a traceback.

A missing part of the ``train`` extra, a corrupt image in a batch run (skipped, counted,
reported, the rest still written), and every path a user names that cannot be used: a place
where nothing can be created (``/proc``), a file where a folder is expected, a folder that
cannot be written. Each is run as a user runs it, in a fresh interpreter.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from onnx_helpers import assert_one_line_error

REPO = Path(__file__).resolve().parents[1]
MAIN = "from fcn_deploy.cli import main\nsys.exit(main(sys.argv[1:]))\n"
UNCREATABLE = "/proc/fcn-deploy-test/x"  # /proc takes no new folders, even from root


def cli(*args, cwd, block=(), timeout=120):
    """``fcn-deploy ARGS`` in a fresh interpreter in which the modules of ``block`` cannot be imported."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env.pop("DISPLAY", None)
    script = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in block) + MAIN
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=str(cwd), env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def main_in(monkeypatch, capsys):
    """``fcn_deploy.cli.main(ARGS)`` (what the console script calls) run in folder ``cwd``, in this
    process: as real as a subprocess for errors raised before any frame, and a second faster."""
    from fcn_deploy.cli import main

    def call(*args, cwd):
        monkeypatch.chdir(cwd)
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    return call


def clip_images(folder: Path, count: int, size=(72, 96)) -> Path:
    from fcn_deploy.runtime.assets import demo_clip

    folder.mkdir(parents=True, exist_ok=True)
    cap = cv2.VideoCapture(str(demo_clip()))
    for i in range(count):
        ok, frame = cap.read()
        assert ok
        cv2.imwrite(str(folder / f"f{i}.png"), cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA))
    cap.release()
    return folder


# -- the train extra -------------------------------------------------------------------------------
@pytest.mark.parametrize("command, block, missing", [
    (["export", "--output", "m.onnx"], ("tqdm",), "tqdm"),
    (["export", "--output", "m.onnx"], ("tqdm", "onnxslim"), "onnxslim, tqdm"),
    (["train", "--model", "fcn8s_resnet18", "--dataset", "synthetic", "--out", "run"], ("matplotlib",), "matplotlib"),
    (["compare", "camvid.onnx"], ("onnxslim",), "onnxslim"),
])
def test_a_missing_module_of_the_train_extra_is_named_in_one_line(tmp_path, command, block, missing):
    pytest.importorskip("torch")
    pytest.importorskip("onnxslim")
    result = cli(*command, cwd=tmp_path, block=block)
    line = assert_one_line_error(result)
    assert line == f"fcn-deploy: error: fcn-deploy {command[0]} needs {missing} (pip install -e '.[train]')", line
    assert os.listdir(tmp_path) == []  # nothing started, nothing written


@pytest.mark.runtime
def test_export_without_torch_and_tqdm_names_both(tmp_path):
    """The issue's case: `export` after a runtime-only install (no tqdm, no PyTorch)."""
    line = assert_one_line_error(cli("export", cwd=tmp_path, block=("torch", "tqdm")))
    assert re.match(r"fcn-deploy: error: fcn-deploy export needs PyTorch(, [a-z-]+)*, tqdm \(pip install -e "
                    r"'\.\[train\]'", line), line


@pytest.mark.runtime
def test_a_module_of_the_extra_missing_mid_command_is_one_line(tmp_path):
    """`eval` needs PyTorch only for a checkpoint: found missing while it runs, still one line."""
    (tmp_path / "run.pt").write_bytes(b"")
    line = assert_one_line_error(cli("eval", "--model", "run.pt", "--dataset", "synthetic", cwd=tmp_path,
                                     block=("torch",)))
    assert "fcn-deploy eval needs PyTorch (pip install -e '.[train]'" in line


# -- a corrupt image in a batch run ------------------------------------------------------------------
@pytest.mark.runtime
def test_corrupt_images_are_skipped_counted_and_reported(tmp_path):
    images = clip_images(tmp_path / "images", 3)
    (images / "e_truncated.png").write_bytes(cv2.imencode(".png", np.zeros((40, 40, 3), np.uint8))[1].tobytes()[:30])
    (images / "a_text.jpg").write_text("not a jpeg")
    result = cli("run", "--source", images, "--labels-dir", "labels", "--output", "frames", "--threads", "1",
                 "--input-size", "native", cwd=tmp_path)
    line = assert_one_line_error(result, "skipped 2 of 5 images", "a_text.jpg", "e_truncated.png",
                                 "the others were processed")
    assert line.startswith("fcn-deploy: error:")
    assert sorted(p.name for p in (tmp_path / "labels").iterdir()) == ["f0.png", "f1.png", "f2.png"]
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == ["f0.jpg", "f1.jpg", "f2.jpg"]
    assert "wrote 3 label PNGs" in result.stdout
    warnings = [l for l in result.stderr.splitlines() if l.startswith("skipped ")]
    assert len(warnings) == 2 and all("cannot read it" in w for w in warnings)


@pytest.mark.runtime
def test_a_folder_of_only_corrupt_images_is_one_line(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.jpg"):
        (images / name).write_bytes(b"garbage")
    assert_one_line_error(cli("run", "--source", images, "--labels-dir", "labels", cwd=tmp_path),
                          "none of the 2 images of image folder")
    assert not (tmp_path / "labels").exists()


# -- paths that cannot be used ---------------------------------------------------------------------------
@pytest.fixture
def places(tmp_path):
    """A source folder with one image, and a plain file to put in the way of folders."""
    clip_images(tmp_path / "images", 1)
    (tmp_path / "afile").write_text("a file, not a folder")
    return tmp_path


@pytest.mark.runtime
@pytest.mark.parametrize("args, needles", [
    (["--labels-dir", UNCREATABLE], ["--labels-dir " + UNCREATABLE, "cannot create"]),
    (["--labels-dir", "afile"], ["--labels-dir afile exists and is not a folder"]),
    (["--labels-dir", "afile/labels"], ["afile is a file, not a folder"]),
    (["--output", UNCREATABLE + "/out.mp4"], ["output " + UNCREATABLE + "/out.mp4", "cannot create"]),
    (["--output", "afile/out.mp4"], ["afile is a file, not a folder"]),
    (["--output", "afile/frames/"], ["output folder afile/frames", "afile is a file, not a folder"]),
    (["--output", UNCREATABLE + "/"], ["cannot create"]),
    (["--output", "afile"], ["afile exists and is not a folder"]),
    (["--output", "images/"], ["is the source being read"]),
])
def test_run_outputs_that_cannot_be_written_are_one_line(places, args, needles, main_in):
    result = main_in("run", "--source", "images", *args, cwd=places)
    assert_one_line_error(result, *needles)
    assert sorted(os.listdir(places)) == ["afile", "images"]  # nothing written anywhere


@pytest.mark.runtime
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_run_into_a_read_only_folder_is_one_line(places):
    locked = places / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert_one_line_error(cli("run", "--source", "images", "--labels-dir", "locked", cwd=places),
                              "--labels-dir locked", "cannot write in")
        assert_one_line_error(cli("run", "--source", "images", "--output", "locked/out.mp4", cwd=places),
                              "cannot write in")
    finally:
        locked.chmod(0o755)


@pytest.mark.runtime
@pytest.mark.parametrize("args, needles", [
    (["eval", "--model", "camvid", "--root", "afile"], ["dataset root afile is a file"]),
    (["eval", "--model", "camvid", "--root", "missing"], ["dataset root not found: missing"]),
    (["run", "--model", "images"], ["--model images is a folder"]),
    (["run", "--model", "missing.onnx"], ["model file not found: missing.onnx"]),
    (["run", "--source", "missing"], ["no such file or folder: missing"]),
    (["run", "--source", "afile"], ["cannot open video file afile"]),
    (["build", "camvid.onnx", "--output", UNCREATABLE + "/m.engine"], ["--output", "cannot create"]),
    (["build", "camvid.onnx", "--output", "images"], ["--output images is a folder"]),
    (["build", "camvid.onnx", "--timing-cache", "afile/timing.cache"], ["--timing-cache", "afile is a file"]),
    (["check", "images"], ["is a folder"]),
])
def test_runtime_commands_name_the_unusable_path(places, args, needles, main_in):
    from fcn_deploy.runtime.model_files import resolve_model_file

    (places / "camvid.onnx").symlink_to(resolve_model_file("camvid"))
    assert_one_line_error(main_in(*args, cwd=places), *needles)


@pytest.mark.parametrize("args, needles", [
    (["export", "--output", UNCREATABLE + "/m.onnx"], ["output " + UNCREATABLE + "/m.onnx", "cannot create"]),
    (["export", "--output", "afile/m.onnx"], ["afile is a file, not a folder"]),
    (["export", "--output", "images"], ["must end in .onnx"]),
    (["export", "--output", "m.onnx", "--fp16", "--calib", "afile"], ["calibration source afile is a file"]),
    (["train", "--model", "fcn8s_resnet18", "--dataset", "synthetic", "--out", "afile"],
     ["run folder afile", "is a file, not a folder"]),
    (["train", "--model", "fcn8s_resnet18", "--dataset", "synthetic", "--out", UNCREATABLE], ["cannot create"]),
    (["train", "--resume", "missing"], ["cannot resume: missing does not exist"]),
])
def test_training_commands_name_the_unusable_path_before_any_work(places, args, needles, main_in):
    pytest.importorskip("torch")
    result = main_in(*args, cwd=places)
    assert_one_line_error(result, *needles)
    assert sorted(os.listdir(places)) == ["afile", "images"]
    assert "Downloading" not in result.stderr  # refused before any weight download or trace


def test_library_functions_raise_the_same_lines(places):
    pytest.importorskip("torch")
    import fcn_deploy

    with pytest.raises(fcn_deploy.FcnDeployError, match="afile is a file, not a folder"):
        fcn_deploy.export("camvid", str(places / "afile" / "m.onnx"))
    (places / "had.onnx").write_text("the user's file")
    with pytest.raises(fcn_deploy.FcnDeployError, match="exists; pass --overwrite"):
        fcn_deploy.export("camvid", str(places / "had.onnx"))
    assert (places / "had.onnx").read_text() == "the user's file"
    with pytest.raises(fcn_deploy.FcnDeployError, match="unknown training option"):
        fcn_deploy.train("fcn8s_resnet18", "synthetic", out=str(places / "run"), no_such_option=1)
    with pytest.raises(fcn_deploy.FcnDeployError, match="resume takes the run's own recipe; leave out epochs"):
        fcn_deploy.train(resume=str(places / "run"), epochs=3)


@pytest.mark.slow
def test_u8s8_export_does_not_point_at_tensorrt(tmp_path):
    """`export --int8 --int8-scheme u8s8` writes a CPU graph: its next steps never say `build`."""
    pytest.importorskip("torch")
    from onnx_helpers import write_checkpoint, write_images

    checkpoint = write_checkpoint(tmp_path / "ck.pt")
    calib = write_images(tmp_path / "calib", count=3)
    result = cli("export", "--model", checkpoint, "--output", "u8.onnx", "--int8", "--int8-scheme", "u8s8",
                 "--calib", calib, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "TensorRT: not for TensorRT" in result.stdout
    assert "fcn-deploy build" not in result.stdout and "build the engine" not in result.stdout
    assert "fcn-deploy run --model u8.onnx" in result.stdout


@pytest.mark.runtime
def test_image_source_skips_unreadable_images_once_even_when_looping(tmp_path, caplog):
    from fcn_deploy.runtime.sources import open_source

    images = clip_images(tmp_path / "images", 2)
    (images / "a_bad.png").write_bytes(b"garbage")
    (images / "g_bad.jpg").write_bytes(b"garbage")
    with caplog.at_level("WARNING", logger="fcn_deploy.runtime.sources"):
        with open_source(str(images), loop=True) as source:
            names = [source.read().name for _ in range(5)]
    assert names == ["f0", "f1", "f0", "f1", "f0"]  # the first readable image comes first, then in loops
    assert [p.name for p in source.skipped] == ["a_bad.png", "g_bad.jpg"]
    assert caplog.text.count("skipped") == 2  # each warned about once, not once per loop
    with open_source(str(images)) as source:
        assert [f.name for f in source] == ["f0", "f1"]
        assert source.size == (96, 72)
