"""Outputs: one URI per sink, any number of sinks per run.

==============================  ============================================================
``display://0``                 an OpenCV window (closing it, ``q`` or Esc stops the run)
``out.mp4`` (``.mov .mkv``)     a video file, H.264 by default (:mod:`.encoders`), at the
                                source's frame rate (a live source's measured rate)
``out.avi``                     a Motion-JPEG AVI
``frames/``                     an image folder, one JPEG per frame, named after the source image
``http://:8090``                 MJPEG streams and the live page (127.0.0.1 unless a host is given)
``rtsp://:8554/live``           an H.264 RTSP stream served by the run (:mod:`.rtsp`; 127.0.0.1
                                unless a host is given)
``none``                        nothing (for benchmarks, or with ``--labels-dir`` only)
==============================  ============================================================

Plus :class:`LabelSink` (``--labels-dir``): one single-channel PNG of class indices per frame.

Every file is written under a temporary name beside its target and renamed into place when
complete (:class:`~fcn_deploy.fileio.TempBeside`), so a full disk, an error or a kill never
leaves a partial file under the name asked for. A sink never overwrites a file that exists
unless it was opened with ``overwrite=True``: it says so when it opens, before any frame is
processed, and the final rename checks again, atomically, so two runs writing one name
cannot both succeed. Video files are finished by :meth:`Sink.close`, which the pipeline calls
however the run ends (end of input, Ctrl-C, a closed window, an error).
"""
from __future__ import annotations

import logging
import os
import queue
import threading
from fractions import Fraction
from pathlib import Path
from typing import List, Optional, Set, Tuple

import cv2
import numpy as np

from ..errors import FcnDeployError, first_line
from ..fileio import TempBeside, atomic_write, check_output_file, make_folder, remove_stale_temps
from .encoders import (
    CONTAINERS,
    GStreamerWriter,
    OpenCvWriter,
    PyAvWriter,
    VideoSettings,
    canonical_codec,
    check_video_file,
    choose_encoder,
    frame_rate,
    pyav_encoder,
)
from .mjpeg import HttpOutputOptions, MjpegServer, parse_http_output
from .sink import Sink
from .sources import Frame

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = tuple(CONTAINERS)
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


class NullSink(Sink):
    description = "no output"

    def write(self, image: np.ndarray, frame: Frame) -> None:
        pass


class VideoFileSink(Sink):
    """A video file (H.264 in ``.mp4`` by default; see :mod:`.encoders`), opened on the first
    frame, whose size it takes (frames of another size are resized to it).

    Encoding runs on a thread of its own behind a small queue, so the renderer hands a frame
    over and goes on. The file is written under a temporary name beside the target and put
    in place by :meth:`close` once complete and read back (:class:`~fcn_deploy.fileio.TempBeside`):
    a full disk, a failed write or a kill never leaves a file under the target's name, and
    the "already exists" check is that final, atomic step.

    Frame rate: a file or folder source is recorded at its own rate (``fps``; frames counted
    one by one). A live source is recorded at its *measured* rate: its first frames
    is held back to measure it, and every frame is then stamped with its capture time, so
    dropped frames leave gaps instead of speeding the video up. The rate comes from the times
    between frames of the first two seconds (or 30 frames): :meth:`_measured_rate`.
    """

    RATE_WINDOW_S = 2.0   # how long a live source is measured before the file is opened
    RATE_WINDOW_FRAMES = 30
    QUEUE_FRAMES = 4

    def __init__(self, path: Path, fps: Optional[float] = None, overwrite: bool = False,
                 settings: Optional[VideoSettings] = None, live: bool = False):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in CONTAINERS:
            raise SinkError(f"unsupported video file type {suffix!r} for {path}: use {', '.join(CONTAINERS)}")
        refuse_overwrite(self.path, overwrite)
        try:  # its folder is made now: a path that cannot be written fails before any frame is processed
            check_output_file(self.path, "output")
        except FcnDeployError as exc:
            raise SinkError(str(exc)) from None
        self.container = CONTAINERS[suffix][0]
        self.settings = settings or VideoSettings()
        try:
            self.codec = canonical_codec(self.settings.codec, self.container)
            self.encoder = choose_encoder(self.codec, self.settings.encoder)
            if self.encoder == "cpu":
                pyav_encoder(self.codec)  # an unknown --codec fails now, not at the first frame
        except FcnDeployError as exc:
            raise SinkError(f"{self.path}: {exc}") from None
        remove_stale_temps(self.path.parent, [self.path.name], min_age_s=1.0)  # a killed run's leftovers
        self.overwrite = overwrite
        self.live = live
        self.fps = fps or DEFAULT_FPS  # the measured rate once known, for a live source
        self.description = f"video file {self.path} ({self.codec})"
        self.frames = 0  # frames in the finished file
        self.bytes = 0
        self._size: Optional[Tuple[int, int]] = None
        self._queue: "queue.Queue" = queue.Queue(maxsize=self.QUEUE_FRAMES)
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None
        self._reported = False
        self._closed = False
        self._temp: Optional[TempBeside] = None
        self._writer = None
        self._pending: List[Tuple[np.ndarray, float]] = []
        self._rate: Optional[Fraction] = None
        self._t0 = 0.0
        self._last_pts = -1
        self._written = 0

    # -- the calling (render) thread -------------------------------------------------------------
    def write(self, image: np.ndarray, frame: Frame) -> None:
        if self._closed:
            raise SinkError(f"{self.path} is closed")
        size = (image.shape[1], image.shape[0])
        if self._size is None:
            self._size = size
            self._thread = threading.Thread(target=self._encode_all, name=f"encode-{self.path.name}", daemon=True)
            self._thread.start()
        elif size != self._size:
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        self._put((image, frame.captured))

    def _put(self, item) -> None:
        while True:
            self._raise_error()
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _raise_error(self) -> None:
        if self._error is not None and not self._reported:
            self._reported = True
            raise SinkError(f"cannot write {self.path}: {_reason(self._error)}") from None

    def close(self) -> None:
        """Finish the file and put it in place (or, after an error, remove it). Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._thread is not None:
                while self._thread.is_alive() and self._error is None:
                    try:
                        self._queue.put(None, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                self._thread.join()
            self._raise_error()
            if self._temp is not None and self._error is None and self._written:
                try:
                    self._temp.publish(self.overwrite)
                except FileExistsError:
                    raise SinkError(f"{self.path} was created by another program while this run wrote it; "
                                    "this run's video is not kept (pass --overwrite to replace it)") from None
                except OSError as exc:
                    raise SinkError(f"cannot write {self.path}: {_reason(exc)}") from None
                self.frames = self._written
                log.debug("wrote %s: %d frames, %d bytes", self.path, self.frames, self.bytes)
        finally:
            if self._temp is not None:
                self._temp.discard()

    # -- the encoder thread ------------------------------------------------------------------------
    def _encode_all(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                self._encode(*item)
            self._finish()
        except BaseException as exc:  # raised on the render thread at its next write, or by close
            self._error = exc
            self._abort_writer()

    def _encode(self, image: np.ndarray, captured: float) -> None:
        if self._writer is None:
            if self.live:  # measure the source's rate first
                self._pending.append((image, captured))
                span = captured - self._pending[0][1]
                if span < self.RATE_WINDOW_S and len(self._pending) < self.RATE_WINDOW_FRAMES:
                    return
                self._open(self._measured_rate())
                pending, self._pending = self._pending, []
                for held, when in pending:
                    self._write_one(held, when)
                return
            self._open(frame_rate(self.fps))
        self._write_one(image, captured)

    def _measured_rate(self) -> Fraction:
        """The source's rate from the times between the first frames, robust to a burst: a
        stream's frames buffered while the model loaded arrive all at once at the start. The
        gaps far below the typical one (a third of the median of the longer half) are that
        burst and are left out; the rate is one over the median of the others."""
        times = [when for _, when in self._pending]
        gaps = sorted(b - a for a, b in zip(times, times[1:]))
        if gaps:
            typical = gaps[len(gaps) // 2 + len(gaps) // 4]
            steady = [gap for gap in gaps if gap >= typical / 3 and gap > 0]
            if steady:
                rate = 1.0 / steady[len(steady) // 2]
                self.fps = float(round(rate)) if abs(rate - round(rate)) <= 0.02 * rate else round(rate, 2)
        return frame_rate(self.fps)

    def _open(self, rate: Fraction) -> None:
        self._rate = rate
        self.fps = float(rate)
        self._temp = TempBeside(self.path)
        size = self._size
        if self.encoder == "jetson":
            self._writer = GStreamerWriter(self._temp.path, self.container, self.codec, size, rate, self.settings)
        elif self.encoder == "opencv":  # OpenCV picks the container by suffix: a name of its own beside the temp
            self._writer = OpenCvWriter(self._temp.path + self.path.suffix, self.codec, size, rate)
        else:
            self._writer = PyAvWriter(self._temp.path, self.container, self.codec, size, rate, 1 / rate,
                                      self.settings)

    def _write_one(self, image: np.ndarray, captured: float) -> None:
        if self.live:  # the capture clock on a grid of the measured rate; a dropped frame is a gap
            if self._written == 0:
                self._t0 = captured
            pts = max(int(round((captured - self._t0) * self._rate)), self._last_pts + 1)
        else:
            pts = self._written
        self._writer.write(image, pts)
        self._last_pts = pts
        self._written += 1

    def _finish(self) -> None:
        if self._writer is None and self._pending:  # a live run shorter than the measuring window
            pending, self._pending = self._pending, []
            self._open(self._measured_rate())
            for held, when in pending:
                self._write_one(held, when)
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        writer.close()
        self.bytes = writer.bytes
        if self.encoder == "opencv":
            os.replace(self._temp.path + self.path.suffix, self._temp.path)
        check_video_file(self._temp.path, self._written)

    def _abort_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except BaseException:  # the first error is the one reported
                pass
        if self.encoder == "opencv" and self._temp is not None:
            try:
                os.unlink(self._temp.path + self.path.suffix)
            except OSError:
                pass
        while True:  # unblock a renderer waiting to put a frame
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break


def _reason(exc: BaseException) -> str:
    """The one-line reason of a write error: ``No space left on device`` rather than FFmpeg's
    whole message with the temporary file's name."""
    strerror = getattr(exc, "strerror", None)
    if isinstance(exc, OSError) and strerror:
        return str(strerror)
    return first_line(exc)


def write_new_file(path: Path, data: np.ndarray, overwrite: bool, written: Set[str]) -> bool:
    """Write one image file whole or not at all (temporary file beside it, then renamed).

    Without ``overwrite`` a file already there is one error, checked atomically as the file is
    put in place, except one this sink wrote itself earlier in the run (``written``: a looped
    folder). Returns True for a new name. A full disk is one :class:`SinkError` line.
    """
    again = path.name in written
    try:
        atomic_write(path, data.tobytes(), overwrite=overwrite or again, durable=False)  # see atomic_write
    except FileExistsError:
        raise SinkError(f"{path} already exists; pass --overwrite to replace it, or choose another output") from None
    except OSError as exc:
        raise SinkError(f"cannot write {path}: {_reason(exc)}") from None
    written.add(path.name)
    return not again


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
        self._written: Set[str] = set()

    def write(self, image: np.ndarray, frame: Frame) -> None:
        ok, data = cv2.imencode(self.suffix, image, self.params)
        if not ok:
            raise SinkError(f"cannot encode frame {frame.index} as {self.suffix}")
        write_new_file(self.folder / frame_file_name(frame, self.suffix), data, self.overwrite, self._written)


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
        self.frames = 0  # files written (a looped folder rewrites its own)
        self._written: Set[str] = set()

    def write(self, labels: np.ndarray, frame: Frame) -> None:
        ok, data = cv2.imencode(".png", labels, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise SinkError(f"cannot encode the labels of frame {frame.index} as PNG")
        if write_new_file(self.folder / frame_file_name(frame, ".png"), data, self.overwrite, self._written):
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


def _installed_opencv_wheels() -> List[str]:
    """The PyPI OpenCV wheels installed here (each installs ``cv2``; two overwrite each other)."""
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover - Python < 3.8
        return []
    found = []
    for name in ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless"):
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def display_problem() -> Optional[str]:
    """Why an OpenCV window cannot open here, or ``None`` when it can."""
    gui = [line for line in cv2.getBuildInformation().splitlines() if line.strip().startswith("GUI:")]
    if gui and gui[0].split(":", 1)[1].strip().upper() in ("NONE", "NO", ""):
        wheels = _installed_opencv_wheels()
        if len(wheels) > 1:  # both install cv2: whichever came last won, here a headless one
            return (f"{' and '.join(wheels)} are both installed and share cv2, now a build without GUI: "
                    f"pip uninstall -y {' '.join(wheels)} && pip install opencv-python")
        return (f"this OpenCV {cv2.__version__} has no GUI support ({wheels[0] if wheels else 'a headless build'}): "
                "pip uninstall -y opencv-python-headless && pip install opencv-python (the gui extra), "
                "or use --output 'http://0.0.0.0:8090?token=SECRET' to watch in a browser")
    if os.name == "posix" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return ("no display: DISPLAY is not set (a headless or SSH session); use --output "
                "'http://0.0.0.0:8090?token=SECRET' to watch in a browser, or write a video file")
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


def open_sink(uri: str, fps: Optional[float] = None, overwrite: bool = False,
              video: Optional[VideoSettings] = None, live: bool = False) -> Sink:
    """Open the output a URI names (see the module docstring for the forms).

    ``fps`` is the source's nominal rate and ``live`` whether it runs at its own pace (its
    rate is then measured); ``video`` the codec settings of video files and streams.
    """
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
    if scheme == "rtsp":
        from .rtsp import RtspSink

        return RtspSink.open(uri, video)
    if scheme == "file":
        text = rest
    elif scheme:
        raise SinkError(
            f"unsupported output URI {uri!r}: use display://0, a .mp4 or .avi file, an image folder, "
            "http://HOST:PORT, rtsp://HOST:PORT/PATH or none"
        )
    path = Path(text).expanduser()
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return VideoFileSink(path, fps, overwrite, video, live)
    if text.endswith(("/", os.sep)) or path.is_dir() or not suffix:
        return ImageFolderSink(path, overwrite)
    raise SinkError(f"unsupported output {uri!r}: a video file must end in {', '.join(VIDEO_SUFFIXES)}; "
                    "a folder needs no suffix")
