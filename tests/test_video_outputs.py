"""Video and file outputs as a user meets them (issues 30 and 31): H.264 that ffprobe reads and
Chromium plays, the source's measured frame rate, a real full disk, a real SIGKILL, two real
runs racing for one file, label names that never collide, and ``{stream}`` with one stream."""
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from browser_helpers import browser_problem, play_video
from small_disk import child_file_limit, full_disk_reason, small_disk
from test_run_cli import env, fcn_deploy, free_port, start
from video_helpers import synthetic_frames, write_video

pytest.importorskip("av", reason="H.264 files are written with PyAV (pip install av)")

FFPROBE = shutil.which("ffprobe")
needs_ffprobe = pytest.mark.skipif(FFPROBE is None, reason="no ffprobe (apt-get install ffmpeg)")


def probe(path) -> dict:
    """ffprobe's view of a video's first stream: codec, size, rates, and frames decoded."""
    result = subprocess.run([FFPROBE, "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                             "stream=codec_name,width,height,r_frame_rate,avg_frame_rate,nb_read_frames",
                             "-of", "default=noprint_wrappers=1", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return dict(line.split("=", 1) for line in result.stdout.split())


def one_error_line(result) -> str:
    """The run failed with one error line, its last on stderr (the lines before it say what it
    opened), and no traceback."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("fcn-deploy: error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1], result.stderr
    return errors[0]


def noise_video(path: Path, frames: int, height=120, width=160, fps=10.0) -> Path:
    """Incompressible frames: a video of them takes far more space than the tmpfs gives."""
    rng = np.random.default_rng(0)
    return write_video(path, [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(frames)],
                       "MJPG", fps)


# -- H.264 that plays everywhere -------------------------------------------------------------------
@needs_ffprobe
def test_default_mp4_is_h264_with_the_source_frame_count_and_rate(tmp_path, tiny_onnx):
    src = write_video(tmp_path / "in.avi", synthetic_frames(23), "MJPG", fps=7.5)
    result = fcn_deploy("run", "--model", tiny_onnx, "--source", src, "--output", "out.mp4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    info = probe(tmp_path / "out.mp4")
    assert info["codec_name"] == "h264"
    assert int(info["nb_read_frames"]) == 23
    assert info["r_frame_rate"] == "15/2" and info["avg_frame_rate"] == "15/2"
    assert (info["width"], info["height"]) == ("96", "72")
    assert "wrote out.mp4 (23 frames at 7.5 fps)" in result.stdout
    assert sorted(os.listdir(tmp_path)) == ["in.avi", "out.mp4"]  # no temporary file left


@pytest.mark.skipif(browser_problem() is not None, reason=str(browser_problem()))
def test_chromium_plays_the_h264_file_and_not_the_old_mp4v(tmp_path, tiny_onnx):
    src = write_video(tmp_path / "in.avi", synthetic_frames(20), "MJPG", fps=10)
    for name, codec in (("h264.mp4", "h264"), ("mp4v.mp4", "mp4v")):
        result = fcn_deploy("run", "--model", tiny_onnx, "--source", src, "--output", name, "--codec", codec,
                            cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    played = play_video(tmp_path, "h264.mp4")
    assert played["readyState"] >= 2 and played["width"] == 96 and played["error"] == 0, played
    assert played["state"] == "playing", played  # currentTime advanced
    refused = play_video(tmp_path, "mp4v.mp4")  # what issue 31 reports: browsers do not play mp4v
    assert refused["readyState"] < 2, refused


@needs_ffprobe
def test_codec_and_bitrate_options(tmp_path, tiny_onnx):
    src = write_video(tmp_path / "in.avi", synthetic_frames(12), "MJPG", fps=12)
    for codec, expected in (("h265", "hevc"), ("mp4v", "mpeg4")):
        result = fcn_deploy("run", "--model", tiny_onnx, "--source", src, "--output", f"{codec}.mp4",
                            "--codec", codec, "--bitrate", "300k", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        info = probe(tmp_path / f"{codec}.mp4")
        assert info["codec_name"] == expected and int(info["nb_read_frames"]) == 12
    bad = fcn_deploy("run", "--model", tiny_onnx, "--source", src, "--output", "x.mp4", "--codec", "nosuch",
                     cwd=tmp_path)
    assert "unknown video codec 'nosuch'" in one_error_line(bad)
    assert not (tmp_path / "x.mp4").exists()
    bad = fcn_deploy("run", "--model", tiny_onnx, "--source", src, "--output", "x.mp4", "--bitrate", "fast",
                     cwd=tmp_path)
    assert bad.returncode == 2 and "bitrate must be bits per second" in bad.stderr


@needs_ffprobe
def test_a_4_fps_mjpeg_stream_is_recorded_at_4_fps(tmp_path, tiny_onnx):
    """Issue 30's repro: a live MJPEG source that FFmpeg calls 25 fps, really sending 4."""
    from fcn_deploy.runtime.mjpeg import MjpegServer

    server = MjpegServer("127.0.0.1", 0)
    frames = [cv2.imencode(".jpg", f)[1].tobytes() for f in synthetic_frames(8)]
    stop = threading.Event()

    def publish():
        i = 0
        while not stop.wait(0.25):  # 4 frames per second
            server.publish(frames[i % len(frames)])
            i += 1

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.address[1]}/stream.mjpg"
        # Frames sent while the model loads reach the run in a burst: the rate is measured past it.
        result = fcn_deploy("run", "--model", tiny_onnx, "--source", url, "--max-frames", "24", "--output",
                            "live.mp4", cwd=tmp_path, timeout=120)
    finally:
        stop.set()
        thread.join()
        server.close()
    assert result.returncode == 0, result.stderr
    info = probe(tmp_path / "live.mp4")
    rate = eval(info["avg_frame_rate"])  # "4/1", or a fraction near it
    assert rate == 4, info
    frames = int(info["nb_read_frames"])  # a live source may drop a frame to stay current
    assert frames >= 10 and f"wrote live.mp4 ({frames} frames at 4 fps)" in result.stdout


# -- nothing half-written --------------------------------------------------------------------------
def test_full_disk_is_one_line_a_failure_and_no_file(tmp_path, tiny_onnx):
    src = noise_video(tmp_path / "noise.avi", 40)
    small = tmp_path / "small"
    with small_disk(small, "300k") as mounted:
        command = [sys.executable, "-m", "fcn_deploy.cli", "run", "--model", str(tiny_onnx), "--source", str(src),
                   "--max-frames", "40", "--output", str(small / "full.mp4")]
        result = subprocess.run(command, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=120,
                                preexec_fn=child_file_limit(mounted, 300 * 1024))
        line = one_error_line(result)
        assert f"cannot write {small / 'full.mp4'}" in line
        assert full_disk_reason(mounted) in line, line
        assert "wrote" not in result.stdout
        assert os.listdir(small) == []  # nothing under the final name, no temporary file either


def test_full_disk_under_an_image_folder_is_one_line_and_leaves_only_whole_files(tmp_path, tiny_onnx):
    """Per-frame files skip fsync (atomic_write(durable=False)); a full disk must still be
    caught at the write, and every JPEG left under its final name must be whole."""
    src = noise_video(tmp_path / "noise.avi", 40)
    small = tmp_path / "small"
    with small_disk(small, "300k") as mounted:
        command = [sys.executable, "-m", "fcn_deploy.cli", "run", "--model", str(tiny_onnx), "--source", str(src),
                   "--max-frames", "40", "--output", str(small / "frames") + "/"]
        result = subprocess.run(command, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=120,
                                preexec_fn=child_file_limit(mounted, 60 * 1024))
        line = one_error_line(result)
        assert f"cannot write {small / 'frames'}" in line, line
        assert full_disk_reason(mounted) in line, line
        names = os.listdir(small / "frames")
        assert not [n for n in names if n.endswith(".tmp")], names  # no temporary file left behind
        assert len(names) < 40, names
        for name in names:  # each file there decodes: written whole or not at all
            assert cv2.imread(str(small / "frames" / name)) is not None, name


def test_sigkill_leaves_nothing_at_the_final_name_and_the_rerun_works(tmp_path, tiny_onnx):
    src = write_video(tmp_path / "in.avi", synthetic_frames(20), "MJPG", fps=10)
    process = start("run", "--model", tiny_onnx, "--source", src, "--loop", "--output", "out.mp4", cwd=tmp_path)
    try:
        deadline = time.time() + 60
        temps = []
        while time.time() < deadline and not any(os.path.getsize(t) > 10000 for t in temps):
            temps = [tmp_path / n for n in os.listdir(tmp_path) if n.startswith(".out.mp4.")]
            time.sleep(0.1)
        assert temps, "the run never started writing"
    finally:
        process.kill()  # SIGKILL: no handler, no finally, no close
        process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "out.mp4").exists()  # no unplayable file at the name asked for
    time.sleep(1.2)  # older than TempBeside's guard against racing a run that just began
    rerun = fcn_deploy("run", "--model", tiny_onnx, "--source", src, "--max-frames", "5", "--output", "out.mp4",
                       cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr  # not refused: nothing was there
    assert sorted(os.listdir(tmp_path)) == ["in.avi", "out.mp4"]  # and the killed run's leftover is gone


@needs_ffprobe
def test_two_runs_writing_one_file_cannot_both_succeed(tmp_path, tiny_onnx):
    src = write_video(tmp_path / "in.avi", synthetic_frames(20), "MJPG", fps=10)
    runs = [start("run", "--model", tiny_onnx, "--source", src, "--loop", "--max-frames", "150", "--output",
                  "same.mp4", cwd=tmp_path) for _ in range(2)]
    results = [run.communicate(timeout=180) + (run.returncode,) for run in runs]
    winners = [r for r in results if r[2] == 0]
    losers = [r for r in results if r[2] != 0]
    assert len(winners) == 1 and len(losers) == 1, results
    assert "wrote same.mp4 (150 frames" in winners[0][0]
    assert "wrote" not in losers[0][0]
    line = one_error_line(subprocess.CompletedProcess([], losers[0][2], losers[0][0], losers[0][1]))
    assert "created by another program while this run wrote it" in line or "already exists" in line, line
    assert int(probe(tmp_path / "same.mp4")["nb_read_frames"]) == 150
    assert sorted(os.listdir(tmp_path)) == ["in.avi", "same.mp4"]


# -- names -------------------------------------------------------------------------------------------
def test_two_images_sharing_a_stem_keep_both_labels(tmp_path, tiny_onnx):
    """Issue 30's repro: a.jpg and a.png in one folder."""
    images = tmp_path / "img2"
    images.mkdir()
    one, two, three = synthetic_frames(3, 40, 56)
    cv2.imwrite(str(images / "a.jpg"), one)
    cv2.imwrite(str(images / "a.png"), two)
    cv2.imwrite(str(images / "b.png"), three)
    for extra in ((), ("--overwrite",)):
        result = fcn_deploy("run", "--model", tiny_onnx, "--source", "img2/", "--labels-dir", "labels2/",
                            "--output", "none", *extra, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "wrote 3 label PNGs to labels2" in result.stdout
        assert sorted(os.listdir(tmp_path / "labels2")) == ["a.jpg.png", "a.png.png", "b.png"]


def test_stream_field_is_replaced_with_one_stream(tmp_path, tiny_onnx):
    """Issue 30's repro: --source cam=FILE --output 'o_{stream}.mp4' --labels-dir 'l_{stream}/'."""
    src = write_video(tmp_path / "vtest.avi", synthetic_frames(6), "MJPG", fps=10)
    result = fcn_deploy("run", "--model", tiny_onnx, "--source", f"cam={src}", "--output", "o_{stream}.mp4",
                        "--labels-dir", "l_{stream}/", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path)) == ["l_cam", "o_cam.mp4", "vtest.avi"]
    assert len(os.listdir(tmp_path / "l_cam")) == 6
    assert "wrote o_cam.mp4 (6 frames" in result.stdout


def test_stream_field_in_a_multi_stream_labels_dir(tmp_path, tiny_onnx):
    src = write_video(tmp_path / "clip.avi", synthetic_frames(4), "MJPG", fps=10)
    result = fcn_deploy("run", "--model", tiny_onnx, "--source", f"a={src}", "--source", f"b={src}",
                        "--output", "none", "--labels-dir", "l_{stream}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(os.listdir(tmp_path / "l_a")) == 4 and len(os.listdir(tmp_path / "l_b")) == 4
