"""A full disk under every kind of file the CLI writes (issue 30, "What to build": exports,
repositories, checkpoints, labels; videos and image folders are in tests/test_video_outputs.py).

Each command runs as a user runs it, in its own process, onto a real tmpfs of a few kB
(tests/small_disk.py; a per-file size limit where no tmpfs can be mounted). Each must fail with
one line that names the file and the system's reason, a non-zero exit, no temporary file left,
and nothing under a final name that is not whole.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from small_disk import child_file_limit, full_disk_reason, small_disk
from test_run_cli import env
from video_helpers import synthetic_frames, write_video

TINY_NET = ["--model", "fcn8s_resnet18", "--model-option", "width=16", "--num-classes", "3"]


def run_cli(args, cwd: Path, mounted: bool, limit: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fcn_deploy.cli", *map(str, args)], cwd=cwd, env=env(),
                          capture_output=True, text=True, timeout=300, preexec_fn=child_file_limit(mounted, limit))


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("fcn-deploy: error: ")]
    assert len(errors) == 1 and result.stderr.rstrip().endswith(errors[0]), result.stderr
    return errors[0]


def files_under(folder: Path) -> list:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_export_onto_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    pytest.importorskip("torch")
    small = tmp_path / "small"
    with small_disk(small, "64k") as mounted:
        result = run_cli(["export", *TINY_NET, "--output", small / "m.onnx"], tmp_path, mounted, 64 * 1024)
        line = one_error_line(result)
        assert f"cannot write {small / 'm.onnx'}: {full_disk_reason(mounted)}" in line, line
        assert "Exported" not in result.stdout
        assert files_under(small) == []


def test_a_triton_repository_onto_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    pytest.importorskip("torch")
    small = tmp_path / "small"
    with small_disk(small, "64k") as mounted:
        (small / "repo" / "other").mkdir(parents=True)  # the user's repository, with another model
        result = run_cli(["export", *TINY_NET, "--triton", small / "repo", "--name", "m"], tmp_path, mounted,
                         64 * 1024)
        line = one_error_line(result)
        assert f"cannot write {small / 'repo' / 'm' / '1' / 'model.onnx'}: {full_disk_reason(mounted)}" in line
        assert files_under(small) == ["repo", "repo/other"]  # no REPO/m/1/, no config.pbtxt


def test_a_checkpoint_onto_a_full_disk_is_one_line_and_every_file_left_is_whole(tmp_path):
    """The issue's train case: ``last.pt`` (with the optimiser's state) no longer fits. Before,
    a traceback through torch.save's zip writer; now one line. What was written whole (best.pt,
    the log) stays: it is the run's result so far."""
    torch = pytest.importorskip("torch")
    small = tmp_path / "small"
    with small_disk(small, "300k") as mounted:
        result = run_cli(["train", "--model", "fcn8s_resnet18", "--width", "16", "--dataset", "synthetic",
                          "--dataset-option", "size=(48,64)", "--dataset-option", "count=2", "--batch-size", "2",
                          "--crop", "none", "--scale-range", "none", "--pretrained-backbone", "none",
                          "--no-progress", "--threads", "1", "--no-channels-last", "--epochs", "1",
                          "--out", small / "run"], tmp_path, mounted, 300 * 1024)
        line = one_error_line(result)
        assert f"cannot write {small / 'run'}/" in line and line.endswith(full_disk_reason(mounted)), line
        left = files_under(small)
        assert not [name for name in left if name.endswith(".tmp")], left
        for name in left:
            if name.endswith(".pt"):  # whole or not there: each checkpoint left loads
                assert "model_state" in torch.load(small / name, weights_only=True), name


def test_labels_onto_a_full_disk_are_one_line_and_only_whole_pngs(tmp_path, tiny_onnx):
    """Label PNGs are small: only a real small disk fills up with them (a per-file limit cannot)."""
    import cv2

    src = write_video(tmp_path / "in.avi", synthetic_frames(40), "MJPG", fps=10)
    small = tmp_path / "small"
    with small_disk(small, "64k") as mounted:
        if not mounted:
            pytest.skip("needs a tmpfs (root and mount): a file-size limit does not fill a folder of small files")
        result = run_cli(["run", "--model", tiny_onnx, "--device", "ort-cpu", "--source", src, "--output", "none",
                          "--labels-dir", small / "labels"], tmp_path, mounted, 0)
        line = one_error_line(result)
        assert f"cannot write {small / 'labels'}" in line and line.endswith("No space left on device"), line
        names = sorted((small / "labels").iterdir())
        assert 0 < len(names) < 40
        for path in names:
            assert path.suffix == ".png", path  # no temporary file left
            label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            assert label is not None and label.shape == (72, 96), path
