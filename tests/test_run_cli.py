"""``fcn-deploy run`` as a user runs it: a subprocess, real files, real signals, a real HTTP client."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from video_helpers import count_frames, read_mjpeg_parts, synthetic_frames, write_video

REPO = Path(__file__).resolve().parents[1]
BUNDLED_MODEL = REPO / "fcn_deploy" / "assets" / "camvid.onnx"


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e.pop("DISPLAY", None)
    return e


def fcn_deploy(*args, cwd, timeout=60):
    return subprocess.run([sys.executable, "-m", "fcn_deploy.cli", *map(str, args)], cwd=cwd, env=env(),
                          capture_output=True, text=True, timeout=timeout)


def start(*args, cwd):
    return subprocess.Popen([sys.executable, "-m", "fcn_deploy.cli", *map(str, args)], cwd=cwd, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(process, text, timeout=30):
    """Read the child's stderr until a line containing ``text`` (the run has started)."""
    deadline = time.time() + timeout
    lines = []
    while time.time() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"no {text!r} in stderr: {''.join(lines)}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_video_file_in_every_frame_out(tmp_path, tiny_onnx):
    src = write_video(tmp_path / "in.avi", synthetic_frames(21), "MJPG", fps=24)
    result = fcn_deploy("run", "--model", tiny_onnx, "--source", src, "--output", "out.mp4",
                        "--output", "frames", "--mode", "side-by-side", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert count_frames(tmp_path / "out.mp4") == 21
    assert cv2.VideoCapture(str(tmp_path / "out.mp4")).get(cv2.CAP_PROP_FPS) == pytest.approx(24)
    assert len(list((tmp_path / "frames").glob("*.jpg"))) == 21
    assert "21 frames in" in result.stdout and "FPS end to end" in result.stdout
    assert "wrote out.mp4 (21 frames at 24 fps)" in result.stdout


def test_image_folder_in_label_pngs_out(tmp_path, tiny_onnx):
    images = tmp_path / "images"
    images.mkdir()
    names = ["0001TP_008550", "0001TP_008580", "Seq05VD_f00000"]
    for name, img in zip(names, synthetic_frames(3, 40, 56)):
        cv2.imwrite(str(images / f"{name}.png"), img)
    result = fcn_deploy("run", "--model", tiny_onnx, "--source", images, "--labels-dir", "labels",
                        "--output", "none", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.stem for p in (tmp_path / "labels").glob("*.png")) == names
    lab = cv2.imread(str(tmp_path / "labels" / f"{names[0]}.png"), cv2.IMREAD_UNCHANGED)
    assert lab.shape == (40, 56) and lab.dtype == np.uint8 and lab.max() < 3
    assert "wrote 3 label PNGs" in result.stdout
    assert not (tmp_path / "fcn-deploy-out").exists()  # --labels-dir alone renders nothing


def test_default_output_is_named_printed_and_never_overwritten(tmp_path, tiny_onnx):
    for expected in ("camvid_clip_overlay.mp4", "camvid_clip_overlay_2.mp4"):
        result = fcn_deploy("run", "--model", tiny_onnx, "--max-frames", "2", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        path = Path("fcn-deploy-out") / expected
        assert f"wrote {path} (2 frames" in result.stdout
        assert count_frames(tmp_path / path) == 2


def test_mjpeg_endpoint_read_by_an_http_client_then_sigint(tmp_path, tiny_onnx):
    src = write_video(tmp_path / "in.mp4", synthetic_frames(10), "mp4v")
    port = free_port()
    process = start("run", "--model", tiny_onnx, "--source", src, "--loop", "--output",
                    f"http://127.0.0.1:{port}", cwd=tmp_path)
    try:
        wait_for_line(process, "watch the stream at")
        parts = read_mjpeg_parts(f"http://127.0.0.1:{port}/stream.mjpg", 2)
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert len(parts) == 2
    for jpeg in parts:
        assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (72, 96, 3)
    assert process.returncode == 0, err
    assert "stopped by SIGINT" in out and "Traceback" not in err


def test_sigint_leaves_a_playable_file(tmp_path, tiny_onnx):
    src = write_video(tmp_path / "in.mp4", synthetic_frames(10), "mp4v")
    process = start("run", "--model", tiny_onnx, "--source", src, "--loop", "--output", "out.mp4", cwd=tmp_path)
    wait_for_line(process, "-> video file out.mp4")
    time.sleep(1.0)  # a few hundred frames of the tiny model
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Traceback" not in err and "stopped by SIGINT" in out
    frames = count_frames(tmp_path / "out.mp4")
    assert frames > 0
    assert f"wrote out.mp4 ({frames} frames" in out  # every rendered frame is in the file


def assert_one_error_line(result, *needles):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fcn-deploy: error: ")
    for needle in needles:
        assert needle in lines[0]


def test_bad_inputs_are_one_clear_line(tmp_path, tiny_onnx):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(1).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    existing = tmp_path / "taken.mp4"
    existing.write_bytes(b"user data")
    clip = write_video(tmp_path / "in.avi", synthetic_frames(2), "MJPG")
    m = ("--model", tiny_onnx)
    cases = [
        (("--camera", "97"), ("camera 97",)),
        (("--source", tmp_path / "missing.mp4"), ("no such file", "missing.mp4")),
        (("--source", corrupt), ("corrupt.mp4",)),
        (("--source", "ftp://host/clip.mp4"), ("unsupported source URI",)),
        (("--source", clip, "--output", existing), ("taken.mp4 already exists", "--overwrite")),
        (("--source", clip, "--output", "rtmp://host/live"), ("unsupported output URI",)),
        (("--source", clip, "--output", "display://0"), ("display://0",)),
        (("--source", clip, "--input-size", "big"), ("--input-size",)),
        (("--source", clip, "--classes", "zebra"), ("unknown class 'zebra'",)),
        (("--source", clip, "--output", clip, "--overwrite"), ("is the source being read",)),
        (("--source", tmp_path, "--labels-dir", tmp_path, "--overwrite"), ("is the source being read",)),
    ]
    for args, needles in cases:
        assert_one_error_line(fcn_deploy("run", *m, *args, cwd=tmp_path), *needles)
    assert existing.read_bytes() == b"user data"
    assert_one_error_line(fcn_deploy("run", "--model", tmp_path / "none.onnx", "--source", clip, cwd=tmp_path),
                          "none.onnx")
    assert_one_error_line(fcn_deploy("run", "--model", "best.pt", "--source", clip, cwd=tmp_path),
                          "fcn-deploy export")


def test_no_arguments_without_the_bundled_model_says_so(tmp_path, monkeypatch, capsys):
    # An install without the bundled files (as if the assets folder were empty).
    from fcn_deploy import cli
    from fcn_deploy.runtime import assets

    monkeypatch.setattr(assets, "ASSETS", tmp_path / "no-assets")
    monkeypatch.chdir(tmp_path)
    assert cli.main([]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "camvid.onnx" in err[0] and err[0].startswith("fcn-deploy: error:")


@pytest.mark.skipif(not BUNDLED_MODEL.exists(), reason="the bundled model is not installed yet")
def test_bundled_model_on_the_bundled_clip(tmp_path):
    result = fcn_deploy("run", "--max-frames", "2", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "fcn-deploy-out" / "camvid_clip_overlay.mp4"
    assert count_frames(out) == 2 and "wrote fcn-deploy-out/camvid_clip_overlay.mp4" in result.stdout
