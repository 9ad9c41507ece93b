"""Video sources: every URI form that can be exercised without hardware, and every failure."""
import re
import socket

import cv2
import numpy as np
import pytest

from fcn_deploy.errors import FcnDeployError
from fcn_deploy.runtime.gstreamer import opencv_has_gstreamer
from fcn_deploy.runtime.sources import (
    CameraOptions,
    SourceError,
    camera_uri,
    csi_pipeline,
    open_source,
)
from video_helpers import write_video

pytestmark = pytest.mark.runtime  # needs no PyTorch: .ci/jetson-env runs it on Python 3.8 and 3.10


def frames(n, h=48, w=64):
    out = []
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[:, :, 1] = i * 9
        cv2.rectangle(img, (i * 3, 5), (i * 3 + 10, 20), (255, 255, 255), -1)
        out.append(img)
    return out


@pytest.mark.parametrize("fourcc,suffix", [("mp4v", ".mp4"), ("MJPG", ".avi")])
def test_video_file_gives_every_frame_in_order(tmp_path, fourcc, suffix):
    path = write_video(tmp_path / f"clip{suffix}", frames(17), fourcc, fps=12.0)
    with open_source(str(path)) as source:
        assert not source.live and source.fps == pytest.approx(12.0)
        assert source.frame_count == 17 and source.size == (64, 48)
        got = list(source)
    assert [f.index for f in got] == list(range(17))
    assert all(f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 and f.name is None for f in got)
    # Decoded content follows the written frames (lossy codecs: compare the green ramp).
    assert [int(round(f.image[40, 50, 1] / 9)) for f in got] == list(range(17))


def test_file_uri_and_loop(tmp_path):
    path = write_video(tmp_path / "clip.avi", frames(5), "MJPG")
    with open_source(f"file://{path}", loop=True) as source:
        got = [source.read() for _ in range(12)]
    assert [f.index for f in got] == list(range(12))
    greens = [int(round(f.image[40, 50, 1] / 9)) for f in got]
    assert greens == [0, 1, 2, 3, 4] * 2 + [0, 1]


def test_image_folder_glob_and_single_image(tmp_path):
    for i, img in enumerate(frames(4)):
        cv2.imwrite(str(tmp_path / f"b_{i}.png"), img)
    cv2.imwrite(str(tmp_path / "a_first.jpg"), frames(1)[0])
    (tmp_path / "readme.txt").write_text("x")

    with open_source(str(tmp_path)) as source:
        names = [f.name for f in source]
    assert names == ["a_first", "b_0", "b_1", "b_2", "b_3"]
    with open_source(str(tmp_path / "b_*.png")) as source:
        assert [f.name for f in source] == ["b_0", "b_1", "b_2", "b_3"]
        assert not source.live
    with open_source(str(tmp_path / "b_2.png")) as source:
        got = list(source)
    assert len(got) == 1 and got[0].name == "b_2"
    with open_source(str(tmp_path / "b_*.png"), loop=True) as source:
        assert [source.read().name for _ in range(6)] == ["b_0", "b_1", "b_2", "b_3", "b_0", "b_1"]


def one_line(exc_info):
    message = str(exc_info.value)
    assert "\n" not in message
    return message


def test_missing_file(tmp_path):
    with pytest.raises(SourceError) as e:
        open_source(str(tmp_path / "nope.mp4"))
    assert "no such file" in one_line(e)


def test_corrupt_video_file(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 30000, dtype=np.uint8).tobytes())
    with pytest.raises(SourceError) as e:
        open_source(str(bad))
    assert "bad.mp4" in one_line(e) and "corrupt" in one_line(e)


def test_truncated_video_file(tmp_path):
    path = write_video(tmp_path / "clip.mp4", frames(10), "mp4v")
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])  # mp4v keeps its index at the end: unplayable
    with pytest.raises(SourceError, match="cut.mp4"):
        open_source(str(cut))


def test_empty_folder_and_unreadable_image(tmp_path):
    with pytest.raises(SourceError, match="holds no images"):
        open_source(str(tmp_path))
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(SourceError, match="cannot read image"):
        open_source(str(tmp_path))


def test_camera_that_does_not_open():
    with pytest.raises(SourceError) as e:
        open_source(camera_uri(97))
    assert "camera 97" in one_line(e)
    with pytest.raises(SourceError, match="/dev/video97"):
        open_source("v4l2://97")
    with pytest.raises(SourceError, match="/dev/video97"):
        open_source("/dev/video97")


def test_unsupported_uri():
    with pytest.raises(SourceError) as e:
        open_source("ftp://example.com/clip.mp4")
    assert "unsupported source URI" in one_line(e)
    with pytest.raises(SourceError, match="empty"):
        open_source("  ")
    with pytest.raises(SourceError, match="csi://N"):
        open_source("csi://front")
    assert issubclass(SourceError, FcnDeployError)


def test_unreachable_stream():
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SourceError) as e:
        open_source(f"rtsp://127.0.0.1:{port}/live")
    assert "cannot open stream" in one_line(e)


def test_gstreamer_detection_matches_the_build_information():
    info = cv2.getBuildInformation()
    line = re.search(r"GStreamer:\s*(\S+)", info).group(1)
    assert opencv_has_gstreamer() == (line.upper() != "NO")


@pytest.mark.skipif(opencv_has_gstreamer(), reason="this OpenCV has GStreamer")
def test_gstreamer_sources_say_the_build_lacks_it():
    for uri in ("csi://0", "videotestsrc ! videoconvert ! appsink"):
        with pytest.raises(SourceError) as e:
            open_source(uri)
        assert "built without" in one_line(e) and "GStreamer" in one_line(e)


def test_csi_pipeline_carries_size_rate_and_flip():
    text = csi_pipeline(1, 1920, 1080, 60, flip_method=2)
    assert text.startswith("nvarguscamerasrc sensor-id=1 !")
    assert "width=(int)1920, height=(int)1080" in text and "framerate=(fraction)60/1" in text
    assert "nvvidconv flip-method=2" in text and text.endswith("appsink drop=true max-buffers=1")
    with pytest.raises(SourceError, match="flip"):
        csi_pipeline(flip_method=9)
    assert CameraOptions().flip_method == 0
