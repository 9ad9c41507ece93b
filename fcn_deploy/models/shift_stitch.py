"""Shift-and-stitch and filter rarefaction (paper section 3.2): denser outputs from a coarse net.

A net whose output stride is ``S`` can produce a map ``f`` times denser (stride ``S / f``)
without new weights, in two ways that compute the same numbers:

**Shift-and-stitch** (OverFeat's trick) runs the net on ``f x f`` shifted copies of its
input and interlaces the outputs: the output for shift ``(dy, dx)`` fills the pixels
``(f*m + dy, f*n + dx)`` of the dense map.

**Filter rarefaction** removes the stride of the last strided layers (their strides multiply
to ``f``) and dilates every later filter by the product of the strides removed before it: a ``k x k`` filter
becomes ``f_ij' = f_{i/s, j/s}`` when ``s`` divides ``i`` and ``j``, else 0, i.e. a
convolution with dilation ``s`` (and a pool with dilation ``s``). One pass, no repeated work.

What exactly equals what
------------------------
Write the net as ``D o L o U``: ``U`` the layers before the first stride that is removed,
``L`` that strided layer (stride ``s``) and ``D`` the rest. Two identities hold for every
input size, borders included:

* a stride-1 layer with dilation ``d`` and padding ``d*p`` applied to ``z`` equals the
  original layer applied to each phase ``z[r::d]`` separately (the out-of-range taps of the
  dilated filter are exactly those of the phase's zero padding);
* a stride-``s`` layer ``L`` equals phase 0 of the same layer at stride 1, and phase ``r`` of
  the stride-1 layer equals ``L`` applied to its *padded* input cropped by ``r`` at the top
  (left). A max pool with ``ceil_mode`` (Caffe's rounding, used by the VGG FCNs) keeps its
  extra last window when the stride-1 pool gets ``s - 1`` more rows/columns of ``-inf`` at
  the bottom (right).

Hence :func:`rarefy` (``f`` = product of the removed strides; ``U`` unchanged) equals
:class:`ShiftAndStitch` with ``mode="layerwise"`` exactly: ``U`` runs once, and the shifts
are applied at the input of each removed strided layer in turn (a factor ``s`` at a time,
nested), which is the paper's "repeating this operation layer-by-layer". The interlacing is
the dense map's own grid: dense pixel ``f*m + r`` is the coarse pixel ``m`` computed with the
input shifted by ``r`` steps of ``S / f`` input pixels, so the stitched map lies in the coarse
map's coordinate frame (the same origin, hence the same crop offsets), ``f`` times finer;
its size is the sum of the phases' sizes (about ``f`` times the coarse size).

``mode="input"`` is the paper's wording taken literally: shift the *raw input* and run the
whole net once per shift. For a net of total stride ``S`` one phase of the ``f`` times denser
map is ``S / f`` input pixels, so the shifts are ``(S/f)*dy`` rows and ``(S/f)*dx`` columns
(dropped from the top/left), ``0 <= dy, dx < f``: the paper's ``0 .. f-1`` pixels when
``f = S`` (a dense map at input resolution). It equals rarefaction exactly when no zero
padding precedes or lies between the removed strides (e.g. a net of unpadded convolutions
and pools); with padding, shifting the input moves the image border relative to the
padding, so the two differ within a band along the top and left borders as wide as the
padded layers' reach, and agree everywhere else.

Both run in inference (``eval``) mode: in training, dropout would draw a different mask for
each shift.

Supported layers: ``Conv2d`` (zero padding, integer padding), ``MaxPool2d``, and pointwise
layers (activations, dropout, batch norm, identity); nested ``nn.Sequential`` is flattened.
"""
from __future__ import annotations

import copy
from typing import Callable, Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

POINTWISE = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.Hardswish, nn.Sigmoid, nn.Tanh,
    nn.Dropout, nn.Dropout2d, nn.BatchNorm2d, nn.Identity,
)
SPATIAL = (nn.Conv2d, nn.MaxPool2d)


def _pair(v) -> Tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def flatten(net: nn.Module) -> List[nn.Module]:
    """The leaf layers of ``net`` in order (nested ``Sequential`` containers opened)."""
    if isinstance(net, nn.Sequential):
        return [leaf for child in net for leaf in flatten(child)]
    if isinstance(net, SPATIAL + POINTWISE):
        return [net]
    raise ValueError(f"shift-and-stitch/rarefaction cannot handle a {type(net).__name__} layer")


def _stride(layer: nn.Module) -> int:
    if not isinstance(layer, SPATIAL):
        return 1
    sh, sw = _pair(layer.stride)
    if sh != sw:
        raise ValueError(f"{type(layer).__name__} with unequal strides {sh}x{sw} is not supported")
    return sh


def removed_strides(layers: Sequence[nn.Module], factor: int) -> List[int]:
    """Indices of the last strided layers whose strides multiply to ``factor``, in order.

    These are the strides that rarefaction removes: the output stride drops by ``factor``
    and everything after the first of them runs at the finer resolution.
    """
    if factor < 1:
        raise ValueError(f"factor must be >= 1, not {factor}")
    picked: List[int] = []
    product = 1
    for i in reversed(range(len(layers))):
        if product == factor:
            break
        s = _stride(layers[i])
        if s > 1:
            picked.append(i)
            product *= s
    if product != factor:
        strides = [_stride(m) for m in layers if _stride(m) > 1]
        raise ValueError(f"factor {factor} is not a product of the net's last strides {strides}")
    for i in picked:
        layer = layers[i]
        if isinstance(layer, nn.Conv2d) and (layer.padding_mode != "zeros" or isinstance(layer.padding, str)):
            raise ValueError("strided convolutions must use integer zero padding")
        if isinstance(layer, nn.MaxPool2d) and layer.ceil_mode:
            k, p, dil = _pair(layer.kernel_size)[0], _pair(layer.padding)[0], _pair(layer.dilation)[0]
            if p != 0 or dil * (k - 1) + 1 < _stride(layer):
                # Then PyTorch may drop or add a last window that no stride-1 pool reproduces.
                raise ValueError("a ceil_mode max pool needs padding 0 and a window no smaller than its stride")
    return sorted(picked)


def _dilated(layer: nn.Module, d: int) -> nn.Module:
    """``layer`` (stride 1) with its taps ``d`` times further apart, padding scaled to match."""
    if d == 1 or not isinstance(layer, SPATIAL):
        return layer
    if isinstance(layer, nn.Conv2d) and (isinstance(layer.padding, str) or layer.padding_mode != "zeros"):
        raise ValueError("convolutions must use integer zero padding")
    layer.dilation = tuple(x * d for x in _pair(layer.dilation))
    layer.padding = tuple(x * d for x in _pair(layer.padding))
    return layer


def rarefy(net: nn.Module, factor: int) -> nn.Sequential:
    """Filter rarefaction: a copy of ``net`` whose output is ``factor`` times denser.

    The last strided layers (strides multiplying to ``factor``) get stride 1; each layer
    after a removed stride ``s`` is dilated by ``s`` (times all removed strides before it),
    its padding scaled alike. The weights are copied unchanged. Equals
    ``ShiftAndStitch(net, factor)`` exactly (see the module docstring).
    """
    layers = [copy.deepcopy(m) for m in flatten(net)]
    removed = set(removed_strides(layers, factor))
    out: List[nn.Module] = []
    d = 1
    for i, layer in enumerate(layers):
        if i not in removed:
            out.append(_dilated(layer, d))
            continue
        s = _stride(layer)
        layer.stride = (1, 1) if isinstance(layer, nn.Conv2d) else 1
        layer = _dilated(layer, d)
        if isinstance(layer, nn.MaxPool2d) and layer.ceil_mode:
            # Caffe-style rounding up keeps a last, partial window; at stride 1 it appears
            # when the map gets d * (s - 1) more -inf rows and columns at the bottom/right.
            e = d * (s - 1)
            layer.ceil_mode = False
            out.append(nn.ConstantPad2d((0, e, 0, e), float("-inf")))
        out.append(layer)
        d *= s
    return nn.Sequential(*out)


def _apply_shifted(layer: nn.Module, x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """The strided ``layer`` on its zero (or -inf) padded input cropped by ``dy, dx``."""
    ph, pw = _pair(layer.padding)
    fill = float("-inf") if isinstance(layer, nn.MaxPool2d) else 0.0
    if ph or pw:
        x = F.pad(x, (pw, pw, ph, ph), value=fill)
    x = x[:, :, dy:, dx:]
    if isinstance(layer, nn.Conv2d):
        return F.conv2d(x, layer.weight, layer.bias, layer.stride, 0, layer.dilation, layer.groups)
    return F.max_pool2d(x, layer.kernel_size, layer.stride, 0, layer.dilation, layer.ceil_mode)


def interlace(outputs: Dict[Tuple[int, int], torch.Tensor], s: int) -> torch.Tensor:
    """Stitch the outputs of the ``s x s`` shifts: ``outputs[dy, dx]`` fills ``[dy::s, dx::s]``.

    Shifts whose input was empty (a map smaller than ``s``) are absent; the dense map's
    height is the sum of the phases' heights, likewise its width.
    """
    first = outputs[0, 0]
    height = sum(outputs[dy, 0].shape[2] for dy in range(s) if (dy, 0) in outputs)
    width = sum(outputs[0, dx].shape[3] for dx in range(s) if (0, dx) in outputs)
    out = first.new_empty(first.shape[0], first.shape[1], height, width)
    for (dy, dx), o in outputs.items():
        expected = (len(range(dy, height, s)), len(range(dx, width, s)))
        if tuple(o.shape[2:]) != expected:
            raise RuntimeError(f"shift ({dy}, {dx}) gave {tuple(o.shape[2:])}, expected {expected}")
        out[:, :, dy::s, dx::s] = o
    return out


class ShiftAndStitch(nn.Module):
    """Inference wrapper: ``net``'s output made ``factor`` times denser by shifting its input.

    ``net`` is a chain of layers (an ``nn.Sequential``, e.g. a FCN's
    ``coarse_score_net()``), shared, not copied. ``mode="layerwise"`` (default) shifts at
    each removed strided layer and equals :func:`rarefy` exactly, borders included;
    ``mode="input"`` shifts the raw input by multiples of ``S / factor`` pixels (``S`` the
    net's total stride) and agrees with it away from the top/left borders of padded nets
    (module docstring). Output: the net's map, ``factor`` times denser in each direction.
    """

    def __init__(self, net: nn.Module, factor: int, mode: str = "layerwise") -> None:
        super().__init__()
        if mode not in ("layerwise", "input"):
            raise ValueError(f"mode must be 'layerwise' or 'input', not {mode!r}")
        self.factor = factor
        self.mode = mode
        layers = flatten(net)
        removed = removed_strides(layers, factor)
        self.net = nn.Sequential(*layers)
        total = 1
        for m in layers:
            total *= _stride(m)
        # In "input" mode a phase step of the dense map is this many input pixels.
        self.input_step = total // factor
        bounds = removed + [len(layers)]
        self.head = nn.Sequential(*layers[:bounds[0]])
        self.strided = nn.ModuleList(layers[i] for i in removed)
        self.tails = nn.ModuleList(nn.Sequential(*layers[a + 1:b]) for a, b in zip(bounds, bounds[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.factor == 1:
            return self.net(x)
        if self.mode == "input":
            return self._from_input(x)
        return self._stage(self.head(x), 0)

    def _from_input(self, x: torch.Tensor) -> torch.Tensor:
        # A phase of the dense map is input_step input pixels: shift by multiples of it.
        step = self.input_step

        def run(dy: int, dx: int) -> torch.Tensor:
            return self.net(x[:, :, step * dy:, step * dx:])

        limits = (-(-x.shape[2] // step), -(-x.shape[3] // step))
        return _stitch_shifts(self.factor, run, limits)

    def _stage(self, z: torch.Tensor, j: int) -> torch.Tensor:
        """Shift-and-stitch by the j-th removed stride at its input, the later ones nested."""
        if j == len(self.strided):
            return z
        layer, tail = self.strided[j], self.tails[j]

        def run(dy: int, dx: int) -> torch.Tensor:
            return self._stage(tail(_apply_shifted(layer, z, dy, dx)), j + 1)

        ph, pw = _pair(layer.padding)
        return _stitch_shifts(_stride(layer), run, (z.shape[2] + 2 * ph, z.shape[3] + 2 * pw))


def _stitch_shifts(s: int, run: Callable[[int, int], torch.Tensor], limits: Tuple[int, int]) -> torch.Tensor:
    """``run`` every shift ``0 <= dy, dx < s`` and interlace; a shift of ``limits`` or more
    rows (columns) would leave an empty map, so that phase is empty."""
    outputs = {(dy, dx): run(dy, dx) for dy in range(min(s, limits[0])) for dx in range(min(s, limits[1]))}
    return interlace(outputs, s)
