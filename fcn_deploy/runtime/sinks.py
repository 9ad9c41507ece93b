"""Outputs: one URI per sink, any number of sinks per run.

==============================  ============================================================
``display://0``                 an OpenCV window (closing it, ``q`` or Esc stops the run)
``out.mp4``, ``out.avi``        a video file at the source's frame rate (mp4v / MJPG)
``frames/``                     an image folder, one JPEG per frame, named after the source image
``http://:8090``                 MJPEG streams and the live page (127.0.0.1 unless a host is given)
``none``                        nothing (for benchmarks, or with ``--labels-dir`` only)
==============================  ============================================================

Plus :class:`LabelSink` (``--labels-dir``): one single-channel PNG of class indices per frame.

A sink never overwrites a file that exists unless it was opened with ``overwrite=True``: the
check happens when the sink opens, before any frame is processed, and is one clear error.
Video files are finalised by :meth:`Sink.close`, which the pipeline calls however the run
ends (end of input, Ctrl-C, a closed window, an error), so the file always plays.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Tuple

import cv2
import numpy as np

from ..errors import FcnDeployError
from ..fileio import check_output_file, make_folder
from .mjpeg import HttpOutputOptions, MjpegServer, parse_http_output
from .sources import Frame

log = logging.getLogger(__name__)

VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}
DEFAULT_FPS = 30.0  # for sources without a frame rate (image folders)
WINDOW_NAME = "fcn-deploy"


class SinkError(FcnDeployError):
    """An output that cannot be opened or written."""


def refuse_overwrite(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise SinkError(f"{path} already exists; pass --overwrite to replace it, or choose another output")


def writable_folder(folder: Path, what: str) -> None:
    """Create ``folder`` now, or one :class:`SinkError` line (a file in the way, ``/proc``, no write access)."""
    try:
        make_folder(folder, what)
    except FcnDeployError as exc:
        raise SinkError(str(exc)) from None


def frame_file_name(frame: Frame, suffix: str) -> str:
    """``NAME.suffix`` for a frame read from ``NAME.png``, else ``000042.suffix``."""
    return f"{frame.name}{suffix}" if frame.name else f"{frame.index:06d}{suffix}"


class Sink:
    """Base class: ``write`` each rendered BGR picture, ``close`` once at the end."""

    description: str = ""

    def write(self, image: np.ndarray, frame: Frame) -> None:
        raise NotImplementedError

    def wants_stop(self) -> bool:
        """True once the user asked this sink to end the run (a closed window)."""
        return False

    def close(self) -> None:
        pass

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class NullSink(Sink):
    description = "no output"

    def write(self, image: np.ndarray, frame: Frame) -> None:
        pass


class VideoFileSink(Sink):
    """A video file, opened on the first frame (whose size it takes), at ``fps``.

    Frames of another size (an image folder of mixed sizes) are resized to the first one's.
    """

    def __init__(self, path: Path, fps: Optional[float] = None, overwrite: bool = False):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in VIDEO_CODECS:
            raise SinkError(f"unsupported video file type {suffix!r} for {path}: use .mp4 or .avi")
        refuse_overwrite(self.path, overwrite)
        try:  # its folder is made now: a path that cannot be written fails before any frame is processed
            check_output_file(self.path, "output")
        except FcnDeployError as exc:
            raise SinkError(str(exc)) from None
        self.fourcc = VIDEO_CODECS[suffix]
        self.fps = fps or DEFAULT_FPS
        self.description = f"video file {self.path}"
        self.frames = 0
        self._writer: Optional[cv2.VideoWriter] = None
        self._size: Optional[Tuple[int, int]] = None

    def _open(self, size: Tuple[int, int]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*self.fourcc), float(self.fps), size)
        if not writer.isOpened():
            raise SinkError(f"cannot write {self.path} with codec {self.fourcc}: is the folder writable?")
        self._writer, self._size = writer, size

    def write(self, image: np.ndarray, frame: Frame) -> None:
        size = (image.shape[1], image.shape[0])
        if self._writer is None:
            self._open(size)
        elif size != self._size:
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(image)
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()  # writes the container's index: the file plays from here on
            self._writer = None
            log.debug("closed %s after %d frames", self.path, self.frames)


def _refuse_nonempty(folder: Path, pattern: str, what: str, overwrite: bool) -> None:
    if overwrite or not folder.is_dir():
        return
    existing = sum(1 for _ in folder.glob(pattern))
    if existing:
        raise SinkError(
            f"{what} {folder} already holds {existing} {pattern} file(s); pass --overwrite to replace "
            "them, or choose an empty folder"
        )


class ImageFolderSink(Sink):
    """One JPEG (or PNG) per rendered frame, named after the source image where there is one."""

    def __init__(self, folder: Path, overwrite: bool = False, suffix: str = ".jpg", quality: int = 95):
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise SinkError(f"{folder} exists and is not a folder")
        _refuse_nonempty(self.folder, f"*{suffix}", "image folder", overwrite)
        writable_folder(self.folder, "output folder")
        self.suffix = suffix
        self.overwrite = overwrite
        self.params = [cv2.IMWRITE_JPEG_QUALITY, quality] if suffix == ".jpg" else []
        self.description = f"image folder {self.folder}"

    def write(self, image: np.ndarray, frame: Frame) -> None:
        path = self.folder / frame_file_name(frame, self.suffix)
        refuse_overwrite(path, self.overwrite)
        if not cv2.imwrite(str(path), image, self.params):
            raise SinkError(f"cannot write {path}")


class LabelSink:
    """``--labels-dir``: class indices as single-channel 8-bit PNGs (lossless, any viewer opens them).

    Named after the source image (``frames/0001.png`` -> ``LABELS/0001.png``), else by frame
    index, so a folder in gives matching label files out: batch prediction.
    """

    def __init__(self, folder: Path, overwrite: bool = False):
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise SinkError(f"--labels-dir {folder} exists and is not a folder")
        _refuse_nonempty(self.folder, "*.png", "--labels-dir", overwrite)
        writable_folder(self.folder, "--labels-dir")
        self.overwrite = overwrite
        self.description = f"label PNGs in {self.folder}"
        self.frames = 0

    def write(self, labels: np.ndarray, frame: Frame) -> None:
        path = self.folder / frame_file_name(frame, ".png")
        refuse_overwrite(path, self.overwrite)
        if not cv2.imwrite(str(path), labels, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
            raise SinkError(f"cannot write {path}")
        self.frames += 1

    def close(self) -> None:
        pass


class MjpegSink(Sink):
    """http://HOST:PORT: the rendered frames as an MJPEG stream (see :mod:`.mjpeg`).

    :meth:`channel` makes a sink for another stream on the same server (``/NAME``); the
    sink that opened the server closes it.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8090, quality: int = 80,
                 options: Optional[HttpOutputOptions] = None):
        options = options or HttpOutputOptions(host, port)
        try:
            self.server = MjpegServer(options.host, options.port, token=options.token,
                                      max_viewers=options.max_viewers)
        except FcnDeployError as exc:
            raise SinkError(str(exc)) from None
        self.quality = quality
        self.name = ""
        self._owner = True
        host, port = options.host, self.server.address[1]
        self._host = host
        self.description = f"MJPEG stream http://{host}:{port}/" + (" (token required)" if options.token else "")

    def channel(self, name: str) -> "MjpegSink":
        """A sink that serves stream ``name`` at ``/name`` on this sink's server."""
        self.server.add_channel(name)
        sink = MjpegSink.__new__(MjpegSink)
        sink.server, sink.quality, sink.name, sink._owner, sink._host = self.server, self.quality, name, False, self._host
        sink.description = f"MJPEG stream http://{self._host}:{self.server.address[1]}/{name}"
        return sink

    @property
    def url(self) -> str:
        host, port = self.server.address
        return f"http://{host}:{port}/{self.name}"

    def write(self, image: np.ndarray, frame: Frame) -> None:
        if self.server.clients_of(self.name) == 0:
            return  # nobody watching: skip the JPEG encoding
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if ok:
            self.server.publish(jpeg.tobytes(), self.name)

    def close(self) -> None:
        if self._owner:
            self.server.close()


def display_problem() -> Optional[str]:
    """Why an OpenCV window cannot open here, or ``None`` when it can."""
    gui = [line for line in cv2.getBuildInformation().splitlines() if line.strip().startswith("GUI:")]
    if gui and gui[0].split(":", 1)[1].strip().upper() in ("NONE", "NO", ""):
        return (f"this OpenCV {cv2.__version__} has no GUI support (opencv-python-headless): install "
                "opencv-python, or use --output http://0.0.0.0:8554 to watch in a browser")
    if os.name == "posix" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return ("no display: DISPLAY is not set (a headless or SSH session); use --output "
                "http://0.0.0.0:8554 to watch in a browser, or write a video file")
    return None


class DisplaySink(Sink):
    """An OpenCV window. Closing it, or pressing ``q`` or Esc in it, ends the run."""

    def __init__(self, screen: str = "0"):
        problem = display_problem()
        if problem:
            raise SinkError(f"display://{screen}: {problem}")
        self.description = f"window on display://{screen}"
        self._stop = False
        self._shown = False
        try:
            cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
        except cv2.error as exc:
            raise SinkError(f"display://{screen}: cannot open a window: {str(exc).strip().splitlines()[-1]}") from None

    def write(self, image: np.ndarray, frame: Frame) -> None:
        if self._stop:
            return
        cv2.imshow(WINDOW_NAME, image)
        self._shown = True
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            self._stop = True
        elif cv2.getWindowProperty(WINDOW_NAME, cv2.WND_PROP_VISIBLE) < 1:
            self._stop = True  # the window was closed

    def wants_stop(self) -> bool:
        return self._stop

    def close(self) -> None:
        try:
            cv2.destroyWindow(WINDOW_NAME)
            cv2.waitKey(1)
        except cv2.error:
            pass


def open_sink(uri: str, fps: Optional[float] = None, overwrite: bool = False) -> Sink:
    """Open the output a URI names (see the module docstring for the forms)."""
    text = uri.strip()
    if text.lower() in ("", "none", "null", "null://"):
        return NullSink()
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower() if sep else ""
    if scheme == "display":
        return DisplaySink(rest or "0")
    if scheme == "http":  # no host: 127.0.0.1 (see .mjpeg for ?token= and ?viewers=)
        try:
            return MjpegSink(options=parse_http_output(text))
        except FcnDeployError as exc:
            raise SinkError(str(exc)) from None
    if scheme == "file":
        text = rest
    elif scheme:
        raise SinkError(
            f"unsupported output URI {uri!r}: use display://0, a .mp4 or .avi file, an image folder, "
            "http://HOST:PORT or none"
        )
    path = Path(text).expanduser()
    suffix = path.suffix.lower()
    if suffix in VIDEO_CODECS:
        return VideoFileSink(path, fps, overwrite)
    if text.endswith(("/", os.sep)) or path.is_dir() or not suffix:
        return ImageFolderSink(path, overwrite)
    raise SinkError(f"unsupported output {uri!r}: a video file must end in .mp4 or .avi; a folder needs no suffix")
