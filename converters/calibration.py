"""Calibration images for INT8 quantisation: real frames, as the camera would deliver them.

``--calib`` takes either a folder of images (read with OpenCV, any of the usual formats) or
``DATASET[:ROOT]``, a dataset that :func:`fcn_deploy.data.build_dataset` knows (its training
split: calibration must not see the images accuracy is reported on). Frames come back BGR
uint8, ``H x W x 3``, all at one size, evenly spread over the source.
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from fcn_deploy.errors import FcnDeployError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
DEFAULT_CALIB_IMAGES = 64


class CalibrationError(FcnDeployError):
    """No usable calibration images."""


def _spread(count: int, limit: int) -> List[int]:
    """``limit`` indices spread evenly over ``range(count)`` (all of them when fewer)."""
    if count <= limit:
        return list(range(count))
    return sorted(set(np.linspace(0, count - 1, limit).round().astype(int).tolist()))


def _fit(frame: np.ndarray, size: Optional[Tuple[int, int]]) -> np.ndarray:
    if size is None or frame.shape[:2] == tuple(size):
        return frame
    h, w = size
    return cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)


def folder_frames(folder: str, limit: int, size: Optional[Tuple[int, int]]) -> List[np.ndarray]:
    files = sorted(
        os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(IMAGE_SUFFIXES)
    )
    if not files:
        raise CalibrationError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in calibration folder {folder}")
    frames = []
    for index in _spread(len(files), limit):
        image = cv2.imread(files[index], cv2.IMREAD_COLOR)
        if image is None:
            raise CalibrationError(f"cannot read calibration image {files[index]}")
        size = size or image.shape[:2]
        frames.append(_fit(image, size))
    return frames


def dataset_frames(spec: str, limit: int, size: Optional[Tuple[int, int]]) -> List[np.ndarray]:
    name, _, root = spec.partition(":")
    try:
        from fcn_deploy.data import build_dataset
    except ImportError as exc:
        raise CalibrationError(f"cannot read dataset {name!r}: {exc}") from None
    try:
        dataset = build_dataset(name, root or None, "train")
    except FcnDeployError as exc:
        raise CalibrationError(f"--calib {spec}: {exc} (give DATASET:ROOT or a folder of images)") from None
    if len(dataset) == 0:
        raise CalibrationError(f"dataset {spec} has no training images")
    frames = []
    for index in _spread(len(dataset), limit):
        image_rgb = dataset[index][0]
        bgr = np.ascontiguousarray(np.asarray(image_rgb, dtype=np.uint8)[..., ::-1])
        size = size or bgr.shape[:2]
        frames.append(_fit(bgr, size))
    return frames


def load_calibration_frames(
    source: str, limit: int = DEFAULT_CALIB_IMAGES, size: Optional[Tuple[int, int]] = None
) -> List[np.ndarray]:
    """Up to ``limit`` BGR uint8 frames from ``source`` (a folder or ``DATASET[:ROOT]``).

    Every frame is resized to ``size`` (H, W), or to the first frame's size when ``size`` is
    None, so they can be batched and their activation ranges compared.
    """
    if limit < 1:
        raise CalibrationError(f"need at least one calibration image, not {limit}")
    if os.path.isdir(source):
        return folder_frames(source, limit, size)
    if os.path.exists(source):
        raise CalibrationError(f"calibration source {source} is a file; give a folder of images or DATASET[:ROOT]")
    if "/" in source.partition(":")[0] or source.startswith("."):
        raise CalibrationError(f"calibration folder not found: {source}")
    return dataset_frames(source, limit, size)


def batch_of(frames: Sequence[np.ndarray]) -> np.ndarray:
    return np.stack(frames, axis=0)
