"""What the training loop feeds on: the datasets a config names, their augmentation, the batches.

The sample order of an epoch depends only on ``(seed, epoch)`` (the sampler) and an item's
augmentation only on ``(seed, epoch, index)`` (the dataset), and the DataLoader draws its
worker seeds from a private generator, so batches are the same however many workers load
them and whether or not the run was resumed.
"""
from __future__ import annotations

from typing import Any, List, Tuple

import torch

from ..errors import FcnDeployError
from .config import TrainConfig


def _rgb_fill(normalization) -> List[float]:
    """The model's mean colour in RGB: padding with it normalises to zero."""
    mean = list(normalization.mean)
    return mean if normalization.channel_order == "RGB" else mean[::-1]


def build_transform(config: TrainConfig, ignore_index: int, normalization) -> Any:
    """The training augmentation the config asks for, ending in the model's normalisation."""
    from ..data.transforms import (
        Compose,
        Normalize,
        PhotometricJitter,
        RandomCrop,
        RandomHorizontalFlip,
        RandomScale,
    )

    steps: List[Any] = []
    if config.jitter:
        steps.append(PhotometricJitter())
    if config.scale_range is not None:
        steps.append(RandomScale(*config.scale_range))
    if config.crop is not None:
        steps.append(RandomCrop(config.crop[0], config.crop[1], ignore_index, _rgb_fill(normalization)))
    if config.flip:
        steps.append(RandomHorizontalFlip())
    steps.append(Normalize(normalization))
    return Compose(steps)


def open_dataset(config: TrainConfig, split: str, transform: Any = None) -> Any:
    """The config's dataset, split ``split``, seeded by the run's seed."""
    from ..data import build_dataset

    return build_dataset(config.dataset, config.root, split, transform, seed=config.seed, **config.dataset_options)


class TensorPairs(torch.utils.data.Dataset):
    """Items as tensors for the DataLoader: ``(3 x H x W float32, H x W int64)``."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        image, label = self.dataset[index]
        return torch.from_numpy(image), torch.from_numpy(label)


def collate(batch: List[Tuple[torch.Tensor, torch.Tensor]]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Stack a batch, or say in one line why images of different sizes cannot be."""
    shapes = {tuple(x.shape) for x, _ in batch}
    if len(shapes) > 1:
        raise FcnDeployError(
            "training images differ in size within a batch; give --crop HxW (or --batch-size 1)"
        )
    return torch.stack([x for x, _ in batch]), torch.stack([y for _, y in batch])


def train_loader(dataset: Any, sampler: Any, batch_size: int, num_workers: int, drop_last: bool,
                 device: torch.device) -> torch.utils.data.DataLoader:
    """One epoch's batches of ``dataset`` in ``sampler``'s order."""
    return torch.utils.data.DataLoader(
        TensorPairs(dataset),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        drop_last=drop_last,
        pin_memory=device.type == "cuda",
        generator=torch.Generator(),  # worker seeds must not consume the global RNG
    )
