"""The threaded video pipeline, end to end with a real tiny model in ONNX Runtime.

The model is a width-16 FCN-8s/ResNet-18 exported by the real exporter (pre-processing and
arg-max folded in), with its zero-initialised score layers given random weights so that the
label maps are not constant and parity checks mean something.
"""
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from fcn_deploy.runtime.backends import BackendError, open_backend
from fcn_deploy.runtime.pipeline import Pipeline
from fcn_deploy.runtime.sinks import LabelSink, NullSink, Sink, SinkError, VideoFileSink
from fcn_deploy.runtime.sources import Frame, Source, SourceError, open_source
from fcn_deploy.runtime.visualize import VisualOptions, Visualizer
from onnx_helpers import graph_failing_off_8x8
from video_helpers import count_frames, decoded_frames, synthetic_frames, write_video


@pytest.fixture(scope="module")
def backend(tiny_onnx):
    with open_backend(tiny_onnx, "cpu", threads=2) as b:
        yield b


def visualizer_for(backend, **options):
    return Visualizer(backend.metadata.classes, backend.metadata.palette, VisualOptions(**options))


@pytest.mark.parametrize("fourcc,suffix", [("mp4v", ".mp4"), ("MJPG", ".avi")])
def test_file_frames_in_equal_frames_out_and_labels_match_the_backend(tmp_path, backend, fourcc, suffix):
    src = write_video(tmp_path / f"in{suffix}", synthetic_frames(23), fourcc)
    out = tmp_path / f"out{suffix}"
    source = open_source(str(src))
    video = VideoFileSink(out, fps=source.fps)
    labels = LabelSink(tmp_path / "labels")
    report = Pipeline(source, backend, visualizer_for(backend), [video], labels, queue_size=2).run()
    source.close()

    assert report.frames_captured == report.frames_rendered == 23
    assert report.frames_dropped == 0
    assert count_frames(out) == 23
    assert cv2.VideoCapture(str(out)).get(cv2.CAP_PROP_FPS) == pytest.approx(15.0)
    # The pipeline's label maps are exactly the backend's on the same decoded frames, in order.
    names = sorted(p.name for p in (tmp_path / "labels").iterdir())
    assert names == [f"{i:06d}.png" for i in range(23)]
    for i, frame in enumerate(decoded_frames(src)):
        written = cv2.imread(str(tmp_path / "labels" / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(written, backend.infer_labels(frame[None])[0])
    assert all(report.stages[s].count == 23 for s in ("capture", "inference", "render", "write"))
    assert report.fps > 0 and "FPS end to end" in report.format()


def test_image_folder_to_label_pngs_named_after_the_images(tmp_path, backend):
    folder = tmp_path / "images"
    folder.mkdir()
    frames = synthetic_frames(5, 48, 64) + synthetic_frames(2, 50, 70)  # two sizes: dynamic H, W
    names = [f"seq_{i:03d}" for i in range(len(frames))]
    for name, img in zip(names, frames):
        cv2.imwrite(str(folder / f"{name}.png"), img)
    (folder / "notes.txt").write_text("not an image")

    source = open_source(str(folder))
    labels = LabelSink(tmp_path / "labels")
    report = Pipeline(source, backend, None, [NullSink()], labels, input_size=(32, 48)).run()

    assert report.frames_rendered == len(frames)
    written = sorted(p.stem for p in (tmp_path / "labels").glob("*.png"))
    assert written == names
    for name, img in zip(names, frames):
        lab = cv2.imread(str(tmp_path / "labels" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert lab.shape == img.shape[:2] and lab.dtype == np.uint8  # scaled back to the image's size
        small = backend.infer_labels(cv2.resize(img, (48, 32), interpolation=cv2.INTER_AREA)[None])[0]
        np.testing.assert_array_equal(lab, cv2.resize(small, img.shape[1::-1], interpolation=cv2.INTER_NEAREST))


def test_loop_and_max_frames(tmp_path, backend):
    src = write_video(tmp_path / "in.avi", synthetic_frames(6), "MJPG")
    source = open_source(str(src), loop=True)
    video = VideoFileSink(tmp_path / "out.mp4", fps=source.fps)
    report = Pipeline(source, backend, visualizer_for(backend), [video], max_frames=15).run()
    assert report.frames_rendered == 15 and report.stopped_by == "--max-frames 15"
    assert count_frames(tmp_path / "out.mp4") == 15


class SyntheticCamera(Source):
    """A live source without a camera: frames at a steady ``fps``, like a real one.

    Needed because there is no camera on a test machine; everything downstream (the model
    included) is real. It runs faster than the model, so the pipeline must drop frames.
    """

    live = True
    description = "synthetic camera"

    def __init__(self, fps=400.0, total=150, size=(240, 320)):
        self.fps, self.total = fps, total
        self._images = synthetic_frames(8, *size)
        self._index = 0
        self._next = time.perf_counter()

    def read(self):
        if self._index >= self.total:
            return None
        self._next += 1.0 / self.fps
        time.sleep(max(0.0, self._next - time.perf_counter()))
        frame = Frame(self._images[self._index % 8], self._index, None, time.perf_counter())
        self._index += 1
        return frame


class IndexRecorder(Sink):
    def __init__(self):
        self.indices = []

    def write(self, image, frame):
        self.indices.append(frame.index)


def test_live_source_drops_the_oldest_frames_instead_of_falling_behind(backend):
    # 100k fps into a model that takes milliseconds per 240x320 frame: the camera outruns it by
    # three orders of magnitude, so dropping is certain rather than a race (at 400 fps the
    # tiny test model sometimes kept up).
    camera = SyntheticCamera(fps=100_000.0)
    recorder = IndexRecorder()
    report = Pipeline(camera, backend, visualizer_for(backend), [recorder], queue_size=2).run()
    assert report.frames_captured == 150
    assert report.frames_dropped > 0
    assert report.frames_rendered + report.frames_dropped == 150
    assert recorder.indices == sorted(recorder.indices)  # order kept
    # Dropping the *oldest* keeps the newest: the last camera frame is always shown.
    assert recorder.indices[-1] == 149
    assert "dropped" in report.format()


def test_stop_from_another_thread_finalises_the_video(tmp_path, backend):
    src = write_video(tmp_path / "in.mp4", synthetic_frames(10), "mp4v")
    source = open_source(str(src), loop=True)  # endless: only stop() ends it
    out = tmp_path / "out.mp4"
    pipeline = Pipeline(source, backend, visualizer_for(backend), [VideoFileSink(out, source.fps)])
    threading.Timer(0.5, pipeline.stop, args=("window closed",)).start()
    report = pipeline.run()
    assert report.stopped_by == "window closed"
    assert report.frames_rendered > 0
    assert count_frames(out) == report.frames_rendered


def test_a_stage_error_stops_the_run_closes_the_sinks_and_is_raised(tmp_path, backend):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, img in enumerate(synthetic_frames(4)):
        cv2.imwrite(str(folder / f"{i}.png"), img)
    source = open_source(str(folder))
    labels = LabelSink(tmp_path / "labels")
    (tmp_path / "labels" / "2.png").write_bytes(b"the user's file")  # appears after the sink opened
    out = tmp_path / "out.avi"
    with pytest.raises(SinkError, match="2.png already exists"):
        Pipeline(source, backend, visualizer_for(backend), [VideoFileSink(out, 10)], labels).run()
    assert count_frames(out) == 2  # everything before the failing frame is in a playable file
    assert (tmp_path / "labels" / "2.png").read_bytes() == b"the user's file"


def test_a_corrupt_image_is_skipped_and_the_others_go_through(tmp_path, backend):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, img in enumerate(synthetic_frames(4)):
        cv2.imwrite(str(folder / f"{i}.png"), img)
    (folder / "2b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    source = open_source(str(folder))
    out = tmp_path / "out.avi"
    report = Pipeline(source, backend, visualizer_for(backend), [VideoFileSink(out, 10)]).run()
    assert report.frames_rendered == 4 and count_frames(out) == 4
    assert source.skipped == [folder / "2b.png"]  # for the caller to report (`run` exits 1 naming it)


def _label_maps(folder):
    return [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(folder.iterdir())]


def test_two_frames_in_flight_give_the_same_labels_in_order(tmp_path, backend, tiny_onnx):
    src = write_video(tmp_path / "in.avi", synthetic_frames(23), "MJPG")
    runs = {}
    with open_backend(tiny_onnx, "cpu", threads=2, in_flight=2) as overlapping:
        for name, model in (("one", backend), ("two", overlapping)):
            source = open_source(str(src))
            labels = LabelSink(tmp_path / name)
            video = VideoFileSink(tmp_path / f"{name}.avi", fps=source.fps)
            runs[name] = Pipeline(source, model, visualizer_for(model), [video], labels).run()
            source.close()
        # The stage submitted frame k + 1 before collecting frame k, and never held more.
        assert overlapping.peak_outstanding == 2 and overlapping.running == 0
    assert backend.in_flight == 1 and overlapping.in_flight == 2
    assert runs["two"].frames_rendered == 23 and count_frames(tmp_path / "two.avi") == 23
    names = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert names == [f"{i:06d}.png" for i in range(23)]
    for one, two in zip(_label_maps(tmp_path / "one"), _label_maps(tmp_path / "two")):
        np.testing.assert_array_equal(one, two)
    inference = runs["two"].stages["inference"]
    assert inference.count == 23 and 0 < inference.total <= runs["two"].wall_seconds


def test_a_frame_failing_in_flight_stops_the_run_cleanly(tmp_path, backend):
    path = graph_failing_off_8x8(tmp_path / "fails.onnx", backend.metadata.to_props())
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(12):  # the seventh image is 9x9: its run fails inside ONNX Runtime
        size = 9 if i == 6 else 8
        cv2.imwrite(str(folder / f"{i:02d}.png"), synthetic_frames(1, size, size)[0])
    with open_backend(path, "cpu", threads=2, in_flight=2) as failing:
        labels = LabelSink(tmp_path / "labels")
        out = tmp_path / "out.avi"
        pipeline = Pipeline(open_source(str(folder)), failing, visualizer_for(failing),
                            [VideoFileSink(out, 10)], labels, input_size="native")
        with pytest.raises(BackendError, match="ONNX Runtime failed on a frame"):
            pipeline.run()
        assert pipeline.report.stopped_by == "error"
        assert failing.running == 0  # nothing left running once run() returns
        written = sorted(p.name for p in (tmp_path / "labels").iterdir())
        # Frame 6 fails after frame 5 went into the two-frame output queue, so frames 0-2
        # were written by then; nothing after the failing frame is.
        assert written == [f"{i:02d}.png" for i in range(len(written))] and 3 <= len(written) <= 6
        assert count_frames(out) == pipeline.report.frames_rendered  # a playable file
        assert failing.infer(synthetic_frames(1, 8, 8)[0][None]).shape == (1, 8, 8)  # still usable


def test_runtime_modules_do_not_import_torch():
    code = (
        "import sys\n"
        "import fcn_deploy.runtime.pipeline, fcn_deploy.runtime.sources, fcn_deploy.runtime.sinks\n"
        "import fcn_deploy.runtime.visualize, fcn_deploy.runtime.mjpeg, fcn_deploy.runtime.assets\n"
        "import fcn_deploy.commands.run\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_pipeline_benchmark_script_runs(tmp_path, tiny_onnx):
    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(repo / "benchmarks" / "pipeline.py"), "--model", str(tiny_onnx), "--size", "72x96",
         "--frames", "4", "--rounds", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    import json

    data = json.loads(out.read_text())
    assert data["size"] == [72, 96] and len(data["model_only_fps"]) == 2
    for output in ("none", "mp4"):
        assert data["pipelines"][output]["median_fps"] > 0 and len(data["pipelines"][output]["ratios"]) == 1
    assert "% of model-only" in result.stdout
