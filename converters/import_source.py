"""Bring your own segmentation ONNX, part 1: what the source graph is.

:func:`read_source` finds the one image input (4-D, 3 channels, float32) and the score output
(``output_name``; else torchvision's ``out``; else the only 4-D output) of a user's ONNX file,
and says in one line why a graph is not one we can import (a classifier's ``N x 1000``, several
inputs, channels last, ...). A source newer than :data:`TARGET_OPSET` (torch's dynamo exporter
writes 18) is converted down to it where ONNX's version converter can. Nothing here changes
what the graph computes; :mod:`.import_dynamic` and :mod:`.import_onnx` do the surgery.
"""
from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Tuple

import onnx
import onnx.inliner
import onnx.version_converter
from onnx import TensorProto

from fcn_deploy.errors import first_line

from . import onnx_passes
from .onnx_passes import ExportError

log = logging.getLogger(__name__)

MIN_OPSET = 11  # Resize with sizes (opset 11) is what the upsampling and the size rewrite write
# The newest opset every supported TensorRT parses (8.5 and 8.6 stop at 17); a newer source is
# converted down to it where ONNX's version converter can (torch.onnx.export's dynamo exporter
# writes opset 18 even when asked for 17).
TARGET_OPSET = 17


class ImportError_(ExportError):
    """A source graph that cannot be imported (named so as not to shadow the built-in)."""


@dataclass
class SourceGraph:
    """The source ONNX and what :func:`read_source` found in it."""

    model: onnx.ModelProto
    path: str
    input_name: str
    input_dims: List[Any]
    output_name: str
    output_dims: List[Any]
    opset: int
    other_outputs: List[str] = field(default_factory=list)


def dims_of(value: onnx.ValueInfoProto) -> List[Any]:
    """A value's dims: ints where fixed, names where symbolic, ``None`` where unknown."""
    out: List[Any] = []
    for d in value.type.tensor_type.shape.dim:
        out.append(d.dim_value if d.HasField("dim_value") else (d.dim_param if d.HasField("dim_param") else None))
    return out


def dims_text(dims: Sequence[Any]) -> str:
    """``1x3x?x?``, as the one-line errors show shapes."""
    return "x".join("?" if d is None else str(d) for d in dims) if dims else "scalar"


def _ai_onnx_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0


def load_source(path: str) -> onnx.ModelProto:
    """The source ONNX, external data included; one line when it is missing or not ONNX."""
    if not os.path.isfile(path):
        raise ImportError_(f"{path}: no such file")
    try:
        return onnx.load(path)
    except Exception as exc:  # protobuf's DecodeError, a missing external-data file, ...
        raise ImportError_(f"{path} is not a readable ONNX file: {type(exc).__name__}: {first_line(exc)}") from None


def convert_opset(model: onnx.ModelProto, opset: int, name: str) -> Tuple[onnx.ModelProto, int]:
    """``model`` at :data:`TARGET_OPSET` when ONNX's version converter manages, else as it is
    (then ``fcn-deploy check`` names the TensorRT releases that refuse the newer opset)."""
    model = copy.deepcopy(model)
    for node in model.graph.node:
        # Opset 18's Reduce* attribute, at its default (0) a no-op, which the converter's
        # adapters do not drop when they move `axes` back into an attribute.
        if node.op_type.startswith("Reduce") and onnx_passes.attribute(node, "noop_with_empty_axes", 0) == 0:
            for attr in list(node.attribute):
                if attr.name == "noop_with_empty_axes":
                    node.attribute.remove(attr)
    try:
        converted = onnx.version_converter.convert_version(model, TARGET_OPSET)
        onnx.checker.check_model(converted)
    except Exception as exc:  # the converter raises RuntimeError, ValidationError, ...
        log.warning("%s: opset %d kept (TensorRT 8.5/8.6 parse up to %d): %s", name, opset, TARGET_OPSET,
                    first_line(exc))
        return model, opset
    log.info("%s: converted from opset %d to %d, which every supported TensorRT parses", name, opset, TARGET_OPSET)
    return converted, TARGET_OPSET


def read_source(model: onnx.ModelProto, path: str = "model.onnx", output_name: Optional[str] = None) -> SourceGraph:
    """Find the image input and the score output of ``model`` (see the module docstring)."""
    name = os.path.basename(path)
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    opset = _ai_onnx_opset(model)
    if opset > TARGET_OPSET:
        model, opset = convert_opset(model, opset, name)
    if opset < MIN_OPSET:
        raise ImportError_(f"{name} has opset {opset}; re-export it with opset {MIN_OPSET} or later (17 is best)")
    initializers = {i.name for i in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    if len(inputs) != 1:
        listed = ", ".join(f"{v.name} {dims_text(dims_of(v))}" for v in inputs) or "none"
        raise ImportError_(f"{name} has {len(inputs)} inputs ({listed}); a segmentation graph takes one image")
    image = inputs[0]
    dims = dims_of(image)
    elem = image.type.tensor_type.elem_type
    if len(dims) != 4 or dims[1] != 3:
        hint = " (channels last: re-export it channels first)" if len(dims) == 4 and dims[3] == 3 else ""
        raise ImportError_(f"{name}: input {image.name} is {dims_text(dims)}, not an N x 3 x H x W image{hint}")
    if elem != TensorProto.FLOAT:
        raise ImportError_(f"{name}: input {image.name} is {TensorProto.DataType.Name(elem).lower()}, not float32: "
                           "import the FP32 model (fcn-deploy import --fp16 writes the FP16 variant)")
    outputs = {v.name: dims_of(v) for v in model.graph.output}
    four_d = [n for n, d in outputs.items() if len(d) == 4]
    listed = ", ".join(f"{n} {dims_text(d)}" for n, d in outputs.items())
    if output_name is not None:
        if output_name not in outputs:
            raise ImportError_(f"{name} has no output named {output_name!r} (outputs: {listed})")
        if len(outputs[output_name]) != 4:
            raise ImportError_(f"{name}: output {output_name} is {dims_text(outputs[output_name])}, not N x C x H x W "
                               "class scores: not a segmentation output")
        chosen = output_name
    elif not four_d:
        raise ImportError_(f"{name} does not look like a segmentation graph: no 4-D score output "
                           f"(outputs: {listed}); a classifier gives N x classes")
    elif len(four_d) == 1:
        chosen = four_d[0]
    elif "out" in four_d:  # torchvision's segmentation models: `out` (and `aux`, the training head)
        chosen = "out"
    else:
        raise ImportError_(f"{name} has several 4-D outputs ({listed}); say which holds the class scores "
                           "with --output-name")
    out_dims = outputs[chosen]
    if isinstance(out_dims[1], int) and out_dims[1] < 2:
        raise ImportError_(f"{name}: output {chosen} has {out_dims[1]} channel; an arg-max needs one score per "
                           "class (2 or more)")
    return SourceGraph(model=model, path=path, input_name=image.name, input_dims=dims, output_name=chosen,
                       output_dims=out_dims, opset=opset, other_outputs=[n for n in outputs if n != chosen])
