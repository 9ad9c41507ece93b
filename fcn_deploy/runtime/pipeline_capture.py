"""The capture stage of the pipeline: one thread per stream reads, resizes and queues frames.

A live source (camera, network stream) runs at its own pace: its queue keeps the newest
frames and drops the oldest, so the picture stays current. A file or folder waits for the
consumer: no frame is lost. A network stream that drops is reopened with exponential
back-off (:attr:`~fcn_deploy.runtime.pipeline_queues.Stream.reopen`). A stream that fails
ends like its end would, with its error in its :class:`~.pipeline_report.StreamStats`.
"""
from __future__ import annotations

import logging
import queue
import time
from typing import Optional

from ..errors import first_line
from .input_size import Size, resize_frame, shared_input_size
from .pipeline_queues import _END, PipelineState, Stream, _Item, _put
from .pipeline_report import StreamStats
from .sources import Source

log = logging.getLogger("fcn_deploy.runtime.pipeline")

# Reconnection of a network stream: the first retry after this many seconds, doubling up to the cap.
RECONNECT_BACKOFF_S = (0.5, 8.0)


class CaptureStage(PipelineState):
    """The capture threads of :class:`~fcn_deploy.runtime.pipeline.MultiStreamPipeline`."""

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
                image = resize_frame(frame.image, self._input_size(frame.shape))  # a no-op where the decoder scaled
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
