import numpy as np
import pytest
import torch
import torch.nn as nn

from fcn_deploy.models.upsampling import (
    SubPixelUpsample,
    bilinear_deconv,
    bilinear_kernel,
    convert_upsampling_to_grouped,
    convert_upsampling_to_subpixel,
    is_diagonal,
    to_grouped,
)


def test_bilinear_kernel_4x4_by_hand():
    # Caffe's BilinearFiller for a 2x upsampling: factor 2, centre 1.5.
    row = np.array([0.25, 0.75, 0.75, 0.25], dtype=np.float32)
    np.testing.assert_allclose(bilinear_kernel(4), np.outer(row, row))


def test_bilinear_kernel_odd_size_peaks_at_centre():
    k = bilinear_kernel(3)
    np.testing.assert_allclose(k[1], [0.5, 1.0, 0.5])
    assert k.max() == k[1, 1] == 1.0


def test_bilinear_deconv_interpolates_a_ramp():
    # A 2x bilinear deconvolution (k4, s2, p1) maps a linear ramp to a linear ramp inside.
    up = bilinear_deconv(1, 4, 2, 1)
    x = torch.arange(6, dtype=torch.float32).view(1, 1, 1, 6).expand(1, 1, 6, 6)
    y = up(x)[0, 0, 3]  # an interior row
    np.testing.assert_allclose(np.diff(y[1:-1].detach().numpy()), 0.5, atol=1e-6)


def test_dense_is_diagonal_and_grouped_equals_dense():
    dense = bilinear_deconv(5, 16, 8, 4)
    assert dense.weight.shape == (5, 5, 16, 16) and is_diagonal(dense)
    grouped = to_grouped(dense)
    assert grouped.weight.shape == (5, 1, 16, 16)
    x = torch.randn(2, 5, 7, 9)
    torch.testing.assert_close(grouped(x), dense(x), rtol=0, atol=1e-5)


def test_cross_class_weights_refuse_grouping():
    dense = bilinear_deconv(3, 4, 2)
    with torch.no_grad():
        dense.weight[0, 1] += 0.1
    assert not is_diagonal(dense)
    with pytest.raises(ValueError):
        to_grouped(dense)


def test_convert_in_place_keeps_outputs():
    net = nn.Sequential(nn.Conv2d(3, 4, 1), bilinear_deconv(4, 4, 2, 1), bilinear_deconv(4, 4, 2, 1))
    x = torch.randn(1, 3, 5, 6)
    before = net(x)
    assert convert_upsampling_to_grouped(net) == 2
    torch.testing.assert_close(net(x), before, rtol=0, atol=1e-5)


def test_frozen_upsampling_has_no_gradient():
    assert not bilinear_deconv(3, 4, 2, learnable=False).weight.requires_grad
    assert bilinear_deconv(3, 4, 2, learnable=True).weight.requires_grad


# Kernel, stride, padding, groups: the FCN upsamplers (k = 2s, p = s/2: 2x, 8x, 32x), the
# reference VGG nets' unpadded ones (p = 0) and shapes that need an explicit pad or a crop.
SUBPIXEL_CASES = [
    (4, 2, 1, 1), (16, 8, 4, 1), (16, 8, 4, 6), (64, 32, 16, 6),
    (4, 2, 0, 1), (16, 8, 0, 6), (5, 2, 1, 1), (7, 3, 2, 2), (3, 2, 1, 3), (2, 2, 0, 1),
]


@pytest.mark.parametrize("k,s,p,groups", SUBPIXEL_CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_subpixel_form_equals_the_deconvolution(k, s, p, groups, bias):
    torch.manual_seed(k * 100 + s * 10 + p)
    deconv = nn.ConvTranspose2d(6, 12 if groups == 6 else 6, k, s, p, groups=groups, bias=bias)
    subpixel = SubPixelUpsample(deconv)
    assert isinstance(subpixel.shuffle, nn.PixelShuffle)
    for h, w in [(1, 1), (5, 8), (9, 13)]:
        x = torch.randn(2, 6, h, w)
        expected = deconv(x)
        got = subpixel(x)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_subpixel_form_of_an_fcn_upsampler_is_a_3x3_convolution_without_crop():
    # kernel 2s, padding s/2: every phase reads a 2x2 window inside the same 3x3 one.
    subpixel = SubPixelUpsample(bilinear_deconv(11, 16, 8, 4, grouped=True))
    assert subpixel.conv.kernel_size == (3, 3) and subpixel.conv.padding == (1, 1)
    assert subpixel.conv.out_channels == 11 * 64 and subpixel.conv.groups == 11
    assert subpixel.pad is None and subpixel.crop == 0


def test_subpixel_keeps_learnability_and_rejects_what_it_cannot_express():
    frozen = SubPixelUpsample(bilinear_deconv(3, 4, 2, 1, learnable=False))
    assert not frozen.conv.weight.requires_grad
    with pytest.raises(ValueError, match="output padding"):
        SubPixelUpsample(nn.ConvTranspose2d(3, 3, 4, 2, 1, output_padding=1))
    with pytest.raises(ValueError, match="square"):
        SubPixelUpsample(nn.ConvTranspose2d(3, 3, (4, 2), 2, 1))


def test_convert_upsampling_to_subpixel_leaves_what_it_cannot_express():
    model = nn.Sequential(nn.ConvTranspose2d(3, 3, (4, 2), 2, 1), bilinear_deconv(3, 4, 2, 1))
    assert convert_upsampling_to_subpixel(model) == 1
    assert isinstance(model[0], nn.ConvTranspose2d) and isinstance(model[1], SubPixelUpsample)


def test_convert_upsampling_to_subpixel_replaces_every_deconvolution():
    from onnx_helpers import small_model

    model = small_model("fcn8s_resnet18", 5)  # scorers that respond to the image
    x = torch.randn(1, 3, 70, 94)
    with torch.no_grad():
        for m in model.modules():  # non-bilinear weights, so a wrong phase would show
            if isinstance(m, nn.ConvTranspose2d):
                m.weight.add_(torch.randn_like(m.weight) * 0.1)
        expected = model(x)
        assert expected.abs().mean() > 0.1
        assert convert_upsampling_to_subpixel(model) == 3
        assert not any(isinstance(m, nn.ConvTranspose2d) for m in model.modules())
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4)
