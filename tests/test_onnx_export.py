"""ONNX export: parity with PyTorch for every zoo model, dims, IR version, FP16, INT8, metadata."""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from fcn_deploy.converters import onnx_passes
from fcn_deploy.converters.calibration import load_calibration_frames
from fcn_deploy.converters.onnx_export import export, finalize, metadata_for, trace_to_onnx
from fcn_deploy.converters.resolve import ResolvedModel, model_from_checkpoint, resolve_model
from fcn_deploy.converters.onnx_fp16 import convert_to_fp16
from fcn_deploy.converters.onnx_int8 import (
    WEIGHT_LIMIT,
    check_symmetric_int8,
    check_u8s8,
    check_weight_range,
    correct_bias,
    quantize_int8,
)
from fcn_deploy.converters.onnx_passes import ExportError
from fcn_deploy.converters.onnx_verify import label_agreement, session_for
from fcn_deploy.errors import FcnDeployError
from fcn_deploy.models import available_models
from fcn_deploy.runtime.backends import open_backend
from fcn_deploy.runtime.backends.base import normalize_frames
from fcn_deploy.runtime.metadata import ModelMetadata

from onnx_helpers import (
    random_frames,
    run_cli,
    small_model,
    small_options,
    write_checkpoint,
    write_images,
)

NUM_CLASSES = 5
# Odd, even, tiny and non-square sizes; every one at batch 2.
SIZES = [(97, 131), (64, 96), (33, 47), (1, 1)]
BATCH = 2


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny models run fastest on one thread; on a busy 2-core machine two threads spin."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _resolved(model, name: str) -> ResolvedModel:
    return ResolvedModel(model=model, spec=name, num_classes=NUM_CLASSES, model_options=small_options(name))


def _torch_logits(model, frames: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(normalize_frames(frames, model.normalization))
    with torch.no_grad():
        return model(x).numpy()


@pytest.mark.parametrize("name", available_models())
def test_parity_with_pytorch(name, capsys):
    """FP32 logits match PyTorch at four sizes (odd ones too) and batch 2; FP16 and INT8 agree."""
    model = small_model(name, NUM_CLASSES)
    resolved = _resolved(model, name)
    meta = metadata_for(resolved, fold_preprocessing=False, fold_argmax=False)
    fp32 = finalize(trace_to_onnx(model, meta), meta)
    assert onnx_passes.graph_io_dims(fp32) == {"input": ("N", 3, "H", "W"), "logits": ("N", NUM_CLASSES, "H", "W")}
    meta16 = metadata_for(resolved, False, False, precision="fp16")
    fp16 = finalize(convert_to_fp16(fp32), meta16, simplify=False)
    s32, s16 = session_for(fp32), session_for(fp16)

    same16 = same32 = total = 0
    all_frames, classes_seen = [], set()
    for h, w in SIZES:
        frames = random_frames(BATCH, h, w)
        all_frames.extend(frames)
        reference = _torch_logits(model, frames)
        x = normalize_frames(frames, model.normalization)
        got = s32.run(None, {"input": x})[0]
        assert got.shape == (BATCH, NUM_CLASSES, h, w)
        value_range = float(reference.max() - reference.min())
        assert value_range > 0
        assert np.abs(got - reference).max() <= 1e-4 * value_range, (h, w)
        same32 += int((got.argmax(1) == reference.argmax(1)).sum())
        half = s16.run(None, {"input": x})[0]
        assert half.dtype == np.float32 and half.shape == got.shape
        same16 += int((half.argmax(1) == reference.argmax(1)).sum())
        total += reference.argmax(1).size
        classes_seen |= set(np.unique(reference.argmax(1)).tolist())
    # The check is meaningful only if the network predicts several classes.
    assert len(classes_seen) > 1
    assert same32 / total >= 0.999
    agreement16 = same16 / total
    assert agreement16 >= 0.995, agreement16

    meta8 = metadata_for(resolved, False, False, precision="int8")
    int8 = finalize(quantize_int8(fp32, all_frames[::2], meta), meta8, simplify=False)
    agreement8 = label_agreement(fp32, int8, all_frames[:4], meta)
    with capsys.disabled():
        print(f"\n  {name}: FP16 agreement {100 * agreement16:.3f}%, INT8 agreement {100 * agreement8:.3f}%", end="")


@pytest.mark.parametrize("name", ["fcn8s_resnet18", "fcn16s_vgg16", "fcn8s_efficientnet_lite0"])
def test_folded_preprocessing_and_argmax_equal_pytorch(name):
    """uint8 BGR frames in, uint8 labels out == arg-max of PyTorch on the normalised input.

    The three normalisations of the zoo (Caffe BGR mean-only, torchvision RGB mean/std,
    EfficientNet-Lite RGB (x - 127) / 128) are each covered.
    """
    model = small_model(name, NUM_CLASSES)
    meta = metadata_for(_resolved(model, name))
    graph = finalize(trace_to_onnx(model, meta), meta)
    assert onnx_passes.graph_io_dims(graph) == {"input": ("N", "H", "W", 3), "labels": ("N", "H", "W")}
    # TensorRT's parser takes uint8 only at the boundary: the input feeds one Cast to float.
    readers = [n for n in graph.graph.node if "input" in n.input]
    assert [(n.op_type, n.attribute[0].i) for n in readers] == [("Cast", TensorProto.FLOAT)]
    nodes = {o: n for n in graph.graph.node for o in n.output}
    last = nodes["labels"]
    # uint8 leaves through a float Cast: TensorRT casts to uint8 only from float types.
    assert last.op_type == "Cast" and last.attribute[0].i == TensorProto.UINT8
    types = {v.name: v.type.tensor_type.elem_type for v in graph.graph.value_info}
    assert types[last.input[0]] == TensorProto.FLOAT
    # One arg-max, or one per phase group where the last upsampler's convolution was split
    # (converters.onnx_rewrites.split_subpixel_phases: four for the edge nets' 8x).
    assert [n.op_type for n in graph.graph.node].count("ArgMax") == (1 if name == "fcn16s_vgg16" else 4)
    session = session_for(graph)
    assert session.get_inputs()[0].type == "tensor(uint8)"
    for h, w in SIZES[:3]:
        frames = random_frames(BATCH, h, w, seed=1)
        labels = session.run(None, {"input": frames})[0]
        assert labels.dtype == np.uint8 and labels.shape == (BATCH, h, w)
        expected = _torch_logits(model, frames).argmax(1)
        assert np.mean(labels == expected) >= 0.999


def test_upsampling_forms_give_the_same_labels(tmp_path):
    """The default sub-pixel graph (no ConvTranspose; the arg-max ahead of the last pixel
    shuffle) and ``--upsampling deconv`` label frames alike, and the metadata says which is which."""
    model = small_model("fcn8s_efficientnet_lite0", NUM_CLASSES)
    resolved = _resolved(model, "fcn8s_efficientnet_lite0")
    graphs = {}
    for form in ("subpixel", "deconv"):
        result = export(resolved, str(tmp_path / f"{form}.onnx"), upsampling=form)
        assert result.metadata.extra["upsampling"] == form
        graphs[form] = onnx.load(result.path)
    ops = {form: [n.op_type for n in g.graph.node] for form, g in graphs.items()}
    assert "ConvTranspose" not in ops["subpixel"] and ops["subpixel"].count("DepthToSpace") == 3
    assert ops["subpixel"].index("ArgMax") < max(i for i, op in enumerate(ops["subpixel"]) if op == "DepthToSpace")
    assert ops["deconv"].count("ConvTranspose") == 3 and "DepthToSpace" not in ops["deconv"]
    frames = random_frames(2, 61, 83, seed=4)
    labels = {form: session_for(g).run(None, {"input": frames})[0] for form, g in graphs.items()}
    assert len(np.unique(labels["deconv"])) > 1
    assert np.mean(labels["subpixel"] == labels["deconv"]) >= 0.999
    with pytest.raises(ExportError, match="unknown upsampling"):
        export(resolved, str(tmp_path / "x.onnx"), upsampling="nearest")


def test_fp16_deployment_graph_keeps_its_preprocessing_in_float32(tmp_path):
    """uint8 frames in, labels out, FP16 inside: the folded Cast/Transpose/channel swap/Sub/Div
    stay float32 (the runtime's exact arithmetic) and the labels match FP32's."""
    from fcn_deploy.converters.onnx_fp16 import preprocessing_nodes

    model = small_model("fcn8s_efficientnet_lite0", NUM_CLASSES)
    resolved = _resolved(model, "fcn8s_efficientnet_lite0")
    fp32 = onnx.load(export(resolved, str(tmp_path / "fp32.onnx")).path)
    fp16 = onnx.load(export(resolved, str(tmp_path / "fp16.onnx"), precision="fp16").path)
    chain = preprocessing_nodes(fp32)
    assert [n.op_type for n in fp32.graph.node if n.name in chain] == ["Cast", "Transpose", "Gather", "Sub", "Div"]
    kept = {i.name: i.data_type for i in fp16.graph.initializer}
    for node in (n for n in fp16.graph.node if n.name in chain and n.op_type in ("Sub", "Div")):
        assert kept[node.input[1]] == TensorProto.FLOAT, node.name
    frames = random_frames(2, 45, 61, seed=5)
    a, b = (session_for(m).run(None, {"input": frames})[0] for m in (fp32, fp16))
    assert a.dtype == b.dtype == np.uint8 and np.mean(a == b) >= 0.99


def test_plain_dims_rejects_expressions_and_constants():
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "Min(H + 31, 64) - 31", "W"])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5, "H", "W"])
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "g", [x], [y])
    model = helper.make_model(graph)
    with pytest.raises(ExportError, match="input"):
        onnx_passes.require_plain_dims(model, {"input": ["N", 3, "H", "W"]})
    with pytest.raises(ExportError, match="logits"):
        onnx_passes.require_plain_dims(model, {"logits": ["N", 5, "H", "W"]})


def test_ir_version_is_the_lowest_the_opset_needs():
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert model.ir_version > 10  # onnx 1.23 writes its newest IR, which onnxruntime-gpu 1.31 rejects
    assert onnx_passes.set_ir_version(model) == 8
    session_for(model)  # loads
    too_new = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    with pytest.raises(ExportError, match="opset"):
        onnx_passes.set_ir_version(too_new)


def _resize_graph() -> onnx.ModelProto:
    """x -> Mul -> Resize -> y: the graph ends in an op onnxconverter-common keeps in float32."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])
    two = numpy_helper.from_array(np.array([2.0], np.float32), "two")
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["m"], name="mul"),
         helper.make_node("Resize", ["m", "", "scales"], ["y"], name="resize")],
        "g", [x], [y], [two, scales],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_fp16_output_stays_float32_when_graph_ends_in_a_blocked_op():
    from onnxconverter_common import float16

    model = _resize_graph()
    # The converter's own result: a float16 graph output despite keep_io_types.
    raw = float16.convert_float_to_float16(model, keep_io_types=True)
    assert raw.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    half = convert_to_fp16(model)
    assert half.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    onnx.checker.check_model(half, full_check=True)
    x = np.random.default_rng(0).standard_normal((1, 2, 4, 4)).astype(np.float32)
    got = session_for(half).run(None, {"x": x})[0]
    want = session_for(model).run(None, {"x": x})[0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-2)


def test_fp16_keep_fp32_nodes_and_unknown_names():
    model = small_model("fcn8s_resnet18", NUM_CLASSES)
    meta = metadata_for(_resolved(model, "fcn8s_resnet18"), False, False)
    fp32 = finalize(trace_to_onnx(model, meta), meta)
    last = fp32.graph.node[-1].name  # the crop that produces the logits
    conv = next(n.name for n in fp32.graph.node if n.op_type == "Conv")
    half = convert_to_fp16(fp32, keep_fp32=[last, conv])
    assert half.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    kept = {n.name: n for n in half.graph.node}
    assert kept[conv].op_type == "Conv"
    weight = next(i for i in half.graph.initializer if i.name == kept[conv].input[1])
    assert weight.data_type == TensorProto.FLOAT
    meta16 = metadata_for(_resolved(model, "fcn8s_resnet18"), False, False, precision="fp16")
    finalize(half, meta16, simplify=False)  # checker, shape inference and a run
    with pytest.raises(ExportError, match="no node named nope"):
        convert_to_fp16(fp32, keep_fp32=["nope"])


def test_int8_is_symmetric_per_channel_qdq(tmp_path):
    model = small_model("fcn8s_resnet18", NUM_CLASSES)
    resolved = _resolved(model, "fcn8s_resnet18")
    frames = load_calibration_frames(str(write_images(tmp_path / "calib")), limit=4)
    result = export(resolved, str(tmp_path / "m_int8.onnx"), precision="int8", calib_frames=frames)
    quantized = onnx.load(result.path)
    assert check_symmetric_int8(quantized) > 0
    inits = {i.name: i for i in quantized.graph.initializer}
    per_channel = [
        n for n in quantized.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in inits
        and numpy_helper.to_array(inits[n.input[1]]).size > 1
    ]
    assert per_channel, "weights should carry one scale per output channel"
    assert all(inits[n.input[0]].data_type == TensorProto.INT8 for n in per_channel)
    assert not any(n.op_type == "ConvTranspose" and n.input[0].endswith("DequantizeLinear") for n in quantized.graph.node)
    assert 0.0 <= result.agreement <= 1.0
    meta = ModelMetadata.from_props({p.key: p.value for p in quantized.metadata_props})
    assert meta.precision == "int8" and meta.extra["calibration"]["images"] == 4
    # A non-zero zero point is what TensorRT rejects: the check must catch it.
    zp_name = next(n.input[2] for n in quantized.graph.node if n.op_type == "QuantizeLinear")
    zp = inits[zp_name]
    zp.CopyFrom(numpy_helper.from_array(np.array(3, dtype=np.int8), zp_name))
    with pytest.raises(ExportError, match="zero point"):
        check_symmetric_int8(quantized)


def _optimized_ops(model: onnx.ModelProto, tmp_path) -> list:
    """The node types ONNX Runtime's CPU provider actually runs, after its QDQ fusions."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]


def test_int8_u8s8_runs_as_integer_kernels_without_float_clips(tmp_path):
    """The CPU scheme: uint8 activations, int32 biases; ONNX Runtime fuses every quantised
    convolution into QLinearConv and drops the ReLU6 Clips, which the s8s8 graph keeps in float."""
    model = small_model("fcn8s_efficientnet_lite0", NUM_CLASSES)
    resolved = _resolved(model, "fcn8s_efficientnet_lite0")
    frames = load_calibration_frames(str(write_images(tmp_path / "calib", count=4)), limit=4)
    u8 = export(resolved, str(tmp_path / "u8.onnx"), precision="int8", calib_frames=frames, int8_scheme="u8s8")
    s8 = export(resolved, str(tmp_path / "s8.onnx"), precision="int8", calib_frames=frames)
    quantized = onnx.load(u8.path)
    assert check_u8s8(quantized) > 0
    inits = {i.name: i for i in quantized.graph.initializer}
    producer = {o: n for n in quantized.graph.node for o in n.output}
    convs = [n for n in quantized.graph.node if n.op_type == "Conv"]
    biases = [producer[n.input[2]] for n in convs if len(n.input) > 2]
    assert biases and all(b.op_type == "DequantizeLinear" and inits[b.input[0]].data_type == TensorProto.INT32
                          for b in biases)
    calibration = ModelMetadata.from_props({p.key: p.value for p in quantized.metadata_props}).extra["calibration"]
    assert calibration["scheme"] == "u8s8" and calibration["symmetric"] is False
    with pytest.raises(ExportError, match="zero point"):
        check_symmetric_int8(quantized)

    ran = _optimized_ops(quantized, tmp_path)
    assert ran.count("QLinearConv") >= len(convs) - 1 and "Clip" not in ran
    assert "Clip" in _optimized_ops(onnx.load(s8.path), tmp_path)
    # 8-bit weights on an AVX2-only CPU: 0.77 and 0.68 (saturated integer kernels); 7-bit: 0.97, 0.96.
    assert u8.agreement > 0.9 and s8.agreement > 0.9, (u8.agreement, s8.agreement)
    frame = random_frames(1, 45, 61, seed=3)
    assert session_for(quantized).run(None, {"input": frame})[0].shape == (1, 45, 61)

    # An int8 activation is what the check must catch in this scheme.
    zp_name = next(n.input[2] for n in quantized.graph.node if n.op_type == "QuantizeLinear")
    inits[zp_name].CopyFrom(numpy_helper.from_array(np.array(0, dtype=np.int8), zp_name))
    with pytest.raises(ExportError, match="uint8"):
        check_u8s8(quantized)


@pytest.mark.parametrize("scheme", ["u8s8", "s8s8"])
def test_int8_integer_kernels_compute_what_the_qdq_graph_says(scheme):
    """ONNX Runtime's fused integer kernels must give what the Q/DQ graph computes in float.

    x86 CPUs without VNNI (AVX2, AVX-512 without VNNI) multiply uint8 by int8 with VPMADDUBSW,
    which sums two neighbouring products into a saturating int16; ONNX Runtime 1.21+ runs s8s8
    convolutions through the same kernels (activations shifted to uint8). A convolution whose
    inputs sit at the top of a ReLU6's range and whose weights are large and of one sign
    saturates there with 8-bit weights (41% off for u8s8, 81% for s8s8 on an AVX2 EPYC): the
    weights must stay 7-bit. On a VNNI CPU both halves pass either way; the range check does not
    depend on the CPU."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, "H", "W"])
    fp32 = helper.make_model(helper.make_graph(
        [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1"),
         helper.make_node("Clip", ["c1", "lo", "hi"], ["a1"], name="relu6"),
         helper.make_node("Conv", ["a1", "w2", "b2"], ["c2"], name="conv2"),
         helper.make_node("Relu", ["c2"], ["y"], name="relu")],
        "g", [x], [y],
        [numpy_helper.from_array(rng.uniform(0.5, 1.5, (16, 3, 1, 1)).astype(np.float32), "w1"),
         numpy_helper.from_array(np.full(16, 3, np.float32), "b1"),
         numpy_helper.from_array(rng.uniform(0.5, 1.0, (4, 16, 1, 1)).astype(np.float32), "w2"),
         numpy_helper.from_array(np.zeros(4, np.float32), "b2"),
         numpy_helper.from_array(np.array(0, np.float32), "lo"),
         numpy_helper.from_array(np.array(6, np.float32), "hi")],
    ), opset_imports=[helper.make_opsetid("", 17)])
    fp32.ir_version = 8
    meta = metadata_for(_resolved(small_model("fcn8s_resnet18", NUM_CLASSES), "fcn8s_resnet18"), False, False)
    frames = list(random_frames(3, 16, 20))
    quantized = quantize_int8(fp32, frames, meta, scheme=scheme)
    assert check_weight_range(quantized) == 2

    def run(model, level):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return session.run(None, {"x": normalize_frames(np.stack(frames), meta.normalization)})[0]

    exact = run(quantized, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)  # Q/DQ evaluated in float
    kernels = run(quantized, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)  # fused QLinearConv
    reference = run(fp32, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    scale = np.abs(reference).max()
    assert np.abs(exact - reference).max() < 0.02 * scale
    assert np.abs(kernels - exact).max() < 0.02 * scale, np.abs(kernels - exact).max() / scale

    inits = {i.name: i for i in quantized.graph.initializer}
    weight = next(inits[n.input[0]] for n in quantized.graph.node
                  if n.op_type == "DequantizeLinear" and n.input[0] in inits
                  and inits[n.input[0]].data_type == TensorProto.INT8)
    values = numpy_helper.to_array(weight).copy()
    values.flat[0] = WEIGHT_LIMIT + 1
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    with pytest.raises(ExportError, match="saturate"):
        check_weight_range(quantized)


def test_int8_bias_correction_removes_the_mean_shift_of_rounded_weights():
    """Weights rounded to INT8 shift each output channel's mean by (W_q - W) @ E[x]; after
    correct_bias the mean equals FP32's (exactly, for a 1x1 convolution), before it does not."""
    rng = np.random.default_rng(0)
    weight = rng.uniform(-1, 1, (4, 3, 1, 1)).astype(np.float32)
    scale = (np.abs(weight).reshape(4, -1).max(axis=1) / 127).astype(np.float32)
    q = np.clip(np.round(weight / scale[:, None, None, None]), -127, 127).astype(np.int8)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, "H", "W"])

    def graph(nodes, inits):
        bias = numpy_helper.from_array(np.zeros(4, dtype=np.float32), "b")
        model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [*inits, bias]),
                                  opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        return model

    fp32 = graph([helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv")],
                 [numpy_helper.from_array(weight, "w")])
    quantized = graph(
        [helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_zp"], ["w_dq"], axis=0),
         helper.make_node("Conv", ["x", "w_dq", "b"], ["y"], name="conv")],
        [numpy_helper.from_array(q, "w_q"), numpy_helper.from_array(scale, "w_s"),
         numpy_helper.from_array(np.zeros(4, dtype=np.int8), "w_zp")],
    )
    meta = metadata_for(_resolved(small_model("fcn8s_resnet18", NUM_CLASSES), "fcn8s_resnet18"), False, False)
    frames = list(random_frames(3, 16, 20))

    def channel_means(model):
        out = session_for(model).run(None, {"x": normalize_frames(np.stack(frames), meta.normalization)})[0]
        return out.mean(axis=(0, 2, 3))

    before = np.abs(channel_means(quantized) - channel_means(fp32)).max()
    assert correct_bias(fp32, quantized, frames, meta) == 1
    after = np.abs(channel_means(quantized) - channel_means(fp32)).max()
    assert before > 1e-4 and after < 1e-5, (before, after)


def test_metadata_round_trip_through_the_file(tmp_path):
    ckpt = write_checkpoint(tmp_path / "ck.pt")
    resolved = model_from_checkpoint(str(ckpt))
    result = export(resolved, str(tmp_path / "m.onnx"))
    model = onnx.load(result.path)
    assert model.ir_version <= 10 and model.opset_import[0].version == 17
    props = {p.key: p.value for p in model.metadata_props}
    assert all(json.loads(v) is not None or v == "null" for v in props.values())  # every value is JSON
    meta = ModelMetadata.from_props(props)
    assert meta == result.metadata
    assert meta.model_name == "fcn8s_resnet18" and meta.classes[1] == "thing1"
    assert meta.palette[2] == (20, 40, 60) and meta.dataset == "camvid" and meta.mean_iu == 0.625
    assert meta.input_layout == "NHWC_BGR_UINT8" and meta.output == "labels"
    assert meta.normalization == resolved.model.normalization
    assert meta.source["checkpoint"] == str(ckpt) and len(meta.source["sha256"]) == 64
    assert {"torch", "onnx", "onnxslim", "fcn_deploy"} <= set(meta.exporter)
    with open_backend(result.path) as backend:
        assert backend.metadata == meta
    again = ModelMetadata.from_dict(json.loads(json.dumps(meta.to_dict())))
    assert again == meta


def test_resolve_model_names(tmp_path, caplog):
    with caplog.at_level("WARNING"):
        resolved = resolve_model("fcn8s_resnet18", 3, width=16)
    assert resolved.num_classes == 3 and not resolved.trained
    assert "random weights" in caplog.text
    with pytest.raises(FcnDeployError, match="unknown model 'nonsense'"):
        resolve_model("nonsense")
    with pytest.raises(FcnDeployError, match="checkpoint not found"):
        resolve_model(str(tmp_path / "missing.pt"))
    from fcn_deploy.runtime.model_files import bundled_checkpoint

    if not bundled_checkpoint("camvid").is_file():
        with pytest.raises(FcnDeployError, match="bundled model 'camvid' is not installed"):
            resolve_model("camvid")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "bare.pt")
    with pytest.raises(FcnDeployError, match="not a fcn-deploy checkpoint"):
        resolve_model(str(tmp_path / "bare.pt"))


def test_checkpoint_model_equals_the_trained_one(tmp_path):
    ckpt = write_checkpoint(tmp_path / "ck.pt", seed=3)
    resolved = model_from_checkpoint(str(ckpt))
    reference = small_model("fcn8s_resnet18", NUM_CLASSES, seed=3)
    frames = random_frames(1, 40, 56)
    np.testing.assert_array_equal(_torch_logits(resolved.model, frames), _torch_logits(reference, frames))


def test_failed_export_leaves_the_previous_file(tmp_path):
    model = small_model("fcn8s_resnet18", NUM_CLASSES)
    path = tmp_path / "m.onnx"
    export(_resolved(model, "fcn8s_resnet18"), str(path))
    before = path.read_bytes()
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600
    with pytest.raises(ExportError):
        export(_resolved(model, "fcn8s_resnet18"), str(path), precision="fp16", keep_fp32=["no_such_node"])
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]  # no temporary file left behind
    (tmp_path / "d.onnx").mkdir()
    with pytest.raises(ExportError, match="is a directory"):
        export(_resolved(model, "fcn8s_resnet18"), str(tmp_path / "d.onnx"))
    with pytest.raises(ExportError, match="must end in .onnx"):
        export(_resolved(model, "fcn8s_resnet18"), str(tmp_path / "m.engine"))


def test_cli_export_int8_prints_next_steps(tmp_path):
    ckpt = write_checkpoint(tmp_path / "ck.pt")
    calib = write_images(tmp_path / "calib", count=3)
    out = tmp_path / "m_int8.onnx"
    result = run_cli(["export", "--model", ckpt, "--output", out, "--int8", "--calib", calib])
    assert result.returncode == 0, result.stderr
    assert out.is_file()
    assert "Exported fcn8s_resnet18 (int8)" in result.stdout
    assert "agreement with FP32 on 3 calibration images" in result.stdout
    assert "Next steps:" in result.stdout and f"fcn-deploy compare {out} --images {calib}" in result.stdout
    assert "build the engine on the target with `fcn-deploy build" in result.stdout
    assert "Traceback" not in result.stderr
    # Compared on noise (no --images), an INT8 model's report says why its agreement may be low.
    compared = run_cli(["compare", out, "--sizes", "33x47"])
    assert "note: INT8 judged on seeded noise" in compared.stdout and "Traceback" not in compared.stderr
    compared = run_cli(["compare", out, "--sizes", "33x47", "--images", calib])
    assert "note: INT8" not in compared.stdout and "labels  agreement" in compared.stdout


def test_cli_export_errors_are_one_line(tmp_path):
    from onnx_helpers import assert_one_line_error

    assert_one_line_error(run_cli(["export", "--model", tmp_path / "nope.pt", "-o", tmp_path / "m.onnx"]),
                          "checkpoint not found")
    assert_one_line_error(run_cli(["export", "--model", "fcn8s_resnet18", "--int8"]), "--calib")
    assert_one_line_error(run_cli(["export", "--model", "fcn8s_resnet18", "--int8-scheme", "u8s8",
                                   "-o", tmp_path / "m.onnx"]), "goes with --int8")
    assert_one_line_error(run_cli(["export", "--model", "fcn8s_resnet18", "--keep-fp32", "/score",
                                   "-o", tmp_path / "m.onnx"]), "--keep-fp32 applies to --fp16")
    assert not (tmp_path / "m.onnx").exists()


def test_export_option_rules_live_in_the_library():
    """The CLI and export() share one check, so a Python caller gets the same lines."""
    from fcn_deploy.converters.onnx_export import check_export_options

    check_export_options("int8", calibration=True, int8_scheme="u8s8")
    check_export_options("fp16", calibration=True, keep_fp32=["/net/score_fr/Conv"])
    for kwargs, message in [
        (dict(precision="int8", calibration=False), "needs calibration images"),
        (dict(precision="fp32", calibration=False, int8_scheme="u8s8"), "goes with --int8"),
        (dict(precision="fp32", calibration=True), "--calib is used with --int8"),
        (dict(precision="int8", calibration=True, keep_fp32=["x"]), "--keep-fp32 applies to --fp16"),
        (dict(precision="bf16", calibration=False), "unknown precision"),
        (dict(precision="int8", calibration=True, int8_scheme="u8u8"), "unknown INT8 scheme"),
        (dict(precision="fp32", calibration=False, opset=11), "too old"),
    ]:
        precision = kwargs.pop("precision")
        with pytest.raises(ExportError, match=message):
            check_export_options(precision, **kwargs)
