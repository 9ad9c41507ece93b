"""Procedural road-like scenes with exact labels, for tests and demos.

Each item is drawn from its own generator seeded by ``(seed, split, index)``, so item ``i``
is the same image on every machine and in every worker, and splits never share a scene.
Classes differ in colour, shape and texture, and every pixel carries noise, so the task is
easy enough that a small net fits it in a few hundred steps yet not solvable by a single
pixel threshold. With ``ignore_boundaries`` the one-pixel band where labels meet is marked
``ignore_index``, as in VOC, so that ignore handling is exercised too.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from ..errors import FcnDeployError
from .base import SegmentationDataset, Transform

SYNTHETIC_CLASSES = ["sky", "road", "disc", "box", "triangle"]
SYNTHETIC_PALETTE = [(70, 130, 180), (128, 64, 128), (220, 20, 60), (0, 160, 0), (250, 200, 0)]
SKY, ROAD, DISC, BOX, TRIANGLE = range(5)
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
_SCENE_TAG = 0x5CE7E  # keeps scene generators apart from the augmentation generators


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int, amplitude: float) -> np.ndarray:
    """Low-frequency noise: a coarse random grid upsampled bilinearly, as a texture."""
    grid = rng.normal(0.0, amplitude, size=(cells, cells)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_LINEAR)


def _colour(rng: np.random.Generator, base: Sequence[float], spread: float) -> np.ndarray:
    return np.clip(np.asarray(base, np.float32) + rng.uniform(-spread, spread, 3), 0, 255)


def make_scene(rng: np.random.Generator, height: int, width: int, ignore_boundaries: bool,
               ignore_index: int) -> Tuple[np.ndarray, np.ndarray]:
    """One scene: sky above a textured road, with 1-4 discs, boxes and triangles on top."""
    image = np.zeros((height, width, 3), np.float32)
    label = np.zeros((height, width), np.int64)
    rows = np.arange(height, dtype=np.float32)[:, None, None]

    horizon = int(rng.integers(int(0.3 * height), int(0.6 * height) + 1))
    top, bottom = _colour(rng, (80, 130, 210), 20), _colour(rng, (170, 200, 240), 15)
    image[:] = top + (bottom - top) * np.clip(rows / max(horizon, 1), 0, 1)
    road = _colour(rng, (95, 90, 100), 20) + _smooth_noise(rng, height, width, 8, 12)[..., None]
    image[horizon:] = road[horizon:]
    label[horizon:] = ROAD
    dash = max(1, width // 64)
    centre = width // 2 + int(rng.integers(-width // 8, width // 8 + 1))
    for y in range(horizon + 2, height, 8):
        image[y:y + 4, centre - dash:centre + dash] = 230.0  # lane marking: texture of road

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    scale = min(height, width)
    for _ in range(int(rng.integers(1, 5))):
        cls = int(rng.integers(DISC, TRIANGLE + 1))
        size = rng.uniform(0.08, 0.25) * scale
        cx, cy = rng.uniform(0, width), rng.uniform(0.15 * height, height)
        mask = np.zeros((height, width), np.uint8)
        if cls == DISC:
            cv2.circle(mask, (int(cx), int(cy)), max(2, int(size)), 1, thickness=-1, lineType=cv2.LINE_8)
            colour = _colour(rng, (200, 40, 40), 30)
            shade = 1.0 - 0.4 * np.clip(np.hypot(xx - cx, yy - cy) / max(size, 1.0), 0, 1)
            texture = colour * shade[..., None]
        elif cls == BOX:
            w, h = size * rng.uniform(0.7, 1.6), size * rng.uniform(0.7, 1.6)
            cv2.rectangle(mask, (int(cx - w), int(cy - h)), (int(cx + w), int(cy + h)), 1, thickness=-1)
            colour = _colour(rng, (40, 170, 60), 30)
            stripes = (((xx + yy) // 4) % 2)[..., None]
            texture = colour * (0.75 + 0.25 * stripes)
        else:
            angle = rng.uniform(0, 2 * np.pi)
            turns = angle + np.arange(3) * 2 * np.pi / 3
            corners = np.stack([cx + 1.3 * size * np.cos(turns), cy + 1.3 * size * np.sin(turns)], axis=1)
            cv2.fillPoly(mask, [np.round(corners).astype(np.int32)], 1, lineType=cv2.LINE_8)
            colour = _colour(rng, (230, 200, 30), 25)
            texture = colour + rng.normal(0, 18, size=(height, width, 1)).astype(np.float32)
        inside = mask.astype(bool)
        image[inside] = texture[inside]
        label[inside] = cls

    image += rng.normal(0.0, 6.0, size=image.shape).astype(np.float32)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    if ignore_boundaries:
        edge = np.zeros((height, width), bool)
        edge[:-1] |= label[:-1] != label[1:]
        edge[:, :-1] |= label[:, :-1] != label[:, 1:]
        label[edge] = ignore_index
    return image, label


class SyntheticScenes(SegmentationDataset):
    """``count`` procedural scenes of ``size`` (height, width) per split; needs no files."""

    classes = SYNTHETIC_CLASSES
    palette = SYNTHETIC_PALETTE
    ignore_index = 255

    def __init__(
        self,
        root: object = None,
        split: str = "train",
        transform: Optional[Transform] = None,
        seed: int = 0,
        size: Tuple[int, int] = (96, 128),
        count: int = 64,
        ignore_boundaries: bool = True,
    ) -> None:
        # ``root`` is accepted (and ignored) so that every dataset is built the same way.
        super().__init__(split, transform, seed)
        if split not in _SPLIT_CODES:
            raise FcnDeployError(f"synthetic has no split {split!r}; choose from {', '.join(_SPLIT_CODES)}")
        height, width = (int(s) for s in size)
        if height < 8 or width < 8 or count < 1:
            raise FcnDeployError(f"synthetic: need size >= 8x8 and count >= 1, got {size} and {count}")
        self.size = (height, width)
        self.count = int(count)
        self.ignore_boundaries = bool(ignore_boundaries)

    def __len__(self) -> int:
        return self.count

    def name(self, index: int) -> str:
        return f"synthetic_{self.split}_{self._check_index(index):05d}"

    def load(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng((self.seed, _SCENE_TAG, _SPLIT_CODES[self.split], index))
        return make_scene(rng, *self.size, self.ignore_boundaries, self.ignore_index)
