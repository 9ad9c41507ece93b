"""The per-pixel multinomial logistic loss of the paper, with its two variations.

* Class weights, e.g. median-frequency balancing (:mod:`fcn_deploy.data.class_weights`;
  the training loop computes them, see :func:`fcn_deploy.training.initialization.class_weights_for`).
* Loss sampling (paper section 4.4): patchwise training is equivalent to restricting the
  loss to a random subset of output cells. Each cell of the final layer (``cell`` x ``cell``
  pixels of the upsampled output, 32 for a stride-32 net) is kept with probability ``p``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

REDUCTIONS = ("mean", "sum")


def sampling_mask(
    shape: Tuple[int, int, int],
    p: float,
    cell: int = 32,
    device: Optional[torch.device] = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """A boolean ``N x H x W`` mask keeping each ``cell x cell`` block with probability ``p``."""
    n, h, w = shape
    gh, gw = -(-h // cell), -(-w // cell)
    keep = torch.rand((n, gh, gw), generator=generator, device=device) < p
    keep = keep.repeat_interleave(cell, dim=1).repeat_interleave(cell, dim=2)
    return keep[:, :h, :w]


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int,
    class_weights: Optional[torch.Tensor] = None,
    reduction: str = "mean",
    sample_p: float = 1.0,
    cell: int = 32,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Cross-entropy over ``N x C x H x W`` logits and ``N x H x W`` integer labels.

    ``reduction="sum"`` is the paper's unnormalised loss (a sum over every counted pixel, so the
    gradient grows with the image and the learning rate must be tiny); ``"mean"`` divides by the
    (class-weighted) number of counted pixels, as in ``torch.nn.CrossEntropyLoss``.

    With ``sample_p < 1`` each output cell is dropped with probability ``1 - sample_p``. The
    summed loss is rescaled by ``1 / sample_p`` so that its expectation equals the full loss;
    the mean loss is a mean over the kept pixels and needs no rescaling.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, not {reduction!r}")
    if not 0.0 < sample_p <= 1.0:
        raise ValueError(f"loss sampling probability must be in (0, 1], not {sample_p}")
    logits = logits.float()  # the loss in fp32 even under autocast
    per_pixel = F.cross_entropy(logits, target, reduction="none", ignore_index=ignore_index)
    valid = target != ignore_index
    if class_weights is not None:
        safe = torch.where(valid, target, torch.zeros_like(target))
        weight = class_weights.to(logits.device, logits.dtype)[safe] * valid
        per_pixel = per_pixel * weight
    else:
        weight = valid.to(logits.dtype)
    if sample_p < 1.0:
        keep = sampling_mask(tuple(target.shape), sample_p, cell, target.device, generator)
        per_pixel = per_pixel * keep
        weight = weight * keep
    if reduction == "sum":
        total = per_pixel.sum()
        return total / sample_p if sample_p < 1.0 else total
    # Mean over counted pixels; an all-ignored batch gives a zero loss that still backpropagates.
    return per_pixel.sum() / weight.sum().clamp_min(1e-12)
