"""The FCN skip architecture (paper section 4.2) on a modern backbone.

A backbone yields features at strides 8, 16 and 32 (the paper's pool3, pool4 and fc7).
Scores from the coarsest are upsampled 2x by a deconvolution, summed with scores from the
next finer feature, and so on; the final 8x deconvolution returns to input resolution
(FCN-8s). FCN-16s and FCN-32s stop earlier.

Arbitrary input sizes: the input is zero-padded (in normalised space, i.e. with the mean
colour) on the bottom and right to a multiple of 32 and the logits are cropped back to
``H x W``. With a multiple of 32 every stride-2 layer halves exactly and every 2x/8x
deconvolution (kernel 2s, stride s, padding s/2) doubles exactly, so the three score maps
align pixel for pixel without the VGG nets' offset crops.
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn as nn
import torch.nn.functional as F

from .staged import STRIDE
from .upsampling import bilinear_deconv

ALIGN = 32


class SkipFCN(nn.Module):
    """FCN-32s/16s/8s head over ``backbone``, whose ``forward`` returns a dict with
    ``"pool3"`` (stride 8), ``"pool4"`` (stride 16) and ``"fc7"`` (stride 32) features and whose
    ``out_channels`` maps those names to channel counts.

    Layer names are the paper's and ``variant`` is declared, so staged training
    (:func:`~fcn_deploy.models.staged.init_from_coarser`) works for every backbone."""

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        variant: str = "8s",
        learnable_upsampling: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if variant not in STRIDE:
            raise ValueError(f"variant must be 32s, 16s or 8s, not {variant!r}")
        self.backbone = backbone
        self.num_classes = num_classes
        self.variant = variant
        ch = backbone.out_channels
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.score_fr = nn.Conv2d(ch["fc7"], num_classes, 1)
        if variant == "32s":
            self.upscore = bilinear_deconv(num_classes, 64, 32, 16, learnable_upsampling)
        else:
            self.score_pool4 = nn.Conv2d(ch["pool4"], num_classes, 1)
            self.upscore2 = bilinear_deconv(num_classes, 4, 2, 1, learnable_upsampling)
            if variant == "16s":
                self.upscore16 = bilinear_deconv(num_classes, 32, 16, 8, learnable_upsampling)
            else:
                self.score_pool3 = nn.Conv2d(ch["pool3"], num_classes, 1)
                self.upscore_pool4 = bilinear_deconv(num_classes, 4, 2, 1, learnable_upsampling)
                self.upscore8 = bilinear_deconv(num_classes, 16, 8, 4, learnable_upsampling)
        # The paper zero-initialises the scoring layers: training starts from "predict nothing".
        for m in (getattr(self, n, None) for n in ("score_fr", "score_pool4", "score_pool3")):
            if m is not None:
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        x = F.pad(x, (0, (-w) % ALIGN, 0, (-h) % ALIGN))
        feats: Dict[str, torch.Tensor] = self.backbone(x)
        score = self.score_fr(self.drop(feats["fc7"]))
        if self.variant == "32s":
            out = self.upscore(score)
        else:
            score = self.upscore2(score) + self.score_pool4(feats["pool4"])
            if self.variant == "16s":
                out = self.upscore16(score)
            else:
                score = self.upscore_pool4(score) + self.score_pool3(feats["pool3"])
                out = self.upscore8(score)
        return out[:, :, :h, :w]
