"""What TensorRT's ONNX parser would refuse, found where the ONNX is written: no TensorRT, no GPU.

No machine that writes an ONNX here can run TensorRT, and a graph the parser refuses is
otherwise only found on the Jetson. So :func:`check_onnx` reads the graph and applies, per
release, what the parser of that release accepts:

* **operators**: each release's operator support matrix (onnx-tensorrt ``docs/operators.md``,
  shipped as data in :mod:`fcn_deploy.converters.tensorrt_operators`). TensorRT 10 and 11 are checked
  against the 10.0 matrix, the nearest published (JetPack 6.1/6.2 carry 10.3). Operators from
  other domains (``com.microsoft`` ...) are not ONNX operators to the parser: it imports them
  only as plugins of that name.
* **data types**: the types the matrix lists apply to an operator's data inputs, the inputs
  that share the first input's type constraint in the ONNX schema (or the output's): not a
  Reshape's ``shape``, a Slice's ``starts`` or a Gather's ``indices``, which the parser reads
  as shape values. The matrices' notes say the parser narrows INT64 to INT32 (8.x) and DOUBLE
  to FLOAT before an operator sees them, so those count as the narrower type. A Cast checks
  both its source and its target type; a Constant or ConstantOfShape the type it makes.
* **UINT8** (parser code and TensorRT's ``DataType`` documentation, not the matrices):
  UINT8 exists only at the network's boundary. A UINT8 tensor may only go into a Cast to FP32
  or FP16 (everywhere: "use the IdentityLayer to convert uint8 network-level inputs"), a Cast
  to UINT8 only comes from FP32 or FP16 (8.5's Cast importer asserts both), and from 8.6 on
  ``ModelImporter.cpp`` refuses any node whose UINT8 output is not a graph output ("TensorRT
  does not support UINT8 types for intermediate tensors!"). So a uint8 camera frame must go
  straight into a Cast: even a Transpose of it before the Cast is refused.
* **initializer inputs**: where a matrix restriction says an input "must be an initializer"
  (or "a constant tensor"), that input, found by name in the ONNX schema at the graph's opset,
  must be a graph initializer or a Constant node's output (the parser imports both as weights).
* **Q/DQ**: symmetric INT8 only: every QuantizeLinear/DequantizeLinear needs a zero point of 0
  whose type the DequantizeLinear row lists (INT8; 10.0 adds FP8 and INT4; never UINT8, which
  is also ONNX's type when the zero point is left out, and which 8.x refuses outright), and
  positive scales (``QuantDequantLinearHelper`` in ``builtin_op_importers.cpp``; the DLA-only
  parser flag that admits asymmetric UINT8 is not one ``fcn-deploy build`` sets).
* **opset**: the range each matrix's header names (up to 17 for 8.5 and 8.6; 9 to 20 for 10.0).
* **restrictions** the matrices state about attributes: Resize modes, pooling rank and
  dilations, MaxPool's ``Indices`` output, ScatterND's ``reduction``.

With ``dla=True`` :mod:`fcn_deploy.converters.tensorrt_dla` adds the DLA's rules.

The check is conservative for 11 (a later parser accepts a few more things, such as UINT8
constants) and covers the top-level graph; If/Loop bodies are not entered.

:func:`check_onnx` returns a :class:`CheckReport`; :func:`require_tensorrt_conformance` raises
one :class:`TensorRTConformanceError` line for ``export`` and ``build`` to stop on.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Union

import numpy as np

from fcn_deploy.errors import FcnDeployError, first_line

from . import tensorrt_operators as matrices

RELEASES: Tuple[str, ...] = ("8.5", "8.6", "10", "11")
# The operator matrix each release is checked against: 10 and 11 have none published of their
# own, and 10.0's is the nearest (JetPack 6.1/6.2 carry 10.3).
MATRIX: Dict[str, str] = {"8.5": "8.5", "8.6": "8.6", "10": "10.0", "11": "10.0"}
UINT8_INTERMEDIATE_REFUSED = ("8.6", "10", "11")  # ModelImporter.cpp, from release 8.6-GA on
ZERO_POINT_REQUIRED = ("8.5", "8.6")  # 8.x's Q/DQ importer reads input 2 unconditionally
UINT8_CAST_PARTNERS = ("FP32", "FP16")
ERROR = "error"
NOTE = "note"

# ONNX TensorProto element types -> the names the matrices use.
_TYPE_NAMES = {
    1: "FP32", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64", 8: "STRING",
    9: "BOOL", 10: "FP16", 11: "DOUBLE", 12: "UINT32", 13: "UINT64", 14: "COMPLEX64", 15: "COMPLEX128",
    16: "BF16", 17: "FP8", 18: "FLOAT8E4M3FNUZ", 19: "FLOAT8E5M2", 20: "FLOAT8E5M2FNUZ", 21: "UINT4", 22: "INT4",
}
_DEFAULT_DOMAINS = ("", "ai.onnx")
_QDQ = ("QuantizeLinear", "DequantizeLinear")


def matrix_note(releases: Iterable[str]) -> str:
    """"10 and 11 per the 10.0 matrix ..." for the releases among ``releases`` it concerns, or ""."""
    later = [r for r in releases if MATRIX.get(r) != r]
    return f"{' and '.join(later)} per the {MATRIX[later[0]]} matrix, the nearest published" if later else ""


class TensorRTConformanceError(FcnDeployError):
    """The ONNX uses something the TensorRT parser of a supported release refuses."""


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """One thing a release refuses (``severity`` ``error``) or does differently (``note``:
    a layer the DLA hands to the GPU). ``releases`` are those it applies to; ``node`` and
    ``op_type`` are empty for the graph as a whole; ``rule`` names the rule (``operator``,
    ``data-type``, ``uint8``, ``initializer``, ``qdq``, ``opset``, ``restriction``, ``dla``)."""

    releases: Tuple[str, ...]
    rule: str
    message: str
    node: str = ""
    op_type: str = ""
    severity: str = ERROR
    from_matrix: bool = False  # the rule is an operator matrix's, so 10 and 11 mean the 10.0 one

    def line(self, label: str = "") -> str:
        """``camvid.onnx: TensorRT 8.6, 10, 11: node /Transpose (Transpose) makes ...``."""
        where = f"{label}: " if label else ""
        note = "note: " if self.severity == NOTE else ""
        matrix = f" ({matrix_note(self.releases)})" if self.from_matrix and matrix_note(self.releases) else ""
        return f"{where}TensorRT {', '.join(self.releases)}: {note}{self.message}{matrix}"


@dataclass
class CheckReport:
    """Every problem found, merged across releases (one line each)."""

    releases: Tuple[str, ...]
    opset: Optional[int]
    nodes: int
    problems: List[Problem] = field(default_factory=list)
    label: str = ""
    dla: bool = False

    @property
    def errors(self) -> List[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def notes(self) -> List[Problem]:
        return [p for p in self.problems if p.severity == NOTE]

    @property
    def ok(self) -> bool:
        """True when no release refuses the graph (notes do not count)."""
        return not self.errors

    def summary(self) -> str:
        """The line for a graph every release accepts."""
        where = f"{self.label}: " if self.label else ""
        details = [f"opset {self.opset}" if self.opset is not None else "no ONNX opset", f"{self.nodes} nodes"]
        if matrix_note(self.releases):
            details.append(matrix_note(self.releases))
        accepted = f"{where}accepted by the ONNX parser of TensorRT {', '.join(self.releases)} ({'; '.join(details)})"
        if self.dla:
            accepted += "; DLA: " + ("see the notes above" if self.notes else "every layer can run on it")
        return accepted

    def lines(self) -> List[str]:
        """One line per problem (errors first), or the summary when there are no errors."""
        lines = [p.line(self.label) for p in self.errors + self.notes]
        if self.ok:
            lines.append(self.summary())
        return lines

    def error_summary(self) -> str:
        """One line for an exception: how many problems, the first, and how to see them all."""
        errors = self.errors
        if not errors:
            return self.summary()
        where = self.label or "the ONNX"
        more = f" (and {len(errors) - 1} more: `fcn-deploy check {self.label or 'FILE'}` lists them)" if len(errors) > 1 else ""
        return f"TensorRT would refuse {where}: {errors[0].line()}{more}"


# --------------------------------------------------------------------------------------------
# Releases
# --------------------------------------------------------------------------------------------
def parse_releases(values: Optional[Iterable[str]]) -> Optional[Tuple[str, ...]]:
    """``["8.6,10", "11"]`` (``--tensorrt``, repeatable or comma-separated) -> ``("8.6", "10", "11")``
    in :data:`RELEASES` order; ``None`` when nothing was given. ``10.3`` means 10, ``11.0`` 11."""
    given = [v.strip() for value in (values or ()) for v in str(value).split(",") if v.strip()]
    if not given:
        return None
    chosen = set()
    for value in given:
        release = value if value in RELEASES else None
        if release is None and re.fullmatch(r"(1[01])(\.\d+)*", value):
            release = value.split(".")[0]
        if release is None and re.fullmatch(r"8\.[56](\.\d+)*", value):
            release = value[:3]
        if release is None:
            raise FcnDeployError(f"--tensorrt {value}: choose from {', '.join(RELEASES)}")
        chosen.add(release)
    return tuple(r for r in RELEASES if r in chosen)


def release_for_version(version: Sequence[int]) -> str:
    """The release whose rules apply to a running TensorRT ``(major, minor)``: 8.6.x -> ``8.6``,
    earlier 8.x -> ``8.5``, 9.x and 10.x -> ``10``, 11 and later -> ``11``."""
    major, minor = int(version[0]), int(version[1]) if len(version) > 1 else 0
    if major >= 11:
        return "11"
    if major >= 9:
        return "10"
    return "8.6" if (major, minor) >= (8, 6) else "8.5"


# --------------------------------------------------------------------------------------------
# The graph, as the rules need it
# --------------------------------------------------------------------------------------------
def _onnx():
    try:
        import onnx
    except ImportError:
        raise FcnDeployError("checking an ONNX graph needs the onnx package: pip install onnx") from None
    return onnx


def load_model(path: Union[str, "os.PathLike[str]"]) -> Any:
    """``onnx.load`` with one-line errors for a missing, unreadable or non-ONNX file."""
    onnx = _onnx()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FcnDeployError(f"ONNX file not found: {path}")
    if not os.path.isfile(path):
        raise FcnDeployError(f"{path} is not a file")
    try:
        model = onnx.load(path)
    except Exception as exc:  # DecodeError, OSError, missing external data ...
        raise FcnDeployError(f"cannot read ONNX file {path}: {first_line(exc)}") from None
    if not model.graph.node and not model.opset_import:
        raise FcnDeployError(f"{path} is not an ONNX model (no graph and no opset)")
    return model


def profile_for(model: Any, shapes: Sequence[str]) -> Dict[str, Dict[str, List[int]]]:
    """The optimisation profile ``--shapes`` values give for ``model``'s inputs, checked against
    the graph as ``fcn-deploy build`` checks it (:func:`converters.tensorrt_shapes.resolve_profile`)."""
    from fcn_deploy.runtime.metadata import ModelMetadata, has_fcn_deploy_metadata

    from .tensorrt_shapes import resolve_profile

    props = {p.key: p.value for p in model.metadata_props}
    metadata = ModelMetadata.from_props(props) if has_fcn_deploy_metadata(props) else None
    initializers = {init.name for init in model.graph.initializer}
    inputs = [
        (value.name, tuple(
            int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in value.type.tensor_type.shape.dim
        ))
        for value in model.graph.input if value.name not in initializers
    ]
    return resolve_profile(inputs, metadata, list(shapes))


def node_label(node: Any, index: int) -> str:
    """``/Transpose (Transpose)``; an unnamed node by its index."""
    return f"{node.name or '#' + str(index)} ({node.op_type})"


class Graph:
    """Element types, producers, weights and schemas of one ONNX graph (top level)."""

    def __init__(self, model: Any):
        onnx = _onnx()
        self.model = model
        graph = model.graph
        self.opset: Optional[int] = next(
            (int(o.version) for o in model.opset_import if o.domain in _DEFAULT_DOMAINS), None
        )
        self.nodes = list(graph.node)
        self.initializers = {init.name: init for init in graph.initializer}
        self.constants: Dict[str, Any] = {}  # Constant outputs -> their TensorProto (None: not a tensor attribute)
        self.types: Dict[str, int] = {}
        self.producer: Dict[str, int] = {}
        for value in list(graph.input) + list(graph.output) + list(graph.value_info):
            if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
                self.types[value.name] = int(value.type.tensor_type.elem_type)
        for init in graph.initializer:
            self.types[init.name] = int(init.data_type)
        for index, node in enumerate(self.nodes):
            for out in node.output:
                if out:
                    self.producer[out] = index
            if node.op_type == "Constant" and node.domain in _DEFAULT_DOMAINS and node.output:
                tensor, elem = _constant_value(node, onnx)
                self.constants[node.output[0]] = tensor
                if elem:
                    self.types[node.output[0]] = elem
        self.inputs = [v for v in graph.input if v.name not in self.initializers]
        self.outputs = {v.name for v in graph.output}
        if any(out and out not in self.types for node in self.nodes for out in node.output):
            self._infer_types(onnx)

    def _infer_types(self, onnx: Any) -> None:
        """Fill the element types the file does not declare by ONNX shape inference on a copy
        without weight data (initializers become typed inputs), so a large model costs little."""
        helper = onnx.helper
        graph = self.model.graph
        weights = [
            helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)) for init in graph.initializer
        ]
        light = helper.make_model(
            helper.make_graph(list(graph.node), graph.name or "g", list(self.inputs) + weights,
                              list(graph.output), value_info=list(graph.value_info)),
            opset_imports=list(self.model.opset_import),
        )
        light.ir_version = self.model.ir_version or light.ir_version
        try:
            inferred = onnx.shape_inference.infer_shapes(light, strict_mode=False)
        except Exception:  # an op inference cannot handle: keep what the file declares
            return
        for value in list(inferred.graph.value_info) + list(inferred.graph.output):
            elem = value.type.tensor_type.elem_type if value.type.HasField("tensor_type") else 0
            if elem and value.name not in self.types:
                self.types[value.name] = int(elem)

    # -- questions the rules ask ---------------------------------------------------------
    def type_name(self, tensor: str) -> Optional[str]:
        elem = self.types.get(tensor)
        return _TYPE_NAMES.get(elem, f"type {elem}") if elem else None

    def is_weight(self, tensor: str) -> bool:
        """An initializer or a Constant's output: what the parser imports as weights."""
        return tensor in self.initializers or tensor in self.constants

    def is_activation(self, tensor: str) -> bool:
        """A graph input or a non-Constant node's output: a tensor at run time."""
        return bool(tensor) and not self.is_weight(tensor)

    def value(self, tensor: str) -> Optional[np.ndarray]:
        """The data of a weight, or None when it is computed (or not readable here)."""
        onnx = _onnx()
        proto = self.initializers.get(tensor, self.constants.get(tensor))
        if proto is None:
            return None
        try:
            return onnx.numpy_helper.to_array(proto)
        except Exception:  # external data that was not loaded
            return None

    def schema(self, node: Any) -> Any:
        if node.domain not in _DEFAULT_DOMAINS or self.opset is None:
            return None
        try:
            return _onnx().defs.get_schema(node.op_type, self.opset, "")
        except Exception:  # SchemaError: not an ONNX operator at this opset
            return None


def _constant_value(node: Any, onnx: Any) -> Tuple[Any, int]:
    """(TensorProto or None, element type) of a Constant node's value attribute."""
    for attr in node.attribute:
        if attr.name == "value":
            return attr.t, int(attr.t.data_type)
        if attr.name == "sparse_value":
            return None, int(attr.sparse_tensor.values.data_type)
        if attr.name in ("value_float", "value_floats"):
            values = [attr.f] if attr.name == "value_float" else list(attr.floats)
            return onnx.numpy_helper.from_array(np.array(values if attr.name.endswith("s") else values[0], np.float32)), 1
        if attr.name in ("value_int", "value_ints"):
            values = [attr.i] if attr.name == "value_int" else list(attr.ints)
            return onnx.numpy_helper.from_array(np.array(values if attr.name.endswith("s") else values[0], np.int64)), 7
    return None, 0


def _attr(node: Any, name: str, default: Any = None) -> Any:
    for attr in node.attribute:
        if attr.name == name:
            onnx = _onnx()
            return onnx.helper.get_attribute_value(attr)
    return default


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _formal(schema: Any, index: int) -> Any:
    """The schema's formal input for a node's input ``index`` (variadic ones repeat)."""
    formals = list(schema.inputs)
    if index < len(formals):
        return formals[index]
    if formals and formals[-1].option == _onnx().defs.OpSchema.FormalParameterOption.Variadic:
        return formals[-1]
    return None


def _is_type_parameter(type_str: str) -> bool:
    return not type_str.startswith(("tensor(", "seq(", "map(", "optional("))


def data_inputs(graph: Graph, node: Any) -> List[int]:
    """Indices of the inputs a matrix's type list is about: those that share the first input's
    type constraint (or the output's, as a Where's values do). Shape-like inputs (a Reshape's
    ``shape``, a Slice's ``starts``, a Gather's ``indices``) have their own constraint."""
    present = [i for i, name in enumerate(node.input) if name]
    schema = graph.schema(node)
    if schema is None or not schema.inputs or node.op_type in _QDQ:  # Q/DQ: the zero point is the quantized type
        return [i for i in present if i == 0]
    first = _formal(schema, 0)
    keys = {first.type_str}
    if schema.outputs and _is_type_parameter(schema.outputs[0].type_str):
        keys.add(schema.outputs[0].type_str)
    chosen = []
    for i in present:
        formal = _formal(schema, i)
        if formal is not None and formal.type_str in keys:
            chosen.append(i)
    return chosen


# --------------------------------------------------------------------------------------------
# The rules: each yields (releases, rule, node index or None, message, from_matrix)
# --------------------------------------------------------------------------------------------
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
        if node.domain not in _DEFAULT_DOMAINS:
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
    row = _row(release, node.op_type) if node.domain in _DEFAULT_DOMAINS else None
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
        to = _attr(node, "to")
        target = _TYPE_NAMES.get(int(to), f"type {to}") if to is not None else None
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
        if node.op_type not in _QDQ or node.domain not in _DEFAULT_DOMAINS:
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
                    value = _text(_attr(node, attribute, default))
                    if value not in allowed:
                        yield (release,), "restriction", index, (
                            f"node {label} has {attribute} {value!r}; the parser supports {', '.join(allowed)}"
                        ), True
            if "Antialiasing is not supported" in text and _attr(node, "antialias", 0):
                yield (release,), "restriction", index, f"node {label} antialiases; the parser does not", True
            if "`dilations` must be empty or all ones" in text and any(d != 1 for d in _attr(node, "dilations", []) or []):
                yield (release,), "restriction", index, (
                    f"node {label} has dilations {list(_attr(node, 'dilations'))}; the parser needs all ones"
                ), True
            if "2D or 3D" in text:
                kernel = _attr(node, "kernel_shape")
                if kernel is not None and len(kernel) not in (2, 3):
                    yield (release,), "restriction", index, (
                        f"node {label} pools over {len(kernel)} dimension(s); the parser pools in 2D or 3D only"
                    ), True
            if "`Indices` output tensor unsupported" in text and len(node.output) > 1 and node.output[1]:
                yield (release,), "restriction", index, f"node {label} uses the Indices output; the parser does not", True
            if "`reduction` is not supported" in text and _text(_attr(node, "reduction", "none")) != "none":
                yield (release,), "restriction", index, f"node {label} reduces; the parser supports reduction 'none' only", True


PARSER_RULES = (check_opset, check_operators, check_data_types, check_uint8, check_initializers, check_qdq,
                check_restrictions)


# --------------------------------------------------------------------------------------------
# The entry points
# --------------------------------------------------------------------------------------------
def merge(findings: Iterable[Finding], graph: Graph, releases: Sequence[str], severity: str = ERROR) -> List[Problem]:
    """One :class:`Problem` per distinct message, naming every release it applies to, in the
    order first found (graph-level problems first)."""
    merged: Dict[Tuple[str, Optional[int], str, bool], Set[str]] = {}
    for found_releases, rule, index, message, from_matrix in findings:
        merged.setdefault((rule, index, message, from_matrix), set()).update(found_releases)
    problems = []
    ordered = sorted(merged.items(), key=lambda item: -1 if item[0][1] is None else item[0][1])
    for (rule, index, message, from_matrix), found in ordered:
        node = graph.nodes[index] if index is not None else None
        problems.append(Problem(
            releases=tuple(r for r in releases if r in found),
            rule=rule,
            message=message,
            node=node.name if node is not None else "",
            op_type=node.op_type if node is not None else "",
            severity=severity,
            from_matrix=from_matrix,
        ))
    return problems


def check_onnx(
    model: Union[Any, str, "os.PathLike[str]"],
    releases: Optional[Sequence[str]] = None,
    *,
    dla: bool = False,
    profile: Optional[Mapping[str, Mapping[str, Sequence[int]]]] = None,
    gpu_fallback: bool = True,
    label: Optional[str] = None,
) -> CheckReport:
    """Check ``model`` (an ``onnx.ModelProto`` or a path) against TensorRT's ONNX parser.

    ``releases``: some of :data:`RELEASES` (default: all; with ``dla``, those that have a DLA,
    :data:`converters.tensorrt_dla.DLA_RELEASES`). ``dla``: add the DLA's rules; ``profile``
    is the optimisation profile ``{input: {"min": [...], "opt": [...], "max": [...]}}``
    (:func:`converters.tensorrt_shapes.resolve_profile`), which the DLA needs static; layers
    the DLA cannot run are notes with ``gpu_fallback`` (as ``fcn-deploy build --dla`` builds),
    errors without. ``label`` names the model in the lines (default: the file's name).
    """
    if not isinstance(model, (str, os.PathLike)):
        proto, default_label = model, ""
    else:
        proto, default_label = load_model(model), os.path.basename(os.fspath(model))
    if releases is None:
        if dla:
            from .tensorrt_dla import DLA_RELEASES

            releases = DLA_RELEASES
        else:
            releases = RELEASES
    unknown = [r for r in releases if r not in RELEASES]
    if unknown or not releases:
        raise FcnDeployError(
            f"unknown TensorRT release {', '.join(map(str, unknown)) or '(none given)'}; choose from {', '.join(RELEASES)}"
        )
    releases = tuple(r for r in RELEASES if r in set(releases))
    graph = Graph(proto)
    findings: List[Finding] = []
    for rule in PARSER_RULES:
        findings.extend(rule(graph, releases))
    problems = merge(findings, graph, releases)
    if dla:
        from .tensorrt_dla import check_dla

        problems += check_dla(graph, releases, profile, gpu_fallback)
    return CheckReport(
        releases=releases,
        opset=graph.opset,
        nodes=len(graph.nodes),
        problems=problems,
        label=default_label if label is None else label,
        dla=dla,
    )


def require_tensorrt_conformance(
    model: Union[Any, str, "os.PathLike[str]"],
    releases: Optional[Sequence[str]] = None,
    *,
    dla: bool = False,
    profile: Optional[Mapping[str, Mapping[str, Sequence[int]]]] = None,
    gpu_fallback: bool = True,
    label: Optional[str] = None,
) -> CheckReport:
    """:func:`check_onnx`, raising one :class:`TensorRTConformanceError` line when any release
    refuses the graph (for ``export`` before it writes and ``build`` before TensorRT parses)."""
    report = check_onnx(model, releases, dla=dla, profile=profile, gpu_fallback=gpu_fallback, label=label)
    if not report.ok:
        raise TensorRTConformanceError(report.error_summary())
    return report


__all__ = [
    "CheckReport",
    "Graph",
    "MATRIX",
    "Problem",
    "RELEASES",
    "TensorRTConformanceError",
    "check_onnx",
    "load_model",
    "parse_releases",
    "profile_for",
    "release_for_version",
    "require_tensorrt_conformance",
]
