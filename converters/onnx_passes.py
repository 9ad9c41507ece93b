"""Graph hygiene shared by every exported variant (FP32, FP16, INT8).

The ways an exported segmentation model usually fails its user, and the pass that prevents
each:

* a dynamic dimension that comes out as an expression (the dynamo exporter writes the
  FCN-8s output height as ``Min(H + 31, ...) - 31``): :func:`require_plain_dims`;
* an IR version the runtime rejects (onnx 1.23 writes IR 14 by default, which
  onnxruntime-gpu 1.31 refuses; TensorRT's parser is older still): :func:`set_ir_version`
  writes the lowest IR version the graph's opsets need, which every runtime accepts;
* leftovers of tracing (shape arithmetic, identity ops): :func:`simplify` with onnxslim;
* a graph ONNX itself considers invalid: :func:`check_and_infer` (checker plus strict
  shape inference);
* a half-written file in place of a good one when a later step fails: :func:`save_atomic`.
"""
from __future__ import annotations

import logging
import os
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fcn_deploy.errors import FcnDeployError, first_line
from fcn_deploy.fileio import atomic_write

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
# The highest IR version we let through: onnxruntime >= 1.16 and TensorRT >= 8.6 read it.
MAX_IR_VERSION = 10

DimSpec = Union[int, str]


class ExportError(FcnDeployError):
    """An exported graph that would not deploy: bad dims, failed check, failed pass."""


def set_ir_version(model: onnx.ModelProto, max_ir: int = MAX_IR_VERSION) -> int:
    """Set the model's IR version to the lowest one its opset imports need; return it.

    The lowest suitable IR version is the one every reader accepts: opset 17 needs IR 8
    (onnx 1.12), which onnxruntime 1.12+ and TensorRT 8.6's parser read.
    """
    needed = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    if needed > max_ir:
        raise ExportError(
            f"opsets {[(o.domain or 'ai.onnx', o.version) for o in model.opset_import]} need IR "
            f"version {needed}, above {max_ir} that current runtimes load; export with a lower --opset"
        )
    model.ir_version = needed
    return needed


def _dims(value: onnx.ValueInfoProto) -> Tuple[Optional[DimSpec], ...]:
    out = []
    for d in value.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(d.dim_value)
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return tuple(out)


def graph_io_dims(model: onnx.ModelProto) -> Dict[str, Tuple[Optional[DimSpec], ...]]:
    """Name -> declared dims of every graph input and output."""
    return {v.name: _dims(v) for v in list(model.graph.input) + list(model.graph.output)}


def require_plain_dims(model: onnx.ModelProto, expected: Dict[str, Sequence[DimSpec]]) -> None:
    """Every graph input/output named in ``expected`` must declare exactly those dims.

    ``expected`` maps a tensor name to ints (fixed sizes) and plain names (``"N"``, ``"H"``,
    ``"W"``); an expression, a missing dim or another name is an :class:`ExportError`.
    """
    declared = graph_io_dims(model)
    for name, want in expected.items():
        got = declared.get(name)
        if got is None:
            raise ExportError(f"exported graph has no input or output named {name!r}")
        if tuple(got) != tuple(want):
            raise ExportError(
                f"exported {name} has dims {list(got)}, expected {list(want)}: a dynamic dimension "
                "came out as an expression or a constant"
            )


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold constants and remove tracing leftovers with onnxslim, keeping the declared I/O dims."""
    import onnxslim

    before = graph_io_dims(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            slim = onnxslim.slim(model)
        except Exception as exc:  # onnxslim raises whatever its passes raise
            raise ExportError(f"onnxslim failed: {type(exc).__name__}: {exc}") from None
    if slim is None:
        raise ExportError("onnxslim returned no model")
    # onnxslim may re-run shape inference and rewrite the declared output dims; the declared
    # plain names are part of the contract, so put them back.
    restore_io_dims(slim, before)
    return slim


def restore_io_dims(model: onnx.ModelProto, dims: Dict[str, Sequence[Optional[DimSpec]]]) -> None:
    """Write ``dims`` (from :func:`graph_io_dims`) back onto the graph inputs and outputs."""
    for value in list(model.graph.input) + list(model.graph.output):
        if value.name not in dims:
            continue
        shape = value.type.tensor_type.shape
        del shape.dim[:]
        for d in dims[value.name]:
            dim = shape.dim.add()
            if isinstance(d, int):
                dim.dim_value = d
            elif isinstance(d, str):
                dim.dim_param = d


def check_and_infer(model: onnx.ModelProto) -> onnx.ModelProto:
    """Run strict shape inference and the full onnx checker; return the inferred model."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
        onnx.checker.check_model(inferred, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = first_line(exc)
        raise ExportError(f"exported graph is invalid: {first}") from None
    return inferred


def set_metadata(model: onnx.ModelProto, props: Dict[str, str]) -> None:
    """Replace the model's ``metadata_props`` by ``props`` (keys sorted, for stable files)."""
    del model.metadata_props[:]
    for key in sorted(props):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, props[key]


def get_metadata(model: onnx.ModelProto) -> Dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def save_atomic(model: onnx.ModelProto, path: str) -> str:
    """Write ``model`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    A failure at any point leaves whatever was at ``path`` before untouched.
    """
    path = os.path.abspath(path)
    if os.path.isdir(path):
        raise ExportError(f"output {path} is a directory; give a file name ending in .onnx")
    try:
        atomic_write(path, model.SerializeToString())
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def producers(graph: onnx.GraphProto) -> Dict[str, onnx.NodeProto]:
    """Tensor name -> the node that writes it."""
    return {out: node for node in graph.node for out in node.output}


def consumers(graph: onnx.GraphProto) -> Dict[str, List[onnx.NodeProto]]:
    """Tensor name -> the nodes that read it (a node reading it twice is listed twice)."""
    uses: Dict[str, List[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            uses.setdefault(name, []).append(node)
    return uses


def drop_unused_initializers(graph: onnx.GraphProto) -> None:
    """Remove, in place, the initializers that no node reads and no graph output names (what a
    rewrite leaves behind when it replaces the nodes that read them)."""
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def forget_shapes(graph: onnx.GraphProto, changed: Sequence[str] = ()) -> None:
    """Drop, in place, the inferred shapes (``value_info``) of tensors that no node writes any
    more and of the ``changed`` ones (kept by name, written with another shape), so that shape
    inference fills them in afresh instead of contradicting the rewritten graph."""
    produced = {out for node in graph.node for out in node.output} - set(changed)
    kept = [v for v in graph.value_info if v.name in produced]
    del graph.value_info[:]
    graph.value_info.extend(kept)


def constant_value(graph: onnx.GraphProto, name: str) -> Optional[np.ndarray]:
    """The value of tensor ``name`` where the graph fixes it (an initializer, or a ``Constant``
    node's ``value``), else ``None`` (computed, a graph input, or a Constant of another form)."""
    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            value = attribute(node, "value")
            return numpy_helper.to_array(value) if value is not None else None
    return None


def attribute(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """The value of ``node``'s attribute ``name``, or ``default`` when it is not set."""
    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def elem_type(value: onnx.ValueInfoProto) -> int:
    return value.type.tensor_type.elem_type


FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16
