"""The video pipeline: one or many sources, batched inference, outputs per stream.

::

    capture thread per stream        inference thread                 calling thread (rendering)
    read + resize --[queue]--.
    read + resize --[queue]--+-->  batch: one frame per stream  --[q_out]-->  draw, write each
    read + resize --[queue]--'     backend.submit/result                      stream's sinks, mosaic

On an edge device the network is rarely the bottleneck of a video loop: decoding, pre- and
post-processing and display are. Running them on their own threads, joined by small bounded
queues, lets frame ``i + 1`` decode and frame ``i - 1`` render while frame ``i`` is on the
accelerator, so the loop runs at the speed of its slowest stage instead of the sum of all.
On a backend that holds more than one batch (``backend.in_flight``: TensorRT with two
execution contexts, ONNX Runtime's asynchronous runs on a GPU) the inference stage submits
batch ``k + 1`` before it collects batch ``k``, so their copies and compute overlap too.

**Many streams** (DeepStream's stream muxer, in Python): every batch holds at most one frame
per stream, the newest of a live stream and the next of a file, and goes to the backend in
one call, because one call on N frames costs far less than N calls on one. The batch leaves
as soon as every running stream has given a frame, or ``batch_timeout_ms`` after its first
frame arrived, whichever is first: a slow or stalled stream never holds the others back, and
a stream that ends or fails leaves the batch. Frames of all streams go in at one input size
(:func:`~fcn_deploy.runtime.input_size.shared_input_size`); each stream's labels come back at
its own frame size.

* A live source (camera, stream) runs at its own pace: its queue keeps the newest frames and
  drops the oldest, so the picture stays current instead of falling further behind. A network
  stream that drops is reopened with exponential back-off (:attr:`Stream.reopen`).
* A file or folder waits for the consumer: no frame is lost, frames in = frames out.
* A stream that fails mid-run is reported (:attr:`StreamStats.error`) and the others go on;
  an error in inference or rendering stops the run.
* Rendering runs on the calling thread, because GUI toolkits want their window on the main
  thread and Python delivers signals there. SIGINT (Ctrl-C) and SIGTERM, a closed window, the
  end of every input or an error all end the run the same way: the stages stop, and every
  sink is closed, which finalises each video file with every frame that was rendered. The
  report says how it ended (:attr:`PipelineReport.stopped_by`) and which files or folders were
  stopped before their end (:attr:`PipelineReport.cut_short`): ``fcn-deploy run`` then exits
  non-zero, since their outputs hold only part of them.

Per-stage and per-stream statistics and the batch sizes run are in a :class:`PipelineReport`.

Where each part lives: capture threads in :mod:`.pipeline_capture`, batching and in-flight
ordering in :mod:`.pipeline_batching`, rendering and outputs in :mod:`.pipeline_render`, the
report in :mod:`.pipeline_report`, what they share in :mod:`.pipeline_queues`. This module
sets a run up, starts the threads and ends the run.
"""
from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from typing import Dict, List, Optional, Sequence, Union

from ..errors import FcnDeployError
from .input_size import InputSizer, InputSizeSpec, Size, backend_batch_limit
from .pipeline_batching import BatchingStage
from .pipeline_capture import RECONNECT_BACKOFF_S, CaptureStage
from .pipeline_queues import Stream
from .pipeline_render import RenderStage
from .results import ResultsWorker
from .pipeline_report import STAGES, PipelineReport, StageTime, StreamStats
from .sinks import LabelSink, NullSink, Sink
from .sources import Source
from .visualize import Visualizer

__all__ = ["DEFAULT_BATCH_TIMEOUT_MS", "RECONNECT_BACKOFF_S", "STAGES", "MultiStreamPipeline", "Pipeline",
           "PipelineReport", "StageTime", "Stream", "StreamStats"]

log = logging.getLogger(__name__)

DEFAULT_BATCH_TIMEOUT_MS = 20.0


def _endless(stream: Stream) -> bool:
    """A source with no end of its own: live, reopened when it drops, or a file in a loop."""
    return bool(stream.source.live or stream.reopen is not None or getattr(stream.source, "loop", False))


class MultiStreamPipeline(CaptureStage, BatchingStage, RenderStage):
    """Run ``backend`` over every stream of ``streams``, batching their frames, drawing with
    ``visualizer`` into each stream's sinks and, for ``mosaic_sinks``, a mosaic of all streams.

    ``input_size`` is the size frames are fed at (the label maps are scaled back for drawing
    and label files): ``None`` (default) follows the model's training scale (aspect ratio
    kept, within an engine's profile); ``"native"`` feeds frames at their own size;
    ``(height, width)`` forces one size; an :class:`~fcn_deploy.runtime.input_size.InputSizer`
    decides as it is set up to. With several streams all frames share one size
    (:func:`~fcn_deploy.runtime.input_size.shared_input_size`).
    ``batch_timeout_ms`` is how long a batch waits for the streams that have no frame yet.
    ``max_frames`` stops each stream after that many frames. ``results`` (statistics, events,
    publishing, the live page's numbers) gets every frame's full-size labels on its own thread. ``queue_size`` bounds every
    queue: small keeps latency low, 2 is enough for the stages to overlap.

    A backend whose batch limit (a TensorRT engine's profile) is below the number of streams
    is refused here, before anything runs.
    """

    def __init__(self, streams: Sequence[Stream], backend, visualizer: Optional[Visualizer],
                 mosaic_sinks: Sequence[Sink] = (), input_size: Union[InputSizeSpec, InputSizer] = None,
                 batch_timeout_ms: float = DEFAULT_BATCH_TIMEOUT_MS, max_frames: Optional[int] = None,
                 queue_size: int = 2, results: Optional[ResultsWorker] = None):
        if not streams:
            raise FcnDeployError("no stream to run")
        if queue_size < 1:
            raise FcnDeployError(f"queue size must be at least 1, not {queue_size}")
        if batch_timeout_ms < 0:
            raise FcnDeployError(f"batch timeout must be 0 ms or more, not {batch_timeout_ms:g}")
        names = [s.name for s in streams]
        if len(set(names)) != len(names):
            raise FcnDeployError(f"stream names must differ: {', '.join(names)}")
        limit = backend_batch_limit(backend)
        if limit is not None and limit < len(streams):
            raise FcnDeployError(
                f"the model takes batches of at most {limit} frame(s), but {len(streams)} streams are batched "
                f"together: build an engine for them with fcn-deploy build MODEL.onnx --max-batch {len(streams)} "
                f"(or --shapes with a batch of {len(streams)})"
            )
        self.streams = list(streams)
        self.backend = backend
        self.visualizer = visualizer
        self.mosaic_sinks = list(mosaic_sinks)
        self.sizer = input_size if isinstance(input_size, InputSizer) else InputSizer.for_backend(backend, input_size)
        self.batch_timeout = batch_timeout_ms / 1000.0
        self.max_frames = max_frames
        self.queue_size = queue_size
        self.results = results
        self.report = PipelineReport(streams=[
            StreamStats(s.name, s.source.description, endless=_endless(s), total=getattr(s.source, "frame_count", None))
            for s in self.streams])
        # Draw only for streams whose picture goes somewhere (not for `--output none` alone).
        showing = bool(self.mosaic_sinks)
        self._draw = [showing or any(not isinstance(k, NullSink) for k in s.sinks) for s in self.streams]
        self._shared_size: Optional[Size] = None
        self.stream_errors: Dict[str, BaseException] = {}
        self._stop = threading.Event()
        self._arrived = threading.Event()  # set by a capture thread after it queued something
        self._errors: List[BaseException] = []
        self._stopped_by: Optional[str] = None
        self._lock = threading.Lock()

    # -- the run -----------------------------------------------------------------------------
    def _install_signal_handlers(self):
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}

        def handler(signum, _frame):
            name = signal.Signals(signum).name
            if self._stop.is_set():  # a second Ctrl-C: stop waiting
                raise KeyboardInterrupt
            log.info("%s: stopping; finishing the output files (press Ctrl-C again to abort)", name)
            self.stop(name)

        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, handler)
        return previous

    def _end_reason(self) -> str:
        reasons = {s.ended_by for s in self.report.streams if s.ended_by and s.ended_by != "error"}
        if len(reasons) == 1:
            return reasons.pop()
        if not reasons and self.report.failed:
            return "error"
        return "end of input"

    def run(self) -> PipelineReport:
        """Process every stream to its end (or until stopped); close every sink; return the report.

        An error in inference or rendering stops the run and is raised here, after the sinks
        are closed. A stream's own failure does not stop the others: it is in the report
        (:attr:`PipelineReport.failed`) and in :attr:`stream_errors`.
        """
        queues = [queue.Queue(maxsize=self.queue_size) for _ in self.streams]
        q_out: "queue.Queue" = queue.Queue(maxsize=self.queue_size)
        previous = self._install_signal_handlers()
        started = time.perf_counter()
        threads = [
            threading.Thread(target=self._capture, args=(i, q), name=f"capture-{self.streams[i].name}", daemon=True)
            for i, q in enumerate(queues)
        ]
        threads.append(threading.Thread(target=self._infer, args=(queues, q_out), name="inference", daemon=True))
        try:
            for thread in threads:
                thread.start()
            try:
                self._render(q_out, started)
            except BaseException as exc:
                self._fail(exc)
            self.stop(self._end_reason())
            for thread in threads:
                thread.join(timeout=10.0)
        finally:
            self.report.wall_seconds = time.perf_counter() - started
            self.report.stopped_by = self._stopped_by or self._end_reason()
            try:
                self._close_outputs()
            finally:
                for signum, handler in previous.items():
                    signal.signal(signum, handler)
        if self._errors:
            raise self._errors[0]
        return self.report


class Pipeline(MultiStreamPipeline):
    """Run ``backend`` over one ``source``, drawing with ``visualizer`` into ``sinks``.

    The one-stream case of :class:`MultiStreamPipeline`, with one difference: a source that
    fails mid-run is raised by :meth:`run` (after the frames read before it are written and
    the sinks closed), since there is no other stream to go on with.
    """

    def __init__(self, source: Source, backend, visualizer: Optional[Visualizer], sinks: Sequence[Sink] = (),
                 label_sink: Optional[LabelSink] = None, input_size: Union[InputSizeSpec, InputSizer] = None,
                 max_frames: Optional[int] = None, queue_size: int = 2):
        super().__init__([Stream(source, list(sinks), label_sink)], backend, visualizer,
                         input_size=input_size, max_frames=max_frames, queue_size=queue_size)
        self.source = source
        self.sinks = self.streams[0].sinks
        self.label_sink = label_sink

    def run(self) -> PipelineReport:
        report = super().run()
        if self.stream_errors:
            raise next(iter(self.stream_errors.values()))
        return report
