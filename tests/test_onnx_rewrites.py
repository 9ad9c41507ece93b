"""The arg-max-before-pixel-shuffle rewrite: same labels, ties included, on real ONNX Runtime."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converters.onnx_passes import check_and_infer
from converters.onnx_rewrites import argmax_before_pixel_shuffle
from converters.onnx_verify import session_for

CLASSES, S = 5, 4


def _graph(slice_axes=(2, 3), extra_consumer=False, keepdims=0) -> onnx.ModelProto:
    """scores [N, C*s*s, h, w] -> DepthToSpace -> crop -> ArgMax -> Cast(float) -> Cast(uint8),
    the tail of an exported FCN with sub-pixel upsampling and folded arg-max."""
    inits = [
        numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "starts"),
        numpy_helper.from_array(np.array([-3, -1], dtype=np.int64), "ends"),
        numpy_helper.from_array(np.array(slice_axes, dtype=np.int64), "axes"),
    ]
    nodes = [
        helper.make_node("DepthToSpace", ["scores"], ["full"], blocksize=S, mode="CRD"),
        helper.make_node("Slice", ["full", "starts", "ends", "axes"], ["cropped"]),
        helper.make_node("ArgMax", ["cropped"], ["index"], axis=1, keepdims=keepdims),
        helper.make_node("Cast", ["index"], ["index_f"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["index_f"], ["labels"], to=TensorProto.UINT8),
    ]
    outputs = [helper.make_tensor_value_info("labels", TensorProto.UINT8, None)]
    if extra_consumer:
        nodes.append(helper.make_node("ReduceMax", ["full"], ["peak"], keepdims=0))
        outputs.append(helper.make_tensor_value_info("peak", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes, "tail",
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", CLASSES * S * S, "h", "w"])],
        outputs, inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return check_and_infer(model)


def _scores(seed: int, n: int = 2, h: int = 6, w: int = 7) -> np.ndarray:
    # Few distinct values, so many pixels have tied classes: the first maximal one must win.
    rng = np.random.default_rng(seed)
    return rng.integers(0, 3, size=(n, CLASSES * S * S, h, w)).astype(np.float32)


def test_labels_are_unchanged_ties_included():
    before = _graph()
    after = onnx.ModelProto()
    after.CopyFrom(before)
    assert argmax_before_pixel_shuffle(after) == 1
    after = check_and_infer(after)
    ops = [n.op_type for n in after.graph.node]
    assert ops.index("ArgMax") < ops.index("DepthToSpace")
    # The shuffle now moves one label plane, not CLASSES score planes.
    shuffle = next(n for n in after.graph.node if n.op_type == "DepthToSpace")
    shapes = {v.name: v.type.tensor_type.shape for v in after.graph.value_info}
    assert shapes[shuffle.input[0]].dim[1].dim_value == S * S
    a, b = session_for(before), session_for(after)
    for seed, (h, w) in enumerate([(6, 7), (1, 3), (9, 4)]):
        scores = _scores(seed, h=h, w=w)
        expected = a.run(None, {"scores": scores})[0]
        got = b.run(None, {"scores": scores})[0]
        assert got.dtype == np.uint8 and got.shape == expected.shape == (2, h * S - 4, w * S - 3)
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("kwargs", [{"slice_axes": (1, 3)}, {"extra_consumer": True}, {"keepdims": 1}])
def test_leaves_graphs_it_cannot_prove_equal(kwargs):
    model = _graph(**kwargs)
    ops = [n.op_type for n in model.graph.node]
    assert argmax_before_pixel_shuffle(model) == 0
    assert [n.op_type for n in model.graph.node] == ops
