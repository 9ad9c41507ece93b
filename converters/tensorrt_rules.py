"""The rules of TensorRT's ONNX parser, one function each, per release.

Each rule yields findings ``(releases, rule, node index or None, message, from_matrix)`` that
:func:`fcn_deploy.converters.tensorrt_check.check_onnx` merges into one line per problem; what
each rule stands for, and where it comes from, is in that module's docstring.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from . import tensorrt_operators as matrices
from .tensorrt_graph import DEFAULT_DOMAINS, QDQ, TYPE_NAMES, Graph, as_text, attr_value, data_inputs, node_label
from .tensorrt_report import MATRIX

UINT8_INTERMEDIATE_REFUSED = ("8.6", "10", "11")  # ModelImporter.cpp, from release 8.6-GA on
ZERO_POINT_REQUIRED = ("8.5", "8.6")  # 8.x's Q/DQ importer reads input 2 unconditionally
UINT8_CAST_PARTNERS = ("FP32", "FP16")

Finding = Tuple[Tuple[str, ...], str, Optional[int], str, bool]


def _row(release: str, op: str) -> Optional[matrices.Row]:
    return matrices.OPERATORS[MATRIX[release]].get(op)


def _narrowed(release: str, type_name: str) -> str:
    return matrices.CAST_DOWN[MATRIX[release]].get(type_name, type_name)


def _types_text(types: Sequence[str]) -> str:
    return ", ".join(types) if types else "no types"


def check_opset(graph: Graph, releases: Sequence[str]) -> Iterable[Finding]:
    if graph.opset is None:
        yield tuple(releases), "opset", None, "the model imports no ONNX-domain opset", False
        return
    for release in releases:
        low, high = matrices.OPSETS[MATRIX[release]]
        if graph.opset > high:
            yield (release,), "opset", None, (
                f"opset {graph.opset} is newer than the parser's operator matrix covers (up to opset {high}); "
                "export at an opset it covers (fcn-deploy exports at 17)"
            ), True
        elif low is not None and graph.opset < low:
            yield (release,), "opset", None, (
                f"opset {graph.opset} is older than the parser's operator matrix covers (opset {low} to {high})"
            ), True


def check_operators(graph: Graph, releases: Sequence[str]) -> Iterable[Finding]:
    for index, node in enumerate(graph.nodes):
        label = node_label(node, index)
        if node.domain not in DEFAULT_DOMAINS:
            yield tuple(releases), "operator", index, (
                f"node {label} is operator {node.op_type} of domain {node.domain}, not an ONNX operator: "
                f"the parser imports it only as a TensorRT plugin named {node.op_type}"
            ), False
            continue
        for release in releases:
            row = _row(release, node.op_type)
            if row is None:
                yield (release,), "operator", index, (
                    f"node {label}: {node.op_type} is not in the parser's operator matrix "
                    f"(the parser imports it only as a TensorRT plugin of that name)"
                ), True
            elif not row[0]:
                yield (release,), "operator", index, f"node {label}: the parser does not support {node.op_type}", True


def _supported(graph: Graph, release: str, node: Any) -> Optional[matrices.Row]:
    row = _row(release, node.op_type) if node.domain in DEFAULT_DOMAINS else None
    return row if row is not None and row[0] else None


def check_data_types(graph: Graph, releases: Sequence[str]) -> Iterable[Finding]:
    """The matrix's type list against data inputs (UINT8 activations and Q/DQ quantized types
    are left to their own rules, which say more)."""
    for index, node in enumerate(graph.nodes):
        label = node_label(node, index)
        if node.op_type in ("Cast", "CastLike"):
            yield from _check_cast(graph, releases, index, node, label)
            continue
        if node.op_type == "DequantizeLinear":
            continue  # its input type is the quantized type: check_qdq
        if node.op_type in ("Constant", "ConstantOfShape"):
            tensors = [(node.output[0], "makes")] if node.output else []
        else:
            tensors = [(node.input[i], "takes") for i in data_inputs(graph, node)]
        for release in releases:
            row = _supported(graph, release, node)
            if row is None:
                continue
            for tensor, verb in tensors:
                name = graph.type_name(tensor)
                if name is None or name == "UINT8" and (verb == "makes" or graph.is_activation(tensor)):
                    continue  # unknown, or a UINT8 rule's case
                if _narrowed(release, name) not in row[1]:
                    yield (release,), "data-type", index, (
                        f"node {label} {verb} {name} tensor {tensor}; the parser's {node.op_type} takes "
                        f"{_types_text(row[1])}"
                    ), True


def _check_cast(graph: Graph, releases: Sequence[str], index: int, node: Any, label: str) -> Iterable[Finding]:
    source = graph.type_name(node.input[0]) if node.input else None
    if node.op_type == "Cast":
        to = attr_value(node, "to")
        target = TYPE_NAMES.get(int(to), f"type {to}") if to is not None else None
    else:
        target = graph.type_name(node.input[1]) if len(node.input) > 1 else None
    if source is None or target is None:
        return
    if "UINT8" in (source, target) and source != target:
        other = target if source == "UINT8" else source
        if other not in UINT8_CAST_PARTNERS:
            yield tuple(releases), "uint8", index, (
                f"node {label} casts {source} to {target}; TensorRT casts UINT8 only to and from FP32 or FP16"
            ), False
        return
    for release in releases:
        row = _supported(graph, release, node)
        if row is None:
            continue
        bad = [t for t in (source, target) if _narrowed(release, t) not in row[1]]
        if bad:
            yield (release,), "data-type", index, (
                f"node {label} casts {source} to {target}; the parser's {node.op_type} takes {_types_text(row[1])}"
            ), True


def check_uint8(graph: Graph, releases: Sequence[str]) -> Iterable[Finding]:
    """UINT8 only at the boundary: into a Cast, out of the graph (see the module docstring)."""
    later = tuple(r for r in releases if r in UINT8_INTERMEDIATE_REFUSED)
    for index, node in enumerate(graph.nodes):
        label = node_label(node, index)
        if node.op_type not in ("Cast", "CastLike", "DequantizeLinear"):
            for tensor in node.input:
                if graph.is_activation(tensor) and graph.type_name(tensor) == "UINT8":
                    what = f"the UINT8 graph input '{tensor}'" if tensor not in graph.producer else f"UINT8 tensor {tensor}"
                    yield tuple(releases), "uint8", index, (
                        f"node {label} takes {what}; TensorRT runs UINT8 only through a Cast to "
                        "FP32 or FP16 (a uint8 input must go straight into a Cast)"
                    ), False
        if later and node.op_type != "QuantizeLinear":
            for tensor in node.output:
                if tensor and tensor not in graph.outputs and graph.type_name(tensor) == "UINT8":
                    yield later, "uint8", index, (
                        f"node {label} makes UINT8 tensor {tensor} inside the graph; TensorRT's parser accepts UINT8 "
                        "only as a graph input or output (a uint8 input must go straight into a Cast)"
                    ), False


_INITIALIZER_SENTENCE = re.compile(r"must be (?:an )?initializers?\b|must be a constant tensor", re.IGNORECASE)


def initializer_inputs(restriction: str) -> List[str]:
    """The input names a matrix restriction says must be initializers: "`axes` must be an
    initializer", "Scales `scale` and biases `B` must be initializers", "`K` input must be ..."."""
    names: List[str] = []
    for sentence in re.split(r"(?<=\.)\s+", restriction):
        if _INITIALIZER_SENTENCE.search(sentence):
            names += re.findall(r"`([^`]+)`", sentence)
    return names


def check_initializers(graph: Graph, releases: Sequence[str]) -> Iterable[Finding]:
    for index, node in enumerate(graph.nodes):
        schema = graph.schema(node)
        if schema is None:
            continue
        positions = {formal.name: i for i, formal in enumerate(schema.inputs)}
        for release in releases:
            row = _supported(graph, release, node)
            if row is None:
                continue
            for name in initializer_inputs(row[2]):
                i = positions.get(name)
                if i is None or i >= len(node.input) or not node.input[i]:
                    continue  # an attribute at this opset, or an optional input left out
                tensor = node.input[i]
                if not graph.is_weight(tensor):
                    yield (release,), "initializer", index, (
                        f"node {node_label(node, index)} takes `{name}` from {tensor}, which the graph computes; "
                        "the parser needs it as an initializer (or a Constant)"
                    ), True


def check_qdq(graph: Graph, releases: Sequence[str]) -> Iterable[Finding]:
    """Symmetric INT8 Q/DQ: a zero point of 0 of a quantized type the parser takes, positive scales."""
    for index, node in enumerate(graph.nodes):
        if node.op_type not in QDQ or node.domain not in DEFAULT_DOMAINS:
            continue
        label = node_label(node, index)
        zero_point = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if zero_point is None:
            early = tuple(r for r in releases if r in ZERO_POINT_REQUIRED)
            if early:
                yield early, "qdq", index, (
                    f"node {label} has no zero point; TensorRT 8.x's parser needs one (INT8, all zeros)"
                ), False
            quantized = "INT8"  # what 10.x makes of it; the ONNX default (UINT8) is not taken
        elif node.op_type == "DequantizeLinear":
            quantized = graph.type_name(node.input[0]) or graph.type_name(zero_point)
        else:
            quantized = graph.type_name(zero_point)
        for release in releases:
            row = _row(release, "DequantizeLinear")
            allowed = row[1] if row else ("INT8",)
            if quantized is not None and quantized not in allowed:
                yield (release,), "qdq", index, (
                    f"node {label} {'dequantizes' if node.op_type == 'DequantizeLinear' else 'quantizes to'} "
                    f"{quantized}; the parser takes only {_types_text(allowed)} Q/DQ (symmetric, zero point 0)"
                ), True
        values = graph.value(zero_point) if zero_point else None
        if values is not None and np.any(values.astype(np.float64) != 0):
            yield tuple(releases), "qdq", index, (
                f"node {label} has a non-zero zero point ({zero_point}); TensorRT takes only symmetric "
                "quantization (zero points 0): export with --int8-scheme s8s8"
            ), False
        scale = graph.value(node.input[1]) if len(node.input) > 1 else None
        if scale is not None and scale.size and not np.all(scale.astype(np.float64) > 0):
            yield tuple(releases), "qdq", index, (
                f"node {label} has scales that are not all positive ({node.input[1]}); TensorRT's parser refuses them"
            ), False


# Matrix restriction sentences about attributes: "Supported resize modes: `nearest`, `linear`."
_SUPPORTED_VALUES = {
    "resize transformation modes": ("coordinate_transformation_mode", "half_pixel"),
    "resize modes": ("mode", "nearest"),
    "nearest modes": ("nearest_mode", "round_prefer_floor"),
    "aspect ratio policy": ("keep_aspect_ratio_policy", "stretch"),
}


def check_restrictions(graph: Graph, releases: Sequence[str]) -> Iterable[Finding]:
    """The attribute restrictions a matrix states in words and that can be read off a node."""
    for index, node in enumerate(graph.nodes):
        label = node_label(node, index)
        for release in releases:
            row = _supported(graph, release, node)
            if row is None or not row[2]:
                continue
            text = row[2]
            for phrase, (attribute, default) in _SUPPORTED_VALUES.items():
                match = re.search(rf"Supported {phrase}: ([^.]*)", text)
                if match:
                    allowed = re.findall(r"`([^`]+)`", match.group(1))
                    value = as_text(attr_value(node, attribute, default))
                    if value not in allowed:
                        yield (release,), "restriction", index, (
                            f"node {label} has {attribute} {value!r}; the parser supports {', '.join(allowed)}"
                        ), True
            if "Antialiasing is not supported" in text and attr_value(node, "antialias", 0):
                yield (release,), "restriction", index, f"node {label} antialiases; the parser does not", True
            if "`dilations` must be empty or all ones" in text and any(d != 1 for d in attr_value(node, "dilations", []) or []):
                yield (release,), "restriction", index, (
                    f"node {label} has dilations {list(attr_value(node, 'dilations'))}; the parser needs all ones"
                ), True
            if "2D or 3D" in text:
                kernel = attr_value(node, "kernel_shape")
                if kernel is not None and len(kernel) not in (2, 3):
                    yield (release,), "restriction", index, (
                        f"node {label} pools over {len(kernel)} dimension(s); the parser pools in 2D or 3D only"
                    ), True
            if "`Indices` output tensor unsupported" in text and len(node.output) > 1 and node.output[1]:
                yield (release,), "restriction", index, f"node {label} uses the Indices output; the parser does not", True
            if "`reduction` is not supported" in text and as_text(attr_value(node, "reduction", "none")) != "none":
                yield (release,), "restriction", index, f"node {label} reduces; the parser supports reduction 'none' only", True


PARSER_RULES = (check_opset, check_operators, check_data_types, check_uint8, check_initializers, check_qdq,
                check_restrictions)
