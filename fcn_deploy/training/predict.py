"""Label maps from a PyTorch model, one image at a time: the predictor for evaluation.

:func:`fcn_deploy.evaluation.evaluate` takes any ``predict(image_rgb_uint8) -> labels``;
this is the one for checkpoints (and for validation during training). The runtime backends
provide the same for ONNX files and TensorRT engines without torch.
"""
from __future__ import annotations

from typing import Optional, Tuple

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.transforms import normalize
from .checkpoint import unwrap


class TorchPredictor:
    """``predict(image) -> H x W int64 labels`` for an H x W x 3 uint8 RGB image.

    With ``size=(h, w)`` the image is resized to ``h x w`` for the network and the logits are
    resized back bilinearly before the arg-max, so scores are always at label resolution.
    """

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        size: Optional[Tuple[int, int]] = None,
        channels_last: bool = False,
        amp: bool = False,
    ) -> None:
        self.model = model
        self.device = torch.device(device)
        self.size = size
        self.channels_last = channels_last
        self.amp = amp and self.device.type == "cuda"
        self.normalization = unwrap(model).normalization

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        if self.size is not None and (h, w) != tuple(self.size):
            image = cv2.resize(image, (self.size[1], self.size[0]), interpolation=cv2.INTER_LINEAR)
        x = torch.from_numpy(normalize(image, self.normalization))[None].to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, enabled=self.amp):
            logits = self.model(x)
        logits = logits.float()
        if logits.shape[-2:] != (h, w):
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        return logits.argmax(1)[0].cpu().numpy()
