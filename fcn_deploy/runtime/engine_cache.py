"""The sidecar of a TensorRT engine, and the rule for when a built engine may be reused.

A TensorRT plan only runs on the TensorRT version and the GPU it was built for, and a plan
that no longer matches its ONNX (re-exported, other precision, other shapes) runs the wrong
model without complaint. Stale engines are the most reported failure of TensorRT deployments,
so every engine fcn-deploy writes, ``NAME.engine``, gets a sidecar ``NAME.engine.json`` that
records everything the plan depends on (:class:`Sidecar`), and an engine is reused only when
all of it matches the request and the running system (:func:`reuse_problem`); otherwise it is
rebuilt, with one line that says why.

The plan itself stays a plain serialized TensorRT plan, so ``trtexec --loadEngine`` and
Polygraphy load it unchanged.

Torch-free, onnx-free and TensorRT-free: plain JSON and hashing, testable anywhere.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from ..errors import FcnDeployError
from ..fileio import atomic_write, sha256_file
from .tensorrt_compat import SystemInfo, gpu_mismatch, release_numbers, version_mismatch

SIDECAR_FORMAT = "fcn-deploy-tensorrt-engine"
SIDECAR_VERSION = 1
SIDECAR_SUFFIX = ".json"

# One optimisation profile: input name -> {"min": [...], "opt": [...], "max": [...]}.
Profile = Dict[str, Dict[str, List[int]]]


class EngineMismatch(FcnDeployError):
    """An engine that does not fit this TensorRT, this GPU, or the request."""


def sidecar_path(engine_path: "str | os.PathLike[str]") -> str:
    """``m.engine`` -> ``m.engine.json``."""
    return os.fspath(engine_path) + SIDECAR_SUFFIX


def sha256_bytes(data: "bytes | memoryview") -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class BuildRequest:
    """What the user asks for; with :class:`SystemInfo`, everything an engine depends on.

    ``options`` are the build options that change the plan (workspace, optimisation level,
    DLA core, version compatibility, number of profiles); the timing cache is left out on
    purpose: it changes how long a build takes, not what it produces.
    """

    onnx_sha256: str
    precision: str
    profiles: List[Profile]
    options: Dict[str, Any]
    metadata: Optional[Dict[str, Any]] = None


@dataclass
class Sidecar:
    """The contents of ``NAME.engine.json``: the ONNX metadata plus the build facts."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    profiles: List[Profile]
    onnx_sha256: str
    build_options: Dict[str, Any]
    engine_sha256: str
    engine_bytes: int
    metadata: Optional[Dict[str, Any]] = None
    strongly_typed: bool = False
    onnx_path: Optional[str] = None
    build_time: str = ""
    build_seconds: Optional[float] = None
    fcn_deploy_version: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def system(self) -> SystemInfo:
        return SystemInfo(self.tensorrt_version, self.gpu_name, self.compute_capability)

    @property
    def version_compatible(self) -> bool:
        return bool(self.build_options.get("version_compatible"))

    def to_dict(self) -> Dict[str, Any]:
        d = {"format": SIDECAR_FORMAT, "format_version": SIDECAR_VERSION}
        d.update(asdict(self))
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "sidecar") -> "Sidecar":
        if not isinstance(d, Mapping) or d.get("format") != SIDECAR_FORMAT:
            raise EngineMismatch(f"{where} is not an fcn-deploy engine sidecar")
        version = d.get("format_version")
        if not isinstance(version, int) or version > SIDECAR_VERSION:
            raise EngineMismatch(
                f"{where} has sidecar format {version!r}; this fcn-deploy reads up to {SIDECAR_VERSION}: upgrade fcn-deploy"
            )
        names = set(cls.__dataclass_fields__)
        try:
            return cls(**{k: v for k, v in d.items() if k in names})
        except TypeError as exc:
            raise EngineMismatch(f"{where} is incomplete: {exc}") from None


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def write_sidecar(engine_path: "str | os.PathLike[str]", sidecar: Sidecar) -> str:
    path = sidecar_path(engine_path)
    atomic_write(path, json.dumps(sidecar.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def read_sidecar(engine_path: "str | os.PathLike[str]") -> Sidecar:
    """The sidecar of ``engine_path``; :class:`EngineMismatch` if it is missing or unreadable."""
    path = sidecar_path(engine_path)
    if not os.path.isfile(path):
        raise EngineMismatch(f"{engine_path} has no sidecar {os.path.basename(path)} (not built by fcn-deploy build)")
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, ValueError) as exc:
        raise EngineMismatch(f"cannot read {path}: {exc}") from None
    return Sidecar.from_dict(d, path)


def _profiles_text(profiles: List[Profile]) -> str:
    parts = []
    for profile in profiles:
        for name, shapes in profile.items():
            dims = ",".join(f"{k}={'x'.join(str(d) for d in shapes[k])}" for k in ("min", "opt", "max"))
            parts.append(f"{name}:{dims}")
    return "; ".join(parts) or "none"


def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), for comparing a request
    with a sidecar."""
    return json.loads(json.dumps(value, sort_keys=True))


def runtime_problem(sidecar: Sidecar, system: SystemInfo) -> Optional[str]:
    """Why a plan described by ``sidecar`` cannot run on ``system``; ``None`` when it can.

    Without version compatibility a plan runs only on the exact TensorRT version that built
    it. A version-compatible plan (built with ``--version-compatible``, TensorRT >= 8.6) runs
    on the same or a later release of the same major version, and across the one documented
    step from 8 to 10 and from 10 to 11. A plan is compiled for one GPU architecture: the
    compute capability must match (a different board of the same architecture runs it, which
    the cache still treats as a reason to rebuild).
    """
    built, running = sidecar.tensorrt_version, system.tensorrt_version
    if sidecar.version_compatible:
        b, r = release_numbers(built), release_numbers(running)
        forward = r >= b and (r[0] == b[0] or (b[0], r[0]) in ((8, 10), (10, 11)))
        if not forward:
            return (
                f"built by TensorRT {built} (version-compatible), which TensorRT {running} cannot run"
            )
    elif built != running:
        return version_mismatch(built, running)
    if sidecar.compute_capability != system.compute_capability:
        return gpu_mismatch(sidecar.gpu_name, sidecar.compute_capability, system)
    return None


def reuse_problem(sidecar: Optional[Sidecar], request: BuildRequest, system: SystemInfo) -> Optional[str]:
    """Why an engine with ``sidecar`` must be rebuilt for ``request`` on ``system``; ``None``
    when it can be reused.

    Stricter than :func:`runtime_problem`: the exact TensorRT version and GPU name must
    match too (a rebuild is cheap next to a subtly slower or failing engine), and so must the
    ONNX's sha256, precision, optimisation profiles, the build options and the metadata.
    """
    if sidecar is None:
        return "no engine yet"
    if sidecar.tensorrt_version != system.tensorrt_version:
        return version_mismatch(sidecar.tensorrt_version, system.tensorrt_version)
    if sidecar.gpu_name != system.gpu_name or sidecar.compute_capability != system.compute_capability:
        return gpu_mismatch(sidecar.gpu_name, sidecar.compute_capability, system)
    if sidecar.onnx_sha256 != request.onnx_sha256:
        return "the ONNX file changed since the engine was built (sha256 differs)"
    if sidecar.precision != request.precision:
        return f"engine precision is {sidecar.precision}; {request.precision} was asked for"
    if _plain(sidecar.profiles) != _plain(request.profiles):
        return (
            f"engine shapes are {_profiles_text(sidecar.profiles)}; asked for {_profiles_text(request.profiles)}"
        )
    built, asked = _plain(sidecar.build_options), _plain(request.options)
    if built != asked:
        changed = sorted(k for k in set(built) | set(asked) if built.get(k) != asked.get(k))
        detail = ", ".join(f"{k} {built.get(k)!r} -> {asked.get(k)!r}" for k in changed)
        return f"build options changed: {detail}"
    if request.metadata is not None and _plain(sidecar.metadata) != _plain(request.metadata):
        return "the model metadata changed since the engine was built"
    return None


def engine_problem(engine_path: "str | os.PathLike[str]", request: BuildRequest, system: SystemInfo) -> Optional[str]:
    """:func:`reuse_problem` for the engine file at ``engine_path`` (checking that the plan on
    disk is the one its sidecar describes)."""
    engine_path = os.fspath(engine_path)
    if not os.path.isfile(engine_path):
        return "no engine yet"
    try:
        sidecar = read_sidecar(engine_path)
    except EngineMismatch as exc:
        return str(exc)
    problem = reuse_problem(sidecar, request, system)
    if problem:
        return problem
    if os.path.getsize(engine_path) != sidecar.engine_bytes or sha256_file(engine_path) != sidecar.engine_sha256:
        return "the engine file is not the one its sidecar describes (replaced or truncated)"
    return None


def gpu_slug(gpu_name: str) -> str:
    """``"NVIDIA GeForce RTX 3090"`` -> ``"geforce-rtx-3090"``: a file-name-safe GPU name."""
    slug = re.sub(r"[^a-z0-9]+", "-", gpu_name.lower().replace("nvidia", "")).strip("-")
    return slug or "gpu"


def cached_engine_path(onnx_path: "str | os.PathLike[str]", cache_dir: "str | os.PathLike[str]", onnx_sha256: str,
                       system: SystemInfo, precision: str) -> str:
    """Where an engine cache keeps the engine for one ONNX on one system, named by what it
    depends on (as jetson-inference names its cached engines), so a shared cache folder holds
    engines for several TensorRT versions and GPUs side by side."""
    stem = os.path.splitext(os.path.basename(os.fspath(onnx_path)))[0]
    name = (
        f"{stem}.{onnx_sha256[:12]}.{precision}.trt{system.tensorrt_version}."
        f"{gpu_slug(system.gpu_name)}-sm{system.compute_capability.replace('.', '')}.engine"
    )
    return os.path.join(os.fspath(cache_dir), name)
