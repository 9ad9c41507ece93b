"""One runner per backend: the graph of one configuration, opened, and run on host frames.

Every runner has the same contract, so latency and accuracy measure the same thing on each:

* :meth:`Runner.prepare` turns raw ``N x H x W x 3`` uint8 BGR frames into what the graph
  takes (the frames themselves for the deployment graph; host-side normalisation for a
  logits graph). It is *not* timed.
* :meth:`Runner.run` is timed: host input in, host output out, synchronised, so a GPU
  backend's time includes its host-to-device and device-to-host copies.
* :meth:`Runner.split` gives the host-to-device / compute / device-to-host means where the
  backend lets them be told apart (``None`` elsewhere, with the reason in ``split_note``).

The backends and precisions, and which of them can run here, are in :mod:`benchmarks._backends`
(its names are importable from here too, as the benchmarks and tests use them). The peer
runners normalise and arg-max in numpy inside the timed call, as a user of that path does.
Every runner says in ``execution_precision`` what its engine reports it compiled (OpenVINO's
read back from the compiled model), so an fp32 row is seen to be fp32.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from fcn_deploy.errors import FcnDeployError

from ._backends import DEVICE, OPENVINO_DEVICE, ORT_DEVICE, PEER_BACKENDS, graph_precision
# Re-exported: the benchmarks and tests name these as _runners.X.
from ._backends import (  # noqa: F401
    BACKENDS, PRECISIONS, _parse_choices, openvino_bf16_problem, parse_backends, parse_precisions, runnable,
    path_of, unavailable_reason, unsupported_reason,
)

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Runners
# --------------------------------------------------------------------------------------------
class Runner:
    """One opened configuration (see the module docstring)."""

    backend: str = ""
    precision: str = "fp32"
    execution_precision: str = ""  # what the engine says it compiled; the precision's name where it cannot say
    int8_scheme: Optional[str] = None  # s8s8 or u8s8 for an INT8 graph
    device: str = "cpu"
    providers: List[str] = []
    output_kind: str = "labels"
    split_note: str = "host-only backend: no copies to time"
    notes: List[str]

    def prepare(self, frames: np.ndarray) -> Any:
        return frames

    def run(self, x: Any) -> np.ndarray:
        raise NotImplementedError

    def reset_split(self) -> None:
        """Forget the split timings gathered so far (called after warm-up)."""

    def split(self, x: Any, iters: int) -> Optional[Dict[str, float]]:
        return None

    def infer(self, frames: np.ndarray) -> np.ndarray:
        """``prepare`` then ``run``: what the accuracy benchmark calls (BackendPredictor's contract)."""
        return self.run(self.prepare(frames))

    def close(self) -> None:
        pass


class TorchCPURunner(Runner):
    """PyTorch eager on the CPU, ``threads`` intra-op threads, under ``inference_mode``,
    weights in channels-last layout.

    Channels-last is PyTorch's recommended layout for CPU inference of convolutional nets: its
    oneDNN convolutions then skip the NCHW reorders, which makes the bundled model clearly
    faster than in NCHW on a small CPU.
    """

    def __init__(self, module, graph: str, normalization, threads: int) -> None:
        import torch

        self.torch = torch
        torch.set_num_threads(threads)
        self.module = module.to(memory_format=torch.channels_last)
        self.graph = graph
        self.normalization = normalization
        self.backend, self.precision, self.device = "pytorch", "fp32", "cpu"
        self.execution_precision = "fp32"
        self.providers = [f"torch {torch.__version__} CPU, {torch.get_num_threads()} threads, channels-last"]
        self.output_kind = graph
        self.notes = []

    def prepare(self, frames: np.ndarray):
        if self.graph == "labels":
            return self.torch.from_numpy(np.ascontiguousarray(frames))
        from fcn_deploy.runtime.backends.base import normalize_frames

        return self.torch.from_numpy(normalize_frames(frames, self.normalization))

    def run(self, x) -> np.ndarray:
        with self.torch.inference_mode():
            return self.module(x).numpy()


class TorchCudaRunner(Runner):
    """PyTorch on CUDA: channels-last, cuDNN autotuning, the whole graph captured as a CUDA graph.

    The input is copied from page-locked host memory into a static device buffer, the graph
    is replayed, and the output copied back into page-locked memory; CUDA events between the
    three steps give the split. If capture fails (an op CUDA graphs do not support) it runs
    eagerly and says so in ``notes``.
    """

    def __init__(self, module, graph: str, normalization, precision: str, shape: Tuple[int, int, int],
                 cuda_graphs: bool = True) -> None:
        import torch

        self.torch = torch
        self.graph, self.normalization = graph, normalization
        self.backend, self.precision, self.device = "pytorch-cuda", precision, "cuda"
        self.execution_precision = precision
        self.output_kind = graph
        self.notes = ["channels-last"]
        torch.backends.cudnn.benchmark = True
        n, h, w = shape
        self.module = module.cuda().to(memory_format=torch.channels_last).eval()
        if graph == "labels":
            self.static_in = torch.zeros((n, h, w, 3), dtype=torch.uint8, device="cuda")
        else:
            self.static_in = torch.zeros((n, 3, h, w), dtype=torch.float32, device="cuda")
        self.providers = [f"torch {torch.__version__} CUDA {torch.version.cuda} on {torch.cuda.get_device_name(0)}"]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(stream):
            for _ in range(3):  # cuDNN picks its algorithms here, before capture
                self.static_out = self.module(self.static_in)
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        self.cuda_graph = None
        if cuda_graphs:
            try:
                graph_ = torch.cuda.CUDAGraph()
                with torch.no_grad(), torch.cuda.graph(graph_):
                    self.static_out = self.module(self.static_in)
                torch.cuda.synchronize()
                self.cuda_graph = graph_
                self.notes.append("CUDA graph")
            except Exception as exc:  # capture is best effort; eager still measures the backend
                self.notes.append(f"eager (CUDA graph capture failed: {type(exc).__name__})")
                log.warning("CUDA graph capture failed, running eagerly: %s", exc)
        self.host_out = torch.empty(self.static_out.shape, dtype=self.static_out.dtype, pin_memory=True)
        self.events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        self._split: List[Tuple[float, float, float]] = []
        self.split_note = "CUDA events"

    def prepare(self, frames: np.ndarray):
        if self.graph == "labels":
            host = self.torch.from_numpy(np.ascontiguousarray(frames))
        else:
            from fcn_deploy.runtime.backends.base import normalize_frames

            host = self.torch.from_numpy(normalize_frames(frames, self.normalization))
        return host.pin_memory()

    def run(self, x) -> np.ndarray:
        torch = self.torch
        e0, e1, e2, e3 = self.events
        e0.record()
        self.static_in.copy_(x, non_blocking=True)
        e1.record()
        if self.cuda_graph is not None:
            self.cuda_graph.replay()
        else:
            with torch.no_grad():
                self.static_out = self.module(self.static_in)
        e2.record()
        self.host_out.copy_(self.static_out, non_blocking=True)
        e3.record()
        e3.synchronize()
        self._split.append((e0.elapsed_time(e1), e1.elapsed_time(e2), e2.elapsed_time(e3)))
        return self.host_out.numpy().copy()

    def reset_split(self) -> None:
        self._split = []

    def split(self, x, iters: int) -> Optional[Dict[str, float]]:
        if not self._split:
            for _ in range(iters):
                self.run(x)
        h2d, compute, d2h = (float(np.mean(v)) for v in zip(*self._split))
        return {"h2d_ms": h2d, "compute_ms": compute, "d2h_ms": d2h}


class BackendRunner(Runner):
    """A runner over one of the runtime's own backends (``self.impl``, from ``open_backend``):
    it times exactly what ``fcn-deploy run`` calls."""

    impl: Any

    def prepare(self, frames: np.ndarray) -> np.ndarray:
        return self.impl.prepare(frames)

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.impl.run_graph(x)

    def close(self) -> None:
        self.impl.close()

    def _opened(self, backend: str, precision: str) -> None:
        """The facts every backend runner reports, from the opened backend."""
        self.backend, self.precision, self.device = backend, precision, DEVICE[backend]
        self.providers = list(self.impl.providers)
        self.output_kind = self.impl.output_kind
        self.execution_precision = self.impl.execution_precision


class OrtRunner(BackendRunner):
    """An ONNX file in ONNX Runtime through the runtime's own backend (``open_backend``).

    On the CUDA and TensorRT providers the split is measured separately with an I/O
    binding (input copied to the device, run with the output left there, output copied
    back), timed on the host around each synchronous step.
    """

    def __init__(self, path: str, backend: str, precision: str, threads: int, shape: Tuple[int, int, int],
                 workdir: str) -> None:
        from fcn_deploy.runtime.backends import open_backend

        options: Dict[str, Any] = {"threads": threads}
        self.notes = []
        if backend == "ort-tensorrt":
            cache = os.path.join(workdir, "ort-tensorrt-cache")
            options.update(engine_cache_dir=cache, timing_cache_dir=cache, fp16=precision == "fp16",
                           profile_shapes={"min": shape, "opt": shape, "max": shape})
            self.notes.append("TensorRT EP, profile fixed at this shape")
        self.impl = open_backend(path, ORT_DEVICE[backend], **options)
        self._opened(backend, precision)
        self.path = path
        if backend != "ort-cpu":
            self.split_note = "host timers around an I/O binding's steps"


    def split(self, x: np.ndarray, iters: int) -> Optional[Dict[str, float]]:
        if self.device == "cpu":
            return None
        import onnxruntime as ort

        session = self.impl.session
        in_name, out_name = self.impl.input_spec.name, self.impl.output_spec.name
        times = []
        try:
            for _ in range(iters + 1):  # the first round is a warm-up of the binding path
                binding = session.io_binding()
                t0 = time.perf_counter()
                value = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
                t1 = time.perf_counter()
                binding.bind_ortvalue_input(in_name, value)
                binding.bind_output(out_name, "cuda", 0)
                session.run_with_iobinding(binding)
                binding.synchronize_outputs()
                t2 = time.perf_counter()
                binding.copy_outputs_to_cpu()
                t3 = time.perf_counter()
                times.append(((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3))
        except Exception as exc:  # the split is extra information; its failure must not cost the run
            self.split_note = f"split not measured: {type(exc).__name__}: {exc}"
            log.warning("%s", self.split_note)
            return None
        h2d, compute, d2h = (float(np.mean(v)) for v in zip(*times[1:]))
        return {"h2d_ms": h2d, "compute_ms": compute, "d2h_ms": d2h}


class OpenVINORunner(BackendRunner):
    """An ONNX file in OpenVINO through the runtime's own backend (``open_backend(path, "openvino")``),
    its float layers in f32 (``fp32``, ``fp16``, ``int8``: never OpenVINO's own bf16 default) or
    bf16 (``bf16``)."""

    def __init__(self, path: str, backend: str, precision: str, threads: int) -> None:
        from fcn_deploy.runtime.backends import open_backend

        device = OPENVINO_DEVICE[backend]
        options: Dict[str, Any] = {"threads": threads} if backend == "openvino" else {}
        self.impl = open_backend(path, device, precision="bf16" if precision == "bf16" else "fp32", **options)
        self._opened(backend, precision)
        self.notes = ["model cache in the user cache"]
        if backend != "openvino":
            self.split_note = "not exposed by OpenVINO's infer request"


class PeerRunner(Runner):
    """The peers' path: a plain export (or the engine's own INT8 of it) opened as a user of
    ONNX Runtime or OpenVINO opens it, with ``threads`` threads; the timed call normalises the
    BGR uint8 frames in numpy, runs the graph, and takes the arg-max of the logits in numpy,
    so it does the same work as our graph (uint8 frames in, uint8 labels out)."""

    def __init__(self, path: str, backend: str, precision: str, threads: int, normalization, tool: str) -> None:
        self.backend, self.precision, self.device = backend, precision, "cpu"
        self.execution_precision = precision
        self.normalization = normalization
        self.output_kind = "labels"
        self.notes = ["plain torch.onnx.export; normalisation and arg-max in numpy, timed"]
        if precision == "int8":
            self.notes.append(tool)
        if backend == "peer-ort-cpu":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            self.session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
            self.input_name = self.session.get_inputs()[0].name
            self.providers = [f"onnxruntime {ort.__version__} CPUExecutionProvider, {threads} threads"]
            self._infer = lambda x: self.session.run(None, {self.input_name: x})[0]
        else:
            from fcn_deploy.runtime.backends.openvino import (PRECISION_HINTS, compiled_precision, import_openvino,
                                                              shared_core)

            ov = import_openvino()

            # The hint set as for our graphs: the same precision on both paths (OpenVINO's own
            # default would be bf16 on a CPU with AVX512_BF16 or AMX).
            hint = PRECISION_HINTS["bf16" if precision == "bf16" else "fp32"]
            self.compiled = shared_core().compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                                      "PERFORMANCE_HINT": "LATENCY",
                                                                      "INFERENCE_PRECISION_HINT": hint})
            self.execution_precision = compiled_precision(self.compiled)
            self.request = self.compiled.create_infer_request()
            self.providers = [f"OpenVINO {ov.__version__.split('-')[0]} CPU, {threads} threads"]
            self._infer = lambda x: self.request.infer({0: x})[0]

    def run(self, frames: np.ndarray) -> np.ndarray:
        from fcn_deploy.runtime.backends.base import normalize_frames

        logits = self._infer(normalize_frames(frames, self.normalization))
        return np.asarray(logits).argmax(axis=1).astype(np.uint8)

    def close(self) -> None:
        self.session = self.compiled = self.request = None


def open_peer_runner(backend: str, precision: str, source, workdir: str, shape: Tuple[int, int, int], threads: int,
                     calibration=None) -> Runner:
    """The peer path of ``backend`` at ``precision`` for inputs of ``shape`` (exported at that shape)."""
    from ._variants import PEER_INT8_TOOLS, Calibration, PeerExports

    engine = "onnxruntime" if backend == "peer-ort-cpu" else "openvino"
    if getattr(source, "imported_from", None):
        return open_imported_peer_runner(backend, precision, source, shape, threads)
    exports = PeerExports(workdir)
    if precision in ("fp32", "bf16"):
        path = exports.fp32(source, shape)
    elif precision == "int8":
        calibration = calibration or Calibration()
        path = (exports.int8_onnxruntime if engine == "onnxruntime" else exports.int8_openvino)(source, shape, calibration)
    else:
        raise FcnDeployError(f"the peer path runs fp32, bf16 and int8, not {precision}")
    return PeerRunner(path, backend, precision, threads, source.resolved.model.normalization, PEER_INT8_TOOLS[engine])


def open_imported_peer_runner(backend: str, precision: str, source, shape: Tuple[int, int, int],
                              threads: int) -> Runner:
    """The peer path of an imported file: the ONNX it was imported from, run as its user runs it
    (numpy normalisation, every output it computes, arg-max of the first in numpy), at ``shape``
    where its input is fixed to another size it cannot run, which is said."""
    dims = source.imported_input_dims or []
    n, h, w = shape
    if len(dims) == 4 and any(isinstance(d, int) and d != want for d, want in zip((dims[0], dims[2], dims[3]), (n, h, w))):
        raise FcnDeployError(f"the source ONNX {os.path.basename(source.imported_from)} is fixed to "
                             f"{'x'.join(map(str, dims))}; it cannot run batch {n} at {h}x{w}")
    if precision != "fp32":
        raise FcnDeployError(f"the peer path of an imported file is its source ONNX, fp32 only, not {precision}")
    runner = PeerRunner(source.imported_from, backend, precision, threads, source.imported_normalization, "")
    runner.notes = ["the source ONNX as brought to fcn-deploy import; normalisation and arg-max in numpy, timed"]
    return runner


class TensorRTRunner(BackendRunner):
    """A TensorRT engine (built and cached from the same ONNX) in the native backend."""

    def __init__(self, engine: str, precision: str) -> None:
        from fcn_deploy.runtime.backends import open_backend

        self.impl = open_backend(engine, "cuda")
        self._opened("tensorrt", precision)
        self.execution_precision = precision  # fixed when the engine was built (its sidecar says so)
        self.split_note = "not exposed by the native TensorRT backend (copies and execution on one stream)"
        self.notes = ["page-locked buffers, one stream"]


def build_engine(onnx_path: str, graph: str, shape: Tuple[int, int, int], workdir: str,
                 precision: Optional[str] = None) -> str:
    """A TensorRT engine for ``onnx_path`` with its profile fixed at ``shape`` (N, H, W), cached.

    The engine takes the ONNX's own precision (TensorRT 10/11 build strongly typed networks
    from the FP16 or INT8-QDQ graph), or bf16 from the FP32 graph where the release has the
    BF16 builder flag (``precision="bf16"``; refused in one line where it has not). ``fcn_deploy.converters.tensorrt_build.ensure_engine`` reuses an
    engine whose sidecar still matches (TensorRT version, GPU, ONNX sha256, profile, options)
    and rebuilds it otherwise.
    """
    from fcn_deploy.converters.tensorrt_build import BuildOptions, ensure_engine

    n, h, w = shape
    dims = f"{n}x{h}x{w}x3" if graph == "labels" else f"{n}x3x{h}x{w}"
    stem = os.path.splitext(os.path.basename(onnx_path))[0]
    suffix = f"-{precision}" if precision else ""
    engine = os.path.join(workdir, f"{stem}-{dims}{suffix}.engine")
    options = BuildOptions(precision=precision, shapes=[dims], timing_cache=os.path.join(workdir, "tensorrt.timing-cache"))
    result = ensure_engine(onnx_path, engine, options)
    log.info("%s engine %s (%s)", "reused" if result.reused else "built", engine, result.reason)
    return result.engine_path


def open_runner(backend: str, precision: str, source, cache, graph: str, shape: Tuple[int, int, int],
                threads: int, calibration=None) -> Runner:
    """Open ``backend`` at ``precision`` on ``source`` for inputs of ``shape`` (N, H, W)."""
    if backend == "pytorch":
        from ._variants import torch_module

        module = torch_module(source, precision, graph)
        return TorchCPURunner(module, graph, source.resolved.model.normalization, threads)
    if backend == "pytorch-cuda":
        from ._variants import torch_module

        module = torch_module(source, precision, graph, capturable=True)
        return TorchCudaRunner(module, graph, source.resolved.model.normalization, precision, shape)
    if backend in PEER_BACKENDS:
        return open_peer_runner(backend, precision, source, cache.workdir, shape, threads, calibration)
    if source.kind == "engine":
        return TensorRTRunner(source.file, precision)
    scheme = None
    if precision == "int8":
        from ._variants import Calibration

        scheme = (calibration or Calibration()).scheme_for(backend)
        if scheme == "u8s8" and backend in ("ort-tensorrt", "tensorrt"):
            raise FcnDeployError("TensorRT builds only the symmetric s8s8 INT8 graph, not u8s8")
    path = cache.onnx(source, graph_precision(precision), graph, calibration, scheme or "s8s8")
    if backend in ORT_DEVICE:
        runner: Runner = OrtRunner(path, backend, precision, threads, shape, cache.workdir)
    elif backend in OPENVINO_DEVICE:
        runner = OpenVINORunner(path, backend, precision, threads)
    elif backend == "tensorrt":
        engine = build_engine(path, graph, shape, cache.workdir, "bf16" if precision == "bf16" else None)
        runner = TensorRTRunner(engine, precision)
    else:
        raise FcnDeployError(f"unknown backend {backend!r}")
    runner.int8_scheme = scheme
    return runner
