"""Exact graph rewrites that make the deployment graph cheaper to run.

:func:`argmax_before_pixel_shuffle`: the final 8x upsampler of an FCN, in its sub-pixel form
(:class:`fcn_deploy.models.upsampling.SubPixelUpsample`), ends in ``DepthToSpace``, and the
folded arg-max then picks the best class at every full-resolution pixel::

    scores [N, C*s*s, h, w] -> DepthToSpace(s) -> [N, C, s*h, s*w] -> Slice* -> ArgMax(axis 1)

``DepthToSpace`` only moves values, so the arg-max can be taken first, over the ``C`` scores
that will land on each output pixel, and the pixel shuffle then moves one label per pixel
instead of ``C`` floats::

    scores -> Reshape [N, C, s*s*h, w] -> ArgMax(axis 1) -> Reshape [N, s*s, h, w]
           -> Cast(float) -> DepthToSpace(s) -> Slice* -> Squeeze(axis 1)

The labels are the same, ties included (the first maximal class wins in both), and the
shuffle and crop of C full-resolution score planes are gone (docs/benchmarks.md's latency section
has the measured gain). The labels travel as float through the shuffle because TensorRT
shuffles and casts float more widely than integer types.

:func:`split_subpixel_phases`, run after it: the sub-pixel convolution of an FCN upsampler
(kernel ``2s``, stride ``s``, padding ``s/2``) is a 3x3 convolution with ``C*s*s`` outputs,
but each phase reads only 2x2 of its 3x3 taps (phases ``r < s/2`` the top/left two rows and
columns, the others the bottom/right two; the rest of its weights are zero by construction).
The convolution is split by phase group into convolutions over the taps each group reads
(for 8x: four 2x2 convolutions of ``16*C`` outputs, 44% of the multiply-adds), each group's
arg-max is taken on its own scores, and the groups' labels are put back in phase order by two
concatenations, before the same pixel shuffle::

    x -> Conv_g (taps of group g) -> Reshape [N, C, -1, w] -> ArgMax -> Reshape [N, rows_g, -1, w]
      -> Concat over column groups (axis 2) -> Concat over row groups (axis 1) -> (as before)

Only weights that are exactly zero are left out, so the scores are the same sums (to float
rounding of the summation order) and so are the labels.
"""
from __future__ import annotations

import logging
from typing import List, NamedTuple, Optional, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .onnx_passes import attribute, constant_value, consumers, drop_unused_initializers, forget_shapes, producers

log = logging.getLogger(__name__)



def _spatial_slice(graph: onnx.GraphProto, node: onnx.NodeProto) -> bool:
    """A Slice whose constant ``axes`` are the spatial ones (2, 3, -2 or -1) only."""
    if node.op_type != "Slice" or len(node.input) < 4:
        return False
    axes = constant_value(graph, node.input[3])
    if axes is None:
        return False
    steps = constant_value(graph, node.input[4]) if len(node.input) > 4 and node.input[4] else None
    return all(int(a) in (2, 3, -1, -2) for a in axes.ravel()) and (steps is None or bool(np.all(steps == 1)))


def _channels(model: onnx.ModelProto, name: str) -> Optional[int]:
    values = list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input)
    for value in values:
        if value.name == name:
            dims = value.type.tensor_type.shape.dim
            if len(dims) == 4 and dims[1].HasField("dim_value"):
                return dims[1].dim_value
    return None


def argmax_before_pixel_shuffle(model: onnx.ModelProto) -> int:
    """Move every channel ``ArgMax`` that follows ``DepthToSpace`` (CRD) ahead of it, in place.

    Only spatial ``Slice`` nodes may sit between the two, and every tensor on the way must have
    no other consumer. The model needs inferred shapes (the channel count of the scores).
    Returns how many arg-maxes moved.
    """
    graph = model.graph
    producer = producers(graph)
    uses = consumers(graph)
    outputs = {o.name for o in graph.output}
    moved = 0
    for argmax in [n for n in graph.node if n.op_type == "ArgMax"]:
        if attribute(argmax, "axis", 0) != 1 or attribute(argmax, "keepdims", 1) != 0 or attribute(argmax, "select_last_index", 0):
            continue
        slices: List[onnx.NodeProto] = []
        node = producer.get(argmax.input[0])
        while node is not None and _spatial_slice(graph, node):
            slices.append(node)
            node = producer.get(node.input[0])
        shuffle = node
        if shuffle is None or shuffle.op_type != "DepthToSpace" or attribute(shuffle, "mode", b"DCR") not in (b"CRD", "CRD"):
            continue
        chain = [shuffle] + slices[::-1]
        if any(len(uses.get(n.output[0], [])) != 1 or n.output[0] in outputs for n in chain):
            continue
        s = int(attribute(shuffle, "blocksize"))
        scores = shuffle.input[0]
        channels = _channels(model, scores)
        if channels is None or channels % (s * s):
            log.debug("DepthToSpace %s: score channels unknown or not a multiple of %d", shuffle.name, s * s)
            continue
        classes = channels // (s * s)
        tag = f"fcn_deploy_argmax{moved}"
        graph.initializer.extend([
            numpy_helper.from_array(np.array([0, classes, -1, 0], dtype=np.int64), f"{tag}_by_class"),
            numpy_helper.from_array(np.array([0, s * s, -1, 0], dtype=np.int64), f"{tag}_by_phase"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), f"{tag}_channel_axis"),
        ])
        new_nodes = [
            helper.make_node("Reshape", [scores, f"{tag}_by_class"], [f"{tag}_scores"], name=f"{tag}/Reshape"),
            helper.make_node("ArgMax", [f"{tag}_scores"], [f"{tag}_index"], axis=1, keepdims=1, name=f"{tag}/ArgMax"),
            helper.make_node("Reshape", [f"{tag}_index", f"{tag}_by_phase"], [f"{tag}_phases"], name=f"{tag}/Reshape_1"),
            helper.make_node("Cast", [f"{tag}_phases"], [f"{tag}_phases_f"], to=TensorProto.FLOAT, name=f"{tag}/Cast"),
            helper.make_node("DepthToSpace", [f"{tag}_phases_f"], [f"{tag}_labels"], blocksize=s, mode="CRD",
                             name=f"{tag}/DepthToSpace"),
        ]
        current = f"{tag}_labels"
        for i, sl in enumerate(slices[::-1]):
            out = f"{tag}_crop{i}"
            new_nodes.append(helper.make_node("Slice", [current] + list(sl.input[1:]), [out], name=f"{tag}/Slice_{i}"))
            current = out
        new_nodes.append(helper.make_node("Squeeze", [current, f"{tag}_channel_axis"], [f"{tag}_squeezed"],
                                          name=f"{tag}/Squeeze"))
        current = f"{tag}_squeezed"
        # The old arg-max gave int64; its consumers get float labels where they cast to float
        # anyway (the exporter's ArgMax -> Cast(float) -> Cast(uint8)), int64 elsewhere.
        readers = uses.get(argmax.output[0], [])
        float_casts = [c for c in readers if c.op_type == "Cast" and attribute(c, "to") == TensorProto.FLOAT]
        for cast in float_casts:
            for user in uses.get(cast.output[0], []):
                for k, name in enumerate(user.input):
                    if name == cast.output[0]:
                        user.input[k] = current
            if cast.output[0] in outputs:
                new_nodes.append(helper.make_node("Identity", [current], [cast.output[0]], name=f"{tag}/Identity"))
        if len(float_casts) < len(readers) or argmax.output[0] in outputs:
            new_nodes.append(helper.make_node("Cast", [current], [argmax.output[0]], to=TensorProto.INT64, name=f"{tag}/Cast_1"))
        # In the old arg-max's place: everything the new nodes read (the scores, the crops'
        # bounds) is computed before it.
        position = list(graph.node).index(argmax)
        for offset, new in enumerate(new_nodes):
            graph.node.insert(position + offset, new)
        for old in chain + [argmax] + float_casts:
            graph.node.remove(old)
        moved += 1
    if moved:
        forget_shapes(graph)
    return moved


def _phase_groups(support: List[Tuple[int, int]]) -> List[Tuple[int, int, int, int]]:
    """Runs of consecutive phases that read the same taps: ``(first phase, end phase, first
    tap, last tap)`` for each run, from each phase's ``(first tap, last tap)``."""
    groups: List[Tuple[int, int, int, int]] = []
    for phase, taps in enumerate(support):
        if groups and groups[-1][2:] == taps:
            groups[-1] = (groups[-1][0], phase + 1) + taps
        else:
            groups.append((phase, phase + 1) + taps)
    return groups


def _tap_support(weight: np.ndarray, axis: int) -> Optional[List[Tuple[int, int]]]:
    """For each phase along ``axis`` (1: rows, 2: columns of ``weight`` shaped
    ``[C, s, s, Cin, kh, kw]``), the first and last kernel tap with a non-zero weight; ``None``
    if some phase has no non-zero weight at all."""
    support = []
    for phase in range(weight.shape[axis]):
        taps = np.take(weight, phase, axis=axis) != 0  # [C, s, Cin, kh, kw]
        used = np.flatnonzero(taps.any(axis=(0, 1, 2, 4 if axis == 1 else 3)))
        if used.size == 0:
            return None
        support.append((int(used[0]), int(used[-1])))
    return support


class _SubPixelArgMax(NamedTuple):
    """A sub-pixel convolution whose scores only feed a per-phase arg-max (what
    :func:`argmax_before_pixel_shuffle` leaves), with its weights as
    ``[classes, s, s, Cin / group, kh, kw]``."""

    conv: onnx.NodeProto
    by_class: onnx.NodeProto  # Reshape [0, C, -1, 0]
    argmax: onnx.NodeProto
    weight: np.ndarray
    bias: Optional[np.ndarray]
    classes: int
    scale: int


def _match_subpixel_argmax(graph: onnx.GraphProto, argmax: onnx.NodeProto, producer, uses,
                           outputs) -> Optional[_SubPixelArgMax]:
    """The pattern ``Conv`` (constant weights, stride and dilation 1, dense or one group per
    class) -> ``Reshape [0, C, -1, 0]`` -> ``ArgMax`` (axis 1, kept) -> ``Reshape [0, s*s, -1, 0]``
    ending at ``argmax``, each tensor read once; ``None`` where the graph differs."""
    if attribute(argmax, "axis", 0) != 1 or attribute(argmax, "keepdims", 1) != 1 \
            or attribute(argmax, "select_last_index", 0):
        return None
    by_class_node = producer.get(argmax.input[0])
    if by_class_node is None or by_class_node.op_type != "Reshape":
        return None
    conv = producer.get(by_class_node.input[0])
    after = uses.get(argmax.output[0], [])
    if conv is None or conv.op_type != "Conv" or len(after) != 1 or after[0].op_type != "Reshape":
        return None
    chain = (conv.output[0], by_class_node.output[0], argmax.output[0])
    if any(len(uses.get(t, [])) != 1 or t in outputs for t in chain):
        return None
    by_class, by_phase = constant_value(graph, by_class_node.input[1]), constant_value(graph, after[0].input[1])
    weight = constant_value(graph, conv.input[1])
    has_bias = len(conv.input) > 2 and bool(conv.input[2])
    bias = constant_value(graph, conv.input[2]) if has_bias else None
    if by_class is None or by_phase is None or weight is None or weight.ndim != 4 or (has_bias and bias is None):
        return None
    if by_class.size != 4 or by_phase.size != 4 or list(by_class.ravel()[[0, 2, 3]]) != [0, -1, 0] \
            or list(by_phase.ravel()[[0, 2, 3]]) != [0, -1, 0]:
        return None
    classes, phases = int(by_class.ravel()[1]), int(by_phase.ravel()[1])
    s = int(round(phases ** 0.5))
    if s * s != phases or weight.shape[0] != classes * phases:
        return None
    if attribute(conv, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") \
            or any(v != 1 for v in attribute(conv, "strides", [1, 1])) \
            or any(v != 1 for v in attribute(conv, "dilations", [1, 1])) \
            or int(attribute(conv, "group", 1)) not in (1, classes):
        return None  # (one group per class: each phase group's channels stay whole groups)
    weight = weight.reshape(classes, s, s, *weight.shape[1:])
    return _SubPixelArgMax(conv, by_class_node, argmax, weight, bias, classes, s)


def _phase_split_plan(match: _SubPixelArgMax, max_work: float):
    """The convolutions to write, as ``(rows, columns, pads)`` per phase group (``rows``:
    first phase, end phase, first tap, last tap), or ``None`` if the split saves too little
    or the padding does not cover the taps left out."""
    rows, cols = _tap_support(match.weight, 1), _tap_support(match.weight, 2)
    if rows is None or cols is None:
        return None
    kh, kw = match.weight.shape[-2:]
    pads = list(attribute(match.conv, "pads", [0, 0, 0, 0]))
    plan = []
    for row in _phase_groups(rows):
        for col in _phase_groups(cols):
            (_, _, rl, rh), (_, _, cl, ch) = row, col
            plan.append((row, col, [pads[0] - rl, pads[1] - cl, pads[2] - (kh - 1 - rh), pads[3] - (kw - 1 - ch)]))
    work = sum((r1 - r0) * (c1 - c0) * (rh - rl + 1) * (ch - cl + 1) for (r0, r1, rl, rh), (c0, c1, cl, ch), _ in plan)
    if work > max_work * match.scale ** 2 * kh * kw or any(v < 0 for _, _, p in plan for v in p):
        return None
    return plan


def _phase_split_nodes(graph: onnx.GraphProto, match: _SubPixelArgMax, plan, tag: str) -> List[onnx.NodeProto]:
    """One convolution, arg-max and reshape per phase group (their weights added to the
    graph), and the concatenations that put the labels in phase order under the old arg-max's
    output name: ``[N, s, s * h, w]``, which the next ``Reshape [0, s*s, -1, 0]`` reads."""
    x, group = match.conv.input[0], int(attribute(match.conv, "group", 1))
    nodes: List[onnx.NodeProto] = []
    rows: dict = {}  # first row phase -> the labels of its groups, column groups in order
    for (r0, r1, rl, rh), (c0, c1, cl, ch), pads in plan:
        name = f"{tag}_{r0}_{c0}"
        part = match.weight[:, r0:r1, c0:c1, :, rl:rh + 1, cl:ch + 1]
        graph.initializer.append(numpy_helper.from_array(
            np.ascontiguousarray(part.reshape(-1, *part.shape[3:])), f"{name}_weight"))
        inputs = [x, f"{name}_weight"]
        if match.bias is not None:
            part_bias = match.bias.reshape(match.classes, match.scale, match.scale)[:, r0:r1, c0:c1]
            graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(part_bias.ravel()), f"{name}_bias"))
            inputs.append(f"{name}_bias")
        if r0 not in rows:
            graph.initializer.append(
                numpy_helper.from_array(np.array([0, r1 - r0, -1, 0], dtype=np.int64), f"{tag}_rows{r0}"))
        nodes += [
            helper.make_node("Conv", inputs, [f"{name}_scores"], name=f"{name}/Conv", group=group,
                             kernel_shape=[rh - rl + 1, ch - cl + 1], pads=pads),
            helper.make_node("Reshape", [f"{name}_scores", match.by_class.input[1]], [f"{name}_by_class"],
                             name=f"{name}/Reshape"),
            helper.make_node("ArgMax", [f"{name}_by_class"], [f"{name}_index"], axis=1, keepdims=1,
                             name=f"{name}/ArgMax"),
            # [N, 1, rows * cols * h, w] -> [N, rows, cols * h, w]
            helper.make_node("Reshape", [f"{name}_index", f"{tag}_rows{r0}"], [f"{name}_labels"],
                             name=f"{name}/Reshape_1"),
        ]
        rows.setdefault(r0, []).append(f"{name}_labels")
    row_labels = []
    for r0, labels in rows.items():  # column groups side by side: [N, rows, s * h, w]
        if len(labels) > 1:
            nodes.append(helper.make_node("Concat", labels, [f"{tag}_{r0}_labels"], axis=2, name=f"{tag}_{r0}/Concat"))
        row_labels.append(f"{tag}_{r0}_labels" if len(labels) > 1 else labels[0])
    # Row groups stacked: [N, s, s * h, w], phase (row, column) in the order DepthToSpace reads.
    nodes.append(helper.make_node("Concat", row_labels, [match.argmax.output[0]], axis=1, name=f"{tag}/Concat"))
    return nodes


def split_subpixel_phases(model: onnx.ModelProto, max_work: float = 0.75) -> int:
    """Split, in place, each sub-pixel convolution whose arg-max :func:`argmax_before_pixel_shuffle`
    moved ahead of the shuffle into one convolution per phase group (see the module docstring).

    A convolution is split only where the groups' taps are at most ``max_work`` of its work and
    its padding covers the taps left out. Returns how many were split.
    """
    graph = model.graph
    producer = producers(graph)
    uses = consumers(graph)
    outputs = {o.name for o in graph.output}
    reshaped = set()  # tensors kept by name whose shape changes
    for argmax in [n for n in graph.node if n.op_type == "ArgMax"]:
        match = _match_subpixel_argmax(graph, argmax, producer, uses, outputs)
        plan = _phase_split_plan(match, max_work) if match is not None else None
        if plan is None:
            continue
        nodes = _phase_split_nodes(graph, match, plan, f"fcn_deploy_phases{len(reshaped)}")
        position = list(graph.node).index(match.conv)
        for old in (match.conv, match.by_class, argmax):
            graph.node.remove(old)
        for offset, new in enumerate(nodes):
            graph.node.insert(position + offset, new)
        reshaped.add(argmax.output[0])
    if reshaped:  # the replaced convolutions' weights, and the shapes of tensors gone or changed
        drop_unused_initializers(graph)
        forget_shapes(graph, sorted(reshaped))
    return len(reshaped)
