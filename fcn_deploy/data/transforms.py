"""Joint image/label transforms (numpy + OpenCV), and the one normalisation function.

Every transform is called as ``t(image, label, rng)`` and returns ``(image, label)``:
``image`` H x W x 3 uint8 RGB, ``label`` H x W integer class indices. Randomness comes only
from the ``rng`` argument (a ``numpy.random.Generator``, an int seed, or None for fresh
entropy), never from global state, so a seeded call is reproducible. Images are resampled
bilinearly; labels by nearest neighbour, so they only ever hold ids that were there.

:func:`normalize` is the single place where training and evaluation turn pixels into
network input; the ONNX export folds the same arithmetic into the graph.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from ..errors import FcnDeployError
from ..normalization import Normalization, normalize_pixels

Pair = Tuple[np.ndarray, np.ndarray]
RngLike = Union[np.random.Generator, int, None]
Fill = Union[int, Sequence[float]]


def as_generator(rng: RngLike) -> np.random.Generator:
    """A Generator from a Generator (as is), an int seed, or None (fresh entropy)."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def normalize(image: np.ndarray, normalization: Normalization) -> np.ndarray:
    """``(x[..., order] - mean) / std`` in float32, channels moved first (H x W x 3 -> 3 x H x W).

    ``image`` is RGB in 0..255 (any leading batch dimensions are kept); ``order`` picks the
    channel order the network expects, and ``mean``/``std`` are in that order, in 0..255
    units, as :class:`~fcn_deploy.normalization.Normalization` defines them.
    """
    if image.ndim < 3 or image.shape[-1] != 3:
        raise FcnDeployError(f"normalize expects ... x H x W x 3 RGB pixels, got shape {image.shape}")
    try:
        return normalize_pixels(image, normalization, "RGB")
    except ValueError:
        raise FcnDeployError(f"unknown channel order {normalization.channel_order!r}; expected RGB or BGR") from None


def resize_label(label: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize sampling pixel centres (any integer dtype, exact ids)."""
    h, w = label.shape
    rows = np.minimum(((np.arange(height) + 0.5) * h / height).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * w / width).astype(np.int64), w - 1)
    return label[rows[:, None], cols[None, :]]


def resize_pair(image: np.ndarray, label: np.ndarray, height: int, width: int) -> Pair:
    """Image bilinear, label nearest, both to ``height x width``."""
    if image.shape[:2] == (height, width):
        return image, label
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    return image, resize_label(label, height, width)


def pad_pair(image: np.ndarray, label: np.ndarray, top: int, bottom: int, left: int, right: int,
             fill: Fill, ignore_index: int) -> Pair:
    """Pad the image with ``fill`` and the label with ``ignore_index``: padding is never a class."""
    if top == bottom == left == right == 0:
        return image, label
    value = np.broadcast_to(np.asarray(fill, dtype=image.dtype), (image.shape[2],))
    padded = np.empty((image.shape[0] + top + bottom, image.shape[1] + left + right, image.shape[2]), image.dtype)
    padded[:] = value
    padded[top:top + image.shape[0], left:left + image.shape[1]] = image
    label = np.pad(label, ((top, bottom), (left, right)), constant_values=ignore_index)
    return padded, label


class Compose:
    """Apply transforms in order, all drawing from the same generator."""

    def __init__(self, transforms: Sequence) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: RngLike = None) -> Pair:
        rng = as_generator(rng)
        for transform in self.transforms:
            image, label = transform(image, label, rng)
        return image, label

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class RandomScale:
    """Rescale by a factor drawn uniformly from ``[min_scale, max_scale]``."""

    def __init__(self, min_scale: float = 0.5, max_scale: float = 2.0) -> None:
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: RngLike = None) -> Pair:
        scale = as_generator(rng).uniform(self.min_scale, self.max_scale)
        h, w = label.shape
        return resize_pair(image, label, max(1, round(h * scale)), max(1, round(w * scale)))


class RandomCrop:
    """A random ``height x width`` window; smaller inputs are first padded bottom/right.

    ``fill`` pads the image (0, or the dataset mean in RGB 0..255 so that padding
    normalises to zero); the label is padded with ``ignore_index``.
    """

    def __init__(self, height: int, width: int, ignore_index: int = 255, fill: Fill = 0) -> None:
        self.height, self.width = int(height), int(width)
        self.ignore_index, self.fill = int(ignore_index), fill

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: RngLike = None) -> Pair:
        rng = as_generator(rng)
        h, w = label.shape
        image, label = pad_pair(image, label, 0, max(0, self.height - h), 0, max(0, self.width - w),
                                self.fill, self.ignore_index)
        h, w = label.shape
        top = int(rng.integers(0, h - self.height + 1))
        left = int(rng.integers(0, w - self.width + 1))
        window = (slice(top, top + self.height), slice(left, left + self.width))
        return image[window], label[window]


class RandomHorizontalFlip:
    """Mirror image and label left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = float(p)

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: RngLike = None) -> Pair:
        if as_generator(rng).random() < self.p:
            return np.ascontiguousarray(image[:, ::-1]), np.ascontiguousarray(label[:, ::-1])
        return image, label


class PhotometricJitter:
    """Random brightness, contrast, saturation and hue; the label is untouched.

    Factors are drawn uniformly from ``[1 - x, 1 + x]`` (brightness, contrast, saturation)
    and the hue shift from ``[-hue, hue]`` of a full turn, as torchvision's ColorJitter.
    """

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2,
                 hue: float = 0.02) -> None:
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: RngLike = None) -> Pair:
        rng = as_generator(rng)
        b = rng.uniform(1 - self.brightness, 1 + self.brightness)
        c = rng.uniform(1 - self.contrast, 1 + self.contrast)
        s = rng.uniform(1 - self.saturation, 1 + self.saturation)
        shift = rng.uniform(-self.hue, self.hue)
        x = image.astype(np.float32) * b
        gray = x @ np.array([0.299, 0.587, 0.114], np.float32)
        x = (x - gray.mean()) * c + gray.mean()
        gray = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
        x = np.clip((x - gray) * s + gray, 0, 255)
        if shift != 0:
            hsv = cv2.cvtColor(x / 255.0, cv2.COLOR_RGB2HSV)  # float input: hue in degrees
            hsv[..., 0] = (hsv[..., 0] + 360.0 * shift) % 360.0
            x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0
        return np.clip(np.rint(x), 0, 255).astype(np.uint8), label


class Resize:
    """Resize to ``height x width`` (evaluation at a fixed size)."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = int(height), int(width)

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: RngLike = None) -> Pair:
        return resize_pair(image, label, self.height, self.width)


class CenterCrop:
    """The central ``height x width`` window, padding evenly first where the input is smaller."""

    def __init__(self, height: int, width: int, ignore_index: int = 255, fill: Fill = 0) -> None:
        self.height, self.width = int(height), int(width)
        self.ignore_index, self.fill = int(ignore_index), fill

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: RngLike = None) -> Pair:
        h, w = label.shape
        ph, pw = max(0, self.height - h), max(0, self.width - w)
        image, label = pad_pair(image, label, ph // 2, ph - ph // 2, pw // 2, pw - pw // 2,
                                self.fill, self.ignore_index)
        h, w = label.shape
        top, left = (h - self.height) // 2, (w - self.width) // 2
        window = (slice(top, top + self.height), slice(left, left + self.width))
        return image[window], label[window]


class PadToMultiple:
    """Pad bottom/right so height and width are multiples of ``multiple`` (a net's stride)."""

    def __init__(self, multiple: int = 32, ignore_index: int = 255, fill: Fill = 0) -> None:
        self.multiple = int(multiple)
        self.ignore_index, self.fill = int(ignore_index), fill

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: RngLike = None) -> Pair:
        h, w = label.shape
        return pad_pair(image, label, 0, -h % self.multiple, 0, -w % self.multiple, self.fill, self.ignore_index)


class Normalize:
    """Last step of a training pipeline: :func:`normalize` the image, label as int64."""

    def __init__(self, normalization: Normalization) -> None:
        self.normalization = normalization

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: RngLike = None) -> Pair:
        return normalize(image, self.normalization), np.ascontiguousarray(label, dtype=np.int64)


def training_transform(crop: Tuple[int, int], ignore_index: int, normalization: Optional[Normalization] = None,
                       scale: Tuple[float, float] = (0.5, 2.0), jitter: bool = True,
                       fill: Fill = 0) -> Compose:
    """The usual augmentation: jitter, random scale, crop (ignore-padded), flip, then normalise.

    Jitter comes first so that it never alters the crop's padding.
    """
    steps = [PhotometricJitter()] if jitter else []
    steps += [RandomScale(*scale), RandomCrop(crop[0], crop[1], ignore_index, fill), RandomHorizontalFlip()]
    if normalization is not None:
        steps.append(Normalize(normalization))
    return Compose(steps)
