"""FCN-8s on ResNet-18/34/50: the edge nets of jetson-inference's segNet.

The backbone is torchvision's ResNet (v1.5: the stride of a bottleneck sits on its 3x3
convolution) written out here, because torchvision is an optional dependency. Its parameter
names are exactly torchvision's (``conv1``, ``bn1``, ``layer1`` ... ``layer4`` with
``conv1/bn1/conv2/bn2[/conv3/bn3]`` and ``downsample.0/1``), so an ImageNet file from
``download.pytorch.org`` loads with no renaming table: only its classifier ``fc.*`` is
dropped and the rest moves under ``backbone.``.

The skip head is :class:`~fcn_deploy.models.skip_fcn.SkipFCN`: ``layer2`` (stride 8) plays
the paper's pool3, ``layer3`` (stride 16) its pool4 and ``layer4`` (stride 32) its fc7.
Arbitrary input sizes are handled there: the input is padded to a multiple of 32 and the
logits are cropped back, so the output is ``H x W`` for every ``H, W >= 1``.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Mapping, Optional, Set, Tuple, Type, Union

import torch
import torch.nn as nn

from ..normalization import TORCHVISION_IMAGENET
from .pretrained import load_pretrained, strip_and_prefix
from .skip_fcn import SkipFCN

# torchvision's ImageNet files by their names in fcn_deploy.models.weight_files.
IMAGENET_WEIGHTS = {18: "resnet18-imagenet", 34: "resnet34-imagenet", 50: "resnet50-imagenet"}


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and an identity shortcut (ResNet-18/34)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, as in torchvision's v1.5), 1x1 expand by 4."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


Block = Type[Union[BasicBlock, Bottleneck]]

# depth -> (block, blocks per stage), as in the ResNet paper's table 1.
ARCHS: Dict[int, Tuple[Block, List[int]]] = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
}


class ResNetBackbone(nn.Module):
    """torchvision's ResNet without ``avgpool``/``fc``, returning the stride 8/16/32 features.

    ``width`` divides every channel count (1 = the real net); larger values give tiny nets
    for fast tests. The parameter names do not depend on it.
    """

    def __init__(self, depth: int, width: int = 1):
        super().__init__()
        if depth not in ARCHS:
            raise ValueError(f"ResNet depth must be one of {sorted(ARCHS)}, not {depth}")
        if width < 1:
            raise ValueError(f"width divisor must be >= 1, not {width}")
        block, layers = ARCHS[depth]
        self.depth = depth
        planes = [max(1, p // width) for p in (64, 128, 256, 512)]
        self.inplanes = planes[0]
        self.conv1 = nn.Conv2d(3, self.inplanes, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, planes[0], layers[0], 1)
        self.layer2 = self._make_layer(block, planes[1], layers[1], 2)
        self.layer3 = self._make_layer(block, planes[2], layers[2], 2)
        self.layer4 = self._make_layer(block, planes[3], layers[3], 2)
        self.out_channels = {
            "pool3": planes[1] * block.expansion,
            "pool4": planes[2] * block.expansion,
            "fc7": planes[3] * block.expansion,
        }
        # torchvision's initialisation, for training from scratch.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        pool3 = self.layer2(x)
        pool4 = self.layer3(pool3)
        fc7 = self.layer4(pool4)
        return {"pool3": pool3, "pool4": pool4, "fc7": fc7}


def _is_counter(key: str) -> bool:
    # BatchNorm's step counter: absent from older torchvision files, and never needed.
    return key.endswith("num_batches_tracked")


class ResNetFCN(SkipFCN):
    """:class:`SkipFCN` over a :class:`ResNetBackbone`, able to read torchvision's files."""

    normalization = TORCHVISION_IMAGENET

    def __init__(self, depth: int, num_classes: int, variant: str = "8s",
                 learnable_upsampling: bool = True, dropout: float = 0.0, width: int = 1):
        super().__init__(ResNetBackbone(depth, width), num_classes, variant, learnable_upsampling, dropout)
        self.depth = depth
        self.backbone_name = f"resnet{depth}"

    def imagenet_weights(self) -> str:
        """torchvision's ImageNet file for this depth, by its name in :mod:`fcn_deploy.models.weight_files`."""
        return IMAGENET_WEIGHTS[self.depth]

    def adapt_pretrained(self, state_dict: Mapping[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], Set[str]]:
        """Map a torchvision ResNet file (or a whole-net state dict of this model) to our keys.

        A file whose keys already start with ``backbone.`` is this model's own layout and
        must cover the whole net; otherwise it is read as torchvision's ImageNet layout:
        ``fc.*`` is dropped, the rest is prefixed with ``backbone.``, and every backbone
        tensor is required (BatchNorm step counters excepted).
        """
        own = self.state_dict()
        if any(k.startswith("backbone.") for k in state_dict):
            return dict(state_dict), {k for k in own if not _is_counter(k)}
        mapped = strip_and_prefix(state_dict, ("fc.",), "backbone.")
        required = {k for k in own if k.startswith("backbone.") and not _is_counter(k)}
        return mapped, required


def _build(depth: int, num_classes: int, variant: str = "8s", learnable_upsampling: bool = True,
           dropout: float = 0.0, width: int = 1, pretrained: Optional[str] = None) -> ResNetFCN:
    model = ResNetFCN(depth, num_classes, variant, learnable_upsampling, dropout, width)
    model.name = f"fcn8s_resnet{depth}"  # the registered name, also for other variants
    if pretrained:
        load_pretrained(model, pretrained)
    return model


def fcn8s_resnet18(num_classes: int, **options) -> ResNetFCN:
    """FCN-8s on ResNet-18 (options: variant, learnable_upsampling, dropout, width, pretrained)."""
    return _build(18, num_classes, **options)


def fcn8s_resnet34(num_classes: int, **options) -> ResNetFCN:
    """FCN-8s on ResNet-34 (options as :func:`fcn8s_resnet18`)."""
    return _build(34, num_classes, **options)


def fcn8s_resnet50(num_classes: int, **options) -> ResNetFCN:
    """FCN-8s on ResNet-50 (options as :func:`fcn8s_resnet18`)."""
    return _build(50, num_classes, **options)


# This family's part of the zoo (merged by :mod:`fcn_deploy.models.zoo`).
RESNET_MODELS: Dict[str, Callable[..., nn.Module]] = {
    "fcn8s_resnet18": fcn8s_resnet18,
    "fcn8s_resnet34": fcn8s_resnet34,
    "fcn8s_resnet50": fcn8s_resnet50,
}
