"""Per-frame statistics: how much of the frame (and of each zone) each class covers.

What a robot or a dashboard acts on is a number, not a picture. For every processed frame
and stream :class:`FrameStatistics` makes one record::

    {"stream": "front", "frame": 41, "time": 1.3667, "latency_ms": 38.2,
     "classes": {"Sky": 0.31, "Road": 0.22, ...},
     "zones": {"lane": {"Sky": 0.0, "Road": 0.87, ...}}}

``classes`` maps every class name of the model to the share of the frame's pixels labelled
with it, ``count / pixels`` computed on the label map at the frame's own size, the very map
``--labels-dir`` writes: the shares in the record and those read back from the PNG are the
same numbers. A label outside the model's classes (none, from our exports) counts in the
pixels and in no class. ``zones`` holds the same mapping over each zone's pixels.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import numpy as np

from .zones import Zone, ZoneMasks


def class_fractions(labels: np.ndarray, class_names: Sequence[str], mask: Optional[np.ndarray] = None
                    ) -> Dict[str, float]:
    """The share of ``labels`` (or of its pixels under ``mask``) that each class covers.

    Each share is ``count / total`` as a Python float, the correctly rounded quotient, so
    anyone who counts the same pixels gets the same number; an empty zone is all zeros.
    """
    values = labels[mask] if mask is not None else labels.ravel()
    total = int(values.size)
    counts = np.bincount(values.ravel(), minlength=len(class_names)) if total else np.zeros(len(class_names), int)
    return {name: (int(counts[i]) / total if total else 0.0) for i, name in enumerate(class_names)}


class FrameStatistics:
    """Makes the record of each frame (see the module docstring) for every stream's zones."""

    def __init__(self, class_names: Sequence[str], zones: Sequence[Zone] = ()):
        self.class_names = list(class_names)
        self.masks = ZoneMasks(zones)

    def shares(self, labels: np.ndarray, stream: str = "0") -> Dict[str, Any]:
        """``{"classes": ..., "zones": ...}`` of one label map (``H x W`` class indices)."""
        if labels.ndim != 2:
            raise ValueError(f"a label map is H x W, not {labels.shape}")
        height, width = labels.shape
        zones = {
            zone.name: class_fractions(labels, self.class_names, self.masks.mask(zone, stream, height, width))
            for zone in self.masks.of(stream)
        }
        return {"classes": class_fractions(labels, self.class_names), "zones": zones}

    def record(self, stream: str, frame: int, time: Optional[float], labels: np.ndarray,
               latency_ms: Optional[float]) -> Dict[str, Any]:
        """The JSON-ready record of frame ``frame`` (index from 0) of ``stream``."""
        shares = self.shares(labels, stream)
        return {
            "stream": stream,
            "frame": int(frame),
            "time": None if time is None else round(float(time), 6),
            "latency_ms": None if latency_ms is None else round(float(latency_ms), 3),
            "classes": shares["classes"],
            "zones": shares["zones"],
        }
