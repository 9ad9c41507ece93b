"""The real thing: build engines with TensorRT on a GPU, run them, and compare with ONNX Runtime.

Runs where ``import tensorrt`` works, a GPU is present and cuda-python or pycuda is installed;
skipped with the reason everywhere else. Small graphs, so the whole file takes seconds.
"""
import os

import numpy as np
import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.tensorrt]

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from fcn_deploy.converters import tensorrt_build as tb  # noqa: E402
from fcn_deploy.runtime import engine_cache as ec  # noqa: E402
from fcn_deploy.runtime.backends import open_backend  # noqa: E402
from fcn_deploy.runtime import tensorrt_compat as compat  # noqa: E402
from fcn_deploy.runtime.backends import tensorrt as trt_backend  # noqa: E402
from fcn_deploy.runtime.cuda_memory import CudaError, installed_libraries, open_cuda  # noqa: E402
from onnx_helpers import exported_onnx  # noqa: E402

SIZES = [(1, 180, 240), (1, 360, 480), (2, 257, 301), (1, 720, 960)]


@pytest.fixture(scope="module")
def trt():
    try:
        return compat.import_tensorrt()
    except compat.TensorRTError as exc:
        pytest.skip(str(exc).split(". ")[0])


@pytest.fixture(scope="module")
def cuda(trt):
    try:
        return open_cuda(0)
    except CudaError as exc:
        pytest.skip(f"no CUDA: {exc}")


def cpu_session(path):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def frames_of(shape, seed=0):
    n, h, w = shape
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def build(tmp_path, trt, cuda, name="m", contexts=1, logits=False, precision="fp32"):
    """A real export (what `fcn-deploy export` writes) built into an engine on this GPU."""
    onnx_path = exported_onnx(tmp_path / f"{name}.onnx", logits=logits, precision=precision)
    shapes = ["min=1x3x180x240,opt=1x3x360x480,max=2x3x720x960"] if logits \
        else ["min=1x180x240x3,opt=1x360x480x3,max=2x720x960x3"]
    options = tb.BuildOptions(shapes=shapes, contexts=contexts, timing_cache=str(tmp_path / "timing.cache"))
    return onnx_path, tb.ensure_engine(onnx_path, options=options, trt=trt, cuda=cuda)


@pytest.mark.parametrize("precision, min_agreement", [("fp32", 0.999), ("fp16", 0.99), ("int8", 0.98)])
def test_labels_match_onnxruntime_at_several_sizes(tmp_path, trt, cuda, precision, min_agreement):
    onnx_path, result = build(tmp_path, trt, cuda, precision=precision)
    assert not result.reused and os.path.isfile(result.engine_path + ".json")
    assert result.sidecar.strongly_typed == (compat.version_tuple(trt) >= (10, 0))
    session = cpu_session(onnx_path)
    with open_backend(result.engine_path, device="cuda") as backend:
        assert isinstance(backend, trt_backend.TensorRTBackend)
        for i, shape in enumerate(SIZES):
            frames = frames_of(shape, i)
            labels = backend.infer(frames)
            expected = session.run(None, {"input": frames})[0]
            assert labels.shape == expected.shape and labels.dtype == np.uint8
            agreement = float((labels == expected).mean())
            assert agreement >= min_agreement, f"{precision} at {shape}: {agreement:.4f}"


def test_logits_match_onnxruntime(tmp_path, trt, cuda):
    onnx_path, result = build(tmp_path, trt, cuda, logits=True, precision="fp32")
    session = cpu_session(onnx_path)
    with open_backend(result.engine_path, device="cuda") as backend:
        for i, shape in enumerate(SIZES):
            x = backend.prepare(frames_of(shape, i))
            logits = backend.run_graph(x)
            np.testing.assert_allclose(logits, session.run(None, {"input": x})[0], rtol=1e-3, atol=1e-3)


def test_cache_reuse_and_rebuild(tmp_path, trt, cuda):
    onnx_path, first = build(tmp_path, trt, cuda, precision="fp16")
    assert os.path.getsize(tmp_path / "timing.cache") > 0
    again = tb.ensure_engine(onnx_path, options=tb.BuildOptions(shapes=["min=1x180x240x3,opt=1x360x480x3,max=2x720x960x3"],
                                                                 contexts=1), trt=trt, cuda=cuda)
    assert again.reused
    changed = tb.ensure_engine(onnx_path, options=tb.BuildOptions(shapes=["1x360x480x3"]), trt=trt, cuda=cuda)
    assert not changed.reused and "engine shapes are" in changed.reason
    # An engine whose sidecar says another TensorRT built it is refused before deserialising.
    sidecar = ec.read_sidecar(changed.engine_path)
    sidecar.tensorrt_version = "8.5.2"
    ec.write_sidecar(changed.engine_path, sidecar)
    with pytest.raises(ec.EngineMismatch, match="built by TensorRT 8.5.2"):
        open_backend(changed.engine_path, device="cuda")
    rebuilt = tb.ensure_engine(onnx_path, options=tb.BuildOptions(shapes=["1x360x480x3"]), trt=trt, cuda=cuda)
    assert rebuilt.reason.startswith("built by TensorRT 8.5.2")


def test_two_contexts_and_buffer_reuse(tmp_path, trt, cuda):
    onnx_path, result = build(tmp_path, trt, cuda, precision="fp32", contexts=2)
    session = cpu_session(onnx_path)
    with open_backend(result.engine_path, device="cuda", contexts=2) as backend:
        frames = [frames_of(SIZES[i % 2], i) for i in range(6)]
        tickets = [backend.submit(f) for f in frames]
        for f, t in zip(frames, tickets):
            expected = session.run(None, {"input": f})[0]
            assert float((backend.result(t) == expected).mean()) >= 0.999
        grown = [slot.grow_count for slot in backend.slots]
        backend.infer(frames_of((1, 200, 200), 9))  # smaller: no new buffers
        assert [slot.grow_count for slot in backend.slots] == grown


def test_a_refused_node_is_named_before_tensorrt_parses(tmp_path, trt, cuda):
    from fcn_deploy.converters.tensorrt_check import TensorRTConformanceError

    node = onnx.helper.make_node("NotARealOp", ["labels"], ["odd"], domain="com.example", name="mystery_node")
    onnx_path = exported_onnx(tmp_path / "m.onnx", extra_node=node)
    with pytest.raises(TensorRTConformanceError, match="mystery_node"):
        tb.ensure_engine(onnx_path, trt=trt, cuda=cuda)


@pytest.mark.parametrize("library", ["cuda-python", "pycuda"])
def test_each_installed_cuda_library_runs_the_engine(tmp_path, trt, cuda, library):
    if library not in installed_libraries():
        pytest.skip(f"{library} is not installed")
    onnx_path, result = build(tmp_path, trt, cuda, precision="fp32")
    frames = frames_of((1, 240, 320))
    with trt_backend.TensorRTBackend(result.engine_path, "cuda", cuda_library=library) as backend:
        np.testing.assert_array_equal(backend.infer(frames)[0].shape, (240, 320))
        assert float((backend.infer(frames) == cpu_session(onnx_path).run(None, {"input": frames})[0]).mean()) >= 0.999


def test_bundled_zoo_model_matches_onnxruntime(tmp_path, trt, cuda):
    """A real FCN (ResNet18 FCN-8s, random weights) exported by fcn-deploy, built and run."""
    pytest.importorskip("torch")
    from fcn_deploy.converters.onnx_export import export
    from fcn_deploy.converters.resolve import resolve_model

    resolved = resolve_model("fcn8s_resnet18", num_classes=5)
    onnx_path = export(resolved, str(tmp_path / "resnet.onnx"), precision="fp32").path
    result = tb.ensure_engine(onnx_path, options=tb.BuildOptions(shapes=["min=1x128x128x3,opt=1x256x320x3,max=1x512x640x3"]),
                              trt=trt, cuda=cuda)
    session = cpu_session(onnx_path)
    with open_backend(result.engine_path, device="cuda") as backend:
        for i, (h, w) in enumerate([(128, 160), (256, 320), (360, 480)]):
            frames = frames_of((1, h, w), i)
            agreement = float((backend.infer(frames) == session.run(None, {"input": frames})[0]).mean())
            assert agreement >= 0.99, f"{h}x{w}: {agreement:.4f}"
