"""Counting a model's work: multiply-accumulates of its convolutions and linear layers.

Forward hooks on ``Conv2d``, ``ConvTranspose2d`` and ``Linear`` read the shapes that one
forward pass at the requested size produces; pooling, activations, additions and biases are
left out, by the usual convention (they are a few percent of a convolutional net's work).
GFLOPs are reported as ``2 x MACs / 1e9``.

A model built under ``torch.device("meta")`` counts as well as a real one: its forward pass
computes shapes only, so even the VGG16 FCNs are counted without allocating or computing a
single weight.
"""
from __future__ import annotations

from typing import List

import torch
import torch.nn as nn


def conv2d_macs(module: nn.Conv2d, output: torch.Tensor) -> int:
    """Each output element is a dot product over ``C_in / groups x k_h x k_w`` inputs."""
    kh, kw = module.kernel_size
    return output.numel() * (module.in_channels // module.groups) * kh * kw


def conv_transpose2d_macs(module: nn.ConvTranspose2d, inp: torch.Tensor) -> int:
    """Each *input* element is scattered through ``C_out / groups x k_h x k_w`` weights.

    Counting by input rather than output is what makes a stride-``s`` deconvolution cost
    ``1/s^2`` of a convolution with the same kernel at the output's size; elements that
    ``padding`` later crops away are still computed, so they count.
    """
    kh, kw = module.kernel_size
    return inp.numel() * (module.out_channels // module.groups) * kh * kw


def linear_macs(module: nn.Linear, inp: torch.Tensor) -> int:
    """``in_features`` MACs for each of the ``out_features`` outputs of each input row."""
    return (inp.numel() // module.in_features) * module.in_features * module.out_features


def count_macs(model: nn.Module, height: int, width: int, channels: int = 3) -> int:
    """Multiply-accumulates of one forward pass of a ``1 x channels x height x width`` input."""
    if height < 1 or width < 1:
        raise ValueError(f"input size must be at least 1x1, not {height}x{width}")
    total: List[int] = [0]

    def hook(module: nn.Module, inputs, output) -> None:
        if isinstance(module, nn.ConvTranspose2d):
            total[0] += conv_transpose2d_macs(module, inputs[0])
        elif isinstance(module, nn.Conv2d):
            total[0] += conv2d_macs(module, output)
        else:
            total[0] += linear_macs(module, inputs[0])

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, channels, height, width, device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total[0]


def count_flops(model: nn.Module, height: int, width: int) -> float:
    """GFLOPs (``2 x MACs / 1e9``) of one forward pass of a batch-1 ``height x width`` image."""
    return 2 * count_macs(model, height, width) / 1e9


def count_parameters(model: nn.Module) -> int:
    """Number of parameters, learnable or frozen (shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters())
