"""The input-size rule: frames go in at the scale the model learned, labels come back at theirs.

The rule and the profile arithmetic are checked on their own; then a real exported model
(a tiny FCN-8s "trained" on 48x64 synthetic frames, exported by the real exporter, run by
ONNX Runtime) goes through the real pipeline, ``fcn-deploy run`` and ``fcn-deploy eval``;
and a TensorRT engine built by the real builder (with its real sidecar) and opened by the
real TensorRT backend, over the stand-in TensorRT of test_tensorrt_api_names (no GPU here),
shows that the rule never asks an engine for a size outside its profile.
"""
from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest

from fcn_deploy.cli import main
from fcn_deploy.errors import FcnDeployError
from fcn_deploy.runtime.input_size import (
    NATIVE,
    InputSizer,
    Profile,
    TrainingScale,
    backend_profile,
    dataset_image_size,
    parse_input_size,
    profile_from_shapes,
    resize_frame,
    rule_size,
    training_scale,
    training_scale_facts,
)
from fcn_deploy.runtime.metadata import ModelMetadata, default_palette
from fcn_deploy.normalization import TORCHVISION_IMAGENET

BUNDLED_RECIPE = {"dataset": "camvid", "crop": [288, 384], "scale_range": [0.75, 1.5], "val_size": None}
CAMVID = TrainingScale((360, 480), 1.0, "camvid", "the model's training scale, camvid frames 360x480")


def metadata(dataset="camvid", **extra) -> ModelMetadata:
    return ModelMetadata(model_name="m", num_classes=2, classes=["a", "b"], palette=default_palette(2),
                         normalization=TORCHVISION_IMAGENET, dataset=dataset, extra=dict(extra))


# -- the facts and the reference ---------------------------------------------------------------
def test_the_bundled_models_recipe_gives_camvids_frame_as_the_reference():
    facts = training_scale_facts("camvid", BUNDLED_RECIPE)
    assert facts == {"dataset": "camvid", "image_size": [360, 480], "crop": [288, 384], "scale_range": [0.75, 1.5],
                     "eval_size": None, "reference_scale": 1.0, "reference_size": [360, 480]}
    json.dumps(facts)  # stored as JSON in the ONNX metadata and the engine sidecar
    scale = training_scale(metadata(training_scale=facts))
    assert scale.reference_size == (360, 480) and scale.scale == 1.0 and "camvid frames 360x480" in scale.why


@pytest.mark.parametrize(
    "dataset, recipe, reference, scale",
    [
        # a scale range that leaves out 1: the nearest end of it is the scale objects were learned at
        ("camvid", {"scale_range": [0.5, 0.75]}, [270, 360], 0.75),
        ("camvid", {"scale_range": [1.25, 2.0]}, [450, 600], 1.25),
        # validated at a fixed size: that scale (its short side over the frames')
        ("camvid", {"val_size": [180, 240], "scale_range": [0.25, 1.0]}, [180, 240], 0.5),
        ("synthetic", {"dataset_options": {"size": [48, 64]}}, [48, 64], 1.0),
        ("voc_aug", {}, [375, 500], 1.0),
        # a folder of the user's own images: no size known, no scale learned that this can know
        ("folder", {"crop": [320, 320]}, None, None),
        ("folder", {"val_size": [256, 320]}, [256, 320], None),
        (None, None, None, None),  # an untrained zoo export
    ],
)
def test_reference_from_the_facts(dataset, recipe, reference, scale):
    facts = training_scale_facts(dataset, recipe)
    assert facts["reference_size"] == reference and facts["reference_scale"] == scale


def test_files_without_the_facts_fall_back_to_their_datasets_frames():
    assert training_scale(metadata("camvid")).reference_size == (360, 480)  # the bundled ONNX until re-exported
    assert training_scale(metadata("CamVid-subset")).reference_size == (360, 480)
    assert training_scale(metadata(None, input_size=[200, 300])).reference_size == (200, 300)
    assert training_scale(metadata(None)).reference_size is None
    assert training_scale(metadata("folder")).reference_size is None
    assert training_scale(None).reference_size is None
    assert dataset_image_size("cityscapes") == (1024, 2048)


# -- the rule ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "frame, size",
    [((480, 640), (360, 480)), ((720, 1280), (360, 640)), ((1080, 1920), (360, 640)), ((360, 480), (360, 480)),
     ((720, 960), (360, 480)), ((240, 320), (360, 480)), ((1280, 720), (640, 360)), ((768, 1366), (360, 640))],
)
def test_the_short_side_goes_to_the_references_and_the_aspect_ratio_is_kept(frame, size):
    assert rule_size(frame, (360, 480)) == size
    assert abs(size[1] / size[0] - frame[1] / frame[0]) < 0.01


def test_native_forced_and_own_dataset():
    assert InputSizer(None, CAMVID).size_for((720, 1280)) == (360, 640)
    assert InputSizer(NATIVE, CAMVID).size_for((720, 1280)) == (720, 1280)
    assert InputSizer((300, 400), CAMVID).size_for((720, 1280)) == (300, 400)
    assert InputSizer(None, TrainingScale(None)).size_for((720, 1280)) == (720, 1280)  # learned no scale
    # The training dataset's own frames are the training scale, whatever their size (VOC's vary).
    own = InputSizer(None, TrainingScale((375, 500), 1.0, "voc"), own_dataset=True)
    assert own.size_for((500, 333)) == (500, 333) and own.summary() == "each frame's own size"
    half = InputSizer(None, TrainingScale((180, 240), 0.5, "camvid"), own_dataset=True)
    assert half.size_for((360, 480)) == (180, 240)


def test_parse_input_size():
    assert parse_input_size(None) is None and parse_input_size("") is None and parse_input_size("auto") is None
    assert parse_input_size("native") == NATIVE and parse_input_size("Native") == NATIVE
    assert parse_input_size("360x640") == (360, 640)
    for bad in ("big", "360", "0x10", "360x640x3", "-1x2"):
        with pytest.raises(FcnDeployError, match=r"--input-size: bad value .* expected native or HEIGHTxWIDTH"):
            parse_input_size(bad)


def test_each_decision_is_said_once(caplog):
    sizer = InputSizer(None, CAMVID)
    with caplog.at_level(logging.INFO, logger="fcn_deploy.runtime.input_size"):
        for _ in range(3):
            sizer.size_for((720, 1280))
        sizer.size_for((360, 480))
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "1280x720 frames -> input 360x640 (HxW): the model's training scale, camvid frames 360x480; "
        "--input-size native keeps them",
        "480x360 frames fed at their own size: the model's training scale, camvid frames 360x480; "
        "--input-size native keeps them",
    ]


def test_resize_frame_shrinks_by_area_and_keeps_an_exact_fit():
    frame = np.zeros((4, 4, 3), np.uint8)
    frame[::2, ::2] = 200  # one bright pixel in each 2x2 block: area averaging gives 50 everywhere
    assert resize_frame(frame, (4, 4)) is frame
    np.testing.assert_array_equal(resize_frame(frame, (2, 2)), np.full((2, 2, 3), 50, np.uint8))
    assert resize_frame(frame, (8, 6)).shape == (8, 6, 3)


# -- engine profiles ---------------------------------------------------------------------------
PROFILE = Profile((180, 240), (360, 640), (720, 1280))


@pytest.mark.parametrize(
    "size, fitted",
    [((360, 640), (360, 640)), ((1080, 1920), (720, 1280)), ((100, 150), (180, 270)),
     ((1440, 1920), (720, 960)), ((2000, 100), (720, 240)), ((100, 2000), (180, 1280))],
)
def test_a_size_outside_the_profile_is_fitted_keeping_the_aspect_ratio_where_it_can(size, fitted):
    assert PROFILE.fit(size) == fitted and PROFILE.contains(fitted)


def test_sizer_within_a_profile(caplog):
    small = Profile((64, 64), (300, 400), (300, 400))
    with caplog.at_level(logging.INFO, logger="fcn_deploy.runtime.input_size"):
        assert InputSizer(None, CAMVID, small).size_for((720, 1280)) == (225, 400)
        assert InputSizer(NATIVE, CAMVID, small).size_for((480, 640)) == (300, 400)
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING"]
    assert "not 360x640, to fit the engine's profile (min 64x64, opt 300x400, max 300x400; fcn-deploy build --shapes" \
        in caplog.records[0].getMessage()
    with pytest.raises(FcnDeployError, match=r"input size 360x480 is outside the engine's profile \(min 64x64, opt "
                                             r"300x400, max 300x400\).*fcn-deploy build --shapes"):
        InputSizer((360, 480), CAMVID, small)


def test_profile_from_engine_and_provider_shapes():
    nhwc = [{"min": [1, 180, 240, 3], "opt": [1, 360, 640, 3], "max": [1, 720, 1280, 3]},
            {"min": [1, 200, 240, 3], "opt": [1, 360, 640, 3], "max": [2, 720, 1000, 3]}]  # two contexts
    assert profile_from_shapes(nhwc, "NHWC_BGR_UINT8") == Profile((200, 240), (360, 640), (720, 1000))
    nchw = [{"min": [1, 3, 180, 240], "opt": [1, 3, 360, 640], "max": [1, 3, 720, 1280]}]
    assert profile_from_shapes(nchw, "NCHW_FLOAT32") == PROFILE
    assert profile_from_shapes([], "NHWC_BGR_UINT8") is None
    ort_shapes = {"min": (1, 180, 240), "opt": (1, 360, 640), "max": (1, 720, 1280)}  # the TensorRT provider's
    assert Profile.from_nhw(ort_shapes) == PROFILE and PROFILE.to_shapes() == ort_shapes


# -- a real exported model through the pipeline, run and eval ----------------------------------
@pytest.fixture(scope="module")
def trained_tiny(tmp_path_factory):
    """A tiny FCN-8s checkpoint "trained" on 48x64 synthetic frames (random scale 0.75-1.5),
    exported by the real exporter: its metadata records that scale."""
    import torch

    from fcn_deploy.converters.onnx_export import export
    from fcn_deploy.converters.resolve import resolve_model
    from fcn_deploy.data import build_dataset
    from fcn_deploy.models import build_model
    from fcn_deploy.training.checkpoint import atomic_save, make_checkpoint

    folder = tmp_path_factory.mktemp("trained_tiny")
    dataset = build_dataset("synthetic", None, "train", size=(48, 64), count=1)
    torch.manual_seed(0)
    model = build_model("fcn8s_resnet18", dataset.num_classes, width=16)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    recipe = {"dataset": "synthetic", "dataset_options": {"size": [48, 64]}, "crop": [40, 40],
              "scale_range": [0.75, 1.5], "val_size": None}
    checkpoint = folder / "tiny.pt"
    atomic_save(make_checkpoint(model, {"width": 16}, dataset, "synthetic", {"mean_iu": 0.5}, 1, recipe, 1.0), checkpoint)
    onnx_path = folder / "tiny.onnx"
    export(resolve_model(str(checkpoint)), str(onnx_path))
    return onnx_path


@pytest.fixture(scope="module")
def backend(trained_tiny):
    from fcn_deploy.runtime.backends import open_backend

    with open_backend(trained_tiny, "cpu", threads=1) as b:
        yield b


def frames(n, height, width):
    from video_helpers import synthetic_frames

    return synthetic_frames(n, height, width)


def test_the_export_records_the_training_scale(backend):
    facts = backend.metadata.extra["training_scale"]
    assert facts["image_size"] == [48, 64] and facts["crop"] == [40, 40] and facts["scale_range"] == [0.75, 1.5]
    assert facts["reference_size"] == [48, 64]
    assert backend_profile(backend) is None  # ONNX Runtime on the CPU takes any size


def _run_pipeline(tmp_path, backend, images, input_size=None):
    from fcn_deploy.runtime.pipeline import Pipeline
    from fcn_deploy.runtime.sinks import LabelSink, NullSink
    from fcn_deploy.runtime.sources import open_source

    folder = tmp_path / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        cv2.imwrite(str(folder / f"f{i:02d}.png"), img)
    source = open_source(str(folder))
    labels = tmp_path / f"labels_{input_size}"
    report = Pipeline(source, backend, None, [NullSink()], LabelSink(labels), input_size=input_size).run()
    source.close()
    return report, [cv2.imread(str(labels / f"f{i:02d}.png"), cv2.IMREAD_UNCHANGED) for i in range(len(images))]


def _expected(backend, image, size):
    small = backend.infer_labels(resize_frame(image, size)[None])[0]
    return cv2.resize(small, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)


@pytest.mark.parametrize("input_size, size", [(None, (48, 64)), ("native", (96, 128)), ((40, 40), (40, 40))])
def test_pipeline_feeds_the_rules_size_and_labels_come_back_at_the_frames(tmp_path, backend, input_size, size):
    images = frames(3, 96, 128)
    report, labels = _run_pipeline(tmp_path, backend, images, input_size)
    assert report.frames_rendered == 3
    for image, lab in zip(images, labels):
        assert lab.shape == (96, 128)
        np.testing.assert_array_equal(lab, _expected(backend, image, size))


def test_pipeline_sizes_each_frame_size_on_its_own(tmp_path, backend):
    images = frames(2, 96, 128) + frames(2, 72, 160)  # 4:3 and 20:9 frames in one folder
    _, labels = _run_pipeline(tmp_path, backend, images)
    for image, lab in zip(images, labels):
        size = (48, 64) if image.shape[0] == 96 else (48, 107)
        np.testing.assert_array_equal(lab, _expected(backend, image, size))


def test_run_says_once_what_size_it_uses_and_why(tmp_path, trained_tiny, caplog):
    folder = tmp_path / "in"
    folder.mkdir()
    for i, img in enumerate(frames(3, 96, 128)):
        cv2.imwrite(str(folder / f"{i}.png"), img)
    with caplog.at_level(logging.INFO):
        code = main(["run", "--model", str(trained_tiny), "--source", str(folder), "--labels-dir", str(tmp_path / "l"),
                     "--threads", "1"])
    assert code == 0
    said = [r.getMessage() for r in caplog.records if r.name == "fcn_deploy.runtime.input_size"]
    assert said == ["128x96 frames -> input 48x64 (HxW): the model's training scale, synthetic frames 48x64; "
                    "--input-size native keeps them"]
    assert cv2.imread(str(tmp_path / "l" / "0.png"), cv2.IMREAD_UNCHANGED).shape == (96, 128)


def test_run_rejects_a_bad_input_size(tmp_path, trained_tiny, capsys):
    code = main(["run", "--model", str(trained_tiny), "--source", str(tmp_path), "--input-size", "wide"])
    assert code != 0 and "--input-size: bad value 'wide'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def synthetic_eval(backend):
    """Synthetic test scenes at 96x128 (twice the training frames' size) and the model's scores
    on them by hand: the network at each scale, labels mapped back by nearest neighbour."""
    from fcn_deploy.data import build_dataset
    from fcn_deploy.metrics import ConfusionMatrix

    dataset = build_dataset("synthetic", None, "test", size=(96, 128), count=3)
    by_hand = {}
    for factor in (0.5, 1.0):
        cm = ConfusionMatrix(dataset.num_classes, dataset.ignore_index)
        for image, label in (dataset[i] for i in range(len(dataset))):
            size = (round(96 * factor), round(128 * factor))
            cm.update(_expected(backend, np.ascontiguousarray(image[..., ::-1]), size), label)
        by_hand[factor] = cm.scores()["mean_iu"]
    return by_hand


def _eval(capsys, *args):
    code = main(["eval", *args, "--json", "--threads", "1"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def test_eval_scales_scores_each_input_scale(trained_tiny, synthetic_eval, capsys):
    report = _eval(capsys, "--model", str(trained_tiny), "--dataset", "synthetic", "--dataset-option", "size=(96,128)",
                   "--dataset-option", "count=3", "--split", "test", "--scales", "0.5,1")
    assert [r["scale"] for r in report["scales"]] == [0.5, 1.0]
    assert [r["input_size"] for r in report["scales"]] == ["48x64", "96x128"]
    for record in report["scales"]:
        assert record["mean_iu"] == pytest.approx(synthetic_eval[record["scale"]], abs=1e-12)
        assert record["images"] == 3


def test_eval_defaults_to_the_rule_on_its_own_dataset_to_each_images_size(trained_tiny, synthetic_eval, capsys):
    # The images are synthetic, as in training, so they are at the training scale: fed as they are.
    report = _eval(capsys, "--model", str(trained_tiny), "--dataset", "synthetic", "--dataset-option", "size=(96,128)",
                   "--dataset-option", "count=3", "--split", "test")
    assert report["input_size"] == "96x128" and report["mean_iu"] == pytest.approx(synthetic_eval[1.0], abs=1e-12)
    forced = _eval(capsys, "--model", str(trained_tiny), "--dataset", "synthetic", "--dataset-option", "size=(96,128)",
                   "--dataset-option", "count=3", "--split", "test", "--input-size", "48x64")
    assert forced["input_size"] == "48x64" and forced["mean_iu"] == pytest.approx(synthetic_eval[0.5], abs=1e-12)


def test_eval_scales_text_table_and_errors(trained_tiny, capsys):
    code = main(["eval", "--model", str(trained_tiny), "--dataset", "synthetic", "--dataset-option", "count=2",
                 "--split", "test", "--scales", "1,2", "--threads", "1"])
    out = capsys.readouterr().out
    assert code == 0 and "scale  input (HxW)" in out and "96x128" in out and "192x256" in out
    for bad in ("0,1", "x", "1,,2"):
        assert main(["eval", "--model", str(trained_tiny), "--dataset", "synthetic", "--scales", bad]) != 0
        assert "--scales: bad factor" in capsys.readouterr().err


# -- an engine: the real builder, sidecar and backend over the stand-in TensorRT ----------------
def _engine(tmp_path, shapes=()):
    tb = pytest.importorskip("fcn_deploy.converters.tensorrt_build")
    api = pytest.importorskip("test_tensorrt_api_names")
    from fcn_deploy.runtime.backends import tensorrt as trt_backend
    from onnx_helpers import exported_onnx

    device = api.FakeDevice()
    trt, _ = api.fake("10.3.0", device)
    onnx_path = exported_onnx(tmp_path / "m.onnx")
    result = tb.ensure_engine(onnx_path, options=tb.BuildOptions(shapes=list(shapes)), trt=trt, cuda=device)
    return trt_backend.TensorRTBackend(result.engine_path, "cuda", trt=trt, cuda=device)


def test_the_default_engine_profile_holds_the_rules_sizes_for_a_720p_and_1080p_camera(tmp_path):
    from fcn_deploy.runtime.engine_cache import read_sidecar

    backend = _engine(tmp_path)
    with backend:
        assert read_sidecar(backend.path).profiles  # the real sidecar the builder wrote
        assert backend_profile(backend) == Profile((180, 240), (360, 640), (720, 1280))
        for camera, size in (((720, 1280), (360, 640)), ((1080, 1920), (360, 640)), ((480, 640), (360, 480))):
            _, labels = _run_pipeline(tmp_path / f"{camera[0]}", backend, frames(1, *camera))
            assert labels[0].shape == camera
            np.testing.assert_array_equal(labels[0], _expected(backend, frames(1, *camera)[0], size))
        # 1080p frames at their own size are outside the profile: fitted to its largest 16:9 size.
        _, labels = _run_pipeline(tmp_path / "native", backend, frames(1, 1080, 1920), NATIVE)
        np.testing.assert_array_equal(labels[0], _expected(backend, frames(1, 1080, 1920)[0], (720, 1280)))


def test_a_narrow_engine_profile_clamps_the_rule_and_refuses_a_forced_size(tmp_path, caplog):
    from fcn_deploy.runtime.pipeline import Pipeline

    backend = _engine(tmp_path, ["min=1x64x64x3,opt=1x240x320x3,max=1x240x320x3"])
    with backend:
        with caplog.at_level(logging.INFO, logger="fcn_deploy.runtime.input_size"):
            _, labels = _run_pipeline(tmp_path, backend, frames(2, 720, 1280))
        np.testing.assert_array_equal(labels[0], _expected(backend, frames(1, 720, 1280)[0], (180, 320)))
        said = [r.getMessage() for r in caplog.records]
        assert len(said) == 1 and "not 360x640, to fit the engine's profile (min 64x64, opt 240x320, max 240x320" in said[0]
        with pytest.raises(FcnDeployError, match="input size 360x480 is outside the engine's profile"):
            Pipeline(None, backend, None, input_size=(360, 480))


# -- --val-size sets the recorded training scale, and says so ------------------------------------------
def test_val_size_says_it_changes_the_training_scale_in_help_and_when_it_runs(tmp_path):
    """`train --val-size 180x240` on CamVid records a training scale of 180x240, so `run` feeds
    frames at half CamVid's size. --help says it, and a run says it at its start, with the size the
    checkpoint's recipe gives the exporter (the same function), and what it would be without."""
    import subprocess
    import sys

    from fcn_deploy.cli import build_parser
    from fcn_deploy.training.checkpoint import load_checkpoint
    from fcn_deploy.training.config import make_config, val_size_note

    train_help = next(a for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions
                      if "--val-size" in a.option_strings).help
    assert "training scale" in train_help and "run and eval" in train_help

    note = val_size_note(make_config("fcn8s_efficientnet_lite0", "camvid", val_size=(180, 240)))
    assert "180x240" in note and "without --val-size: 360x480" in note
    clamped = val_size_note(make_config("fcn8s_efficientnet_lite0", "camvid", val_size=(180, 240),
                                        scale_range=(0.75, 1.5)))
    assert "records: 270x360" in clamped and "clamped into --scale-range 0.75-1.5" in clamped
    assert val_size_note(make_config("fcn8s_efficientnet_lite0", "camvid", val_size=(360, 480))) is None
    assert val_size_note(make_config("fcn8s_efficientnet_lite0", "camvid")) is None

    run = subprocess.run(
        [sys.executable, "-m", "fcn_deploy.cli", "train", "--model", "fcn8s_resnet18", "--width", "16",
         "--dataset", "synthetic", "--dataset-option", "size=(48,64)", "--pretrained-backbone", "none",
         "--epochs", "1", "--max-iters", "1", "--batch-size", "2", "--crop", "32x32", "--threads", "1",
         "--val-size", "24x32", "--no-progress", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    said = [line for line in run.stderr.splitlines() if "--val-size 24x32" in line]
    assert len(said) == 1 and "records: 24x32" in said[0] and "without --val-size: 48x64" in said[0], run.stderr
    recipe = load_checkpoint(tmp_path / "run" / "best.pt")["recipe"]
    assert training_scale_facts("synthetic", recipe)["reference_size"] == [24, 32]
