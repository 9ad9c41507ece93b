"""Median-frequency class balancing (Eigen and Fergus 2015), as SegNet uses on CamVid.

``weight(c) = median(freq) / freq(c)`` where ``freq(c)`` is the number of pixels of class
``c`` divided by the number of labelled pixels in the images where ``c`` appears. Rare
classes (poles, signs) get weights above 1, so the loss does not ignore them. On CamVid
train this gives weights close to, not equal to, SegNet's published ones (which
:data:`fcn_deploy.data.camvid.CAMVID_CLASS_WEIGHTS` carries as data).
"""
from __future__ import annotations

from typing import List

import numpy as np

from .base import SegmentationDataset


def class_pixel_frequencies(dataset: SegmentationDataset) -> np.ndarray:
    """``freq(c)`` over the untransformed items of ``dataset`` (float64, 0 for absent classes)."""
    n = dataset.num_classes
    class_pixels = np.zeros(n, np.float64)
    image_pixels = np.zeros(n, np.float64)
    for index in range(len(dataset)):
        _, label = dataset.load(index)
        valid = label[(label >= 0) & (label < n)]
        counts = np.bincount(valid, minlength=n).astype(np.float64)
        class_pixels += counts
        image_pixels[counts > 0] += valid.size
    return np.divide(class_pixels, image_pixels, out=np.zeros(n), where=image_pixels > 0)


def median_frequency_weights(frequencies: np.ndarray) -> List[float]:
    """``median(freq) / freq(c)`` over the classes present; absent classes get 0."""
    freq = np.asarray(frequencies, np.float64)
    present = freq > 0
    median = np.median(freq[present]) if present.any() else 0.0
    weights = np.divide(median, freq, out=np.zeros_like(freq), where=present)
    return [float(w) for w in weights]
