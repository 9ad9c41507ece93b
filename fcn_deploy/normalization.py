"""Input normalisation: what pixel values a model's weights expect.

Kept free of torch and numpy so that the runtime (which never imports torch) and the
ONNX metadata share one definition with training.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Tuple


@dataclass(frozen=True)
class Normalization:
    """``x = (pixel[channel_order] - mean) / std`` with pixels in 0..255.

    ``channel_order`` is the order the network's first layer expects ("RGB" or "BGR");
    ``mean`` and ``std`` are given in that order, in 0..255 units.
    """

    channel_order: str
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Normalization":
        d = json.loads(text)
        return cls(d["channel_order"], tuple(d["mean"]), tuple(d["std"]))


# Caffe VGG16 (the FCN paper's weights): BGR, 0..255, ImageNet mean subtracted, no scaling.
CAFFE_VGG = Normalization("BGR", (104.00698793, 116.66876762, 122.67891434), (1.0, 1.0, 1.0))
# torchvision ImageNet models: RGB, mean/std of ImageNet in 0..1, expressed in 0..255 units.
TORCHVISION_IMAGENET = Normalization(
    "RGB", (0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255, 0.225 * 255)
)
# EfficientNet-Lite (TF release): (x - 127) / 128 on RGB.
EFFICIENTNET_LITE = Normalization("RGB", (127.0, 127.0, 127.0), (128.0, 128.0, 128.0))
