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
  sink is closed, which finalises each video file with every frame that was rendered.

Per-stage and per-stream statistics and the batch sizes run are in a :class:`PipelineReport`.
"""
from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from ..errors import FcnDeployError, first_line
from .input_size import (
    InputSizer,
    InputSizeSpec,
    Size,
    backend_batch_limit,
    backend_batch_minimum,
    pad_batch,
    resize_frame,
    shared_input_size,
)
from .sinks import LabelSink, NullSink, Sink
from .sources import Frame, Source
from .visualize import HudStats, Visualizer, mosaic

log = logging.getLogger(__name__)

_END = object()  # end-of-stream marker passed down the queues
STAGES = ("capture", "inference", "render", "write")
DEFAULT_BATCH_TIMEOUT_MS = 20.0
# Reconnection of a network stream: the first retry after this many seconds, doubling up to the cap.
RECONNECT_BACKOFF_S = (0.5, 8.0)


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
    so the FPS of a stream that ended early is its rate while it ran.
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


class MultiStreamPipeline:
    """Run ``backend`` over every stream of ``streams``, batching their frames, drawing with
    ``visualizer`` into each stream's sinks and, for ``mosaic_sinks``, a mosaic of all streams.

    ``input_size`` is the size frames are fed at (the label maps are scaled back for drawing
    and label files): ``None`` (default) follows the model's training scale (aspect ratio
    kept, within an engine's profile); ``"native"`` feeds frames at their own size;
    ``(height, width)`` forces one size; an :class:`~fcn_deploy.runtime.input_size.InputSizer`
    decides as it is set up to. With several streams all frames share one size
    (:func:`~fcn_deploy.runtime.input_size.shared_input_size`).
    ``batch_timeout_ms`` is how long a batch waits for the streams that have no frame yet.
    ``max_frames`` stops each stream after that many frames. ``queue_size`` bounds every
    queue: small keeps latency low, 2 is enough for the stages to overlap.

    A backend whose batch limit (a TensorRT engine's profile) is below the number of streams
    is refused here, before anything runs.
    """

    def __init__(self, streams: Sequence[Stream], backend, visualizer: Optional[Visualizer],
                 mosaic_sinks: Sequence[Sink] = (), input_size: Union[InputSizeSpec, InputSizer] = None,
                 batch_timeout_ms: float = DEFAULT_BATCH_TIMEOUT_MS, max_frames: Optional[int] = None,
                 queue_size: int = 2):
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
        self.report = PipelineReport(streams=[StreamStats(s.name, s.source.description) for s in self.streams])
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

    # -- input size --------------------------------------------------------------------------
    def _input_size(self, frame: Size) -> Size:
        if len(self.streams) == 1:
            return self.sizer.size_for(frame)
        with self._lock:
            if self._shared_size is None:  # no stream said its size before the run: the first frame decides
                known = [tuple(reversed(s.source.size)) for s in self.streams if getattr(s.source, "size", None)]
                self._shared_size = shared_input_size(self.sizer, known or [frame])
            return self._shared_size

    # -- capture: one thread per stream ---------------------------------------------------------
    def _reconnect(self, stream: Stream, stats: StreamStats, why: str) -> Optional[Source]:
        """Reopen ``stream`` with exponential back-off until it opens or the run stops."""
        try:
            stream.source.close()
        except Exception:  # the old capture is gone either way
            pass
        delay, cap = RECONNECT_BACKOFF_S
        while True:
            log.warning("stream %s: %s; reconnecting in %.1f s", stream.name, why, delay)
            if self._stop.wait(delay):
                return None
            try:
                source = stream.reopen()  # type: ignore[misc]
            except Exception as exc:
                why = first_line(exc)
                delay = min(2 * delay, cap)
                continue
            stream.source = source
            stats.reconnects += 1
            log.info("stream %s: reconnected to %s", stream.name, source.description)
            return source

    def _capture(self, index: int, q: "queue.Queue") -> None:
        stream, stats = self.streams[index], self.report.streams[index]
        stage = self.report.stages["capture"]
        source = stream.source
        live = source.live
        try:
            while not self._stop.is_set():
                if self.max_frames is not None and stats.frames_in >= self.max_frames:
                    stats.ended_by = f"--max-frames {self.max_frames}"
                    break
                start = time.perf_counter()
                try:
                    frame = source.read()
                except Exception as exc:
                    if stream.reopen is None:
                        raise
                    source = self._reconnect(stream, stats, f"lost ({first_line(exc)})")
                    if source is None:
                        break
                    continue
                if frame is None:
                    if stream.reopen is not None and not self._stop.is_set():
                        source = self._reconnect(stream, stats, "the stream ended")
                        if source is None:
                            break
                        continue
                    stats.ended_by = "end of input"
                    break
                image = resize_frame(frame.image, self._input_size(frame.image.shape[:2]))
                with self._lock:
                    stage.add(time.perf_counter() - start)
                    stats.frames_in += 1
                    self.report.frames_captured += 1
                item = _Item(frame, image, index)
                if live:
                    while True:  # never block a live source: drop the oldest waiting frame
                        try:
                            q.put_nowait(item)
                            break
                        except queue.Full:
                            try:
                                q.get_nowait()
                                self._count_dropped(stats)
                            except queue.Empty:
                                pass
                elif not _put(q, item, self._stop):
                    return
                self._arrived.set()
        except BaseException as exc:
            # A stream that fails mid-way ends like its end would: its frames already captured
            # still go through and are written, and the other streams go on.
            with self._lock:
                self.stream_errors[stream.name] = exc
            stats.error, stats.ended_by = first_line(exc), "error"
            if len(self.streams) > 1:
                log.warning("stream %s (%s) failed: %s; the other streams go on", stream.name,
                            stream.source.description, stats.error)
        finally:
            _put(q, _END, self._stop)
            self._arrived.set()

    def _count_dropped(self, stats: StreamStats, count: int = 1) -> None:
        with self._lock:
            stats.dropped += count
            self.report.frames_dropped += count

    # -- batching and inference ----------------------------------------------------------------
    def _take(self, index: int, q: "queue.Queue", active: List[int]):
        """The next frame of stream ``index`` (its newest, for a live stream), or ``None``.
        A stream whose end marker comes up leaves ``active``."""
        try:
            item = q.get_nowait()
        except queue.Empty:
            return None
        if item is not _END and self.streams[index].source.live:
            while True:  # the newest frame of a live stream; older waiting ones are dropped
                try:
                    newer = q.get_nowait()
                except queue.Empty:
                    break
                if newer is _END:
                    active.remove(index)
                    return item
                self._count_dropped(self.report.streams[index])
                item = newer
        if item is _END:
            active.remove(index)
            return None
        return item

    def _gather(self, queues: Sequence["queue.Queue"], active: List[int], wait: bool) -> List[_Item]:
        """One batch: at most one frame from each stream in ``active``, in stream order.

        With ``wait``, blocks for the first frame, then up to the batch timeout for the
        streams still missing; without, takes only what is there now.
        """
        taken: Dict[int, _Item] = {}
        deadline: Optional[float] = None
        while not self._stop.is_set():
            self._arrived.clear()
            for index in list(active):
                if index not in taken:
                    item = self._take(index, queues[index], active)
                    if item is not None:
                        taken[index] = item
            missing = [i for i in active if i not in taken]
            if not missing or not wait or not active:
                break
            now = time.perf_counter()
            if taken:
                deadline = deadline or now + self.batch_timeout
                if now >= deadline:
                    break
                self._arrived.wait(min(deadline - now, 0.05))
            else:
                self._arrived.wait(0.05)
        return [taken[i] for i in sorted(taken)]

    def _infer(self, queues: Sequence["queue.Queue"], q_out: "queue.Queue") -> None:
        """Keep up to ``backend.in_flight`` batches in the backend, hand them on in order.

        Batch ``k + 1`` is submitted before batch ``k`` is collected, so on a backend that
        overlaps them the next one is copied in and launched while the current one computes.
        Files always have a next frame coming, so with only files the stage waits for it; a
        live stream's may not come for a frame period, so a finished batch is never held
        back for it.

        The report's inference time is the time the backend held at least one batch (so
        overlapping batches are not counted twice and "busy" stays a share of the wall time);
        each frame's own submit-to-result time goes to its stream's HUD.
        """
        stage = self.report.stages["inference"]
        backend = self.backend
        depth = max(1, int(backend.in_flight))
        min_batch = backend_batch_minimum(backend)
        only_files = not any(s.source.live or s.reopen is not None for s in self.streams)
        active = list(range(len(self.streams)))
        pending: Deque[Tuple[List[_Item], int, float]] = deque()  # in submission order
        busy_until = 0.0
        try:
            while True:
                batch: List[_Item] = []
                if active and len(pending) < depth:
                    batch = self._gather(queues, active, wait=not pending or only_files)
                if self._stop.is_set() and not pending:
                    break
                if batch:
                    start = time.perf_counter()
                    # A static-batch model gets a padded batch; zip() below drops the padding's labels.
                    frames = pad_batch(np.stack([item.model_input for item in batch]), min_batch)
                    ticket = backend.submit(backend.prepare(frames))
                    pending.append((batch, ticket, start))
                    self.report.batch_sizes[len(batch)] += 1
                    continue
                if not pending:
                    if not active:
                        break  # every input has ended and every frame is handed on
                    continue
                batch, ticket, start = pending.popleft()
                labels = backend.to_labels(backend.result(ticket))
                done = time.perf_counter()
                stage.add(done - max(start, busy_until))
                busy_until = done
                for item, label_map in zip(batch, labels):
                    item.labels = label_map
                    item.times["inference"] = done - start
                if not _put(q_out, batch, self._stop):
                    return
        except BaseException as exc:
            self._fail(exc)
        finally:
            self._settle(pending)
            _put(q_out, _END, self._stop)

    def _settle(self, pending: "Deque[Tuple[List[_Item], int, float]]") -> None:
        """Wait for the batches still in the backend after a stop or an error, dropping their
        outputs: the caller may close the backend as soon as the run returns."""
        while pending:
            _, ticket, _ = pending.popleft()
            try:
                self.backend.result(ticket)
            except BaseException:  # the run's own error, or a second one: the first is reported
                pass

    # -- rendering and writing (calling thread) ------------------------------------------------
    def _render(self, q_out: "queue.Queue", started: float) -> None:
        render, write = self.report.stages["render"], self.report.stages["write"]
        huds = [HudStats(title=s.name if len(self.streams) > 1 else "") for s in self.streams]
        last_done: List[Optional[float]] = [None] * len(self.streams)
        pictures: List[Optional[np.ndarray]] = [None] * len(self.streams)
        names = [s.name for s in self.streams]
        mosaics = 0
        while True:
            batch = _get(q_out, self._stop)
            if batch is _END:
                return
            for item in batch:
                stream, stats, hud = self.streams[item.stream], self.report.streams[item.stream], huds[item.stream]
                t0 = time.perf_counter()
                frame, labels = item.frame, item.labels
                if stream.label_sink is not None:
                    height, width = frame.image.shape[:2]
                    if labels.shape != (height, width):
                        labels_full = cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)
                    else:
                        labels_full = labels
                picture = None
                if self.visualizer is not None and self._draw[item.stream]:
                    hud.latency_ms = 1000.0 * (t0 - frame.captured)
                    hud.inference_ms = 1000.0 * item.times.get("inference", 0.0)
                    picture = self.visualizer.render(frame.image, labels, hud)
                t1 = time.perf_counter()
                render.add(t1 - t0)
                if stream.label_sink is not None:
                    stream.label_sink.write(labels_full, frame)
                if picture is not None:
                    for sink in stream.sinks:
                        sink.write(picture, frame)
                    pictures[item.stream] = picture
                t2 = time.perf_counter()
                write.add(t2 - t1)
                latency = 1000.0 * (t2 - frame.captured)
                self.report.frames_rendered += 1
                self.report.latencies_ms.append(latency)
                stats.processed += 1
                stats.latencies_ms.append(latency)
                stats.seconds = t2 - started
                previous, last_done[item.stream] = last_done[item.stream], t2
                if previous is not None:  # smoothed FPS for the HUD
                    instant = 1.0 / max(t2 - previous, 1e-6)
                    hud.fps = instant if hud.fps == 0 else 0.9 * hud.fps + 0.1 * instant
            if self.mosaic_sinks and any(p is not None for p in pictures):
                t0 = time.perf_counter()
                grid = Frame(mosaic(pictures, names), mosaics, None, t0)  # numbered on its own
                mosaics += 1
                for sink in self.mosaic_sinks:
                    sink.write(grid.image, grid)
                write.add(time.perf_counter() - t0)
            if any(sink.wants_stop() for s in self.streams for sink in s.sinks) or any(
                    sink.wants_stop() for sink in self.mosaic_sinks):
                self.stop("window closed")
                return

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

    def _close_outputs(self) -> None:
        first: Optional[BaseException] = None
        for sink in [k for s in self.streams for k in s.sinks] + self.mosaic_sinks:
            try:
                sink.close()
            except BaseException as exc:  # close the rest; report the first
                first = first or exc
        for stream in self.streams:
            if stream.label_sink is not None:
                stream.label_sink.close()
        if first is not None:
            raise first

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
