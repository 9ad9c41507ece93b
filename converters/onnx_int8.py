"""FP32 -> INT8 Q/DQ ONNX by static quantisation on real images.

TensorRT 10/11 build INT8 only from explicit QuantizeLinear/DequantizeLinear pairs (the
implicit calibrators are gone in 11), and accept only signed, symmetric INT8: zero point 0
everywhere. Hence ONNX Runtime's ``quantize_static`` with:

* QDQ format, QInt8 activations and weights, ``ActivationSymmetric`` and ``WeightSymmetric``;
* per-channel weight scales (what TensorRT uses for convolutions);
* float biases (``QuantizeBias`` off): TensorRT folds the bias in float itself and has no
  use for an INT32 DequantizeLinear;
* only the ops that profit: convolutions, matrix products, the skip additions and max pools,
  plus the activations that follow convolutions (ReLU, and ReLU6 exported as ``Clip``).
  Listing the activations matters: ONNX Runtime then gives a convolution's output the range
  *after* the activation (``adjust_tensor_ranges``). Without them the Q/DQ pair between a
  convolution and its ReLU6 is scaled by the raw pre-activation range, many times wider
  than the [0, 6] that survives the Clip, which then gets a handful of levels: on the bundled
  model that cost about ten points of CamVid mean IU. The folded pre-processing stays in
  float, so the input normalisation is exact. The upsamplers, convolutions in their exported
  sub-pixel form, are quantised like the rest: it costs nothing measurable and keeps the
  u8s8 graph integer from end to end (README: accuracy per backend).

Then :func:`correct_bias` (Nagel et al., "Data-Free Quantization Through Weight Equalization
and Bias Correction", 2019) removes the mean shift that rounding the weights puts on every
convolution output: ``bias -= (W_int8 * scale - W) @ E[x]``, with ``E[x]`` the per-channel
mean of the convolution's input over the calibration frames. Depthwise convolutions (nine
weights per channel) suffer most. The biases stay float, as TensorRT wants them; the
correction recovers most of what the rounding of the weights cost.

MinMax calibration is kept: once the activations above are quantised after the ReLU6, every
activation range is bounded, and Percentile calibration or more calibration images changed
CamVid val mean IU by a few hundredths of a point.

Weights get 7 bits (ONNX Runtime's ``reduce_range``: int8 in [-64, 64]), for the CPUs. x86
CPUs without VNNI (AVX2; AVX-512 before Cascade Lake) multiply uint8 activations by int8 weights
with VPMADDUBSW, which adds two neighbouring products into a saturating int16: with 8-bit
weights 255 * 127 + 255 * 127 overflows, with 7-bit ones it cannot (255 * 128 <= 32767).
ONNX Runtime runs u8s8 convolutions so, and since 1.21 also the s8s8 ones (activations shifted
to uint8, so every product is large). On an AVX2-only CPU the 8-bit graphs of the bundled
model disagreed with FP32 on far more pixels than the same graphs evaluated in float (no
fused kernels, which is what VNNI CPUs and TensorRT compute), the s8s8 one worst; with 7-bit
weights they agree as well on every CPU, at a small cost in agreement where 8 bits do not
saturate and none in mean IU (README: accuracy per backend). :func:`check_weight_range` keeps
the limit whatever the quantizer version does with ``reduce_range``.

:func:`check_symmetric_int8` then checks every zero point of the result.

Two schemes, because the two kinds of INT8 hardware want different graphs:

* ``s8s8`` (the default; what TensorRT builds): as above.
* ``u8s8``: uint8 activations with a zero point (asymmetric), int8 symmetric weights, int32
  biases -- the form ONNX Runtime's CPU provider fuses into integer kernels (``QLinearConv``)
  on x86, whose VNNI and AVX2 dot products multiply unsigned by signed bytes. Two things
  decide its speed. A ReLU6's output range is exactly [0, 6], so its uint8 Q/DQ pair covers
  the same range as the Clip and ONNX Runtime drops the Clip; the symmetric int8 pair spans
  [-6, 6], cannot, and leaves a float Clip between a DequantizeLinear and a QuantizeLinear
  after every convolution. And ``QLinearConv`` needs the bias as int32 at scale
  ``input_scale * weight_scale``; a float bias keeps the convolution in float (README: the
  latency table has what each graph costs). TensorRT rejects
  zero points other than 0, so a u8s8 file is for ONNX Runtime on CPUs only; its metadata says
  so and the engine builder refuses it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from typing import Callable, Dict, Iterable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fcn_deploy.errors import first_line
from fcn_deploy.runtime.metadata import INT8_SCHEMES, ModelMetadata

from .onnx_passes import ExportError, attribute, consumers, drop_unused_initializers, producers
from .onnx_verify import graph_input, session_for

log = logging.getLogger(__name__)

QUANTIZED_OPS = ["Conv", "MatMul", "Gemm", "Add", "MaxPool", "Relu", "Clip"]
# Largest |int8 weight|: 7 bits (ONNX Runtime's ``reduce_range``). x86 CPUs without VNNI
# multiply uint8 by int8 with VPMADDUBSW, which adds two neighbouring products into a
# *saturating* int16: 255 * (|w0| + |w1|) must stay <= 32767, so |w0| + |w1| <= 128.
WEIGHT_LIMIT = 64


def check_weight_range(model: onnx.ModelProto, limit: int = WEIGHT_LIMIT) -> int:
    """Every int8 weight of ``model`` (a constant behind a DequantizeLinear) lies in
    ``[-limit, limit]``; return how many weight tensors there are. See the module docstring."""
    inits = {i.name: i for i in model.graph.initializer}
    count = 0
    for node in model.graph.node:
        tensor = inits.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if tensor is None or tensor.data_type != TensorProto.INT8:
            continue
        count += 1
        peak = int(np.abs(numpy_helper.to_array(tensor).astype(np.int32)).max(initial=0))
        if peak > limit:
            raise ExportError(
                f"{node.name}: int8 weights reach {peak}, over {limit}; ONNX Runtime's x86 kernels "
                "saturate on CPUs without VNNI (quantise with reduce_range)"
            )
    return count


def check_symmetric_int8(model: onnx.ModelProto) -> int:
    """Every Q/DQ node must use an INT8 zero point of 0; return how many Q/DQ nodes there are.

    A missing zero point would mean uint8, which TensorRT rejects as well.
    """
    inits = {i.name: i for i in model.graph.initializer}
    consts = {}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    consts[node.output[0]] = attr.t
    count = 0
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        count += 1
        if len(node.input) < 3 or not node.input[2]:
            raise ExportError(f"{node.op_type} {node.name} has no zero point (uint8 by default); TensorRT needs int8")
        tensor = inits.get(node.input[2]) or consts.get(node.input[2])
        if tensor is None:
            raise ExportError(f"{node.op_type} {node.name}: zero point {node.input[2]} is not a constant")
        if tensor.data_type != TensorProto.INT8:
            raise ExportError(
                f"{node.op_type} {node.name}: zero point is {TensorProto.DataType.Name(tensor.data_type)}, not INT8"
            )
        if np.any(numpy_helper.to_array(tensor) != 0):
            raise ExportError(f"{node.op_type} {node.name}: non-zero zero point; TensorRT needs symmetric INT8")
    if count == 0:
        raise ExportError("quantisation inserted no Q/DQ nodes")
    return count


def _reader(frames: Sequence[np.ndarray], input_name: str, metadata: ModelMetadata,
            progress: Callable[[Iterable], Iterable]):
    from onnxruntime.quantization import CalibrationDataReader

    class FrameReader(CalibrationDataReader):
        """Feeds one calibration frame at a time, in the graph's own input layout."""

        def __init__(self) -> None:
            self._frames = iter(progress(frames))

        def get_next(self):
            frame = next(self._frames, None)
            if frame is None:
                return None
            return {input_name: graph_input(frame[None], metadata)}

    return FrameReader()


class _QuietQuantizer(logging.Filter):
    """onnxruntime.quantization logs every bias copy on the root logger, advises a
    pre-processing step that the export has already done (simplification, shape inference),
    reports each weight scale it widens so that an int32 bias fits (channels whose weights are
    all but zero: they round to zero either way), and, on a plain export whose biases are
    computed, says so for every convolution ("Expected bias ... to be an initializer")."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return record.levelno >= logging.ERROR or not text.startswith(
            ("Created a copy of", "Please consider", "Increased scale", "Increasing scale", "Expected bias")
        )


@contextlib.contextmanager
def quiet_quantizer_logs():
    """Silence what :class:`_QuietQuantizer` names while ``quantize_static`` runs (errors pass)."""
    # A logger's own filters see exactly the records logged on it: here, the root logger.
    quiet, root = _QuietQuantizer(), logging.getLogger()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def conv_input_means(
    model: onnx.ModelProto, frames: Sequence[np.ndarray], metadata: ModelMetadata
) -> Dict[str, np.ndarray]:
    """Per-channel mean of every named convolution's input over ``frames``, by node name.

    One ``ReduceMean`` per input is added to a copy of the graph, so a frame costs one run and
    only the means come back, not the activations.
    """
    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    del augmented.graph.output[:]
    graph, new_axes = augmented.graph, _opset(model) >= 18  # opset 18 moved `axes` to an input
    if new_axes:
        graph.initializer.append(numpy_helper.from_array(np.array([0, 2, 3], dtype=np.int64), "fcn_deploy_mean_axes"))
    names = []
    for node in [n for n in model.graph.node if n.op_type == "Conv" and n.name]:
        out = f"fcn_deploy_mean_{len(names)}"
        if new_axes:
            graph.node.append(helper.make_node("ReduceMean", [node.input[0], "fcn_deploy_mean_axes"], [out], keepdims=0))
        else:
            graph.node.append(helper.make_node("ReduceMean", [node.input[0]], [out], axes=[0, 2, 3], keepdims=0))
        graph.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, None))
        names.append(node.name)
    if not names:
        return {}
    session = session_for(augmented)
    input_name = session.get_inputs()[0].name
    sums = None
    for frame in frames:
        means = session.run(None, {input_name: graph_input(frame[None], metadata)})
        sums = means if sums is None else [a + b for a, b in zip(sums, means)]
    return {name: total.astype(np.float64) / len(frames) for name, total in zip(names, sums)}


def _dequantized_weight(node: onnx.NodeProto, inits: Dict[str, onnx.TensorProto]) -> np.ndarray:
    """The float weight that a weight ``DequantizeLinear`` feeds a convolution."""
    q, scale = (numpy_helper.to_array(inits[name]).astype(np.float64) for name in node.input[:2])
    axis = attribute(node, "axis", 1)
    if scale.ndim == 1 and q.ndim > 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
    return q * scale


def correct_bias(
    fp32: onnx.ModelProto, quantized: onnx.ModelProto, frames: Sequence[np.ndarray], metadata: ModelMetadata
) -> int:
    """Bias correction (Nagel et al. 2019) of the INT8 weights in ``quantized``, in place.

    Rounding a convolution's weights to INT8 shifts the mean of its output channel ``o`` by
    ``sum_i (W_q - W)[o, i] * E[x_i]``: small for a wide convolution, where rounding errors of
    both signs average out, but not for a depthwise one with nine weights a channel. The shift
    is measured from the FP32 weights and the calibration frames, and subtracted from the
    (float) bias. Returns how many convolutions were corrected.
    """
    fp32_inits = {i.name: i for i in fp32.graph.initializer}
    fp32_convs = {n.name: n for n in fp32.graph.node if n.op_type == "Conv" and n.name}
    inits = {i.name: i for i in quantized.graph.initializer}
    producer, uses = producers(quantized.graph), consumers(quantized.graph)
    means = conv_input_means(fp32, frames, metadata)
    corrected = 0
    for node in quantized.graph.node:
        source = fp32_convs.get(node.name)
        if node.op_type != "Conv" or source is None or node.name not in means or source.input[1] not in fp32_inits:
            continue
        dq = producer.get(node.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or not all(n in inits for n in dq.input[:2]):
            continue
        weight = numpy_helper.to_array(fp32_inits[source.input[1]]).astype(np.float64)
        error = _dequantized_weight(dq, inits) - weight  # O x I/g x kH x kW
        groups = attribute(node, "group", 1)
        mean = means[node.name].reshape(groups, -1)  # g x I/g
        if error.shape[1] != mean.shape[1] or error.shape[0] % groups:
            continue
        per_output = np.repeat(mean, error.shape[0] // groups, axis=0)  # O x I/g
        shift = np.einsum("oik,oi->o", error.reshape(error.shape[0], error.shape[1], -1), per_output)
        if len(node.input) > 2 and node.input[2]:
            if node.input[2] not in inits or len(uses.get(node.input[2], [])) != 1:
                continue
            bias_tensor = inits[node.input[2]]
            bias = numpy_helper.to_array(bias_tensor)
            if bias.dtype != np.float32:
                continue
            bias_tensor.CopyFrom(numpy_helper.from_array((bias - shift).astype(np.float32), bias_tensor.name))
        else:
            name = f"{node.name}_corrected_bias"
            quantized.graph.initializer.append(numpy_helper.from_array((-shift).astype(np.float32), name))
            del node.input[2:]
            node.input.append(name)
        corrected += 1
    return corrected


def check_u8s8(model: onnx.ModelProto) -> int:
    """Every activation Q/DQ is uint8 and every int8 weight has zero point 0; return how many
    Q/DQ nodes there are."""
    inits = {i.name: i for i in model.graph.initializer}
    count = 0
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        count += 1
        zero = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zero is None:
            continue  # uint8, zero point 0: the default
        kind = zero.data_type
        weight = node.op_type == "DequantizeLinear" and node.input[0] in inits
        if weight and kind == TensorProto.INT8 and np.any(numpy_helper.to_array(zero) != 0):
            raise ExportError(f"{node.name}: weights must be symmetric int8")
        if not weight and kind != TensorProto.UINT8:
            raise ExportError(f"{node.name}: activations must be uint8 in the u8s8 scheme")
    if count == 0:
        raise ExportError("quantisation inserted no Q/DQ nodes")
    return count


def quantize_biases(model: onnx.ModelProto) -> int:
    """Turn each float convolution bias behind Q/DQ inputs into int32 + DequantizeLinear, in place.

    The int32 bias is ``round(bias / (input_scale * weight_scale))`` per output channel, the
    form ONNX Runtime folds into ``QLinearConv``. Done after :func:`correct_bias`, so the
    corrected float bias is what gets rounded. Returns how many biases were quantised.
    """
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer, uses = producers(graph), consumers(graph)
    bias_nodes: Dict[str, onnx.NodeProto] = {}  # convolution output -> the DequantizeLinear of its bias
    for node in graph.node:
        if node.op_type != "Conv" or len(node.input) < 3 or node.input[2] not in inits:
            continue
        x_dq, w_dq = producer.get(node.input[0]), producer.get(node.input[1])
        if not (x_dq and w_dq and x_dq.op_type == w_dq.op_type == "DequantizeLinear"):
            continue
        if x_dq.input[1] not in inits or w_dq.input[1] not in inits or len(uses.get(node.input[2], [])) != 1:
            continue
        bias = numpy_helper.to_array(inits[node.input[2]])
        if bias.dtype != np.float32:
            continue
        x_scale = numpy_helper.to_array(inits[x_dq.input[1]]).astype(np.float32).reshape(())
        w_scale = numpy_helper.to_array(inits[w_dq.input[1]]).astype(np.float32).reshape(-1)
        scale = (x_scale * w_scale).astype(np.float32)
        scale = np.broadcast_to(scale, bias.shape).copy()
        q = np.clip(np.round(bias.astype(np.float64) / scale), -(2 ** 31), 2 ** 31 - 1).astype(np.int32)
        base = f"{node.input[2]}_int32"
        graph.initializer.extend([
            numpy_helper.from_array(q, base),
            numpy_helper.from_array(scale, f"{base}_scale"),
            numpy_helper.from_array(np.zeros_like(q), f"{base}_zero_point"),
        ])
        bias_nodes[node.output[0]] = helper.make_node(
            "DequantizeLinear", [base, f"{base}_scale", f"{base}_zero_point"], [f"{base}_dq"], axis=0,
            name=f"{base}_DequantizeLinear",
        )
        node.input[2] = f"{base}_dq"
    if bias_nodes:
        # Each bias DequantizeLinear goes right before its convolution: the order stays topological.
        ordered = []
        for node in graph.node:
            if node.op_type == "Conv" and node.output[0] in bias_nodes:
                ordered.append(bias_nodes[node.output[0]])
            ordered.append(node)
        del graph.node[:]
        graph.node.extend(ordered)
        drop_unused_initializers(graph)
    return len(bias_nodes)


def quantize_int8(
    model: onnx.ModelProto,
    frames: Sequence[np.ndarray],
    metadata: ModelMetadata,
    progress: Callable[[Iterable], Iterable] = lambda it: it,
    exclude_nodes: Sequence[str] = (),
    bias_correction: bool = True,
    scheme: str = "s8s8",
) -> onnx.ModelProto:
    """Per-channel INT8 Q/DQ copy of FP32 ``model``, calibrated on BGR uint8 ``frames``.

    ``scheme``: ``s8s8`` (symmetric, for TensorRT) or ``u8s8`` (for ONNX Runtime on CPUs);
    see the module docstring. ``progress`` wraps the frame iterator (the CLI passes a tqdm
    bar; library code stays silent). ``exclude_nodes`` names nodes left in float.
    ``bias_correction`` folds the mean error of the rounded weights into the biases
    (:func:`correct_bias`; measured on the same frames).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if scheme not in INT8_SCHEMES:
        raise ExportError(f"unknown INT8 scheme {scheme!r}; choose from {', '.join(INT8_SCHEMES)}")
    symmetric = scheme == "s8s8"
    if not frames:
        raise ExportError("INT8 quantisation needs calibration images")
    input_name = model.graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="fcn-deploy-int8-") as tmp:
        src, dst = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8.onnx")
        onnx.save_model(model, src)
        try:
            with quiet_quantizer_logs():
                quantize_static(
                    src,
                    dst,
                    _reader(frames, input_name, metadata, progress),
                    quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                    reduce_range=True,  # 7-bit weights: see WEIGHT_LIMIT
                    calibrate_method=CalibrationMethod.MinMax,
                    op_types_to_quantize=QUANTIZED_OPS,
                    nodes_to_exclude=list(exclude_nodes),
                    extra_options={
                        "ActivationSymmetric": symmetric,
                        "WeightSymmetric": True,
                        "QuantizeBias": False,
                        # Not "CalibMaxIntermediateOutputs": in onnxruntime 1.32 it drops the
                        # ranges collected so far instead of merging them. MinMax keeps only
                        # per-tensor minima and maxima per frame anyway.
                    },
                )
        except ExportError:
            raise
        except Exception as exc:
            first = first_line(exc)
            raise ExportError(f"INT8 quantisation failed: {type(exc).__name__}: {first}") from None
        quantized = onnx.load_model(dst)
    check_weight_range(quantized)
    if bias_correction:
        log.info("int8: bias correction on %d convolutions", correct_bias(model, quantized, frames, metadata))
    if symmetric:
        count = check_symmetric_int8(quantized)
        log.info("int8 s8s8: %d Q/DQ nodes, all zero points 0", count)
    else:
        log.info("int8 u8s8: %d int32 biases", quantize_biases(quantized))
        log.info("int8 u8s8: %d Q/DQ nodes", check_u8s8(quantized))
    return quantized
