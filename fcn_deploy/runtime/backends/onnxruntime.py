"""ONNX Runtime backend: the portable route, on the CPU, CUDA or TensorRT execution provider.

ONNX Runtime quietly runs a session on the CPU when a requested GPU provider cannot load
(onnxruntime-gpu without its CUDA libraries, or the CPU wheel installed instead): the user
then measures CPU speed believing it is the GPU's. Here a requested provider that is not
available is an error, checked both before the session is created and, in
``session.get_providers()``, after.

On the TensorRT execution provider the precision comes from the model's metadata (TensorRT
8.x builds an FP16 graph with FP16 kernels only under its FP16 flag, and refuses a Q/DQ graph
without its INT8 flag), and built engines are cached on disk by default, because building
one takes minutes on a Jetson: see :func:`tensorrt_options` and :func:`default_engine_cache_dir`.

Frames in flight: with ``in_flight=2`` :meth:`OnnxRuntimeBackend.submit` starts a run with
``InferenceSession.run_async`` (ONNX Runtime 1.16+), which runs it on a thread of the
session's intra-op pool and calls back when it is done, so the caller can prepare and submit
the next frame meanwhile.
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from ...errors import first_line
from ...fileio import sha256_file, user_cache_root
from ..metadata import (
    LAYOUT_NORMALIZED,
    LAYOUT_RAW_BGR,
    ModelMetadata,
    has_fcn_deploy_metadata,
)
from ..tensorrt_compat import tensorrt_int8_problem
from .base import Backend, BackendError, TensorSpec, check_array, check_layout

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"

# device -> the providers to request, in priority order. The CPU provider stays last on GPU
# devices because ONNX Runtime places the few nodes a GPU provider does not take there; that
# is partitioning, not a fallback of the whole model.
DEVICE_PROVIDERS: Dict[str, Tuple[str, ...]] = {
    "cpu": (CPU,),
    "cuda": (CUDA, CPU),
    "tensorrt": (TENSORRT, CUDA, CPU),
}

# ONNX tensor type strings -> numpy dtype names.
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
}

ProfileShape = Tuple[int, int, int]


def _import_ort():
    try:
        import onnxruntime
    except ImportError:
        raise BackendError(
            "onnxruntime is not installed: pip install 'fcn-deploy[cpu]' (or 'fcn-deploy[gpu]' for "
            "onnxruntime-gpu; never both)"
        ) from None
    return onnxruntime


def parse_device(device: str) -> Tuple[str, int]:
    """``"cuda:1"`` -> ``("cuda", 1)``; ``"cpu"`` -> ``("cpu", 0)``."""
    kind, _, index = device.strip().lower().partition(":")
    if kind not in DEVICE_PROVIDERS:
        raise BackendError(
            f"unknown device {device!r}; expected one of {', '.join(DEVICE_PROVIDERS)} (optionally :INDEX), "
            "ort-cpu, or openvino[:CPU|GPU]"
        )
    if index and not index.isdigit():
        raise BackendError(f"bad device index in {device!r}")
    return kind, int(index or 0)


def _spec(node) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) or d is None else str(d) for d in node.shape)
    dtype = _ORT_TYPES.get(node.type)
    if dtype is None:
        raise BackendError(f"graph tensor {node.name} has unsupported type {node.type}")
    return TensorSpec(node.name, shape, dtype)


def _profile_text(name: str, layout: str, shape: ProfileShape) -> str:
    n, h, w = (int(v) for v in shape)
    dims = (n, h, w, 3) if layout == LAYOUT_RAW_BGR else (n, 3, h, w)
    return f"{name}:" + "x".join(str(d) for d in dims)


def tensorrt_options(
    device_id: int,
    input_name: str,
    layout: str,
    *,
    precision: str = "fp32",
    fp16: bool = False,
    engine_cache_dir: Optional[str] = None,
    timing_cache_dir: Optional[str] = None,
    profile_shapes: Optional[Mapping[str, ProfileShape]] = None,
    workspace_gb: Optional[float] = None,
) -> Dict[str, str]:
    """Provider options of ONNX Runtime's TensorRT execution provider for one model.

    ``precision`` is the model's own (its metadata's ``precision``). An FP16 graph gets
    ``trt_fp16_enable`` and an INT8 Q/DQ graph ``trt_int8_enable``: on TensorRT 8.x the FP16
    flag is what lets the builder use FP16 kernels, and a network with Q/DQ nodes does not build
    without the INT8 flag. A Q/DQ graph carries its own scales, so no calibration table is
    named (TensorRT refuses to load one for a graph with Q/DQ nodes, and
    ``trt_int8_use_native_calibration_table`` only chooses the format of such a table).
    ``fp16=True`` lets TensorRT pick FP16 kernels for an FP32 graph; an INT8 graph keeps the
    precision of its Q/DQ nodes, as ``fcn-deploy build`` does.

    ``engine_cache_dir`` turns on the engine cache there; the TensorRT timing cache (layer
    timings, which make a rebuild faster) goes to ``timing_cache_dir``, or next to the engines
    when that is not given (``trt_timing_cache_path`` needs ONNX Runtime 1.17+, so it is only
    set when asked for).

    ``profile_shapes`` gives ``(N, H, W)`` for ``min``, ``opt`` and ``max``; they are written
    in the graph input's own layout (``N x H x W x 3`` for raw frames, ``N x 3 x H x W``
    otherwise). Without them TensorRT builds for the shapes it first sees and rebuilds when
    a larger one arrives.
    """
    if precision not in ("fp32", "fp16", "int8"):
        raise BackendError(f"unknown precision {precision!r}; expected fp32, fp16 or int8")
    if fp16 and precision == "int8":
        raise BackendError("fp16 is for FP32 graphs; this model is an INT8 Q/DQ graph, whose precision is its own")
    opts = {
        "device_id": str(device_id),
        "trt_fp16_enable": "True" if fp16 or precision == "fp16" else "False",
        "trt_int8_enable": "True" if precision == "int8" else "False",
    }
    if engine_cache_dir:
        opts["trt_engine_cache_enable"] = "True"
        opts["trt_engine_cache_path"] = str(engine_cache_dir)
    if engine_cache_dir or timing_cache_dir:
        opts["trt_timing_cache_enable"] = "True"
    if timing_cache_dir:
        opts["trt_timing_cache_path"] = str(timing_cache_dir)
    if workspace_gb:
        opts["trt_max_workspace_size"] = str(int(workspace_gb * (1 << 30)))
    if profile_shapes:
        missing = {"min", "opt", "max"} - set(profile_shapes)
        if missing:
            raise BackendError(f"profile_shapes needs min, opt and max; missing {', '.join(sorted(missing))}")
        for key in ("min", "opt", "max"):
            opts[f"trt_profile_{key}_shapes"] = _profile_text(input_name, layout, profile_shapes[key])
    return opts


ENGINE_CACHE_SUFFIX = ".trt-cache"


def _usable_folder(folder: str) -> bool:
    """Create ``folder`` if needed; True when it is a folder this process can write into."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return False
    return os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK)


def default_engine_cache_dir(model_path: str, model_sha256: str, user_root: Optional[str] = None) -> str:
    """The folder, created, where the TensorRT execution provider caches ``model_path``'s engines.

    ``MODEL.onnx`` -> ``MODEL.trt-cache/SHA12/`` beside the model, where SHA12 starts the
    model's sha256; when the model's folder is not writable (the bundled model inside a
    system-wide install, a read-only mount), ``USER_CACHE/ort-trt/MODEL-SHA12/`` instead
    (:func:`user_cache_root`).

    ONNX Runtime names a cached engine after the model's file name, its graph's tensor names,
    the ONNX Runtime, CUDA and TensorRT (major.minor) versions, the precision flags and the
    GPU's compute capability, and keeps the shape profile beside it (a shape outside it
    rebuilds the engine). The weights are not in that key, so a re-exported model with the
    same name would reuse the old engine: the content hash in the folder name prevents that.
    """
    stem = os.path.splitext(os.path.basename(model_path))[0]
    sha = model_sha256[:12]
    beside = os.path.join(os.path.dirname(os.path.abspath(model_path)), stem + ENGINE_CACHE_SUFFIX, sha)
    if _usable_folder(beside):
        return beside
    fallback = os.path.join(user_root or user_cache_root(), "ort-trt", f"{stem}-{sha}")
    if _usable_folder(fallback):
        return fallback
    raise BackendError(
        f"cannot create a TensorRT engine cache beside {model_path} or in {fallback}; pass engine_cache_dir"
    )


def _peek(path: str) -> Tuple[str, str, Optional[ModelMetadata]]:
    """The graph input's name and layout and the model's metadata, read with a CPU session
    without graph optimisation (the TensorRT provider's options depend on them)."""
    ort = _import_ort()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        sess = ort.InferenceSession(path, sess_options=options, providers=[CPU])
    except Exception as exc:
        raise BackendError(f"cannot load ONNX model {path}: {first_line(exc)}") from None
    node = sess.get_inputs()[0]
    layout = LAYOUT_RAW_BGR if node.type == "tensor(uint8)" else LAYOUT_NORMALIZED
    props = sess.get_modelmeta().custom_metadata_map
    meta = ModelMetadata.from_props(props, path) if has_fcn_deploy_metadata(props) else None
    return node.name, layout, meta


def tensorrt_provider_options(
    path: str,
    device_id: int = 0,
    *,
    fp16: bool = False,
    engine_cache_dir: Optional[str] = None,
    timing_cache_dir: Optional[str] = None,
    profile_shapes: Optional[Mapping[str, ProfileShape]] = None,
    workspace_gb: Optional[float] = None,
    user_cache: Optional[str] = None,
) -> Dict[str, str]:
    """The TensorRT provider's options for the ONNX file ``path`` (see :func:`tensorrt_options`).

    The precision comes from the file's metadata (FP32 for a foreign graph); a u8s8 INT8 graph
    is refused here, before TensorRT fails on it. The engine cache is always on: in
    ``engine_cache_dir`` when given, else in :func:`default_engine_cache_dir` (``user_cache``
    stands in for :func:`user_cache_root`); the folders are created, and a log line says where.
    """
    name, layout, meta = _peek(path)
    problem = tensorrt_int8_problem(meta.int8_scheme, path) if meta is not None else None
    if problem:
        raise BackendError(problem)
    precision = meta.precision if meta is not None else "fp32"
    choices = dict(precision=precision, fp16=fp16, profile_shapes=profile_shapes, workspace_gb=workspace_gb)
    tensorrt_options(device_id, name, layout, **choices)  # refuse bad options before creating folders
    if engine_cache_dir:
        os.makedirs(engine_cache_dir, exist_ok=True)
    else:
        engine_cache_dir = default_engine_cache_dir(path, sha256_file(path), user_cache)
    if timing_cache_dir:
        os.makedirs(timing_cache_dir, exist_ok=True)
    options = tensorrt_options(
        device_id, name, layout, engine_cache_dir=engine_cache_dir, timing_cache_dir=timing_cache_dir, **choices
    )
    log.info("TensorRT engine cache for %s: %s", os.path.basename(path), engine_cache_dir)
    return options


class _Run:
    """One submitted frame: its input, kept alive until ONNX Runtime is done with it, then its
    output or its error."""

    __slots__ = ("flight", "input", "output", "error", "done")

    def __init__(self, flight: "_Flight", x: Optional[np.ndarray]) -> None:
        self.flight = flight
        self.input = x
        self.output: Optional[np.ndarray] = None
        self.error: Optional[RuntimeError] = None
        self.done = threading.Event()


class _Flight:
    """The frames a backend has been given and not yet handed back.

    ONNX Runtime's callback reaches this object, never the backend: the backend's session must
    not lose its last reference on a thread of the session's own pool.
    """

    def __init__(self) -> None:
        self.limit = 1
        self.cond = threading.Condition()
        self.runs: Dict[int, _Run] = {}  # submitted, result not yet taken
        self.running = 0  # started in ONNX Runtime, not yet called back
        self.next_ticket = 0
        self.peak_outstanding = 0
        self.closed = False

    def wait_idle(self) -> None:
        """Wait until ONNX Runtime has called back for every run started."""
        with self.cond:
            while self.running:
                self.cond.wait()

    def register(self, run: _Run) -> int:
        """Give ``run`` a ticket (the caller holds ``cond``)."""
        ticket = self.next_ticket
        self.next_ticket += 1
        self.runs[ticket] = run
        self.peak_outstanding = max(self.peak_outstanding, len(self.runs))
        return ticket


# Every backend that starts asynchronous runs, for the exit hook below.
_ASYNC_FLIGHTS: "weakref.WeakSet[_Flight]" = weakref.WeakSet()


@atexit.register
def _wait_for_runs_at_exit() -> None:
    """A run still going when Python exits would call back into a finalising interpreter from
    ONNX Runtime's thread, which aborts the process: wait for such runs first."""
    for flight in list(_ASYNC_FLIGHTS):
        flight.wait_idle()


def _run_done(results: List[np.ndarray], run: _Run, error: str) -> None:
    """ONNX Runtime's ``run_async`` callback, called on a thread of the session's intra-op pool."""
    if error:
        run.error = RuntimeError(error)
    else:
        run.output = results[0]
    run.input = None
    flight = run.flight
    with flight.cond:
        flight.running -= 1
        flight.cond.notify_all()
    run.done.set()


class OnnxRuntimeBackend(Backend):
    """An ONNX file in an ONNX Runtime session.

    Options:
      ``threads``: intra-op threads (``None``: ONNX Runtime's default, one per core);
      ``spinning``: let idle intra-op threads spin-wait for work (ONNX Runtime's default). Spinning
      shaves a little latency on an idle machine but burns the cores that decoding and rendering
      need on a small edge CPU, so the video pipeline turns it off;
      ``require_metadata``: refuse graphs not exported by fcn-deploy (default ``True``);
      ``in_flight``: how many frames :meth:`submit` keeps running at once (default 1 on the CPU,
      where two runs would share the same cores, and 2 on CUDA and TensorRT, where the host
      work of the next frame can overlap the GPU work of the current one). Above 1 the runs go
      through ``run_async`` on the intra-op thread pool, so ``threads=1`` (no pool) allows only 1;
      TensorRT provider only: ``fp16`` (let TensorRT pick FP16 kernels for an FP32 graph; FP16
      and INT8 graphs get their flags from the metadata), ``engine_cache_dir`` (where built
      engines are kept; default :func:`default_engine_cache_dir`), ``timing_cache_dir``,
      ``profile_shapes`` (``{"min": (N, H, W), "opt": ..., "max": ...}``, input sizes for the
      optimisation profile; the layout follows the graph's input), ``workspace_gb``.
    """

    def __init__(
        self,
        path: str,
        device: str = "cpu",
        *,
        threads: Optional[int] = None,
        spinning: bool = True,
        require_metadata: bool = True,
        in_flight: Optional[int] = None,
        fp16: bool = False,
        engine_cache_dir: Optional[str] = None,
        timing_cache_dir: Optional[str] = None,
        profile_shapes: Optional[Mapping[str, ProfileShape]] = None,
        workspace_gb: Optional[float] = None,
    ) -> None:
        ort = _import_ort()
        self.session = None
        self._flight = _Flight()
        self.path = str(path)
        self.device, device_id = parse_device(device)
        self.profile_shapes = dict(profile_shapes) if profile_shapes else None  # input_size keeps frames inside it
        if not os.path.isfile(self.path):
            raise BackendError(f"model file not found: {self.path}")
        trt_only = {"fp16": fp16, "engine_cache_dir": engine_cache_dir, "timing_cache_dir": timing_cache_dir,
                    "profile_shapes": profile_shapes, "workspace_gb": workspace_gb}
        given = [k for k, v in trt_only.items() if v]
        if given and self.device != "tensorrt":
            raise BackendError(f"{', '.join(given)}: options of the TensorRT provider; use device 'tensorrt'")
        if threads is not None and threads < 1:
            raise BackendError(f"threads must be >= 1, not {threads}")
        self._flight.limit = self._in_flight_limit(in_flight, threads)
        if self._flight.limit > 1:
            _ASYNC_FLIGHTS.add(self._flight)
        wanted = DEVICE_PROVIDERS[self.device]
        available = ort.get_available_providers()
        missing = [p for p in wanted if p not in available]
        if missing:
            raise BackendError(
                f"device {self.device!r} needs {missing[0]}, which this onnxruntime "
                f"({ort.__version__}, providers: {', '.join(available)}) does not have; install "
                "onnxruntime-gpu (not together with onnxruntime) or choose --device cpu"
            )
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only; our own messages say what went wrong

        provider_options: List[Dict[str, str]] = []
        cache: Optional[str] = None
        for provider in wanted:
            if provider == TENSORRT:
                provider_options.append(tensorrt_provider_options(
                    self.path, device_id, fp16=fp16, engine_cache_dir=engine_cache_dir,
                    timing_cache_dir=timing_cache_dir, profile_shapes=profile_shapes, workspace_gb=workspace_gb,
                ))
                cache = provider_options[-1]["trt_engine_cache_path"]
            elif provider == CUDA:
                provider_options.append({"device_id": str(device_id)})
            else:
                provider_options.append({})
        try:
            self.session = ort.InferenceSession(
                self.path, sess_options=options, providers=list(wanted), provider_options=provider_options
            )
        except Exception as exc:  # ORT raises InvalidProtobuf, Fail, InvalidGraph, RuntimeException ...
            first = first_line(exc)
            if cache and "deserialize engine from cache" in first:
                raise BackendError(
                    f"ONNX Runtime cannot load the TensorRT engine cached in {cache} (built by another "
                    "TensorRT release?): delete that folder and it is rebuilt"
                ) from None
            raise BackendError(f"cannot load ONNX model {self.path}: {first}") from None
        self.providers = list(self.session.get_providers())
        if wanted[0] not in self.providers:
            self.close()
            raise BackendError(
                f"ONNX Runtime could not start {wanted[0]} for {self.path} (session runs on "
                f"{', '.join(self.providers)}); check the CUDA/TensorRT libraries"
            )

        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise BackendError(
                f"{self.path} has {len(inputs)} inputs and {len(outputs)} outputs; a segmentation "
                "model has one of each"
            )
        self.input_spec = _spec(inputs[0])
        self.output_spec = _spec(outputs[0])
        props = self.session.get_modelmeta().custom_metadata_map
        if has_fcn_deploy_metadata(props):
            self.metadata: Optional[ModelMetadata] = ModelMetadata.from_props(props, self.path)
            self._check_layout()
        elif require_metadata:
            raise BackendError(
                f"{self.path} carries no fcn-deploy metadata; export it with `fcn-deploy export`"
            )
        else:
            self.metadata = None
        log.debug("opened %s on %s, %d frame(s) in flight", self.path, ", ".join(self.providers), self.in_flight)

    def _in_flight_limit(self, in_flight: Optional[int], threads: Optional[int]) -> int:
        if in_flight is None:
            return 1 if self.device == "cpu" or threads == 1 else 2
        if in_flight < 1:
            raise BackendError(f"in_flight must be >= 1, not {in_flight}")
        if in_flight > 1 and threads == 1:
            raise BackendError(
                f"in_flight={in_flight} needs threads >= 2: ONNX Runtime runs overlapping frames on its "
                "intra-op thread pool, which a single thread does not have"
            )
        return int(in_flight)

    def _check_layout(self) -> None:
        """The metadata's input layout and output kind must describe this very graph."""
        check_layout(self.path, self.metadata, self.input_spec, self.output_spec)

    # -- running --------------------------------------------------------------------------
    def run_graph(self, x: np.ndarray) -> np.ndarray:
        session = self.session
        if session is None:
            raise BackendError(f"{self.path}: backend is closed")
        return self._run(session, check_array(x, self.input_spec))

    def _run(self, session: Any, x: np.ndarray) -> np.ndarray:
        try:
            return session.run([self.output_spec.name], {self.input_spec.name: x})[0]
        except Exception as exc:  # a kernel that fails on this input: ORT's Fail, RuntimeException ...
            raise BackendError(f"{self.path}: ONNX Runtime failed on a frame: {first_line(exc)}") from None

    @property
    def in_flight(self) -> int:
        return self._flight.limit

    @property
    def peak_outstanding(self) -> int:
        """The most frames that were submitted and not yet collected at one time."""
        return self._flight.peak_outstanding

    @property
    def running(self) -> int:
        """How many runs ONNX Runtime is working on right now."""
        return self._flight.running

    def submit(self, x: np.ndarray) -> int:
        """Start the graph on ``x`` and return a ticket for :meth:`result`.

        With ``in_flight`` 1 the graph runs here; above 1 it starts with ``run_async`` and
        this returns at once, unless ``in_flight`` runs are already going, in which case it
        first waits for one of them to finish. An input that does not fit the graph raises
        here; a run that fails raises from :meth:`result`.
        """
        session, flight = self.session, self._flight
        if session is None:
            raise BackendError(f"{self.path}: backend is closed")
        x = check_array(x, self.input_spec)
        if flight.limit == 1:
            run = _Run(flight, None)
            run.output = self._run(session, x)
            run.done.set()
            with flight.cond:
                return flight.register(run)
        run = _Run(flight, x)
        with flight.cond:
            while flight.running >= flight.limit and not flight.closed:
                flight.cond.wait()
            if flight.closed:
                raise BackendError(f"{self.path}: backend is closed")
            ticket = flight.register(run)
            flight.running += 1
        try:
            session.run_async([self.output_spec.name], {self.input_spec.name: x}, _run_done, run)
        except Exception as exc:  # refused before it started: no callback will come
            with flight.cond:
                flight.runs.pop(ticket, None)
                flight.running -= 1
                flight.cond.notify_all()
            raise BackendError(f"{self.path}: ONNX Runtime cannot start the run: {first_line(exc)}") from None
        return ticket

    def result(self, ticket: int) -> np.ndarray:
        """The output of the frame submitted as ``ticket`` (waits for its run to finish)."""
        flight = self._flight
        with flight.cond:
            if flight.closed:
                raise BackendError(f"{self.path}: backend is closed")
            run = flight.runs.pop(ticket, None)
        if run is None:
            raise BackendError(f"{self.path}: no frame in flight with ticket {ticket}")
        run.done.wait()
        if run.error is not None:
            raise BackendError(f"{self.path}: ONNX Runtime failed on a frame: {first_line(run.error)}")
        return run.output

    def close(self) -> None:
        """Wait for the runs still going, then release the session."""
        flight = getattr(self, "_flight", None)
        if flight is not None:
            with flight.cond:
                flight.closed = True
            flight.wait_idle()
            with flight.cond:
                flight.runs.clear()
        self.session = None

    def __del__(self) -> None:
        # Dropped without close(): the session must not be freed under a run still going.
        try:
            self.close()
        except Exception:
            pass
