"""Video sources: one URI names any camera, stream, file, image folder or GStreamer pipeline.

Like jetson-inference's ``videoSource``, a single string picks the input:

==============================  ============================================================
``0``, ``1`` ...                a camera by index (OpenCV's default backend)
``/dev/video0``, ``v4l2://0``   a V4L2 camera
``csi://0``                     a Jetson CSI camera (``nvarguscamerasrc``, GStreamer)
``rtsp://...``, ``http(s)://``  a network stream (FFmpeg)
``clip.mp4``, ``file://clip``   a video file (FFmpeg, or GStreamer with ``decode``: see below)
``frames/``, ``'frames/*.png'`` an image folder or a glob, sorted by name; one image also works
``... ! appsink``               a raw GStreamer pipeline (anything containing ``!``)
==============================  ============================================================

``decode`` picks the decoder of files, ``rtsp://`` streams and MJPEG USB cameras
(:mod:`fcn_deploy.runtime.gstreamer`): ``ffmpeg`` is OpenCV's FFmpeg; ``nvidia`` and
``gstreamer`` build GStreamer pipelines that decode (NVDEC or software) and scale to the
inference size before the frame reaches Python; ``auto`` takes the best this machine has.

A *live* source (camera, stream, pipeline) runs at its own pace: the pipeline drops its
oldest frame rather than fall behind. A file or folder is read as fast as the consumer takes
it and loses no frame; ``loop`` plays it again from the start when it ends.

Every failure to open (a camera that is not there, a missing or corrupt file, an unknown
scheme, GStreamer asked of an OpenCV built without it) is one :class:`SourceError` line.
"""
from __future__ import annotations

import contextlib
import glob
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

import cv2
import numpy as np

from ..errors import FcnDeployError, first_line
from . import gstreamer as gst

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp")
# csi:// flip-method values of nvvidconv: 0 none, 1 ccw 90, 2 180, 3 cw 90,
# 4 horizontal, 5 upper-right diagonal, 6 vertical, 7 upper-left diagonal.
FLIP_METHODS = range(8)


class SourceError(FcnDeployError):
    """A source that cannot be opened or read."""


@dataclass
class Frame:
    """One captured frame and where it came from.

    ``image`` is BGR uint8 ``H x W x 3``; ``index`` counts frames from 0 in capture order
    (across loops); ``name`` is the source image's file stem for image folders (so outputs
    can be named after it), else ``None``; ``captured`` is :func:`time.perf_counter` at
    capture, the start of the end-to-end latency. ``source_size`` is the source's own
    (width, height) when the decoder already scaled ``image`` to the inference size
    (GStreamer decoding), so that labels still map back to the frame's own size.
    """

    image: np.ndarray
    index: int
    name: Optional[str] = None
    captured: float = 0.0
    source_size: Optional[Tuple[int, int]] = None

    @property
    def shape(self) -> Tuple[int, int]:
        """(height, width) of the frame as the source gave it, before any decoder scaling."""
        if self.source_size is not None:
            return (self.source_size[1], self.source_size[0])
        return (self.image.shape[0], self.image.shape[1])


@dataclass
class CameraOptions:
    """Capture settings for cameras: size and rate requested of the driver, CSI flip."""

    width: Optional[int] = None
    height: Optional[int] = None
    fps: Optional[float] = None
    flip_method: int = 0


class Source:
    """Base class: ``read()`` gives the next :class:`Frame` or ``None`` at the end.

    ``fps`` is the nominal frame rate (``None`` when unknown); ``live`` says whether the
    source runs at its own pace (cameras, streams) rather than the reader's (files);
    ``decode_note`` what ``--decode auto`` took for it and why (empty where nothing was chosen).
    """

    uri: str = ""
    description: str = ""
    fps: Optional[float] = None
    live: bool = False
    decode_note: str = ""

    def read(self) -> Optional[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __iter__(self) -> Iterator[Frame]:
        while True:
            frame = self.read()
            if frame is None:
                return
            yield frame

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- GStreamer ---------------------------------------------------------------------------------
def require_gstreamer(what: str) -> None:
    if not gst.opencv_has_gstreamer():
        raise SourceError(
            f"{what} needs GStreamer, but this OpenCV {cv2.__version__} is built without it "
            "(pip's opencv-python wheels are): use the system OpenCV (JetPack's python3-opencv) "
            "or build OpenCV with -DWITH_GSTREAMER=ON"
        )


def csi_pipeline(sensor_id: int = 0, width: int = 1280, height: int = 720, fps: float = 30,
                 flip_method: int = 0) -> str:
    """The GStreamer pipeline of a Jetson CSI camera, ending in BGR frames for OpenCV's appsink.

    nvarguscamerasrc delivers NV12 in NVMM (GPU) memory; nvvidconv flips and converts it to
    BGRx in system memory; videoconvert drops the x. ``drop=true max-buffers=1`` keeps the
    appsink from queueing stale frames when the consumer is slower than the camera. Flip
    methods 1, 3, 5 and 7 turn the picture a quarter or transpose it, so the caps after
    nvvidconv carry the swapped size (a 1280x720 sensor turned 90 degrees gives 720x1280).
    """
    if flip_method not in FLIP_METHODS:
        raise SourceError(f"flip method must be 0..7 (nvvidconv flip-method), not {flip_method}")
    rate = f"{int(round(fps))}/1"
    out_width, out_height = gst.flipped_size(width, height, flip_method)
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM), width=(int){width}, height=(int){height}, "
        f"format=(string)NV12, framerate=(fraction){rate} ! "
        f"nvvidconv flip-method={flip_method} ! "
        f"video/x-raw, width=(int){out_width}, height=(int){out_height}, format=(string)BGRx ! "
        "videoconvert ! video/x-raw, format=(string)BGR ! appsink drop=true max-buffers=1"
    )


# -- OpenCV capture ----------------------------------------------------------------------------
@contextlib.contextmanager
def quiet_opencv():
    """Silence OpenCV's own log lines while opening or decoding, so that a failure is reported
    once, by our error, instead of as a native warning followed by our error.

    Left alone under debug logging (``fcn-deploy -v``), where OpenCV's detail helps. OpenCV 5
    has ``cv2.utils.logging``; OpenCV 4 (JetPack's 4.5 and 4.8) only ``cv2.get/setLogLevel``,
    where 0 is silent.
    """
    logging_api = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging_api is not None:
        get_level, set_level, silent = logging_api.getLogLevel, logging_api.setLogLevel, logging_api.LOG_LEVEL_SILENT
    elif hasattr(cv2, "setLogLevel") and hasattr(cv2, "getLogLevel"):
        get_level, set_level, silent = cv2.getLogLevel, cv2.setLogLevel, 0
    else:
        get_level = None
    if get_level is None or log.isEnabledFor(logging.DEBUG):
        yield
        return
    previous = get_level()
    set_level(silent)
    try:
        yield
    finally:
        set_level(previous)


class CaptureSource(Source):
    """Anything ``cv2.VideoCapture`` opens: cameras, streams, files, GStreamer pipelines.

    The first frame is read when the source opens, so a file that OpenCV "opens" but cannot
    decode is reported at once, not as an empty run.
    """

    def __init__(self, target, api: int, uri: str, description: str, live: bool, loop: bool = False,
                 camera: Optional[CameraOptions] = None, source_size: Optional[Tuple[int, int]] = None,
                 i420: bool = False):
        self.uri = uri
        self._i420 = i420  # a GStreamer pipeline that ends in I420 (gstreamer.i420_out): BGR here
        self.description = description
        self.live = live
        self.loop = loop and not live
        self._target, self._api = target, api
        self._index = 0
        with quiet_opencv():
            self._capture = cv2.VideoCapture(target, api)
            if not self._capture.isOpened():
                raise SourceError(self._open_error())
            if camera is not None and live:
                self._configure(camera)
            ok, image = self._grab()
        if not ok or image is None:
            self._capture.release()
            raise SourceError(self._read_error())
        self._pending: Optional[np.ndarray] = image
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else None
        count = self._capture.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count = int(count) if not live and count and count > 0 else None
        # A decoder that scales (GStreamer) delivers frames at the inference size; the source's
        # own size is what the labels map back to.
        self.source_size = source_size if source_size and tuple(source_size) != (image.shape[1], image.shape[0]) else None
        self.size = self.source_size or (image.shape[1], image.shape[0])

    def _grab(self) -> Tuple[bool, Optional[np.ndarray]]:
        ok, image = self._capture.read()
        if ok and image is not None and self._i420:
            image = cv2.cvtColor(image, cv2.COLOR_YUV2BGR_I420)
        return ok, image

    def _configure(self, camera: CameraOptions) -> None:
        if camera.width:
            self._capture.set(cv2.CAP_PROP_FRAME_WIDTH, camera.width)
        if camera.height:
            self._capture.set(cv2.CAP_PROP_FRAME_HEIGHT, camera.height)
        if camera.fps:
            self._capture.set(cv2.CAP_PROP_FPS, camera.fps)
        # Keep the driver from queueing frames: a live view wants the newest one.
        self._capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)

    def _open_error(self) -> str:
        if self.description.startswith("camera"):
            return f"cannot open {self.description}: no such camera, or it is in use (see `v4l2-ctl --list-devices`)"
        if self.description.startswith("stream"):
            return f"cannot open {self.description}: unreachable, refused or not a video stream"
        if self.description.startswith("GStreamer"):
            return f"cannot start {self.description}: check the pipeline with gst-launch-1.0 (it must end in appsink)"
        return f"cannot open {self.description}: not a video OpenCV can decode (corrupt, truncated or unknown codec)"

    def _read_error(self) -> str:
        if self.live:
            return f"{self.description} opened but gave no frame"
        return f"cannot decode {self.description}: no frame could be read (corrupt, truncated or empty)"

    def _rewind(self) -> bool:
        if self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0):
            ok, image = self._grab()
            if ok:
                self._pending = image
                return True
        self._capture.release()
        with quiet_opencv():
            self._capture = cv2.VideoCapture(self._target, self._api)
            ok, image = self._grab()
        self._pending = image if ok else None
        return ok

    def read(self) -> Optional[Frame]:
        if self._pending is not None:
            image, self._pending = self._pending, None
        else:
            ok, image = self._grab()
            if not ok:
                if not (self.loop and self._index > 0 and self._rewind()):
                    return None
                image, self._pending = self._pending, None
        frame = Frame(image, self._index, None, time.perf_counter(), self.source_size)
        self._index += 1
        return frame

    def close(self) -> None:
        self._capture.release()


# -- image folders -----------------------------------------------------------------------------
class ImageSource(Source):
    """Still images (a folder, a glob or one file), in name order, each a :class:`Frame` named
    after its file stem.

    An image that cannot be decoded (corrupt, truncated, not an image) is skipped with a
    warning and listed in :attr:`skipped`, so one bad file does not stop a batch run; the
    caller reports them at the end. A source none of whose images can be read is an error.
    """

    live = False

    def __init__(self, paths: List[Path], uri: str, description: str, loop: bool = False,
                 fps: Optional[float] = None):
        if not paths:
            raise SourceError(f"{description} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        self.paths = paths
        self.names = unique_image_names(paths)
        self.uri = uri
        self.description = description
        self.loop = loop
        self.fps = fps
        self.frame_count = len(paths)
        self.skipped: List[Path] = []
        self._position = 0
        self._index = 0
        self._first: Optional[np.ndarray] = self._next_image()  # fail now, not mid-run
        if self._first is None:
            if len(paths) == 1:
                raise SourceError(f"cannot read image {paths[0]}: corrupt or not an image")
            raise SourceError(f"none of the {len(paths)} images of {description} can be read (corrupt or not images)")
        self.size = (self._first.shape[1], self._first.shape[0])

    @staticmethod
    def _load(path: Path) -> Optional[np.ndarray]:
        with quiet_opencv():
            return cv2.imread(str(path), cv2.IMREAD_COLOR)

    def _next_image(self) -> Optional[np.ndarray]:
        """The next readable image from the current position (advancing past it), or ``None``
        at the end; unreadable ones are skipped, each warned about once."""
        while self._position < len(self.paths):
            path = self.paths[self._position]
            self._position += 1
            image = self._load(path)
            if image is not None:
                self._current = self.names[self._position - 1]
                return image
            if path not in self.skipped:
                self.skipped.append(path)
                log.warning("skipped %s: cannot read it (corrupt or not an image)", path)
        return None

    def read(self) -> Optional[Frame]:
        if self._first is not None:
            image, self._first = self._first, None
        else:
            image = self._next_image()
            if image is None and self.loop and len(self.skipped) < len(self.paths):
                self._position = 0
                image = self._next_image()
            if image is None:
                return None
        frame = Frame(image, self._index, self._current, time.perf_counter())
        self._index += 1
        return frame


def unique_image_names(paths: List[Path]) -> List[str]:
    """The name each image's outputs take: its stem (``0001.png`` -> ``0001``), or, where two
    images of one source share a stem (``a.jpg`` and ``a.png``), the whole file name
    (``a.jpg``, ``a.png``), so that no output overwrites another's; a name still shared (the
    same file name in two folders of a glob) gets ``-2``, ``-3`` ... in path order. Names are
    compared without case, as case-insensitive file systems (FAT, macOS) would."""
    def clashes(names: List[str]) -> set:
        seen: dict = {}
        for name in names:
            seen[name.lower()] = seen.get(name.lower(), 0) + 1
        return {name for name, count in seen.items() if count > 1}

    names = [p.stem for p in paths]
    shared = clashes(names)
    names = [p.name if n.lower() in shared else n for p, n in zip(paths, names)]
    shared = clashes(names)
    counts: dict = {}
    for i, name in enumerate(names):
        if name.lower() in shared:
            counts[name.lower()] = counts.get(name.lower(), 0) + 1
            if counts[name.lower()] > 1:
                names[i] = f"{name}-{counts[name.lower()]}"
    return names


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _image_paths(pattern_or_dir: str) -> List[Path]:
    path = Path(pattern_or_dir)
    if path.is_dir():
        candidates = [p for p in path.iterdir() if p.is_file()]
    else:
        candidates = [Path(p) for p in glob.glob(pattern_or_dir, recursive=True) if os.path.isfile(p)]
    return sorted((p for p in candidates if _is_image(p)), key=lambda p: str(p))


# -- the URI ----------------------------------------------------------------------------------
MAX_CAMERA_INDEX = 2**31 - 1

def camera_uri(index: int) -> str:
    """``--camera N`` as a source URI."""
    return str(int(index))


# (width, height) of the source -> (width, height) the decoder should scale to, or None
ScaleRule = Callable[[Tuple[int, int]], Optional[Tuple[int, int]]]


def _gstreamer_source(kind: str, target: str, uri: str, description: str, mode: str, explicit: bool,
                      loop: bool, camera: CameraOptions, scale: Optional[ScaleRule]) -> Optional[Source]:
    """The source ``kind`` (``file``, ``stream`` or ``camera``) decoded by a GStreamer pipeline in
    ``mode`` (``nvidia`` or ``gstreamer``), scaled by ``scale``. Where the user named the mode
    (``explicit``), a source it cannot serve is a one-line :class:`SourceError`; where ``auto``
    chose it, None, and the caller falls back to FFmpeg."""
    try:
        if kind == "camera":
            native = (camera.width, camera.height) if camera.width and camera.height else None
            size = scale(native) if scale and native else None
            pipeline = gst.mjpeg_camera_pipeline(target, mode, camera.width, camera.height, camera.fps, size)
            info, i420 = gst.Probe(size=native), False
        else:
            info = gst.probe(target)
            size = scale(info.size) if scale and info.size else None
            i420 = gst.i420_out(info.codec, size or info.size)
            if kind == "file":
                pipeline = gst.file_pipeline(target, info.codec, mode, size, i420=i420)
            else:
                pipeline = gst.rtsp_pipeline(target, info.codec, mode, size, i420=i420)
        log.debug("%s: %s", description, pipeline)
        source = CaptureSource(pipeline, cv2.CAP_GSTREAMER, uri, f"{description} ({mode} decode)",
                               live=kind != "file", loop=loop, source_size=info.size if size else None, i420=i420)
    except (gst.DecodeError, SourceError) as exc:
        if explicit:
            raise SourceError(f"{description}: {first_line(exc)}") from None
        log.info("%s: GStreamer (%s) cannot decode it (%s); using FFmpeg", description, mode, first_line(exc))
        return None
    source.fps = source.fps or info.fps
    if kind == "file":
        source.frame_count = info.frames
    return source


def open_source(uri: str, loop: bool = False, camera: Optional[CameraOptions] = None,
                image_fps: Optional[float] = None, decode: str = "auto",
                scale: Optional[ScaleRule] = None) -> Source:
    """Open the source a URI names (see the module docstring for the forms).

    ``loop`` replays files and folders; ``camera`` holds the size, rate and flip asked of
    cameras (and csi:// pipelines); ``image_fps`` is the nominal rate of an image folder
    (used only to time the video a sink writes from it). ``decode`` (``auto``, ``nvidia``,
    ``gstreamer``, ``ffmpeg``) picks the decoder of video files, ``rtsp://`` streams and (for
    ``nvidia``/``gstreamer`` named explicitly) MJPEG USB cameras; ``scale`` maps the source's
    (width, height) to the size a GStreamer decoder should scale to (the inference size).
    """
    camera = camera or CameraOptions()
    text = uri.strip()
    if not text:
        raise SourceError("empty source URI")
    if decode not in gst.DECODE_MODES:
        raise SourceError(f"unknown decode mode {decode!r}: choose from {', '.join(gst.DECODE_MODES)}")
    explicit = decode != "auto"

    why = []

    def gstreamer_mode() -> Optional[str]:
        """``nvidia``/``gstreamer`` where the decode mode resolves to one, else None (FFmpeg).
        Resolved only for a source it applies to; what ``auto`` took goes on the opened source
        as ``decode_note`` (:func:`opened`), for the caller to say once the run starts, so a
        run that fails on a later check is its error line alone."""
        try:
            mode, reason = gst.choose_decode(decode)
        except gst.DecodeError as exc:
            raise SourceError(str(exc)) from None
        why.append(reason)
        return mode if mode in ("nvidia", "gstreamer") else None

    def opened(source: Source) -> Source:
        source.decode_note = "; ".join(reason for reason in why if reason)
        return source

    if "!" in text and "://" not in text.split("!")[0] and not os.path.exists(text):
        require_gstreamer("a GStreamer pipeline source")
        return CaptureSource(text, cv2.CAP_GSTREAMER, uri, "GStreamer pipeline", live=True)

    if text.isdigit():
        index = int(text)
        if index > MAX_CAMERA_INDEX:  # OpenCV takes a C int: a bigger one is its traceback, not "no camera"
            raise SourceError(f"no camera {text}: camera indices go from 0 to {MAX_CAMERA_INDEX}")
        gst_mode = gstreamer_mode() if explicit else None
        if gst_mode:
            return _gstreamer_source("camera", f"/dev/video{index}", uri, f"camera {index}", gst_mode, True,
                                     False, camera, scale)  # type: ignore[return-value]
        return CaptureSource(index, cv2.CAP_ANY, uri, f"camera {index}", live=True, camera=camera)

    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower() if sep else ""

    if scheme == "v4l2" or (not scheme and text.startswith("/dev/video")):
        device = rest if scheme else text
        if device.isdigit():
            device = f"/dev/video{device}"
        if not device.startswith("/dev/"):
            raise SourceError(f"v4l2 source must be v4l2://N or v4l2:///dev/videoN, not {uri!r}")
        gst_mode = gstreamer_mode() if explicit else None
        if gst_mode:
            return _gstreamer_source("camera", device, uri, f"camera {device}", gst_mode, True,
                                     False, camera, scale)  # type: ignore[return-value]
        return CaptureSource(device, cv2.CAP_V4L2, uri, f"camera {device}", live=True, camera=camera)

    if scheme == "csi":
        if not rest.isdigit():
            raise SourceError(f"csi source must be csi://N (the sensor id), not {uri!r}")
        require_gstreamer(f"csi://{rest} (nvarguscamerasrc)")
        pipeline = csi_pipeline(int(rest), camera.width or 1280, camera.height or 720, camera.fps or 30,
                                camera.flip_method)
        return CaptureSource(pipeline, cv2.CAP_GSTREAMER, uri, f"CSI camera {rest}", live=True)

    if scheme in STREAM_SCHEMES:
        gst_mode = gstreamer_mode() if scheme in ("rtsp", "rtsps") else None
        if gst_mode:
            source = _gstreamer_source("stream", text, uri, f"stream {text}", gst_mode, explicit, False, camera, scale)
            if source is not None:
                return opened(source)
        return opened(CaptureSource(text, cv2.CAP_FFMPEG, uri, f"stream {text}", live=True))

    if scheme == "file":
        text = rest
    elif scheme:
        raise SourceError(
            f"unsupported source URI {uri!r}: use a camera index, /dev/videoN, v4l2://N, csi://N, "
            "rtsp://, http(s)://, a video file, an image folder or glob, or a GStreamer pipeline"
        )

    path = Path(text).expanduser()
    if path.is_dir():
        return ImageSource(_image_paths(str(path)), uri, f"image folder {path}", loop, image_fps)
    if any(ch in text for ch in "*?["):
        return ImageSource(_image_paths(str(path)), uri, f"images {text}", loop, image_fps)
    if not path.exists():
        raise SourceError(f"no such file or folder: {text}")
    if not path.is_file():
        raise SourceError(f"not a file or folder: {text}")
    if _is_image(path):
        return ImageSource([path], uri, f"image {path}", loop, image_fps)
    gst_mode = gstreamer_mode()
    if gst_mode:
        source = _gstreamer_source("file", str(path), uri, f"video file {path}", gst_mode, explicit, loop, camera,
                                   scale)
        if source is not None:
            return opened(source)
    return opened(CaptureSource(str(path), cv2.CAP_ANY, uri, f"video file {path}", live=False, loop=loop))
