"""Native TensorRT backend: a serialized plan with its sidecar, run on one GPU.

Written against the documented API of TensorRT 8.5/8.6 (JetPack 5 and 6.0), 10.x (JetPack
6.1+, desktop) and 11.x (desktop), using only what all of them have (what differs between
releases lives in :mod:`fcn_deploy.runtime.tensorrt_compat`, shared with the builder):

- the name-based I/O API: ``num_io_tensors``/``get_tensor_name``/``get_tensor_mode``,
  ``set_input_shape``, ``set_tensor_address``, ``execute_async_v3`` (never the binding-index
  API or ``execute_async_v2``, both removed in 10);
- every enum member looked up by name through
  :func:`~fcn_deploy.runtime.tensorrt_compat.enum_member`, which checks the running major
  version against its table first, so a member removed in a release (the FP16
  builder flag and ``EXPLICIT_BATCH`` in 11) is never touched there;
- CUDA memory and streams through :mod:`fcn_deploy.runtime.cuda_memory`.

A plan is tied to the TensorRT version and the GPU that built it: the sidecar
``NAME.engine.json`` (:mod:`fcn_deploy.runtime.engine_cache`) is checked *before* the plan is
deserialised, so a stale engine is one clear line instead of TensorRT's serialisation errors.

Execution: each execution context has its own CUDA stream, page-locked host buffers and
device buffers. A call copies the frame into the pinned input buffer, then on the context's
stream: host-to-device copy, ``execute_async_v3``, device-to-host copy. Buffers are reused
across frames and regrown only when a shape needs more bytes than they hold. With
``contexts=2`` (an engine built with ``fcn-deploy build --contexts 2``, one optimisation
profile per context) :meth:`TensorRTBackend.submit` and :meth:`TensorRTBackend.result` let a
pipeline upload and run frame k+1 while frame k is still being copied back.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..engine_cache import EngineMismatch, Sidecar, read_sidecar, runtime_problem, sha256_bytes
from ..metadata import LAYOUT_RAW_BGR, ModelMetadata
from ..tensorrt_compat import (
    TensorRTError,
    current_system,
    enum_member,
    enum_name,
    import_tensorrt,
    parse_gpu_device,
    tensorrt_logger,
)
from .base import Backend, BackendError, TensorSpec, check_array

log = logging.getLogger(__name__)

# TensorRT DataType names -> numpy dtype names (by name: no enum values hard-coded).
NUMPY_DTYPES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "INT8": "int8",
    "UINT8": "uint8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
}

# -- the backend ----------------------------------------------------------------------------
def _dims(shape: Any) -> Tuple[int, ...]:
    return tuple(int(d) for d in shape)


def _text(shape: Sequence[int]) -> str:
    return "x".join(str(int(d)) for d in shape)


class _Slot:
    """One execution context with its stream and its reusable buffers."""

    def __init__(self, backend: "TensorRTBackend", index: int) -> None:
        self.backend = backend
        self.index = index
        cuda, engine = backend.cuda, backend.engine
        self.stream = cuda.create_stream()
        self.context = engine.create_execution_context()
        if self.context is None:
            raise TensorRTError(
                f"TensorRT could not create execution context {index + 1} for {backend.path}: "
                f"{backend.log_recorder.take_error()}"
            )
        # With dynamic shapes every live context needs its own profile; the first context
        # gets profile 0 implicitly.
        if backend.input_is_dynamic and (backend.num_profiles > 1 or index > 0):
            if not self.context.set_optimization_profile_async(index, self.stream.handle):
                raise TensorRTError(f"{backend.path}: cannot select optimisation profile {index}")
        self.profile = None
        if backend.input_is_dynamic:
            self.profile = tuple(
                _dims(s) for s in engine.get_tensor_profile_shape(backend.input_spec.name, index)
            )
        self.input_shape: Optional[Tuple[int, ...]] = None
        self.output_shape: Optional[Tuple[int, ...]] = None
        self.device_in = self.device_out = None
        self.host_in = self.host_out = None
        self.grow_count = 0  # how many times a buffer was (re)allocated: for tests and logs
        self.pending: Optional[int] = None  # the ticket in flight on this slot

    def _ensure(self, which: str, nbytes: int) -> None:
        cuda = self.backend.cuda
        device = getattr(self, f"device_{which}")
        if device is not None and device.nbytes >= nbytes:
            return
        if device is not None:
            cuda.free_device(device)
            cuda.free_host(getattr(self, f"host_{which}"))
        setattr(self, f"device_{which}", cuda.alloc_device(nbytes))
        setattr(self, f"host_{which}", cuda.alloc_host(nbytes))
        self.grow_count += 1
        spec = self.backend.input_spec if which == "in" else self.backend.output_spec
        self.context.set_tensor_address(spec.name, getattr(self, f"device_{which}").ptr)

    def _set_shape(self, shape: Tuple[int, ...]) -> None:
        backend = self.backend
        name = backend.input_spec.name
        if self.profile is not None:
            low, _, high = self.profile
            if any(s < lo or s > hi for s, lo, hi in zip(shape, low, high)):
                raise BackendError(
                    f"input {_text(shape)} is outside the engine's optimisation profile "
                    f"(min {_text(low)}, max {_text(high)}); rebuild with fcn-deploy build --shapes"
                )
        if not self.context.set_input_shape(name, shape):
            raise BackendError(f"TensorRT rejects input shape {_text(shape)}: {backend.log_recorder.take_error()}")
        out = _dims(self.context.get_tensor_shape(backend.output_spec.name))
        if any(d < 0 for d in out):
            raise TensorRTError(f"{backend.path}: output shape {out} is still unknown after setting the input shape")
        self.input_shape, self.output_shape = shape, out

    def submit(self, x: np.ndarray, ticket: int) -> None:
        backend, cuda = self.backend, self.backend.cuda
        if x.shape != self.input_shape:
            self._set_shape(tuple(int(d) for d in x.shape))
        out_dtype = np.dtype(backend.output_spec.dtype)
        out_nbytes = int(np.prod(self.output_shape, dtype=np.int64)) * out_dtype.itemsize
        self._ensure("in", x.nbytes)
        self._ensure("out", out_nbytes)
        host_in = self.host_in.view(x.dtype, x.shape)
        np.copyto(host_in, x)
        cuda.copy_to_device_async(self.device_in, host_in, self.stream)
        if not self.context.execute_async_v3(self.stream.handle):
            raise TensorRTError(f"TensorRT execution failed: {backend.log_recorder.take_error()}")
        cuda.copy_to_host_async(self.host_out.view(out_dtype, self.output_shape), self.device_out, self.stream)
        self.pending = ticket

    def collect(self) -> np.ndarray:
        """Wait for this slot's frame; a copy of the output (the pinned buffer is reused)."""
        self.backend.cuda.synchronize(self.stream)
        self.pending = None
        out = self.host_out.view(self.backend.output_spec.dtype, self.output_shape)
        return out.copy()

    def release(self) -> None:
        cuda = self.backend.cuda
        try:
            cuda.synchronize(self.stream)
        finally:
            for which in ("in", "out"):
                if getattr(self, f"device_{which}") is not None:
                    cuda.free_device(getattr(self, f"device_{which}"))
                    cuda.free_host(getattr(self, f"host_{which}"))
                    setattr(self, f"device_{which}", None)
                    setattr(self, f"host_{which}", None)
            self.context = None
            cuda.destroy_stream(self.stream)


class TensorRTBackend(Backend):
    """A serialized TensorRT plan (``.engine``/``.plan``) with its sidecar, on one GPU.

    Options: ``contexts`` (execution contexts, each with its own stream and buffers, for
    overlapping frames through :meth:`submit`/:meth:`result`; the engine needs as many
    optimisation profiles: ``fcn-deploy build --contexts N``; default: one per profile the
    engine has, so an engine built for two frames in flight runs two); ``require_metadata`` (refuse a
    plan without an fcn-deploy sidecar; with ``False`` a foreign plan opens, unchecked, for
    :meth:`run_graph`); ``cuda_library`` (``"cuda-python"`` or ``"pycuda"``; default: what is
    installed). ``trt`` and ``cuda`` hand in an imported ``tensorrt`` module and a
    :class:`~fcn_deploy.runtime.cuda_memory.CudaMemory` instead.
    """

    def __init__(
        self,
        path: str,
        device: str = "cuda",
        *,
        contexts: Optional[int] = None,
        require_metadata: bool = True,
        cuda_library: Optional[str] = None,
        trt: Any = None,
        cuda: Any = None,
    ) -> None:
        self.path = os.fspath(path)
        self.slots: List[_Slot] = []
        self.engine = None
        self.device = "tensorrt"
        # Held by every call that touches the contexts, and by close(): buffers are never
        # freed while another thread is inside execute_async_v3 or a copy.
        self._lock = threading.Lock()
        try:
            gpu = parse_gpu_device(device)
        except TensorRTError as exc:  # a device error, like every backend's
            raise BackendError(str(exc)) from None
        if contexts is not None and contexts < 1:
            raise BackendError(f"contexts must be >= 1, not {contexts}")
        if not os.path.isfile(self.path):
            raise BackendError(f"engine file not found: {self.path}")

        # The sidecar first: a stale engine is an error before TensorRT ever sees it.
        self.sidecar: Optional[Sidecar] = None
        try:
            self.sidecar = read_sidecar(self.path)
        except EngineMismatch as exc:
            if require_metadata:
                raise BackendError(f"{exc}; build it with `fcn-deploy build MODEL.onnx`") from None
            log.warning("%s; opening it unchecked", exc)

        self.trt = trt if trt is not None else import_tensorrt()
        if cuda is None:
            from ..cuda_memory import open_cuda

            cuda = open_cuda(gpu, cuda_library)
        self.cuda = cuda
        self.system = current_system(self.trt, cuda)
        self.providers = [f"TensorRT {self.system.tensorrt_version}", f"CUDA via {getattr(cuda, 'library', '?')}"]
        if self.sidecar is not None:
            problem = runtime_problem(self.sidecar, self.system)
            if problem:
                source = self.sidecar.onnx_path or "MODEL.onnx"
                raise EngineMismatch(f"{self.path} was {problem}: rebuild it here with `fcn-deploy build {source}`")
            if self.sidecar.gpu_name != self.system.gpu_name:
                log.warning(
                    "%s was built on %s; this is %s (same architecture): rebuild for best speed",
                    self.path, self.sidecar.gpu_name, self.system.gpu_name,
                )

        with open(self.path, "rb") as f:
            plan = f.read()
        if self.sidecar is not None and sha256_bytes(plan) != self.sidecar.engine_sha256:
            raise EngineMismatch(
                f"{self.path} is not the engine its sidecar describes (replaced or truncated after the "
                "build): rebuild it with `fcn-deploy build`"
            )
        self.log_recorder = tensorrt_logger(self.trt).recorder
        with cuda.activate():
            self.runtime = self.trt.Runtime(tensorrt_logger(self.trt))
            if self.sidecar is not None and self.sidecar.version_compatible:
                # A version-compatible plan carries TensorRT's lean runtime (host code).
                self.runtime.engine_host_code_allowed = True
            self.engine = self.runtime.deserialize_cuda_engine(plan)
            if self.engine is None:
                raise EngineMismatch(
                    f"TensorRT {self.system.tensorrt_version} cannot deserialise {self.path} "
                    f"({self.log_recorder.take_error()}): rebuild it with `fcn-deploy build`"
                )
            self._read_io()
            self._read_metadata(require_metadata)
            self.num_profiles = int(self.engine.num_optimization_profiles)
            if contexts is None:
                # As many as the engine was built for (`build --contexts N`): frames in flight.
                contexts = self.num_profiles if self.input_is_dynamic else 1
            if contexts > self.num_profiles and self.input_is_dynamic:
                raise BackendError(
                    f"{self.path} has {self.num_profiles} optimisation profile(s); {contexts} execution "
                    f"contexts need {contexts}: rebuild with `fcn-deploy build --contexts {contexts}`"
                )
            try:
                for index in range(contexts):
                    self.slots.append(_Slot(self, index))
            except BaseException:
                self.close()
                raise
        self._next_ticket = 0
        self._done: Dict[int, np.ndarray] = {}
        log.debug("opened %s with %d context(s) on %s", self.path, contexts, self.system.describe())

    # -- set-up -------------------------------------------------------------------------
    def _read_io(self) -> None:
        engine, trt = self.engine, self.trt
        input_mode = enum_member(trt, "TensorIOMode", "INPUT")
        inputs, outputs = [], []
        for i in range(int(engine.num_io_tensors)):
            name = engine.get_tensor_name(i)
            dtype_name = enum_name(engine.get_tensor_dtype(name))
            if dtype_name not in NUMPY_DTYPES:
                raise TensorRTError(f"{self.path}: tensor {name} has type {dtype_name}, which fcn-deploy does not handle")
            shape = tuple(d if d >= 0 else None for d in _dims(engine.get_tensor_shape(name)))
            spec = TensorSpec(name, shape, NUMPY_DTYPES[dtype_name])
            (inputs if engine.get_tensor_mode(name) == input_mode else outputs).append(spec)
        if len(inputs) != 1 or len(outputs) != 1:
            raise BackendError(
                f"{self.path} has {len(inputs)} inputs and {len(outputs)} outputs; a segmentation model has one of each"
            )
        self.input_spec, self.output_spec = inputs[0], outputs[0]
        self.input_is_dynamic = any(d is None for d in self.input_spec.shape)

    def _read_metadata(self, require_metadata: bool) -> None:
        self.metadata: Optional[ModelMetadata] = None
        meta = self.sidecar.metadata if self.sidecar is not None else None
        if meta is None:
            if require_metadata:
                raise BackendError(f"{self.path}: its sidecar carries no fcn-deploy model metadata")
            return
        self.metadata = ModelMetadata.from_dict(meta, self.path)
        spec, out = self.input_spec, self.output_spec
        if self.metadata.input_layout == LAYOUT_RAW_BGR:
            fits = spec.rank == 4 and spec.dtype == "uint8" and spec.shape[3] in (3, None)
        else:
            fits = spec.rank == 4 and spec.dtype == "float32" and spec.shape[1] in (3, None)
        want = (3, "uint8") if self.metadata.output == "labels" else (4, "float32")
        if not fits or (out.rank, out.dtype) != want:
            raise BackendError(
                f"{self.path}: metadata says {self.metadata.input_layout} -> {self.metadata.output} but the "
                f"engine has {spec.describe()} -> {out.describe()}"
            )

    # -- running ------------------------------------------------------------------------
    @property
    def contexts(self) -> int:
        return len(self.slots)

    @property
    def in_flight(self) -> int:
        """Frames the pipeline may keep in flight: one per execution context."""
        return max(1, len(self.slots))

    def submit(self, x: np.ndarray) -> int:
        """Start the graph on ``x`` (the graph's own input) and return a ticket for :meth:`result`.

        Tickets go round-robin over the execution contexts; with two contexts, frame k+1 is
        uploaded and run while frame k is still in flight. Submitting more frames than there
        are contexts before collecting them waits for the oldest one.
        """
        if not self.slots:
            raise BackendError(f"{self.path}: backend is closed")
        x = check_array(x, self.input_spec)
        with self._lock, self.cuda.activate():
            ticket = self._next_ticket
            self._next_ticket += 1
            slot = self.slots[ticket % len(self.slots)]
            if slot.pending is not None:  # its previous frame is still uncollected
                waiting = slot.pending
                self._done[waiting] = slot.collect()
            slot.submit(x, ticket)
            return ticket

    def result(self, ticket: int) -> np.ndarray:
        """The output of the frame submitted as ``ticket`` (waits for it)."""
        with self._lock, self.cuda.activate():
            if ticket in self._done:
                return self._done.pop(ticket)
            slot = self.slots[ticket % len(self.slots)] if self.slots else None
            if slot is None or slot.pending != ticket:
                raise BackendError(f"no frame in flight with ticket {ticket}")
            return slot.collect()

    def run_graph(self, x: np.ndarray) -> np.ndarray:
        return self.result(self.submit(x))

    def close(self) -> None:
        """Wait for the frames in flight, then free the buffers, streams and engine."""
        with self._lock:
            if not self.slots and self.engine is None:
                return
            with self.cuda.activate():
                for slot in self.slots:
                    slot.release()
            self.slots = []
            self._done = {}
            self.engine = None
            self.runtime = None
