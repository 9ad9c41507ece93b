"""Outputs: video files, image and label folders, the MJPEG server (read by a real HTTP client),
the display check, overwrite protection and URI parsing."""
import os
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
from fcn_deploy.fileio import TempBeside, atomic_write, remove_stale_temps
from fcn_deploy.runtime.encoders import VideoSettings
from fcn_deploy.runtime.sources import Frame, unique_image_names
from video_helpers import count_frames, read_mjpeg_parts, video_fps

pytestmark = pytest.mark.runtime  # needs no PyTorch: .ci/jetson-env runs it on Python 3.8 and 3.10


def picture(i, h=48, w=64):
    img = np.full((h, w, 3), (i * 20) % 256, np.uint8)
    cv2.circle(img, (w // 2, h // 2), 10, (0, 0, 255), -1)
    return img


def has_pyav():
    try:
        import av  # noqa: F401
        return True
    except ImportError:  # .ci/jetson-env installs the runtime without it: OpenCV writes mp4v there
        return False


needs_pyav = pytest.mark.skipif(not has_pyav(), reason="H.264 is written with PyAV (pip install av)")


@pytest.mark.parametrize("suffix,codec", [
    pytest.param(".mp4", None, marks=needs_pyav), pytest.param(".avi", None, marks=needs_pyav),
    pytest.param(".mkv", "h265", marks=needs_pyav), (".mp4", "mp4v")])
def test_video_file_is_written_at_the_source_rate(tmp_path, suffix, codec):
    path = tmp_path / "sub" / f"out{suffix}"
    sink = open_sink(str(path), fps=7.0, video=VideoSettings(codec=codec))
    assert isinstance(sink, VideoFileSink)
    for i in range(9):
        sink.write(picture(i), Frame(picture(i), i))
    sink.write(picture(9, 30, 40), Frame(picture(9, 30, 40), 9))  # another size: resized, kept
    assert not path.exists()  # not before it is complete
    sink.close()
    sink.close()  # idempotent
    assert count_frames(path) == 10 and video_fps(path) == pytest.approx(7.0)
    assert os.listdir(path.parent) == [path.name]  # the temporary file is gone


@needs_pyav
def test_live_source_is_recorded_at_its_measured_rate_with_gaps_for_dropped_frames(tmp_path):
    """Nominal 25 fps (what FFmpeg says of an MJPEG stream), frames really every 0.25 s, one
    dropped: the file is 4 fps, and the dropped frame is a gap, not a speed-up."""
    path = tmp_path / "live.mp4"
    sink = open_sink(str(path), fps=25.0, live=True)
    times = [i * 0.25 for i in range(12) if i != 7]
    for i, t in enumerate(times):
        sink.write(picture(i), Frame(picture(i), i, None, 100.0 + t))
    sink.close()
    assert sink.fps == 4.0 and sink.frames == 11
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts = [float(packet.pts * stream.time_base) for packet in container.demux(stream) if packet.pts is not None]
    assert sorted(pts) == pytest.approx([t for t in times])


@needs_pyav
def test_a_write_error_is_one_sink_error_and_leaves_no_file(tmp_path):
    """A real failing write: a file-size limit makes the kernel refuse the bytes (EFBIG), as a
    full disk does (ENOSPC; tests/test_video_outputs.py uses a real full tmpfs)."""
    import resource
    import signal

    path = tmp_path / "big.mp4"
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    rng = np.random.default_rng(0)
    sink = open_sink(str(path), fps=10.0)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20000, old_limit[1]))
    try:
        with pytest.raises(SinkError, match=r"cannot write .*big.mp4: File too large"):
            for i in range(200):
                noise = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
                sink.write(noise, Frame(noise, i))
            sink.close()
        sink.close()  # after the error: nothing more raised, nothing published
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert os.listdir(tmp_path) == []


def test_temp_beside_publishes_whole_and_checks_existence_atomically(tmp_path):
    target = tmp_path / "out.bin"
    first, second = TempBeside(target), TempBeside(target)
    for temp, data in ((first, b"first"), (second, b"second")):
        os.write(temp.fd, data)
    assert not target.exists()
    first.publish(overwrite=False)
    with pytest.raises(FileExistsError):
        second.publish(overwrite=False)  # the name was taken between the two runs' checks
    second.discard()
    assert target.read_bytes() == b"first" and os.listdir(tmp_path) == ["out.bin"]
    atomic_write(target, b"replaced")
    assert target.read_bytes() == b"replaced"
    with pytest.raises(FileExistsError):
        atomic_write(target, b"no", overwrite=False)
    assert target.read_bytes() == b"replaced" and os.listdir(tmp_path) == ["out.bin"]


def test_stale_temporary_files_of_killed_runs_are_removed_and_live_ones_kept(tmp_path):
    import subprocess
    import sys

    target = tmp_path / "out.mp4"
    live = TempBeside(target)  # this process holds its lock
    # A real process that makes one and dies without cleaning up (SIGKILL: no finally runs).
    code = ("import os, signal, sys; from fcn_deploy.fileio import TempBeside; "
            f"t = TempBeside({str(target)!r}); os.write(t.fd, b'x'); os.kill(os.getpid(), signal.SIGKILL)")
    subprocess.run([sys.executable, "-c", code], check=False)
    assert len(os.listdir(tmp_path)) == 2
    removed = remove_stale_temps(tmp_path, [target.name])
    assert len(removed) == 1 and os.listdir(tmp_path) == [os.path.basename(live.path)]
    live.discard()
    assert os.listdir(tmp_path) == []


def test_image_names_are_unique_per_source(tmp_path):
    from pathlib import Path

    paths = [Path("d/a.jpg"), Path("d/a.png"), Path("d/b.png"), Path("e/b.png"), Path("d/C.png"), Path("d/c.bmp")]
    assert unique_image_names(paths) == ["a.jpg", "a.png", "b.png", "b.png-2", "C.png", "c.bmp"]
    assert unique_image_names([Path("x/0001.png"), Path("x/0002.png")]) == ["0001", "0002"]


def test_existing_files_are_never_overwritten_without_permission(tmp_path):
    existing = tmp_path / "mine.mp4"
    existing.write_bytes(b"precious")
    with pytest.raises(SinkError, match="--overwrite"):
        open_sink(str(existing), fps=10)
    assert existing.read_bytes() == b"precious"
    sink = open_sink(str(existing), fps=10, overwrite=True, video=VideoSettings(codec="mp4v"))
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
    with pytest.raises(SinkError, match=".mp4, .mov, .mkv, .avi"):
        open_sink("out.webm")
    with pytest.raises(SinkError, match="bad port"):
        open_sink("http://127.0.0.1:http")
