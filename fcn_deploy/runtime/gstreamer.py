"""Decoding through GStreamer: NVIDIA's hardware elements on a Jetson, their software twins elsewhere.

On a Jetson the ARM cores, not the GPU, limit a video loop: decoding H.264 and resizing
1080p frames on the CPU (OpenCV's FFmpeg backend, which has no hardware decode) can take
all of them. jetson-inference and DeepStream decode with NVDEC (``nvv4l2decoder``) and
scale with the VIC (``nvvidconv``), both behind GStreamer; so does ``--decode nvidia``.
``--decode gstreamer`` builds the same pipeline shapes from software elements
(``avdec_h264``, ``jpegdec``, ``videoscale``), which is how the shapes are tested on a
machine without a Jetson; ``--decode ffmpeg`` is OpenCV's FFmpeg as before.

:data:`ELEMENTS` is the one table of elements per mode: a new element is one row.
The pipeline scales the frame to the inference size before it reaches Python where it can
(``nvvidconv``, ``videoscale``), so the CPU resize is skipped; the labels still map back to
the frame's own size (:attr:`~fcn_deploy.runtime.sources.Frame.source_size`).

Rotations: ``nvvidconv flip-method`` (the CSI camera's ``--flip-method``) and the software
twin ``videoflip`` number their methods differently; :data:`VIDEOFLIP_OF_FLIP_METHOD` maps
one to the other, and methods 1, 3, 5 and 7 (quarter turns and diagonal flips) swap width
and height in the caps after the flip (:func:`flipped_size`).
"""
from __future__ import annotations

import functools
import logging
import re
import shutil
import subprocess
from typing import Dict, List, Optional, Tuple

import cv2

from ..errors import FcnDeployError

log = logging.getLogger(__name__)

DECODE_MODES = ("auto", "nvidia", "gstreamer", "ffmpeg")
# Flip methods of nvvidconv (0 none, 1 counter-clockwise 90, 2 180, 3 clockwise 90,
# 4 horizontal, 5 upper-right diagonal, 6 vertical, 7 upper-left diagonal) that swap the axes.
SWAPPING_FLIP_METHODS = (1, 3, 5, 7)
# nvvidconv flip-method -> videoflip video-direction (GstVideoOrientationMethod: 0 none, 1 clockwise,
# 2 rotate-180, 3 counter-clockwise, 4 horizontal, 5 vertical, 6 upper-left diagonal,
# 7 upper-right diagonal).
VIDEOFLIP_OF_FLIP_METHOD = {0: 0, 1: 3, 2: 2, 3: 1, 4: 4, 5: 7, 6: 5, 7: 6}

# (mode, role) -> pipeline fragment. Roles: a decoder per codec (parser included), ``convert``
# (scale and convert into system memory), ``flip`` (``{method}`` filled in by
# :func:`flip_fragment`), and an encoder per codec for the H.264/H.265 outputs.
# :data:`DEPAYLOADERS` turns RTP into each codec's elementary stream.
ELEMENTS: Dict[Tuple[str, str], str] = {
    ("nvidia", "h264"): "h264parse ! nvv4l2decoder",
    ("nvidia", "h265"): "h265parse ! nvv4l2decoder",
    ("nvidia", "mpeg4"): "mpeg4videoparse ! nvv4l2decoder",
    ("nvidia", "mjpeg"): "jpegparse ! nvv4l2decoder mjpeg=1",
    ("nvidia", "convert"): "nvvidconv",
    ("nvidia", "flip"): "nvvidconv flip-method={method}",
    ("nvidia", "h264enc"): "nvv4l2h264enc",
    ("nvidia", "h265enc"): "nvv4l2h265enc",
    ("gstreamer", "h264"): "h264parse ! avdec_h264",
    ("gstreamer", "h265"): "h265parse ! avdec_h265",
    ("gstreamer", "mpeg4"): "mpeg4videoparse ! avdec_mpeg4",
    ("gstreamer", "mjpeg"): "jpegparse ! jpegdec",
    ("gstreamer", "convert"): "videoconvert ! videoscale method=bilinear2",  # multi-tap: averages when it shrinks, as INTER_AREA
    ("gstreamer", "flip"): "videoflip video-direction={method}",  # not `method`: deprecated, and ignored in 1.22
    ("gstreamer", "h264enc"): "x264enc",
    ("gstreamer", "h265enc"): "x265enc",
}
# Raw caps after ``convert`` where the frame leaves as BGR: nvvidconv writes BGRx to system
# memory (it cannot write BGR), and videoconvert then drops the x; the software twin goes the
# same way.
BGRX_CAPS = "video/x-raw, format=(string)BGRx"
DEPAYLOADERS = {"h264": "rtph264depay", "h265": "rtph265depay", "mpeg4": "rtpmp4vdepay", "mjpeg": "rtpjpegdepay"}
DEMUXERS = {".mp4": "qtdemux", ".mov": "qtdemux", ".m4v": "qtdemux", ".3gp": "qtdemux",
            ".mkv": "matroskademux", ".webm": "matroskademux", ".avi": "avidemux"}
# FourCCs as OpenCV's FFmpeg backend reports them -> our codec names.
CODEC_OF_FOURCC = {"avc1": "h264", "h264": "h264", "x264": "h264", "hev1": "h265", "hvc1": "h265", "hevc": "h265",
                   "h265": "h265", "mp4v": "mpeg4", "fmp4": "mpeg4", "xvid": "mpeg4", "divx": "mpeg4",
                   "mjpg": "mjpeg", "jpeg": "mjpeg"}


class DecodeError(FcnDeployError):
    """A decode mode that this machine cannot run, or a source it cannot decode."""


def element_names(fragment: str) -> List[str]:
    """The element factory names of a pipeline fragment (``"h264parse ! nvv4l2decoder"`` ->
    ``["h264parse", "nvv4l2decoder"]``)."""
    return [part.strip().split()[0] for part in fragment.split("!") if part.strip()]


def mode_elements(mode: str) -> List[str]:
    """Every decoding element a mode's table rows name (encoders left out), in table order."""
    names: List[str] = []
    for (row_mode, role), fragment in ELEMENTS.items():
        if row_mode == mode and not role.endswith("enc"):
            names += [n for n in element_names(fragment) if n not in names]
    return names


def opencv_has_gstreamer() -> bool:
    """True when this OpenCV was built with GStreamer (pip's wheels are not; JetPack's and
    Debian's python3-opencv are)."""
    match = re.search(r"^\s*GStreamer:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    return bool(match) and match.group(1).upper() != "NO"


@functools.lru_cache(maxsize=None)
def element_exists(name: str) -> bool:
    """Whether GStreamer's registry has element ``name``: asked of ``gst-inspect-1.0`` where it is
    installed, else of OpenCV itself by opening a one-buffer pipeline through the element
    (an element missing from the registry makes the pipeline fail to parse)."""
    inspect = shutil.which("gst-inspect-1.0")
    if inspect:
        try:
            return subprocess.run([inspect, "--exists", name], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, timeout=30).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            pass
    if not opencv_has_gstreamer():
        return False
    capture = cv2.VideoCapture(f"videotestsrc num-buffers=1 ! {name} ! fakesink", cv2.CAP_GSTREAMER)
    opened = capture.isOpened()
    capture.release()
    return opened


def missing_elements(mode: str) -> List[str]:
    """The elements ``mode`` needs that this machine's GStreamer lacks."""
    return [name for name in mode_elements(mode) if not element_exists(name)]


@functools.lru_cache(maxsize=None)
def choose_decode(mode: str) -> Tuple[str, str]:
    """``(decode mode to use, why)`` for ``mode``: ``auto`` takes ``nvidia`` where its elements
    exist, else ``gstreamer`` where OpenCV has GStreamer and the software elements, else
    ``ffmpeg`` (``why`` says which and why; empty for a mode named explicitly). An explicit
    mode that cannot run is a :class:`DecodeError` naming what is missing."""
    if mode not in DECODE_MODES:
        raise DecodeError(f"unknown decode mode {mode!r}: choose from {', '.join(DECODE_MODES)}")
    if mode == "ffmpeg":
        return mode, ""
    if mode in ("nvidia", "gstreamer"):
        if not opencv_has_gstreamer():
            raise DecodeError(f"--decode {mode} needs an OpenCV built with GStreamer; this OpenCV "
                              f"{cv2.__version__} is not (pip's wheels are not: use JetPack's or the system python3-opencv)")
        missing = missing_elements(mode)
        if missing:
            raise DecodeError(f"--decode {mode}: GStreamer elements missing on this machine: {', '.join(missing)}"
                              + (" (they come with JetPack's GStreamer plugins)" if mode == "nvidia" else ""))
        return mode, ""
    if opencv_has_gstreamer():
        for candidate in ("nvidia", "gstreamer"):
            if not missing_elements(candidate):
                return candidate, f"--decode auto: took {candidate} (" + (
                    "NVIDIA's decoder and converter are present" if candidate == "nvidia"
                    else "OpenCV has GStreamer; no NVIDIA decoder here") + ")"
        return "ffmpeg", f"--decode auto: took ffmpeg (GStreamer lacks {', '.join(missing_elements('gstreamer'))})"
    return "ffmpeg", f"--decode auto: took ffmpeg (this OpenCV {cv2.__version__} has no GStreamer)"


def flipped_size(width: int, height: int, flip_method: int) -> Tuple[int, int]:
    """The (width, height) after an nvvidconv flip: quarter turns and diagonal flips swap them."""
    return (height, width) if flip_method in SWAPPING_FLIP_METHODS else (width, height)


def flip_fragment(mode: str, flip_method: int) -> str:
    """The element that applies nvvidconv's ``flip_method`` in ``mode`` (empty for 0)."""
    if flip_method == 0:
        return ""
    method = flip_method if mode == "nvidia" else VIDEOFLIP_OF_FLIP_METHOD[flip_method]
    return ELEMENTS[(mode, "flip")].format(method=method)


# A live source's appsink holds at most this many frames, dropping the oldest beyond. Network
# frames come in bursts (jitter, TCP): with one slot, a reader that stalls for a frame's time
# lost frames that OpenCV's FFmpeg path (which buffers) kept, and the two decoders disagreed on
# the frame count of one RTSP stream on a busy machine (five slots still lost one frame in 60
# at a load average of 12 on 2 cores). run's capture thread reads each frame as it comes, so the
# slots stay empty, and add no latency, while it keeps up; a reader slower than the stream
# (Segmenter.video with a slow model) sees frames up to ten old, as FFmpeg's buffering does.
LIVE_BUFFERS = 10


def i420_out(codec: str, size: Optional[Tuple[int, int]]) -> bool:
    """Whether frames of ``codec`` at (width, height) ``size`` leave the pipeline as I420, for
    OpenCV to turn into BGR (:class:`~fcn_deploy.runtime.sources.CaptureSource` with
    ``i420=True``).

    Why: videoconvert's 8-bit I420 -> BGR fast path is 1.5 to 3.3 levels darker than BT.601
    (its dither and chroma options do not reach it), and the bundled model moves 2.5% of its
    labels for that; OpenCV's ``cvtColor`` is within 0.03 of BT.601 in limited range, the range
    of H.264, H.265 and MPEG-4 video. JPEG's YUV is full range, which ``cvtColor`` would read as
    limited (7.8 levels off on an MJPEG AVI), so MJPEG keeps videoconvert's BGR, which reads the
    range from the decoder's caps; so does an odd size, since I420 needs even sides."""
    return codec != "mjpeg" and size is not None and size[0] % 2 == 0 and size[1] % 2 == 0


def to_appsink(mode: str, size: Optional[Tuple[int, int]], live: bool, i420: bool = False) -> str:
    """The tail every decoding pipeline ends in: scale (to ``size`` = (width, height), when
    given) and convert in ``mode``'s converter, then I420 (``i420``, see :func:`i420_out`) or BGR
    into OpenCV's appsink. A live source's appsink keeps the newest :data:`LIVE_BUFFERS` frames;
    a file's waits for the reader and loses none."""
    scale = f", width=(int){size[0]}, height=(int){size[1]}" if size else ""
    sink = f"appsink drop=true max-buffers={LIVE_BUFFERS} sync=false" if live else "appsink sync=false"
    if i420:
        return f"{ELEMENTS[(mode, 'convert')]} ! video/x-raw, format=(string)I420{scale} ! {sink}"
    return (f"{ELEMENTS[(mode, 'convert')]} ! {BGRX_CAPS}{scale} ! "
            f"videoconvert ! video/x-raw, format=(string)BGR ! {sink}")


def decoder(mode: str, codec: str) -> str:
    key = (mode, codec)
    if key not in ELEMENTS:
        supported = sorted(c for (m, c) in ELEMENTS if m == mode and not c.endswith("enc") and c not in ("convert", "flip"))
        raise DecodeError(f"--decode {mode} cannot decode {codec or 'this codec'} (it decodes {', '.join(supported)}); "
                          "use --decode ffmpeg")
    return ELEMENTS[key]


def file_pipeline(path: str, codec: str, mode: str, size: Optional[Tuple[int, int]] = None,
                  i420: bool = False) -> str:
    """Decode a video file: demuxer by suffix, the codec's parser and decoder, then :func:`to_appsink`."""
    suffix = ("." + path.rsplit(".", 1)[-1].lower()) if "." in path else ""
    demux = DEMUXERS.get(suffix)
    if demux is None:
        raise DecodeError(f"--decode {mode} reads {', '.join(sorted(DEMUXERS))} files, not {suffix or 'this file'}; "
                          "use --decode ffmpeg")
    location = path.replace("\\", "\\\\").replace('"', '\\"')
    return (f'filesrc location="{location}" ! {demux} ! queue ! {decoder(mode, codec)} ! '
            f"{to_appsink(mode, size, live=False, i420=i420)}")


def rtsp_pipeline(uri: str, codec: str, mode: str, size: Optional[Tuple[int, int]] = None,
                  latency_ms: int = 200, i420: bool = False) -> str:
    """Decode an RTSP stream: rtspsrc, the codec's RTP depayloader, parser and decoder, then :func:`to_appsink`."""
    if codec not in DEPAYLOADERS:
        raise DecodeError(f"--decode {mode} cannot depayload {codec or 'this codec'} from RTSP; use --decode ffmpeg")
    return (f'rtspsrc location="{uri}" latency={int(latency_ms)} ! {DEPAYLOADERS[codec]} ! '
            f"{decoder(mode, codec)} ! {to_appsink(mode, size, live=True, i420=i420)}")


def mjpeg_camera_pipeline(device: str, mode: str, width: Optional[int] = None, height: Optional[int] = None,
                          fps: Optional[float] = None, size: Optional[Tuple[int, int]] = None) -> str:
    """An MJPEG USB (V4L2) camera: the camera's JPEGs decoded by ``nvv4l2decoder mjpeg=1`` or
    ``jpegdec``, then scaled to ``size``."""
    caps = ["image/jpeg"]
    if width and height:
        caps += [f"width=(int){int(width)}", f"height=(int){int(height)}"]
    if fps:
        caps.append(f"framerate=(fraction){int(round(fps))}/1")
    return (f"v4l2src device={device} ! {', '.join(caps)} ! {decoder(mode, 'mjpeg')} ! "
            f"{to_appsink(mode, size, live=True)}")


def flip_pipeline(source: str, mode: str, flip_method: int, width: int, height: int) -> str:
    """Frames of an upstream fragment ``source`` (raw video of ``width`` x ``height``) flipped by
    nvvidconv's ``flip_method`` in ``mode``, at the swapped size for quarter turns: how the CSI
    camera's ``--flip-method`` is tested here with ``videoflip``."""
    out_w, out_h = flipped_size(width, height, flip_method)
    flip = flip_fragment(mode, flip_method)
    flip = f"{flip} ! " if flip else ""
    return (f"{source} ! videoconvert ! {flip}{BGRX_CAPS}, width=(int){out_w}, height=(int){out_h} ! "
            "videoconvert ! video/x-raw, format=(string)BGR ! appsink sync=false")


class Probe:
    """What OpenCV's FFmpeg backend reads of a file or stream before the GStreamer pipeline is
    built: the codec (for the parser and decoder), the size (for the scale), the rate and the
    frame count (GStreamer's appsink reports neither reliably)."""

    def __init__(self, codec: str = "", size: Optional[Tuple[int, int]] = None, fps: Optional[float] = None,
                 frames: Optional[int] = None):
        self.codec, self.size, self.fps, self.frames = codec, size, fps, frames


def probe(uri: str) -> Probe:
    """Open ``uri`` with OpenCV's FFmpeg backend and read its FourCC, size, rate and length;
    an empty :class:`Probe` where FFmpeg cannot open it."""
    capture = cv2.VideoCapture(uri, cv2.CAP_FFMPEG)
    try:
        if not capture.isOpened():
            return Probe()
        code = int(capture.get(cv2.CAP_PROP_FOURCC))
        width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = capture.get(cv2.CAP_PROP_FPS)
        frames = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    finally:
        capture.release()
    fourcc = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4)).strip("\0 ").lower()
    return Probe(CODEC_OF_FOURCC.get(fourcc, fourcc),
                 (width, height) if width > 0 and height > 0 else None,
                 float(fps) if fps and 0 < fps < 1000 else None,
                 int(frames) if frames and frames > 0 else None)
