"""H.264 as RTP packets: what the RTSP server (:mod:`.rtsp`) sends each viewer.

Kept apart from the server because it is a different job with its own standards: an encoder
tuned for live viewing (no B-frames, no look-ahead, a key frame on demand), the split of
FFmpeg's Annex B output into NAL units, and RFC 6184 packetisation (single NAL units, FU-A
fragments above ``MTU`` bytes) in RFC 3550 packets on the 90 kHz clock. Nothing here touches
a socket, so it is tested byte by byte (tests/test_rtsp.py).
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

from .encoders import DEFAULT_PRESET, VideoSettings, even_size, to_i420

RTP_CLOCK = 90000
MTU = 1400
PAYLOAD_TYPE = 96
KEYFRAME_INTERVAL_S = 2.0
DEFAULT_FPS = 30.0  # the encoder's rate before two frames have come


def split_annexb(data: bytes) -> List[bytes]:
    """NAL units of an H.264 Annex B byte stream (start codes ``00 00 01`` / ``00 00 00 01``)."""
    units: List[bytes] = []
    start = data.find(b"\x00\x00\x01")
    while start >= 0:
        begin = start + 3
        following = data.find(b"\x00\x00\x01", begin)
        end = len(data) if following < 0 else following
        unit = data[begin:end]
        if following >= 0 and unit.endswith(b"\x00"):  # the 4-byte start code's leading zero
            unit = unit[:-1]
        if unit:
            units.append(unit)
        start = following
    return units


def is_keyframe(units: List[bytes]) -> bool:
    """True for an access unit a decoder can start from (it holds an IDR slice, NAL type 5)."""
    return any(unit[0] & 0x1F == 5 for unit in units)


def rtp_payloads(units: List[bytes], mtu: int = MTU) -> List[bytes]:
    """RFC 6184 payloads of one access unit: each NAL unit whole, or in FU-A fragments."""
    payloads: List[bytes] = []
    for unit in units:
        if len(unit) <= mtu:
            payloads.append(unit)
            continue
        header, body = unit[0], unit[1:]
        indicator = bytes([(header & 0xE0) | 28])
        for offset in range(0, len(body), mtu - 2):
            chunk = body[offset:offset + mtu - 2]
            flags = (0x80 if offset == 0 else 0) | (0x40 if offset + mtu - 2 >= len(body) else 0)
            payloads.append(indicator + bytes([flags | (header & 0x1F)]) + chunk)
    return payloads


def rtp_packet(payload: bytes, sequence: int, timestamp: int, ssrc: int, marker: bool) -> bytes:
    """One RTP packet (RFC 3550 fixed header, version 2, no CSRC)."""
    return bytes([0x80, (0x80 if marker else 0) | PAYLOAD_TYPE]) + (sequence & 0xFFFF).to_bytes(2, "big") + \
        (timestamp & 0xFFFFFFFF).to_bytes(4, "big") + ssrc.to_bytes(4, "big") + payload


def frame_rate(captured: Sequence[float]) -> float:
    """Frames per second of the stream, from the capture times of its latest frames
    (:data:`DEFAULT_FPS` until two are known), within 1..120."""
    if len(captured) < 2 or captured[-1] <= captured[0]:
        return DEFAULT_FPS
    return min(120.0, max(1.0, (len(captured) - 1) / (captured[-1] - captured[0])))


class LiveEncoder:
    """H.264 for viewers: libx264 with no B-frames or look-ahead (``zerolatency``: each frame
    leaves as it comes), SPS/PPS repeated before every key frame, a key frame every
    ``KEYFRAME_INTERVAL_S`` and on demand (:meth:`encode` with ``keyframe``).

    ``fps`` is the rate the frames arrive at. x264's constant quality (CRF) depends on it: it
    spends bits per second of video, so an encoder told no rate (only the 90 kHz time base,
    which x264 takes for a very high rate) gave each frame of a 10 fps stream half the bytes of
    the same CRF in a file, at a lower quality (tests/test_rtp.py)."""

    def __init__(self, size: Tuple[int, int], settings: VideoSettings, fps: float = DEFAULT_FPS):
        import av

        self.size = even_size(*size)
        self.fps = fps
        context = av.CodecContext.create("libx264", "w")
        context.width, context.height = self.size
        context.pix_fmt = "yuv420p"
        context.time_base = _fraction(1, RTP_CLOCK)
        context.framerate = _fraction(int(round(fps * 1000)), 1000)
        keyint = max(1, int(round(KEYFRAME_INTERVAL_S * fps)))
        options = {"preset": settings.preset or DEFAULT_PRESET, "tune": "zerolatency", "forced-idr": "1",
                   "x264-params": f"repeat-headers=1:keyint={keyint}:annexb=1"}
        if settings.bitrate:
            context.bit_rate = int(settings.bitrate)
        else:
            options["crf"] = "23"
        context.options = options
        context.open()
        self._context = context
        self.bytes = 0

    def encode(self, image: np.ndarray, timestamp: int, keyframe: bool = False) -> List[List[bytes]]:
        """Access units (lists of NAL units) for one BGR frame; ``timestamp`` on the 90 kHz clock."""
        import av
        import cv2

        width, height = self.size
        if image.shape[1] != width or image.shape[0] != height:
            image = cv2.copyMakeBorder(image, 0, height - image.shape[0], 0, width - image.shape[1],
                                       cv2.BORDER_REPLICATE)
        frame = av.VideoFrame.from_ndarray(to_i420(image), format="yuv420p")
        frame.pts = timestamp
        if keyframe:
            frame.pict_type = _picture_type_i()
        units = []
        for packet in self._context.encode(frame):
            data = bytes(packet)
            self.bytes += len(data)
            units.append(split_annexb(data))
        return units


def _fraction(num: int, den: int):
    from fractions import Fraction

    return Fraction(num, den)


def _picture_type_i():
    """``I`` in the spelling this PyAV takes (an enum from PyAV 13, a string before)."""
    try:
        from av.video.frame import PictureType

        return PictureType.I
    except ImportError:
        return "I"
