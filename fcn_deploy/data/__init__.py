"""Dataset readers and transforms, torch-free (numpy, OpenCV, Pillow).

:func:`build_dataset` is the one way the CLI, training and evaluation open a dataset. An
item is ``(image, label)``: H x W x 3 uint8 RGB and H x W int64 class indices, with the
dataset's ``ignore_index`` where a pixel has no label; a transform maps that pair (see
:mod:`fcn_deploy.data.transforms`). The training code wraps a dataset in a torch
``DataLoader`` itself.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

from ..errors import FcnDeployError
from .base import SegmentationDataset, Transform, read_index_png, read_rgb_image
from .camvid import CamVid
from .cityscapes import Cityscapes
from .class_weights import class_pixel_frequencies, median_frequency_weights
from .folder import ImageMaskFolder
from .synthetic import SyntheticScenes
from .voc import VOCAugSegmentation, VOCSegmentation

_DATASETS: Dict[str, Callable[..., SegmentationDataset]] = {
    "camvid": CamVid,
    "cityscapes": Cityscapes,
    "folder": ImageMaskFolder,
    "synthetic": SyntheticScenes,
    "voc": VOCSegmentation,
    "voc_aug": VOCAugSegmentation,
}


def available_datasets() -> List[str]:
    """Names accepted by :func:`build_dataset`, sorted."""
    return sorted(_DATASETS)


def build_dataset(
    name: str,
    root: Optional[Union[str, Path]],
    split: str,
    transform: Optional[Transform] = None,
    **options,
) -> SegmentationDataset:
    """Open dataset ``name`` at ``root`` (ignored by ``synthetic``), split ``split``.

    ``options`` go to the dataset: ``seed`` (augmentation, and scenes for synthetic) for all;
    ``size``, ``count``, ``ignore_boundaries`` for synthetic; ``ignore_index`` for folder;
    ``sbd_root`` for voc_aug.
    """
    if name not in _DATASETS:
        raise FcnDeployError(f"unknown dataset {name!r}; available: {', '.join(available_datasets())}")
    if root is None and name != "synthetic":
        raise FcnDeployError(f"dataset {name!r} needs a root folder (--root)")
    factory = _DATASETS[name]
    accepted = set(inspect.signature(factory).parameters) - {"root", "split", "transform"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise FcnDeployError(
            f"dataset {name!r} takes no option {unknown[0]!r}; it takes: {', '.join(sorted(accepted))}"
        )
    return factory(root, split, transform, **options)


__all__ = [
    "CamVid",
    "Cityscapes",
    "ImageMaskFolder",
    "SegmentationDataset",
    "SyntheticScenes",
    "VOCAugSegmentation",
    "VOCSegmentation",
    "available_datasets",
    "build_dataset",
    "class_pixel_frequencies",
    "median_frequency_weights",
    "read_index_png",
    "read_rgb_image",
]
