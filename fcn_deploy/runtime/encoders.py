"""Video encoders for file outputs: which codec, which encoder, and the writers themselves.

Why PyAV (FFmpeg's libraries, in pip's ``av`` wheels) for encoding and not OpenCV's
``VideoWriter``: the wheels carry libx264, so ``.mp4`` files are H.264, which every browser,
phone and editor plays (OpenCV's pip wheels offer only MPEG-4 Part 2, ``mp4v``, which browsers
do not play); every write and the final close return an error we can check (``VideoWriter``
reports nothing, so a full disk looked like success); and timestamps are ours to set, so a
recording has the source's real frame rate. OpenCV still does what it does well here:
decoding, resizing and the BGR -> YUV 4:2:0 conversion.

On a Jetson the CPU is the scarce part, so H.264/H.265 go to the hardware encoder
(``nvv4l2h264enc`` / ``nvv4l2h265enc``, NVIDIA's documented GStreamer elements) through
JetPack's OpenCV, which is built with GStreamer. That layer is a pipeline string
(:func:`gstreamer_pipeline`) and cannot run here; everything around it does.

==========  =============================  ======================  ===========================
``--codec``  CPU encoder (PyAV)             Jetson element          note
==========  =============================  ======================  ===========================
``h264``    ``libx264`` (default ``.mp4``)  ``nvv4l2h264enc``       plays everywhere
``h265``    ``libx265``                    ``nvv4l2h265enc``       half the size; fewer players
``mp4v``    ``mpeg4`` (MPEG-4 Part 2)      --                      the old default
``mjpeg``   ``mjpeg`` (default ``.avi``)   --                      every frame a JPEG
other       that FFmpeg encoder by name    --                      e.g. ``h264_nvenc``
==========  =============================  ======================  ===========================

The Jetson encoder elements are the ``h264enc``/``h265enc`` rows of :mod:`.gstreamer`'s element
table, which names every NVIDIA element once.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Dict, Optional, Tuple

import cv2
import numpy as np

from ..errors import FcnDeployError
from . import gstreamer as gst

log = logging.getLogger(__name__)

# file suffix -> (FFmpeg muxer, default codec)
CONTAINERS: Dict[str, Tuple[str, str]] = {
    ".mp4": ("mp4", "h264"),
    ".mov": ("mov", "h264"),
    ".mkv": ("matroska", "h264"),
    ".avi": ("avi", "mjpeg"),
}
# Containers that store one frame rate, not a time per frame: a live source's rate must be
# known before the first frame is written (measured over the first second, see sinks).
CONSTANT_RATE_CONTAINERS = ("avi",)

# --codec name -> (FFmpeg encoder, pixel format, encoder options)
# libx264 "ultrafast": about the CPU time of OpenCV's mp4v writer (benchmarks/pipeline.py
# --codecs h264,mp4v measures both), so recording does not slow the pipeline; --preset trades
# CPU for smaller files.
CODECS: Dict[str, Tuple[str, str, Dict[str, str]]] = {
    "h264": ("libx264", "yuv420p", {"crf": "23"}),
    "h265": ("libx265", "yuv420p", {"crf": "28", "x265-params": "log-level=error"}),
    "mp4v": ("mpeg4", "yuv420p", {"flags": "+qscale", "global_quality": str(3 * 118)}),  # -q:v 3
    "mjpeg": ("mjpeg", "yuvj420p", {"flags": "+qscale", "global_quality": str(3 * 118)}),
}
ALIASES = {"avc": "h264", "x264": "h264", "hevc": "h265", "x265": "h265", "mpeg4": "mp4v", "mjpg": "mjpeg"}
PRESET_CODECS = ("libx264", "libx265")
DEFAULT_PRESET = "ultrafast"
# A compact, fast clock for files whose frames carry their own times (live sources).
LIVE_TIME_BASE = Fraction(1, 90000)

# --codec -> (Jetson hardware encoder element, its stream parser), from the element table; see
# NVIDIA's "Accelerated GStreamer" guide for JetPack 5/6. bitrate is in bits per second.
JETSON_ENCODERS: Dict[str, Tuple[str, str]] = {
    codec: (gst.ELEMENTS[("nvidia", f"{codec}enc")], f"{codec}parse") for codec in ("h264", "h265")
}
GST_MUXERS = {"mp4": "qtmux", "mov": "qtmux", "matroska": "matroskamux", "avi": "avimux"}
ENCODER_CHOICES = ("auto", "cpu", "jetson")


class EncoderError(FcnDeployError):
    """A video that cannot be encoded or written."""


def canonical_codec(codec: Optional[str], container: str) -> str:
    """The ``--codec`` name in the table's spelling (``None`` -> the container's default)."""
    if not codec:
        return next(default for fmt, default in CONTAINERS.values() if fmt == container)
    name = codec.strip().lower()
    return ALIASES.get(name, name)


@dataclass
class VideoSettings:
    """What the user asked of a video file: codec, bitrate (bits/s; ``None``: quality-based),
    x264/x265 preset, and which encoder (``auto`` picks the Jetson one where it exists)."""

    codec: Optional[str] = None
    bitrate: Optional[int] = None
    preset: Optional[str] = None
    encoder: str = "auto"
    extra: Dict[str, str] = field(default_factory=dict)


# -- PyAV (CPU) --------------------------------------------------------------------------------
def pyav_problem() -> Optional[str]:
    """Why PyAV cannot encode here, or ``None``."""
    try:
        import av  # noqa: F401
    except ImportError as exc:
        return f"PyAV is not installed ({exc}): pip install av"
    return None


def pyav_encoder(codec: str) -> Tuple[str, str, Dict[str, str]]:
    """(FFmpeg encoder, pixel format, options) for ``codec``, or one :class:`EncoderError` line."""
    import av

    name, pix_fmt, options = CODECS.get(codec, (codec, "yuv420p", {}))
    try:
        av.codec.Codec(name, "w")
    except Exception:  # av.codec.codec.UnknownCodecError and friends, which differ by version
        known = ", ".join(CODECS)
        raise EncoderError(f"unknown video codec {codec!r}: use one of {known}, or an FFmpeg encoder name "
                           "this PyAV has") from None
    return name, pix_fmt, dict(options)


def even_size(width: int, height: int) -> Tuple[int, int]:
    """4:2:0 video needs even sides; odd ones get one replicated pixel row/column."""
    return width + width % 2, height + height % 2


def to_i420(image: np.ndarray) -> np.ndarray:
    """BGR ``H x W x 3`` (even sides) -> planar YUV 4:2:0 ``(3H/2) x W`` (BT.601, what FFmpeg
    assumes for untagged video)."""
    return cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)


class PyAvWriter:
    """One video file written by FFmpeg's muxer and a CPU encoder through PyAV.

    ``rate`` is the nominal frame rate; ``time_base`` the unit of :meth:`write`'s ``pts``
    (``1/rate`` for frames counted one by one, :data:`LIVE_TIME_BASE` for frames timed by
    the clock). Every error is raised, never swallowed: a full disk is an exception.
    """

    def __init__(self, path: str, container: str, codec: str, size: Tuple[int, int], rate: Fraction,
                 time_base: Fraction, settings: VideoSettings):
        import av

        name, pix_fmt, options = pyav_encoder(codec)
        if settings.bitrate:
            options.pop("crf", None)
            options.pop("flags", None)
            options.pop("global_quality", None)
        if name in PRESET_CODECS:
            options["preset"] = settings.preset or DEFAULT_PRESET
        options.update(settings.extra)
        self.size = even_size(*size)
        self.codec = name
        self._container = av.open(path, "w", format=container)
        try:
            stream = self._container.add_stream(name, rate=rate, options=options)
            stream.width, stream.height = self.size
            stream.pix_fmt = pix_fmt
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
            if settings.bitrate:
                stream.bit_rate = int(settings.bitrate)
            if name == "libx265" and container in ("mp4", "mov"):
                stream.codec_context.codec_tag = "hvc1"  # what Safari and QuickTime need for HEVC in MP4
        except BaseException:
            self._container.close()
            raise
        self._stream = stream
        self._pix_fmt = pix_fmt
        self.bytes = 0

    def write(self, image: np.ndarray, pts: int) -> None:
        import av

        width, height = self.size
        if image.shape[1] != width or image.shape[0] != height:
            image = cv2.copyMakeBorder(image, 0, height - image.shape[0], 0, width - image.shape[1],
                                       cv2.BORDER_REPLICATE)
        frame = av.VideoFrame.from_ndarray(to_i420(image), format="yuv420p")
        if self._pix_fmt != "yuv420p":
            frame = frame.reformat(format=self._pix_fmt)
        frame.pts = pts
        for packet in self._stream.encode(frame):
            self.bytes += packet.size
            self._container.mux(packet)

    def close(self) -> None:
        """Drain the encoder and write the container's index (an MP4's ``moov``)."""
        try:
            for packet in self._stream.encode(None):
                self.bytes += packet.size
                self._container.mux(packet)
        finally:
            self._container.close()


def check_video_file(path: str, frames: int) -> None:
    """Open the finished file again and count its frames: the check that the bytes a writer
    handed to the OS are a whole, playable file (FFmpeg's last flush on close, and OpenCV's
    writer, report no error). Raises :class:`EncoderError`."""
    try:
        import av
    except ImportError:
        capture = cv2.VideoCapture(path)
        try:
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else -1
        finally:
            capture.release()
        if count < frames:
            raise EncoderError(f"the written video holds {max(count, 0)} of {frames} frames")
        return
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            count = stream.frames
    except Exception as exc:  # av.error.* differ between PyAV versions
        raise EncoderError(f"the written video cannot be read back: {exc}") from None
    if count and count < frames:  # 0: the container does not say (Matroska)
        raise EncoderError(f"the written video holds {count} of {frames} frames")


# -- Jetson hardware encoder (GStreamer, through OpenCV) -----------------------------------------
def jetson_encoder_problem(codec: str) -> Optional[str]:
    """Why the Jetson hardware encoder cannot write ``codec`` here, or ``None`` when it can."""
    if codec not in JETSON_ENCODERS:
        return f"the Jetson encoder writes {' and '.join(JETSON_ENCODERS)}, not {codec}"
    if not gst.opencv_has_gstreamer():
        return f"this OpenCV {cv2.__version__} is built without GStreamer (JetPack's python3-opencv has it)"
    element = JETSON_ENCODERS[codec][0]
    if not gst.element_exists(element):
        return f"GStreamer has no {element} here (not a Jetson, or JetPack's multimedia packages are missing)"
    return None


def gstreamer_pipeline(location: str, container: str, codec: str, bitrate: Optional[int],
                       encoder: Optional[str] = None) -> str:
    """The OpenCV ``VideoWriter`` pipeline for the hardware encoder, from NVIDIA's documented
    elements: BGR frames in ``appsrc``, converted to NV12 in NVMM memory by ``nvvidconv``,
    encoded, parsed and muxed into ``location``. ``encoder`` overrides the element (tests
    run the same chain with a CPU encoder)."""
    element, parser = JETSON_ENCODERS[codec]
    rate = int(bitrate) if bitrate else 8_000_000
    settings = f" bitrate={rate} insert-sps-pps=true" if encoder is None else ""
    muxer = GST_MUXERS[container]
    return (
        "appsrc ! video/x-raw,format=BGR ! queue ! videoconvert ! video/x-raw,format=BGRx ! "
        "nvvidconv ! video/x-raw(memory:NVMM),format=NV12 ! "
        f"{encoder or element}{settings} ! {parser} ! {muxer} ! filesink location={location}"
    )


class GStreamerWriter:
    """The hardware encoder behind OpenCV's GStreamer ``VideoWriter`` (needs the rate up
    front; reports no write error, so the file is checked after :meth:`close`)."""

    def __init__(self, path: str, container: str, codec: str, size: Tuple[int, int], rate: Fraction,
                 settings: VideoSettings):
        pipeline = gstreamer_pipeline(path, container, codec, settings.bitrate)
        self.codec = JETSON_ENCODERS[codec][0]
        self.size = size
        self.bytes = 0
        self._writer = cv2.VideoWriter(pipeline, cv2.CAP_GSTREAMER, 0, float(rate), size, True)
        if not self._writer.isOpened():
            raise EncoderError(f"GStreamer cannot open the encoder pipeline: {pipeline}")

    def write(self, image: np.ndarray, pts: int) -> None:
        if image.shape[1] != self.size[0] or image.shape[0] != self.size[1]:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self._writer.write(image)

    def close(self) -> None:
        self._writer.release()  # sends EOS: the muxer writes its index


# -- OpenCV, where PyAV is not installed (a bare JetPack install): the codecs its wheels have ----
OPENCV_FOURCC = {"mp4v": "mp4v", "mjpeg": "MJPG"}


class OpenCvWriter:
    """OpenCV's ``VideoWriter`` for ``mp4v``/``mjpeg`` without PyAV. It reports no write error,
    so the file is checked after :meth:`close` (:func:`check_video_file`)."""

    def __init__(self, path: str, codec: str, size: Tuple[int, int], rate: Fraction):
        self.codec = OPENCV_FOURCC[codec]
        self.size = size
        self.bytes = 0
        # OpenCV picks the container from the name: give it the target's suffix.
        self._writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*self.codec), float(rate), size)
        if not self._writer.isOpened():
            raise EncoderError(f"OpenCV cannot write {codec} to {path}")

    def write(self, image: np.ndarray, pts: int) -> None:
        if image.shape[1] != self.size[0] or image.shape[0] != self.size[1]:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self._writer.write(image)

    def close(self) -> None:
        self._writer.release()


def choose_encoder(codec: str, encoder: str) -> str:
    """``"jetson"``, ``"cpu"`` (PyAV) or ``"opencv"`` for ``codec`` under ``--encoder`` (auto: the
    hardware one where it exists); one :class:`EncoderError` line when the asked one cannot run."""
    if encoder not in ENCODER_CHOICES:
        raise EncoderError(f"unknown encoder {encoder!r}: use {', '.join(ENCODER_CHOICES)}")
    if encoder in ("auto", "jetson") and codec in JETSON_ENCODERS:
        problem = jetson_encoder_problem(codec)
        if problem is None:
            return "jetson"
        if encoder == "jetson":
            raise EncoderError(f"--encoder jetson: {problem}")
    elif encoder == "jetson":
        raise EncoderError(f"--encoder jetson: {jetson_encoder_problem(codec)}")
    problem = pyav_problem()
    if problem:
        if codec in OPENCV_FOURCC:
            return "opencv"
        raise EncoderError(f"cannot encode {codec}: {problem} (or --codec mp4v, which OpenCV writes)")
    return "cpu"


def frame_rate(fps: Optional[float]) -> Fraction:
    """A float rate as the exact fraction containers store (29.97 -> 30000/1001)."""
    value = float(fps or 0)
    if value <= 0:
        raise ValueError(f"frame rate must be positive, not {fps}")
    for base in (24, 30, 60, 120):  # NTSC rates
        if abs(value - base * 1000 / 1001) < 0.005:
            return Fraction(base * 1000, 1001)
    return Fraction(value).limit_denominator(1000)
