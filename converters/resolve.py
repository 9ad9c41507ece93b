"""What the user named, as a network to export: a bundled model, a checkpoint, or a zoo name.

:func:`resolve_model` is the one place that turns ``--model SPEC`` into a PyTorch network plus
what is known about its weights (classes, palette, dataset, mean IU, the checkpoint's
sha256), for ``export``, ``compare``, the benchmarks and the tools alike.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch.nn as nn

from fcn_deploy.errors import FcnDeployError
from fcn_deploy.fileio import sha256_file
from fcn_deploy.models import available_models, build_model
from fcn_deploy.runtime.assets import BUNDLED_MODELS
from fcn_deploy.runtime.model_files import ENGINE, MODEL_SUFFIXES, ONNX, bundled_checkpoint

log = logging.getLogger(__name__)

# What export writes and build builds: files that are no longer PyTorch networks.
EXPORTED_SUFFIXES = tuple(suffix for suffix, kind in MODEL_SUFFIXES.items() if kind in (ENGINE, ONNX))

# Build options that fetch weights; a checkpoint brings its own, so they are dropped.
_WEIGHT_OPTIONS = ("pretrained", "pretrained_backbone")


@dataclass
class ResolvedModel:
    """A network ready to export, with what is known about its weights."""

    model: nn.Module
    spec: str
    num_classes: int
    model_options: Dict[str, Any] = field(default_factory=dict)
    checkpoint: Optional[str] = None
    checkpoint_sha256: Optional[str] = None
    classes: Optional[List[str]] = None
    palette: Optional[List[Tuple[int, int, int]]] = None
    dataset: Optional[str] = None
    mean_iu: Optional[float] = None
    mean_iu_split: Optional[str] = None  # the split mean_iu was measured on ("val", "test")
    recipe: Optional[Dict[str, Any]] = None  # the checkpoint's training recipe (crop, scale range)

    @property
    def trained(self) -> bool:
        return self.checkpoint is not None


def model_from_checkpoint(path: str) -> ResolvedModel:
    """Rebuild the network a fcn-deploy training checkpoint holds and load its weights.

    The checkpoint names the zoo model (``model_name``), ``num_classes`` and the build
    options (``model_options``); ``classes``, ``palette``, ``dataset`` and its measured mean
    IU go into the exported metadata (:func:`measured_mean_iu`).
    """
    from fcn_deploy.training.checkpoint import build_from_checkpoint, load_checkpoint

    state = load_checkpoint(path)
    # The checkpoint brings its own weights: no ImageNet/backbone loading while rebuilding.
    options = {k: v for k, v in dict(state.get("model_options") or {}).items() if k not in _WEIGHT_OPTIONS}
    # build_from_checkpoint also restores the normalisation the weights were trained with.
    model = build_from_checkpoint({**state, "model_options": options})
    num_classes = int(state["num_classes"])
    mean_iu, mean_iu_split = measured_mean_iu(state)
    return ResolvedModel(
        model=model.eval(),
        spec=path,
        num_classes=num_classes,
        model_options=options,
        checkpoint=os.path.abspath(path),
        checkpoint_sha256=sha256_file(path),
        classes=list(state["classes"]) if state.get("classes") else None,
        palette=[tuple(int(v) for v in c) for c in state["palette"]] if state.get("palette") else None,
        dataset=state.get("dataset"),
        mean_iu=mean_iu,
        mean_iu_split=mean_iu_split,
        recipe=dict(state.get("recipe") or {}),
    )


def measured_mean_iu(state: Dict[str, Any]) -> Tuple[Optional[float], Optional[str]]:
    """The mean IU a checkpoint carries and the split it was measured on, or ``(None, None)``.

    Training writes the best validation score under ``metrics`` (split: the recipe's
    ``val_split``); a model trained on train+val has none there, and ``tools/make_bundled_model.py``
    writes its test score under ``test_metrics``. The validation score comes first: it is what
    chose the checkpoint.
    """
    for key, split in (("metrics", (state.get("recipe") or {}).get("val_split") or "val"), ("test_metrics", "test")):
        scores = state.get(key)
        value = scores.get("mean_iu") if isinstance(scores, dict) else None
        if isinstance(value, (int, float)) and value == value:  # nan: not measured
            return float(value), str(split)
    return None, None


def _build(name: str, num_classes: int, options: Dict[str, Any]) -> nn.Module:
    try:
        return build_model(name, num_classes, **options)
    except KeyError:
        raise FcnDeployError(f"unknown model {name!r}; available: {', '.join(available_models())}") from None
    except TypeError as exc:
        raise FcnDeployError(f"bad options {options} for model {name}: {exc}") from None


def resolve_model(spec: str, num_classes: int = 21, **options: Any) -> ResolvedModel:
    """The one place that turns a model name the user typed into a network.

    * ``camvid`` (a bundled model): its checkpoint under ``fcn_deploy/assets``;
    * a path to a fcn-deploy checkpoint;
    * a zoo name (``fcn8s_resnet18`` ...): a freshly initialised network with
      ``num_classes`` classes and build ``options`` -- untrained, with a warning, for trying
      the deployment path before training.
    """
    if spec in BUNDLED_MODELS:
        path = bundled_checkpoint(spec)
        if not path.is_file():
            raise FcnDeployError(
                f"the bundled model {spec!r} is not installed ({path} is missing); train one with "
                "`fcn-deploy train` or pass a checkpoint path"
            )
        resolved = model_from_checkpoint(str(path))
        # Record the bundled name, not this machine's install path: it resolves anywhere.
        resolved.checkpoint = spec
        return resolved
    if os.path.isfile(spec):
        if spec.lower().endswith(EXPORTED_SUFFIXES):
            raise FcnDeployError(
                f"{spec} is an exported model, not a checkpoint: export and compare start from a checkpoint of "
                f"`fcn-deploy train` (or `camvid`); an exported model runs as it is: fcn-deploy run --model {spec}")
        return model_from_checkpoint(spec)
    zoo = available_models()
    if spec in zoo:
        model = _build(spec, num_classes, options)
        log.warning(
            "%s has random weights (no checkpoint given): fine for trying the deployment path, "
            "useless for segmenting anything", spec,
        )
        return ResolvedModel(model=model.eval(), spec=spec, num_classes=num_classes, model_options=dict(options))
    if os.sep in spec or spec.endswith((".pt", ".pth")):
        raise FcnDeployError(f"checkpoint not found: {spec}")
    raise FcnDeployError(
        f"unknown model {spec!r}: not a checkpoint file, a bundled model ({', '.join(BUNDLED_MODELS)}) "
        f"or a zoo name ({', '.join(zoo)})"
    )
