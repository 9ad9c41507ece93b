"""Which CPU engine runs an ONNX file fastest on this machine: ONNX Runtime or OpenVINO.

Neither wins everywhere: on one CPU ONNX Runtime runs a model's FP32 graph faster and
OpenVINO its INT8 graph, and the order changes with the CPU's instruction set, the thread
count and the engines' versions. So when a user names only ``--device cpu``, ``run`` (and
the Python API, through :func:`choose_cpu_backend`) measures both on the model itself: a
few inferences of each, interleaved, on one frame at the model's training scale (the size
``run`` feeds it), and takes the faster by median. The answer is kept in the user cache
(``USER_CACHE/cpu-engine-choice.json``), keyed by everything it depends on: the model's
sha256, the CPU model and core count, both engines' versions, the thread count and the
frame size, so a later start pays nothing and a change to any of them measures again. A
cache file that cannot be read is ignored and rewritten.

Both engines are measured at the same precision, the one the user asked for (fp32 unless
``--precision`` says otherwise), and neither may lower it: OpenVINO is told to compile an FP32
graph in f32 (on a CPU with AVX512_BF16 or AMX it would pick bf16 by itself, and win by running
half the precision). The precision is part of the cache key. bf16 has one CPU engine,
OpenVINO, so it is the answer without a measurement; it refuses bf16 itself on a CPU without it.

``ort-cpu`` and ``openvino`` (the benchmarks' backend names) name one engine and bypass
the choice.

Torch-free, like all of :mod:`fcn_deploy.runtime`.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import os
import platform
import time
from typing import Any, Dict, List, Optional, Tuple

from importlib import metadata as importlib_metadata

import numpy as np

from ..errors import FcnDeployError, first_line
from ..fileio import atomic_write, sha256_file, user_cache_root

log = logging.getLogger(__name__)

ORT_CPU = "ort-cpu"
OPENVINO = "openvino"
ENGINE_NAMES = {ORT_CPU: "ONNX Runtime", OPENVINO: "OpenVINO"}
CACHE_FILE = "cpu-engine-choice.json"
ENGINE_ENV = "FCN_DEPLOY_CPU_ENGINE"
# 2: the precision is in the key; version 1's OpenVINO timings were bf16 on bf16-capable CPUs.
CACHE_VERSION = 2
DEFAULT_SIZE = (360, 480)


# The distributions that install each engine's module (ONNX Runtime has one per build).
ENGINE_MODULES = {ORT_CPU: ("onnxruntime", ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino",
                                            "onnxruntime-directml", "ort-nightly")),
                  OPENVINO: ("openvino", ("openvino",))}


def _engine_version(module: str, distributions: Tuple[str, ...]) -> Optional[str]:
    """The version of the engine ``module`` if it is installed, without importing it.

    Importing OpenVINO costs about 0.25 s, and a start-up whose engine choice is cached (or
    that runs ONNX Runtime) has no other use for it; the installed distribution's metadata
    gives the same version. A module without such metadata (a system package) is imported.
    """
    if importlib.util.find_spec(module) is None:
        return None
    for name in distributions:
        try:
            return importlib_metadata.version(name).split("-")[0]
        except importlib_metadata.PackageNotFoundError:
            continue
    try:
        imported = importlib.import_module(module)
    except ImportError:
        return None
    return str(getattr(imported, "__version__", "unknown")).split("-")[0]


def installed_cpu_engines() -> Dict[str, str]:
    """The CPU engines installed here, ``{device name: version}``, ONNX Runtime first."""
    engines: Dict[str, str] = {}
    for device, (module, distributions) in ENGINE_MODULES.items():
        version = _engine_version(module, distributions)
        if version is not None:
            engines[device] = version
    return engines


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_cache_file(user_root: Optional[str] = None) -> str:
    return os.path.join(user_root or user_cache_root(), CACHE_FILE)


def measurement_size(model_path: str) -> Tuple[int, int]:
    """The frame size to measure at: the model's training scale (what ``run`` feeds it by
    default), else 360x480."""
    from .input_size import training_scale
    from .model_files import read_metadata

    try:
        reference = training_scale(read_metadata(model_path)).reference_size
    except FcnDeployError:
        reference = None
    return tuple(reference) if reference else DEFAULT_SIZE  # type: ignore[return-value]


def _read_cache(path: str) -> Dict[str, Any]:
    """The cache's entries, or none when the file is missing or unreadable (said in the log)."""
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            data = json.load(f)
        if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("entries"), dict):
            raise ValueError("not a cpu-engine-choice file of this version")
        return data["entries"]
    except (OSError, ValueError) as exc:
        log.warning("ignoring the CPU engine choice cache %s (%s); measuring again", path, first_line(exc))
        return {}


def _valid_entry(entry: Any, engines: Dict[str, str]) -> bool:
    return (isinstance(entry, dict) and entry.get("device") in engines
            and isinstance(entry.get("ms"), dict) and all(isinstance(entry["ms"].get(e), (int, float)) for e in engines))


def _measure(model_path: str, engines: List[str], size: Tuple[int, int], threads: Optional[int], spinning: bool,
             warmup: int, iters: int, precision: str = "fp32") -> Tuple[Dict[str, float], Dict[str, str]]:
    """Median milliseconds per frame of each engine that opens the model, interleaved so that
    a burst of other load hits both; and why each engine that could not run it failed."""
    from .backends import open_backend

    h, w = size
    frame = np.random.default_rng(0).integers(0, 256, size=(1, h, w, 3), dtype=np.uint8)
    opened: Dict[str, Any] = {}
    failed: Dict[str, str] = {}
    times: Dict[str, List[float]] = {}
    try:
        for engine in engines:
            options: Dict[str, Any] = {"threads": threads, "spinning": spinning, "precision": precision}
            try:
                backend = open_backend(model_path, engine, **options)
                x = backend.prepare(frame)
                for _ in range(warmup):
                    backend.run_graph(x)
            except FcnDeployError as exc:
                failed[engine] = first_line(exc)
                continue
            opened[engine] = (backend, x)
            times[engine] = []
        for _ in range(iters):
            for engine, (backend, x) in opened.items():
                start = time.perf_counter()
                backend.run_graph(x)
                times[engine].append(time.perf_counter() - start)
    finally:
        for backend, _ in opened.values():
            backend.close()
    return {e: float(np.median(t)) * 1e3 for e, t in times.items()}, failed


def _reason(device: str, ms: Dict[str, float], versions: Dict[str, str], size: Tuple[int, int],
            threads: Optional[int], how: str, precision: str = "fp32") -> str:
    others = ", ".join(f"{ENGINE_NAMES[e]} {versions[e]} {ms[e]:.1f} ms" for e in ms if e != device)
    thread_text = f"{threads} threads" if threads else "default threads"
    return (f"CPU engine: {ENGINE_NAMES[device]} {versions[device]} ({device}), {ms[device]:.1f} ms per "
            f"{size[0]}x{size[1]} frame against {others}, both {precision} ({thread_text}; {how}; --device "
            f"{ORT_CPU}|{OPENVINO} chooses one)")


def choose_cpu_backend(
    model_path: "str | os.PathLike[str]",
    threads: Optional[int] = None,
    *,
    spinning: bool = True,
    size: Optional[Tuple[int, int]] = None,
    cache_file: Optional[str] = None,
    warmup: int = 2,
    iters: int = 5,
    precision: Optional[str] = None,
) -> Tuple[str, str]:
    """``(device, reason)``: the faster installed CPU engine for the ONNX file ``model_path``
    (``"ort-cpu"`` or ``"openvino"``, a device :func:`~fcn_deploy.runtime.backends.open_backend`
    takes) and one line that says why.

    ``threads``, ``spinning`` and ``precision`` (``"fp32"``, the default, or ``"bf16"``) are the
    options the caller will open the backend with (they change the answer); both engines are
    measured at that precision (see the module docstring). ``size`` the frame size (default: :func:`measurement_size`);
    ``cache_file`` where answers are kept (default ``USER_CACHE/cpu-engine-choice.json``).
    With one engine installed it is the answer, unmeasured; with none, ``ort-cpu`` (whose
    backend then says what to install). ``FCN_DEPLOY_CPU_ENGINE=ort-cpu|openvino`` in the
    environment is the answer without measuring (a fixed choice for a fleet, or for tests that
    compare labels with one engine's).
    """
    from .backends.base import check_execution_precision

    precision = check_execution_precision(precision)
    forced = os.environ.get(ENGINE_ENV, "").strip().lower()
    if forced:  # the user (or a test) names the engine for every run on this machine
        if forced not in ENGINE_NAMES:
            raise FcnDeployError(f"{ENGINE_ENV}={forced!r}: expected {' or '.join(ENGINE_NAMES)}")
        return forced, f"CPU engine: {ENGINE_NAMES[forced]} ({forced}), as {ENGINE_ENV} says"
    path = os.fspath(model_path)
    versions = installed_cpu_engines()
    if precision != "fp32":  # OpenVINO is the one CPU engine with a switch for it
        if OPENVINO not in versions:
            raise FcnDeployError(f"{precision} on the CPU needs OpenVINO (pip install 'fcn-deploy[openvino]'): "
                                 f"ONNX Runtime has no {precision} mode")
        return OPENVINO, (f"CPU engine: OpenVINO {versions[OPENVINO]} (openvino), the CPU engine that runs "
                          f"{precision}")
    if len(versions) < 2:
        if OPENVINO in versions:
            return OPENVINO, f"CPU engine: OpenVINO {versions[OPENVINO]} (onnxruntime is not installed)"
        version = versions.get(ORT_CPU, "")
        return ORT_CPU, (f"CPU engine: ONNX Runtime {version} (the only one installed; pip install "
                         "'fcn-deploy[openvino]' to let the fastest be chosen)")
    if not os.path.isfile(path):
        raise FcnDeployError(f"model file not found: {path}")
    size = tuple(size) if size else measurement_size(path)  # type: ignore[assignment]
    cache_file = cache_file or default_cache_file()
    facts = {
        "model_sha256": sha256_file(path), "cpu": cpu_model(), "cores": _cores(), "engines": versions,
        "threads": threads, "spinning": bool(spinning), "size": list(size), "precision": precision,
    }
    key = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]
    entries = _read_cache(cache_file)
    entry = entries.get(key)
    if _valid_entry(entry, versions):
        how = f"measured {entry.get('measured_at', '?')}, cached in {cache_file}"
        return entry["device"], _reason(entry["device"], entry["ms"], versions, size, threads, how, precision)

    ms, failed = _measure(path, list(versions), size, threads, spinning, warmup, iters, precision)
    if not ms:
        detail = "; ".join(f"{ENGINE_NAMES[e]}: {why}" for e, why in failed.items())
        raise FcnDeployError(f"no CPU engine can run {path}: {detail}")
    device = min(ms, key=ms.get)
    if failed:  # not cached: a failure may be passing (a full disk, a missing library)
        missing = "; ".join(f"{ENGINE_NAMES[e]} cannot run it: {why}" for e, why in failed.items())
        return device, f"CPU engine: {ENGINE_NAMES[device]} {versions[device]} ({device}); {missing}"
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    entries[key] = {"device": device, "ms": {e: round(v, 3) for e, v in ms.items()}, "measured_at": stamp,
                    "model": os.path.basename(path), **facts}
    try:
        atomic_write(cache_file, json.dumps({"version": CACHE_VERSION, "entries": entries}, indent=1, sort_keys=True))
    except OSError as exc:  # a read-only home: the choice still stands, measured again next time
        log.warning("cannot keep the CPU engine choice in %s: %s", cache_file, first_line(exc))
    how = f"measured now, median of {iters}"
    return device, _reason(device, ms, versions, size, threads, how, precision)
