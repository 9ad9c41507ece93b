"""The deployment graph: the network with the camera's pre-processing and the arg-max folded in.

What ``fcn-deploy export`` traces (and what the PyTorch rows of the benchmarks run, so both
time the same work): raw ``N x H x W x 3`` uint8 BGR frames in, ``N x H x W`` uint8 labels
out, each fold optional.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from fcn_deploy.normalization import Normalization

from .onnx_passes import ExportError


class DeployGraph(nn.Module):
    """The network with the camera-side pre-processing and the arg-max folded in.

    ``fold_preprocessing``: input ``N x H x W x 3`` uint8 BGR; the graph casts to float,
    transposes to ``N x 3 x H x W``, reorders channels if the weights want RGB, subtracts the
    mean and divides by the standard deviation -- the same arithmetic on every value as
    :func:`fcn_deploy.runtime.backends.base.normalize_frames`, so the results are identical.
    The Cast comes first because TensorRT's ONNX parser (8.6 on) refuses a uint8 tensor
    anywhere but at the graph's boundary: the uint8 input must feed a Cast directly.
    Transposing before the channel swap makes it and the per-channel constants act on whole
    planes, which ONNX Runtime runs much faster than the same ops broadcast over the
    innermost 3-wide axis of ``N x H x W x 3``.
    ``fold_argmax``: output ``N x H x W`` uint8 class indices instead of ``N x C x H x W`` logits.
    """

    def __init__(self, net: nn.Module, normalization: Normalization, fold_preprocessing: bool, fold_argmax: bool):
        super().__init__()
        self.net = net
        self.fold_preprocessing = fold_preprocessing
        self.fold_argmax = fold_argmax
        order = normalization.channel_order.upper()
        if order not in ("BGR", "RGB"):
            raise ExportError(f"unknown channel order {normalization.channel_order!r}")
        self.to_rgb = order == "RGB"
        self.register_buffer("mean", torch.tensor(normalization.mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(normalization.std, dtype=torch.float32))

    def swap_channels(self, x: torch.Tensor) -> torch.Tensor:
        """BGR -> RGB on ``N x 3 x H x W`` (an index list: one Gather in the exported graph)."""
        return x[:, [2, 1, 0]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fold_preprocessing:
            x = x.to(torch.float32).permute(0, 3, 1, 2)
            if self.to_rgb:
                x = self.swap_channels(x)
            x = (x - self.mean[:, None, None]) / self.std[:, None, None]
        y = self.net(x)
        if self.fold_argmax:
            # Through float: TensorRT casts to uint8 only from float32/float16, not from the
            # integer index type of ArgMax.
            y = y.argmax(dim=1).to(torch.float32).to(torch.uint8)
        return y
