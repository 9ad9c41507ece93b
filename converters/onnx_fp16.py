"""FP32 -> FP16 ONNX, with float32 inputs and outputs and explicit Casts at the boundary.

TensorRT 10/11 build strongly typed networks, so the precision of every layer must be in the
graph itself. onnxconverter-common does the conversion; with ``keep_io_types`` it should keep
float32 graph inputs and outputs. It does not when the graph ends in an op that it keeps in
float32 (its block list: Resize, TopK, Min, Max ... or a node the user asked to keep): it
casts that op's float32 result back to float16 *after* it and declares the graph output
float16 (onnxconverter-common 1.16). :func:`repair_io_types` restores every graph input and
output to its original type with an explicit Cast.
"""
from __future__ import annotations

import copy
import logging
import warnings
from typing import Dict, List, Sequence

import onnx
from onnx import helper

from .onnx_passes import FLOAT, FLOAT16, ExportError, elem_type

log = logging.getLogger(__name__)


def _unique(model: onnx.ModelProto, base: str) -> str:
    taken = {t for n in model.graph.node for t in list(n.input) + list(n.output)}
    taken |= {n.name for n in model.graph.node}
    taken |= {i.name for i in model.graph.initializer}
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    return name


def repair_io_types(model: onnx.ModelProto, original_types: Dict[str, int]) -> List[str]:
    """Give every graph input and output its original element type back; return the names fixed.

    An output that came out float16 is fed by a new ``Cast(to=FLOAT)``, or, where its
    producer is the converter's own ``Cast(to=FLOAT16)`` used nowhere else, that Cast is
    turned into a cast to float32 (so no float16 round trip is left at the boundary). An input
    that came out float16 is declared float32 again and cast to float16 for its consumers.
    """
    fixed: List[str] = []
    graph = model.graph
    for out in graph.output:
        want = original_types.get(out.name)
        if want != FLOAT or elem_type(out) != FLOAT16:
            continue
        producer = next((n for n in graph.node if out.name in n.output), None)
        consumers = [n for n in graph.node if out.name in n.input]
        if producer is not None and producer.op_type == "Cast" and not consumers:
            for attr in producer.attribute:
                if attr.name == "to":
                    attr.i = FLOAT
        else:
            half = _unique(model, out.name + "_fp16")
            for node in graph.node:
                node.output[:] = [half if t == out.name else t for t in node.output]
                node.input[:] = [half if t == out.name else t for t in node.input]
            cast = helper.make_node("Cast", [half], [out.name], to=FLOAT, name=_unique(model, out.name + "_to_fp32"))
            graph.node.append(cast)
        out.type.tensor_type.elem_type = FLOAT
        fixed.append(out.name)
    for inp in graph.input:
        want = original_types.get(inp.name)
        if want != FLOAT or elem_type(inp) != FLOAT16:
            continue
        half = _unique(model, inp.name + "_fp16")
        for node in graph.node:
            node.input[:] = [half if t == inp.name else t for t in node.input]
        cast = helper.make_node("Cast", [inp.name], [half], to=FLOAT16, name=_unique(model, inp.name + "_to_fp16"))
        graph.node.insert(0, cast)
        inp.type.tensor_type.elem_type = FLOAT
        fixed.append(inp.name)
    # Stale value_info for renamed tensors would contradict the new types.
    names = set(fixed)
    keep = [v for v in graph.value_info if v.name not in names]
    del graph.value_info[:]
    graph.value_info.extend(keep)
    if fixed:
        log.info("fp16: restored float32 at graph boundary for %s", ", ".join(fixed))
    return fixed


PREPROCESSING_OPS = ("Cast", "Gather", "Slice", "Sub", "Div", "Mul", "Transpose")


def preprocessing_nodes(model: onnx.ModelProto) -> List[str]:
    """Names of the folded pre-processing chain (Transpose, Cast from uint8, channel swap,
    Sub mean, Div std), if any.

    It stays in float32: the mean/std arithmetic is then exactly the runtime's numpy
    pre-processing, and onnxconverter-common would otherwise turn the mean and std into
    float16 while leaving the Cast from uint8 at float32, which is an invalid graph.
    """
    inp = model.graph.input[0]
    if elem_type(inp) in (FLOAT, FLOAT16):
        return []
    chain, tensor = [], inp.name
    while True:
        consumers = [n for n in model.graph.node if tensor in n.input]
        if len(consumers) != 1 or consumers[0].op_type not in PREPROCESSING_OPS:
            return chain
        node = consumers[0]
        chain.append(node.name)
        if node.op_type == "Div":  # dividing by the standard deviation ends it
            return chain
        tensor = node.output[0]


def unshare_initializers(model: onnx.ModelProto, nodes: Sequence[str]) -> int:
    """Give each named node private copies of the initializers it shares with other nodes.

    onnxslim merges identical constants (all-zero biases, say) into one initializer; when one
    of its users stays float32 and the others become float16, onnxconverter-common keeps the
    shared tensor in one type and the graph becomes invalid. Returns how many were copied.
    """
    inits = {i.name: i for i in model.graph.initializer}
    users: Dict[str, int] = {}
    for node in model.graph.node:
        for name in set(node.input):
            if name in inits:
                users[name] = users.get(name, 0) + 1
    wanted, copied = set(nodes), 0
    for node in model.graph.node:
        if node.name not in wanted:
            continue
        for k, name in enumerate(node.input):
            if name in inits and users[name] > 1:
                private = _unique(model, f"{name}_{node.name}")
                clone = copy.deepcopy(inits[name])
                clone.name = private
                model.graph.initializer.append(clone)
                node.input[k] = private
                users[name] -= 1
                copied += 1
    return copied


def convert_to_fp16(model: onnx.ModelProto, keep_fp32: Sequence[str] = ()) -> onnx.ModelProto:
    """A float16 copy of ``model`` whose graph inputs and outputs keep their types.

    ``keep_fp32`` names nodes (as in the graph) that stay in float32, for layers that lose
    too much in half precision. An unknown name is an error, so a typo is not silently ignored.
    """
    from onnxconverter_common import float16

    names = {n.name for n in model.graph.node}
    unknown = [n for n in keep_fp32 if n not in names]
    if unknown:
        sample = ", ".join(sorted(names)[:8])
        raise ExportError(f"--keep-fp32: no node named {', '.join(unknown)} in the graph (nodes: {sample}, ...)")
    original = {v.name: elem_type(v) for v in list(model.graph.input) + list(model.graph.output)}
    # Inferred float32 value_info would contradict the converted types; the converter and
    # the final checks infer them afresh.
    model = copy.deepcopy(model)
    del model.graph.value_info[:]
    blocked = preprocessing_nodes(model) + [n for n in keep_fp32]
    unshare_initializers(model, blocked)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns for every constant it clips to the fp16 range
        half = float16.convert_float_to_float16(
            model, keep_io_types=True, node_block_list=blocked, disable_shape_infer=False
        )
    del half.graph.value_info[:]
    repair_io_types(half, original)
    bad = [v.name for v in list(half.graph.input) + list(half.graph.output) if elem_type(v) != original[v.name]]
    if bad:
        raise ExportError(f"fp16 conversion changed the type of {', '.join(bad)}")
    return half
