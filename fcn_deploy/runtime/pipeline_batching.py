"""The inference stage of the pipeline: batches of one frame per stream, kept in flight in order.

**Many streams** (DeepStream's stream muxer, in Python): every batch holds at most one frame
per stream, the newest of a live stream and the next of a file, and goes to the backend in
one call. The batch leaves as soon as every running stream has given a frame, or the batch
timeout after its first frame arrived, whichever is first: a slow or stalled stream never
holds the others back, and a stream that ends or fails leaves the batch. On a backend that
holds more than one batch (``backend.in_flight``) batch ``k + 1`` is submitted before batch
``k`` is collected, and the batches are handed on in the order they were submitted.
"""
from __future__ import annotations

import queue
import time
from collections import deque
from typing import Deque, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .input_size import backend_batch_minimum, pad_batch
from .pipeline_queues import _END, PipelineState, _Item, _put


class BatchingStage(PipelineState):
    """The inference thread of :class:`~fcn_deploy.runtime.pipeline.MultiStreamPipeline`."""

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
