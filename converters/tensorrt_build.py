"""ONNX -> TensorRT engine (``fcn-deploy build``), for TensorRT 8.5/8.6, 10 and 11.

The three releases disagree on precision. TensorRT 11 builds only strongly typed networks:
there is no FP16 builder flag, no INT8 calibrator and no ``EXPLICIT_BATCH``; the precision
is the ONNX graph's own (an FP16 ONNX, or an INT8 Q/DQ ONNX from ``fcn-deploy export``).
TensorRT 10 has both modes; fcn-deploy uses strongly typed there too, so an engine means the
same on 10 and 11. TensorRT 8.x has no strongly typed mode: it builds explicit-batch networks
and needs the FP16 or INT8 builder flag to use those kernels at all.

bf16 (``fcn-deploy build --bf16``, an FP32 ONNX): TensorRT 10 only, as a weakly typed network
with the BF16 builder flag (layers may fall back to FP32), on a GPU of compute capability 8.0 or
later (Ampere, Jetson Orin); TensorRT 8.x has no bf16 and TensorRT 11 no weakly typed flags
(bf16 there would have to be the graph's own types, which fcn-deploy does not export). Each
of those is refused in one line before TensorRT builds anything.

So a build is decided in two steps:

1. :func:`plan_build` (pure Python, no TensorRT): from the running version, the ONNX's
   precision and the options, the names of the network flags and builder flags to set, the
   optimisation profiles, and the rest. What a version touches is data here, and the tests
   check it against each release's real name list.
2. :func:`build_serialized` carries the plan out with the TensorRT API, looking every enum
   member up by name (:func:`~fcn_deploy.runtime.backends.tensorrt.enum_member`) and using
   only calls every supported release has: ``build_serialized_network``,
   ``set_memory_pool_limit``, ``parse_from_file``, optimisation profiles, timing caches.

:func:`ensure_engine` ties it together with the engine cache: the plan is written atomically
with its sidecar ``NAME.engine.json``, and an existing engine is reused only when its sidecar
matches the request and this system (otherwise it is rebuilt, with the reason logged).
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import fcn_deploy
from fcn_deploy.errors import FcnDeployError, first_line
from fcn_deploy.runtime.engine_cache import (
    BuildRequest,
    EngineMismatch,
    Sidecar,
    atomic_write,
    cached_engine_path,
    engine_problem,
    now_iso,
    read_sidecar,
    sha256_bytes,
    sha256_file,
    write_sidecar,
)
from fcn_deploy.runtime.metadata import PRECISIONS, ModelMetadata, has_fcn_deploy_metadata
from fcn_deploy.runtime.tensorrt_compat import (
    OPT_LEVEL_SINCE,
    PARSER_NODE_NAME_SINCE,
    STRONGLY_TYPED_SINCE,
    VERSION_COMPATIBLE_SINCE,
    TensorRTError,
    Version,
    current_system,
    enum_member,
    import_tensorrt,
    parse_gpu_device,
    tensorrt_available,
    tensorrt_int8_problem,
    tensorrt_logger,
    tensorrt_version,
    version_tuple,
)

from .tensorrt_check import release_for_version, require_tensorrt_conformance
from .tensorrt_shapes import Dim, profile_text, resolve_profile

log = logging.getLogger(__name__)

MAX_OPT_LEVEL = 5
# bf16 from an FP32 graph: the BF16 builder flag, TensorRT 10 only (see the module docstring),
# on GPUs of compute capability 8.0 and later.
BF16_SINCE = (10, 0)
BF16_FLAG_UNTIL = 10
BF16_MIN_COMPUTE_CAPABILITY = (8, 0)

NOT_BUILT_HINT = "TensorRT is not installed here: build the engine on the target with `fcn-deploy build {onnx}`"


class EngineBuildError(FcnDeployError):
    """The ONNX cannot be parsed or built, or the request does not fit this TensorRT."""


# -- what the user asks for -----------------------------------------------------------------
@dataclass
class BuildOptions:
    """``fcn-deploy build`` options.

    ``precision``: ``None`` builds at the ONNX's own precision; ``"fp16"``/``"int8"`` insist
    on one; ``"bf16"`` builds an FP32 ONNX in bf16 where the release and GPU can. ``shapes``: ``--shapes`` values (:mod:`fcn_deploy.converters.tensorrt_shapes`).
    ``contexts``: how many copies of the optimisation profile to build, one per execution
    context that may run at the same time (the runtime's overlap of two frames needs 2).
    ``max_batch``: the largest batch of the default profile (``fcn-deploy run`` with N
    streams batches N frames); ``shapes`` overrides it.
    """

    precision: Optional[str] = None
    shapes: Sequence[str] = ()
    workspace_gb: Optional[float] = None
    opt_level: Optional[int] = None
    dla_core: Optional[int] = None
    timing_cache: Optional[str] = None
    version_compatible: bool = False
    contexts: int = 1
    max_batch: int = 1

    def validate(self) -> None:
        if self.precision not in (None, "fp16", "int8", "bf16"):
            raise EngineBuildError(f"unknown precision {self.precision!r}; expected fp16, bf16 or int8")
        if self.workspace_gb is not None and not self.workspace_gb > 0:
            raise EngineBuildError(f"--workspace must be a positive number of GB, not {self.workspace_gb}")
        if self.opt_level is not None and not 0 <= self.opt_level <= MAX_OPT_LEVEL:
            raise EngineBuildError(f"--opt-level must be 0 to {MAX_OPT_LEVEL}, not {self.opt_level}")
        if self.dla_core is not None and self.dla_core < 0:
            raise EngineBuildError(f"--dla must be a DLA core index (0 or 1), not {self.dla_core}")
        if self.contexts < 1:
            raise EngineBuildError(f"--contexts must be at least 1, not {self.contexts}")
        if self.max_batch < 1:
            raise EngineBuildError(f"--max-batch must be at least 1, not {self.max_batch}")
        if self.max_batch > 1 and self.shapes:
            raise EngineBuildError("--max-batch sets the default profile's batch; with --shapes give the batch there")

    def cache_options(self) -> Dict[str, Any]:
        """The options an engine depends on (the timing cache only changes build time)."""
        return {
            "workspace_gb": self.workspace_gb,
            "opt_level": self.opt_level,
            "dla_core": self.dla_core,
            "version_compatible": bool(self.version_compatible),
            "contexts": int(self.contexts),
        }


@dataclass
class OnnxFacts:
    """What the build needs to know about the ONNX before TensorRT sees it."""

    path: str
    sha256: str
    metadata: ModelMetadata
    inputs: List[Tuple[str, Tuple[Dim, ...]]]
    node_labels: List[str]  # "name (OpType)" by node index, for TensorRT 8.x parser errors
    model: Any = None  # the loaded onnx.ModelProto, so the conformance check does not read the file again


def read_onnx(path: str) -> OnnxFacts:
    """Metadata, inputs and node names of ``path`` (weights are not loaded)."""
    try:
        import onnx
    except ImportError:
        raise EngineBuildError("reading the ONNX file needs the onnx package: pip install onnx") from None
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # DecodeError, OSError ...
        first = first_line(exc)
        raise EngineBuildError(f"cannot read ONNX file {path}: {first}") from None
    props = {p.key: p.value for p in model.metadata_props}
    if not has_fcn_deploy_metadata(props):
        raise EngineBuildError(
            f"{path} carries no fcn-deploy metadata: export it with `fcn-deploy export` (or build a "
            "foreign ONNX with trtexec)"
        )
    metadata = ModelMetadata.from_props(props, path)
    require_tensorrt_int8_scheme(metadata, path)
    initializers = {init.name for init in model.graph.initializer}
    inputs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = tuple(
            int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in value.type.tensor_type.shape.dim
        )
        inputs.append((value.name, dims))
    labels = [f"{node.name or '#' + str(i)} ({node.op_type})" for i, node in enumerate(model.graph.node)]
    return OnnxFacts(os.fspath(path), sha256_file(path), metadata, inputs, labels, model)


def require_tensorrt_int8_scheme(metadata: ModelMetadata, where: str) -> None:
    """Refuse an INT8 graph quantised for ONNX Runtime's CPU provider (u8s8): TensorRT takes
    only symmetric INT8 (zero point 0), and would fail deep in its parser or build otherwise."""
    problem = tensorrt_int8_problem(metadata.int8_scheme, where)
    if problem:
        raise EngineBuildError(problem)


# -- step 1: the plan (no TensorRT) ---------------------------------------------------------
@dataclass
class BuildPlan:
    """Everything :func:`build_serialized` does, as data."""

    version: Version
    precision: str
    strongly_typed: bool
    network_flags: Tuple[str, ...]  # NetworkDefinitionCreationFlag members
    builder_flags: Tuple[str, ...]  # BuilderFlag members
    profiles: List[Dict[str, Dict[str, List[int]]]] = field(default_factory=list)
    workspace_bytes: Optional[int] = None
    opt_level: Optional[int] = None
    dla_core: Optional[int] = None
    timing_cache: Optional[str] = None

    def enum_members(self) -> List[Tuple[str, str]]:
        """Every ``(enum, member)`` that building this plan looks up."""
        used = [("NetworkDefinitionCreationFlag", f) for f in self.network_flags]
        used += [("BuilderFlag", f) for f in self.builder_flags]
        if self.workspace_bytes is not None:
            used.append(("MemoryPoolType", "WORKSPACE"))
        if self.dla_core is not None:
            used.append(("DeviceType", "DLA"))
        return used


def choose_precision(version: Version, onnx_precision: str, requested: Optional[str], where: str = "the ONNX") -> str:
    """The engine's precision: the ONNX's own, or ``requested`` where this TensorRT can do it."""
    if requested is None or requested == onnx_precision:
        return onnx_precision
    strongly_typed = version >= STRONGLY_TYPED_SINCE
    if requested == "bf16":
        if onnx_precision != "fp32":
            raise EngineBuildError(f"--bf16 builds an FP32 ONNX in bf16; {where} is {onnx_precision}")
        if version < BF16_SINCE:
            raise EngineBuildError(f"TensorRT {version[0]}.{version[1]} has no bf16 (it arrived in TensorRT 10); "
                                   "build FP16 instead (fcn-deploy export --fp16)")
        if version[0] > BF16_FLAG_UNTIL:
            raise EngineBuildError(
                f"TensorRT {version[0]}.{version[1]} builds strongly typed networks only, whose precision is the "
                f"ONNX's own, and fcn-deploy does not export a bf16 ONNX: build FP16 instead (fcn-deploy export --fp16)")
        return "bf16"
    if requested == "int8":
        raise EngineBuildError(
            f"--int8 needs an INT8 Q/DQ ONNX (fcn-deploy export --int8 --calib ...); {where} is "
            f"{onnx_precision} (fcn-deploy does not use TensorRT's INT8 calibrators, gone in TensorRT 11)"
        )
    if requested == "fp16" and onnx_precision == "fp32":
        if not strongly_typed:
            return "fp16"  # 8.x: the FP16 flag lets the builder pick FP16 kernels
        raise EngineBuildError(
            f"TensorRT {version[0]}.{version[1]} builds strongly typed networks, whose precision is the "
            f"ONNX's own, and {where} is FP32: export an FP16 ONNX with `fcn-deploy export --fp16`"
        )
    raise EngineBuildError(f"{where} is {onnx_precision}; --{requested} cannot change that")


def network_flag_names(version: Version, precision: str = "fp32") -> Tuple[str, ...]:
    """NetworkDefinitionCreationFlag members for ``version``: STRONGLY_TYPED from 10 on,
    EXPLICIT_BATCH on 8.x (where implicit batch is still the default); none for bf16 on 10 (a
    weakly typed network, explicit batch being 10's only mode), whose BF16 flag lets the
    builder lower the FP32 graph's layers."""
    if precision == "bf16":
        return ()
    return ("STRONGLY_TYPED",) if version >= STRONGLY_TYPED_SINCE else ("EXPLICIT_BATCH",)


def builder_flag_names(version: Version, precision: str, dla: bool, version_compatible: bool) -> Tuple[str, ...]:
    """BuilderFlag members for ``version``: the precision flags only on 8.x (a strongly typed
    network takes its precision from the graph), GPU_FALLBACK with DLA, VERSION_COMPATIBLE."""
    flags: List[str] = []
    if precision == "bf16":
        flags.append("BF16")  # the weakly typed build of choose_precision (TensorRT 10)
    elif version < STRONGLY_TYPED_SINCE:
        if precision == "fp16":
            flags.append("FP16")
        elif precision == "int8":
            flags.append("INT8")  # explicit quantization (Q/DQ) needs it on 8.x
    if dla:
        flags.append("GPU_FALLBACK")
    if version_compatible:
        flags.append("VERSION_COMPATIBLE")
    return tuple(flags)


def plan_build(
    version: Version,
    onnx_precision: str,
    options: BuildOptions,
    profile: Dict[str, Dict[str, List[int]]],
    where: str = "the ONNX",
) -> BuildPlan:
    """Decide the build for TensorRT ``version`` without touching TensorRT."""
    options.validate()
    precision = choose_precision(version, onnx_precision, options.precision, where)
    if options.version_compatible and version < VERSION_COMPATIBLE_SINCE:
        raise EngineBuildError("--version-compatible needs TensorRT 8.6 or later")
    if options.opt_level is not None and version < OPT_LEVEL_SINCE:
        raise EngineBuildError("--opt-level needs TensorRT 8.6 or later")
    if options.dla_core is not None and precision == "fp32":
        log.warning("DLA runs FP16 and INT8 only: this FP32 engine will run its layers on the GPU")
    return BuildPlan(
        version=version,
        precision=precision,
        strongly_typed=version >= STRONGLY_TYPED_SINCE and precision != "bf16",
        network_flags=network_flag_names(version, precision),
        builder_flags=builder_flag_names(version, precision, options.dla_core is not None, options.version_compatible),
        profiles=[profile] * options.contexts if profile else [],
        workspace_bytes=int(options.workspace_gb * (1 << 30)) if options.workspace_gb else None,
        opt_level=options.opt_level,
        dla_core=options.dla_core,
        timing_cache=options.timing_cache,
    )


def _capability(text: str) -> Tuple[int, int]:
    """``"8.7"`` -> ``(8, 7)``; unreadable -> ``(0, 0)``."""
    try:
        major, _, minor = str(text).partition(".")
        return int(major), int(minor or 0)
    except ValueError:
        return (0, 0)


def static_profile_for_dla(profile: Dict[str, Dict[str, List[int]]], shapes_given: bool) -> Dict[str, Dict[str, List[int]]]:
    """The DLA runs static shapes only: a layer with a dynamic dimension falls back to the
    GPU, so a DLA engine built from a dynamic profile puts nothing on the DLA. Without
    ``--shapes`` the profile becomes its opt shape (min = opt = max); a dynamic ``--shapes``
    is refused in one line."""
    fixed: Dict[str, Dict[str, List[int]]] = {}
    for name, shapes in profile.items():
        low, opt, high = (list(shapes[k]) for k in ("min", "opt", "max"))
        if low == opt == high:
            fixed[name] = {"min": opt, "opt": opt, "max": opt}
            continue
        if shapes_given:
            dims = "x".join(str(d) for d in opt)
            raise EngineBuildError(
                f"--dla needs static shapes (the DLA has no dynamic dimensions), but {name} ranges from "
                f"{'x'.join(str(d) for d in low)} to {'x'.join(str(d) for d in high)}: give --shapes {name}:{dims}"
            )
        fixed[name] = {"min": opt, "opt": opt, "max": opt}
    return fixed


# -- step 2: TensorRT ----------------------------------------------------------------------
def parser_error_text(parser: Any, version: Version, path: str, node_labels: Sequence[str]) -> str:
    """One line for the parser's first error, naming the ONNX node (all of them are logged)."""
    lines = []
    for i in range(int(parser.num_errors)):
        error = parser.get_error(i)
        if version >= PARSER_NODE_NAME_SINCE:
            node = str(error.node_name() or "")
        else:
            index = int(error.node())
            node = node_labels[index] if 0 <= index < len(node_labels) else ""
        where = f"node {node}: " if node else ""
        lines.append(f"{where}{error.desc()}")
    for line in lines:
        log.error("ONNX parser: %s", line)
    if not lines:
        return f"TensorRT cannot parse {path} (no parser error recorded; run with -v)"
    more = f" (and {len(lines) - 1} more; see the log)" if len(lines) > 1 else ""
    return f"TensorRT cannot parse {path}: {lines[0]}{more}"


def _check_inputs_have_profiles(network: Any, plan: BuildPlan) -> None:
    for i in range(int(network.num_inputs)):
        tensor = network.get_input(i)
        name, shape = tensor.name, tuple(int(d) for d in tensor.shape)
        if any(d < 0 for d in shape) and not all(name in profile for profile in plan.profiles or [{}]):
            dims = "x".join("?" if d < 0 else str(d) for d in shape)
            raise EngineBuildError(
                f"input {name} ({dims}) is dynamic but has no shape range: give --shapes {name}:min=...,opt=...,max=..."
            )


def _attach_timing_cache(config: Any, path: Optional[str]) -> None:
    """Start from the timing cache at ``path`` (when there is one that fits this TensorRT and
    GPU), so a rebuild skips the kernel timing it already did."""
    if not path:
        return
    data = b""
    if os.path.isfile(path):
        with open(path, "rb") as f:
            data = f.read()
    try:
        cache = config.create_timing_cache(data)
        fits = cache is not None and config.set_timing_cache(cache, False)
    except Exception as exc:  # a corrupt file: TensorRT raises
        log.debug("timing cache %s unusable: %s", path, exc)
        fits = False
    if not fits:
        if data:
            log.warning("timing cache %s is from another TensorRT or GPU (or damaged); starting a new one", path)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)


def build_serialized(trt: Any, onnx_path: str, plan: BuildPlan, node_labels: Sequence[str] = ()) -> bytes:
    """Parse ``onnx_path`` and build the serialized plan as ``plan`` says."""
    logger = tensorrt_logger(trt)
    recorder = logger.recorder
    version = tensorrt_version(trt)
    builder = trt.Builder(logger)
    flags = 0
    for name in plan.network_flags:
        flags |= 1 << int(enum_member(trt, "NetworkDefinitionCreationFlag", name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(os.fspath(onnx_path)):
        raise EngineBuildError(parser_error_text(parser, plan.version, onnx_path, node_labels))
    _check_inputs_have_profiles(network, plan)

    config = builder.create_builder_config()
    for name in plan.builder_flags:
        config.set_flag(enum_member(trt, "BuilderFlag", name))
    if plan.workspace_bytes is not None:
        config.set_memory_pool_limit(enum_member(trt, "MemoryPoolType", "WORKSPACE"), plan.workspace_bytes)
    if plan.opt_level is not None:
        config.builder_optimization_level = int(plan.opt_level)
    if plan.dla_core is not None:
        cores = int(builder.num_DLA_cores)
        if plan.dla_core >= cores:
            raise EngineBuildError(f"--dla {plan.dla_core}: this device has {cores} DLA core(s)")
        config.default_device_type = enum_member(trt, "DeviceType", "DLA")
        config.DLA_core = int(plan.dla_core)
    for shapes in plan.profiles:
        profile = builder.create_optimization_profile()
        for name, s in shapes.items():
            profile.set_shape(name, tuple(s["min"]), tuple(s["opt"]), tuple(s["max"]))
        if config.add_optimization_profile(profile) < 0:
            raise EngineBuildError(f"TensorRT rejects the optimisation profile {profile_text(shapes)}: {recorder.take_error()}")
    _attach_timing_cache(config, plan.timing_cache)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT {version} could not build {onnx_path}: {recorder.take_error()}")
    if plan.timing_cache:
        atomic_write(plan.timing_cache, memoryview(config.get_timing_cache().serialize()))
    return bytes(memoryview(serialized))


# -- the whole build, with the cache ---------------------------------------------------------
@dataclass
class BuildResult:
    engine_path: str
    sidecar: Sidecar
    reused: bool
    reason: str  # why it was (re)built, or why it was reused
    seconds: float = 0.0


def default_engine_path(onnx_path: str) -> str:
    """``model.fp16.onnx`` -> ``model.fp16.engine`` (its sidecar: ``model.fp16.engine.json``)."""
    return os.path.splitext(os.fspath(onnx_path))[0] + ".engine"


def ensure_engine(
    onnx_path: str,
    output: Optional[str] = None,
    options: Optional[BuildOptions] = None,
    *,
    force: bool = False,
    cache_dir: Optional[str] = None,
    device: str = "cuda",
    trt: Any = None,
    cuda: Any = None,
) -> BuildResult:
    """Build (or reuse) the engine for ``onnx_path``.

    ``output`` defaults to the ONNX's name with ``.engine``, or, with ``cache_dir``, to a file
    there named by what the engine depends on. An existing engine is reused when its sidecar
    matches; one without an fcn-deploy sidecar is never overwritten unless ``force``.
    ``device`` (``cuda``, ``cuda:1``) is the GPU to build for: a plan is tied to its GPU.
    """
    options = options or BuildOptions()
    options.validate()
    onnx_path = os.fspath(onnx_path)
    if not os.path.isfile(onnx_path):
        raise EngineBuildError(f"ONNX file not found: {onnx_path}")
    facts = read_onnx(onnx_path)
    profile = resolve_profile(facts.inputs, facts.metadata, options.shapes, options.max_batch)
    if options.dla_core is not None:
        profile = static_profile_for_dla(profile, bool(options.shapes))
    trt = trt if trt is not None else import_tensorrt()
    plan = plan_build(version_tuple(trt), facts.metadata.precision, options, profile, onnx_path)
    # What this release's parser would refuse is our one line, before TensorRT's stack;
    # with --dla, the layers that fall back to the GPU are said here too.
    report = require_tensorrt_conformance(facts.model, (release_for_version(plan.version),),
                                          dla=options.dla_core is not None, profile=profile, label=onnx_path)
    for note in report.notes:
        log.info("%s", note.line(onnx_path))
    if cuda is None:
        from fcn_deploy.runtime.cuda_memory import open_cuda

        cuda = open_cuda(parse_gpu_device(device))
    system = current_system(trt, cuda)
    if plan.precision == "bf16" and _capability(system.compute_capability) < BF16_MIN_COMPUTE_CAPABILITY:
        raise EngineBuildError(f"{system.gpu_name} (sm {system.compute_capability}) has no bf16: it needs compute "
                               "capability 8.0 or later (Ampere, Jetson Orin); build FP16 instead")
    if output is None:
        output = (
            cached_engine_path(onnx_path, cache_dir, facts.sha256, system, plan.precision)
            if cache_dir
            else default_engine_path(onnx_path)
        )
    metadata = json.loads(json.dumps(facts.metadata.to_dict()))  # as the sidecar will hold it
    if plan.precision in PRECISIONS:  # a bf16 engine's graph is FP32 (the sidecar's precision says bf16)
        metadata["precision"] = plan.precision
    request = BuildRequest(facts.sha256, plan.precision, plan.profiles, options.cache_options(), metadata)

    reason = "no engine yet"
    if os.path.lexists(output):
        if not os.path.isfile(output):
            raise EngineBuildError(f"{output} exists and is not a file")
        try:
            read_sidecar(output)
        except EngineMismatch as exc:
            if not force:
                raise EngineBuildError(
                    f"{output} exists and is not an fcn-deploy engine ({exc}); not overwriting it: "
                    "pass --force or choose another --output"
                ) from None
        if force:
            reason = "--force"
        else:
            problem = engine_problem(output, request, system)
            if problem is None:
                log.info("%s is up to date for %s", output, system.describe())
                return BuildResult(output, read_sidecar(output), True, "up to date")
            reason = problem
    log.info("building %s (%s): %s", output, plan.precision, reason)
    log.info("shapes: %s", profile_text(profile))

    start = time.perf_counter()
    with cuda.activate():
        data = build_serialized(trt, onnx_path, plan, facts.node_labels)
    seconds = time.perf_counter() - start
    sidecar = Sidecar(
        tensorrt_version=system.tensorrt_version,
        gpu_name=system.gpu_name,
        compute_capability=system.compute_capability,
        precision=plan.precision,
        profiles=plan.profiles,
        onnx_sha256=facts.sha256,
        build_options=options.cache_options(),
        engine_sha256=sha256_bytes(data),
        engine_bytes=len(data),
        metadata=metadata,
        strongly_typed=plan.strongly_typed,
        onnx_path=onnx_path,
        build_time=now_iso(),
        build_seconds=round(seconds, 3),
        fcn_deploy_version=fcn_deploy.__version__,
        extra={"network_flags": list(plan.network_flags), "builder_flags": list(plan.builder_flags),
               "timing_cache": options.timing_cache},
    )
    atomic_write(output, data)
    write_sidecar(output, sidecar)
    return BuildResult(output, sidecar, False, reason, seconds)


def build_after_export(onnx_path: str, options: Optional[BuildOptions] = None) -> Optional[BuildResult]:
    """For ``fcn-deploy export --fp16``: build the engine next to the fresh ONNX where TensorRT
    is importable; ``None`` where it is not (the caller then prints
    ``NOT_BUILT_HINT.format(onnx=...)`` and exits 0)."""
    if not tensorrt_available():
        return None
    return ensure_engine(onnx_path, options=options)


__all__ = [
    "BuildOptions",
    "BuildPlan",
    "BuildResult",
    "EngineBuildError",
    "NOT_BUILT_HINT",
    "TensorRTError",
    "build_after_export",
    "ensure_engine",
    "build_serialized",
    "builder_flag_names",
    "choose_precision",
    "default_engine_path",
    "network_flag_names",
    "plan_build",
    "read_onnx",
]
