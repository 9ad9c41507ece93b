"""The exact rewrites of converters.onnx_rewrites on real ONNX Runtime: the arg-max before the
pixel shuffle (same labels, ties included) and the sub-pixel convolution split by phase group
(same labels, a fraction of the multiply-adds)."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fcn_deploy.converters.onnx_passes import attribute, check_and_infer
from fcn_deploy.converters.onnx_rewrites import argmax_before_pixel_shuffle, split_subpixel_phases
from fcn_deploy.converters.onnx_verify import session_for

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


# --------------------------------------------------------------------------------------------
# split_subpixel_phases, on the sub-pixel form of real FCN upsamplers (kernel 2s, stride s, padding s/2)

def _upsampler_graph(scale: int, classes: int, grouped: bool, dense_taps: bool = False) -> onnx.ModelProto:
    """x [N, C, h, w] -> the sub-pixel convolution of a random deconvolution (dense across
    classes, as training leaves upscore8, or grouped, as an untrained export has it)
    -> DepthToSpace -> crop -> ArgMax -> Cast(float) -> Cast(uint8): the tail of an exported FCN.
    ``dense_taps`` fills the zero taps, so that no split is exact."""
    torch = pytest.importorskip("torch")
    from fcn_deploy.models.upsampling import SubPixelUpsample

    torch.manual_seed(scale + classes)
    deconv = torch.nn.ConvTranspose2d(classes, classes, 2 * scale, stride=scale, padding=scale // 2,
                                      groups=classes if grouped else 1, bias=True)
    sub = SubPixelUpsample(deconv)
    weight = sub.conv.weight.detach().numpy().copy()
    if dense_taps:
        weight[weight == 0] = 0.01
    inits = [
        numpy_helper.from_array(weight, "weight"),
        numpy_helper.from_array(sub.conv.bias.detach().numpy(), "bias"),
        numpy_helper.from_array(np.array([0, 0], dtype=np.int64), "starts"),
        numpy_helper.from_array(np.array([-2, -1], dtype=np.int64), "ends"),
        numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "weight", "bias"], ["scores"], pads=[1, 1, 1, 1], kernel_shape=[3, 3],
                         group=sub.conv.groups),
        helper.make_node("DepthToSpace", ["scores"], ["full"], blocksize=scale, mode="CRD"),
        helper.make_node("Slice", ["full", "starts", "ends", "axes"], ["cropped"]),
        helper.make_node("ArgMax", ["cropped"], ["index"], axis=1, keepdims=0),
        helper.make_node("Cast", ["index"], ["index_f"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["index_f"], ["labels"], to=TensorProto.UINT8),
    ]
    graph = helper.make_graph(
        nodes, "upsampler", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", classes, "h", "w"])],
        [helper.make_tensor_value_info("labels", TensorProto.UINT8, None)], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model = check_and_infer(model)
    assert argmax_before_pixel_shuffle(model) == 1
    return check_and_infer(model)


def _multiply_adds(model: onnx.ModelProto) -> int:
    """The convolutions' weight counts: each runs at the input's resolution, so this is
    proportional to their multiply-adds."""
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return sum(weights[n.input[1]].size for n in model.graph.node if n.op_type == "Conv")


@pytest.mark.parametrize("scale,grouped", [(8, False), (8, True), (2, False), (4, True)])
def test_phase_split_keeps_the_labels(scale, grouped):
    classes = 5
    before = _upsampler_graph(scale, classes, grouped)
    after = onnx.ModelProto()
    after.CopyFrom(before)
    assert split_subpixel_phases(after) == 1
    after = check_and_infer(after)
    convs = [n for n in after.graph.node if n.op_type == "Conv"]
    assert len(convs) == 4 and {tuple(attribute(c, "kernel_shape")) for c in convs} == {(2, 2)}
    # Each phase reads 2x2 of the 3x3 taps: 4/9 of the work, and the 3x3 weights are gone.
    assert _multiply_adds(after) * 9 == _multiply_adds(before) * 4
    assert "weight" not in {i.name for i in after.graph.initializer}
    a, b = session_for(before), session_for(after)
    rng = np.random.default_rng(scale)
    for n, h, w in [(2, 6, 7), (1, 1, 3), (1, 9, 4)]:
        x = rng.standard_normal((n, classes, h, w)).astype(np.float32)
        expected = a.run(None, {"x": x})[0]
        got = b.run(None, {"x": x})[0]
        assert got.shape == expected.shape == (n, h * scale - 2, w * scale - 1)
        np.testing.assert_array_equal(got, expected)


def test_phase_split_leaves_convolutions_that_read_every_tap():
    model = _upsampler_graph(8, 5, grouped=False, dense_taps=True)
    ops = [n.op_type for n in model.graph.node]
    assert split_subpixel_phases(model) == 0
    assert [n.op_type for n in model.graph.node] == ops
