"""What every dataset shares: the item contract, file reading, and one-line errors.

Datasets are torch-free (numpy, OpenCV, Pillow) so that the same readers serve training
(wrapped in a torch ``DataLoader`` by the training code) and accuracy evaluation of an ONNX
model on a machine without torch.

An item is ``(image, label)``: ``image`` H x W x 3 uint8 RGB, ``label`` H x W int64 class
indices with ``ignore_index`` where a pixel has no label. A transform, when given, is called
as ``transform(image, label, rng)`` with a ``numpy.random.Generator`` seeded from
``(seed, epoch, index)``, so an item's augmentation depends on neither the worker that loads
it nor the order of loading: a resumed run sees exactly the augmentations of an
uninterrupted one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from PIL import Image

from ..errors import FcnDeployError

PathLike = Union[str, Path]
RGB = Tuple[int, int, int]
Transform = Callable[[np.ndarray, np.ndarray, np.random.Generator], Tuple[np.ndarray, np.ndarray]]


def read_rgb_image(path: PathLike) -> np.ndarray:
    """Read an image file as H x W x 3 uint8 RGB.

    EXIF orientation is ignored on purpose: label maps carry none, and rotating the image
    alone would misalign it with its label.
    """
    image = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise FcnDeployError(f"cannot read image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_index_png(path: PathLike) -> np.ndarray:
    """Read a label image as its stored integer values (class indices), as int64.

    A palette ('P' mode) PNG stores indices plus a colour table. OpenCV expands it to
    colours, which would silently turn class 1 into (128, 0, 0); Pillow returns the indices
    themselves, so every label goes through Pillow. Colour label images are rejected: they
    would need a colour-to-class table that the dataset does not have.
    """
    try:
        with Image.open(path) as image:
            mode = image.mode
            if mode not in ("P", "L", "I", "I;16", "I;16B", "1"):
                raise FcnDeployError(
                    f"label image {path} is mode {mode!r} (colours); expected a single-channel "
                    "or palette PNG of class indices"
                )
            label = np.asarray(image)
    except FcnDeployError:
        raise
    except (OSError, ValueError) as error:
        raise FcnDeployError(f"cannot read label image {path}: {error}") from error
    return label.astype(np.int64)


def require_dir(path: Path, what: str) -> Path:
    """Return ``path`` if it is a directory, else fail with one line saying what belongs there."""
    if not path.is_dir():
        raise FcnDeployError(f"{what}: expected a directory at {path}")
    return path


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` if it is a file, else fail with one line saying what belongs there."""
    if not path.is_file():
        raise FcnDeployError(f"{what}: expected a file at {path}")
    return path


def read_list_file(path: Path) -> List[str]:
    """Non-empty, stripped lines of a text file (split lists, class lists)."""
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


class SegmentationDataset:
    """Base class: a sequence of ``(image, label)`` items with class names and palette.

    Subclasses set ``classes``, ``palette``, ``ignore_index`` (and optionally
    ``class_weights``) and implement :meth:`load` and :meth:`__len__`.
    """

    classes: List[str] = []
    palette: List[RGB] = []
    ignore_index: int = 255
    # Per-class loss weights that ship with the dataset (CamVid's SegNet weights), else None.
    class_weights: Optional[List[float]] = None

    def __init__(self, split: str, transform: Optional[Transform] = None, seed: int = 0) -> None:
        self.split = split
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentations of ``epoch`` (items are augmented per seed, epoch, index)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        """The untransformed item ``index``: (H x W x 3 uint8 RGB, H x W int64)."""
        raise NotImplementedError

    def name(self, index: int) -> str:
        """A short name of item ``index`` (the file stem), for saving predictions."""
        raise NotImplementedError

    def image_path(self, index: int) -> Optional[str]:
        """The image file of item ``index``, or None where items are not files."""
        return None

    def __getitem__(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        index = self._check_index(index)
        image, label = self.load(index)
        if self.transform is not None:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            image, label = self.transform(image, label, rng)
        return image, label

    def _check_index(self, index: int) -> int:
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {n} items")
        return index

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(split={self.split!r}, items={len(self)}, "
            f"classes={self.num_classes}, ignore_index={self.ignore_index})"
        )


class FilePairDataset(SegmentationDataset):
    """A dataset given as parallel lists of image files and label files."""

    def __init__(
        self,
        image_paths: Sequence[Path],
        label_paths: Sequence[Path],
        split: str,
        transform: Optional[Transform] = None,
        seed: int = 0,
    ) -> None:
        super().__init__(split, transform, seed)
        if len(image_paths) != len(label_paths):
            raise ValueError("image_paths and label_paths differ in length")
        self.image_paths = [Path(p) for p in image_paths]
        self.label_paths = [Path(p) for p in label_paths]

    def __len__(self) -> int:
        return len(self.image_paths)

    def name(self, index: int) -> str:
        return self.image_paths[self._check_index(index)].stem

    def image_path(self, index: int) -> Optional[str]:
        return str(self.image_paths[self._check_index(index)])

    def label_path(self, index: int) -> str:
        return str(self.label_paths[self._check_index(index)])

    def read_label(self, path: Path) -> np.ndarray:
        """Label file to H x W int64 class indices; subclasses remap ids here."""
        return read_index_png(path)

    def load(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        image = read_rgb_image(self.image_paths[index])
        label = self.read_label(self.label_paths[index])
        if label.shape != image.shape[:2]:
            raise FcnDeployError(
                f"label {self.label_paths[index]} is {label.shape[1]}x{label.shape[0]} but image "
                f"{self.image_paths[index]} is {image.shape[1]}x{image.shape[0]}"
            )
        check_label_values(label, self.num_classes, self.ignore_index, self.label_paths[index])
        return image, label


def check_label_values(label: np.ndarray, num_classes: int, ignore_index: int, source: object) -> None:
    """Fail if a label holds a value that is neither a class nor the ignore index.

    Caught here with the file's name rather than as a device-side assert in the loss.
    """
    bad = ((label < 0) | (label >= num_classes)) & (label != ignore_index)
    if bad.any():
        value = int(label[bad][0])
        raise FcnDeployError(
            f"{source}: label value {value} is neither a class index 0..{num_classes - 1} "
            f"nor the ignore index {ignore_index}"
        )


def check_files_exist(paths: Sequence[Path], what: str) -> None:
    """Fail with one line naming the first missing file (and how many are missing)."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise FcnDeployError(f"{what}: missing file {missing[0]}{more}")
