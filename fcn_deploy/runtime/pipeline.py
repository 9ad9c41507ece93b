"""The video pipeline: capture, inference and rendering overlap, so the model never waits.

::

    capture thread           inference thread               calling thread (rendering)
    read + resize  --[q_in]-->  backend.submit/result  --[q_out]-->  draw, write every sink, labels

On an edge device the network is rarely the bottleneck of a video loop: decoding, pre- and
post-processing and display are. Running them on their own threads, joined by small bounded
queues, lets frame ``i + 1`` decode and frame ``i - 1`` render while frame ``i`` is on the
accelerator, so the loop runs at the speed of its slowest stage instead of the sum of all.
On a backend that holds more than one frame (``backend.in_flight``: TensorRT with two
execution contexts, ONNX Runtime's asynchronous runs on a GPU) the inference stage submits
frame ``i + 1`` before it collects frame ``i``, so their copies and compute overlap too.

* A live source (camera, stream) runs at its own pace: when the inference queue is full the
  *oldest* frame is dropped, so the picture stays current instead of falling further behind.
* A file or folder waits for the consumer: no frame is lost, frames in = frames out.
* Rendering runs on the calling thread, because GUI toolkits want their window on the main
  thread and Python delivers signals there. SIGINT (Ctrl-C) and SIGTERM, a closed window, the
  end of the input or an error all end the run the same way: the stages stop, and every sink
  is closed, which finalises a video file with every frame that was rendered.

Per-stage times and end-to-end FPS are collected in a :class:`PipelineReport`.
"""
from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Deque, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from .input_size import InputSizer, InputSizeSpec, resize_frame
from .sinks import LabelSink, NullSink, Sink
from .sources import Frame, Source
from .visualize import HudStats, Visualizer

log = logging.getLogger(__name__)

_END = object()  # end-of-stream marker passed down the queues
STAGES = ("capture", "inference", "render", "write")


@dataclass
class _Item:
    frame: Frame
    model_input: np.ndarray
    labels: Optional[np.ndarray] = None
    times: Dict[str, float] = field(default_factory=dict)


@dataclass
class StageTime:
    """Busy time of one stage, summed over frames, in seconds."""

    total: float = 0.0
    count: int = 0

    def add(self, seconds: float) -> None:
        self.total += seconds
        self.count += 1

    @property
    def mean_ms(self) -> float:
        return 1000.0 * self.total / self.count if self.count else 0.0


@dataclass
class PipelineReport:
    """What a run did: frames through each stage, their mean times, end-to-end FPS and latency."""

    frames_captured: int = 0
    frames_rendered: int = 0
    frames_dropped: int = 0
    wall_seconds: float = 0.0
    stages: Dict[str, StageTime] = field(default_factory=lambda: {s: StageTime() for s in STAGES})
    latencies_ms: List[float] = field(default_factory=list)
    stopped_by: str = "end of input"

    @property
    def fps(self) -> float:
        """End-to-end throughput: rendered frames per second of wall time."""
        return self.frames_rendered / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def latency_ms(self, percentile: float = 50) -> float:
        return float(np.percentile(self.latencies_ms, percentile)) if self.latencies_ms else 0.0

    def format(self) -> str:
        lines = [
            f"{self.frames_rendered} frames in {self.wall_seconds:.2f} s: {self.fps:.1f} FPS end to end "
            f"(stopped by {self.stopped_by})",
            f"  latency capture->written: p50 {self.latency_ms(50):.1f} ms, p90 {self.latency_ms(90):.1f} ms",
        ]
        for name in STAGES:
            stage = self.stages[name]
            share = 100.0 * stage.total / self.wall_seconds if self.wall_seconds > 0 else 0.0
            lines.append(f"  {name:<9} {stage.mean_ms:7.2f} ms/frame  busy {share:5.1f}% of wall time")
        if self.frames_dropped:
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


class Pipeline:
    """Run ``backend`` over ``source``, drawing with ``visualizer`` into ``sinks``.

    ``input_size`` is the size frames are fed at (the label map is scaled back for drawing
    and label files): ``None`` (default) resizes each frame so that objects appear at the
    scale the model was trained at, aspect ratio kept, within an engine's profile;
    ``"native"`` feeds frames at their own size; ``(height, width)`` forces one size; an
    :class:`~fcn_deploy.runtime.input_size.InputSizer` decides as it is set up to.
    ``max_frames`` stops after that many frames. ``queue_size`` bounds both queues: small
    keeps latency low, 2 is enough for the stages to overlap.
    """

    def __init__(self, source: Source, backend, visualizer: Optional[Visualizer], sinks: Sequence[Sink] = (),
                 label_sink: Optional[LabelSink] = None, input_size: Union[InputSizeSpec, InputSizer] = None,
                 max_frames: Optional[int] = None, queue_size: int = 2):
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.source = source
        self.backend = backend
        self.visualizer = visualizer
        self.sinks = list(sinks)
        # Draw only for a sink that shows or stores the picture (not for `--output none`).
        self._draw = any(not isinstance(sink, NullSink) for sink in self.sinks)
        self.label_sink = label_sink
        self.sizer = input_size if isinstance(input_size, InputSizer) else InputSizer.for_backend(backend, input_size)
        self.max_frames = max_frames
        self.queue_size = queue_size
        self.report = PipelineReport()
        self._stop = threading.Event()
        self._errors: List[BaseException] = []
        self._stopped_by: Optional[str] = None
        self._end_reason = "end of input"
        self._lock = threading.Lock()

    def stop(self, reason: str = "request") -> None:
        """Ask every stage to finish (thread-safe, idempotent)."""
        with self._lock:
            if self._stopped_by is None:
                self._stopped_by = reason
        self._stop.set()

    # -- stages ------------------------------------------------------------------------------
    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            self._errors.append(exc)
        self.stop("error")

    def _capture(self, q_in: "queue.Queue") -> None:
        stage = self.report.stages["capture"]
        live = self.source.live
        try:
            while not self._stop.is_set():
                if self.max_frames is not None and self.report.frames_captured >= self.max_frames:
                    self._end_reason = f"--max-frames {self.max_frames}"
                    break
                start = time.perf_counter()
                frame = self.source.read()
                if frame is None:
                    break
                image = resize_frame(frame.image, self.sizer.size_for(frame.image.shape[:2]))
                stage.add(time.perf_counter() - start)
                self.report.frames_captured += 1
                item = _Item(frame, image)
                if live:
                    while True:  # never block a live source: drop the oldest waiting frame
                        try:
                            q_in.put_nowait(item)
                            break
                        except queue.Full:
                            try:
                                q_in.get_nowait()
                                self.report.frames_dropped += 1
                            except queue.Empty:
                                pass
                elif not _put(q_in, item, self._stop):
                    return
        except BaseException as exc:
            # A source that fails mid-way ends the input like its end would: the frames
            # already captured still go through and are written; run() raises it after.
            with self._lock:
                self._errors.append(exc)
            self._end_reason = "error"
        finally:
            _put(q_in, _END, self._stop)

    def _infer(self, q_in: "queue.Queue", q_out: "queue.Queue") -> None:
        """Keep up to ``backend.in_flight`` frames in the backend, hand them on in order.

        Frame ``k + 1`` is submitted before frame ``k`` is collected, so on a backend that
        overlaps frames the next one is copied in and launched while the current one computes.
        A file's next frame is always coming, so the stage waits for it; a live source's may
        not come for a frame period, so a finished frame is never held back for it.

        The report's inference time is the time the backend held at least one frame (so
        overlapping frames are not counted twice and "busy" stays a share of the wall time);
        each frame's own submit-to-result time goes to the HUD.
        """
        stage = self.report.stages["inference"]
        backend = self.backend
        depth = max(1, int(backend.in_flight))
        wait_for_next = not self.source.live
        pending: Deque[Tuple[_Item, int, float]] = deque()  # in submission order
        busy_until = 0.0
        ended = False
        try:
            while True:
                item = None
                if not ended and len(pending) < depth:
                    if not pending or wait_for_next:
                        item = _get(q_in, self._stop)
                    else:
                        try:
                            item = q_in.get_nowait()
                        except queue.Empty:
                            item = None
                    if item is _END:
                        ended, item = True, None
                if item is not None:
                    start = time.perf_counter()
                    ticket = backend.submit(backend.prepare(item.model_input[None]))
                    pending.append((item, ticket, start))
                    continue
                if not pending:
                    break  # the input has ended and every frame is handed on
                item, ticket, start = pending.popleft()
                output = backend.result(ticket)
                item.labels = backend.to_labels(output)[0]
                done = time.perf_counter()
                stage.add(done - max(start, busy_until))
                busy_until = done
                item.times["inference"] = done - start
                if not _put(q_out, item, self._stop):
                    return
        except BaseException as exc:
            self._fail(exc)
        finally:
            self._settle(pending)
            _put(q_out, _END, self._stop)

    def _settle(self, pending: "Deque[Tuple[_Item, int, float]]") -> None:
        """Wait for the frames still in the backend after a stop or an error, dropping their
        outputs: the caller may close the backend as soon as the run returns."""
        while pending:
            _, ticket, _ = pending.popleft()
            try:
                self.backend.result(ticket)
            except BaseException:  # the run's own error, or a second one: the first is reported
                pass

    def _render(self, q_out: "queue.Queue") -> None:
        render, write = self.report.stages["render"], self.report.stages["write"]
        hud = HudStats()
        last = None
        while True:
            item = _get(q_out, self._stop)
            if item is _END:
                return
            t0 = time.perf_counter()
            frame = item.frame
            labels = item.labels
            if self.label_sink is not None:
                height, width = frame.image.shape[:2]
                if labels.shape != (height, width):
                    labels_full = cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)
                else:
                    labels_full = labels
            picture = None
            if self.visualizer is not None and self._draw:
                hud.latency_ms = 1000.0 * (t0 - frame.captured)
                hud.inference_ms = 1000.0 * item.times.get("inference", 0.0)
                picture = self.visualizer.render(frame.image, labels, hud)
            t1 = time.perf_counter()
            render.add(t1 - t0)
            if self.label_sink is not None:
                self.label_sink.write(labels_full, frame)
            if picture is not None:
                for sink in self.sinks:
                    sink.write(picture, frame)
            t2 = time.perf_counter()
            write.add(t2 - t1)
            self.report.frames_rendered += 1
            self.report.latencies_ms.append(1000.0 * (t2 - frame.captured))
            if last is not None:  # smoothed FPS for the HUD
                instant = 1.0 / max(t2 - last, 1e-6)
                hud.fps = instant if hud.fps == 0 else 0.9 * hud.fps + 0.1 * instant
            last = t2
            if any(sink.wants_stop() for sink in self.sinks):
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

    def run(self) -> PipelineReport:
        """Process the source to its end (or until stopped); close every sink; return the report.

        An error in any stage stops the others and is raised here, after the sinks are closed.
        """
        q_in: "queue.Queue" = queue.Queue(maxsize=self.queue_size)
        q_out: "queue.Queue" = queue.Queue(maxsize=self.queue_size)
        previous = self._install_signal_handlers()
        started = time.perf_counter()
        threads = [
            threading.Thread(target=self._capture, args=(q_in,), name="capture", daemon=True),
            threading.Thread(target=self._infer, args=(q_in, q_out), name="inference", daemon=True),
        ]
        try:
            for thread in threads:
                thread.start()
            try:
                self._render(q_out)
            except BaseException as exc:
                self._fail(exc)
            self.stop(self._end_reason)
            for thread in threads:
                thread.join(timeout=10.0)
        finally:
            self.report.wall_seconds = time.perf_counter() - started
            self.report.stopped_by = self._stopped_by or self._end_reason
            try:
                for sink in self.sinks:
                    sink.close()
                if self.label_sink is not None:
                    self.label_sink.close()
            finally:
                for signum, handler in previous.items():
                    signal.signal(signum, handler)
        if self._errors:
            raise self._errors[0]
        return self.report
