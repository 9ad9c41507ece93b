"""Bandwidth of the live outputs on the bundled clip: H.264 over RTSP against MJPEG over HTTP.

    python3 benchmarks/stream_bandwidth.py                  # bundled model and clip
    python3 benchmarks/stream_bandwidth.py --pan           # a 30 fps pan across its first frame
    python3 benchmarks/stream_bandwidth.py --preset veryfast --bitrate 1M --json out.json

The clip's frames are rendered by the bundled model as ``fcn-deploy run`` draws them (overlay,
legend, HUD), then sent the two ways a viewer can watch them:

* **MJPEG** (``http://``): each frame a JPEG at the HTTP output's quality
  (:class:`~fcn_deploy.runtime.sinks.MjpegSink`), encoded by the same call; the multipart
  headers add about 100 bytes a frame, left out.
* **H.264** (``rtsp://``): the frames are published at the clip's own rate into the run's RTSP
  server while ``ffmpeg`` reads the stream on 127.0.0.1, as a viewer would; counted are the
  H.264 bytes the encoder made and the bytes the server sent (RTP and interleaving headers
  included).

Reported: bytes per frame of each, their ratio, and the quality each delivers (PSNR of the
decoded frames against the rendered ones; for H.264, the frames ffmpeg decoded from the
stream); and, for files, the CPU time per frame of writing the same frames as H.264 (the
default), as MPEG-4 Part 2 (``--codec mp4v``) and through OpenCV's ``mp4v`` ``VideoWriter``
(what ``.mp4`` outputs were before): process CPU time, all threads, which a busy machine does
not inflate as it does wall time. The bundled clip is CamVid's labelled frames, one second
apart, so each frame differs more from the last than in a 30 fps camera: the H.264 gain here
is a lower bound for live video.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

if __package__ in (None, ""):  # `python3 benchmarks/NAME.py` from a checkout: benchmarks/ is not installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fcn_deploy.runtime.assets import ASSETS, BUNDLED_MODELS, DEMO_CLIP
from fcn_deploy.runtime.backends import open_backend
from fcn_deploy.runtime.encoders import VideoSettings
from fcn_deploy.runtime.pipeline import Pipeline
from fcn_deploy.runtime.rtsp import RtspSink
from fcn_deploy.runtime.sinks import MjpegSink, Sink
from fcn_deploy.runtime.sources import Frame, open_source
from fcn_deploy.runtime.visualize import VisualOptions, Visualizer


class Keep(Sink):
    """Keeps every rendered picture."""

    def __init__(self):
        self.pictures = []

    def write(self, image, frame) -> None:
        self.pictures.append(image.copy())


def pan_clip(clip: str, frames: int, path: Path) -> str:
    """A 30 fps pan across the clip's first frame (a camera turning 3 px a frame): the
    frame-to-frame redundancy of live video, which the bundled clip (1 frame a second) lacks."""
    capture = cv2.VideoCapture(clip)
    ok, first = capture.read()
    capture.release()
    if not ok:
        raise SystemExit(f"cannot read {clip}")
    height, width = first.shape[:2]
    wide = cv2.resize(first, (width + 3 * frames, int(round(height * (width + 3 * frames) / width))),
                      interpolation=cv2.INTER_CUBIC)
    top = (wide.shape[0] - height) // 2
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (width, height))
    for index in range(frames):
        writer.write(np.ascontiguousarray(wide[top:top + height, 3 * index:3 * index + width]))
    writer.release()
    return str(path)


def rendered_clip(model: str, clip: str, frames: int):
    backend = open_backend(model, "cpu")
    try:
        keep = Keep()
        visualizer = Visualizer(backend.metadata.classes, backend.metadata.palette, VisualOptions())
        source = open_source(clip)
        Pipeline(source, backend, visualizer, [keep], max_frames=frames).run()
        return keep.pictures, source.fps or 10.0
    finally:
        backend.close()


def mjpeg_bytes(pictures, quality: int):
    """(bytes of each JPEG, mean PSNR in dB of the decoded JPEGs against the pictures)."""
    jpegs = [cv2.imencode(".jpg", p, [cv2.IMWRITE_JPEG_QUALITY, quality])[1] for p in pictures]
    return [len(j) for j in jpegs], sum(cv2.PSNR(p, cv2.imdecode(j, cv2.IMREAD_COLOR))
                                        for p, j in zip(pictures, jpegs)) / len(pictures)


def video_psnr(path: Path, pictures) -> float:
    """Mean PSNR in dB of a video file's decoded frames against the pictures it was made of."""
    capture = cv2.VideoCapture(str(path))
    total, count = 0.0, 0
    for picture in pictures:
        ok, decoded = capture.read()
        if not ok:
            break
        total, count = total + cv2.PSNR(picture, decoded[:picture.shape[0], :picture.shape[1]]), count + 1
    capture.release()
    return total / max(count, 1)


def rtsp_bytes(pictures, fps: float, settings: VideoSettings, workdir: Path):
    """(H.264 bytes encoded, bytes sent on the wire, frames encoded, mean PSNR in dB of what the
    client decoded) while ffmpeg watches the stream."""
    sink = RtspSink.open("rtsp://127.0.0.1:0/bandwidth", settings)
    decoded = workdir / "decoded.bgr"
    client = subprocess.Popen([shutil.which("ffmpeg"), "-v", "error", "-rtsp_transport", "tcp", "-i", sink.url,
                               "-f", "rawvideo", "-pix_fmt", "bgr24", "-y", str(decoded)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    clock, count = time.perf_counter(), 0

    def send(picture):  # at the clip's rate, as a live run sends them
        nonlocal count
        due = clock + count / fps
        time.sleep(max(0.0, due - time.perf_counter()))
        sink.write(picture, Frame(picture, count, None, due))
        count += 1

    try:
        deadline = time.time() + 30
        while not sink.watched and time.time() < deadline:  # frames flow before anyone watches, as in a run
            send(pictures[count % len(pictures)])
        if not sink.watched:
            raise SystemExit("ffmpeg never started playing the RTSP stream")
        viewer = sink._channel.viewers[0]
        for picture in pictures:
            send(picture)
        time.sleep(1.0)  # the last frames reach the client
        encoded, frames, sent = sink._channel.encoded_bytes, sink._channel.encoded_frames, viewer.sent_bytes
    finally:
        sink.close()  # the server hangs up: ffmpeg ends its file
        try:
            client.wait(timeout=30)
        except subprocess.TimeoutExpired:
            client.kill()
            client.wait(timeout=30)
    # The client's last frames are the clip's (it may also have one or two sent before them).
    height, width = pictures[0].shape[:2]
    raw = np.fromfile(decoded, np.uint8)
    got = raw[: raw.size - raw.size % (height * width * 3)].reshape(-1, height, width, 3)[-len(pictures):]
    psnr = sum(cv2.PSNR(p, d) for p, d in zip(pictures[-len(got):], got)) / max(len(got), 1)
    return encoded, sent, frames, psnr


def file_cpu_ms(pictures, fps: float, workdir: Path):
    """CPU ms per frame of writing ``pictures`` to a video file, per way of writing it."""
    from fcn_deploy.runtime.sinks import VideoFileSink

    results = {}
    for name, codec in (("h264 (default)", "h264"), ("mp4v (PyAV)", "mp4v")):
        path = workdir / f"{codec}.mp4"
        start = time.process_time()
        sink = VideoFileSink(path, fps, overwrite=True, settings=VideoSettings(codec=codec))
        for index, picture in enumerate(pictures):
            sink.write(picture, Frame(picture, index))
        sink.close()
        results[name] = (1000 * (time.process_time() - start) / len(pictures), path.stat().st_size,
                         video_psnr(path, pictures))
    path = workdir / "opencv.mp4"
    height, width = pictures[0].shape[:2]
    start = time.process_time()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for picture in pictures:
        writer.write(picture)
    writer.release()
    results["mp4v (OpenCV, before)"] = (1000 * (time.process_time() - start) / len(pictures), path.stat().st_size,
                                        video_psnr(path, pictures))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ASSETS / BUNDLED_MODELS["camvid"]), help="an .onnx file (default: bundled)")
    parser.add_argument("--clip", default=str(ASSETS / DEMO_CLIP), help="a video file (default: the bundled clip)")
    parser.add_argument("--pan", action="store_true",
                        help="a 30 fps pan across the clip's first frame instead of the clip (live-video redundancy)")
    parser.add_argument("--frames", type=int, default=60, help="frames of the clip (default 60: all of it)")
    parser.add_argument("--quality", type=int, default=None, help="JPEG quality (default: the HTTP output's)")
    parser.add_argument("--preset", default=None, help="x264 preset (default: the RTSP output's)")
    parser.add_argument("--bitrate", default=None, type=int, help="H.264 bits per second (default: constant quality)")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        raise SystemExit("needs ffmpeg as the RTSP client (apt-get install ffmpeg)")

    quality = args.quality or inspect.signature(MjpegSink).parameters["quality"].default
    with tempfile.TemporaryDirectory() as tmp:
        clip = pan_clip(args.clip, args.frames, Path(tmp) / "pan.avi") if args.pan else args.clip
        pictures, fps = rendered_clip(args.model, clip, args.frames)
    height, width = pictures[0].shape[:2]
    jpeg, jpeg_psnr = mjpeg_bytes(pictures, quality)
    settings = VideoSettings(preset=args.preset, bitrate=args.bitrate)
    with tempfile.TemporaryDirectory() as tmp:
        encoded, sent, frames, h264_psnr = rtsp_bytes(pictures, fps, settings, Path(tmp))
    mjpeg_per_frame = sum(jpeg) / len(jpeg)
    h264_per_frame, wire_per_frame = encoded / max(frames, 1), sent / max(frames, 1)
    print(f"{'a pan across ' if args.pan else ''}{'bundled clip' if args.clip == str(ASSETS / DEMO_CLIP) else args.clip}: "
          f"{len(pictures)} frames {width}x{height} at {fps:g} fps, rendered by {Path(args.model).name}")
    print(f"  MJPEG (http://, quality {quality}):   {mjpeg_per_frame:9.0f} bytes/frame  "
          f"{8 * mjpeg_per_frame * fps / 1e6:6.2f} Mbit/s at {fps:g} fps  PSNR {jpeg_psnr:.1f} dB")
    print(f"  H.264 (rtsp://, {settings.preset or 'ultrafast'}, "
          f"{'%d bit/s' % args.bitrate if args.bitrate else 'crf 23'}): {h264_per_frame:9.0f} bytes/frame encoded, "
          f"{wire_per_frame:.0f} on the wire  {8 * wire_per_frame * fps / 1e6:6.2f} Mbit/s  ({frames} frames)  "
          f"PSNR {h264_psnr:.1f} dB (as ffmpeg decoded it)")
    print(f"  H.264 / MJPEG: {wire_per_frame / mjpeg_per_frame:.2f} of the bytes "
          f"({mjpeg_per_frame / wire_per_frame:.1f}x less bandwidth)")
    with tempfile.TemporaryDirectory() as tmp:
        files = file_cpu_ms(pictures, fps, Path(tmp))
    print("video files of the same frames, CPU time per frame (all threads), size and PSNR:")
    for name, (cpu_ms, size, psnr) in files.items():
        print(f"  {name:<22} {cpu_ms:6.2f} ms/frame  {size / len(pictures):9.0f} bytes/frame  PSNR {psnr:.1f} dB")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "frames": len(pictures), "size": [height, width], "fps": fps, "jpeg_quality": quality,
            "mjpeg_bytes_per_frame": mjpeg_per_frame, "mjpeg_psnr_db": jpeg_psnr, "h264_psnr_db": h264_psnr,
            "h264_bytes_per_frame": h264_per_frame,
            "h264_wire_bytes_per_frame": wire_per_frame, "h264_frames": frames,
            "preset": settings.preset or "ultrafast", "bitrate": args.bitrate,
            "file_cpu_ms_bytes_psnr": files}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
