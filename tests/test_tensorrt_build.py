"""``fcn-deploy build`` without a GPU: --shapes parsing, profile defaults from the metadata,
the version-dependent precision and flags, reading the ONNX (real exports, as the exporter
writes them), and the one-line error where TensorRT is absent (run for real in a subprocess)."""
import os
import subprocess
import sys

import pytest

onnx = pytest.importorskip("onnx")

from fcn_deploy.converters import tensorrt_build as tb  # noqa: E402
from fcn_deploy.converters.tensorrt_shapes import (  # noqa: E402
    ShapeError,
    default_profile,
    parse_shape,
    parse_shapes_arg,
    resolve_profile,
    typical_size,
)
from fcn_deploy.normalization import TORCHVISION_IMAGENET  # noqa: E402
from onnx_helpers import exported_onnx  # noqa: E402
from fcn_deploy.runtime.metadata import LAYOUT_NORMALIZED, LAYOUT_RAW_BGR, ModelMetadata, default_palette  # noqa: E402

pytestmark = pytest.mark.runtime  # needs no PyTorch: .ci/jetson-env runs it on Python 3.8 and 3.10

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- metadata for the profile rules ------------------------------------------------------------
def make_metadata(layout=LAYOUT_RAW_BGR, output="labels", precision="fp32", num_classes=3, **extra) -> ModelMetadata:
    return ModelMetadata(
        model_name="tiny_fcn", num_classes=num_classes, classes=[f"c{i}" for i in range(num_classes)],
        palette=default_palette(num_classes), normalization=TORCHVISION_IMAGENET, input_layout=layout,
        output=output, precision=precision, dataset="camvid", extra=dict(extra),
    )


# -- --shapes -------------------------------------------------------------------------------
def test_parse_shape():
    assert parse_shape("1x3x512x512") == (1, 3, 512, 512)
    assert parse_shape(" 2X360x480x3 ") == (2, 360, 480, 3)
    for bad in ("", "1x3xx5", "1x3x-2", "1x0x4", "axb", "1.5x3"):
        with pytest.raises(ShapeError):
            parse_shape(bad)


def test_parse_shapes_arg_forms():
    name, shapes = parse_shapes_arg("min=1x3x256x256,opt=1x3x512x512,max=4x3x1024x1024")
    assert name is None
    assert shapes == {"min": (1, 3, 256, 256), "opt": (1, 3, 512, 512), "max": (4, 3, 1024, 1024)}
    name, shapes = parse_shapes_arg("input:max=1x8x8x3,min=1x4x4x3,opt=1x8x8x3")
    assert name == "input" and shapes["min"] == (1, 4, 4, 3)
    name, shapes = parse_shapes_arg("input:0:min=1x4,opt=1x4,max=1x4")  # TensorFlow-style names keep their colon
    assert name == "input:0"
    name, shapes = parse_shapes_arg("frames:1x360x480x3")
    assert name == "frames" and shapes["min"] == shapes["opt"] == shapes["max"] == (1, 360, 480, 3)


@pytest.mark.parametrize(
    "text, message",
    [
        ("min=1x3x8x8", "lacks opt, max"),
        ("min=1x3x8x8,opt=1x3x8x8,max=1x3x8x8,opt=1x3x8x8", "gives opt twice"),
        ("min=1x3x8x8,best=1x3x8x8,max=1x3x8x8", "bad --shapes item"),
        ("min=1x3x16x8,opt=1x3x8x8,max=1x3x32x32", "axis 2 needs min <= opt <= max"),
        ("min=1x3x8,opt=1x3x8x8,max=1x3x8x8", "different ranks"),
        ("min=1x3x8x8,opt=1x3xbadx8,max=1x3x8x8", "bad shape"),
        ("just words", "expected"),
    ],
)
def test_parse_shapes_arg_errors(text, message):
    with pytest.raises(ShapeError, match=message):
        parse_shapes_arg(text)


# -- defaults from the metadata ---------------------------------------------------------------
def test_default_profile_follows_the_layout_and_typical_size():
    # CamVid (360x480): the rule gives 360x480 for VGA and 360x640 for 720p and 1080p cameras;
    # the profile spans half the smallest to twice the largest, tuned for the 720p camera.
    raw = default_profile([None, None, None, 3], make_metadata(LAYOUT_RAW_BGR))
    assert raw == {"min": (1, 180, 240, 3), "opt": (1, 360, 640, 3), "max": (1, 720, 1280, 3)}
    chw = default_profile([None, 3, None, None], make_metadata(LAYOUT_NORMALIZED))
    assert chw == {"min": (1, 3, 180, 240), "opt": (1, 3, 360, 640), "max": (1, 3, 720, 1280)}
    fixed_batch = default_profile([2, 3, None, None], make_metadata(LAYOUT_NORMALIZED, input_size=[64, 96]))
    assert fixed_batch == {"min": (2, 3, 32, 42), "opt": (2, 3, 64, 114), "max": (2, 3, 128, 228)}
    tiny = default_profile([None, None, None, 3], make_metadata(input_size=[40, 40]))
    assert tiny["min"] == (1, 32, 32, 3)  # never below 32 pixels


def test_default_profile_covers_the_rule_for_common_cameras():
    from fcn_deploy.runtime.input_size import COMMON_CAMERAS, InputSizer, profile_from_shapes, training_scale

    meta = make_metadata()
    profile = profile_from_shapes([default_profile([None, None, None, 3], meta)], meta.input_layout)
    sizer = InputSizer(None, training_scale(meta), profile)
    for camera in COMMON_CAMERAS + ((360, 480),):
        size = sizer.size_for(camera)
        assert profile.contains(size) and min(size) == 360  # the rule's size, untouched by the profile
    assert profile.contains((720, 1280))  # --input-size native on a 720p camera fits too


def test_default_profile_follows_the_recorded_training_scale():
    from fcn_deploy.runtime.input_size import training_scale_facts

    recipe = {"dataset": "camvid", "crop": [288, 384], "scale_range": [0.5, 0.5]}  # trained on half-size frames
    meta = make_metadata(training_scale=training_scale_facts("camvid", recipe))
    assert typical_size(meta) == (180, 240)
    assert default_profile([None, None, None, 3], meta)["opt"] == (1, 180, 320, 3)


def test_typical_size_sources():
    assert typical_size(None) == (360, 480)
    assert typical_size(make_metadata(input_size=[256, 512])) == (256, 512)
    assert typical_size(make_metadata(calibration={"size": [200, 300]})) == (360, 480)  # camvid's frames win
    untrained = make_metadata(calibration={"size": [200, 300]})
    untrained.dataset = None
    assert typical_size(untrained) == (200, 300)
    cityscapes = make_metadata()
    cityscapes.dataset = "cityscapes"
    assert typical_size(cityscapes) == (1024, 2048)
    assert typical_size(make_metadata(input_size="big")) == (360, 480)


def test_resolve_profile_uses_shapes_or_defaults():
    meta = make_metadata()
    inputs = [("input", (None, None, None, 3))]
    assert resolve_profile(inputs, meta) == {
        "input": {"min": [1, 180, 240, 3], "opt": [1, 360, 640, 3], "max": [1, 720, 1280, 3]}
    }
    given = resolve_profile(inputs, meta, ["min=1x64x64x3,opt=2x128x128x3,max=4x256x256x3"])
    assert given["input"]["opt"] == [2, 128, 128, 3]
    assert resolve_profile([("input", (1, 360, 480, 3))], meta) == {}  # a fixed-shape graph needs no profile


@pytest.mark.parametrize(
    "inputs, args, message",
    [
        ([("input", (None, None, None, 3))], ["other:1x8x8x3"], "graph's inputs are input"),
        ([("input", (None, None, None, 3))], ["min=1x3x8x8,opt=1x3x8x8,max=1x3x8x8"], "axis 3 of input input is fixed at 3"),
        ([("input", (None, None, None, 3))], ["1x8x8"], "has rank 3"),
        ([("input", (None, None, None, 3))], ["1x8x8x3", "input:1x8x8x3"], "twice"),
        ([("a", (None, 3)), ("b", (None, 3))], ["1x3"], "2 dynamic inputs"),
    ],
)
def test_resolve_profile_errors(inputs, args, message):
    with pytest.raises(ShapeError, match=message):
        resolve_profile(inputs, make_metadata(), args)


# -- precision and flags by version ----------------------------------------------------------
@pytest.mark.parametrize(
    "version, onnx_precision, requested, precision, network_flags, builder_flags",
    [
        ((8, 6), "fp32", None, "fp32", ("EXPLICIT_BATCH",), ()),
        ((8, 6), "fp32", "fp16", "fp16", ("EXPLICIT_BATCH",), ("FP16",)),
        ((8, 6), "fp16", None, "fp16", ("EXPLICIT_BATCH",), ("FP16",)),
        ((8, 5), "int8", "int8", "int8", ("EXPLICIT_BATCH",), ("INT8",)),
        ((10, 3), "fp16", "fp16", "fp16", ("STRONGLY_TYPED",), ()),
        ((10, 3), "int8", None, "int8", ("STRONGLY_TYPED",), ()),
        ((11, 4), "fp16", None, "fp16", ("STRONGLY_TYPED",), ()),
        ((11, 4), "fp32", None, "fp32", ("STRONGLY_TYPED",), ()),
    ],
)
def test_plan_precision_and_flags(version, onnx_precision, requested, precision, network_flags, builder_flags):
    plan = tb.plan_build(version, onnx_precision, tb.BuildOptions(precision=requested), {})
    assert (plan.precision, plan.network_flags, plan.builder_flags) == (precision, network_flags, builder_flags)
    assert plan.strongly_typed == (version >= (10, 0))


@pytest.mark.parametrize(
    "version, onnx_precision, requested, message",
    [
        ((10, 3), "fp32", "fp16", "export an FP16 ONNX"),
        ((11, 4), "fp32", "fp16", "strongly typed"),
        ((8, 6), "fp32", "int8", "INT8 Q/DQ ONNX"),
        ((11, 4), "fp16", "int8", "INT8 Q/DQ ONNX"),
        ((8, 6), "int8", "fp16", "cannot change that"),
    ],
)
def test_plan_refuses_what_the_version_cannot_do(version, onnx_precision, requested, message):
    with pytest.raises(tb.EngineBuildError, match=message):
        tb.plan_build(version, onnx_precision, tb.BuildOptions(precision=requested), {})


def test_plan_options():
    profile = {"input": {"min": [1, 8, 8, 3], "opt": [1, 16, 16, 3], "max": [1, 32, 32, 3]}}
    options = tb.BuildOptions(workspace_gb=1.5, opt_level=3, dla_core=0, version_compatible=True, contexts=2)
    plan = tb.plan_build((8, 6), "fp16", options, profile)
    assert plan.builder_flags == ("FP16", "GPU_FALLBACK", "VERSION_COMPATIBLE")
    assert plan.workspace_bytes == int(1.5 * 2**30) and plan.opt_level == 3 and plan.dla_core == 0
    assert plan.profiles == [profile, profile]
    assert set(plan.enum_members()) == {
        ("NetworkDefinitionCreationFlag", "EXPLICIT_BATCH"), ("BuilderFlag", "FP16"), ("BuilderFlag", "GPU_FALLBACK"),
        ("BuilderFlag", "VERSION_COMPATIBLE"), ("MemoryPoolType", "WORKSPACE"), ("DeviceType", "DLA"),
    }
    with pytest.raises(tb.EngineBuildError, match="8.6 or later"):
        tb.plan_build((8, 5), "fp16", tb.BuildOptions(opt_level=3), {})
    with pytest.raises(tb.EngineBuildError, match="8.6 or later"):
        tb.plan_build((8, 5), "fp16", tb.BuildOptions(version_compatible=True), {})
    for bad in (dict(workspace_gb=0), dict(opt_level=6), dict(dla_core=-1), dict(contexts=0), dict(precision="fp8")):
        with pytest.raises(tb.EngineBuildError):
            tb.plan_build((10, 3), "fp16", tb.BuildOptions(**bad), {})


# -- reading the ONNX -------------------------------------------------------------------------
def test_read_onnx(tmp_path):
    facts = tb.read_onnx(exported_onnx(tmp_path / "m.onnx", precision="fp16"))
    assert facts.inputs == [("input", (None, None, None, 3))]
    assert facts.metadata.precision == "fp16" and facts.metadata.model_name == "fcn8s_efficientnet_lite0"
    assert facts.node_labels[0] == "/Cast (Cast)"  # the exporter's own graph: uint8 straight into a Cast
    assert len(facts.sha256) == 64


def test_read_onnx_refuses_the_cpu_int8_scheme(tmp_path):
    """A u8s8 graph (uint8 activations, for ONNX Runtime on CPUs) is refused before TensorRT
    sees it; the symmetric s8s8 one, and an INT8 file from before schemes existed, are read."""
    path = exported_onnx(tmp_path / "m.onnx", precision="int8")
    model = onnx.load(path)
    for scheme, accepted in (("s8s8", True), (None, True), ("u8s8", False)):
        meta = make_metadata(precision="int8", **({"calibration": {"scheme": scheme}} if scheme else {}))
        del model.metadata_props[:]
        for key, value in meta.to_props().items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(model, path)
        if accepted:
            assert tb.read_onnx(path).metadata.precision == "int8"
        else:
            with pytest.raises(tb.EngineBuildError, match="u8s8 INT8 graph for ONNX Runtime on CPUs"):
                tb.read_onnx(path)


def test_read_onnx_refuses_foreign_and_broken_files(tmp_path):
    with pytest.raises(tb.EngineBuildError, match="no fcn-deploy metadata"):
        tb.read_onnx(exported_onnx(tmp_path / "foreign.onnx", metadata=False))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x00not a protobuf at all" * 3)
    with pytest.raises(tb.EngineBuildError, match="cannot read ONNX file"):
        tb.read_onnx(str(broken))


# -- the command where TensorRT is absent (the real thing, in a subprocess) ------------------
def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "fcn_deploy.cli", *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=120
    )


@pytest.mark.skipif(tb.tensorrt_available(), reason="TensorRT is installed here")
def test_build_without_tensorrt_is_one_clear_line(tmp_path):
    onnx_path = exported_onnx(tmp_path / "m.onnx")
    result = run_cli("build", onnx_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fcn-deploy: error: TensorRT's Python package (import tensorrt) is not installed")
    assert "--device tensorrt" in lines[0]  # the ONNX Runtime TensorRT execution provider route
    assert not os.path.exists(tmp_path / "m.engine")


def test_build_rejects_bad_input_in_one_line(tmp_path):
    from fcn_deploy.cli import main

    onnx_path = exported_onnx(tmp_path / "m.onnx")
    for args, message in (
        (["build", onnx_path, "--shapes", "min=1x8"], "lacks opt, max"),
        (["build", str(tmp_path / "missing.onnx")], "ONNX file not found"),
        (["build", onnx_path, "--opt-level", "9"], "--opt-level must be 0 to 5"),
    ):
        result = run_cli(*args)
        assert result.returncode == 1, args
        assert result.stderr.strip().splitlines() == [f"fcn-deploy: error: {result.stderr.split('error: ', 1)[1].strip()}"]
        assert message in result.stderr
    with pytest.raises(SystemExit) as exit_info:
        main(["build", onnx_path, "--fp16", "--int8"])
    assert exit_info.value.code == 2


# -- DLA: static shapes only -----------------------------------------------------------------
def test_dla_builds_a_static_profile():
    dynamic = {"input": {"min": [1, 180, 240, 3], "opt": [1, 360, 480, 3], "max": [1, 720, 960, 3]}}
    static = tb.static_profile_for_dla(dynamic, shapes_given=False)
    assert static == {"input": {"min": [1, 360, 480, 3], "opt": [1, 360, 480, 3], "max": [1, 360, 480, 3]}}
    assert tb.static_profile_for_dla(static, shapes_given=True) == static
    with pytest.raises(tb.EngineBuildError, match=r"--dla needs static shapes .* give --shapes input:1x360x480x3"):
        tb.static_profile_for_dla(dynamic, shapes_given=True)


def test_a_failed_build_leaves_no_folder_it_created(tmp_path):
    """`build --output NEW/x.engine` where TensorRT is missing: one line, and NEW/ is gone again."""
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed: the build would succeed")
    except ImportError:
        pass
    target = tmp_path / "new" / "deeper" / "x.engine"
    code = "import sys\nfrom fcn_deploy.cli import main\nsys.exit(main(sys.argv[1:]))"
    model = os.path.join(REPO, "fcn_deploy", "assets", "camvid.onnx")
    result = subprocess.run([sys.executable, "-c", code, "build", model, "--output", str(target),
                             "--timing-cache", str(tmp_path / "cache" / "t.cache")],
                            capture_output=True, text=True, timeout=120, cwd=str(target.parents[2]))
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []
