"""Joint transforms keep image and label aligned and labels valid; normalize is exact."""
from __future__ import annotations

import numpy as np
import pytest

from fcn_deploy.data.transforms import (
    CenterCrop,
    Compose,
    Normalize,
    PadToMultiple,
    PhotometricJitter,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScale,
    Resize,
    normalize,
    training_transform,
)
from fcn_deploy.errors import FcnDeployError
from fcn_deploy.normalization import CAFFE_VGG, EFFICIENTNET_LITE, TORCHVISION_IMAGENET, Normalization


def sample(h: int = 30, w: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    label = np.kron(rng.choice([0, 3, 7, 255], size=(h // 5 + 1, w // 5 + 1)), np.ones((5, 5), np.int64))[:h, :w]
    return image, label


def test_random_crop_pads_label_with_ignore_and_image_with_fill():
    image, label = sample(10, 12)
    out_image, out_label = RandomCrop(16, 20, ignore_index=99, fill=(1, 2, 3))(image, label, 0)
    assert out_image.shape == (16, 20, 3) and out_label.shape == (16, 20)
    # Small inputs are padded bottom/right, so the original sits top-left.
    np.testing.assert_array_equal(out_image[:10, :12], image)
    np.testing.assert_array_equal(out_label[:10, :12], label)
    assert (out_label[10:] == 99).all() and (out_label[:, 12:] == 99).all()
    assert (out_image[10:] == [1, 2, 3]).all() and (out_image[:, 12:] == [1, 2, 3]).all()


def test_random_crop_window_keeps_alignment():
    image, label = sample(30, 40)
    # Encode each pixel's position in the label to check the image comes from the same window.
    label = np.arange(30 * 40).reshape(30, 40)
    image[..., 0] = (label % 256).astype(np.uint8)
    for seed in range(5):
        out_image, out_label = RandomCrop(8, 9)(image, label, seed)
        assert out_label.shape == (8, 9)
        np.testing.assert_array_equal(out_image[..., 0], (out_label % 256).astype(np.uint8))
        top, left = divmod(int(out_label[0, 0]), 40)
        np.testing.assert_array_equal(out_label, label[top:top + 8, left:left + 9])


def test_flip_flips_both():
    image, label = sample()
    out_image, out_label = RandomHorizontalFlip(p=1.0)(image, label, 0)
    np.testing.assert_array_equal(out_image, image[:, ::-1])
    np.testing.assert_array_equal(out_label, label[:, ::-1])
    same_image, same_label = RandomHorizontalFlip(p=0.0)(image, label, 0)
    assert same_image is image and same_label is label


def test_scale_keeps_labels_as_valid_ids():
    image, label = sample()
    for seed in range(6):
        out_image, out_label = RandomScale(0.3, 2.2)(image, label, seed)
        assert out_image.shape[:2] == out_label.shape and out_image.dtype == np.uint8
        assert set(np.unique(out_label)) <= {0, 3, 7, 255}
    out_image, out_label = Resize(60, 80)(image, label)
    np.testing.assert_array_equal(out_label, np.repeat(np.repeat(label, 2, axis=0), 2, axis=1))


def test_center_crop_and_pad_to_multiple():
    image, label = sample(30, 40)
    out_image, out_label = CenterCrop(20, 20)(image, label)
    np.testing.assert_array_equal(out_label, label[5:25, 10:30])
    out_image, out_label = CenterCrop(34, 40, ignore_index=11)(image, label)
    assert (out_label[:2] == 11).all() and (out_label[-2:] == 11).all()
    np.testing.assert_array_equal(out_label[2:32], label)
    out_image, out_label = PadToMultiple(32, ignore_index=11)(image, label)
    assert out_image.shape == (32, 64, 3) and (out_label[30:] == 11).all() and (out_label[:, 40:] == 11).all()
    assert (out_image[30:] == 0).all()


def test_photometric_jitter_is_modest_and_leaves_labels():
    image, label = sample()
    out_image, out_label = PhotometricJitter()(image, label, 3)
    assert out_image.dtype == np.uint8 and out_image.shape == image.shape and out_label is label
    assert not np.array_equal(out_image, image)
    assert np.abs(out_image.astype(int) - image.astype(int)).mean() < 40
    identity, _ = PhotometricJitter(0, 0, 0, 0)(image, label, 3)
    assert np.abs(identity.astype(int) - image.astype(int)).max() <= 1


def test_seeded_pipeline_is_deterministic():
    image, label = sample(40, 50)
    pipeline = training_transform((24, 24), ignore_index=255, normalization=EFFICIENTNET_LITE, scale=(0.5, 1.5))
    a = pipeline(image, label, np.random.default_rng(7))
    b = pipeline(image, label, 7)
    c = pipeline(image, label, 8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert a[0].shape == (3, 24, 24) and a[0].dtype == np.float32 and a[1].dtype == np.int64
    assert isinstance(pipeline, Compose)


@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_normalize_matches_hand_computation(order):
    norm = Normalization(order, (10.0, 20.0, 30.0), (2.0, 4.0, 8.0))
    image = np.zeros((1, 2, 3), np.uint8)
    image[0, 0] = (100, 150, 200)  # R, G, B
    image[0, 1] = (0, 255, 50)
    x = normalize(image, norm)
    assert x.shape == (3, 1, 2) and x.dtype == np.float32
    first = (100, 150, 200) if order == "RGB" else (200, 150, 100)
    second = (0, 255, 50) if order == "RGB" else (50, 255, 0)
    for c in range(3):
        assert x[c, 0, 0] == np.float32((first[c] - norm.mean[c]) / norm.std[c])
        assert x[c, 0, 1] == np.float32((second[c] - norm.mean[c]) / norm.std[c])


@pytest.mark.parametrize("norm", [CAFFE_VGG, TORCHVISION_IMAGENET, EFFICIENTNET_LITE])
def test_normalize_is_exactly_the_float32_formula(norm):
    image, label = sample(6, 7)
    order = [0, 1, 2] if norm.channel_order == "RGB" else [2, 1, 0]
    expected = (image[..., order].astype(np.float32) - np.float32(norm.mean)) / np.float32(norm.std)
    np.testing.assert_array_equal(normalize(image, norm), expected.transpose(2, 0, 1))
    batch = normalize(np.stack([image, image]), norm)
    assert batch.shape == (2, 3, 6, 7) and batch.flags["C_CONTIGUOUS"]
    x, y = Normalize(norm)(image, label.astype(np.uint8))
    np.testing.assert_array_equal(x, expected.transpose(2, 0, 1))
    assert y.dtype == np.int64


def test_normalize_rejects_bad_input():
    with pytest.raises(FcnDeployError, match="H x W x 3"):
        normalize(np.zeros((4, 4), np.uint8), EFFICIENTNET_LITE)
    with pytest.raises(FcnDeployError, match="channel order"):
        normalize(np.zeros((4, 4, 3), np.uint8), Normalization("RGBA", (0, 0, 0), (1, 1, 1)))
