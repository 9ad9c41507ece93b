"""The paper's staged training (section 4.2): FCN-16s from a trained FCN-32s, FCN-8s from FCN-16s.

A model family takes part by declaring its nets' ``variant`` (``"32s"``, ``"16s"`` or
``"8s"``: the stride of the last score map that the net upsamples to the input) and by naming
its layers as the paper does, so that a finer net holds every layer of a coarser one under the
same name and shape (the trunk, ``score_fr`` and, from FCN-16s on, ``score_pool4`` and
``upscore2``) and adds zero-initialised skip scorers. Copying the shared tensors then makes the
finer net start out computing exactly the coarser net's prediction, up to the final
upsampling. The VGG16 nets and every :class:`~fcn_deploy.models.skip_fcn.SkipFCN` (ResNet,
EfficientNet-Lite0) declare it; the decision never depends on a model's name.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.nn as nn

from .pretrained import PretrainedError

# The output stride of each FCN variant: a smaller stride is a finer net.
STRIDE: Dict[str, int] = {"32s": 32, "16s": 16, "8s": 8}


def staged_variant(model: nn.Module) -> Optional[str]:
    """The FCN variant ``model`` declares, or None if its family takes no part in staged training."""
    variant = getattr(model, "variant", None)
    return variant if variant in STRIDE else None


def _describe(model: nn.Module) -> str:
    name = getattr(model, "name", type(model).__name__)
    variant = staged_variant(model)
    return f"{name} (FCN-{variant})" if variant else name


def init_from_coarser(fine: nn.Module, coarse: nn.Module) -> List[str]:
    """Copy every tensor ``coarse`` shares with ``fine`` (same name and shape) into ``fine``.

    The finer net's new layers keep their initialisation (zero scorers, bilinear upsamplers),
    and it takes the coarser net's input normalisation, which its weights were trained with.
    Raises :class:`PretrainedError` when either net declares no variant, ``coarse`` is finer
    than ``fine``, a shared tensor differs in shape, or nothing is shared. Returns the copied
    keys.
    """
    for net in (fine, coarse):
        if staged_variant(net) is None:
            raise PretrainedError(f"{_describe(net)} declares no FCN variant (32s, 16s or 8s) for staged training")
    if STRIDE[coarse.variant] < STRIDE[fine.variant]:
        raise PretrainedError(f"FCN-{coarse.variant} is not coarser than FCN-{fine.variant}")
    src, dst = coarse.state_dict(), fine.state_dict()
    shared = [k for k in dst if k in src]
    bad = [f"{k} {tuple(src[k].shape)} vs {tuple(dst[k].shape)}" for k in shared if src[k].shape != dst[k].shape]
    if bad:
        raise PretrainedError(
            f"{_describe(coarse)} does not fit {_describe(fine)}: shape mismatch: {', '.join(bad[:3])}")
    if not shared:
        raise PretrainedError(f"{_describe(coarse)} shares no parameters with {_describe(fine)}")
    with torch.no_grad():
        for k in shared:
            dst[k].copy_(src[k])
    fine.normalization = coarse.normalization
    return shared
