"""A failed command leaves nothing behind it created (issue 30, "Leftovers"): no empty run folder
from a failed ``train``, no empty ``REPO/NAME/1/`` from a failed ``export --triton``, no
``.curves.png.*.tmp`` of a killed run once the run is resumed. What existed before is never
touched, and a folder that got something worth keeping stays.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fcn_deploy.cli import main
from fcn_deploy.fileio import removed_on_failure

TINY_TRAIN = ["--model", "fcn8s_resnet18", "--width", "16", "--dataset", "synthetic",
              "--dataset-option", "size=(48,64)", "--dataset-option", "count=2", "--batch-size", "2",
              "--crop", "none", "--scale-range", "none", "--pretrained-backbone", "none",
              "--no-progress", "--threads", "1", "--no-channels-last"]


def tree(folder: Path) -> list:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("fcn-deploy: error: ")]
    assert len(lines) == 1, err
    return lines[0]


def test_a_failed_train_leaves_no_run_folder(tmp_path, capsys):
    """The issue's case: the run folder is made (and checked) before the dataset is opened; a
    dataset that is not there fails the command, and the folders it made go with it."""
    pytest.importorskip("torch")
    (tmp_path / "mine").mkdir()
    for out in (tmp_path / "runs" / "a", tmp_path / "mine" / "b"):
        code = main(["train", "--model", "fcn8s_resnet18", "--dataset", "camvid", "--root", str(tmp_path / "nope"),
                     "--out", str(out)])
        assert code == 1 and "dataset root not found" in one_error(capsys)
    assert tree(tmp_path) == ["mine"]  # the user's folder stays, empty as it was


def test_a_failed_export_leaves_no_repository_folder_and_no_output_folder(tmp_path, capsys, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    Path("bad.pt").write_text("not a checkpoint\n")
    Path("repo").mkdir()
    Path("repo/other").mkdir()  # another model of the user's repository
    for args in (["--triton", "repo", "--name", "m"], ["--triton", "new_repo"], ["--output", "out/sub/m.onnx"],
                 ["--deepstream", "ds/x"]):
        assert main(["export", "--model", "bad.pt", *args]) == 1
        assert "cannot read checkpoint bad.pt" in one_error(capsys)
        assert tree(tmp_path) == ["bad.pt", "repo", "repo/other"], args


def test_a_resumed_run_removes_the_temporary_file_of_a_killed_write(tmp_path, capsys):
    """A real process killed (SIGKILL) inside atomic_write of the run's curves.png leaves
    ``.curves.png.*.tmp``; resuming the run removes it."""
    pytest.importorskip("torch")
    run = tmp_path / "run"
    assert main(["train", *TINY_TRAIN, "--max-iters", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from fcn_deploy.fileio import atomic_write
        def write(f):
            f.write(b"half a PNG")
            f.flush()
            print("writing", flush=True)
            time.sleep(60)
        atomic_write({str(run / 'curves.png')!r}, write)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
        writer.stdout.close()
    left = [p for p in os.listdir(run) if p.startswith(".curves.png.") and p.endswith(".tmp")]
    assert len(left) == 1
    assert main(["train", "--resume", str(run), "--no-progress", "--threads", "1"]) == 0
    assert not [p for p in os.listdir(run) if p.endswith(".tmp")]
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_removed_on_failure_keeps_what_existed_and_what_got_content(tmp_path):
    (tmp_path / "old.txt").write_text("the user's")
    with pytest.raises(KeyboardInterrupt):
        with removed_on_failure(files=[tmp_path / "old.txt", tmp_path / "a" / "new.txt"],
                                folders=[tmp_path / "kept" / "run", tmp_path / "gone" / "run"]):
            (tmp_path / "old.txt").write_text("replaced")
            (tmp_path / "a").mkdir()
            (tmp_path / "a" / "new.txt").write_text("half")
            (tmp_path / "kept" / "run").mkdir(parents=True)
            (tmp_path / "kept" / "run" / "last.pt").write_text("a checkpoint to resume from")
            (tmp_path / "gone" / "run").mkdir(parents=True)
            raise KeyboardInterrupt
    assert tree(tmp_path) == ["kept", "kept/run", "kept/run/last.pt", "old.txt"]
    with removed_on_failure(folders=[tmp_path / "ok"]):  # success: everything stays
        (tmp_path / "ok").mkdir()
    assert (tmp_path / "ok").is_dir()


def test_a_training_run_stopped_by_sigterm_unwinds_like_ctrl_c(tmp_path):
    """``kill`` (SIGTERM) mid-epoch, before the first checkpoint: the command unwinds as on
    Ctrl-C (status 143, one line), and the run folder it made, still empty, goes with it."""
    pytest.importorskip("torch")
    run = tmp_path / "runs" / "long"
    args = TINY_TRAIN + ["--dataset-option", "count=4000", "--epochs", "1", "--workers", "0"]  # the last count wins
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, "-m", "fcn_deploy.cli", "train", *args, "--out", str(run)],
                               cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stderr:  # the trainer says what it starts once the loop is about to run
            if line.startswith("training fcn8s_resnet18"):
                break
        else:
            pytest.fail("the run never started: " + process.communicate()[1])
        time.sleep(1.0)
        assert run.is_dir() and not list(run.iterdir())
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 143, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "fcn-deploy: stopped by SIGTERM"
    assert tree(tmp_path) == []
