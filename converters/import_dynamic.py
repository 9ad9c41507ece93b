"""Bring your own segmentation ONNX, part 2: make the source graph dynamic and prove it.

:func:`make_dynamic`: the input's batch, height and width become ``N``, ``H``, ``W``; the other
outputs (torchvision's training-only ``aux`` head) and every shape inferred at the export size
go. A plain ``torch.onnx.export`` at one size bakes each ``F.interpolate(x, size=y.shape[-2:])``
into a Resize to constant sizes; :func:`dynamic_resize_sizes` gives such a Resize its height and
width from the earliest tensor that had them at the export size (the input for torchvision's
final upsampling; the stride-8 features for LR-ASPP's and DeepLabV3's pooling branches), read
with Shape at run time.

:func:`probe`: ONNX Runtime runs the graph at two sizes of different aspect ratio. The scores
must come back as ``N x C x h x w`` with ``h, w`` following the input; otherwise the graph is
fixed to its export size in a way no rewrite here can undo, and one line says so.
"""
from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import helper, numpy_helper

from fcn_deploy.errors import first_line

from . import onnx_passes
from .import_source import ImportError_, SourceGraph, dims_of, dims_text
from .onnx_passes import producers

log = logging.getLogger(__name__)

# Probe sizes (H, W): different aspect ratios, neither a multiple of 32, so a size baked into
# the graph cannot pass by coincidence.
PROBE_SIZES = ((97, 131), (150, 94))


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
    return {v.name: dims_of(v) for v in values}


def _constant_spatial_size(graph: onnx.GraphProto, tensor: str, producer: Dict[str, onnx.NodeProto]) -> Optional[List[int]]:
    """The height and width a Resize's ``sizes`` input fixes, when they are constants: the
    whole ``sizes`` constant (the dynamo exporter), or its last two values a constant that a
    Concat appends to a batch and channels read at run time (the TorchScript exporter)."""
    whole = onnx_passes.constant_value(graph, tensor)
    if whole is not None:
        return [int(v) for v in whole.ravel()[2:]] if whole.size == 4 else None
    concat = producer.get(tensor)
    if concat is None or concat.op_type != "Concat":
        return None
    tail: List[int] = []
    for part in reversed(list(concat.input)):
        value = onnx_passes.constant_value(graph, part)
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
                 dims_text(source.input_dims))
        dynamic_resize_sizes(model, source.input_name)
    del graph.value_info[:]
    for value in graph.input:
        if value.name == source.input_name:
            _set_dims(value, ["N", 3, "H", "W"])
    for value in graph.output:
        _set_dims(value, ["N", source.output_dims[1] if isinstance(source.output_dims[1], int) else "C", "h", "w"])
    return model


def session(model: onnx.ModelProto):
    """An ONNX Runtime CPU session on ``model`` that logs nothing: a node that fails while the
    probe runs is reported by the exception, in one line; at level 3 ONNX Runtime printed its
    own coloured error line to stderr first."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # fatal only
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
    fixed = dims_text(source.input_dims)
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
                               f"input gives {dims_text(scores.shape)} scores")
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
