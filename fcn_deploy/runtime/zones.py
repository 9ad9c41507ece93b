"""Zones: named polygons of a frame whose class shares are reported on their own.

A robot or a traffic camera acts on "how much of the lane is road" or "is a person in the
crossing", not on the whole frame. ``--zone [STREAM:]NAME=x1,y1,x2,y2,...`` names a polygon:

* three or more points are a polygon, two points the rectangle they span;
* coordinates that all lie in [0, 1] are fractions of the frame's width and height (the zone
  then fits any resolution); otherwise they are pixels;
* ``STREAM:`` limits the zone to one stream of a multi-stream run; without it every stream has it.

A zone is rasterised once per frame size (:meth:`Zone.mask`), at the size of the label maps
that ``--labels-dir`` writes, so its statistics count exactly those pixels.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import FcnDeployError

WHOLE_FRAME = "frame"  # the name events use for the whole frame; no zone may take it
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


class ZoneError(FcnDeployError):
    """A zone or event that cannot be understood."""


@dataclass(frozen=True)
class Zone:
    """A named polygon (``points`` as given: fractions of the frame or pixels) of one stream or all."""

    name: str
    points: Tuple[Tuple[float, float], ...]
    stream: Optional[str] = None

    @property
    def normalised(self) -> bool:
        return all(0.0 <= v <= 1.0 for point in self.points for v in point)

    def polygon(self, height: int, width: int) -> np.ndarray:
        """The vertices in pixels of a ``height x width`` frame, where pixel ``(x, y)`` covers
        ``[x, x + 1) x [y, y + 1)``: pixel coordinates as given, fractions times the size."""
        points = self.points
        if len(points) == 2:  # a rectangle from two corners
            (x1, y1), (x2, y2) = points
            points = ((x1, y1), (x2, y1), (x2, y2), (x1, y2))
        scale = (width, height) if self.normalised else (1.0, 1.0)
        return np.array([[x * scale[0], y * scale[1]] for x, y in points], dtype=np.float64)

    def mask(self, height: int, width: int) -> np.ndarray:
        """``True`` on the pixels of a ``height x width`` frame whose centre lies inside the zone
        (the even-odd rule), so that ``x1,y1,x2,y2`` in pixels is exactly ``labels[y1:y2, x1:x2]``
        and ``0,0,0.5,1`` the left half of any frame."""
        polygon = self.polygon(height, width)
        ys = np.arange(height, dtype=np.float64)[:, None] + 0.5
        xs = np.arange(width, dtype=np.float64)[None, :] + 0.5
        inside = np.zeros((height, width), bool)
        for (x1, y1), (x2, y2) in zip(polygon, np.roll(polygon, -1, axis=0)):
            if y1 == y2:
                continue  # a horizontal edge crosses no row of centres
            rows = (y1 > ys) != (y2 > ys)  # the rows this edge spans
            crossing = x1 + (ys - y1) * (x2 - x1) / (y2 - y1)  # where it meets each row
            inside ^= rows & (xs < crossing)
        return inside

    def applies_to(self, stream: str) -> bool:
        return self.stream is None or self.stream == stream


def parse_zone(text: str) -> Zone:
    """``[STREAM:]NAME=x1,y1,x2,y2,...`` -> :class:`Zone` (the module docstring has the rules)."""
    spec, sep, numbers = text.partition("=")
    if not sep:
        raise ZoneError(f"--zone {text!r}: expected [STREAM:]NAME=x1,y1,x2,y2,...")
    stream, colon, name = spec.strip().rpartition(":")
    stream = stream if colon else None
    if not _NAME.match(name) or (stream is not None and not _NAME.match(stream)):
        raise ZoneError(f"--zone {text!r}: a zone's name (and a stream's) is letters, digits and _.-")
    if name == WHOLE_FRAME:
        raise ZoneError(f"--zone {text!r}: {WHOLE_FRAME!r} means the whole frame; give the zone another name")
    try:
        values = [float(v) for v in numbers.split(",") if v.strip()]
    except ValueError:
        raise ZoneError(f"--zone {text!r}: coordinates must be numbers") from None
    if len(values) % 2 or len(values) < 4:
        raise ZoneError(f"--zone {text!r}: give x,y pairs: two corners of a rectangle or three or more points")
    if any(v < 0 or not np.isfinite(v) for v in values):
        raise ZoneError(f"--zone {text!r}: coordinates must be 0 or more")
    points = tuple(zip(values[0::2], values[1::2]))
    return Zone(name, points, stream)


def parse_zones(texts: Sequence[str], streams: Sequence[str] = ()) -> List[Zone]:
    """Every ``--zone``, checked: names differ within a stream, a named stream exists."""
    zones = [parse_zone(text) for text in texts]
    seen = set()
    for zone in zones:
        if streams and zone.stream is not None and zone.stream not in streams:
            raise ZoneError(f"--zone {zone.stream}:{zone.name}: there is no stream {zone.stream!r} "
                            f"(streams: {', '.join(streams)})")
        for stream in ([zone.stream] if zone.stream else list(streams) or [None]):
            if (stream, zone.name) in seen or (None, zone.name) in seen:
                raise ZoneError(f"--zone {zone.name}: two zones of the same name on one stream")
            seen.add((stream, zone.name))
    return zones


class ZoneMasks:
    """The masks of each stream's zones, made once per frame size."""

    def __init__(self, zones: Sequence[Zone]):
        self.zones = list(zones)
        self._cache: Dict[Tuple[str, str, int, int], np.ndarray] = {}

    def of(self, stream: str) -> List[Zone]:
        return [z for z in self.zones if z.applies_to(stream)]

    def mask(self, zone: Zone, stream: str, height: int, width: int) -> np.ndarray:
        key = (stream, zone.name, height, width)
        if key not in self._cache:
            self._cache[key] = zone.mask(height, width)
        return self._cache[key]
