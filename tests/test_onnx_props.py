"""Reading an ONNX file's metadata without the onnx package (fcn_deploy.runtime.onnx_props).

The reader is checked against ``onnx.load`` itself on real files: the bundled model, models
made here with every top-level field filled in, and broken files (cut short, garbage).
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from fcn_deploy.errors import FcnDeployError
from fcn_deploy.runtime.assets import bundled_asset
from fcn_deploy.runtime.model_files import read_metadata
from fcn_deploy.runtime.onnx_props import onnx_metadata_props

onnx = pytest.importorskip("onnx")
helper = onnx.helper


def props_by_onnx(path) -> dict:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def full_model(props) -> "onnx.ModelProto":
    """A small model with every top-level field set, a large weight, a function and metadata."""
    import numpy as np

    weight = onnx.numpy_helper.from_array(np.arange(300_000, dtype=np.float32).reshape(1, -1), "w")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"], name="add")], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 300_000])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 300_000])], [weight])
    function = helper.make_function("local", "f", ["a"], ["b"], [helper.make_node("Identity", ["a"], ["b"])],
                                    [helper.make_opsetid("", 17)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
                              producer_name="test", producer_version="1", domain="ai.test", model_version=3,
                              doc_string="doc", functions=[function])
    for key, value in props:
        model.metadata_props.add(key=key, value=value)
    return model


def test_bundled_model_reads_as_onnx_reads_it():
    path = bundled_asset("camvid.onnx")
    assert onnx_metadata_props(str(path)) == props_by_onnx(path)
    assert read_metadata(path).classes  # and the metadata built from it is the model's


@pytest.mark.parametrize("props", [
    [],
    [("fcn_deploy.classes", "a,b"), ("empty", ""), ("unicode", "Straße · 道路 🚗")],
    [("dup", "first"), ("dup", "second")],  # a dict of the list: the last one wins
    [("long", "x" * 100_000)],  # a value longer than one varint byte of length
])
def test_every_field_of_a_made_model(tmp_path, props):
    path = tmp_path / "m.onnx"
    onnx.save(full_model(props), str(path))
    assert onnx_metadata_props(str(path)) == props_by_onnx(path) == dict(props)


def test_metadata_before_the_graph(tmp_path):
    """Field order is not fixed by protobuf: metadata written first is found too."""
    model = full_model([("k", "v")])
    meta = onnx.ModelProto()
    meta.metadata_props.add(key="first", value="1")
    path = tmp_path / "m.onnx"
    path.write_bytes(meta.SerializeToString() + model.SerializeToString())  # concatenation merges messages
    assert onnx_metadata_props(str(path)) == props_by_onnx(path) == {"first": "1", "k": "v"}


@pytest.mark.parametrize("cut", [1, 10, 1000, -5, -1])
def test_a_file_cut_short_is_one_line(tmp_path, cut):
    data = full_model([("k", "v")]).SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[:cut])
    with pytest.raises(Exception):
        onnx.load(str(path))  # onnx refuses it too
    with pytest.raises(FcnDeployError, match=r"cannot read ONNX file .*cut\.onnx: not an ONNX model"):
        onnx_metadata_props(str(path))


@pytest.mark.parametrize("data", [b"\xff" * 64, b"\x00\x01\x02", b"PK\x03\x04 this is a zip, not a model"])
def test_garbage_is_one_line(tmp_path, data):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(data)
    with pytest.raises(FcnDeployError, match="cannot read ONNX file .*not an ONNX model"):
        onnx_metadata_props(str(path))


def test_missing_file(tmp_path):
    with pytest.raises(FcnDeployError, match="model file not found"):
        onnx_metadata_props(str(tmp_path / "none.onnx"))


def test_reading_metadata_imports_no_onnx():
    """The point of the reader: ``run``'s start-up path reads metadata without ``import onnx``
    (which pulls in ml_dtypes, about a second on a small board)."""
    code = ("import sys\nfrom fcn_deploy.runtime.model_files import read_metadata\n"
            "from fcn_deploy.runtime.assets import bundled_asset\n"
            "read_metadata(bundled_asset('camvid.onnx'))\n"
            "print(sorted(m for m in ('onnx', 'ml_dtypes', 'onnxruntime', 'torch') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
