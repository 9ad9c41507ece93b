"""An ONNX graph as TensorRT's parser rules read it: element types, producers, weights, schemas.

Needs the ``onnx`` package, imported when a graph is read (:func:`load_model`, :class:`Graph`)
so that importing the checker costs nothing on a runtime-only install.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from fcn_deploy.errors import FcnDeployError, first_line

# ONNX TensorProto element types -> the names the matrices use.
TYPE_NAMES = {
    1: "FP32", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64", 8: "STRING",
    9: "BOOL", 10: "FP16", 11: "DOUBLE", 12: "UINT32", 13: "UINT64", 14: "COMPLEX64", 15: "COMPLEX128",
    16: "BF16", 17: "FP8", 18: "FLOAT8E4M3FNUZ", 19: "FLOAT8E5M2", 20: "FLOAT8E5M2FNUZ", 21: "UINT4", 22: "INT4",
}
DEFAULT_DOMAINS = ("", "ai.onnx")
QDQ = ("QuantizeLinear", "DequantizeLinear")


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
            (int(o.version) for o in model.opset_import if o.domain in DEFAULT_DOMAINS), None
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
            if node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS and node.output:
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
        return TYPE_NAMES.get(elem, f"type {elem}") if elem else None

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
        if node.domain not in DEFAULT_DOMAINS or self.opset is None:
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


def attr_value(node: Any, name: str, default: Any = None) -> Any:
    for attr in node.attribute:
        if attr.name == name:
            onnx = _onnx()
            return onnx.helper.get_attribute_value(attr)
    return default


def as_text(value: Any) -> Any:
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
    if schema is None or not schema.inputs or node.op_type in QDQ:  # Q/DQ: the zero point is the quantized type
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
