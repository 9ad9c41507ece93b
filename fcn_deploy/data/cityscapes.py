"""Cityscapes fine annotations, mapped from the 34 label ids to the 19 train ids.

Expected layout (the official leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip)::

    ROOT/leftImg8bit/{train,val,test}/CITY/CITY_SEQ_FRAME_leftImg8bit.png
    ROOT/gtFine/{train,val,test}/CITY/CITY_SEQ_FRAME_gtFine_labelIds.png

Label ids that are not among the 19 evaluated classes (and the test split's dummy labels)
become 255, the ignore index, exactly as cityscapesScripts' ``trainId`` column does.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import FcnDeployError
from .base import FilePairDataset, PathLike, Transform, check_files_exist, read_index_png, require_dir

CITYSCAPES_CLASSES = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
]
CITYSCAPES_PALETTE = [
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
]
# Label id of each train id 0..18 (cityscapesScripts helpers/labels.py).
CITYSCAPES_EVAL_IDS = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
CITYSCAPES_IGNORE_INDEX = 255


def label_id_to_train_id() -> np.ndarray:
    """A 256-entry lookup table: label id -> train id, 255 for everything not evaluated."""
    table = np.full(256, CITYSCAPES_IGNORE_INDEX, dtype=np.int64)
    for train_id, label_id in enumerate(CITYSCAPES_EVAL_IDS):
        table[label_id] = train_id
    return table


class Cityscapes(FilePairDataset):
    """Cityscapes gtFine: 19 classes, 255 ignored."""

    classes = CITYSCAPES_CLASSES
    palette = CITYSCAPES_PALETTE
    ignore_index = CITYSCAPES_IGNORE_INDEX

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        transform: Optional[Transform] = None,
        seed: int = 0,
    ) -> None:
        root = require_dir(Path(root), "Cityscapes root (leftImg8bit/ and gtFine/)")
        image_dir = require_dir(root / "leftImg8bit" / split, f"Cityscapes {split} images")
        label_dir = require_dir(root / "gtFine" / split, f"Cityscapes {split} fine labels")
        images = sorted(image_dir.glob("*/*_leftImg8bit.png"))
        if not images:
            raise FcnDeployError(f"Cityscapes {split}: no CITY/*_leftImg8bit.png under {image_dir}")
        labels = [
            label_dir / p.parent.name / p.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png")
            for p in images
        ]
        check_files_exist(labels, f"Cityscapes {split}")
        super().__init__(images, labels, split, transform, seed)
        self._train_ids = label_id_to_train_id()

    def read_label(self, path: Path) -> np.ndarray:
        label_ids = read_index_png(path)
        if label_ids.min() < 0 or label_ids.max() > 255:
            raise FcnDeployError(f"{path}: label ids outside 0..255; expected a *_gtFine_labelIds.png")
        return self._train_ids[label_ids]
