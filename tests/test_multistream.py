"""Several streams in one process: batched inference, outputs per stream, failures kept local.

Real sources throughout (video files, image folders, an MJPEG-over-HTTP network stream that
OpenCV's FFmpeg reads), the real tiny exported model in ONNX Runtime, real output files. The
only stand-ins are for hardware a test machine lacks: a synthetic live camera, and a source
that fails mid-run as a camera does when its cable is pulled.
"""
import os
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from fcn_deploy.errors import FcnDeployError
from fcn_deploy.runtime.backends import open_backend
from fcn_deploy.runtime.input_size import (
    InputSizer,
    backend_batch_limit,
    backend_batch_minimum,
    resize_frame,
    shared_input_size,
)
from fcn_deploy.runtime.mjpeg import MjpegServer
from fcn_deploy.runtime.pipeline import MultiStreamPipeline, Pipeline, Stream
from fcn_deploy.runtime.sinks import LabelSink, Sink, VideoFileSink
from fcn_deploy.runtime.sources import Frame, Source, SourceError, open_source
from fcn_deploy.runtime.streams import expand_output, open_streams, parse_source_arg, stream_specs
from fcn_deploy.runtime.visualize import VisualOptions, Visualizer, mosaic
from video_helpers import (PulledCable, count_frames, decoded_frames, read_mjpeg_parts, synthetic_frames,
                           write_video)

REPO = Path(__file__).resolve().parents[1]
SIZES = {"a": ((72, 96), 9), "b": ((48, 64), 14), "c": ((90, 120), 5)}  # (H, W), frames


@pytest.fixture(scope="module")
def backend(tiny_onnx):
    with open_backend(tiny_onnx, "cpu", threads=2) as b:
        yield b


@pytest.fixture()
def clips(tmp_path):
    """Three MJPEG .avi files of different sizes and lengths, and an image folder."""
    paths = {}
    for name, ((h, w), n) in SIZES.items():
        paths[name] = write_video(tmp_path / f"{name}.avi", synthetic_frames(n, h, w), "MJPG")
    return paths


def visualizer_for(backend):
    return Visualizer(backend.metadata.classes, backend.metadata.palette, VisualOptions())


class IndexRecorder(Sink):
    def __init__(self):
        self.indices = []

    def write(self, image, frame):
        self.indices.append(frame.index)


def label_maps(folder):
    return [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(Path(folder).iterdir())]


# -- names and outputs --------------------------------------------------------------------------
def test_stream_names_and_output_patterns(tmp_path):
    assert parse_source_arg("front=rtsp://cam/live", 0) == ("front", "rtsp://cam/live")
    assert parse_source_arg("clip.mp4", 3) == ("3", "clip.mp4")
    assert parse_source_arg("rtsp://cam/live?user=a", 1) == ("1", "rtsp://cam/live?user=a")  # a query is no name
    gst = "nvarguscamerasrc sensor-id=0 ! appsink"
    assert parse_source_arg(gst, 2) == ("2", gst)
    odd = tmp_path / "a=b.mp4"
    odd.write_bytes(b"")
    assert parse_source_arg(str(odd), 0)[0] == "0"  # an existing file named a=b stays a file
    assert expand_output("out_{stream}.mp4", "front") == "out_front.mp4"
    with pytest.raises(FcnDeployError, match="two streams are named 'x'"):
        stream_specs(["x=a.mp4", "x=b.mp4"])


def test_mosaic_tiles_every_stream_and_keeps_its_size_bounded():
    pictures = [np.full((60, 80, 3), 200, np.uint8), None, np.full((30, 40, 3), 100, np.uint8)]
    grid = mosaic(pictures, ["a", "b", "c"], max_width=1000)
    assert grid.shape == (120, 160, 3)  # 2 x 2 tiles of the first picture's size
    assert grid[40, 40].tolist() == [200, 200, 200]  # stream a, below its name
    assert grid[90, 20].tolist() == [100, 100, 100]  # stream c, second row
    assert grid[40, 120].max() < 100  # stream b has no picture yet: a dark tile
    assert mosaic([np.zeros((720, 1280, 3), np.uint8)] * 4, max_width=1920).shape[1] <= 1920


# -- batching ---------------------------------------------------------------------------------
def test_three_files_of_different_sizes_give_every_frame_in_order_as_single_runs_do(tmp_path, backend, clips):
    streams = [Stream(open_source(str(clips[n])), [VideoFileSink(tmp_path / f"out_{n}.avi", 10)],
                      LabelSink(tmp_path / "labels" / n), n) for n in SIZES]
    pipeline = MultiStreamPipeline(streams, backend, visualizer_for(backend), input_size=(64, 80))
    report = pipeline.run()
    for stream in streams:
        stream.source.close()

    assert report.failed == [] and report.frames_dropped == 0
    assert [s.processed for s in report.streams] == [n for _, n in SIZES.values()]
    assert max(report.batch_sizes) == 3  # frames of all three streams went in one call
    assert sum(size * count for size, count in report.batch_sizes.items()) == report.frames_rendered == 28
    for name, ((h, w), n) in SIZES.items():
        assert count_frames(tmp_path / f"out_{name}.avi") == n
        written = label_maps(tmp_path / "labels" / name)
        assert [m.shape for m in written] == [(h, w)] * n  # labels back at each stream's own size
        # Identical to a single-stream run of the same file at the same input size, in order.
        single = tmp_path / "single" / name
        Pipeline(open_source(str(clips[name])), backend, None, [], LabelSink(single), input_size=(64, 80)).run()
        for one, many in zip(label_maps(single), written):
            np.testing.assert_array_equal(one, many)
        # ... and to the backend on the decoded frames themselves.
        for frame, labels in zip(decoded_frames(clips[name]), written):
            expected = backend.infer_labels(resize_frame(frame, (64, 80))[None])[0]
            np.testing.assert_array_equal(cv2.resize(expected, (w, h), interpolation=cv2.INTER_NEAREST), labels)
    text = report.format()
    assert "batches:" in text and "stream b (" in text and "14 processed" in text


def test_streams_of_different_sizes_meet_at_the_models_reference_size(backend):
    sizer = InputSizer.for_backend(backend, None, announce=False)
    assert shared_input_size(sizer, [(48, 64), (48, 64)]) == (48, 64)  # same cameras: the rule's own size
    native = InputSizer.for_backend(backend, "native", announce=False)
    with pytest.raises(FcnDeployError, match="native cannot batch streams of different sizes"):
        shared_input_size(native, [(48, 64), (72, 96)])
    forced = InputSizer.for_backend(backend, (40, 40), announce=False)
    assert shared_input_size(forced, [(48, 64), (72, 96)]) == (40, 40)


class SyntheticCamera(Source):
    """A live source without a camera: frames at a steady ``fps``, faster than the model."""

    live = True
    description = "synthetic camera"

    def __init__(self, fps=2000.0, total=300, size=(72, 96)):
        self.fps, self.total = fps, total
        self._images = synthetic_frames(8, *size)
        self._index = 0
        self._next = time.perf_counter()
        self.size = (size[1], size[0])

    def read(self):
        if self._index >= self.total:
            return None
        self._next += 1.0 / self.fps
        time.sleep(max(0.0, self._next - time.perf_counter()))
        frame = Frame(self._images[self._index % 8], self._index, None, time.perf_counter())
        self._index += 1
        return frame


def test_a_fast_live_camera_beside_a_file_drops_only_its_own_frames(tmp_path, backend, clips):
    camera, file_ = IndexRecorder(), IndexRecorder()
    streams = [Stream(SyntheticCamera(), [camera], name="cam"), Stream(open_source(str(clips["b"])), [file_], name="file")]
    report = MultiStreamPipeline(streams, backend, visualizer_for(backend)).run()
    cam, file_stats = report.streams
    assert file_.indices == list(range(14)) and file_stats.dropped == 0  # every file frame, in order
    assert cam.frames_in == 300 and cam.dropped > 0 and cam.processed + cam.dropped == 300
    assert camera.indices == sorted(camera.indices) and camera.indices[-1] == 299  # the newest is shown
    assert 2 in report.batch_sizes



def test_a_stream_failing_mid_run_is_reported_and_the_others_finish(tmp_path, backend, clips):
    streams = [Stream(open_source(str(clips["a"])), [VideoFileSink(tmp_path / "out_a.avi", 10)], name="a"),
               Stream(PulledCable(clips["b"], 4), [VideoFileSink(tmp_path / "out_b.avi", 10)], name="b"),
               Stream(open_source(str(clips["c"])), [VideoFileSink(tmp_path / "out_c.avi", 10)], name="c")]
    pipeline = MultiStreamPipeline(streams, backend, visualizer_for(backend), input_size=(48, 64))
    report = pipeline.run()
    a, b, c = report.streams
    assert (a.processed, c.processed) == (9, 5) and a.error is None and c.error is None
    assert b.processed == 4 and "device disconnected" in b.error and report.failed == [b]
    assert isinstance(pipeline.stream_errors["b"], SourceError)
    assert [count_frames(tmp_path / f"out_{n}.avi") for n in "abc"] == [9, 4, 5]  # all playable
    assert "FAILED: camera on a pulled cable" in report.format()


def test_a_network_stream_that_drops_is_reconnected(tmp_path, backend, clips):
    """A real MJPEG-over-HTTP stream, read by OpenCV's FFmpeg, whose server goes away and
    comes back on the same port: the stream reconnects and goes on; the file beside it is whole."""
    server = MjpegServer("127.0.0.1", 0)
    port = server.address[1]
    state = {"server": server, "stop": False}

    def publish():
        frames = synthetic_frames(8, 48, 64)
        i = 0
        while not state["stop"]:
            ok, jpeg = cv2.imencode(".jpg", frames[i % 8])
            state["server"].publish(jpeg.tobytes())
            i += 1
            time.sleep(1 / 60)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()

    def outage():
        time.sleep(0.8)
        state["server"].close()
        time.sleep(1.0)
        state["server"] = MjpegServer("127.0.0.1", port)

    uri = f"http://127.0.0.1:{port}/stream.mjpg"
    try:
        streams, _ = open_streams(stream_specs([f"net={uri}", f"file={clips['a']}"]), ["none"])
        assert streams[0].reopen is not None and streams[1].reopen is None
        threading.Thread(target=outage, daemon=True).start()
        report = MultiStreamPipeline(streams, backend, None, input_size=(48, 64), max_frames=120).run()
    finally:
        state["stop"] = True
        state["server"].close()
    net, file_ = report.streams
    assert net.reconnects >= 1 and net.error is None and net.frames_in == 120
    assert file_.processed == 9


def test_an_engine_that_cannot_take_the_batch_is_refused_at_start(backend, clips):
    # A TensorRT engine's batch limit lives in its sidecar's profile (batch 1 by default).
    sidecar = types.SimpleNamespace(profiles=[{"frames": {"min": [1, 180, 240, 3], "opt": [1, 360, 480, 3],
                                                           "max": [1, 720, 960, 3]}}])
    engine = types.SimpleNamespace(input_spec=types.SimpleNamespace(name="frames", shape=(-1, -1, -1, 3)),
                                   sidecar=sidecar, metadata=backend.metadata)
    assert backend_batch_limit(engine) == 1 and backend_batch_limit(backend) is None
    streams = [Stream(open_source(str(clips[n])), name=n) for n in "ab"]
    with pytest.raises(FcnDeployError, match=r"at most 1 frame.*--max-batch 2"):
        MultiStreamPipeline(streams, engine, None)
    sidecar.profiles[0]["frames"]["max"][0] = 4
    assert backend_batch_limit(engine) == 4


def test_a_static_batch_model_gets_padded_batches_when_streams_end(tmp_path, tiny_onnx, backend, clips):
    """A model with a fixed batch of 3 (as a DLA engine built with --max-batch 3 is) fed by
    three files of different lengths: once the shortest ends, partial batches are padded to 3
    and only the real frames' labels are kept."""
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(tiny_onnx))
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    dim.ClearField("dim_param")
    dim.dim_value = 3
    fixed_path = tmp_path / "batch3.onnx"
    onnx.save(model, str(fixed_path))
    with open_backend(fixed_path, "cpu", threads=2) as fixed:
        assert (backend_batch_minimum(fixed), backend_batch_limit(fixed)) == (3, 3)
        streams = [Stream(open_source(str(clips[n])), [], LabelSink(tmp_path / "labels" / n), n) for n in SIZES]
        report = MultiStreamPipeline(streams, fixed, None, input_size=(64, 80)).run()
        for stream in streams:
            stream.source.close()
    assert report.failed == [] and [s.processed for s in report.streams] == [n for _, n in SIZES.values()]
    assert min(report.batch_sizes) < 3  # streams c and a ended first: partial batches ran
    for name, ((h, w), n) in SIZES.items():
        written = label_maps(tmp_path / "labels" / name)
        assert len(written) == n
        for frame, labels in zip(decoded_frames(clips[name]), written):
            expected = backend.infer_labels(resize_frame(frame, (64, 80))[None])[0]
            np.testing.assert_array_equal(cv2.resize(expected, (w, h), interpolation=cv2.INTER_NEAREST), labels)


def test_build_max_batch_sets_the_default_profiles_batch():
    from fcn_deploy.converters.tensorrt_shapes import resolve_profile

    profile = resolve_profile([("frames", [None, 3, None, None])], None, (), max_batch=4)
    assert [profile["frames"][k][0] for k in ("min", "opt", "max")] == [1, 4, 4]


# -- the CLI --------------------------------------------------------------------------------
def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e.pop("DISPLAY", None)
    return e


def wait_for_line(process, text, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = process.stderr.readline()
        if not line or text in line:
            return
    raise AssertionError(f"no {text!r} in stderr")


def test_run_with_three_sources_writes_per_stream_outputs_a_mosaic_and_serves_them(tmp_path, tiny_onnx, clips):
    port = MjpegServer("127.0.0.1", 0)
    free = port.address[1]
    port.close()
    args = ["--model", tiny_onnx, "--source", f"front={clips['a']}", "--source", str(clips["b"]),
            "--source", str(clips["c"]), "--loop", "--max-frames", "150", "--input-size", "48x64",
            "--output", "out_{stream}.avi", "--output", "mosaic.avi", "--output", f"http://127.0.0.1:{free}",
            "--labels-dir", "labels"]
    process = subprocess.Popen([sys.executable, "-m", "fcn_deploy.cli", "run", *map(str, args)], cwd=tmp_path,
                               env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_line(process, "watch the streams at")
        mosaic_parts = read_mjpeg_parts(f"http://127.0.0.1:{free}/stream.mjpg", 2, timeout=30)
        stream_parts = read_mjpeg_parts(f"http://127.0.0.1:{free}/front", 2, timeout=30)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 0, err
    big = cv2.imdecode(np.frombuffer(mosaic_parts[0], np.uint8), cv2.IMREAD_COLOR)
    one = cv2.imdecode(np.frombuffer(stream_parts[0], np.uint8), cv2.IMREAD_COLOR)
    assert one.shape == (72, 96, 3) and big.shape[1] == 2 * 96  # stream a itself; a 2 x 2 mosaic
    for name in ("front", "1", "2"):
        assert count_frames(tmp_path / f"out_{name}.avi") == 150
        assert len(list((tmp_path / "labels" / name).iterdir())) == 150
    assert count_frames(tmp_path / "mosaic.avi") > 0
    assert "stream front (" in out and "batches:" in out


def test_run_refuses_a_stream_that_will_not_open_naming_it(tmp_path, tiny_onnx, clips):
    result = subprocess.run([sys.executable, "-m", "fcn_deploy.cli", "run", "--model", str(tiny_onnx),
                             "--source", str(clips["a"]), "--source", "rear=missing.mp4", "--output", "o_{stream}.avi"],
                            cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].endswith("stream rear: no such file or folder: missing.mp4")
    assert "Traceback" not in result.stderr and not list(tmp_path.glob("o_*"))  # nothing half-made


def test_ctrl_c_finalises_every_streams_video(tmp_path, tiny_onnx, clips):
    args = ["--model", tiny_onnx, "--source", str(clips["a"]), "--source", str(clips["b"]), "--loop",
            "--input-size", "48x64", "--output", "out_{stream}.mp4", "--output", "mosaic.mp4"]
    process = subprocess.Popen([sys.executable, "-m", "fcn_deploy.cli", "run", *map(str, args)], cwd=tmp_path,
                               env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not all((tmp_path / f"out_{n}.mp4").exists() for n in "01"):
        time.sleep(0.2)
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "stopped by SIGINT" in out
    for path in (tmp_path / "out_0.mp4", tmp_path / "out_1.mp4", tmp_path / "mosaic.mp4"):
        assert count_frames(path) > 0  # finalised: the container's index is written, the file plays
    reported = {line.split()[1]: int(line.split("(")[1].split()[0]) for line in out.splitlines()
                if line.startswith("wrote out_")}
    assert reported == {"out_0.mp4": count_frames(tmp_path / "out_0.mp4"),
                        "out_1.mp4": count_frames(tmp_path / "out_1.mp4")}


def test_cli_default_batch_timeout_is_the_pipelines():
    from fcn_deploy.commands import run
    from fcn_deploy.runtime import pipeline

    assert run.DEFAULT_BATCH_TIMEOUT_MS == pipeline.DEFAULT_BATCH_TIMEOUT_MS


def test_pipeline_benchmark_compares_streams_processes_and_batched_model_only(tmp_path, tiny_onnx):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "pipeline.py"), "--model", str(tiny_onnx), "--size", "48x64",
         "--frames", "4", "--rounds", "1", "--streams", "1,2", "--outputs", "none", "--json", str(out)],
        capture_output=True, text=True, timeout=180, cwd=tmp_path, env=env(),
    )
    assert result.returncode == 0, result.stderr
    import json

    data = json.loads(out.read_text())
    for count in ("1", "2"):
        row = data["streams"][count]["none"]
        assert row["model_only_fps"][0] > 0 and row["pipeline_fps"][0] > 0 and row["separate_processes_fps"][0] > 0
        assert 0 < row["slowest_stream_over_mean"][0] <= 1
    assert data["streams"]["2"]["none"]["batch_sizes"].get("2", 0) >= 1
    assert "2 processes" in result.stdout
