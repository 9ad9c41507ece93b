"""Shift-and-stitch equals filter rarefaction (paper section 3.2), on toy nets and a VGG16 FCN trunk."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.nn.modules.utils import _pair

from fcn_deploy.models import build_model
from fcn_deploy.models.shift_stitch import ShiftAndStitch, rarefy

TOL = dict(rtol=1e-5, atol=1e-5)


def toy_net(padding: int = 1, ceil_mode: bool = True, strided_conv: bool = False) -> nn.Sequential:
    """Two stride-2 layers (total stride 4) with 3x3 convolutions before, between and after:
    the first a max pool (or a 3x3 stride-2 convolution), the second a max pool."""
    torch.manual_seed(0)
    first = (nn.Conv2d(4, 4, 3, stride=2, padding=padding) if strided_conv
             else nn.MaxPool2d(2, 2, ceil_mode=ceil_mode))
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=padding), nn.ReLU(), first,
        nn.Sequential(nn.Conv2d(4, 5, 3, padding=padding), nn.ReLU()),  # nested, flattened
        nn.MaxPool2d(2, 2, ceil_mode=ceil_mode), nn.Conv2d(5, 3, 3, padding=padding),
    ).eval()


def vgg_trunk() -> nn.Sequential:
    """fcn32s_vgg16's image -> score_fr chain (stride 32) at 1/16 width, non-zero weights."""
    model = build_model("fcn32s_vgg16", 3, width=16).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / (p[0].numel() if p.dim() > 1 else 1) ** 0.5)
    return model.coarse_score_net()


@pytest.mark.parametrize("factor", [2, 4])
@pytest.mark.parametrize("ceil_mode,strided_conv", [(True, False), (False, False), (False, True)])
def test_shift_and_stitch_equals_rarefaction_on_toy_nets(factor, ceil_mode, strided_conv):
    net = toy_net(1, ceil_mode, strided_conv)
    stitched, dense = ShiftAndStitch(net, factor), rarefy(net, factor)
    for hw in [(13, 17), (16, 16), (20, 9), (9, 8)]:
        x = torch.randn(2, 3, *hw)
        with torch.no_grad():
            a, b, coarse = stitched(x), dense(x), net(x)
        assert a.shape == b.shape
        assert torch.allclose(a, b, **TOL), (hw, (a - b).abs().max())  # every pixel, borders too
        # The dense map refines the coarse one: its phase (0, 0) is the coarse map.
        assert torch.allclose(b[:, :, ::factor, ::factor], coarse, **TOL)


def test_rarefaction_removes_the_last_strides_and_dilates_later_filters():
    net = toy_net()
    r2, r4 = rarefy(net, 2), rarefy(net, 4)
    convs2 = [m for m in r2 if isinstance(m, nn.Conv2d)]
    assert [m.dilation for m in convs2] == [(1, 1), (1, 1), (2, 2)]  # only after the last pool
    assert [m.padding for m in convs2] == [(1, 1), (1, 1), (2, 2)]
    pools4 = [m for m in r4 if isinstance(m, nn.MaxPool2d)]
    assert [m.stride for m in pools4] == [1, 1]
    assert [_pair(m.dilation) for m in pools4] == [(1, 1), (2, 2)]
    assert [m.dilation for m in r4 if isinstance(m, nn.Conv2d)] == [(1, 1), (2, 2), (4, 4)]
    assert net[2].stride == 2  # the original is untouched
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert net(x).shape[2:] == (4, 4)
        assert r2(x).shape[2:] == (8, 8) and r4(x).shape[2:] == (16, 16)


@pytest.mark.parametrize("factor", [2, 4])
def test_input_shifts_equal_rarefaction_on_an_unpadded_net(factor):
    # The paper's literal form (shift the image) is exact when no padding meets the border.
    net = toy_net(padding=0)
    for hw in [(29, 33), (40, 27)]:
        x = torch.randn(1, 3, *hw)
        with torch.no_grad():
            assert torch.allclose(ShiftAndStitch(net, factor, mode="input")(x), rarefy(net, factor)(x), **TOL)


@pytest.mark.parametrize("factor,band", [(2, 4), (4, 8)])
def test_input_shifts_differ_from_rarefaction_only_near_the_top_left_border(factor, band):
    net = toy_net(padding=1)
    x = torch.randn(1, 3, 45, 50)
    with torch.no_grad():
        a, b = ShiftAndStitch(net, factor, mode="input")(x), rarefy(net, factor)(x)
    assert a.shape == b.shape
    assert not torch.allclose(a, b, **TOL)  # the border band does differ...
    assert torch.allclose(a[:, :, band:, band:], b[:, :, band:, band:], **TOL)  # ...nothing else
    assert torch.allclose(a[:, :, ::factor, ::factor], b[:, :, ::factor, ::factor], **TOL)  # unshifted phase


@pytest.mark.parametrize("factor", [2, 4])
def test_on_the_fcn32s_vgg16_score_trunk(factor):
    # Stride 32 -> 16 (pool5 loses its stride) or 8 (pool4 and pool5), with ceil-mode pools.
    trunk = vgg_trunk()
    x = torch.randn(1, 3, 70, 45)
    with torch.no_grad():
        coarse = trunk(x)
        a, b = ShiftAndStitch(trunk, factor)(x), rarefy(trunk, factor)(x)
    assert a.shape == b.shape
    assert a.shape[2] > factor * (coarse.shape[2] - 1) and a.shape[3] > factor * (coarse.shape[3] - 1)
    assert b.abs().max() > 1e-3
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
    assert torch.allclose(b[:, :, ::factor, ::factor], coarse, rtol=1e-4, atol=1e-4)


def test_unsupported_factor_or_layer_is_refused():
    with pytest.raises(ValueError, match="factor 3"):
        rarefy(toy_net(), 3)
    with pytest.raises(ValueError, match="factor 8"):
        ShiftAndStitch(toy_net(), 8)
    with pytest.raises(ValueError, match="AvgPool2d"):
        rarefy(nn.Sequential(nn.Conv2d(3, 3, 3), nn.AvgPool2d(2)), 2)
    net = toy_net()
    x = torch.randn(1, 3, 9, 9)
    with torch.no_grad():
        assert torch.equal(ShiftAndStitch(net, 1)(x), net(x))
