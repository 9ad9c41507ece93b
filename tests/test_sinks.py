"""Outputs: video files, image and label folders, the MJPEG server (read by a real HTTP client),
the display check, overwrite protection and URI parsing."""
import socket
import threading
import time
import urllib.request

import cv2
import numpy as np
import pytest

from fcn_deploy.runtime.sinks import (
    DisplaySink,
    ImageFolderSink,
    LabelSink,
    MjpegSink,
    NullSink,
    SinkError,
    VideoFileSink,
    display_problem,
    open_sink,
)
from fcn_deploy.runtime.sources import Frame
from video_helpers import count_frames, read_mjpeg_parts, video_fps

pytestmark = pytest.mark.runtime  # needs no PyTorch: .ci/jetson-env runs it on Python 3.8 and 3.10


def picture(i, h=48, w=64):
    img = np.full((h, w, 3), (i * 20) % 256, np.uint8)
    cv2.circle(img, (w // 2, h // 2), 10, (0, 0, 255), -1)
    return img


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_video_file_is_written_at_the_source_rate(tmp_path, suffix):
    path = tmp_path / "sub" / f"out{suffix}"
    sink = open_sink(str(path), fps=7.0)
    assert isinstance(sink, VideoFileSink)
    for i in range(9):
        sink.write(picture(i), Frame(picture(i), i))
    sink.write(picture(9, 30, 40), Frame(picture(9, 30, 40), 9))  # another size: resized, kept
    sink.close()
    sink.close()  # idempotent
    assert count_frames(path) == 10 and video_fps(path) == pytest.approx(7.0)


def test_existing_files_are_never_overwritten_without_permission(tmp_path):
    existing = tmp_path / "mine.mp4"
    existing.write_bytes(b"precious")
    with pytest.raises(SinkError, match="--overwrite"):
        open_sink(str(existing), fps=10)
    assert existing.read_bytes() == b"precious"
    sink = open_sink(str(existing), fps=10, overwrite=True)
    sink.write(picture(0), Frame(picture(0), 0))
    sink.close()
    assert count_frames(existing) == 1

    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "000000.jpg").write_bytes(b"old")
    with pytest.raises(SinkError, match="already holds 1"):
        ImageFolderSink(folder)
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "a.png").write_bytes(b"old")
    with pytest.raises(SinkError, match="--overwrite"):
        LabelSink(labels)


def test_image_folder_names_files_after_the_source_image(tmp_path):
    sink = open_sink(str(tmp_path / "out") + "/")
    assert isinstance(sink, ImageFolderSink)
    sink.write(picture(1), Frame(picture(1), 0, name="street_0001"))
    sink.write(picture(2), Frame(picture(2), 1))
    sink.close()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["000001.jpg", "street_0001.jpg"]
    assert cv2.imread(str(tmp_path / "out" / "street_0001.jpg")).shape == (48, 64, 3)


def test_label_pngs_are_single_channel_class_indices(tmp_path):
    sink = LabelSink(tmp_path / "labels")
    labels = (np.arange(48 * 64).reshape(48, 64) % 11).astype(np.uint8)
    sink.write(labels, Frame(picture(0), 0, name="Seq05VD_f00000"))
    sink.write(labels[::-1].copy(), Frame(picture(0), 1))
    back = cv2.imread(str(tmp_path / "labels" / "Seq05VD_f00000.png"), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint8 and back.ndim == 2
    np.testing.assert_array_equal(back, labels)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "labels" / "000001.png"), cv2.IMREAD_UNCHANGED),
                                  labels[::-1])
    assert sink.frames == 2


def test_mjpeg_stream_is_read_by_a_real_http_client():
    sink = open_sink("http://127.0.0.1:0")
    assert isinstance(sink, MjpegSink)
    host, port = sink.server.address
    stop = threading.Event()

    def publish():
        i = 0
        while not stop.is_set():
            sink.write(picture(i), Frame(picture(i), i))
            i += 1
            time.sleep(0.01)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    try:
        parts = read_mjpeg_parts(f"http://127.0.0.1:{port}/stream.mjpg", 3)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as page:
            assert b"stream.mjpg" in page.read()
    finally:
        stop.set()
        publisher.join()
        sink.close()
    assert len(parts) == 3
    for jpeg in parts:
        assert jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (48, 64, 3)


def test_mjpeg_port_in_use_is_one_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(SinkError) as e:
            open_sink(f"http://127.0.0.1:{port}")
    assert f"http://127.0.0.1:{port}" in str(e.value) and "\n" not in str(e.value)


def test_display_is_reported_missing_on_a_headless_machine(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    problem = display_problem()
    assert problem is not None and ("DISPLAY" in problem or "GUI" in problem)
    with pytest.raises(SinkError) as e:
        open_sink("display://0")
    assert str(e.value).startswith("display://0:") and "http://" in str(e.value)
    with pytest.raises(SinkError):
        DisplaySink()


def test_uri_forms():
    assert isinstance(open_sink("none"), NullSink)
    with pytest.raises(SinkError, match="unsupported output URI"):
        open_sink("rtmp://example.com/live")
    with pytest.raises(SinkError, match="mp4 or .avi"):
        open_sink("out.mkv")
    with pytest.raises(SinkError, match="bad port"):
        open_sink("http://127.0.0.1:http")
