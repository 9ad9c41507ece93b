"""Input normalisation: what pixel values a model's weights expect, and the one numpy
function that applies it.

Free of torch (numpy is imported by :func:`normalize_pixels` alone), so that the runtime
(which never imports torch), the training data pipeline, the ONNX metadata and the exported
graph's folded pre-processing (:class:`fcn_deploy.converters.deploy_graph.DeployGraph`) share one
definition.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Tuple


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


def normalize_pixels(pixels: Any, normalization: Normalization, pixel_order: str) -> Any:
    """``... x H x W x 3`` pixels (0..255, channels in ``pixel_order``, "RGB" or "BGR") ->
    normalised float32 ``... x 3 x H x W``.

    Cast, reorder the channels to the network's order, subtract the mean, divide by the
    standard deviation, move the channels first: the operations, in the order and precision,
    of the pre-processing the exporter folds into a graph, so both give identical values.
    """
    import numpy as np

    order, given = normalization.channel_order.upper(), pixel_order.upper()
    if order not in ("RGB", "BGR") or given not in ("RGB", "BGR"):
        raise ValueError(f"unknown channel order {normalization.channel_order!r} or {pixel_order!r}; expected RGB or BGR")
    x = np.asarray(pixels).astype(np.float32)
    if order != given:
        x = x[..., ::-1]
    x = (x - np.asarray(normalization.mean, dtype=np.float32)) / np.asarray(normalization.std, dtype=np.float32)
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))
