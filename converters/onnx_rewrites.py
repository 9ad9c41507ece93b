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
shuffle and crop of C full-resolution score planes are gone (the README's latency section
has the measured gain). The labels travel as float through the shuffle because TensorRT
shuffles and casts float more widely than integer types.
"""
from __future__ import annotations

import logging
from typing import List, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .onnx_passes import attribute, consumers, producers

log = logging.getLogger(__name__)


def _constant(graph: onnx.GraphProto, name: str) -> Optional[np.ndarray]:
    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(attribute(node, "value"))
    return None


def _spatial_slice(graph: onnx.GraphProto, node: onnx.NodeProto) -> bool:
    """A Slice whose constant ``axes`` are the spatial ones (2, 3, -2 or -1) only."""
    if node.op_type != "Slice" or len(node.input) < 4:
        return False
    axes = _constant(graph, node.input[3])
    if axes is None:
        return False
    steps = _constant(graph, node.input[4]) if len(node.input) > 4 and node.input[4] else None
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
    if moved:  # drop the shapes of tensors that no longer exist
        produced = {out for node in graph.node for out in node.output}
        kept = [v for v in graph.value_info if v.name in produced]
        del graph.value_info[:]
        graph.value_info.extend(kept)
    return moved
