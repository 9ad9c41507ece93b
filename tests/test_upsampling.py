import numpy as np
import pytest
import torch
import torch.nn as nn

from fcn_deploy.models.upsampling import (
    bilinear_deconv,
    bilinear_kernel,
    convert_upsampling_to_grouped,
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
