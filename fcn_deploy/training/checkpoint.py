"""Checkpoints: one dict format that training writes and export, eval and runtime read.

A checkpoint is a ``torch.save``'d dict::

    {"format": "fcn-deploy-checkpoint", "model_name", "num_classes", "model_options",
     "model_state", "classes", "palette", "ignore_index", "dataset", "normalization",
     "metrics", "epoch", "recipe", "wall_time_s"}

plus, in a run's ``last.pt``, ``"training_state"``: optimiser, schedule, grad scaler, RNG
states and the position in the epoch, which ``--resume`` needs to continue exactly.
Everything in it is tensors and plain Python values, so it loads with
``torch.load(weights_only=True)``: opening a checkpoint never runs pickled code.

Writes are atomic (temporary file in the same folder, then ``os.replace``): a run killed
mid-save leaves the previous file intact, never a truncated one.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
import torch.nn as nn

from ..errors import FcnDeployError
from ..fileio import atomic_write, write_failure
from ..models.pretrained import CHECKPOINT_FORMAT, load_problem
from ..normalization import Normalization

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
LAST = "last.pt"
BEST = "best.pt"
REQUIRED_KEYS = ("model_name", "num_classes", "model_state")


class CheckpointError(FcnDeployError):
    """A checkpoint is missing, unreadable or not in fcn-deploy's format."""


def atomic_save(obj: Any, path: PathLike) -> None:
    """``torch.save(obj, path)`` so that ``path`` is always either the old or the new file.

    A write that fails (a full disk) is one :class:`CheckpointError` line, not the traceback of
    ``torch.save``'s zip writer; the file at ``path`` is left as it was.
    """
    try:
        atomic_write(path, lambda f: torch.save(obj, f))
    except (OSError, RuntimeError) as exc:  # RuntimeError: torch's zip writer over the OSError
        reason = write_failure(exc)
        if reason is None:  # not a write that failed: what torch says is the message
            raise
        raise CheckpointError(f"cannot write {path}: {reason}") from None


def normalization_to_dict(norm: Normalization) -> Dict[str, Any]:
    d = dataclasses.asdict(norm)
    return {"channel_order": d["channel_order"], "mean": list(d["mean"]), "std": list(d["std"])}


def normalization_from_dict(d: Dict[str, Any]) -> Normalization:
    return Normalization(d["channel_order"], tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]))


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside a DistributedDataParallel (or DataParallel) wrapper."""
    return getattr(model, "module", model)


def make_checkpoint(
    model: nn.Module,
    model_options: Dict[str, Any],
    dataset: Any,
    dataset_name: str,
    metrics: Optional[Dict[str, Any]],
    epoch: int,
    recipe: Dict[str, Any],
    wall_time_s: float,
    training_state: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """The checkpoint dict of ``model`` trained on ``dataset`` (an item-contract dataset)."""
    model = unwrap(model)
    ckpt: Dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "model_name": model.name,
        "num_classes": int(model.num_classes),
        "model_options": dict(model_options),
        "model_state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "classes": list(dataset.classes),
        "palette": [list(map(int, c)) for c in dataset.palette],
        "ignore_index": int(dataset.ignore_index),
        "dataset": dataset_name,
        "normalization": normalization_to_dict(model.normalization),
        "metrics": dict(metrics or {}),
        "epoch": int(epoch),
        "recipe": dict(recipe),
        "wall_time_s": float(wall_time_s),
    }
    if training_state is not None:
        ckpt["training_state"] = training_state
    return ckpt


def load_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Read a fcn-deploy checkpoint onto the CPU, failing with one line if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        raise CheckpointError(f"cannot read checkpoint {path}: {load_problem(str(path), exc)}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a fcn-deploy checkpoint (no format={CHECKPOINT_FORMAT!r})")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
    return ckpt


def build_from_checkpoint(ckpt: Dict[str, Any]) -> nn.Module:
    """Rebuild the network a checkpoint dict describes and load its weights (strict)."""
    from ..models import build_model
    from ..models.pretrained import load_state_dict_checked

    try:
        model = build_model(ckpt["model_name"], int(ckpt["num_classes"]), **dict(ckpt.get("model_options") or {}))
    except KeyError as exc:
        raise CheckpointError(f"checkpoint holds an unknown model: {exc.args[0]}") from None
    except TypeError as exc:
        raise CheckpointError(f"checkpoint's model options do not fit {ckpt['model_name']}: {exc}") from None
    load_state_dict_checked(model, ckpt["model_state"], None, what="checkpoint weights")
    if "normalization" in ckpt:
        model.normalization = normalization_from_dict(ckpt["normalization"])
    return model


def load_checkpoint_model(path: PathLike, device: Union[str, torch.device] = "cpu") -> Tuple[nn.Module, Dict[str, Any]]:
    """``(model in eval mode on device, checkpoint dict)`` for a checkpoint file.

    Needs only torch and the model zoo, so export and eval can use it without the training
    extras (tqdm, matplotlib).
    """
    ckpt = load_checkpoint(path)
    model = build_from_checkpoint(ckpt).to(device).eval()
    return model, ckpt


def resolve_resume(path: PathLike) -> Path:
    """``--resume`` accepts a run folder (its ``last.pt``) or a checkpoint file."""
    path = Path(path)
    if path.is_dir():
        last = path / LAST
        if not last.is_file():
            raise CheckpointError(f"nothing to resume in {path}: no {LAST}")
        return last
    if not path.is_file():
        raise CheckpointError(f"cannot resume: {path} does not exist")
    return path
