"""The per-frame results path: statistics, events, publishing and the live page's numbers, on
their own thread.

The pipeline hands each processed frame's full-size label map to :meth:`ResultsWorker.submit`
and goes on; the worker thread counts the class shares (:mod:`.stats`), runs the event rules
(:mod:`.events`), writes every line to each destination (:mod:`.publish`) and keeps the live
page's history (:class:`LiveStatus`). So none of it runs on the inference thread, and a slow
broker delays the drawing thread only once the worker's queue is full: no record is ever
dropped, because ``--stats`` promises one per processed frame.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .events import EventTracker
from .publish import LineSink, json_line
from .stats import FrameStatistics

log = logging.getLogger(__name__)

HISTORY_S = 60  # the live page's charts: the last minute, one point per second
_END = object()


@dataclass
class FrameResult:
    """One processed frame: whose, which, when (source time), its labels at frame size, its latency."""

    stream: str
    frame: int
    time: Optional[float]
    labels: np.ndarray
    latency_ms: float
    done: float = 0.0  # time.monotonic() when it was written


def source_time(index: int, captured: float, live: bool, fps: Optional[float]) -> Optional[float]:
    """A frame's source timestamp: wall-clock seconds (Unix time) at capture for a live source,
    the position in seconds (``index / fps``) in a file, ``None`` where neither is known (an
    image folder)."""
    if live:
        return time.time() - (time.perf_counter() - captured)
    if fps:
        return index / fps
    return None


class LiveStatus:
    """What the live page shows of each stream: FPS and latency per second over the last minute,
    the newest frame's class shares, and whether it failed. Thread-safe."""

    def __init__(self, streams: Sequence[str], class_names: Sequence[str], palette: Sequence[Tuple[int, int, int]],
                 model: str = "", mosaic: bool = False):
        self.streams = list(streams)
        self.class_names = list(class_names)
        self.palette = [tuple(int(c) for c in rgb) for rgb in palette]
        self.model = model
        self.mosaic = mosaic
        self.report = None  # the pipeline's PipelineReport, for failed streams
        self._lock = threading.Lock()
        # stream -> deque of [second, frames, latency sum]
        self._seconds: Dict[str, Deque[List[float]]] = {s: deque(maxlen=HISTORY_S + 1) for s in self.streams}
        self._classes: Dict[str, Dict[str, float]] = {}
        self._errors: Dict[str, str] = {}

    def add(self, stream: str, done: float, latency_ms: float, classes: Dict[str, float]) -> None:
        second = int(done)
        with self._lock:
            history = self._seconds.setdefault(stream, deque(maxlen=HISTORY_S + 1))
            if history and history[-1][0] == second:
                history[-1][1] += 1
                history[-1][2] += latency_ms
            else:
                history.append([second, 1, latency_ms])
            self._classes[stream] = classes

    def fail(self, stream: str, error: str) -> None:
        with self._lock:
            self._errors[stream] = error

    def _error_of(self, stream: str) -> Optional[str]:
        if stream in self._errors:
            return self._errors[stream]
        for stats in getattr(self.report, "streams", None) or []:
            if stats.name == stream and stats.error:
                return stats.error
        return None

    def snapshot(self, now: Optional[float] = None) -> Dict[str, Any]:
        """The page's JSON: the legend and, per stream, ``fps``/``latency_ms`` per second over the
        last minute (oldest first; a second without frames is 0 FPS), its class shares, its error."""
        now = time.monotonic() if now is None else now
        last = int(now) - 1  # the last whole second
        streams = []
        with self._lock:
            for name in self.streams:
                per_second = {int(s): (n, total) for s, n, total in self._seconds.get(name, ())}
                fps, latency = [], []
                for second in range(last - HISTORY_S + 1, last + 1):
                    n, total = per_second.get(second, (0, 0.0))
                    fps.append(n)
                    latency.append(round(total / n, 2) if n else None)
                streams.append({"name": name, "fps": fps, "latency_ms": latency,
                                "classes": dict(self._classes.get(name, {})), "error": self._error_of(name)})
        legend = [{"name": n, "color": "#%02x%02x%02x" % rgb} for n, rgb in zip(self.class_names, self.palette)]
        return {"model": self.model, "classes": legend, "streams": streams, "mosaic": self.mosaic,
                "seconds": HISTORY_S}


class ResultsWorker:
    """The thread that turns frames into statistics, events and lines (see the module docstring).

    ``sinks`` get every line; ``statistics_lines`` says whether the per-frame records are among
    them (``--stats`` or ``--publish``) or only the events are.
    """

    def __init__(self, statistics: FrameStatistics, sinks: Sequence[LineSink] = (),
                 events: Optional[EventTracker] = None, live: Optional[LiveStatus] = None,
                 statistics_lines: bool = True, queue_size: int = 16):
        self.statistics = statistics
        self.sinks = list(sinks)
        self.events = events
        self.live = live
        self.statistics_lines = statistics_lines
        self.records = 0
        self.event_lines: List[Dict[str, Any]] = []
        self._queue: "queue.Queue" = queue.Queue(maxsize=queue_size)
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._work, name="results", daemon=True)
        self._started = False
        self._closed = False

    def start(self) -> "ResultsWorker":
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    def submit(self, result: FrameResult) -> None:
        """Queue one frame; waits only while the queue is full. Raises the worker's error, if any."""
        if self._error is not None:
            raise self._error
        self.start()
        while True:
            try:
                self._queue.put(result, timeout=0.1)
                return
            except queue.Full:
                if self._error is not None:
                    raise self._error
                if not self._thread.is_alive():
                    return

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if self._error is not None:
                continue  # drain: the run is stopping because of it
            try:
                self._handle(item)
            except BaseException as exc:  # a full disk, a closed stdout: the run stops with it
                self._error = exc

    def _handle(self, result: FrameResult) -> None:
        record = self.statistics.record(result.stream, result.frame, result.time, result.labels, result.latency_ms)
        lines = [record] if self.statistics_lines else []
        if self.events is not None:
            for event in self.events.update(record):
                log.info("event %s %s on stream %s at frame %d", event["event"], event["state"], event["stream"],
                         event["frame"])
                self.event_lines.append(event)
                lines.append(event)
        for line in lines:
            text = json_line(line)
            for sink in self.sinks:
                sink.write(text)
        self.records += 1
        if self.live is not None:
            self.live.add(result.stream, result.done or time.monotonic(), result.latency_ms, record["classes"])

    def abandon(self) -> None:
        """End without a run: no file is left behind (a --stats file is not created)."""
        self._closed = True
        for sink in self.sinks:
            if hasattr(sink, "discard"):
                sink.discard()
            else:
                sink.close()

    def close(self) -> None:
        """Finish every queued frame, then close each destination (a file is renamed into place).
        Raises the first error the worker or a destination met."""
        if self._closed:
            return
        self._closed = True
        if self._started:
            self._queue.put(_END)
            self._thread.join()
        first = self._error
        for sink in self.sinks:
            try:
                if self._error is not None and hasattr(sink, "discard"):
                    sink.discard()  # a file that could not be written whole is not left half-written
                else:
                    sink.close()
            except BaseException as exc:
                first = first or exc
        if first is not None:
            raise first
