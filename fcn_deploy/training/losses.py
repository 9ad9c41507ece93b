"""The per-pixel multinomial logistic loss of the paper, with its two variations.

* Class weights, e.g. median-frequency balancing (:mod:`fcn_deploy.data.class_weights`;
  the training loop computes them, see :func:`fcn_deploy.training.initialization.class_weights_for`).
* Loss sampling (paper section 4.4): patchwise training is equivalent to restricting the
  loss to a random subset of output cells. Each cell of the final layer (``cell`` x ``cell``
  pixels of the upsampled output, 32 for a stride-32 net) is kept with probability ``p``.

And one addition from later work, for fine-tuning towards the paper's own metric:
:func:`lovasz_softmax` (Berman, Rannen Triki and Blaschko, CVPR 2018), a convex surrogate of
``1 - IU`` per class, averaged over the classes present in the batch. Cross-entropy rewards
every pixel alike, so big classes dominate it; mean IU weighs each class alike, and thin
classes (poles, signs, fences) lose most where the two disagree.
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


def _lovasz_gradient(foreground_sorted: torch.Tensor, total_foreground: torch.Tensor) -> torch.Tensor:
    """The Lovász extension's weights for errors sorted in decreasing order.

    Entry ``i`` is ``J(first i+1 errors) - J(first i errors)``, where ``J`` is the Jaccard loss
    ``1 - |gt ∩ pred| / |gt ∪ pred|`` of the prediction that gets the first errors wrong and
    ``total_foreground`` is ``|gt|``. Every entry is >= 0 (``J`` only grows with more errors).
    """
    intersection = total_foreground - foreground_sorted.cumsum(0)
    union = total_foreground + (1.0 - foreground_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])


def lovasz_softmax(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int, min_error: float = 1e-3
) -> torch.Tensor:
    """The Lovász-softmax loss of ``N x C x H x W`` logits: mean over present classes of ``1 - IU``'s surrogate.

    All pixels of the batch count together (as the dataset's mean IU counts all pixels of the
    split together); a class absent from the batch's labels is left out, so that a batch
    without poles does not push every pole probability to zero. On hard predictions (one-hot
    probabilities) it equals the mean over present classes of ``1 - IU``.

    Errors below ``min_error`` are left out of each class's sort: the loss is a sum of
    error times a weight >= 0 whose weights sum to at most 1, so this changes it by less than
    ``min_error``, and it skips sorting the many pixels a trained net already gets right
    (sorting every pixel for every class doubled a CPU training step at 360x480).
    """
    probs = torch.softmax(logits.float(), dim=1)
    num_classes = probs.shape[1]
    probs = probs.permute(0, 2, 3, 1).reshape(-1, num_classes)
    labels = target.reshape(-1)
    valid = labels != ignore_index
    probs, labels = probs[valid], labels[valid]
    present = torch.bincount(labels, minlength=num_classes)[:num_classes] > 0
    losses = []
    for c in present.nonzero().flatten().tolist():
        foreground = (labels == c).to(probs.dtype)
        errors = (foreground - probs[:, c]).abs()
        counted = errors >= min_error
        errors_sorted, order = torch.sort(errors[counted], descending=True)
        weights = _lovasz_gradient(foreground[counted][order], foreground.sum())
        losses.append(torch.dot(errors_sorted, weights))
    if not losses:  # an all-ignored batch: zero, still part of the graph
        return logits.sum() * 0.0
    return torch.stack(losses).mean()
