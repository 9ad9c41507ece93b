"""What differs between the TensorRT releases fcn-deploy supports, in one place.

The builder (:mod:`fcn_deploy.converters.tensorrt_build`) and the runtime backend
(:mod:`fcn_deploy.runtime.backends.tensorrt`) both need to import TensorRT with a clear error,
read its version, look enum members up by name only where a release has them, route
TensorRT's log to :mod:`logging`, name the GPU a device string means, and describe the system
an engine is tied to. Each of those lives here, once.

Supported: TensorRT 8.5/8.6 (JetPack 5 and 6.0), 10.x (JetPack 6.1+, desktop) and 11.x
(desktop). Nothing here imports TensorRT at module level, so the rules are testable anywhere
(tests/test_tensorrt_api_names.py checks them against each release's real name list).
"""
from __future__ import annotations

import logging
import re
import threading
from typing import Any, Dict, Optional, Tuple

from dataclasses import dataclass

from ..errors import FcnDeployError

log = logging.getLogger(__name__)

Version = Tuple[int, int]

# The oldest TensorRT with the name-based I/O API (JetPack 5.1 ships 8.5.2).
MIN_VERSION = (8, 5)

# Every enum member fcn-deploy touches: (enum, member) -> (first release, last major that
# fcn-deploy uses it on; None: every later major). :func:`enum_member` refuses a member outside
# its range before touching it, and tests/test_tensorrt_api_names.py checks the table and the
# code paths against the real name lists of TensorRT 8.6, 10.3, 10.13 and 11.4.
ENUM_MEMBERS: Dict[Tuple[str, str], Tuple[Tuple[int, int], Optional[int]]] = {
    # 8.x needs explicit batch for ONNX; 10 made it the only mode; 11 removed the flag.
    ("NetworkDefinitionCreationFlag", "EXPLICIT_BATCH"): ((8, 5), 9),
    # Precision from the graph's own types: the only mode in 11, and used from 10 on.
    ("NetworkDefinitionCreationFlag", "STRONGLY_TYPED"): ((10, 0), None),
    # Weakly typed precision flags: 8.x only (deprecated in 10, removed in 11).
    ("BuilderFlag", "FP16"): ((8, 5), 9),
    ("BuilderFlag", "INT8"): ((8, 5), 9),
    # bf16 from an FP32 graph: a weakly typed build with this flag, on 10 only (8.x has no
    # bf16; 11 dropped the weakly typed flags, and its DataType.BF16 is for typed graphs).
    ("BuilderFlag", "BF16"): ((10, 0), 10),
    ("BuilderFlag", "GPU_FALLBACK"): ((8, 5), None),
    ("BuilderFlag", "VERSION_COMPATIBLE"): ((8, 6), None),
    ("MemoryPoolType", "WORKSPACE"): ((8, 5), None),
    ("DeviceType", "DLA"): ((8, 5), None),
    ("TensorIOMode", "INPUT"): ((8, 5), None),
}

TENSORRT_MISSING = (
    "TensorRT's Python package (import tensorrt) is not installed here. On a Jetson use "
    "JetPack's TensorRT through a `python3 -m venv --system-site-packages` venv; on a desktop "
    "GPU pip install 'fcn-deploy[gpu]'. Without it, run the ONNX file with ONNX Runtime's "
    "TensorRT execution provider instead: fcn-deploy run --model MODEL.onnx --device tensorrt"
)


class TensorRTError(FcnDeployError):
    """TensorRT is missing, too old, lacks an API, or failed."""


# -- version and names ----------------------------------------------------------------------
def import_tensorrt():
    """``import tensorrt``, or one :class:`TensorRTError` line that says what to do."""
    try:
        import tensorrt
    except ImportError:
        raise TensorRTError(TENSORRT_MISSING) from None
    except OSError as exc:  # the Python module is there, its libnvinfer is not
        raise TensorRTError(f"TensorRT is installed but cannot load its libraries: {exc}") from None
    version = tensorrt_version(tensorrt)
    if version_tuple(version) < MIN_VERSION:
        raise TensorRTError(
            f"TensorRT {version} is too old: fcn-deploy needs {MIN_VERSION[0]}.{MIN_VERSION[1]} or "
            "later (JetPack 5.1+), for the name-based I/O API"
        )
    return tensorrt


def tensorrt_available() -> bool:
    """True when ``import tensorrt`` works here (without raising anything)."""
    try:
        import_tensorrt()
    except TensorRTError:
        return False
    return True


def tensorrt_version(trt: Any) -> str:
    return str(trt.__version__)


def version_tuple(version: "str | Any") -> Version:
    """``"10.3.0.26"`` (or the ``tensorrt`` module) -> ``(10, 3)``: what decides an API path."""
    if not isinstance(version, str):
        version = tensorrt_version(version)
    parts = release_numbers(version)
    if not parts:
        raise TensorRTError(f"cannot read the TensorRT version {version!r}")
    return (parts[0], parts[1] if len(parts) > 1 else 0)


def release_numbers(version: str) -> Tuple[int, ...]:
    """``"10.3.0.26"`` -> ``(10, 3, 0)``: major, minor and patch, for ordering releases."""
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


def member_in_range(enum: str, member: str, version: Tuple[int, int]) -> bool:
    since, until = ENUM_MEMBERS[(enum, member)]
    return version >= since and (until is None or version[0] <= until)


def enum_member(trt: Any, enum: str, member: str) -> Any:
    """``trt.<enum>.<member>``, looked up by name after checking that fcn-deploy uses that
    member on the running major version (see :data:`ENUM_MEMBERS`)."""
    version = tensorrt_version(trt)
    if (enum, member) not in ENUM_MEMBERS:
        raise TensorRTError(f"fcn-deploy does not know TensorRT's {enum}.{member}")
    if not member_in_range(enum, member, version_tuple(version)):
        since, until = ENUM_MEMBERS[(enum, member)]
        span = f"{since[0]}.{since[1]}" + (f" to {until}.x" if until is not None else " and later")
        raise TensorRTError(f"{enum}.{member} is used only on TensorRT {span}; this is TensorRT {version}")
    try:
        return getattr(getattr(trt, enum), member)
    except AttributeError:
        raise TensorRTError(f"TensorRT {version} has no {enum}.{member}") from None


def enum_name(value: Any) -> str:
    """The name of a TensorRT enum value (``DataType.HALF`` -> ``"HALF"``)."""
    name = getattr(value, "name", None)
    return str(name) if name is not None else str(value).rpartition(".")[2]


class _LogRecorder:
    """TensorRT's messages, sent to :mod:`logging`, the last error kept for our error line."""

    def __init__(self) -> None:
        self.last_error: Optional[str] = None
        self.verbose = False

    def log(self, severity: Any, msg: str) -> None:
        name = enum_name(severity)
        text = str(msg).strip()
        if name in ("INTERNAL_ERROR", "ERROR"):
            self.last_error = text
            log.error("TensorRT: %s", text)
        elif name == "WARNING":
            log.warning("TensorRT: %s", text)
        elif name == "INFO" or self.verbose:
            log.debug("TensorRT: %s", text)

    def take_error(self) -> str:
        text, self.last_error = self.last_error, None
        return text or "no error message from TensorRT (run with -v for its log)"


_LOGGERS: Dict[int, Tuple[Any, Any]] = {}  # id(module) -> (module, logger); the module kept alive
_LOGGERS_LOCK = threading.Lock()


def tensorrt_logger(trt: Any) -> Any:
    """One ``trt.ILogger`` per ``tensorrt`` module, sending TensorRT's messages to logging.

    One per process on purpose: TensorRT keeps the first logger it is given for all builders
    and runtimes and warns when later ones differ.
    """
    with _LOGGERS_LOCK:
        entry = _LOGGERS.get(id(trt))
        logger = entry[1] if entry is not None and entry[0] is trt else None
        if logger is None:
            recorder = _LogRecorder()

            class _Bridge(trt.ILogger):
                def __init__(self) -> None:
                    trt.ILogger.__init__(self)
                    self.recorder = recorder

                def log(self, severity, msg):  # called by TensorRT
                    self.recorder.log(severity, msg)

            logger = _Bridge()
            _LOGGERS[id(trt)] = (trt, logger)
        return logger


# -- what each release does differently ------------------------------------------------------
STRONGLY_TYPED_SINCE: Version = (10, 0)  # fcn-deploy builds strongly typed from here on
PARSER_NODE_NAME_SINCE: Version = (10, 0)  # ParserError.node_name(); 8.x has only node()
OPT_LEVEL_SINCE: Version = (8, 6)  # IBuilderConfig.builder_optimization_level
VERSION_COMPATIBLE_SINCE: Version = (8, 6)  # BuilderFlag.VERSION_COMPATIBLE


def parse_gpu_device(device: str) -> int:
    """``"cuda"``/``"tensorrt"``/``"gpu"`` with an optional ``:INDEX`` -> the GPU index."""
    kind, _, index = str(device).strip().lower().partition(":")
    if kind not in ("cuda", "tensorrt", "gpu"):
        raise TensorRTError(
            f"a TensorRT engine runs on an NVIDIA GPU, not on device {device!r}; use --device cuda "
            "(or run the ONNX file with ONNX Runtime on the CPU)"
        )
    if index and not index.isdigit():
        raise TensorRTError(f"bad device index in {device!r}")
    return int(index or 0)


@dataclass(frozen=True)
class SystemInfo:
    """What a plan is tied to on the machine that builds or runs it."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.7"

    def describe(self) -> str:
        return f"TensorRT {self.tensorrt_version} on {self.gpu_name} (sm {self.compute_capability})"


def version_mismatch(built: str, running: str) -> str:
    """The one wording for a plan from another TensorRT release."""
    return f"built by TensorRT {built}; this is TensorRT {running}"


def gpu_mismatch(built_gpu: str, built_cc: str, system: SystemInfo) -> str:
    """The one wording for a plan from another GPU."""
    return f"built for {built_gpu} (sm {built_cc}); this GPU is {system.gpu_name} (sm {system.compute_capability})"


def current_system(trt: Any, cuda: Any) -> SystemInfo:
    """The TensorRT version and GPU an engine built or run here is tied to."""
    return SystemInfo(tensorrt_version(trt), cuda.device_name(), cuda.compute_capability())


# The one INT8 scheme TensorRT builds: symmetric, zero points 0 (its parser refuses others).
TENSORRT_INT8_SCHEME = "s8s8"


def tensorrt_int8_problem(int8_scheme: Optional[str], where: str) -> Optional[str]:
    """Why TensorRT cannot build a graph of ``int8_scheme`` (``ModelMetadata.int8_scheme``;
    ``None`` for float graphs), or ``None`` when it can."""
    if int8_scheme in (None, TENSORRT_INT8_SCHEME):
        return None
    return (
        f"{where} is a {int8_scheme} INT8 graph for ONNX Runtime on CPUs; TensorRT builds only symmetric "
        f"INT8 ({TENSORRT_INT8_SCHEME}): export one with `fcn-deploy export --int8`"
    )
