"""Everything a run sets up before its first step: device, loader workers, the network and its
starting weights, class weights for the loss, and the optimiser.

A new run starts from a pretrained backbone (``--pretrained-backbone``) or, for the paper's
staged training, from a coarser net's checkpoint (``--init-from``); a resumed run takes every
weight from its ``last.pt`` instead (see :mod:`fcn_deploy.training.loop`).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from ..download import Progress
from ..errors import FcnDeployError
from ..models import build_model, load_pretrained
from ..models.pretrained import PretrainedError
from ..models.staged import init_from_coarser
from .checkpoint import build_from_checkpoint, load_checkpoint
from .config import CLASS_WEIGHTS, TrainConfig
from .schedule import LRSchedule

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA where there is one), ``cpu``, ``cuda`` or ``cuda:N``, checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise FcnDeployError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FcnDeployError("--device cuda asked for, but this torch has no usable CUDA device")
    if device.type not in ("cpu", "cuda"):
        raise FcnDeployError(f"training runs on cpu or cuda, not {name!r}")
    return device


def resolve_workers(requested: Optional[int], device: torch.device) -> int:
    """DataLoader workers: as asked, else 0 for CPU training and up to 8 per process on CUDA.

    On CPU the network takes every core: loading and augmenting a batch is a small part of a
    step, and worker processes would take cores from the convolutions. On a GPU the loader is
    the bottleneck, so it gets the host's cores.
    """
    if requested is not None:
        if requested < 0:
            raise FcnDeployError("--workers must be >= 0")
        return requested
    if device.type != "cuda":
        return 0
    per_process = (os.cpu_count() or 2) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(8, per_process - 1))


def build_network(config: TrainConfig, num_classes: int) -> nn.Module:
    """The zoo model the config names, with freshly initialised weights."""
    try:
        return build_model(config.model, num_classes, **config.model_options)
    except KeyError as exc:
        raise FcnDeployError(str(exc.args[0])) from None
    except TypeError as exc:
        raise FcnDeployError(f"model {config.model}: {exc}") from None


def initialise_weights(model: nn.Module, config: TrainConfig, progress: Optional[Progress] = None) -> None:
    """A new run's starting weights: a coarser net's checkpoint if given, else the backbone's
    (``progress`` follows the download of a published file)."""
    if config.init_from:
        init_from_checkpoint(model, config.init_from)
    else:
        load_backbone(model, config.pretrained_backbone, progress)


def init_from_checkpoint(model: nn.Module, path: str) -> int:
    """Staged training (paper section 4.2): start FCN-16s from FCN-32s, FCN-8s from FCN-16s.

    The checkpoint's net is rebuilt and every tensor it shares with ``model`` (same name and
    shape: the backbone, ``score_fr``, and from FCN-16s on ``score_pool4`` and ``upscore2``)
    is copied by :func:`~fcn_deploy.models.staged.init_from_coarser`, for any family whose
    models declare their FCN variant. The new skip scorers keep their zero initialisation, so
    the finer net starts out computing the coarser net's prediction. Returns the number of
    tensors copied.
    """
    ckpt = load_checkpoint(path)
    coarse = build_from_checkpoint(ckpt)
    if int(ckpt["num_classes"]) != model.num_classes:
        raise FcnDeployError(
            f"--init-from {path}: it predicts {ckpt['num_classes']} classes, this run {model.num_classes}"
        )
    try:
        copied = init_from_coarser(model, coarse)
    except PretrainedError as exc:
        raise FcnDeployError(f"--init-from {path}: {exc}") from None
    log.info("initialised %s from %s (%s): %d of %d tensors copied",
             model.name, ckpt["model_name"], path, len(copied), len(model.state_dict()))
    return len(copied)


def load_backbone(model: nn.Module, source: str, progress: Optional[Progress] = None) -> None:
    """Pretrained weights from ``source`` (``imagenet``, a published name such as
    ``fcn32s-caffe``, a path), or none for ``none``."""
    if source in ("none", "", None):
        log.info("training %s from scratch (no pretrained backbone)", model.name)
        return
    try:
        load_pretrained(model, source, progress)
    except FcnDeployError as exc:
        raise FcnDeployError(f"{exc} (or train from scratch with --pretrained-backbone none)") from None
    log.info("loaded pretrained weights into %s from %s", model.name, source)


def class_weights_for(dataset: Any, mode: str) -> Optional[torch.Tensor]:
    """Per-class loss weights: none, the dataset's own, or (square-root) median frequency.

    Median frequency is counted in one pass over the untransformed training labels.
    """
    from ..data.class_weights import class_pixel_frequencies, median_frequency_weights

    if mode == "none":
        return None
    if mode == "dataset":
        if getattr(dataset, "class_weights", None) is None:
            raise FcnDeployError(f"dataset {type(dataset).__name__} ships no class weights; use median-freq")
        weights = np.asarray(dataset.class_weights, dtype=np.float64)
    elif mode in ("median-freq", "sqrt-median-freq"):
        weights = np.asarray(median_frequency_weights(class_pixel_frequencies(dataset)), dtype=np.float64)
        if mode == "sqrt-median-freq":
            weights = np.sqrt(weights)
    else:
        raise FcnDeployError(f"--class-weights must be one of {', '.join(CLASS_WEIGHTS)}, not {mode!r}")
    log.info("class weights: %s", " ".join(f"{c}={w:.3f}" for c, w in zip(dataset.classes, weights)))
    return torch.tensor(weights, dtype=torch.float32)


def freeze_batchnorm(model: nn.Module) -> None:
    """Keep batch-norm statistics and affine parameters fixed (small batches, fine-tuning)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)


def build_optimizer(model: nn.Module, config: TrainConfig, total_iters: int,
                    amp: bool) -> Tuple[torch.optim.SGD, LRSchedule, torch.amp.GradScaler]:
    """SGD with momentum over the trainable parameters, its schedule, and the AMP grad scaler."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    schedule = LRSchedule(optimizer, config.schedule, total_iters, config.poly_power, config.warmup_iters)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    return optimizer, schedule, scaler
