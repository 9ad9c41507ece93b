"""What ``fcn-deploy run`` shows while it works: a progress line on a terminal, nothing
extra in a log; and one line, nothing else, for a file that is not a model.

The terminal is a real pseudo-terminal (``os.openpty``), the runs are real CLI runs of a
real exported model on real PNG files and a real video file.
"""
from __future__ import annotations

import io
import logging
import os
import select
import subprocess
import sys
import time

import pytest

from fcn_deploy.commands._progress import FrameProgress, frame_progress_line

from onnx_helpers import REPO, assert_one_line_error, run_cli, write_images


def test_the_line_with_a_known_total():
    line = frame_progress_line(120, 795, 24.3, 5.0, width=80)
    assert line.startswith("frames 120/795 [") and line.endswith("  15%   24.3 FPS  ETA 0:27")
    assert len(line) <= 80 and "#" in line and "." in line
    assert frame_progress_line(795, 795, 24.3, 30.0, width=80).endswith("100%   24.3 FPS  ETA 0:00")
    first = frame_progress_line(0, 795, 0.0, 0.1, width=80)  # no rate yet: no made-up FPS or ETA
    assert "-- FPS" in first and "ETA --:--" in first and "0.0 FPS" not in first
    narrow = frame_progress_line(5, 10, 2.0, 2.5, width=40)
    assert len(narrow) <= 40 and "[" not in narrow and "50%" in narrow  # too narrow for a bar


def test_the_live_line():
    assert frame_progress_line(1234, None, 24.9, 51.0) == "frames 1234   24.9 FPS  0:51"
    assert frame_progress_line(10, None, 5.0, 3725.0, dropped=7) == \
        "frames 10    5.0 FPS  1:02:05  dropped 7 to stay current"


def read_all(fd: int, wait: float = 0.5) -> str:
    chunks = []
    while select.select([fd], [], [], wait)[0]:
        try:
            data = os.read(fd, 65536)
        except OSError:  # the other end closed
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


def test_progress_on_a_terminal_and_log_lines_between():
    master, slave = os.openpty()
    stream = io.TextIOWrapper(os.fdopen(slave, "wb", buffering=0), write_through=True)
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    done = [0]
    try:
        progress = FrameProgress(lambda: (done[0], 0), total=8, stream=stream)
        assert progress.enabled  # a terminal
        FrameProgress.INTERVAL_S, interval = 0.05, FrameProgress.INTERVAL_S
        try:
            with progress:
                for _ in range(4):
                    done[0] += 1
                    time.sleep(0.1)
                progress.draw()  # the line is up (on a busy machine the thread may not have drawn yet)
                logging.getLogger("fcn_deploy.test").warning("a warning in the middle")
                for _ in range(4):
                    done[0] += 1
                    time.sleep(0.1)
        finally:
            FrameProgress.INTERVAL_S = interval
        text = read_all(master)
    finally:
        root.removeHandler(handler)
        stream.close()
        os.close(master)
    assert "frames 8/8 [" in text and "100%" in text and text.endswith("\r\n")  # the last state, then a newline
    assert "\r\x1b[Ka warning in the middle" in text  # the line is cleared before a log record


def test_no_progress_when_not_a_terminal():
    stream = io.StringIO()
    progress = FrameProgress(lambda: (3, 0), total=8, stream=stream)
    with progress:
        time.sleep(0.3)
    assert not progress.enabled and stream.getvalue() == ""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("frames") / "in", count=6)


def test_run_in_a_log_has_no_progress_line(tiny_onnx, folder):
    result = run_cli(["run", "--model", tiny_onnx, "--source", folder, "--output", "none", "--device", "ort-cpu"])
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and "frames 6/6" not in result.stderr
    assert "6 frames in" in result.stdout  # the report says it all at the end


def test_run_on_a_terminal_shows_the_bar(tiny_onnx, folder):
    master, slave = os.openpty()
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", COLUMNS="100")
    proc = subprocess.Popen([sys.executable, "-m", "fcn_deploy.cli", "run", "--model", str(tiny_onnx), "--source",
                             str(folder), "--output", "none", "--device", "ort-cpu"],
                            cwd=str(REPO), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    try:
        out, _ = proc.communicate(timeout=180)
        text = read_all(master)
    finally:
        os.close(master)
    assert proc.returncode == 0, text
    assert "frames 6/6 [" in text and "100%" in text, text
    assert b"6 frames in" in out


def test_a_file_that_is_not_onnx_is_one_line_and_nothing_else(tmp_path):
    """With OpenVINO installed, its TensorFlow frontend used to try the file too and print
    absl lines ("WARNING: All log messages before absl::InitializeLog() ...")."""
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(bytes(range(256)) * 20)
    for device in ("cpu", "openvino", "ort-cpu"):
        if device == "openvino":
            pytest.importorskip("openvino")
        result = run_cli(["run", "--model", garbage, "--output", "none", "--max-frames", "1", "--device", device])
        assert_one_line_error(result, "garbage.onnx")
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
