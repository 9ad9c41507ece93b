"""Video test helpers shared by the runtime tests: a real tiny exported model, synthetic
frames, real video files written and read back with OpenCV, and an MJPEG client."""
import urllib.request
from pathlib import Path

import cv2
import numpy as np

from fcn_deploy.runtime.sources import Source, SourceError, open_source


def export_tiny_model(path: Path) -> Path:
    """A real exported FCN-8s (ResNet-18 / 16, 3 classes) with non-trivial outputs."""
    import torch

    from fcn_deploy.converters.onnx_export import export
    from fcn_deploy.converters.resolve import resolve_model

    torch.manual_seed(0)
    resolved = resolve_model("fcn8s_resnet18", num_classes=3, width=16)
    with torch.no_grad():
        for p in resolved.model.parameters():
            if p.abs().max() == 0:  # the FCN score layers start at zero: every pixel class 0
                p.normal_(0.0, 0.1)
    export(resolved, str(path))
    return path


def synthetic_frames(n, height=72, width=96):
    """Moving shapes on a gradient: every frame different, with edges for the model to see."""
    y, x = np.mgrid[0:height, 0:width]
    frames = []
    for i in range(n):
        img = np.stack([(x * 2 + i * 5) % 256, (y * 3) % 256, ((x + y) + i * 9) % 256], -1).astype(np.uint8)
        cv2.circle(img, ((i * 7) % width, height // 2), height // 4, (0, 0, 255), -1)
        frames.append(img)
    return frames


def write_video(path: Path, frames, fourcc="mp4v", fps=15.0) -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def count_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def video_fps(path: Path) -> float:
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return fps


def decoded_frames(path: Path):
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            return out
        out.append(f)


def read_mjpeg_parts(url, count, timeout=10.0):
    """Read ``count`` JPEG parts from a multipart/x-mixed-replace response, as a browser does."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        content_type = response.headers["Content-Type"]
        assert content_type.startswith("multipart/x-mixed-replace")
        boundary = content_type.split("boundary=")[1].strip().encode()
        parts = []
        while len(parts) < count:
            line = response.readline()
            if not line:
                break
            if line.strip() != b"--" + boundary:
                continue
            headers = {}
            while True:
                h = response.readline().strip()
                if not h:
                    break
                key, _, value = h.decode().partition(":")
                headers[key.strip().lower()] = value.strip()
            assert headers["content-type"] == "image/jpeg"
            parts.append(response.read(int(headers["content-length"])))
        return parts


class PulledCable(Source):
    """A real video file that fails after ``good`` frames, as a USB camera does when unplugged."""

    live = False

    def __init__(self, path, good):
        self._inner = open_source(str(path))
        self.description, self.size, self.fps = "camera on a pulled cable", self._inner.size, self._inner.fps
        self._good = good

    def read(self):
        if self._good == 0:
            raise SourceError("camera on a pulled cable: read failed (device disconnected)")
        self._good -= 1
        return self._inner.read()

    def close(self):
        self._inner.close()
