"""What a model file is: one table from suffix to kind, the bundled names, and the metadata.

Every command that takes ``--model`` (``run``, ``eval``, ``compare``, ``build``, the
benchmarks) asks this module what the user named, so a suffix that one of them accepts,
every other accepts too, and an engine always defaults to the GPU (jetson-inference's one
function from file extension to model type).

A model is one of three kinds:

* ``checkpoint`` (``.pt``, ``.pth``, ``.ckpt``): a training checkpoint; PyTorch runs it;
* ``onnx`` (``.onnx``): an exported graph; ONNX Runtime runs it (CPU, CUDA or the TensorRT EP);
* ``engine`` (``.engine``, ``.plan``, ``.trt``): a serialized TensorRT plan with its sidecar
  ``NAME.engine.json``; the native TensorRT backend runs it, on a GPU only;
* ``triton`` (``triton://HOST:PORT/NAME``, ``triton+grpc://...``): not a file but a model on a
  Triton Inference Server; :mod:`fcn_deploy.runtime.backends.triton` talks to it.

:func:`read_metadata` reads an ONNX file's or an engine's fcn-deploy metadata without
opening a session or touching a GPU (for the benchmarks' tables, export's next steps, and
tests). Torch-free, like all of :mod:`fcn_deploy.runtime`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Tuple

from ..errors import FcnDeployError
from . import assets
from .assets import BUNDLED_MODELS, bundled_asset
from .metadata import ModelMetadata, has_fcn_deploy_metadata
from .onnx_props import onnx_metadata_props  # noqa: F401  (read_metadata uses it; callers import it from here)

CHECKPOINT = "checkpoint"
ONNX = "onnx"
ENGINE = "engine"
TRITON = "triton"

MODEL_SUFFIXES: Dict[str, str] = {
    ".pt": CHECKPOINT,
    ".pth": CHECKPOINT,
    ".ckpt": CHECKPOINT,
    ".onnx": ONNX,
    ".engine": ENGINE,
    ".plan": ENGINE,
    ".trt": ENGINE,
}
# The kinds the runtime (no PyTorch) can run.
RUNTIME_KINDS = (ONNX, ENGINE, TRITON)
# URL schemes of models on a Triton server (fcn_deploy.runtime.backends.triton.SCHEMES).
TRITON_SCHEMES = ("triton://", "triton+http://", "triton+grpc://")


def is_remote(spec: "str | os.PathLike[str]") -> bool:
    """True when ``spec`` names a model on a Triton server rather than a file."""
    return str(spec).lower().startswith(TRITON_SCHEMES)


def suffixes(*kinds: str) -> Tuple[str, ...]:
    """The suffixes of ``kinds`` (all kinds when none are given), in table order."""
    return tuple(s for s, k in MODEL_SUFFIXES.items() if not kinds or k in kinds)


def _listing(kinds: Tuple[str, ...]) -> str:
    return ", ".join(suffixes(*kinds)) + (" or a triton:// URL" if TRITON in kinds else "")


def model_kind(path: "str | os.PathLike[str]") -> str:
    """``checkpoint``, ``onnx`` or ``engine`` from the file's suffix, ``triton`` for a Triton URL,
    or one clear error."""
    if is_remote(path):
        return TRITON
    suffix = Path(os.fspath(path)).suffix.lower()
    kind = MODEL_SUFFIXES.get(suffix)
    if kind is None:
        raise FcnDeployError(
            f"{os.fspath(path)}: unknown model file type {suffix or '(no suffix)'}; expected one of {_listing(())}"
        )
    return kind


def default_device(kind: str) -> str:
    """Where a model of ``kind`` runs unless told otherwise: an engine only runs on a GPU; a
    Triton model where its server puts it."""
    return "cuda" if kind == ENGINE else "remote" if kind == TRITON else "cpu"


def bundled_checkpoint(name: str) -> Path:
    """Where the bundled model ``name`` (``camvid``) keeps its PyTorch checkpoint."""
    return assets.ASSETS / f"{name}.pt"


def bundled_onnx(name: str) -> Path:
    """Where the bundled model ``name`` keeps its exported ONNX file."""
    return assets.ASSETS / BUNDLED_MODELS[name]


def resolve_model_file(spec: str, kinds: Tuple[str, ...] = RUNTIME_KINDS) -> "Path | str":
    """What ``--model SPEC`` names, as a file of one of ``kinds``.

    ``camvid`` (a bundled model) is its shipped ONNX, or its checkpoint where only that is
    installed and checkpoints are accepted; a path must exist and have a known suffix of one
    of ``kinds``. A Triton URL comes back as it is (a string), where ``kinds`` has ``triton``.
    Every failure is one line that says what to do.
    """
    if is_remote(spec):
        if TRITON not in kinds:
            raise FcnDeployError(f"--model {spec}: this command takes {_listing(kinds)} files, not a Triton URL")
        return str(spec)
    if spec in BUNDLED_MODELS:
        onnx_path, checkpoint = bundled_onnx(spec), bundled_checkpoint(spec)
        if ONNX in kinds and onnx_path.is_file():
            return onnx_path
        if CHECKPOINT in kinds and checkpoint.is_file():
            return checkpoint
        return bundled_asset(BUNDLED_MODELS[spec])  # raises, saying how to make it
    path = Path(spec).expanduser()
    suffix = path.suffix.lower()
    if suffix in MODEL_SUFFIXES and MODEL_SUFFIXES[suffix] not in kinds:
        if MODEL_SUFFIXES[suffix] == CHECKPOINT:
            raise FcnDeployError(
                f"--model {spec}: the runtime runs exported models ({_listing(RUNTIME_KINDS)}) or a bundled one "
                f"({', '.join(BUNDLED_MODELS)}); export a checkpoint first with "
                f"`fcn-deploy export --model {spec} --output model.onnx`"
            )
        raise FcnDeployError(f"--model {spec}: this command takes {_listing(kinds)} files")
    if not path.is_file():
        if path.is_dir():
            raise FcnDeployError(f"--model {spec} is a folder; give a model file ({_listing(kinds)})")
        raise FcnDeployError(
            f"model file not found: {spec} (give a {_listing(kinds)} file, or {', '.join(BUNDLED_MODELS)} for the bundled model)"
        )
    model_kind(path)  # an unknown suffix is refused here, not deep in a backend
    return path


def read_metadata(path: "str | os.PathLike[str]") -> ModelMetadata:
    """The fcn-deploy metadata of an ONNX file (its ``metadata_props``) or of an engine (its
    sidecar), without opening a session. A checkpoint's needs PyTorch
    (:func:`fcn_deploy.training.checkpoint.load_checkpoint`)."""
    path = os.fspath(path)
    kind = model_kind(path)
    if not os.path.isfile(path):
        raise FcnDeployError(f"model file not found: {path}")
    if kind == ENGINE:
        from .engine_cache import read_sidecar

        sidecar = read_sidecar(path)
        if not sidecar.metadata:
            raise FcnDeployError(f"{path}: its sidecar carries no fcn-deploy model metadata")
        return ModelMetadata.from_dict(sidecar.metadata, path)
    if kind != ONNX:
        raise FcnDeployError(f"{path} is a checkpoint: its metadata needs PyTorch (fcn-deploy export it first)")
    props = onnx_metadata_props(path)
    if not has_fcn_deploy_metadata(props):
        raise FcnDeployError(f"{path} carries no fcn-deploy metadata; export it with `fcn-deploy export`")
    return ModelMetadata.from_props(props, path)


