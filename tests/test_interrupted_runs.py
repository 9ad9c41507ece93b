"""How an interrupted ``fcn-deploy run`` ends (issue 30, "Interrupted runs look complete"): real
signals to a real ``fcn-deploy run`` process.

The rule (``fcn-deploy run --help``): a video file or image folder stopped by SIGINT or SIGTERM
before its end exits with 130 or 143 and one line saying how many of its frames were processed
(the outputs hold only those); a live source (here a real MJPEG stream over HTTP on 127.0.0.1),
or a file played with ``--loop``, has no end of its own, so Ctrl-C is how it ends: status 0.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import pytest
from video_helpers import synthetic_frames, write_video

pytestmark = pytest.mark.runtime

FRAMES = 3000


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> Path:
    """3000 small frames: far more than a run gets through in the few seconds before the signal."""
    return write_video(tmp_path_factory.mktemp("video") / "long.avi", synthetic_frames(FRAMES, 48, 64) , "MJPG", 25.0)


@pytest.fixture
def mjpeg_stream():
    """A live network camera stand-in: a real HTTP server sending JPEG parts for as long as it is read."""
    jpeg = cv2.imencode(".jpg", synthetic_frames(1, 48, 64)[0])[1].tobytes()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n"
                                     % (len(jpeg), jpeg))
                    time.sleep(0.04)
            except OSError:
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/camera.mjpg"
    server.shutdown()
    server.server_close()


def run_until_labels_then_signal(tmp_path: Path, source: str, signum: int, *extra: str):
    """Start ``fcn-deploy run`` on ``source``, wait until it has written label PNGs (the pipeline
    is running, its signal handlers in place), send ``signum``; return (status, stdout, stderr)."""
    labels = tmp_path / "labels"
    env = dict(os.environ, OMP_NUM_THREADS="1", FCN_DEPLOY_HOME=str(tmp_path / "home"))
    env.pop("DISPLAY", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "fcn_deploy.cli", "run", "--source", source, "--device", "ort-cpu", "--threads", "1",
         "--input-size", "native", "--output", "none", "--labels-dir", str(labels), *extra],
        cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (labels.is_dir() and len([p for p in labels.iterdir() if p.suffix == ".png"]) >= 3):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no label written within 120 s"
            time.sleep(0.1)
        process.send_signal(signum)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, out, err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_file_cut_short_by_a_signal_exits_non_zero_and_says_how_far_it_got(tmp_path, long_video, signum):
    # FFmpeg named: the line quotes the source's description, which names a GStreamer decoder
    # where --decode auto takes one (the GStreamer job).
    status, out, err = run_until_labels_then_signal(tmp_path, str(long_video), signum, "--decode", "ffmpeg")
    name = signal.Signals(signum).name
    assert status == 128 + signum, (out, err)
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("fcn-deploy: error: ")]
    assert len(lines) == 1, err
    written = len(list((tmp_path / "labels").glob("*.png")))
    assert 3 <= written < FRAMES
    assert lines[0] == (f"fcn-deploy: error: stopped by {name} before the end of the input (video file "
                        f"{long_video}: {written} of {FRAMES} frames processed); the outputs hold only those frames")
    assert f"stopped by {name}" in out and f"wrote {written} label PNGs" in out


def test_a_file_that_ends_before_the_signal_is_not_cut_short(tmp_path):
    """--max-frames reached, or the end of the file: status 0 whatever comes after."""
    video = write_video(tmp_path / "short.avi", synthetic_frames(5, 48, 64), "MJPG", 25.0)
    env = dict(os.environ, OMP_NUM_THREADS="1", FCN_DEPLOY_HOME=str(tmp_path / "home"))
    result = subprocess.run([sys.executable, "-m", "fcn_deploy.cli", "run", "--source", str(video), "--device",
                             "ort-cpu", "--input-size", "native", "--output", "none", "--labels-dir", "l"],
                            cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "stopped by end of input" in result.stdout


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_live_stream_stopped_by_a_signal_ends_normally(tmp_path, mjpeg_stream, signum):
    status, out, err = run_until_labels_then_signal(tmp_path, mjpeg_stream, signum)
    assert status == 0, (out, err)
    assert "fcn-deploy: error" not in err and "Traceback" not in err
    assert f"stopped by {signal.Signals(signum).name}" in out


def test_a_looping_file_stopped_by_ctrl_c_ends_normally(tmp_path, long_video):
    status, out, err = run_until_labels_then_signal(tmp_path, str(long_video), signal.SIGINT, "--loop")
    assert status == 0, (out, err)
    assert "stopped by SIGINT" in out and "fcn-deploy: error" not in err
