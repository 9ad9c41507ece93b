"""The DLA's rules for ``fcn-deploy check --dla``: what a DLA engine needs and which layers the
DLA would hand to the GPU.

``fcn-deploy build --dla N`` makes the DLA the default device with GPU fallback on, so a layer
the DLA cannot run still builds, on the GPU, with a copy between the two at each switch; that
is worth knowing before the trip to the Jetson, hence notes (errors without GPU fallback).
What a DLA build cannot do at all is an error:

* **dynamic shapes**: the DLA has no dynamic dimensions, so every dynamic input needs a profile
  whose min, opt and max are equal (``--shapes NAME:1x360x480x3``).

TensorRT 11 dropped the DLA in 11.0 to 11.4.0 and brought it back in 11.4.1, for Jetson AGX Orin
with JetPack 7.2.2 or later; the Orin boards of JetPack 5 and 6 use the DLA through TensorRT
8.5, 8.6 and 10.3. Hence :data:`DLA_RELEASES`, the default releases of a DLA check, and a note
(not an error) when 11 is asked for.

Layers that fall back:

* operators TensorRT cannot place on the DLA. NVIDIA's ONNX operator matrix for the Orin DLA
  marks each operator "Native" through TensorRT, "Reconstruction" (only after the graph is
  rewritten into other operators: Gather, DepthToSpace, Neg, Where, Q/DQ ...) or not supported
  (ArgMax, Pad, Cast, Squeeze ...). A few became native with TensorRT 8.6.12 (DRIVE OS); JetPack
  6.0 carries 8.6.2, so they count as native from 10 on. Shape arithmetic that TensorRT folds
  once the shapes are static (Shape, Gather of a shape, Unsqueeze of constants ...) is no layer.
* FP32 layers: the DLA runs FP16 and INT8 only. A graph with no FP16 or INT8 at all runs
  entirely on the GPU, which is one line rather than one per layer.
* layers outside the DLA's limits in TensorRT's "DLA Supported Layers and Restrictions":
  convolutions 2D with kernels of 1 to 32, strides of 1 to 8, padding of 0 to 31; deconvolutions
  2D, not grouped or dilated, without padding; pooling 2D with kernels of 1 to 8, strides of 1
  to 16, padding of 0 to 7; concatenation along the channel axis only; a softmax in FP16.

Sources: TensorRT's "DLA Supported Layers and Restrictions"
(https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/dla-layer-restrictions.html),
"Working with DLA" for TensorRT 11.3
(https://docs.nvidia.com/deeplearning/tensorrt/11.3.0/inference-library/work-with-dla.html),
"Strongly Typed Networks for DLA" for TensorRT 11.4.1
(https://docs.nvidia.com/deeplearning/tensorrt/11.4.1/inference-library/dla-strongly-typed-networks.html), and
NVIDIA's "Supported ONNX Operators & Functions on Orin DLA"
(https://github.com/NVIDIA/Deep-Learning-Accelerator-SW/blob/main/operators/README.md, for
TensorRT 8.5.2 to 8.6.12).
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from .tensorrt_graph import Graph, data_inputs, node_label
from .tensorrt_report import ERROR, NOTE, Problem

DLA_RELEASES: Tuple[str, ...] = ("8.5", "8.6", "10")

# "Native" in the "Orin DLA support through TensorRT" column.
DLA_NATIVE = frozenset({
    "Abs", "Add", "AveragePool", "BatchNormalization", "Clip", "Concat", "Conv", "ConvTranspose", "Equal",
    "Gemm", "LeakyRelu", "LRN", "MatMul", "Max", "MaxPool", "Mul", "PRelu", "Relu", "Reshape", "Resize",
    "Sigmoid", "Slice", "Softmax", "Split", "Sub", "Sum", "Tanh", "Transpose", "Upsample",
})
# "Native (as of TensorRT 8.6.12)": DRIVE OS's 8.6; JetPack 6.0 has 8.6.2.
DLA_NATIVE_FROM_10 = frozenset({"Atanh", "Cos", "Div", "GlobalMaxPool", "Greater", "Less", "Sin"})
# "Reconstruction": the DLA runs them only once the graph is rewritten into native operators.
DLA_RECONSTRUCTION = frozenset({
    "And", "CumSum", "DepthToSpace", "DequantizeLinear", "Gather", "GatherElements", "GatherND", "GRU",
    "Identity", "LSTM", "Neg", "Not", "Or", "QuantizeLinear", "ReduceSum", "RNN", "Scatter", "ScatterElements",
    "SpaceToDepth", "Where", "Xor",
})
# No layer once the shapes are static: TensorRT computes them while building.
BUILD_TIME = frozenset({"Constant", "ConstantOfShape", "Shape", "Size"})
# Tensor types the DLA computes in.
DLA_TYPES = ("FP16", "INT8")

TENSORRT_11 = (
    "DLA: TensorRT 11 has a DLA only from 11.4.1, on Jetson AGX Orin with JetPack 7.2.2 or later (11.0 to 11.4.0 "
    "have none); JetPack 5 and 6 use it through TensorRT 8.5, 8.6 and 10.3"
)


def _dims(value: Any) -> List[Optional[int]]:
    return [
        int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None
        for d in value.type.tensor_type.shape.dim
    ]


def _shape_text(dims: Sequence[Optional[int]]) -> str:
    return "x".join("?" if d is None else str(d) for d in dims)


def _dims_text(value: Any) -> str:
    """``NxHxWx3``: fixed dims by value, dynamic ones by name (``?`` when unnamed)."""
    return "x".join(
        str(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?")
        for d in value.type.tensor_type.shape.dim
    )


def _fixed_example(value: Any) -> str:
    """``1xHxWx3`` for an ``N x H x W x 3`` input: batch 1, the other dynamic dims by name."""
    parts = []
    for axis, d in enumerate(value.type.tensor_type.shape.dim):
        if d.HasField("dim_value") and d.dim_value > 0:
            parts.append(str(d.dim_value))
        else:
            parts.append("1" if axis == 0 else (d.dim_param or "?"))
    return "x".join(parts)


def check_static_profile(
    graph: Graph, profile: Optional[Mapping[str, Mapping[str, Sequence[int]]]]
) -> Iterable[str]:
    """A message for each input the DLA would see with a dynamic shape."""
    for value in graph.inputs:
        dims = _dims(value)
        shapes = (profile or {}).get(value.name)
        if shapes is None:
            if any(d is None for d in dims):
                yield (
                    f"graph input '{value.name}' is {_dims_text(value)} (dynamic) and the DLA has no dynamic dimensions: give "
                    f"it one fixed shape, --shapes {value.name}:{_fixed_example(value)} (min = opt = max)"
                )
            continue
        low, mid, high = (list(shapes[k]) for k in ("min", "opt", "max"))
        if not low == mid == high:
            yield (
                f"graph input '{value.name}' has the profile min={_shape_text(low)} opt={_shape_text(mid)} max={_shape_text(high)}; "
                f"the DLA needs min = opt = max (--shapes {value.name}:{_shape_text(mid)})"
            )


def _static_tensors(graph: Graph) -> Set[str]:
    """Tensors TensorRT knows while building once every shape is fixed: weights, shapes and
    whatever is computed from them alone."""
    static = set(graph.initializers) | set(graph.constants)
    for node in graph.nodes:
        inputs = [t for t in node.input if t]
        if node.op_type in BUILD_TIME or (inputs and all(t in static for t in inputs)):
            static.update(t for t in node.output if t)
    return static


def _ints(graph: Graph, node: Any, name: str, default: Sequence[int]) -> List[int]:
    for attr in node.attribute:
        if attr.name == name:
            return list(attr.ints) if attr.ints else [int(attr.i)]
    return list(default)


def _kernel(graph: Graph, node: Any) -> List[int]:
    kernel = _ints(graph, node, "kernel_shape", [])
    if not kernel and len(node.input) > 1 and node.input[1] in graph.initializers:
        kernel = list(graph.initializers[node.input[1]].dims)[2:]
    return kernel


def _outside(values: Sequence[int], low: int, high: int) -> bool:
    return any(not low <= v <= high for v in values)


def layer_limit(graph: Graph, node: Any) -> Optional[str]:
    """Why a native operator still cannot run on the DLA, or None."""
    op = node.op_type
    if op in ("Conv", "ConvTranspose", "MaxPool", "AveragePool"):
        kernel = _kernel(graph, node)
        if kernel and len(kernel) != 2:
            return f"{len(kernel)}-D {op} (the DLA is 2-D only)"
        strides = _ints(graph, node, "strides", [1, 1])
        pads = _ints(graph, node, "pads", [0, 0, 0, 0])
        if op == "Conv":
            if _outside(kernel, 1, 32) or _outside(strides, 1, 8) or _outside(pads, 0, 31):
                return f"kernel {kernel}, strides {strides}, pads {pads} (DLA: kernel 1-32, stride 1-8, padding 0-31)"
            if _outside(_ints(graph, node, "dilations", [1, 1]), 1, 32):
                return "dilation over 32"
        elif op == "ConvTranspose":
            if any(pads) or _ints(graph, node, "group", [1]) != [1] or _ints(graph, node, "dilations", [1, 1]) != [1, 1]:
                return "padded, grouped or dilated deconvolution (DLA: none of these)"
            if _outside(kernel, 1, 32):
                return f"kernel {kernel} (DLA: 1-32)"
        elif _outside(kernel, 1, 8) or _outside(strides, 1, 16) or _outside(pads, 0, 7):
            return f"kernel {kernel}, strides {strides}, pads {pads} (DLA: kernel 1-8, stride 1-16, padding 0-7)"
    if op == "Concat":
        axis = _ints(graph, node, "axis", [1])[0]
        if axis != 1 or len([t for t in node.input if t]) < 2:
            return f"concatenation along axis {axis} (DLA: the channel axis, two inputs or more)"
    if op in ("MatMul", "Gemm") and len(node.input) > 1 and not graph.is_weight(node.input[1]):
        return "a second input that is not a constant"
    if op == "Softmax" and any(graph.type_name(t) != "FP16" for t in node.input[:1]):
        return "a softmax not in FP16 (the DLA's softmax is FP16 only)"
    return None


def _computes_in(graph: Graph, node: Any) -> Optional[str]:
    """FP16, INT8 (behind a DequantizeLinear), FP32 ... by the node's data inputs."""
    types = []
    for i in data_inputs(graph, node):
        tensor = node.input[i]
        producer = graph.producer.get(tensor)
        if producer is not None and graph.nodes[producer].op_type == "DequantizeLinear":
            types.append("INT8")
        else:
            types.append(graph.type_name(tensor))
    for kind in ("INT8", "FP16"):
        if kind in types:
            return kind
    return next((t for t in types if t), None)


def fallback_reason(graph: Graph, node: Any, release: str) -> Optional[str]:
    """Why the layer of ``node`` would not run on the DLA of ``release``, or None."""
    op = node.op_type
    native = op in DLA_NATIVE or (op in DLA_NATIVE_FROM_10 and release not in ("8.5", "8.6"))
    if not native:
        if op in DLA_RECONSTRUCTION:
            return f"{op} runs on the DLA only once the graph is rewritten into other operators"
        return f"{op} is not a DLA operator through TensorRT"
    precision = _computes_in(graph, node)
    if precision == "UINT8":
        return None  # the parser refuses it already (check_uint8)
    if precision is not None and precision not in DLA_TYPES:
        return f"{op} computes in {precision} (the DLA runs FP16 and INT8 only)"
    limit = layer_limit(graph, node)
    return f"{op} with {limit}" if limit else None


def _names(labels: Sequence[str], shown: int = 3) -> str:
    more = f", ... ({len(labels) - shown} more)" if len(labels) > shown else ""
    return ", ".join(labels[:shown]) + more


def check_dla(
    graph: Graph,
    releases: Sequence[str],
    profile: Optional[Mapping[str, Mapping[str, Sequence[int]]]],
    gpu_fallback: bool = True,
) -> List[Problem]:
    """The DLA's problems for ``releases``: errors for what no DLA build can do, one line per
    reason for the layers that would run on the GPU (notes with ``gpu_fallback``), and a note
    on which TensorRT 11 has a DLA."""
    problems: List[Problem] = []
    if "11" in releases:
        problems.append(Problem(("11",), "dla", TENSORRT_11, severity=NOTE))
    dla = tuple(releases)
    for message in check_static_profile(graph, profile):
        problems.append(Problem(dla, "dla", message))
    fallback = NOTE if gpu_fallback else ERROR
    verb = "would run on the GPU" if gpu_fallback else "cannot run on the DLA (GPU fallback is off)"
    float_types = {graph.type_name(t) for t in graph.types} & {"FP16", "INT8", "FP8", "BF16"}
    has_qdq = any(n.op_type == "DequantizeLinear" for n in graph.nodes)
    if not float_types and not has_qdq:
        problems.append(Problem(dla, "dla", (
            f"DLA: the graph computes in FP32 and the DLA runs FP16 and INT8 only: every layer {verb} "
            "(export with --fp16 or --int8)"
        ), severity=fallback))
        return problems
    static = _static_tensors(graph)
    grouped: Dict[Tuple[Tuple[str, ...], str], List[str]] = {}
    for index, node in enumerate(graph.nodes):
        outputs = [t for t in node.output if t]
        if node.op_type in BUILD_TIME or (outputs and all(t in static for t in outputs)):
            continue
        reasons: Dict[str, List[str]] = {}
        for release in dla:
            reason = fallback_reason(graph, node, release)
            if reason:
                reasons.setdefault(reason, []).append(release)
        for reason, found in reasons.items():
            grouped.setdefault((tuple(found), reason), []).append(node_label(node, index))
    for (found, reason), labels in grouped.items():
        count = f"{len(labels)} nodes" if len(labels) > 1 else "node"
        problems.append(Problem(found, "dla", f"DLA: {count} {_names(labels)} {verb}: {reason}", severity=fallback))
    return problems


__all__ = ["DLA_NATIVE", "DLA_RELEASES", "check_dla", "check_static_profile", "fallback_reason", "layer_limit"]
