"""The live H.264 encoder of the RTSP output (fcn_deploy/runtime/rtp.py) against a file's: told
the stream's frame rate, it spends what a file at that rate spends, so the CRF the docs quote
means the same picture quality on both (it gave live streams half the bytes before)."""
from fractions import Fraction

import cv2
import numpy as np
import pytest

pytest.importorskip("av", reason="the RTSP output encodes H.264 with PyAV (pip install av)")

from fcn_deploy.runtime.encoders import PyAvWriter, VideoSettings  # noqa: E402
from fcn_deploy.runtime.rtp import DEFAULT_FPS, RTP_CLOCK, LiveEncoder, frame_rate  # noqa: E402


def textured_frames(n, height=120, width=160):
    """Blurred noise drifting a few pixels a frame: detail for the encoder to spend bits on."""
    rng = np.random.default_rng(1)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (height, width + 4 * n, 3), dtype=np.uint8), (5, 5), 1.5)
    return [np.ascontiguousarray(texture[:, 4 * i:4 * i + width]) for i in range(n)]


def live_bytes(frames, fps):
    encoder = LiveEncoder((frames[0].shape[1], frames[0].shape[0]), VideoSettings(), fps)
    for index, image in enumerate(frames):
        encoder.encode(image, int(round(index * RTP_CLOCK / fps)))
    return encoder.bytes


def file_bytes(frames, fps, path):
    writer = PyAvWriter(str(path), "mp4", "h264", (frames[0].shape[1], frames[0].shape[0]), Fraction(fps),
                        Fraction(1, fps), VideoSettings())
    for index, image in enumerate(frames):
        writer.write(image, index)
    writer.close()
    return writer.bytes


def test_the_live_encoder_at_the_stream_rate_spends_what_a_file_does(tmp_path):
    frames = textured_frames(18)  # within one key frame interval (2 s at 10 fps): one I-frame each
    stream, file = live_bytes(frames, 10.0), file_bytes(frames, 10, tmp_path / "ten.mp4")
    assert 0.8 < stream / file < 1.25, (stream, file)
    # x264's constant quality is per second of video: the same frames declared at a high rate
    # get fewer bytes each; that is what an encoder told no rate did.
    assert live_bytes(frames, 120.0) < 0.85 * stream


def test_frame_rate_is_measured_from_capture_times():
    assert frame_rate([]) == frame_rate([5.0]) == DEFAULT_FPS
    assert frame_rate([1.0, 1.0]) == DEFAULT_FPS  # no time between them: not a rate
    assert frame_rate([0.0, 0.25, 0.5, 0.75, 1.0]) == pytest.approx(4.0)
    assert frame_rate([0.0, 10.0]) == 1.0 and frame_rate([0.0, 0.0001]) == 120.0  # clamped
