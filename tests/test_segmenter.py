"""``from fcn_deploy import Segmenter``: the README's example run for real, each kind of input,
sizes, batching, overlay and errors, on the bundled model and frames of the bundled clip.

Needs no PyTorch (marked ``runtime``: .ci/jetson-env runs it on Python 3.8 and 3.10); the
README example and the package import run in a fresh interpreter in which ``import torch`` fails.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from fcn_deploy import FcnDeployError, Segmenter  # noqa: E402
from fcn_deploy.runtime.assets import demo_clip  # noqa: E402
from fcn_deploy.runtime.backends import TensorSpec, open_backend  # noqa: E402
from fcn_deploy.runtime.input_size import resize_frame  # noqa: E402
from fcn_deploy.runtime.model_files import resolve_model_file  # noqa: E402
from fcn_deploy.runtime.visualize import VisualOptions, Visualizer  # noqa: E402
from fcn_deploy.segmenter import _batch_limits  # noqa: E402

pytestmark = pytest.mark.runtime  # needs no PyTorch: .ci/jetson-env runs it on Python 3.8 and 3.10

REPO = Path(__file__).resolve().parents[1]
NO_TORCH = "import sys\nsys.modules['torch'] = None\n"


def clip_frames(count, size=None):
    """The first ``count`` frames of the bundled CamVid clip (480x360), resized to ``size`` (H, W)."""
    cap = cv2.VideoCapture(str(demo_clip()))
    frames = []
    while len(frames) < count:
        ok, frame = cap.read()
        assert ok, "the bundled clip ended early"
        if size is not None:
            frame = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        frames.append(frame)
    cap.release()
    return frames


def python(script, cwd, *args, timeout=120):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=str(cwd), env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def seg():
    with Segmenter("camvid", threads=1) as segmenter:
        yield segmenter


def expected_labels(backend, frame, size):
    """What the labels of ``frame`` fed at ``size`` must be: the backend's, mapped back nearest."""
    labels = backend.infer_labels(resize_frame(frame, size)[None])[0]
    return cv2.resize(labels, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_NEAREST)


# -- the README ------------------------------------------------------------------------------------
def readme_python_example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs_without_torch(tmp_path):
    code = readme_python_example()
    assert "from fcn_deploy import Segmenter" in code and len(code.strip().splitlines()) <= 6
    frame = clip_frames(1)[0]
    cv2.imwrite(str(tmp_path / "frame.png"), frame)
    check = textwrap.dedent(
        """
        import numpy as np
        assert isinstance(labels, np.ndarray) and labels.dtype == np.uint8, labels.dtype
        assert labels.shape == frame.shape[:2], labels.shape
        assert sys.modules.get("torch") is None
        np.save("labels.npy", labels)
        print("classes", len(seg.classes), "seen", len(np.unique(labels)))
        """
    )
    result = python(NO_TORCH + code + check, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    overlay = cv2.imread(str(tmp_path / "overlay.png"))
    assert overlay is not None and overlay.shape == frame.shape
    labels = np.load(str(tmp_path / "labels.npy"))
    with open_backend(resolve_model_file("camvid"), "cpu", threads=1) as backend:
        want = expected_labels(backend, cv2.imread(str(tmp_path / "frame.png")), (360, 480))
    np.testing.assert_array_equal(labels, want)
    assert len(np.unique(labels)) >= 4  # a road scene: road, sky, buildings, trees at least


def test_import_fcn_deploy_stays_light():
    script = NO_TORCH + textwrap.dedent(
        """
        import fcn_deploy
        heavy = [m for m in ("numpy", "cv2", "onnxruntime", "fcn_deploy.segmenter") if m in sys.modules]
        assert not heavy, heavy
        assert {"Segmenter", "export", "train"} <= set(dir(fcn_deploy))
        assert fcn_deploy.Segmenter.__name__ == "Segmenter"
        try:
            fcn_deploy.no_such_name
        except AttributeError as exc:
            print("AttributeError", exc)
        """
    )
    result = python(script, REPO)
    assert result.returncode == 0, result.stderr
    assert "AttributeError module 'fcn_deploy' has no attribute 'no_such_name'" in result.stdout


@pytest.mark.parametrize("call", ["fcn_deploy.export('camvid', 'x.onnx')",
                                  "fcn_deploy.train('fcn8s_resnet18', 'synthetic')"])
def test_export_and_train_without_torch_say_which_extra(tmp_path, call):
    script = NO_TORCH + textwrap.dedent(
        f"""
        import fcn_deploy
        try:
            {call}
        except fcn_deploy.FcnDeployError as exc:
            print("ERROR", exc)
        """
    )
    result = python(script, tmp_path)
    assert result.returncode == 0, result.stderr
    name = re.escape(call.split("(")[0])
    # PyTorch first, then whatever else of the train extra it needs and this environment lacks.
    assert re.match(rf"ERROR {name}\(\) needs PyTorch(, [a-z0-9-]+)* \(pip install -e '\.\[train\]'",
                    result.stdout), result.stdout
    assert not (tmp_path / "x.onnx").exists()


# -- what predict takes and gives ------------------------------------------------------------------
def test_one_frame_gives_its_labels_at_its_size(seg):
    frame = clip_frames(1, (240, 320))[0]
    labels = seg(frame)
    assert labels.shape == (240, 320) and labels.dtype == np.uint8
    assert seg.input_size_for(240, 320) == (360, 480)  # the training scale: CamVid's 360 short side
    np.testing.assert_array_equal(labels, expected_labels(seg.backend, frame, (360, 480)))
    np.testing.assert_array_equal(seg.predict(frame), labels)


def test_a_batch_array_a_list_a_path_and_a_folder(seg, tmp_path):
    frames = clip_frames(3, (120, 160))
    singles = [seg(f) for f in frames]

    stacked = seg(np.stack(frames))
    assert stacked.shape == (3, 120, 160) and stacked.dtype == np.uint8
    for got, want in zip(stacked, singles):
        np.testing.assert_array_equal(got, want)

    cv2.imwrite(str(tmp_path / "b.png"), frames[1])
    mixed = seg([frames[0], str(tmp_path / "b.png"), frames[2][:100, :150].copy()])
    assert isinstance(mixed, list) and [m.shape for m in mixed] == [(120, 160), (120, 160), (100, 150)]
    np.testing.assert_array_equal(mixed[0], singles[0])
    np.testing.assert_array_equal(mixed[1], singles[1])
    np.testing.assert_array_equal(mixed[2], seg(frames[2][:100, :150].copy()))

    np.testing.assert_array_equal(seg(tmp_path / "b.png"), singles[1])

    folder = tmp_path / "images"
    folder.mkdir()
    for name, frame in zip(["c", "a", "b"], frames):
        cv2.imwrite(str(folder / f"{name}.png"), frame)
    (folder / "notes.txt").write_text("not an image")
    result = seg(folder)
    assert isinstance(result, dict) and [p.name for p in result] == ["a.png", "b.png", "c.png"]
    np.testing.assert_array_equal(result[folder / "c.png"], singles[0])
    np.testing.assert_array_equal(result[folder / "a.png"], singles[1])
    assert seg.skipped == []
    assert [p.name for p, _ in seg.stream(folder)] == ["a.png", "b.png", "c.png"]
    assert seg(np.zeros((0, 120, 160, 3), np.uint8)).shape == (0, 120, 160)
    assert seg([]) == []


def test_the_folder_labels_are_the_ones_run_writes(seg, tmp_path):
    """Segmenter and `fcn-deploy run --labels-dir` are the same path: the same files come out."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i, frame in enumerate(clip_frames(2, (180, 320))):
        cv2.imwrite(str(folder / f"f{i}.png"), frame)
    result = python("from fcn_deploy.cli import main; import sys; sys.exit(main(sys.argv[1:]))", tmp_path,
                    "run", "--source", folder, "--labels-dir", tmp_path / "labels", "--output", "none",
                    "--threads", "1")
    assert result.returncode == 0, result.stderr
    for path, labels in seg(folder).items():
        written = cv2.imread(str(tmp_path / "labels" / path.name), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(labels, written)


def test_a_corrupt_image_in_a_folder_is_skipped_and_listed(seg, tmp_path, caplog):
    folder = tmp_path / "images"
    folder.mkdir()
    frame = clip_frames(1, (90, 120))[0]
    cv2.imwrite(str(folder / "a.png"), frame)
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    cv2.imwrite(str(folder / "c.jpg"), frame)
    with caplog.at_level("WARNING", logger="fcn_deploy.segmenter"):
        result = seg(folder)
    assert [p.name for p in result] == ["a.png", "c.jpg"]
    assert seg.skipped == [folder / "b.png"]
    assert "b.png" in caplog.text


# -- sizes ---------------------------------------------------------------------------------------------
def test_input_size_options_follow_the_runtime_rule():
    frame = clip_frames(1, (720, 1280))[0]
    with Segmenter("camvid", threads=1) as rule, Segmenter("camvid", input_size="native", threads=1) as native, \
            Segmenter("camvid", input_size="96x128", threads=1) as forced:
        assert rule.input_size_for(720, 1280) == (360, 640)  # the README's 1280x720 example
        assert native.input_size_for(720, 1280) == (720, 1280)
        assert forced.input_size_for(720, 1280) == (96, 128)
        small = clip_frames(1, (72, 128))[0]
        for segmenter, size in ((native, (72, 128)), (forced, (96, 128))):
            labels = segmenter(small)
            assert labels.shape == (72, 128)
            np.testing.assert_array_equal(labels, expected_labels(segmenter.backend, small, size))
        assert rule(frame).shape == (720, 1280)


# -- batching --------------------------------------------------------------------------------------
class CountingBackend:
    """The real backend, with each infer_labels call's batch size recorded."""

    def __init__(self, backend):
        self._backend = backend
        self.batches = []

    def infer_labels(self, frames):
        self.batches.append(tuple(frames.shape[:3]))
        return self._backend.infer_labels(frames)

    def __getattr__(self, name):
        return getattr(self._backend, name)


def test_frames_of_one_input_size_are_batched_within_the_limit():
    frames = clip_frames(5, (120, 160))
    odd = clip_frames(1, (100, 100))[0]
    with Segmenter("camvid", input_size="native", batch_size=2, threads=1) as seg:
        singles = [seg(f) for f in frames]
        counting = CountingBackend(seg._backend)
        seg._backend = counting
        labels = seg(frames[:2] + [odd] + frames[2:])
        seg._backend = counting._backend
    assert sorted(counting.batches) == [(1, 100, 100), (1, 120, 160), (2, 120, 160), (2, 120, 160)]
    for got, want in zip(labels[:2] + labels[3:], singles):
        np.testing.assert_array_equal(got, want)
    assert labels[2].shape == (100, 100)


def test_a_fixed_batch_graph_gets_full_batches(tmp_path):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(resolve_model_file("camvid")))
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    dim.ClearField("dim_param")
    dim.dim_value = 2
    path = tmp_path / "batch2.onnx"
    onnx.save(model, str(path))
    frames = clip_frames(3, (96, 128))
    with Segmenter(path, input_size="native", threads=1) as seg:
        assert (seg.max_batch, _batch_limits(seg.backend)) == (2, (2, 2))
        counting = CountingBackend(seg._backend)
        seg._backend = counting
        labels = seg(frames)
        seg._backend = counting._backend
        assert counting.batches == [(2, 96, 128), (2, 96, 128)]  # the third frame padded to a batch of 2
        with Segmenter("camvid", input_size="native", threads=1) as free:
            for got, frame in zip(labels, frames):
                np.testing.assert_array_equal(got, free(frame))


def test_batch_limit_of_engines_is_their_profiles_largest_batch():
    """TensorRT cannot run here: the limit is read from the sidecar's profiles and from the
    profile handed to ONNX Runtime's TensorRT provider, as the engines record them."""
    spec = TensorSpec("input", ("N", "H", "W", 3), "uint8")
    profile = {"min": [1, 64, 64, 3], "opt": [2, 360, 640, 3], "max": [4, 1080, 1920, 3]}
    engine = SimpleNamespace(input_spec=spec, sidecar=SimpleNamespace(profiles=[{"input": profile},
                                                                                  {"input": {**profile, "max": [3, 1080, 1920, 3]}}]))
    assert _batch_limits(engine) == (3, 1)
    ort_trt = SimpleNamespace(input_spec=spec, profile_shapes={"min": (1, 64, 64), "opt": (1, 360, 480), "max": (6, 720, 960)})
    assert _batch_limits(ort_trt) == (6, 1)
    assert _batch_limits(SimpleNamespace(input_spec=spec)) == (0, 1)
    # A DLA engine built with --max-batch 2 has a static profile: exactly 2 frames, padded.
    static = {"min": [2, 360, 640, 3], "opt": [2, 360, 640, 3], "max": [2, 360, 640, 3]}
    dla = SimpleNamespace(input_spec=spec, sidecar=SimpleNamespace(profiles=[{"input": static}]))
    assert _batch_limits(dla) == (2, 2)


# -- pictures --------------------------------------------------------------------------------------
def test_overlay_draws_like_run(seg):
    frame = clip_frames(1, (120, 160))[0]
    labels = seg(frame)
    picture = seg.overlay(frame, labels)
    want = Visualizer(seg.classes, seg.palette, VisualOptions(hud=False)).render(frame, labels)
    np.testing.assert_array_equal(picture, want)
    assert picture.shape == frame.shape and picture.dtype == np.uint8
    mask = seg.overlay(frame, labels, mode="mask", legend=False)
    bgr = np.array([c[::-1] for c in seg.palette], np.uint8)
    np.testing.assert_array_equal(mask, bgr[labels])
    assert seg.overlay(frame, labels, mode="side-by-side").shape == (120, 320, 3)
    assert len(seg.classes) == len(seg.palette) == seg.metadata.num_classes == 11
    assert seg.classes[3] == "Road" and seg.metadata.dataset == "camvid"


def test_stats_are_the_class_shares_run_reports(seg):
    frame = clip_frames(1, (120, 160))[0]
    labels = seg(frame)
    stats = seg.stats(labels, zones=["top=0,0,1,0.5"])
    counts = np.bincount(labels.ravel(), minlength=len(seg.classes))
    assert stats["classes"] == {name: int(counts[i]) / labels.size for i, name in enumerate(seg.classes)}
    top = np.bincount(labels[:60].ravel(), minlength=len(seg.classes))
    assert stats["zones"]["top"] == {name: int(top[i]) / (60 * 160) for i, name in enumerate(seg.classes)}
    with pytest.raises(FcnDeployError, match="H x W uint8"):
        seg.stats(labels.astype(np.int32))


# -- errors ------------------------------------------------------------------------------------------
def test_bad_inputs_are_one_clear_error(seg, tmp_path):
    frame = clip_frames(1, (60, 80))[0]
    cases = [
        (frame.astype(np.float32), "is float32; expected uint8 BGR"),
        (frame[..., 0], "has 1 channel(s)"),
        (np.dstack([frame, frame[..., :1]]), "cv2.COLOR_BGRA2BGR"),
        (np.zeros((0, 80, 3), np.uint8), "is empty"),
        (np.zeros((4, 60, 80), np.uint8)[None], "a batch of frames has shape 1x4x60x80; expected BGR uint8 N x H x W x 3"),
        ([frame, "nope.png"], "no such image: nope.png"),
        ([frame, 7], "item 1 is a int"),
        (42, "cannot segment a int"),
        (tmp_path / "missing.png", "no such image"),
    ]
    for value, message in cases:
        with pytest.raises(FcnDeployError) as info:
            seg(value)
        assert message in str(info.value) and "\n" not in str(info.value)
    (tmp_path / "not-an-image.png").write_bytes(b"text")
    with pytest.raises(FcnDeployError, match="cannot read image"):
        seg(tmp_path / "not-an-image.png")
    with pytest.raises(FcnDeployError, match="is a file; give a folder of images"):
        list(seg.stream(tmp_path / "not-an-image.png"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(FcnDeployError, match="holds no images"):
        seg(empty)
    with pytest.raises(FcnDeployError, match="labels must be an H x W uint8 array"):
        seg.overlay(frame, seg(frame).astype(np.int64))
    with pytest.raises(FcnDeployError, match="overlay: .*no_such_option"):
        seg.overlay(frame, seg(frame), no_such_option=1)


def test_bad_models_and_options_are_one_clear_error(tmp_path):
    cases = [
        (dict(model=tmp_path / "missing.onnx"), "model file not found"),
        (dict(model=tmp_path), "is a folder"),
        (dict(model="ck.pt"), "export a checkpoint first"),
        (dict(model="camvid", device="quantum"), "quantum"),
        (dict(model="camvid", input_size="big"), "input_size: bad value 'big'"),
        (dict(model="camvid", batch_size=0), "batch_size must be a positive integer"),
        (dict(model="camvid", threads=0), "threads must be >= 1"),
    ]
    for kwargs, message in cases:
        with pytest.raises(FcnDeployError) as info:
            Segmenter(**kwargs)
        assert message in str(info.value), str(info.value)
    seg = Segmenter("camvid", threads=1)
    seg.close()
    seg.close()
    assert "closed" in repr(seg)
    with pytest.raises(FcnDeployError, match="closed"):
        seg(clip_frames(1, (60, 80))[0])


def test_segmenter_on_the_cpu_takes_the_chosen_engine_as_run_does(monkeypatch):
    from fcn_deploy import Segmenter

    monkeypatch.setenv("FCN_DEPLOY_CPU_ENGINE", "ort-cpu")
    with Segmenter("camvid") as seg:
        assert seg.device == "ort-cpu" and "FCN_DEPLOY_CPU_ENGINE" in seg.engine_choice
    with Segmenter("camvid", device="ort-cpu") as seg:  # named: no choice made
        assert seg.engine_choice is None


def test_video_gives_each_frame_with_the_labels_of_that_frame(seg):
    """Segmenter.video reads a source as `run --source` does; without a decoder that scales,
    each frame's labels are what segmenting its image gives."""
    seen = 0
    for frame, labels in seg.video(str(demo_clip()), decode="ffmpeg"):
        assert frame.index == seen and labels.shape == frame.shape == frame.image.shape[:2]
        assert np.array_equal(labels, seg(frame.image))
        seen += 1
        if seen == 3:
            break
    assert seen == 3
