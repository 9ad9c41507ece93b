"""What the pipeline's stages share: the stream description, the item that moves down the
queues, the queue helpers that give up when the run stops, and the run's common state.

The stages themselves live one per module (:mod:`.pipeline_capture`, :mod:`.pipeline_batching`,
:mod:`.pipeline_render`) as parts of :class:`~fcn_deploy.runtime.pipeline.MultiStreamPipeline`;
:class:`PipelineState` names every attribute they read and write, so each stage module says
what it needs without importing the others.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .input_size import InputSizer, Size
from .pipeline_report import PipelineReport, StreamStats
from .results import ResultsWorker
from .sinks import LabelSink, Sink
from .sources import Frame, Source
from .visualize import Visualizer

_END = object()  # end-of-stream marker passed down the queues


@dataclass
class Stream:
    """One input and where its results go.

    ``name`` labels the stream in reports, file names and URLs; ``sinks`` get its rendered
    pictures and ``label_sink`` its label maps, at the frame's own size. ``reopen``, when
    given, opens the source again after it ends or fails: set it for network streams, which
    drop and come back; the pipeline calls it with back-off until it succeeds or the run stops.
    """

    source: Source
    sinks: Sequence[Sink] = ()
    label_sink: Optional[LabelSink] = None
    name: str = "0"
    reopen: Optional[Callable[[], Source]] = None


@dataclass
class _Item:
    frame: Frame
    model_input: np.ndarray
    stream: int = 0
    labels: Optional[np.ndarray] = None
    times: Dict[str, float] = field(default_factory=dict)


def _put(q: "queue.Queue", item, stop: threading.Event) -> bool:
    """Blocking put that gives up when ``stop`` is set; False if it gave up."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _get(q: "queue.Queue", stop: threading.Event):
    """Blocking get that returns ``_END`` when ``stop`` is set."""
    while not stop.is_set():
        try:
            return q.get(timeout=0.05)
        except queue.Empty:
            continue
    return _END


class PipelineState:
    """The state every stage of a run shares (set up by ``MultiStreamPipeline.__init__``),
    and the three things any stage may do to the run: stop it, fail it, count a dropped frame."""

    streams: List[Stream]
    backend: object
    visualizer: Optional[Visualizer]
    mosaic_sinks: List[Sink]
    sizer: InputSizer
    batch_timeout: float
    max_frames: Optional[int]
    queue_size: int
    results: Optional[ResultsWorker]  # statistics, events, publishing (see .results)
    report: PipelineReport
    stream_errors: Dict[str, BaseException]
    _draw: List[bool]
    _shared_size: Optional[Size]
    _stop: threading.Event
    _arrived: threading.Event  # set by a capture thread after it queued something
    _errors: List[BaseException]
    _stopped_by: Optional[str]
    _lock: threading.Lock

    def stop(self, reason: str = "request") -> None:
        """Ask every stage to finish (thread-safe, idempotent)."""
        with self._lock:
            if self._stopped_by is None:
                self._stopped_by = reason
        self._stop.set()

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            self._errors.append(exc)
        self.stop("error")

    def _count_dropped(self, stats: StreamStats, count: int = 1) -> None:
        with self._lock:
            stats.dropped += count
            self.report.frames_dropped += count
