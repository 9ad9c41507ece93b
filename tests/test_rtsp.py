"""The rtsp:// output read by standard clients (FFmpeg's ffprobe and ffmpeg) over real sockets
on 127.0.0.1: one stream, each stream of a multi-stream run on its own path, from the CLI."""
import shutil
import signal
import subprocess
import threading
import time

import cv2
import numpy as np
import pytest

from test_run_cli import free_port, start, wait_for_line
from video_helpers import synthetic_frames, write_video

pytest.importorskip("av", reason="the RTSP output encodes H.264 with PyAV (pip install av)")

from fcn_deploy.runtime.rtsp import (  # noqa: E402 (after the skip)
    RtspError,
    parse_rtsp_output,
    rtp_payloads,
    split_annexb,
)
from fcn_deploy.runtime.encoders import VideoSettings  # noqa: E402
from fcn_deploy.runtime.sinks import open_sink  # noqa: E402
from fcn_deploy.runtime.sources import Frame  # noqa: E402

FFMPEG, FFPROBE = shutil.which("ffmpeg"), shutil.which("ffprobe")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None or FFPROBE is None, reason="no ffmpeg/ffprobe (apt-get install ffmpeg)")


def read_frames(url, count=10, timeout=60):
    """``ffmpeg -frames:v COUNT``: decode that many frames of the stream; (exit code, frames, stderr)."""
    result = subprocess.run([FFMPEG, "-v", "error", "-rtsp_transport", "tcp", "-i", url, "-frames:v", str(count),
                             "-f", "rawvideo", "-pix_fmt", "gray", "-"], capture_output=True, timeout=timeout)
    return result.returncode, result.stdout, result.stderr.decode(errors="replace")


def probe(url):
    result = subprocess.run([FFPROBE, "-v", "error", "-rtsp_transport", "tcp", "-show_entries",
                             "stream=codec_name,width,height", "-of", "default=noprint_wrappers=1", url],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return dict(line.split("=", 1) for line in result.stdout.split())


class Publisher:
    """Writes numbered frames into sinks at ``fps`` on a thread, as the pipeline would."""

    def __init__(self, sinks, size=(120, 160), fps=25.0):
        self.sinks, self.size, self.period = sinks, size, 1.0 / fps
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        i = 0
        while not self.stop.wait(self.period):
            for k, sink in enumerate(self.sinks):
                image = np.full((*self.size, 3), (40 + 80 * k) % 256, np.uint8)
                cv2.putText(image, str(i), (10, self.size[0] // 2), cv2.FONT_HERSHEY_SIMPLEX, 1, (255, 255, 255), 2)
                sink.write(image, Frame(image, i, None, time.perf_counter()))
            i += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        for sink in self.sinks:
            sink.close()


def test_h264_is_packed_as_rfc6184_and_unpacks_to_the_same_units():
    units = [b"\x67" + bytes(10), b"\x68" + bytes(4), b"\x65" + bytes(range(256)) * 20]  # SPS, PPS, big IDR
    stream = b"".join(b"\x00\x00\x00\x01" + unit for unit in units)
    assert split_annexb(stream) == units
    payloads = rtp_payloads(units, mtu=1400)
    assert payloads[:2] == units[:2] and len(payloads) > 3  # the IDR is fragmented
    fragments = payloads[2:]
    assert all(p[0] & 0x1F == 28 for p in fragments)  # FU-A
    assert fragments[0][1] & 0x80 and fragments[-1][1] & 0x40  # start and end bits
    rebuilt = bytes([(fragments[0][0] & 0xE0) | (fragments[0][1] & 0x1F)]) + b"".join(p[2:] for p in fragments)
    assert rebuilt == units[2] and max(map(len, payloads)) <= 1400


def test_address_defaults_to_loopback_and_bad_urls_are_one_line():
    assert parse_rtsp_output("rtsp://:8554/live") == ("127.0.0.1", 8554, "live")
    assert parse_rtsp_output("rtsp:///cam") == ("127.0.0.1", 8554, "cam")
    assert parse_rtsp_output("rtsp://0.0.0.0:9000/a/b") == ("0.0.0.0", 9000, "a/b")
    with pytest.raises(RtspError, match="bad port"):
        parse_rtsp_output("rtsp://127.0.0.1:http/live")
    with pytest.raises(RtspError, match="H.264"):
        open_sink("rtsp://127.0.0.1:0/live", video=VideoSettings(codec="mp4v"))


@needs_ffmpeg
def test_ffmpeg_reads_ten_frames_of_the_stream():
    sink = open_sink("rtsp://127.0.0.1:0/live")
    with Publisher([sink]):
        info = probe(sink.url)
        assert (info["codec_name"], info["width"], info["height"]) == ("h264", "160", "120")
        code, frames, err = read_frames(sink.url, 10)
    assert code == 0, err
    assert len(frames) == 10 * 120 * 160  # ten whole decoded frames
    assert not sink.watched  # the viewers left: nothing is encoded any more


@needs_ffmpeg
def test_each_stream_of_a_multi_stream_server_is_reachable_on_its_own():
    main = open_sink("rtsp://127.0.0.1:0/live")
    front, rear = main.channel("front"), main.channel("rear")
    with Publisher([front, rear]):
        grey = {}
        for sink in (front, rear):
            code, frames, err = read_frames(sink.url, 3)
            assert code == 0, err
            grey[sink.url] = np.frombuffer(frames, np.uint8).reshape(3, 120, 160)[:, 100:, 100:].mean()
        unknown = subprocess.run([FFPROBE, "-v", "error", "-rtsp_transport", "tcp",
                                  main.url.replace("/live", "/nosuch")], capture_output=True, text=True, timeout=30)
    main.close()
    assert front.url.endswith("/live/front") and rear.url.endswith("/live/rear")
    assert abs(grey[front.url] - 40) < 15 and abs(grey[rear.url] - 120) < 15  # each its own picture
    assert unknown.returncode != 0 and "404" in unknown.stderr


@needs_ffmpeg
def test_cli_serves_every_stream_by_name(tmp_path, tiny_onnx):
    src = write_video(tmp_path / "in.avi", synthetic_frames(20), "MJPG", fps=10)
    port = free_port()
    process = start("run", "--model", tiny_onnx, "--source", f"a={src}", "--source", f"b={src}", "--loop",
                    "--output", f"rtsp://127.0.0.1:{port}/{{stream}}", cwd=tmp_path)
    try:
        wait_for_line(process, "RTSP stream")
        results = [read_frames(f"rtsp://127.0.0.1:{port}/{name}", 10) for name in ("a", "b")]
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    for code, frames, stderr in results:
        assert code == 0, stderr
        assert len(frames) == 10 * 72 * 96
    assert "Traceback" not in err
