"""What a pipeline run did: frames through each stage, their times, each stream's numbers.

Kept apart from the stages that fill it in (:mod:`~fcn_deploy.runtime.pipeline`) so that a
reader of the numbers (the CLI, a benchmark, a test) needs only this module.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

STAGES = ("capture", "inference", "render", "write")


@dataclass
class StageTime:
    """Busy time of one stage, summed over its calls (frames; batches for inference), in seconds."""

    total: float = 0.0
    count: int = 0

    def add(self, seconds: float) -> None:
        self.total += seconds
        self.count += 1

    @property
    def mean_ms(self) -> float:
        return 1000.0 * self.total / self.count if self.count else 0.0


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else 0.0


@dataclass
class StreamStats:
    """What one stream did: frames in, processed and dropped, its latencies, how it ended.

    ``seconds`` is the time from the start of the run to the stream's last processed frame,
    so the FPS of a stream that ended early is its rate while it ran. ``endless``: the source
    has no end of its own (a camera, a network stream, a file played in a loop), so stopping it
    is how it ends; ``total``: the frames a file or folder holds, where known.
    """

    name: str
    description: str = ""
    frames_in: int = 0
    processed: int = 0
    dropped: int = 0
    reconnects: int = 0
    seconds: float = 0.0
    latencies_ms: List[float] = field(default_factory=list)
    ended_by: str = ""
    error: Optional[str] = None
    endless: bool = False
    total: Optional[int] = None

    @property
    def cut_short(self) -> bool:
        """A file or folder stopped before its end (not by --max-frames, not by an error)."""
        if self.endless or self.ended_by:
            return False
        return self.total is None or self.processed < self.total

    @property
    def fps(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def latency_ms(self, percentile: float = 50) -> float:
        return _percentile(self.latencies_ms, percentile)

    def format(self) -> str:
        text = (f"stream {self.name} ({self.description}): {self.frames_in} in, {self.processed} processed, "
                f"{self.dropped} dropped, {self.fps:.1f} FPS, latency p50 {self.latency_ms(50):.0f} ms "
                f"p90 {self.latency_ms(90):.0f} ms")
        if self.reconnects:
            text += f", reconnected {self.reconnects}x"
        if self.error:
            text += f"; FAILED: {self.error}"
        return text


@dataclass
class PipelineReport:
    """What a run did: frames through each stage, their mean times, end-to-end FPS and latency,
    each stream's own numbers and the batch sizes the backend ran."""

    frames_captured: int = 0
    frames_rendered: int = 0
    frames_dropped: int = 0
    wall_seconds: float = 0.0
    stages: Dict[str, StageTime] = field(default_factory=lambda: {s: StageTime() for s in STAGES})
    latencies_ms: List[float] = field(default_factory=list)
    stopped_by: str = "end of input"
    streams: List[StreamStats] = field(default_factory=list)
    batch_sizes: Dict[int, int] = field(default_factory=Counter)

    @property
    def fps(self) -> float:
        """End-to-end throughput: rendered frames (all streams) per second of wall time."""
        return self.frames_rendered / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def latency_ms(self, percentile: float = 50) -> float:
        return _percentile(self.latencies_ms, percentile)

    @property
    def failed(self) -> List[StreamStats]:
        return [s for s in self.streams if s.error]

    @property
    def cut_short(self) -> List[StreamStats]:
        """The streams with an end of their own that the run stopped before it (see
        :attr:`StreamStats.cut_short`)."""
        return [s for s in self.streams if s.cut_short]

    def format(self) -> str:
        many = len(self.streams) > 1
        lines = [
            f"{self.frames_rendered} frames{f' from {len(self.streams)} streams' if many else ''} in "
            f"{self.wall_seconds:.3f} s: {self.fps:.1f} FPS end to end (stopped by {self.stopped_by})",
            f"  latency capture->written: p50 {self.latency_ms(50):.1f} ms, p90 {self.latency_ms(90):.1f} ms",
        ]
        for name in STAGES:
            stage = self.stages[name]
            share = 100.0 * stage.total / self.wall_seconds if self.wall_seconds > 0 else 0.0
            unit = "batch" if name == "inference" and many else "frame"
            lines.append(f"  {name:<9} {stage.mean_ms:7.2f} ms/{unit:<5}  busy {share:5.1f}% of wall time")
        if many:
            runs = sum(self.batch_sizes.values())
            mean = sum(size * count for size, count in self.batch_sizes.items()) / runs if runs else 0.0
            sizes = ", ".join(f"{count} x {size}" for size, count in sorted(self.batch_sizes.items(), reverse=True))
            lines.append(f"  batches: {sizes or 'none'} (mean {mean:.2f} frames)")
            lines.extend(f"  {stream.format()}" for stream in self.streams)
        elif self.frames_dropped:
            lines.append(f"  dropped {self.frames_dropped} of {self.frames_captured} live frames to stay current")
        return "\n".join(lines)
