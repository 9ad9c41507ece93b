"""In-network upsampling: transposed convolutions initialised to bilinear interpolation.

The paper (section 3.3) initialises every deconvolution to bilinear interpolation and learns
the 2x ones; the reference Caffe code froze them all. A dense ``C -> C`` deconvolution whose
weights stay diagonal (class ``c`` only feeds class ``c``) equals a grouped one with one
filter per class, at 1/C of the work, which is what a deployed graph should run.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn


def bilinear_kernel(size: int) -> np.ndarray:
    """The ``size x size`` bilinear interpolation filter of Caffe's ``BilinearFiller``.

    For a stride ``s`` upsampling the kernel is ``2s`` wide; its centre lies between pixels
    for even sizes.
    """
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = np.ogrid[:size, :size]
    return ((1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)).astype(np.float32)


def bilinear_deconv(
    channels: int,
    kernel_size: int,
    stride: int,
    padding: int = 0,
    learnable: bool = True,
    grouped: bool = False,
) -> nn.ConvTranspose2d:
    """A bias-free ``channels -> channels`` transposed convolution set to bilinear upsampling.

    ``grouped=False`` gives the dense layout of the reference nets (weight ``C x C x k x k``,
    diagonal), so their checkpoints load; ``grouped=True`` the per-class form
    (weight ``C x 1 x k x k``). ``learnable=False`` freezes the weight.
    """
    groups = channels if grouped else 1
    deconv = nn.ConvTranspose2d(
        channels, channels, kernel_size, stride=stride, padding=padding, groups=groups, bias=False
    )
    filt = torch.from_numpy(bilinear_kernel(kernel_size))
    with torch.no_grad():
        deconv.weight.zero_()
        for c in range(channels):
            deconv.weight[c, 0 if grouped else c] = filt
    deconv.weight.requires_grad_(learnable)
    return deconv


def is_diagonal(deconv: nn.ConvTranspose2d) -> bool:
    """True when a dense ``C -> C`` deconvolution only maps each channel onto itself."""
    if deconv.groups != 1 or deconv.in_channels != deconv.out_channels:
        return False
    w = deconv.weight.detach()
    eye = torch.eye(w.shape[0], dtype=torch.bool)[:, :, None, None].expand_as(w)
    return bool((w[~eye] == 0).all())


def to_grouped(deconv: nn.ConvTranspose2d) -> nn.ConvTranspose2d:
    """The grouped (one filter per class) equivalent of a diagonal dense deconvolution."""
    if deconv.groups == deconv.in_channels:
        return deconv
    if not is_diagonal(deconv):
        raise ValueError("deconvolution has cross-class weights; its grouped form would differ")
    c = deconv.in_channels
    grouped = nn.ConvTranspose2d(
        c, c, deconv.kernel_size, stride=deconv.stride, padding=deconv.padding, groups=c,
        bias=deconv.bias is not None,
    )
    with torch.no_grad():
        idx = torch.arange(c)
        grouped.weight.copy_(deconv.weight.detach()[idx, idx].unsqueeze(1))
        if deconv.bias is not None:
            grouped.bias.copy_(deconv.bias.detach())
    grouped.weight.requires_grad_(deconv.weight.requires_grad)
    return grouped.to(deconv.weight.device)


def convert_upsampling_to_grouped(model: nn.Module) -> int:
    """Replace, in place, every diagonal dense class-to-class deconvolution by its grouped form.

    Returns how many were replaced. Used before export: outputs are unchanged.
    """
    replaced = 0
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ConvTranspose2d) and child.groups == 1 and is_diagonal(child):
                setattr(parent, name, to_grouped(child))
                replaced += 1
    return replaced
