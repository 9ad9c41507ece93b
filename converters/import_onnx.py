"""Bring your own segmentation ONNX: the graph our exporter writes, made from someone else's.

Users arrive with an ONNX file only (torchvision's FCN or DeepLabV3 exported by a plain
``torch.onnx.export``, an mmsegmentation or SegFormer export): an ``N x 3 x H x W`` float image
in, ``N x C x h x w`` class scores (logits or probabilities, at the input's resolution or a
fraction of it) out. The surgery is done in ONNX, on that graph, never through PyTorch:

1. :func:`read_source`: the one image input (4-D, 3 channels, float32) and the score output
   (``output_name``; else torchvision's ``out``; else the only 4-D output). A graph with no
   4-D output is not a segmentation graph (a classifier's ``N x 1000``): one line says so.
2. :func:`make_dynamic`: the input's batch, height and width become ``N``, ``H``, ``W``; the
   other outputs and every shape inferred at the export size go. A plain ``torch.onnx.export``
   at one size bakes each ``F.interpolate(x, size=y.shape[-2:])`` into a Resize to constant
   sizes; such a Resize gets its height and width from the earliest tensor that had them at the
   export size (the input for torchvision's final upsampling; the stride-8 features for
   LR-ASPP's and DeepLabV3's pooling branches), read with Shape at run time.
3. :func:`probe`: ONNX Runtime runs the graph at two sizes of different aspect ratio. The
   scores must come back as ``N x C x h x w`` with ``h, w`` following the input; otherwise the
   graph is fixed to its export size in a way no rewrite here can undo, and one line says so.
4. :func:`deployment_graph`: uint8 ``N x H x W x 3`` BGR frames in, through Cast, Transpose,
   channel swap, Sub mean and Div std (the nodes and order of
   :class:`fcn_deploy.converters.deploy_graph.DeployGraph`, so the FP16 converter keeps them in
   float32 the same way); scores smaller than the frame are resized to exactly the frame's
   height and width (``linear`` with ``pytorch_half_pixel``, which is PyTorch's
   ``align_corners=False`` bilinear, or ``nearest``); then ArgMax, Cast to float, Cast to uint8
   (TensorRT casts to uint8 only from float), as our own exports end.
5. :func:`fcn_deploy.converters.onnx_export.finalize`: the checks, metadata and smoke test every
   exported graph passes; :func:`import_onnx` adds the FP16/INT8 variants and the TensorRT parser
   check, exactly as ``fcn-deploy export`` does.
"""
from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import onnx
import onnx.inliner
import onnx.version_converter
from onnx import TensorProto, helper, numpy_helper

import fcn_deploy
from fcn_deploy.errors import FcnDeployError, first_line
from fcn_deploy.fileio import sha256_file
from fcn_deploy.normalization import Normalization
from fcn_deploy.runtime.input_size import training_scale_facts
from fcn_deploy.runtime.metadata import LAYOUT_RAW_BGR, OUTPUT_LABELS, ModelMetadata

from . import onnx_passes
from .onnx_passes import ExportError, consumers, producers

log = logging.getLogger(__name__)

INPUT_NAME = "input"  # as onnx_export.INPUT_NAME (not imported: that module needs torch)
IMAGE = "fcn_deploy_image"  # the source graph's own input, once it is an inner tensor
SCORES = "fcn_deploy_scores"
RESIZE_MODES = ("bilinear", "nearest")
MIN_OPSET = 11  # Resize with sizes (opset 11) is what the upsampling and the size rewrite write
# The newest opset every supported TensorRT parses (8.5 and 8.6 stop at 17); a newer source is
# converted down to it where ONNX's version converter can (torch.onnx.export's dynamo exporter
# writes opset 18 even when asked for 17).
TARGET_OPSET = 17
# Probe sizes (H, W): different aspect ratios, neither a multiple of 32, so a size baked into
# the graph cannot pass by coincidence.
PROBE_SIZES = ((97, 131), (150, 94))


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


@dataclass
class ProbeResult:
    """What running the dynamic graph showed: classes and the scores' size per input size."""

    num_classes: int
    sizes: List[Tuple[Tuple[int, int], Tuple[int, int]]]  # ((H, W) in, (h, w) out)

    @property
    def full_resolution(self) -> bool:
        return all(inp == out for inp, out in self.sizes)

    def stride_text(self) -> str:
        (h_in, w_in), (h, w) = self.sizes[0]
        return f"{h}x{w} scores for a {h_in}x{w_in} input"


def _dims(value: onnx.ValueInfoProto) -> List[Any]:
    out: List[Any] = []
    for d in value.type.tensor_type.shape.dim:
        out.append(d.dim_value if d.HasField("dim_value") else (d.dim_param if d.HasField("dim_param") else None))
    return out


def _dims_text(dims: Sequence[Any]) -> str:
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
        listed = ", ".join(f"{v.name} {_dims_text(_dims(v))}" for v in inputs) or "none"
        raise ImportError_(f"{name} has {len(inputs)} inputs ({listed}); a segmentation graph takes one image")
    image = inputs[0]
    dims = _dims(image)
    elem = image.type.tensor_type.elem_type
    if len(dims) != 4 or dims[1] != 3:
        hint = " (channels last: re-export it channels first)" if len(dims) == 4 and dims[3] == 3 else ""
        raise ImportError_(f"{name}: input {image.name} is {_dims_text(dims)}, not an N x 3 x H x W image{hint}")
    if elem != TensorProto.FLOAT:
        raise ImportError_(f"{name}: input {image.name} is {TensorProto.DataType.Name(elem).lower()}, not float32: "
                           "import the FP32 model (fcn-deploy import --fp16 writes the FP16 variant)")
    outputs = {v.name: _dims(v) for v in model.graph.output}
    four_d = [n for n, d in outputs.items() if len(d) == 4]
    listed = ", ".join(f"{n} {_dims_text(d)}" for n, d in outputs.items())
    if output_name is not None:
        if output_name not in outputs:
            raise ImportError_(f"{name} has no output named {output_name!r} (outputs: {listed})")
        if len(outputs[output_name]) != 4:
            raise ImportError_(f"{name}: output {output_name} is {_dims_text(outputs[output_name])}, not N x C x H x W "
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


def _constant_array(graph: onnx.GraphProto, tensor: str) -> Optional[np.ndarray]:
    for init in graph.initializer:
        if init.name == tensor:
            return numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == tensor:
            value = onnx_passes.attribute(node, "value")
            return numpy_helper.to_array(value) if value is not None else None
    return None


def rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename tensor ``old`` to ``new`` wherever the top-level graph writes or reads it."""
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == old:
                node.input[k] = new
        for k, name in enumerate(node.output):
            if name == old:
                node.output[k] = new
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        if value.name == old:
            value.name = new


def keep_only(graph: onnx.GraphProto, outputs: Sequence[str]) -> int:
    """Drop, in place, the graph outputs not in ``outputs`` and every node none of those needs
    (torchvision's ``aux`` head); return how many nodes went."""
    keep_outputs = [o for o in graph.output if o.name in set(outputs)]
    del graph.output[:]
    graph.output.extend(keep_outputs)
    producer = producers(graph)
    needed, stack = set(), list(outputs)
    while stack:
        tensor = stack.pop()
        node = producer.get(tensor)
        if node is None or id(node) in needed:
            continue
        needed.add(id(node))
        stack.extend(t for t in node.input if t)
    kept = [n for n in graph.node if id(n) in needed]
    dropped = len(graph.node) - len(kept)
    del graph.node[:]
    graph.node.extend(kept)
    onnx_passes.drop_unused_initializers(graph)
    initializers = {i.name for i in graph.initializer}
    used = {t for n in graph.node for t in n.input}
    unused_inputs = [v for v in graph.input if v.name in initializers and v.name not in used]
    for value in unused_inputs:
        graph.input.remove(value)
    return dropped


def _set_dims(value: onnx.ValueInfoProto, dims: Sequence[Any]) -> None:
    shape = value.type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, int):
            dim.dim_value = d
        else:
            dim.dim_param = str(d)


def _static_shapes(model: onnx.ModelProto) -> Dict[str, List[Any]]:
    """Tensor name -> dims, as shape inference finds them at the export size."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a graph shape inference cannot follow: no rewrite, the probe judges
        return {}
    values = list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output)
    return {v.name: _dims(v) for v in values}


def _constant_spatial_size(graph: onnx.GraphProto, tensor: str, producer: Dict[str, onnx.NodeProto]) -> Optional[List[int]]:
    """The height and width a Resize's ``sizes`` input fixes, when they are constants: the
    whole ``sizes`` constant (the dynamo exporter), or its last two values a constant that a
    Concat appends to a batch and channels read at run time (the TorchScript exporter)."""
    whole = _constant_array(graph, tensor)
    if whole is not None:
        return [int(v) for v in whole.ravel()[2:]] if whole.size == 4 else None
    concat = producer.get(tensor)
    if concat is None or concat.op_type != "Concat":
        return None
    tail: List[int] = []
    for part in reversed(list(concat.input)):
        value = _constant_array(graph, part)
        if value is None:
            break
        tail = [int(v) for v in value.ravel()] + tail
        if len(tail) >= 2:
            break
    return tail[-2:] if len(tail) >= 2 else None


def dynamic_resize_sizes(model: onnx.ModelProto, input_name: str) -> int:
    """Give every Resize with constant ``sizes`` its height and width from a tensor at run time.

    The tensor is the earliest one (in node order, the input first) whose height and width were
    those sizes at the export size; batch and channels come from the Resize's own data input.
    Returns how many Resizes were rewritten. Only valid on a graph whose input still has its
    export size (shapes are inferred at it).
    """
    graph = model.graph
    shapes = _static_shapes(model)
    if not shapes:
        return 0
    producer = producers(graph)
    order = [input_name] + [t for node in graph.node for t in node.output]
    position = {t: i for i, t in enumerate(order)}
    rewritten = 0
    for resize in [n for n in graph.node if n.op_type == "Resize"]:
        if len(resize.input) < 4 or not resize.input[3]:
            continue
        target = _constant_spatial_size(graph, resize.input[3], producer)
        if target is None:
            continue
        here = position.get(resize.output[0], len(order))
        reference = next((t for t in order[:here] if len(shapes.get(t, [])) == 4 and shapes[t][2:] == target), None)
        if reference is None:
            log.debug("Resize %s: no tensor upstream is %s", resize.name, target)
            continue
        tag = f"fcn_deploy_size{rewritten}"
        graph.initializer.extend([
            numpy_helper.from_array(np.array([0], dtype=np.int64), f"{tag}_0"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), f"{tag}_2"),
            numpy_helper.from_array(np.array([4], dtype=np.int64), f"{tag}_4"),
        ])
        nodes = [
            helper.make_node("Shape", [resize.input[0]], [f"{tag}_data"], name=f"{tag}/Shape"),
            helper.make_node("Slice", [f"{tag}_data", f"{tag}_0", f"{tag}_2"], [f"{tag}_nc"], name=f"{tag}/Slice"),
            helper.make_node("Shape", [reference], [f"{tag}_ref"], name=f"{tag}/Shape_1"),
            helper.make_node("Slice", [f"{tag}_ref", f"{tag}_2", f"{tag}_4"], [f"{tag}_hw"], name=f"{tag}/Slice_1"),
            helper.make_node("Concat", [f"{tag}_nc", f"{tag}_hw"], [f"{tag}_sizes"], axis=0, name=f"{tag}/Concat"),
        ]
        index = list(graph.node).index(resize)
        for offset, node in enumerate(nodes):
            graph.node.insert(index + offset, node)
        resize.input[3] = f"{tag}_sizes"
        log.debug("Resize %s: sizes from %s instead of %s", resize.name, reference, target)
        rewritten += 1
    if rewritten:
        onnx_passes.drop_unused_initializers(graph)
    return rewritten


def make_dynamic(source: SourceGraph) -> onnx.ModelProto:
    """The source graph with only the score output, input ``N x 3 x H x W``, sizes of
    interpolations taken at run time, and no shapes left from the export size."""
    model = copy.deepcopy(source.model)
    graph = model.graph
    keep_only(graph, [source.output_name])
    if all(isinstance(d, int) for d in source.input_dims[2:]):
        log.info("%s: input fixed to %s; making height and width dynamic", os.path.basename(source.path),
                 _dims_text(source.input_dims))
        dynamic_resize_sizes(model, source.input_name)
    del graph.value_info[:]
    for value in graph.input:
        if value.name == source.input_name:
            _set_dims(value, ["N", 3, "H", "W"])
    for value in graph.output:
        _set_dims(value, ["N", source.output_dims[1] if isinstance(source.output_dims[1], int) else "C", "h", "w"])
    return model


def session(model: onnx.ModelProto):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _ort_failure(message: str) -> str:
    """ONNX Runtime's run error, shortened to the node and the reason."""
    import re

    match = re.search(r"running (\w+) node\. Name:'([^']*)' Status Message: (.*)", message)
    if not match:
        return f"ONNX Runtime fails: {message}"
    op, node, status = match.groups()
    status = status.split(" was false. ", 1)[-1]
    status = re.sub(r"^\S+:\d+ \S+ ", "", status)  # the source file, line and function
    return f"its {op} node {node} fails: {status}"


def probe(model: onnx.ModelProto, source: SourceGraph, sizes: Sequence[Tuple[int, int]] = PROBE_SIZES) -> ProbeResult:
    """Run the dynamic graph at ``sizes`` (batch 2) and check that the scores follow the input."""
    name = os.path.basename(source.path)
    fixed = _dims_text(source.input_dims)
    try:
        runner = session(model)
    except Exception as exc:
        raise ImportError_(f"{name}: ONNX Runtime cannot load the graph with a dynamic input: {first_line(exc)}") from None
    rng = np.random.default_rng(0)
    seen: List[Tuple[Tuple[int, int], Tuple[int, int]]] = []
    classes = None
    for h, w in sizes:
        x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
        try:
            scores = runner.run([source.output_name], {source.input_name: x})[0]
        except Exception as exc:
            raise ImportError_(f"{name}: the graph is fixed to {fixed} and cannot be made dynamic: at 2x3x{h}x{w} "
                               f"{_ort_failure(first_line(exc))}") from None
        if scores.ndim != 4 or scores.shape[0] != 2:
            raise ImportError_(f"{name}: the graph is fixed to {fixed} and cannot be made dynamic: a 2x3x{h}x{w} "
                               f"input gives {_dims_text(scores.shape)} scores")
        oh, ow = scores.shape[2:]
        if classes is not None and scores.shape[1] != classes:
            raise ImportError_(f"{name}: the number of score channels changes with the input size")
        classes = int(scores.shape[1])
        seen.append(((h, w), (int(oh), int(ow))))
    # The scores follow the input: the same size, or the same fraction of it on both sizes.
    ratios = [(ih / oh, iw / ow) for (ih, iw), (oh, ow) in seen]
    follows = all(oh <= ih and ow <= iw for (ih, iw), (oh, ow) in seen) and \
        all(abs(r[0] - ratios[0][0]) / ratios[0][0] < 0.25 and abs(r[1] - ratios[0][1]) / ratios[0][1] < 0.25
            for r in ratios) and all(oh > 1 and ow > 1 for _, (oh, ow) in seen)
    if not follows:
        listed = ", ".join(f"{ih}x{iw} -> {oh}x{ow}" for (ih, iw), (oh, ow) in seen)
        raise ImportError_(f"{name}: the graph is fixed to {fixed} and cannot be made dynamic: its scores do not "
                           f"follow the input size ({listed})")
    return ProbeResult(num_classes=classes, sizes=seen)


def deployment_graph(model: onnx.ModelProto, source: SourceGraph, normalization: Normalization,
                     resize: Optional[str]) -> onnx.ModelProto:
    """Wrap the dynamic graph: uint8 BGR frames in, labels out (see the module docstring).

    ``resize``: ``bilinear`` or ``nearest`` to bring the scores to the frame's size, ``None``
    when they already are at it.
    """
    order = normalization.channel_order.upper()
    if order not in ("RGB", "BGR"):
        raise ImportError_(f"unknown channel order {normalization.channel_order!r}; expected RGB or BGR")
    model = copy.deepcopy(model)
    graph = model.graph
    rename_tensor(graph, source.input_name, IMAGE)
    rename_tensor(graph, source.output_name, SCORES)
    for value in list(graph.input):
        if value.name == IMAGE:
            graph.input.remove(value)
    del graph.output[:]
    pre = "fcn_deploy_pre"
    graph.initializer.extend([
        numpy_helper.from_array(np.asarray(normalization.mean, dtype=np.float32).reshape(1, 3, 1, 1), f"{pre}_mean"),
        numpy_helper.from_array(np.asarray(normalization.std, dtype=np.float32).reshape(1, 3, 1, 1), f"{pre}_std"),
    ])
    nodes = [
        helper.make_node("Cast", [INPUT_NAME], [f"{pre}_float"], to=TensorProto.FLOAT, name=f"{pre}/Cast"),
        helper.make_node("Transpose", [f"{pre}_float"], [f"{pre}_nchw"], perm=[0, 3, 1, 2], name=f"{pre}/Transpose"),
    ]
    current = f"{pre}_nchw"
    if order == "RGB":
        graph.initializer.append(numpy_helper.from_array(np.array([2, 1, 0], dtype=np.int64), f"{pre}_rgb"))
        nodes.append(helper.make_node("Gather", [current, f"{pre}_rgb"], [f"{pre}_swapped"], axis=1,
                                      name=f"{pre}/Gather"))
        current = f"{pre}_swapped"
    nodes += [
        helper.make_node("Sub", [current, f"{pre}_mean"], [f"{pre}_centered"], name=f"{pre}/Sub"),
        helper.make_node("Div", [f"{pre}_centered", f"{pre}_std"], [IMAGE], name=f"{pre}/Div"),
    ]
    post, scores = "fcn_deploy_post", SCORES
    tail: List[onnx.NodeProto] = []
    if resize:
        graph.initializer.extend([
            numpy_helper.from_array(np.array([0], dtype=np.int64), f"{post}_0"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), f"{post}_2"),
            numpy_helper.from_array(np.array([4], dtype=np.int64), f"{post}_4"),
        ])
        linear = resize == "bilinear"
        tail += [
            helper.make_node("Shape", [SCORES], [f"{post}_scores_shape"], name=f"{post}/Shape"),
            helper.make_node("Slice", [f"{post}_scores_shape", f"{post}_0", f"{post}_2"], [f"{post}_nc"],
                             name=f"{post}/Slice"),
            helper.make_node("Shape", [IMAGE], [f"{post}_image_shape"], name=f"{post}/Shape_1"),
            helper.make_node("Slice", [f"{post}_image_shape", f"{post}_2", f"{post}_4"], [f"{post}_hw"],
                             name=f"{post}/Slice_1"),
            helper.make_node("Concat", [f"{post}_nc", f"{post}_hw"], [f"{post}_sizes"], axis=0, name=f"{post}/Concat"),
            helper.make_node(
                "Resize", [SCORES, "", "", f"{post}_sizes"], [f"{post}_upsampled"], name=f"{post}/Resize",
                mode="linear" if linear else "nearest",
                coordinate_transformation_mode="pytorch_half_pixel" if linear else "asymmetric",
                **({} if linear else {"nearest_mode": "floor"}),
            ),
        ]
        scores = f"{post}_upsampled"
    tail += [
        helper.make_node("ArgMax", [scores], [f"{post}_index"], axis=1, keepdims=0, name=f"{post}/ArgMax"),
        # Through float: TensorRT casts to uint8 only from float32/float16.
        helper.make_node("Cast", [f"{post}_index"], [f"{post}_index_f"], to=TensorProto.FLOAT, name=f"{post}/Cast"),
        helper.make_node("Cast", [f"{post}_index_f"], [OUTPUT_LABELS], to=TensorProto.UINT8, name=f"{post}/Cast_1"),
    ]
    body = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + body + tail)
    graph.input.insert(0, helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["N", "H", "W", 3]))
    graph.output.append(helper.make_tensor_value_info(OUTPUT_LABELS, TensorProto.UINT8, ["N", "H", "W"]))
    del graph.value_info[:]
    return model


# --------------------------------------------------------------------------------------------
# Classes, normalisation and the whole import
# --------------------------------------------------------------------------------------------
CLASS_PRESETS = ("voc", "cityscapes", "camvid")


@dataclass
class ClassList:
    """Class names, their colours (``None``: the default palette) and the dataset they name."""

    names: List[str]
    palette: Optional[List[Tuple[int, int, int]]] = None
    dataset: Optional[str] = None


def read_classes(spec: str) -> ClassList:
    """``voc``, ``cityscapes``, ``camvid`` (the datasets' own lists and colours), or a text file:
    one class a line, ``NAME`` or ``NAME R G B`` (commas allowed), ``#`` comments; colours for
    all classes or none."""
    key = spec.lower()
    if key == "voc":
        from fcn_deploy.data.voc import VOC_CLASSES, VOC_PALETTE

        return ClassList(list(VOC_CLASSES), [tuple(c) for c in VOC_PALETTE], "voc")
    if key == "cityscapes":
        from fcn_deploy.data.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE

        return ClassList(list(CITYSCAPES_CLASSES), [tuple(c) for c in CITYSCAPES_PALETTE], "cityscapes")
    if key == "camvid":
        from fcn_deploy.data.camvid import CAMVID_CLASSES, CAMVID_PALETTE

        return ClassList(list(CAMVID_CLASSES), [tuple(c) for c in CAMVID_PALETTE], "camvid")
    if not os.path.isfile(spec):
        raise ImportError_(f"--classes {spec}: neither {', '.join(CLASS_PRESETS)} nor a file")
    try:
        with open(spec, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportError_(f"--classes {spec}: cannot read it: {exc}") from None
    names: List[str] = []
    colours: List[Optional[Tuple[int, int, int]]] = []
    for number, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.replace(",", " ").split()
        if len(parts) >= 4 and all(p.isdigit() for p in parts[-3:]):
            rgb = tuple(int(p) for p in parts[-3:])
            if any(v > 255 for v in rgb):
                raise ImportError_(f"--classes {spec} line {number}: colour {rgb} is outside 0..255")
            names.append(" ".join(parts[:-3]))
            colours.append(rgb)  # type: ignore[arg-type]
        else:
            names.append(" ".join(parts))
            colours.append(None)
    if not names:
        raise ImportError_(f"--classes {spec}: no class names in it (one a line: NAME or NAME R G B)")
    given = [c for c in colours if c is not None]
    if given and len(given) != len(names):
        raise ImportError_(f"--classes {spec}: {len(given)} of {len(names)} classes have a colour; give all or none")
    return ClassList(names, given or None, None)  # type: ignore[arg-type]


def normalization_from(mean: Sequence[float], std: Sequence[float], channel_order: str = "RGB",
                       scale: float = 1.0) -> Normalization:
    """``x = (pixel / scale - mean) / std`` (channels in ``channel_order``) as a
    :class:`Normalization`, whose mean and std are in 0..255 pixel units."""
    if len(mean) != 3 or len(std) != 3:
        raise ImportError_(f"--mean and --std take three values each (one per channel), not {len(mean)} and {len(std)}")
    if not scale > 0:
        raise ImportError_(f"--scale must be positive, not {scale}")
    if any(not s > 0 for s in std):
        raise ImportError_(f"--std values must be positive, not {list(std)}")
    return Normalization(channel_order.upper(), tuple(float(m) * scale for m in mean),
                         tuple(float(s) * scale for s in std))


@dataclass
class ImportResult:
    path: str
    metadata: ModelMetadata
    seconds: float
    num_classes: int
    resized: Optional[str]  # the upsampling added, or None when the scores are at the frame's size
    score_size: str  # e.g. "45x60 scores for a 360x480 input"
    agreement: Optional[float] = None
    calibration_images: int = 0
    ir_version: int = 0
    tensorrt: Any = None  # fcn-deploy check's CheckReport; None for a CPU-only (u8s8) graph
    dropped_outputs: List[str] = field(default_factory=list)


def import_onnx(
    source_path: str,
    output: str,
    *,
    normalization: Normalization,
    classes: Optional[ClassList] = None,
    output_name: Optional[str] = None,
    input_size: Optional[Tuple[int, int]] = None,
    resize: str = "bilinear",
    model_name: Optional[str] = None,
    source_facts: Optional[Dict[str, Any]] = None,
    precision: str = "fp32",
    keep_fp32: Sequence[str] = (),
    calib_frames: Optional[Sequence[np.ndarray]] = None,
    progress: Callable[[Iterable], Iterable] = lambda it: it,
    int8_scheme: str = "s8s8",
    model: Optional[onnx.ModelProto] = None,
) -> ImportResult:
    """Import the segmentation ONNX at ``source_path`` into a deployable fcn-deploy ONNX ``output``.

    ``normalization``: what the source graph expects of its input. ``classes``: the class names
    (and colours), whose count must be the scores' channel count. ``output_name``: the score
    output (see :func:`read_source`). ``input_size``: the (H, W) the model was trained or
    validated at, recorded as its training scale. ``resize``: ``bilinear`` or ``nearest``,
    used when the scores are smaller than the input. ``model``: the source already loaded
    (``source_path`` then only names it). ``source_facts`` go into the metadata's ``source``.
    Precision options as :func:`fcn_deploy.converters.onnx_export.export`. ``output`` is
    written atomically once every check has passed.
    """
    from .onnx_export import check_export_options, finalize, precision_variant, tool_versions
    from .tensorrt_check import check_onnx
    from fcn_deploy.runtime.tensorrt_compat import tensorrt_int8_problem
    from fcn_deploy.runtime.metadata import class_names, default_palette

    if resize not in RESIZE_MODES:
        raise ImportError_(f"--resize {resize}: choose from {', '.join(RESIZE_MODES)}")
    if not str(output).lower().endswith(".onnx"):
        raise ImportError_(f"output {output} must end in .onnx (the runtime picks the backend by suffix)")
    start = time.perf_counter()
    name = os.path.basename(source_path)
    source = read_source(model if model is not None else load_source(source_path), source_path, output_name)
    check_export_options(precision, calibration=bool(calib_frames), keep_fp32=keep_fp32, int8_scheme=int8_scheme,
                         opset=source.opset)
    dynamic = make_dynamic(source)
    found = probe(dynamic, source)
    n = found.num_classes
    if classes is not None and len(classes.names) != n:
        raise ImportError_(f"{name}: output {source.output_name} gives {n} class scores but --classes names "
                           f"{len(classes.names)} classes")
    if n > 256:
        raise ImportError_(f"{name}: {n} classes do not fit uint8 labels")
    resized = None if found.full_resolution else resize
    deploy = deployment_graph(dynamic, source, normalization, resized)
    facts = training_scale_facts(classes.dataset if classes else None,
                                 {"val_size": list(input_size)} if input_size else None)
    meta32 = ModelMetadata(
        model_name=model_name or os.path.splitext(name)[0],
        num_classes=n,
        classes=class_names(n, classes.names if classes else None),
        palette=classes.palette if classes and classes.palette else default_palette(n),
        normalization=normalization,
        input_layout=LAYOUT_RAW_BGR,
        output=OUTPUT_LABELS,
        precision="fp32",
        dataset=classes.dataset if classes else None,
        mean_iu=None,
        source={
            "imported": True,
            "onnx": os.path.abspath(source_path) if model is None else None,
            "sha256": sha256_file(source_path) if model is None else None,
            "output_name": source.output_name,
            "input_name": source.input_name,
            "input_dims": [d if isinstance(d, int) else str(d) for d in source.input_dims],
            "trained": True,
            **(source_facts or {}),
        },
        exporter={**tool_versions("onnxruntime"), "opset": source.opset, "importer": f"fcn-deploy {fcn_deploy.__version__}"},
        extra={
            "imported": {"scores": found.stride_text(), "resize": resized,
                         "dropped_outputs": source.other_outputs},
            "training_scale": facts,
        },
    )
    fp32 = finalize(deploy, meta32)
    result, meta, agreement = precision_variant(fp32, meta32, precision, keep_fp32=keep_fp32,
                                                calib_frames=calib_frames, progress=progress,
                                                int8_scheme=int8_scheme)
    tensorrt = None
    if tensorrt_int8_problem(meta.int8_scheme, output) is None:
        tensorrt = check_onnx(result, label=os.path.basename(str(output)))
    path = onnx_passes.save_atomic(result, output)
    return ImportResult(
        path=path, metadata=meta, seconds=time.perf_counter() - start, num_classes=n, resized=resized,
        score_size=found.stride_text(), agreement=agreement, calibration_images=len(calib_frames or ()),
        ir_version=result.ir_version, tensorrt=tensorrt, dropped_outputs=source.other_outputs,
    )
