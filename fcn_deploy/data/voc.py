"""PASCAL VOC 2012 segmentation, and VOC augmented with SBD (the FCN paper's training set).

``voc`` expects the VOC 2012 devkit; ROOT may be the ``VOC2012`` folder itself or any folder
holding ``VOC2012/`` or ``VOCdevkit/VOC2012/``::

    VOC2012/JPEGImages/NAME.jpg
    VOC2012/SegmentationClass/NAME.png          palette PNG: 0..20, 255 = ignore (boundaries)
    VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt

``voc_aug`` expects a ROOT holding both the devkit (as above) and the Semantic Boundaries
Dataset (Hariharan et al. 2011) as its archive unpacks::

    ROOT/VOCdevkit/VOC2012/...                  (or ROOT/VOC2012/...)
    ROOT/benchmark_RELEASE/dataset/cls/NAME.mat GTcls.Segmentation: 0..20, no ignore band
    ROOT/benchmark_RELEASE/dataset/img/NAME.jpg (used only where VOC lacks the image)
    ROOT/benchmark_RELEASE/dataset/{train,val}.txt

Its ``train`` (alias ``train_aug``) split is the usual one: SBD train + SBD val + VOC train,
minus VOC val, using VOC's own annotation where one exists; its ``val`` is VOC val.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import numpy as np

from ..errors import FcnDeployError
from ..palette import voc_colormap
from .base import (
    FilePairDataset,
    PathLike,
    Transform,
    check_files_exist,
    read_index_png,
    read_list_file,
    require_dir,
    require_file,
)

VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
]
VOC_PALETTE = voc_colormap(len(VOC_CLASSES))
VOC_IGNORE_INDEX = 255


def find_voc2012(root: Path) -> Path:
    """The VOC2012 folder under ``root`` (itself, ``VOC2012/`` or ``VOCdevkit/VOC2012/``)."""
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise FcnDeployError(
        f"PASCAL VOC 2012: expected JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/ "
        f"in {root}, {root / 'VOC2012'} or {root / 'VOCdevkit' / 'VOC2012'}"
    )


def read_voc_split(voc: Path, split: str) -> List[str]:
    list_file = voc / "ImageSets" / "Segmentation" / f"{split}.txt"
    return read_list_file(require_file(list_file, f"PASCAL VOC split {split!r}"))


def read_sbd_mat(path: PathLike) -> np.ndarray:
    """Class labels of one SBD ``cls/NAME.mat`` file (``GTcls.Segmentation``) as int64."""
    try:
        from scipy.io import loadmat
    except ImportError as error:
        raise FcnDeployError("reading SBD .mat labels needs scipy: pip install scipy") from error
    try:
        gt = loadmat(str(path))["GTcls"]
        segmentation = gt["Segmentation"][0, 0]
    except (KeyError, ValueError, IndexError, OSError) as error:
        raise FcnDeployError(f"{path}: not an SBD class file (expected struct GTcls.Segmentation)") from error
    return np.asarray(segmentation).astype(np.int64)


class VOCSegmentation(FilePairDataset):
    """PASCAL VOC 2012: 21 classes with background, 255 ignored."""

    classes = VOC_CLASSES
    palette = VOC_PALETTE
    ignore_index = VOC_IGNORE_INDEX

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        transform: Optional[Transform] = None,
        seed: int = 0,
    ) -> None:
        voc = find_voc2012(require_dir(Path(root), "PASCAL VOC root"))
        names = read_voc_split(voc, split)
        images = [voc / "JPEGImages" / f"{n}.jpg" for n in names]
        labels = [voc / "SegmentationClass" / f"{n}.png" for n in names]
        check_files_exist(images + labels, f"PASCAL VOC {split}")
        super().__init__(images, labels, split, transform, seed)


class VOCAugSegmentation(FilePairDataset):
    """VOC 2012 + SBD: the 'train_aug' set (about 10.6k images) and VOC val."""

    classes = VOC_CLASSES
    palette = VOC_PALETTE
    ignore_index = VOC_IGNORE_INDEX

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        transform: Optional[Transform] = None,
        seed: int = 0,
        sbd_root: Optional[PathLike] = None,
    ) -> None:
        root = require_dir(Path(root), "VOC+SBD root")
        voc = find_voc2012(root)
        if split == "val":
            names = read_voc_split(voc, "val")
            images = [voc / "JPEGImages" / f"{n}.jpg" for n in names]
            labels = [voc / "SegmentationClass" / f"{n}.png" for n in names]
        elif split in ("train", "train_aug", "trainaug"):
            sbd = Path(sbd_root) if sbd_root is not None else root / "benchmark_RELEASE" / "dataset"
            require_dir(sbd / "cls", "SBD class labels (benchmark_RELEASE/dataset/cls/*.mat)")
            voc_train = set(read_voc_split(voc, "train"))
            voc_val = set(read_voc_split(voc, "val"))
            sbd_names = set()
            for part in ("train", "val"):
                sbd_names |= set(read_list_file(require_file(sbd / f"{part}.txt", f"SBD split {part!r}")))
            names = sorted((sbd_names | voc_train) - voc_val)
            images, labels = [], []
            for n in names:
                image = voc / "JPEGImages" / f"{n}.jpg"
                images.append(image if image.is_file() else sbd / "img" / f"{n}.jpg")
                # VOC's own annotation is finer (it has the 255 boundary band); SBD fills the rest.
                labels.append(voc / "SegmentationClass" / f"{n}.png" if n in voc_train else sbd / "cls" / f"{n}.mat")
        else:
            raise FcnDeployError(f"voc_aug has no split {split!r}; choose from train (= train_aug), val")
        check_files_exist(images + labels, f"VOC+SBD {split}")
        super().__init__(images, labels, split, transform, seed)

    def read_label(self, path: Path) -> np.ndarray:
        return read_sbd_mat(path) if path.suffix == ".mat" else read_index_png(path)
