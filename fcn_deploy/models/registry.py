"""The model zoo: a name -> builder table.

Each family module registers its builders with :func:`register_model`; :func:`build_model`
is the one way the CLI, training and export make a network.
"""
from __future__ import annotations

from typing import Callable, Dict, List

import torch.nn as nn

_BUILDERS: Dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register ``fn(num_classes, **options) -> nn.Module`` under ``name``."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is registered twice")
        _BUILDERS[name] = fn
        return fn

    return wrap


def _load_families() -> None:
    # Importing a family module runs its @register_model decorators.
    from . import efficientnet_lite, resnet, vgg  # noqa: F401


def available_models() -> List[str]:
    """Names accepted by :func:`build_model`, sorted."""
    _load_families()
    return sorted(_BUILDERS)


def build_model(name: str, num_classes: int = 21, **options) -> nn.Module:
    """Build zoo model ``name`` with ``num_classes`` output channels.

    Every model maps ``N x 3 x H x W`` float input, normalised as ``model.normalization``
    says, to ``N x num_classes x H x W`` logits, for any ``H, W >= 1``. It carries the
    attributes ``name``, ``num_classes`` and ``normalization``.
    """
    _load_families()
    if name not in _BUILDERS:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(sorted(_BUILDERS))}")
    model = _BUILDERS[name](num_classes, **options)
    model.name = name
    return model
