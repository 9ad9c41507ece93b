"""Bandwidth of the live outputs on the bundled clip: H.264 over RTSP against MJPEG over HTTP.

    python3 benchmarks/stream_bandwidth.py                  # bundled model and clip
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

Reported: bytes per frame of each and their ratio. The bundled clip is CamVid's labelled frames,
one second apart, so each frame differs more from the last than in a 30 fps camera: the
H.264 gain here is a lower bound for live video.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2

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
    return [len(cv2.imencode(".jpg", p, [cv2.IMWRITE_JPEG_QUALITY, quality])[1]) for p in pictures]


def rtsp_bytes(pictures, fps: float, settings: VideoSettings):
    """(H.264 bytes encoded, bytes sent on the wire, frames the client decoded)."""
    sink = RtspSink.open("rtsp://127.0.0.1:0/bandwidth", settings)
    client = subprocess.Popen([shutil.which("ffmpeg"), "-v", "error", "-rtsp_transport", "tcp", "-i", sink.url,
                               "-frames:v", str(len(pictures)), "-f", "null", "-"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 30
        while not sink.watched and time.time() < deadline:
            time.sleep(0.05)
        if not sink.watched:
            raise SystemExit("ffmpeg never started playing the RTSP stream")
        viewer = sink._channel.viewers[0]
        start = time.perf_counter()
        for index, picture in enumerate(pictures):  # at the clip's rate, as a live run sends them
            time.sleep(max(0.0, start + index / fps - time.perf_counter()))
            sink.write(picture, Frame(picture, index, None, start + index / fps))
        client.wait(timeout=60)
        time.sleep(0.2)
        encoded, frames, sent = sink._channel.encoded_bytes, sink._channel.encoded_frames, viewer.sent_bytes
    finally:
        if client.poll() is None:
            client.kill()
        sink.close()
    return encoded, sent, frames


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ASSETS / BUNDLED_MODELS["camvid"]), help="an .onnx file (default: bundled)")
    parser.add_argument("--clip", default=str(ASSETS / DEMO_CLIP), help="a video file (default: the bundled clip)")
    parser.add_argument("--frames", type=int, default=60, help="frames of the clip (default 60: all of it)")
    parser.add_argument("--quality", type=int, default=None, help="JPEG quality (default: the HTTP output's)")
    parser.add_argument("--preset", default=None, help="x264 preset (default: the RTSP output's)")
    parser.add_argument("--bitrate", default=None, type=int, help="H.264 bits per second (default: constant quality)")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        raise SystemExit("needs ffmpeg as the RTSP client (apt-get install ffmpeg)")

    quality = args.quality or inspect.signature(MjpegSink).parameters["quality"].default
    pictures, fps = rendered_clip(args.model, args.clip, args.frames)
    height, width = pictures[0].shape[:2]
    jpeg = mjpeg_bytes(pictures, quality)
    settings = VideoSettings(preset=args.preset, bitrate=args.bitrate)
    encoded, sent, frames = rtsp_bytes(pictures, fps, settings)
    mjpeg_per_frame = sum(jpeg) / len(jpeg)
    h264_per_frame, wire_per_frame = encoded / max(frames, 1), sent / max(frames, 1)
    print(f"bundled clip: {len(pictures)} frames {width}x{height} at {fps:g} fps, rendered by {Path(args.model).name}")
    print(f"  MJPEG (http://, quality {quality}):   {mjpeg_per_frame:9.0f} bytes/frame  "
          f"{8 * mjpeg_per_frame * fps / 1e6:6.2f} Mbit/s at {fps:g} fps")
    print(f"  H.264 (rtsp://, {settings.preset or 'ultrafast'}, "
          f"{'%d bit/s' % args.bitrate if args.bitrate else 'crf 23'}): {h264_per_frame:9.0f} bytes/frame encoded, "
          f"{wire_per_frame:.0f} on the wire  {8 * wire_per_frame * fps / 1e6:6.2f} Mbit/s  ({frames} frames)")
    print(f"  H.264 / MJPEG: {wire_per_frame / mjpeg_per_frame:.2f} of the bytes "
          f"({mjpeg_per_frame / wire_per_frame:.1f}x less bandwidth)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "frames": len(pictures), "size": [height, width], "fps": fps, "jpeg_quality": quality,
            "mjpeg_bytes_per_frame": mjpeg_per_frame, "h264_bytes_per_frame": h264_per_frame,
            "h264_wire_bytes_per_frame": wire_per_frame, "h264_frames": frames,
            "preset": settings.preset or "ultrafast", "bitrate": args.bitrate}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
