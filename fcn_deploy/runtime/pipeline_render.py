"""The rendering stage of the pipeline: draw each labelled frame, write it to its stream's sinks.

It runs on the calling thread, because GUI toolkits want their window on the main thread and
Python delivers signals there. Closing the sinks at the end finalises each video file with
every frame that was rendered.
"""
from __future__ import annotations

import queue
import time
from typing import List, Optional

import cv2
import numpy as np

from .pipeline_queues import _END, PipelineState, _get
from .results import FrameResult, source_time
from .sources import Frame
from .visualize import HudStats, mosaic


class RenderStage(PipelineState):
    """The rendering and writing of :class:`~fcn_deploy.runtime.pipeline.MultiStreamPipeline`."""

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
                if stream.label_sink is not None or self.results is not None:
                    height, width = frame.shape  # the source's own size, also where the decoder scaled
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
                if self.results is not None:  # statistics, events, publishing: on the results thread
                    source = stream.source
                    when = source_time(frame.index, frame.captured, source.live, source.fps)
                    self.results.submit(FrameResult(stream.name, frame.index, when, labels_full, latency))
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

    def _close_outputs(self) -> None:
        first: Optional[BaseException] = None
        if self.results is not None:  # every queued frame's lines, then the file renamed into place
            try:
                self.results.close()
            except BaseException as exc:
                first = exc
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
