"""Your own data: a folder of images and index-PNG masks with a classes file.

Expected layout::

    ROOT/classes.txt          one class per line, in index order: ``name`` or ``name R G B``
    ROOT/images/STEM.jpg      (or .jpeg / .png)
    ROOT/masks/STEM.png       single-channel or palette PNG of class indices, same stem
    ROOT/train.txt, val.txt   optional split files listing stems, one per line

Split ``all`` means every image when there is no ``all.txt``; any other split needs its
file, so that validation never silently runs on the training images.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

from ..errors import FcnDeployError
from ..palette import voc_colormap
from .base import (
    RGB,
    FilePairDataset,
    PathLike,
    Transform,
    check_files_exist,
    read_list_file,
    require_dir,
    require_file,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def read_classes_file(path: Path) -> Tuple[List[str], List[RGB]]:
    """Class names and palette from ``classes.txt``; classes without a colour get VOC's."""
    names: List[str] = []
    palette: List[RGB] = []
    default = voc_colormap()
    for number, line in enumerate(read_list_file(path), start=1):
        parts = line.split()
        colour = None
        if len(parts) >= 4 and all(p.lstrip("-").isdigit() for p in parts[-3:]):
            colour = tuple(int(p) for p in parts[-3:])
            if not all(0 <= c <= 255 for c in colour):
                raise FcnDeployError(f"{path}:{number}: colour {colour} outside 0..255")
            parts = parts[:-3]
        names.append(" ".join(parts))
        palette.append(colour if colour is not None else default[len(names) - 1])
    if not names:
        raise FcnDeployError(f"{path}: no class names (expected one per line)")
    return names, palette


class ImageMaskFolder(FilePairDataset):
    """Images and index masks from one folder; classes and palette from ``classes.txt``."""

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        transform: Optional[Transform] = None,
        seed: int = 0,
        ignore_index: int = 255,
    ) -> None:
        root = require_dir(Path(root), "image/mask folder root (images/, masks/, classes.txt)")
        image_dir = require_dir(root / "images", "image/mask folder images")
        mask_dir = require_dir(root / "masks", "image/mask folder masks (index PNGs)")
        self.classes, self.palette = read_classes_file(
            require_file(root / "classes.txt", "image/mask folder class names (one per line)")
        )
        self.ignore_index = int(ignore_index)
        by_stem = {p.stem: p for p in sorted(image_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
        split_file = root / f"{split}.txt"
        if split_file.is_file():
            stems = read_list_file(split_file)
            unknown = [s for s in stems if s not in by_stem]
            if unknown:
                raise FcnDeployError(f"{split_file}: no image for stem {unknown[0]!r} in {image_dir}")
        elif split == "all":
            stems = sorted(by_stem)
        else:
            raise FcnDeployError(
                f"image/mask folder: expected split file {split_file} listing image stems "
                "(or use split 'all' for every image)"
            )
        if not stems:
            raise FcnDeployError(f"image/mask folder {split}: no images ({', '.join(IMAGE_SUFFIXES)}) in {image_dir}")
        images = [by_stem[s] for s in stems]
        masks = [mask_dir / f"{s}.png" for s in stems]
        check_files_exist(masks, f"image/mask folder {split} masks")
        super().__init__(images, masks, split, transform, seed)
