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


# --------------------------------------------------------------------------------------------
# Sub-pixel form: what a CPU runtime should execute
# --------------------------------------------------------------------------------------------
class SubPixelUpsample(nn.Module):
    """A transposed convolution computed as a convolution at input resolution plus a pixel
    shuffle (Shi et al., "Real-Time Single Image and Video Super-Resolution Using an
    Efficient Sub-Pixel Convolutional Neural Network", 2016): exactly the same output.

    Output pixel ``o = s*q + r`` of a stride-``s`` deconvolution sums the kernel taps
    ``t = (r + p) mod s + j*s`` over the input pixels ``q + (r + p) // s - j``: for every phase
    ``r`` a small convolution over the input grid. One convolution with ``s*s`` outputs per
    class holds all phases; :class:`torch.nn.PixelShuffle` (ONNX ``DepthToSpace``, mode CRD)
    interleaves them. For the FCN upsamplers (kernel ``2s``, padding ``s/2``) that is a 3x3
    convolution and no crop.

    Why: a deconvolution runs as a GEMM with a reduction of only C (the number of classes)
    followed by a scatter-add (col2im) over the full-resolution output, the slowest layer in
    ONNX Runtime's CPU provider; the sub-pixel convolution reduces over ``C * 3 * 3`` taps and
    writes each output once (docs/benchmarks.md has the measured gain).
    """

    def __init__(self, deconv: nn.ConvTranspose2d) -> None:
        super().__init__()
        if deconv.output_padding != (0, 0) or deconv.dilation != (1, 1):
            raise ValueError("only deconvolutions without output padding or dilation have a sub-pixel form")
        if len(set(deconv.kernel_size)) != 1 or len(set(deconv.stride)) != 1 or len(set(deconv.padding)) != 1:
            raise ValueError("only square kernels, strides and paddings have a sub-pixel form here")
        k, s, p = deconv.kernel_size[0], deconv.stride[0], deconv.padding[0]
        groups = deconv.groups
        c_in, c_out_g = deconv.weight.shape[:2]
        c_in_g, c_out = c_in // groups, c_out_g * groups
        taps = -(-k // s)  # input pixels that reach one output pixel, per axis
        shift = [(r + p) // s for r in range(s)]  # where phase r's taps start on the input grid
        first = [(r + p) % s for r in range(s)]  # phase r's first kernel tap
        size = max(shift) - min(shift) + taps
        pad_before = taps - 1 - min(shift)
        extra = k - 2 * p - s  # the deconvolution's output is s*I + extra long
        rows_extra = -(-extra // s)
        pad_after = rows_extra + size - 1 - pad_before
        if pad_before < 0 or pad_after < 0:
            raise ValueError(f"kernel {k}, stride {s}, padding {p}: the sub-pixel form would need negative padding")
        self.scale = s
        self.crop = rows_extra * s - extra  # pixels past the deconvolution's output, bottom and right
        self.pad = None if pad_before == pad_after else (pad_before, pad_after, pad_before, pad_after)

        source = deconv.weight.detach()
        padded = source.new_zeros(c_in, c_out_g, taps * s, taps * s)
        padded[:, :, :k, :k] = source
        # (group, in, out, tap_h, tap_w) -> (group, out, in, tap_h, tap_w)
        padded = padded.view(groups, c_in_g, c_out_g, taps * s, taps * s).permute(0, 2, 1, 3, 4)
        weight = source.new_zeros(groups, c_out_g, s, s, c_in_g, size, size)
        for rh in range(s):
            for rw in range(s):
                for jh in range(taps):
                    for jw in range(taps):
                        weight[:, :, rh, rw, :, shift[rh] - jh + pad_before, shift[rw] - jw + pad_before] = (
                            padded[:, :, :, first[rh] + jh * s, first[rw] + jw * s]
                        )
        self.conv = nn.Conv2d(
            c_in, c_out * s * s, size, padding=pad_before if self.pad is None else 0,
            groups=groups, bias=deconv.bias is not None,
        ).to(source.device)
        with torch.no_grad():
            self.conv.weight.copy_(weight.reshape(c_out * s * s, c_in_g, size, size))
            if deconv.bias is not None:
                self.conv.bias.copy_(deconv.bias.detach().repeat_interleave(s * s))
        self.conv.requires_grad_(deconv.weight.requires_grad)
        self.shuffle = nn.PixelShuffle(s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad is not None:
            x = nn.functional.pad(x, self.pad)
        y = self.shuffle(self.conv(x))
        if self.crop:
            y = y[:, :, : y.shape[2] - self.crop, : y.shape[3] - self.crop]
        return y


def convert_upsampling_to_subpixel(model: nn.Module) -> int:
    """Replace, in place, every transposed convolution by its :class:`SubPixelUpsample` form.

    Returns how many were replaced. Used before export: outputs are unchanged (to float
    rounding), so the weights a user trained are the weights that run. A deconvolution the
    sub-pixel form cannot express (output padding, dilation, a non-square kernel) stays as it is.
    """
    replaced = 0
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ConvTranspose2d):
                try:
                    setattr(parent, name, SubPixelUpsample(child))
                except ValueError:
                    continue
                replaced += 1
    return replaced
