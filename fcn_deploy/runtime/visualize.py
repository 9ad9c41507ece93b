"""Drawing a label map over a frame: overlay, mask or side by side, with a legend and a HUD.

Everything per frame is a handful of whole-image OpenCV/numpy calls (a lookup table for the
colours, one blend, one resize), so rendering stays a small fraction of a CPU frame time and
the pipeline's rendering thread never becomes the bottleneck. What can be computed once (the
palette lookup tables, the legend panel) is.

Class filters: ``classes`` keeps only those classes coloured, ``ignore`` leaves those out
(e.g. VOC's background or CamVid's sky). A class that is not drawn shows the camera pixel in
the overlay and black in the mask.

Upscaling: when the network ran on a smaller copy of the frame, its label map is brought
back to the frame's size either ``nearest`` (hard class edges, exact labels) or ``linear``
(the colours are interpolated, so edges are smooth rather than blocky; labels themselves are
never interpolated, which would invent classes between two indices).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..errors import FcnDeployError

MODES = ("overlay", "mask", "side-by-side")
UPSCALING = ("nearest", "linear")
RGB = Tuple[int, int, int]


@dataclass
class HudStats:
    """What the heads-up display shows: end-to-end FPS and latencies in milliseconds, after
    the stream's name when several streams run."""

    fps: float = 0.0  # 0 until measured: a rate needs two frames
    latency_ms: float = 0.0
    inference_ms: float = 0.0
    title: str = ""

    def text(self) -> str:
        """The HUD's line; ``--`` for the FPS until there is a rate to show (the first frame
        of a stream has none, and "0.0 FPS" would read as a stalled pipeline)."""
        fps = f"{self.fps:5.1f}" if self.fps > 0 else f"{'--':>5}"
        text = f"{fps} FPS  latency {self.latency_ms:4.0f} ms  model {self.inference_ms:4.0f} ms"
        return f"[{self.title}] {text}" if self.title else text


@dataclass
class VisualOptions:
    """How to draw. ``alpha`` is the weight of the class colour in the overlay (0..1)."""

    mode: str = "overlay"
    alpha: float = 0.5
    upscale: str = "nearest"
    legend: bool = True
    hud: bool = True
    classes: Optional[Sequence[str]] = None  # names or indices to draw; None = all
    ignore: Sequence[str] = field(default_factory=tuple)  # names or indices never drawn

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise FcnDeployError(f"unknown visualisation mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.upscale not in UPSCALING:
            raise FcnDeployError(f"unknown upscaling {self.upscale!r}; choose nearest or linear")
        if not 0.0 <= self.alpha <= 1.0:
            raise FcnDeployError(f"--alpha must be between 0 and 1, not {self.alpha}")


def resolve_classes(selection: Sequence[str], names: Sequence[str], option: str = "--classes") -> List[int]:
    """Class names or indices (as strings or ints) -> sorted indices; a clear error for unknown ones."""
    lookup = {name.lower(): i for i, name in enumerate(names)}
    indices = set()
    for item in selection:
        text = str(item).strip()
        if not text:
            continue
        if text.isdigit():
            index = int(text)
            if index >= len(names):
                raise FcnDeployError(f"{option}: class index {index} is out of range (the model has {len(names)} classes)")
            indices.add(index)
        elif text.lower() in lookup:
            indices.add(lookup[text.lower()])
        else:
            raise FcnDeployError(f"{option}: unknown class {text!r}; the model's classes are {', '.join(names)}")
    return sorted(indices)


class Visualizer:
    """Renders label maps for one model's classes and palette (RGB, as the metadata carries it)."""

    def __init__(self, class_names: Sequence[str], palette: Sequence[RGB], options: Optional[VisualOptions] = None):
        self.options = options or VisualOptions()
        self.class_names = [str(n) for n in class_names]
        num_classes = len(self.class_names)
        if len(palette) < num_classes:
            raise FcnDeployError(f"palette has {len(palette)} colours for {num_classes} classes")
        drawn = set(range(num_classes))
        if self.options.classes is not None:
            drawn = set(resolve_classes(self.options.classes, self.class_names, "--classes"))
        drawn -= set(resolve_classes(self.options.ignore, self.class_names, "--ignore-class"))
        self.drawn = sorted(drawn)
        # 256-entry tables: any uint8 label indexes them, out-of-range labels come out black.
        self._colour_lut = np.zeros((256, 3), np.uint8)
        for index in self.drawn:
            r, g, b = palette[index]
            self._colour_lut[index] = (b, g, r)  # frames are BGR
        self._colour_table = self._colour_lut.reshape(256, 1, 3).copy()
        self._drawn_lut = np.zeros(256, np.uint8)
        self._drawn_lut[self.drawn] = 255
        self._filtered = len(self.drawn) < num_classes
        self._legend_cache: dict = {}

    # -- pieces ------------------------------------------------------------------------------
    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """``H x W`` uint8 labels -> ``H x W x 3`` BGR colours (undrawn classes black).

        ``cv2.LUT`` on the label map seen as three equal channels: one pass, no Python-level
        indexing, and it releases the GIL while the inference thread runs.
        """
        labels = np.ascontiguousarray(labels, dtype=np.uint8)
        return cv2.LUT(cv2.cvtColor(labels, cv2.COLOR_GRAY2BGR), self._colour_table)

    def _resize(self, image: np.ndarray, size: Tuple[int, int], linear: bool) -> np.ndarray:
        if image.shape[1] == size[0] and image.shape[0] == size[1]:
            return image
        return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR if linear else cv2.INTER_NEAREST)

    def upscale_labels(self, labels: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
        """Labels to ``size`` (width, height), always nearest: indices are never interpolated."""
        return self._resize(labels, size, linear=False)

    def colour_and_weight(self, labels: np.ndarray, size: Tuple[int, int]):
        """Colour image at ``size`` and, when classes are filtered, the per-pixel weight (0..255)
        of the colour (``None`` when every class is drawn)."""
        linear = self.options.upscale == "linear"
        if not linear:
            labels = self.upscale_labels(labels, size)
        colour = self._resize(self.colorize(labels), size, linear)
        weight = None
        if self._filtered:
            weight = self._resize(cv2.LUT(np.ascontiguousarray(labels, dtype=np.uint8), self._drawn_lut), size, linear)
        return colour, weight

    def overlay(self, frame: np.ndarray, colour: np.ndarray, weight: Optional[np.ndarray]) -> np.ndarray:
        alpha = self.options.alpha
        blended = cv2.addWeighted(frame, 1.0 - alpha, colour, alpha, 0.0)
        if weight is None:
            return blended
        if self.options.upscale == "nearest":
            out = frame.copy()
            cv2.copyTo(blended, weight, out)
            return out
        w = weight.astype(np.float32)[..., None] * (1.0 / 255.0)
        return (frame + (blended.astype(np.float32) - frame) * w).astype(np.uint8)

    # -- the whole frame ---------------------------------------------------------------------
    def render(self, frame: np.ndarray, labels: np.ndarray, stats: Optional[HudStats] = None) -> np.ndarray:
        """The picture for one frame: BGR uint8, the frame's size (twice as wide side by side)."""
        height, width = frame.shape[:2]
        colour, weight = self.colour_and_weight(labels, (width, height))
        mode = self.options.mode
        if mode == "overlay":
            out = self.overlay(frame, colour, weight)
        elif mode == "mask":
            out = np.ascontiguousarray(colour)
        else:
            out = np.hstack([frame, colour])
        if self.options.legend:
            self.draw_legend(out)
        if self.options.hud and stats is not None:
            self.draw_hud(out, stats)
        return out

    def legend_panel(self, height: int) -> np.ndarray:
        """The legend (a swatch and a name per drawn class) for a picture ``height`` tall, cached."""
        if height in self._legend_cache:
            return self._legend_cache[height]
        scale = max(0.35, min(0.6, height / 900))
        row = max(12, int(round(30 * scale)))
        rows = max(1, min(len(self.drawn), (height - 8) // row))
        entries = self.drawn[:rows]
        font = cv2.FONT_HERSHEY_SIMPLEX
        text_w = max([cv2.getTextSize(self.class_names[i], font, scale, 1)[0][0] for i in entries] + [0])
        panel = np.zeros((rows * row + 8, row + text_w + 14, 3), np.uint8)
        panel[:] = (32, 32, 32)
        for r, index in enumerate(entries):
            y = 4 + r * row
            colour = tuple(int(c) for c in self._colour_lut[index])
            cv2.rectangle(panel, (4, y + 2), (row - 2, y + row - 2), colour, -1)
            cv2.putText(panel, self.class_names[index], (row + 4, y + row - 4), font, scale, (255, 255, 255), 1,
                        cv2.LINE_AA)
        self._legend_cache[height] = panel
        return panel

    def draw_legend(self, image: np.ndarray) -> None:
        """Blend the legend panel into the top-left corner of ``image`` (in place)."""
        if not self.drawn:
            return
        panel = self.legend_panel(image.shape[0])
        h = min(panel.shape[0], image.shape[0])
        w = min(panel.shape[1], image.shape[1])
        region = image[:h, :w]
        cv2.addWeighted(region, 0.35, panel[:h, :w], 0.65, 0.0, dst=region)

    def draw_hud(self, image: np.ndarray, stats: HudStats) -> None:
        """FPS and latencies in the bottom-left corner (in place)."""
        text = stats.text()
        font = cv2.FONT_HERSHEY_SIMPLEX
        scale = max(0.4, min(0.8, image.shape[0] / 700))
        (tw, th), base = cv2.getTextSize(text, font, scale, 1)
        y = image.shape[0] - 6
        x0, y0 = 0, max(0, y - th - base - 4)
        region = image[y0:, x0:min(image.shape[1], tw + 12)]
        region //= 3  # darken behind the text so it reads on any frame
        cv2.putText(image, text, (6, y - base), font, scale, (255, 255, 255), 1, cv2.LINE_AA)


# Widest mosaic drawn: a 1080p screen (or browser window) shows it without scaling.
MOSAIC_MAX_WIDTH = 1920


def mosaic(pictures: Sequence[Optional[np.ndarray]], names: Sequence[str] = (),
           max_width: int = MOSAIC_MAX_WIDTH) -> np.ndarray:
    """The newest picture of every stream in one grid (what ``display://0`` and the MJPEG
    server's ``/`` show when several streams run), each tile named after its stream.

    The grid is ``ceil(sqrt(N))`` tiles wide; every tile has the first picture's aspect ratio
    and is sized so that the grid is at most ``max_width`` wide. A stream with no picture yet
    is a dark tile.
    """
    shown = [p for p in pictures if p is not None]
    if not shown:
        raise ValueError("mosaic of no picture")
    count = len(pictures)
    cols = int(math.ceil(math.sqrt(count)))
    rows = int(math.ceil(count / cols))
    first_h, first_w = shown[0].shape[:2]
    tile_w = min(first_w, max_width // cols)
    tile_h = max(1, int(round(first_h * tile_w / first_w)))
    grid = np.full((rows * tile_h, cols * tile_w, 3), 24, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = max(0.4, min(0.8, tile_h / 500))
    for index, picture in enumerate(pictures):
        y, x = (index // cols) * tile_h, (index % cols) * tile_w
        if picture is not None:
            grid[y:y + tile_h, x:x + tile_w] = cv2.resize(picture, (tile_w, tile_h), interpolation=cv2.INTER_AREA)
        if index < len(names) and names[index]:
            (tw, th), base = cv2.getTextSize(names[index], font, scale, 1)
            region = grid[y:y + th + base + 8, x + tile_w - tw - 12:x + tile_w]
            region //= 3
            cv2.putText(grid, names[index], (x + tile_w - tw - 6, y + th + 4), font, scale, (255, 255, 255), 1,
                        cv2.LINE_AA)
    return grid
