"""`fcn-deploy check`: what TensorRT's ONNX parser of 8.5, 8.6, 10 and 11 would refuse.

Real exports (every zoo model, three precisions, both upsampling forms, --logits) must pass;
graphs made to break one rule each must fail with the line that names it.
"""
from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fcn_deploy.converters.tensorrt_check import (
    RELEASES,
    TensorRTConformanceError,
    check_onnx,
    parse_releases,
    release_for_version,
    require_tensorrt_conformance,
)
from fcn_deploy.cli import main
from fcn_deploy.errors import FcnDeployError
from fcn_deploy.models import available_models
from fcn_deploy.runtime.assets import bundled_asset

from onnx_helpers import REPO, run_cli, scene_frames, small_options

MATRICES = REPO.parent / "shared" / "tensorrt-api" / "onnx-parser"
PREVIOUS_BUNDLED = "7f21581:fcn_deploy/assets/camvid.onnx"  # exported Transpose-then-Cast


# --------------------------------------------------------------------------------------------
# The operator table
# --------------------------------------------------------------------------------------------
@pytest.mark.skipif(not MATRICES.is_dir(), reason=f"the parser's operator matrices are not here ({MATRICES})")
def test_operator_table_is_the_matrices():
    """The shipped module is what the tool makes from the markdown matrices, unedited."""
    spec = importlib.util.spec_from_file_location("make_table", REPO / "tools" / "make_tensorrt_operator_table.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.render(MATRICES) == (REPO / "converters" / "tensorrt_operators.py").read_text(encoding="utf-8")

    from fcn_deploy.converters import tensorrt_operators as table

    assert table.OPSETS == {"8.5": (None, 17), "8.6": (None, 17), "10.0": (9, 20)}
    assert table.CAST_DOWN["8.5"] == {"INT64": "INT32", "DOUBLE": "FP32"} and table.CAST_DOWN["10.0"] == {"DOUBLE": "FP32"}
    assert table.OPERATORS["8.5"]["Hardmax"][0] is False and table.OPERATORS["10.0"]["Hardmax"][0] is True
    assert "UINT8" not in table.OPERATORS["8.5"]["Cast"][1] and "UINT8" in table.OPERATORS["8.6"]["Cast"][1]


def test_releases_by_name_and_version():
    assert parse_releases([]) is None
    assert parse_releases(["11,8.5", "10.3"]) == ("8.5", "10", "11")
    with pytest.raises(FcnDeployError, match="--tensorrt 9: choose from 8.5, 8.6, 10, 11"):
        parse_releases(["9"])
    assert [release_for_version(v) for v in [(8, 5), (8, 6), (10, 3), (11, 4)]] == ["8.5", "8.6", "10", "11"]


# --------------------------------------------------------------------------------------------
# Real exports
# --------------------------------------------------------------------------------------------
# (model, precision, export options): one of each backbone family at each precision, the
# other upsampling form and --logits by default; the rest of the zoo in the slow suite.
_FAST = {
    ("fcn8s_resnet18", "fp32"), ("fcn8s_resnet18", "fp16"), ("fcn8s_resnet18", "int8"),
    ("fcn8s_vgg16", "fp32"), ("fcn8s_vgg16", "fp16"), ("fcn8s_vgg16", "int8"),
    ("fcn8s_efficientnet_lite0", "fp16"),
}
_VARIANTS = [
    ("fcn8s_resnet18", "int8", {"upsampling": "deconv"}),
    ("fcn8s_vgg16", "fp32", {"upsampling": "deconv"}),
    ("fcn8s_resnet18", "fp32", {"fold_argmax": False, "fold_preprocessing": False}),
    ("fcn8s_vgg16", "fp16", {"fold_argmax": False, "fold_preprocessing": False}),
    ("fcn8s_efficientnet_lite0", "int8", {"upsampling": "deconv"}),
    ("fcn8s_efficientnet_lite0", "fp32", {"fold_argmax": False, "fold_preprocessing": False}),
]
EXPORTS = [
    pytest.param(name, precision, {}, id=f"{name}-{precision}",
                 marks=() if (name, precision) in _FAST else pytest.mark.slow)
    for name in available_models() for precision in ("fp32", "fp16", "int8")
] + [
    pytest.param(name, precision, options, id=f"{name}-{precision}-" + "-".join(f"{k}={v}" for k, v in options.items()),
                 marks=() if i < 4 else pytest.mark.slow)
    for i, (name, precision, options) in enumerate(_VARIANTS)
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Export on first use, once per module: ``exported(name, precision, options) -> path``."""
    torch = pytest.importorskip("torch")
    from fcn_deploy.converters.onnx_export import export
    from fcn_deploy.converters.resolve import resolve_model

    folder = tmp_path_factory.mktemp("exports")
    frames = list(scene_frames(4, 48, 64))
    done = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest on a busy 2-core machine

    def get(name, precision, options):
        key = (name, precision, tuple(sorted(options.items())))
        if key not in done:
            resolved = resolve_model(name, num_classes=11, **small_options(name))
            out = folder / f"{name}_{precision}_{len(done)}.onnx"
            calib = frames if precision == "int8" else None
            done[key] = export(resolved, str(out), precision=precision, calib_frames=calib, **options).path
        return done[key]

    yield get
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name, precision, options", EXPORTS)
def test_exports_are_accepted_by_every_release(exported, name, precision, options):
    report = check_onnx(exported(name, precision, options))
    assert report.ok, "\n".join(report.lines())
    assert report.releases == RELEASES and report.opset == 17
    assert not report.problems


def test_bundled_graph_is_accepted_by_every_release():
    report = check_onnx(bundled_asset("camvid.onnx"))
    assert report.ok, "\n".join(report.lines())
    assert not report.problems


@pytest.fixture
def previous_bundled(tmp_path) -> Path:
    """The bundled graph before the exporter cast the uint8 input first (from git history)."""
    try:
        data = subprocess.run(
            ["git", "-C", str(REPO), "show", PREVIOUS_BUNDLED], capture_output=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        pytest.skip(f"this checkout has no {PREVIOUS_BUNDLED}")
    path = tmp_path / "camvid_previous.onnx"
    path.write_bytes(data)
    return path


def test_previous_bundled_graph_is_refused_for_its_uint8_transpose(previous_bundled):
    """The review's finding: /Transpose of the uint8 input before /Cast builds nowhere from 8.6 on."""
    result = run_cli(["check", previous_bundled])
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    intermediate = [line for line in lines if "TensorRT 8.6, 10, 11:" in line and "makes UINT8 tensor" in line]
    assert len(intermediate) == 1, result.stdout
    assert "node /Transpose (Transpose)" in intermediate[0] and "/Transpose_output_0" in intermediate[0]
    assert "accepts UINT8 only as a graph input or output" in intermediate[0]
    assert "a uint8 input must go straight into a Cast" in intermediate[0]
    # The uint8 input feeding anything but a Cast is refused by every release, 8.5 included.
    assert any(l.startswith(f"{previous_bundled}: TensorRT 8.5, 8.6, 10, 11: node /Transpose") for l in lines)
    assert all("/Transpose" in line for line in lines[:-1]), result.stdout  # nothing else is wrong with it
    # The verdict comes last: every release refuses it, and for which rule.
    assert lines[-1].startswith(f"{previous_bundled}: refused by TensorRT 8.5, 8.6, 10, 11: "), lines[-1]
    assert lines[-1].endswith("; no release accepts it") and "uint8" in lines[-1]


# --------------------------------------------------------------------------------------------
# Graphs that break one rule each
# --------------------------------------------------------------------------------------------
def _save(tmp_path, nodes, inputs, outputs, initializers=(), opset=17, name="bad.onnx", domains=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    model = helper.make_model(graph, opset_imports=opsets)
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _value(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def _lines(path, *args):
    report = check_onnx(path, *args)
    return report, report.lines()


def test_uint8_reshape_before_the_cast(tmp_path):
    path = _save(
        tmp_path,
        [helper.make_node("Reshape", ["frame", "shape"], ["flat"], name="reshape"),
         helper.make_node("Cast", ["flat"], ["out"], name="cast", to=TensorProto.FLOAT)],
        [_value("frame", TensorProto.UINT8, [1, 4, 4, 3])],
        [_value("out", TensorProto.FLOAT, [1, 48])],
        [numpy_helper.from_array(np.array([1, 48], np.int64), "shape")],
    )
    report, lines = _lines(path)
    assert not report.ok
    assert lines == [
        "bad.onnx: TensorRT 8.5, 8.6, 10, 11: node reshape (Reshape) takes the UINT8 graph input 'frame'; TensorRT runs "
        "UINT8 only through a Cast to FP32 or FP16 (a uint8 input must go straight into a Cast)",
        "bad.onnx: TensorRT 8.6, 10, 11: node reshape (Reshape) makes UINT8 tensor flat inside the graph; TensorRT's "
        "parser accepts UINT8 only as a graph input or output (a uint8 input must go straight into a Cast)",
    ]
    assert [p.node for p in report.errors] == ["reshape", "reshape"] and {p.rule for p in report.errors} == {"uint8"}


def test_uint8_casts_only_to_and_from_float(tmp_path):
    path = _save(
        tmp_path,
        [helper.make_node("Cast", ["frame"], ["wide"], name="to_int", to=TensorProto.INT32),
         helper.make_node("Cast", ["wide"], ["out"], name="back", to=TensorProto.UINT8)],
        [_value("frame", TensorProto.UINT8, [2, 3])],
        [_value("out", TensorProto.UINT8, [2, 3])],
    )
    lines = check_onnx(path).lines()
    assert "bad.onnx: TensorRT 8.5, 8.6, 10, 11: node to_int (Cast) casts UINT8 to INT32; TensorRT casts UINT8 only " \
           "to and from FP32 or FP16" in lines
    assert any("node back (Cast) casts INT32 to UINT8" in line for line in lines)


def test_operators_outside_the_matrix_or_the_onnx_domain(tmp_path):
    path = _save(
        tmp_path,
        [helper.make_node("Hardmax", ["x"], ["h"], name="hardmax"),
         helper.make_node("FusedGelu", ["h"], ["y"], name="gelu", domain="com.microsoft")],
        [_value("x", TensorProto.FLOAT, [2, 5])],
        [_value("y", TensorProto.FLOAT, [2, 5])],
        domains=["com.microsoft"],
    )
    report, lines = _lines(path)
    assert "bad.onnx: TensorRT 8.5, 8.6: node hardmax (Hardmax): the parser does not support Hardmax" in lines
    assert not any("hardmax" in line and "10" in line.split(":")[1] for line in lines)  # Y in the 10.0 matrix
    gelu = [line for line in lines if "gelu" in line]
    assert gelu == [
        "bad.onnx: TensorRT 8.5, 8.6, 10, 11: node gelu (FusedGelu) is operator FusedGelu of domain com.microsoft, "
        "not an ONNX operator: the parser imports it only as a TensorRT plugin named FusedGelu"
    ]
    assert {p.rule for p in report.errors} == {"operator"}


def _qdq_graph(tmp_path, zero_point, name="qdq.onnx"):
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "scale")]
    inputs = ["x", "scale"]
    if zero_point is not None:
        inits.append(numpy_helper.from_array(zero_point, "zp"))
        inputs.append("zp")
    return _save(
        tmp_path,
        [helper.make_node("QuantizeLinear", inputs, ["q"], name="quant"),
         helper.make_node("DequantizeLinear", ["q"] + inputs[1:], ["y"], name="dequant")],
        [_value("x", TensorProto.FLOAT, [1, 3])],
        [_value("y", TensorProto.FLOAT, [1, 3])],
        inits,
        name=name,
    )


def test_qdq_zero_points(tmp_path):
    assert check_onnx(_qdq_graph(tmp_path, np.array(0, np.int8), "good.onnx")).ok

    lines = check_onnx(_qdq_graph(tmp_path, np.array(3, np.int8))).lines()
    assert lines == [
        f"qdq.onnx: TensorRT 8.5, 8.6, 10, 11: node {n} has a non-zero zero point (zp); TensorRT takes only symmetric "
        "quantization (zero points 0): export with --int8-scheme s8s8"
        for n in ("quant (QuantizeLinear)", "dequant (DequantizeLinear)")
    ]

    lines = check_onnx(_qdq_graph(tmp_path, np.array(0, np.uint8))).lines()
    assert any(l.startswith("qdq.onnx: TensorRT 8.5, 8.6: node quant (QuantizeLinear) quantizes to UINT8; the parser takes "
                            "only INT8 Q/DQ") for l in lines), lines
    assert any("TensorRT 10, 11: node dequant (DequantizeLinear) dequantizes UINT8; the parser takes only INT8, FP8, INT4"
               in l for l in lines), lines

    report = check_onnx(_qdq_graph(tmp_path, None))
    assert [line.split(": node")[0] for line in report.lines()] == ["qdq.onnx: TensorRT 8.5, 8.6"] * 2
    assert "has no zero point; TensorRT 8.x's parser needs one" in report.lines()[0]


def test_inputs_that_must_be_initializers(tmp_path):
    """Squeeze's axes: every matrix. ReduceSum's axes: only the 10.0 one says so. A Constant counts."""
    path = _save(
        tmp_path,
        [helper.make_node("Squeeze", ["x", "axes"], ["s"], name="squeeze"),
         helper.make_node("ReduceSum", ["s", "axes"], ["r"], name="sum"),
         helper.make_node("Constant", [], ["const_axes"], name="const", value=numpy_helper.from_array(np.array([0], np.int64))),
         helper.make_node("Unsqueeze", ["r", "const_axes"], ["y"], name="unsqueeze")],
        [_value("x", TensorProto.FLOAT, [1, 4, 5]), _value("axes", TensorProto.INT64, [1])],
        [_value("y", TensorProto.FLOAT, None)],
        opset=13,
    )
    report, lines = _lines(path)
    assert "bad.onnx: TensorRT 8.5, 8.6, 10, 11: node squeeze (Squeeze) takes `axes` from axes, which the graph " \
           "computes; the parser needs it as an initializer (or a Constant) (10 and 11 per the 10.0 matrix, the " \
           "nearest published)" in lines
    assert [l.split(": node")[0] for l in lines if "node sum" in l] == ["bad.onnx: TensorRT 10, 11"]
    assert not any("unsqueeze" in line for line in lines)
    assert {p.rule for p in report.errors} == {"initializer"}


def test_data_types_follow_the_matrix_and_its_narrowing(tmp_path):
    """ArgMax of INT64: 8.5 lists FP32/FP16 only; 8.6 lists INT32 and narrows INT64 to it; 10.0
    lists INT64. A Gather's int64 indices and a Reshape's shape are not data inputs."""
    path = _save(
        tmp_path,
        [helper.make_node("ArgMax", ["x"], ["a"], name="argmax", axis=1),
         helper.make_node("Gather", ["table", "a"], ["g"], name="gather", axis=0),
         helper.make_node("Reshape", ["g", "shape"], ["y"], name="reshape")],
        [_value("x", TensorProto.INT64, [2, 5])],
        [_value("y", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(np.arange(5, dtype=np.float32), "table"),
         numpy_helper.from_array(np.array([2], np.int64), "shape")],
    )
    assert check_onnx(path).lines() == [
        "bad.onnx: TensorRT 8.5: node argmax (ArgMax) takes INT64 tensor x; the parser's ArgMax takes FP32, FP16"
    ]


def test_opset_outside_the_matrices(tmp_path):
    relu = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    io = ([_value("x", TensorProto.FLOAT, [1])], [_value("y", TensorProto.FLOAT, [1])])
    lines = check_onnx(_save(tmp_path, relu, *io, opset=21)).lines()
    assert lines == [
        "bad.onnx: TensorRT 8.5, 8.6: opset 21 is newer than the parser's operator matrix covers (up to opset 17); "
        "export at an opset it covers (fcn-deploy exports at 17)",
        "bad.onnx: TensorRT 10, 11: opset 21 is newer than the parser's operator matrix covers (up to opset 20); "
        "export at an opset it covers (fcn-deploy exports at 17) (10 and 11 per the 10.0 matrix, the nearest published)",
    ]
    lines = check_onnx(_save(tmp_path, relu, *io, opset=8, name="old.onnx")).lines()
    assert [l.split(": opset")[0] for l in lines] == ["old.onnx: TensorRT 10, 11"]


def test_resize_modes_the_matrix_lists(tmp_path):
    path = _save(
        tmp_path,
        [helper.make_node("Resize", ["x", "", "scales"], ["y"], name="resize", mode="cubic")],
        [_value("x", TensorProto.FLOAT, [1, 1, 2, 2])],
        [_value("y", TensorProto.FLOAT, [1, 1, 4, 4])],
        [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")],
    )
    assert [l.split(" (10 and")[0] for l in check_onnx(path).lines()] == [
        "bad.onnx: TensorRT 8.5, 8.6, 10, 11: node resize (Resize) has mode 'cubic'; the parser supports nearest, linear"
    ]


# --------------------------------------------------------------------------------------------
# The DLA
# --------------------------------------------------------------------------------------------
def _fp16_net(tmp_path, dims=("N", 3, 8, 8)):
    """FP16 convolution -> ArgMax: the convolution can run on the DLA, the ArgMax cannot."""
    weight = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float16), "w")
    return _save(
        tmp_path,
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("ArgMax", ["c"], ["y"], name="argmax", axis=1, keepdims=0)],
        [_value("x", TensorProto.FLOAT16, list(dims))],
        [_value("y", TensorProto.INT64, None)],
        [weight],
        name="net.onnx",
    )


def test_dla_needs_one_fixed_shape(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _fp16_net(tmp_path).name
    assert main(["check", path, "--dla"]) == 1
    out = capsys.readouterr().out
    assert "net.onnx: TensorRT 8.5, 8.6, 10: graph input 'x' is Nx3x8x8 (dynamic) and the DLA has no dynamic " \
           "dimensions: give it one fixed shape, --shapes x:1x3x8x8 (min = opt = max)" in out

    assert main(["check", path, "--dla", "--shapes", "min=1x3x8x8,opt=2x3x8x8,max=4x3x8x8"]) == 1
    out = capsys.readouterr().out
    assert "graph input 'x' has the profile min=1x3x8x8 opt=2x3x8x8 max=4x3x8x8; the DLA needs min = opt = max " \
           "(--shapes x:2x3x8x8)" in out


def test_dla_notes_the_layers_that_fall_back(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _fp16_net(tmp_path).name
    assert main(["check", path, "--dla", "--shapes", "2x3x8x8"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "net.onnx: TensorRT 8.5, 8.6, 10: note: DLA: node argmax (ArgMax) would run on the GPU: ArgMax " \
                       "is not a DLA operator through TensorRT"
    assert not any("conv" in line for line in lines)
    assert lines[-1].startswith("net.onnx: accepted by the ONNX parser of TensorRT 8.5, 8.6, 10 (")

    report = check_onnx(path, dla=True, profile={"x": {k: [2, 3, 8, 8] for k in ("min", "opt", "max")}},
                        gpu_fallback=False)
    assert not report.ok and report.errors[0].message.startswith("DLA: node argmax (ArgMax) cannot run on the DLA")


def test_dla_and_tensorrt_11(tmp_path, capsys, monkeypatch):
    """Not a default DLA release (no DLA before 11.4.1); asked for, it is checked, with a note."""
    monkeypatch.chdir(tmp_path)
    assert main(["check", _fp16_net(tmp_path, (1, 3, 8, 8)).name, "--dla", "--tensorrt", "11"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("net.onnx: TensorRT 11: note: DLA: TensorRT 11 has a DLA only from 11.4.1")
    assert lines[1].startswith("net.onnx: TensorRT 11: note: DLA: node argmax (ArgMax) would run on the GPU")


def test_dla_on_an_fp32_graph_is_one_note(tmp_path):
    path = _save(
        tmp_path,
        [helper.make_node("Relu", ["x"], ["y"], name="relu")],
        [_value("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [_value("y", TensorProto.FLOAT, [1, 3, 4, 4])],
    )
    report = check_onnx(path, dla=True)
    assert report.ok and [p.message for p in report.notes] == [
        "DLA: the graph computes in FP32 and the DLA runs FP16 and INT8 only: every layer would run on the GPU "
        "(export with --fp16 or --int8)"
    ]


# --------------------------------------------------------------------------------------------
# The command and the library call for export/build
# --------------------------------------------------------------------------------------------
def test_cli_missing_and_corrupt_files(tmp_path):
    from onnx_helpers import assert_one_line_error

    assert_one_line_error(run_cli(["check", tmp_path / "nope.onnx"]), "model file not found", "nope.onnx")
    assert_one_line_error(run_cli(["check", tmp_path]), "is a folder")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07this is not a protobuf\xff\xff")
    assert_one_line_error(run_cli(["check", corrupt]), "cannot read ONNX file", "corrupt.onnx")
    assert_one_line_error(run_cli(["check", corrupt, "--tensorrt", "12"]), "--tensorrt 12: choose from 8.5, 8.6, 10, 11")


def test_cli_clean_file_names_the_releases(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the lines name the file as it was given
    path = _qdq_graph(tmp_path, np.array(0, np.int8), "good.onnx").name
    assert main(["check", path]) == 0
    assert capsys.readouterr().out == (
        "good.onnx: accepted by the ONNX parser of TensorRT 8.5, 8.6, 10, 11 (opset 17; 2 nodes; 10 and 11 per the "
        "10.0 matrix, the nearest published)\n"
    )
    assert main(["check", path, "--tensorrt", "8.5"]) == 0
    assert capsys.readouterr().out == "good.onnx: accepted by the ONNX parser of TensorRT 8.5 (opset 17; 2 nodes)\n"


def test_cli_one_release_reports_only_its_problems(tmp_path, capsys, monkeypatch):
    """Hardmax: refused by 8.5's matrix, accepted by 10.0's."""
    monkeypatch.chdir(tmp_path)
    path = _save(tmp_path, [helper.make_node("Hardmax", ["x"], ["y"], name="h")],
                 [_value("x", TensorProto.FLOAT, [2, 5])], [_value("y", TensorProto.FLOAT, [2, 5])]).name
    assert main(["check", path, "--tensorrt", "8.5"]) == 1
    assert capsys.readouterr().out == (
        "bad.onnx: TensorRT 8.5: node h (Hardmax): the parser does not support Hardmax\n"
        "bad.onnx: refused by TensorRT 8.5: 1 problem at 1 node (by rule: operator 1); no release accepts it\n"
    )
    assert main(["check", path, "--tensorrt", "10"]) == 0
    capsys.readouterr()


def test_a_long_report_ends_with_its_verdict(tmp_path, capsys, monkeypatch):
    """Hundreds of problem lines (an INT8 graph made for CPUs) end with one line that counts them:
    the releases that refuse the graph, problems and nodes per rule, and those that accept it."""
    monkeypatch.chdir(tmp_path)
    nodes = [helper.make_node("Hardmax", ["x"], ["h0"], name="h0")]
    nodes += [helper.make_node("Hardmax", [f"h{i - 1}"], [f"h{i}"], name=f"h{i}") for i in range(1, 30)]
    path = _save(tmp_path, nodes, [_value("x", TensorProto.FLOAT, [2, 5])],
                 [_value("h29", TensorProto.FLOAT, [2, 5])], name="many.onnx").name
    assert main(["check", path]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 31 and all("(Hardmax): the parser does not support Hardmax" in l for l in lines[:30])
    # 8.5 and 8.6's matrices lack Hardmax, 10.0's (for 10 and 11) has it.
    assert lines[-1] == ("many.onnx: refused by TensorRT 8.5, 8.6: 30 problems at 30 nodes (by rule: operator 30); "
                         "accepted by TensorRT 10, 11")


def test_require_conformance_raises_one_line(tmp_path):
    path = _qdq_graph(tmp_path, np.array(3, np.int8))
    with pytest.raises(TensorRTConformanceError) as caught:
        require_tensorrt_conformance(path, ("10",))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("TensorRT would refuse qdq.onnx: TensorRT 10: node quant (QuantizeLinear)")
    assert message.endswith("(and 1 more: `fcn-deploy check qdq.onnx` lists them)")
    assert require_tensorrt_conformance(onnx.load(str(_qdq_graph(tmp_path, np.array(0, np.int8), "ok.onnx")))).ok
