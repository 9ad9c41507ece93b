"""The model zoo: one name -> builder table, merged from the families' own tables.

Each family module (:mod:`~fcn_deploy.models.vgg`, :mod:`~fcn_deploy.models.resnet`,
:mod:`~fcn_deploy.models.efficientnet_lite`) exports a plain dict of its builders and imports
nothing from here, so the zoo depends on the families and never the other way round (the
shape of segmentation_models.pytorch's encoder tables). :func:`build_model` is the one way
the CLI, training and export make a network.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Callable, Dict, List, Mapping

import torch.nn as nn

from .efficientnet_lite import EFFICIENTNET_LITE_MODELS
from .resnet import RESNET_MODELS
from .vgg import VGG_MODELS

Builder = Callable[..., nn.Module]


def merge_tables(*tables: Mapping[str, Builder]) -> Dict[str, Builder]:
    """One table from the families' tables; a name that two families claim is a bug."""
    merged: Dict[str, Builder] = {}
    for table in tables:
        twice = sorted(set(merged) & set(table))
        if twice:
            raise ValueError(f"model name(s) in two families: {', '.join(twice)}")
        merged.update(table)
    return merged


# Read-only: the zoo is fixed by the code, never extended at run time.
MODELS: Mapping[str, Builder] = MappingProxyType(merge_tables(VGG_MODELS, RESNET_MODELS, EFFICIENTNET_LITE_MODELS))


def available_models() -> List[str]:
    """Names accepted by :func:`build_model`, sorted."""
    return sorted(MODELS)


def build_model(name: str, num_classes: int = 21, **options) -> nn.Module:
    """Build zoo model ``name`` with ``num_classes`` output channels.

    Every model maps ``N x 3 x H x W`` float input, normalised as ``model.normalization``
    says, to ``N x num_classes x H x W`` logits, for any ``H, W >= 1``. It carries the
    attributes ``name``, ``num_classes`` and ``normalization``.
    """
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}")
    model = MODELS[name](num_classes, **options)
    model.name = name
    return model
