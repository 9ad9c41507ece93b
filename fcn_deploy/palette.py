"""The PASCAL VOC colour map: distinct colours for any number of classes.

Dependency-free, so datasets, the exporter and the runtime share it.
"""
from __future__ import annotations

from typing import List, Tuple

RGB = Tuple[int, int, int]


def voc_colormap(n: int = 256) -> List[RGB]:
    """The first ``n`` colours of the VOC map (the bits of the class index interleaved into
    R, G and B), the default palette of a model or dataset that has none of its own."""
    palette = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette.append((r, g, b))
    return palette
