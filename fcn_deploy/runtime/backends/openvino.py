"""OpenVINO backend: the same ONNX files, on Intel's CPU and GPU plugins.

On a CPU, OpenVINO is what many users would pick instead of ONNX Runtime (Intel NUCs,
industrial PCs, the CPU fallback of many edge boxes), and on some graphs (INT8 Q/DQ) it is
the faster of the two. It reads an fcn-deploy ONNX file directly: the file's
``metadata_props`` arrive in the model's ``rt_info["framework"]``, so the metadata, input
layout and output kind are checked exactly as for ONNX Runtime, and the frames go in as they
come (``N x H x W x 3`` uint8 BGR) with the pre-processing and arg-max inside the graph.

Devices: ``openvino`` (or ``openvino:CPU``) and ``openvino:GPU`` (``openvino:GPU.1`` names
one of several Intel GPUs). A device the installed OpenVINO does not see is an error, never a
silent fall-back to the CPU.

Compiled models are kept in OpenVINO's model cache (the ``CACHE_DIR`` property), by default
in ``USER_CACHE/openvino`` (:func:`fcn_deploy.fileio.user_cache_root`): OpenVINO keys each
entry by the model's content, the device and the compile options, so a second start skips
the compilation (for a GPU, kernel compilation takes seconds).

Static shapes: the exported graphs take any batch, height and width, and OpenVINO compiles
such a graph with dynamic shapes, which runs slower than one compiled for the size it gets:
on the bundled model at 360x480 on this project's CPU, 4 to 5 ms of 65 per frame in FP32 and
INT8 (docs/runtime.md's paragraph on devices). So the graph is compiled as it is when the backend
opens (that compile checks the file on the device), and again, reshaped to the input's exact
shape, the first time a frame of that shape arrives; a video or a dataset of one size runs the
static one from its first frame on. Each compile holds its own copy of the weights in the
plugin's layout, so the dynamic compile is released once a static one has taken over, at most
:data:`STATIC_SHAPES` shapes get one, and further shapes (a folder of photos of every size)
run the dynamic compile, made again when first needed.

Precision: OpenVINO's CPU plugin runs an FP32 graph in bfloat16 by default on CPUs with
AVX512_BF16 or AMX (its ``INFERENCE_PRECISION_HINT`` defaults to bf16 there, f32 elsewhere), and
its GPU plugin in f16. So the hint is always set: ``f32`` for ``precision="fp32"`` (the default:
an FP32 graph's labels then equal ONNX Runtime's), ``bf16`` only when asked for, and only on a
device whose ``OPTIMIZATION_CAPABILITIES`` lists BF16 (else one :class:`BackendError` line). The
hint concerns floating-point layers: an INT8 Q/DQ graph's convolutions stay integer (u8/i8) under
either. What the compiled model really runs is read back from it
(:attr:`OpenVINOBackend.execution_precision`: the hint it compiled with, and how many
convolutions run in integers) and printed in every benchmark row.

Reading: the file goes to OpenVINO's ONNX frontend alone. ``Core.read_model`` tries every
frontend in turn on a file that is not valid ONNX, and TensorFlow's prints absl log lines
("Error parsing text-format tensorflow.GraphDef") on stderr; our error says it once.

Frames in flight: ``in_flight=N`` creates N infer requests (per compiled shape);
:meth:`OpenVINOBackend.submit` starts one with ``start_async`` and returns, so the caller
prepares the next frame while OpenVINO runs this one. Default: 1 on the CPU (two requests
would share its cores), 2 on a GPU (the host's work on the next frame overlaps the GPU's on
this one).
"""
from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ...errors import first_line
from ...fileio import user_cache_root
from ..metadata import ModelMetadata, has_fcn_deploy_metadata
from .base import Backend, BackendError, TensorSpec, check_array, check_execution_precision, check_layout

log = logging.getLogger(__name__)

DEVICE_PREFIX = "openvino"
# OpenVINO element type names -> numpy dtype names.
_OV_TYPES = {"u8": "uint8", "i8": "int8", "f32": "float32", "f16": "float16", "i32": "int32", "i64": "int64"}
# How many input shapes get a compile of their own (see the module docstring): a video's
# batches and the shorter last one, or landscape and portrait photos.
STATIC_SHAPES = 2
# Our precision names -> OpenVINO's INFERENCE_PRECISION_HINT values, and the word a device's
# OPTIMIZATION_CAPABILITIES lists when it can run them.
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}
PRECISION_CAPABILITIES = {"fp32": "FP32", "bf16": "BF16"}
# OpenVINO's element type names -> our precision names, for what a compiled model reports.
_PRECISION_NAMES = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}
# Node types (the runtime model's layerType) whose runtimePrecision says whether a layer's
# arithmetic runs in integers.
_WEIGHTED_LAYERS = ("Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul")


# OpenVINO's model converter (OVC), which `import openvino` imports for `convert_model`, sends a
# telemetry event to Google Analytics from a child process on import unless the user has opted
# out (no consent file counts as consent). fcn-deploy never converts with OVC: it reads ONNX
# through the ONNX frontend.
_OVC = "openvino.tools.ovc"


def import_openvino() -> Any:
    """``openvino``, imported without its model converter: no telemetry event, no child process
    (whose inherited SIGTERM handler printed a traceback when a stopped run exited), ~50 ms less.
    An explicit ``import openvino.tools.ovc`` afterwards still works. Not installed: one
    :class:`BackendError` line."""
    blocked = "openvino" not in sys.modules and _OVC not in sys.modules
    if blocked:
        sys.modules[_OVC] = None  # type: ignore[assignment]  # openvino/__init__ catches the ImportError
    try:
        import openvino
    except ImportError:
        raise BackendError("openvino is not installed: pip install 'fcn-deploy[openvino]'") from None
    finally:
        if blocked and sys.modules.get(_OVC, 0) is None:
            del sys.modules[_OVC]
    return openvino


_core: Any = None
_core_lock = threading.Lock()


def shared_core() -> Any:
    """The process's one ``openvino.Core``, created on first use and kept until exit.

    Why one: OpenVINO's CPU plugin gives the thread that creates it an alternate signal stack
    (``sigaltstack``) and unmaps that stack when the plugin is destroyed, restoring the previous
    one only if its own is still the current one on the destroying thread. Each Core has its
    own CPU plugin, so two Cores released out of order, or on another thread, leave a thread's
    signal stack pointing at unmapped memory, and the next Python signal handler to run there
    (Ctrl-C, SIGTERM, a PyTorch DataLoader's SIGCHLD) kills the process with SIGSEGV. One Core
    that lives as long as the process never unmaps it. Compile options (threads, cache folder)
    go to ``compile_model``, so sharing the Core shares no settings.
    """
    global _core
    with _core_lock:
        if _core is None:
            _core = import_openvino().Core()
        return _core


def engine_message(exc: BaseException) -> str:
    """OpenVINO's error text as one line: its source-location lines ("Exception from
    src/inference/src/cpp/core.cpp:84:", "Check '...' failed at src/...:563:") dropped, the
    rest, the part that says what is wrong, joined."""
    kept = []
    for line in str(exc).splitlines():
        line = line.strip()
        if not line or (line.startswith(("Exception from ", "Check '")) and line.endswith(":")
                        and " src/" in f" {line}"):
            continue
        kept.append(line)
    return " ".join(kept) or type(exc).__name__


def read_onnx_model(path: str) -> Any:
    """``path`` as an ``openvino.Model``, read by OpenVINO's ONNX frontend only (see the
    module docstring: ``Core.read_model`` would let the TensorFlow frontend print on stderr)."""
    import_openvino()
    from openvino.frontend import FrontEndManager

    frontend = FrontEndManager().load_by_framework("onnx")
    return frontend.convert(frontend.load(path))


def device_capabilities(ov_device: str) -> List[str]:
    """What OpenVINO says ``ov_device`` (``CPU``, ``GPU.1``) computes fast:
    ``OPTIMIZATION_CAPABILITIES`` (on the CPU: FP32, INT8, and BF16 where the CPU has
    AVX512_BF16 or AMX)."""
    try:
        return [str(c) for c in shared_core().get_property(ov_device, "OPTIMIZATION_CAPABILITIES")]
    except Exception as exc:  # a plugin that does not report it
        log.debug("OpenVINO %s: no OPTIMIZATION_CAPABILITIES (%s)", ov_device, engine_message(exc))
        return []


def precision_problem(precision: str, ov_device: str, capabilities: Sequence[str], device_name: str = "") -> Optional[str]:
    """Why OpenVINO cannot run ``precision`` on ``ov_device`` with these ``capabilities``, or
    ``None``. fp32 runs everywhere; bf16 where the device lists BF16."""
    precision = check_execution_precision(precision)
    if precision == "fp32" or PRECISION_CAPABILITIES[precision] in capabilities:
        return None
    where = f"{ov_device} ({device_name})" if device_name and device_name != ov_device else ov_device
    need = " (a CPU needs AVX512_BF16 or AMX)" if ov_device.split(".")[0] == "CPU" else ""
    return (f"{precision} is not supported by OpenVINO's {where}: its capabilities are "
            f"{', '.join(capabilities) or 'not reported'}{need}; use --precision fp32")


def compiled_precision(compiled: Any) -> str:
    """What a compiled model runs in, from the model itself: its ``INFERENCE_PRECISION_HINT``
    in our names (``fp32``, ``bf16``) and, where some convolutions run in integers (an INT8 Q/DQ
    graph), how many: ``"u8 conv 29/29, fp32"``."""
    try:
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")
        floats = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        floats = _PRECISION_NAMES.get(floats, floats)
    except Exception:  # a plugin without the property (not the CPU or GPU)
        floats = "?"
    integer: Dict[str, int] = {}
    layers = 0
    try:
        for op in compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if "layerType" not in info or info["layerType"].astype(str) not in _WEIGHTED_LAYERS:
                continue
            layers += 1
            runtime = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else ""
            if runtime in ("u8", "i8"):
                integer[runtime] = integer.get(runtime, 0) + 1
    except Exception as exc:  # the runtime model is for reporting only
        log.debug("no runtime model to read precisions from: %s", engine_message(exc))
    ints = ", ".join(f"{kind} conv {count}/{layers}" for kind, count in sorted(integer.items()))
    return f"{ints}, {floats}" if ints else floats


def is_openvino_device(device: str) -> bool:
    """True for ``openvino`` and ``openvino:DEVICE`` (any case)."""
    return str(device).strip().lower().partition(":")[0] == DEVICE_PREFIX


def parse_openvino_device(device: str) -> str:
    """``"openvino"`` -> ``"CPU"``; ``"openvino:gpu"`` -> ``"GPU"``; ``"openvino:GPU.1"`` -> ``"GPU.1"``."""
    prefix, _, name = str(device).strip().partition(":")
    if prefix.lower() != DEVICE_PREFIX:
        raise BackendError(f"{device!r} is not an OpenVINO device; expected openvino or openvino:CPU|GPU")
    name = name.strip().upper() or "CPU"
    if not all(ch.isalnum() or ch == "." for ch in name):
        raise BackendError(f"bad OpenVINO device in {device!r}; expected openvino, openvino:CPU or openvino:GPU[.N]")
    return name


def default_cache_dir(user_root: Optional[str] = None) -> str:
    """Where compiled models are cached: ``USER_CACHE/openvino`` (one folder: OpenVINO keys
    each entry by model content, device and options itself)."""
    return os.path.join(user_root or user_cache_root(), "openvino")


def _spec(port: Any) -> TensorSpec:
    shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
    type_name = port.get_element_type().get_type_name()
    dtype = _OV_TYPES.get(type_name)
    if dtype is None:
        raise BackendError(f"graph tensor {port.get_any_name()} has unsupported type {type_name}")
    return TensorSpec(port.get_any_name(), shape, dtype)


def _framework_props(model: Any) -> Dict[str, str]:
    """The ONNX file's ``metadata_props``, as OpenVINO's ONNX reader keeps them in rt_info."""
    if not model.has_rt_info(["framework"]):
        return {}
    info = model.get_rt_info()["framework"]
    return {str(key): model.get_rt_info(["framework", key]).astype(str) for key in info}


class _Program:
    """One compiled model (for one input shape, or for any) and its infer requests."""

    __slots__ = ("compiled", "requests", "free")

    def __init__(self, compiled: Any, requests: int) -> None:
        self.compiled = compiled
        self.requests = [compiled.create_infer_request() for _ in range(requests)]
        self.free = list(self.requests)


class _Request:
    """One submitted frame: its infer request (of ``program``) and its input, kept alive
    until OpenVINO is done."""

    __slots__ = ("program", "request", "input", "done")

    def __init__(self, program: _Program, request: Any, x: Optional[np.ndarray]) -> None:
        self.program = program
        self.request = request
        self.input = x
        self.done: Optional[np.ndarray] = None  # the output, once taken from the request

    def release(self) -> None:
        """Give the request back to its program and drop the input."""
        self.program.free.append(self.request)
        self.request = self.input = None


class OpenVINOBackend(Backend):
    """An ONNX file compiled by OpenVINO for one device.

    Options:
      ``threads``: CPU inference threads (OpenVINO's ``INFERENCE_NUM_THREADS``; ``None``: its
      default, one per physical core);
      ``in_flight``: how many infer requests :meth:`submit` keeps running (see the module
      docstring);
      ``cache_dir``: the model cache (default :func:`default_cache_dir`; ``""`` turns it off);
      ``require_metadata``: refuse graphs not exported by fcn-deploy (default ``True``);
      ``precision``: ``"fp32"`` (default) or ``"bf16"``, the floating-point layers'
      precision (OpenVINO's ``INFERENCE_PRECISION_HINT``; see the module docstring);
      ``spinning``: accepted so that the options ``run`` gives ONNX Runtime open this backend
      too; OpenVINO's CPU plugin has no such switch (its idle threads sleep), so it changes nothing.
    """

    def __init__(
        self,
        path: str,
        device: str = DEVICE_PREFIX,
        *,
        threads: Optional[int] = None,
        in_flight: Optional[int] = None,
        cache_dir: Optional[str] = None,
        require_metadata: bool = True,
        spinning: bool = True,
        precision: Optional[str] = None,
    ) -> None:
        ov = import_openvino()
        # Compiled models by input shape; None: the dynamic-shape one (see the module docstring).
        self._programs: Dict[Optional[Tuple[int, ...]], _Program] = {}
        self._no_static: set = set()  # shapes whose static compile failed
        self._runs: Dict[int, _Request] = {}
        self._order: List[int] = []  # tickets whose request may still be running, oldest first
        self._next_ticket = 0
        self._lock = threading.Lock()
        self.path = str(path)
        self.precision = check_execution_precision(precision)
        self.ov_device = parse_openvino_device(device)
        self.device = f"{DEVICE_PREFIX}:{self.ov_device}" if self.ov_device != "CPU" else DEVICE_PREFIX
        if not os.path.isfile(self.path):
            raise BackendError(f"model file not found: {self.path}")
        if threads is not None and threads < 1:
            raise BackendError(f"threads must be >= 1, not {threads}")
        if in_flight is not None and in_flight < 1:
            raise BackendError(f"in_flight must be >= 1, not {in_flight}")
        cpu = self.ov_device.split(".")[0] == "CPU"
        if threads is not None and not cpu:
            raise BackendError(f"threads sets OpenVINO's CPU threads; device {self.device} is not the CPU")
        self._limit = int(in_flight) if in_flight is not None else (1 if cpu else 2)

        core = shared_core()
        available = list(core.available_devices)
        family = self.ov_device.split(".")[0]
        if self.ov_device not in available and (self.ov_device != family or not any(
                d.split(".")[0] == family for d in available)):
            raise BackendError(
                f"OpenVINO {ov.__version__.split('-')[0]} has no device {self.ov_device} here (devices: "
                f"{', '.join(available) or 'none'}); use --device openvino for the CPU"
            )
        try:
            name = core.get_property(self.ov_device, "FULL_DEVICE_NAME")
        except Exception:  # a plugin without the property: the device id says enough
            name = self.ov_device
        problem = precision_problem(self.precision, self.ov_device, device_capabilities(self.ov_device), name)
        if problem:
            raise BackendError(problem)
        try:
            model = read_onnx_model(self.path)
        except Exception as exc:  # OpenVINO raises RuntimeError with a page of text
            raise BackendError(f"OpenVINO cannot read {self.path}: {engine_message(exc)}") from None
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise BackendError(
                f"{self.path} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; a segmentation "
                "model has one of each"
            )
        self.input_spec = _spec(model.inputs[0])
        self.output_spec = _spec(model.outputs[0])
        props = _framework_props(model)
        if has_fcn_deploy_metadata(props):
            self.metadata: Optional[ModelMetadata] = ModelMetadata.from_props(props, self.path)
            check_layout(self.path, self.metadata, self.input_spec, self.output_spec)
        elif require_metadata:
            raise BackendError(f"{self.path} carries no fcn-deploy metadata; export it with `fcn-deploy export`")
        else:
            self.metadata = None

        config: Dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY",
                                  "INFERENCE_PRECISION_HINT": PRECISION_HINTS[self.precision]}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.cache_dir = default_cache_dir() if cache_dir is None else cache_dir
        if self.cache_dir:
            try:
                os.makedirs(self.cache_dir, exist_ok=True)
                config["CACHE_DIR"] = self.cache_dir
            except OSError as exc:  # a read-only home: compile every time rather than fail
                log.warning("OpenVINO model cache off: cannot create %s (%s)", self.cache_dir, exc)
                self.cache_dir = ""
        self._model, self._config = model, config
        dynamic = self._dynamic_program()
        self._execution_precision = compiled_precision(dynamic.compiled)
        floats = self._execution_precision.rsplit(", ", 1)[-1]
        if floats not in (self.precision, "?"):  # the promise the hint made, kept or refused
            raise BackendError(f"OpenVINO compiled {self.path} for {self.ov_device} in {floats}, not the "
                               f"{self.precision} asked for")
        threads_used = ""
        if cpu:
            threads_used = f", {dynamic.compiled.get_property('INFERENCE_NUM_THREADS')} threads"
        self.providers = [f"OpenVINO {ov.__version__.split('-')[0]} {self.ov_device} ({name}{threads_used}, "
                          f"{self._execution_precision})"]
        log.debug("opened %s on %s, %d frame(s) in flight", self.path, self.providers[0], self._limit)

    # -- running --------------------------------------------------------------------------
    def _check_open(self) -> None:
        if not self._programs:
            raise BackendError(f"{self.path}: backend is closed")

    def run_graph(self, x: np.ndarray) -> np.ndarray:
        return self.result(self.submit(x))

    @property
    def in_flight(self) -> int:
        return self._limit

    @property
    def execution_precision(self) -> str:
        """What the compiled model runs in, read back from it (:func:`compiled_precision`):
        ``"fp32"``, ``"bf16"``, ``"u8 conv 29/29, fp32"``."""
        return self._execution_precision

    @property
    def compiled_shapes(self) -> List[Optional[Tuple[int, ...]]]:
        """The input shapes the graph is compiled for now, oldest first; ``None`` stands for
        the dynamic-shape compile (see the module docstring)."""
        return list(self._programs)

    def _compile(self, shape: Optional[Tuple[int, ...]]) -> _Program:
        model = self._model.clone()
        if shape is not None:
            model.reshape({model.inputs[0].get_any_name(): list(shape)})
        return _Program(shared_core().compile_model(model, self.ov_device, self._config), self._limit)

    def _dynamic_program(self) -> _Program:
        """The dynamic-shape compile, made again if it was released."""
        if None not in self._programs:
            try:
                self._programs[None] = self._compile(None)
            except Exception as exc:  # OpenVINO raises RuntimeError with a page of text
                raise BackendError(
                    f"OpenVINO cannot compile {self.path} for {self.ov_device}: {engine_message(exc)}") from None
        return self._programs[None]

    def _program(self, shape: Tuple[int, ...]) -> _Program:
        """The compiled model that runs inputs of ``shape``: its own static compile (made now
        if fewer than :data:`STATIC_SHAPES` shapes have one; the dynamic compile is then
        released if no frame is running on it), else the dynamic one. A shape the graph cannot
        be compiled for goes to the dynamic one, which says why when it runs."""
        program = self._programs.get(shape)
        if program is not None:
            return program
        static = [key for key in self._programs if key is not None]
        if None in self.input_spec.shape and len(static) < STATIC_SHAPES and shape not in self._no_static:
            try:
                program = self._compile(shape)
            except Exception as exc:  # the dynamic compile reports it on this input
                log.debug("%s: no static compile for %s (%s)", self.path, shape, first_line(exc))
                self._no_static.add(shape)
            else:
                log.debug("%s: compiled for input shape %s", self.path, shape)
                self._programs[shape] = program
                dynamic = self._programs.get(None)
                if dynamic is not None and len(dynamic.free) == len(dynamic.requests):
                    del self._programs[None]
                return program
        return self._dynamic_program()

    def _output(self, request: Any) -> np.ndarray:
        try:
            request.wait()
        except Exception as exc:  # a kernel that failed on this input
            raise BackendError(f"{self.path}: OpenVINO failed on a frame: {engine_message(exc)}") from None
        return np.array(request.get_output_tensor(0).data, copy=True)  # the request reuses its buffer

    def submit(self, x: np.ndarray) -> int:
        """Start the graph on ``x`` and return a ticket for :meth:`result`.

        With every request busy, the oldest frame's output is first collected (kept for its
        :meth:`result`), which frees its request. An input that does not fit the graph raises here.
        """
        self._check_open()
        x = check_array(x, self.input_spec)
        with self._lock:
            if len(self._order) >= self._limit:
                oldest = self._runs[self._order.pop(0)]
                oldest.done = self._output(oldest.request)
                oldest.release()
            program = self._program(tuple(x.shape))
            request = program.free.pop()
            ticket = self._next_ticket
            self._next_ticket += 1
            run = _Request(program, request, x)
            self._runs[ticket] = run
            self._order.append(ticket)
            try:
                request.start_async({0: x}, share_inputs=True)
            except Exception as exc:  # refused before it started (a shape the graph cannot take)
                self._runs.pop(ticket)
                self._order.remove(ticket)
                run.release()
                raise BackendError(f"{self.path}: OpenVINO cannot start the run: {engine_message(exc)}") from None
        return ticket

    def result(self, ticket: int) -> np.ndarray:
        """The output of the frame submitted as ``ticket`` (waits for it to finish)."""
        self._check_open()
        with self._lock:
            run = self._runs.pop(ticket, None)
            if run is None:
                raise BackendError(f"{self.path}: no frame in flight with ticket {ticket}")
            if run.done is not None:
                return run.done
            self._order.remove(ticket)
            try:
                return self._output(run.request)
            finally:
                run.release()

    def close(self) -> None:
        """Wait for the requests still running, then release the compiled model."""
        for program in getattr(self, "_programs", {}).values():
            for request in program.requests:
                try:
                    request.wait()
                except Exception:  # a failed run: nothing left to wait for
                    pass
        self._runs = {}
        self._order = []
        self._programs = {}

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
