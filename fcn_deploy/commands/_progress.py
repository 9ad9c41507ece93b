"""The CLI's download progress: a tqdm bar on a terminal where tqdm is installed, else (a log
file, no tqdm) a plain line every 10%.

Library downloads report ``progress(done_bytes, total_bytes_or_None)``
(:mod:`fcn_deploy.download`); this turns that into something a person watches. One reporter
serves several files in a row: a new file is noticed when ``done`` goes back down.
"""
from __future__ import annotations

import sys
from typing import Optional


class DownloadProgress:
    """A ``progress`` callback for :func:`fcn_deploy.download.download`; ``close()`` when done."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self._bar = None
        self._last = -1
        self._tenth = -1
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        isatty = getattr(self.stream, "isatty", None)
        self._tqdm = tqdm if isatty is not None and isatty() else None

    def __call__(self, done: int, total: Optional[int]) -> None:
        if done < self._last:  # the next file (or the same one from the start)
            self.close()
        self._last = done
        if self._tqdm is not None:
            if self._bar is None:
                self._bar = self._tqdm(total=total, initial=done, unit="B", unit_scale=True,
                                       unit_divisor=1024, dynamic_ncols=True, file=self.stream,
                                       desc="download")
            else:
                self._bar.update(done - self._bar.n)
            return
        if total:
            tenth = 10 * done // total
            if tenth != self._tenth:
                self._tenth = tenth
                print(f"downloaded {done / 2**20:.1f} of {total / 2**20:.1f} MiB ({10 * tenth}%)",
                      file=self.stream, flush=True)
        elif done // (100 << 20) != self._tenth:
            self._tenth = done // (100 << 20)
            print(f"downloaded {done / 2**20:.1f} MiB", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._last = -1
        self._tenth = -1


# --------------------------------------------------------------------------------------------
# Frames of a run
# --------------------------------------------------------------------------------------------
def _clock(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def frame_progress_line(done: int, total: Optional[int], fps: float, elapsed: float, dropped: int = 0,
                        width: int = 80) -> str:
    """The progress line of a run, at most ``width`` characters.

    With a ``total`` (a file or a folder): ``frames  120/795 [####......]  15%  24.3 FPS  ETA 0:28``.
    Without (a camera, a stream, a looping file): ``frames 1234  24.9 FPS  0:51`` and the frames
    dropped to stay current, if any. ``fps`` is 0 until there is a rate, shown as ``--``.
    """
    rate = f"{fps:5.1f} FPS" if fps > 0 else "   -- FPS"
    if total:
        done = min(done, total)
        eta = _clock((total - done) / fps) if fps > 0 else "--:--"
        count = f"{done:>{len(str(total))}}/{total}"
        tail = f" {100 * done // total:3d}%  {rate}  ETA {eta}"
        room = width - len("frames ") - len(count) - len(tail) - 3
        if room >= 10:
            filled = room * done // total
            return f"frames {count} [{'#' * filled}{'.' * (room - filled)}]{tail}"
        return f"frames {count}{tail}"[:width]
    line = f"frames {done}  {rate}  {_clock(elapsed)}"
    if dropped:
        line += f"  dropped {dropped} to stay current"
    return line[:width]


class FrameProgress:
    """A live progress line on stderr while ``fcn-deploy run`` works: a bar with ETA when the
    number of frames is known, a running count for a camera or stream.

    ``count()`` returns ``(frames done, frames dropped)``; a thread calls it a few times a
    second and redraws the line. Nothing is drawn when stderr is not a terminal (a log file,
    a pipe, CI): the run's report says it all at the end. Log records written to the same
    terminal while the line is up first clear it, so that they are not glued to the bar.
    """

    INTERVAL_S = 0.25
    WINDOW_S = 2.0  # the FPS shown is over the last two seconds, so it follows changes

    def __init__(self, count, total: Optional[int], stream=None) -> None:
        self.count = count
        self.total = total
        self.stream = stream or sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(isatty is not None and isatty())
        self._samples = []  # (time, done) over the window
        self._stop = None
        self._thread = None
        self._lock = None
        self._shown = False
        self._started = 0.0
        self._handlers = []

    def __enter__(self) -> "FrameProgress":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        if not self.enabled:
            return
        import logging
        import threading
        import time

        self._started = time.perf_counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        for handler in logging.getLogger().handlers:
            if getattr(handler, "stream", None) is self.stream:
                handler.addFilter(self._clear_for_log)
                self._handlers.append(handler)
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self._thread.start()

    def _clear_for_log(self, record) -> bool:
        self._clear()
        return True

    def _clear(self) -> None:
        with self._lock:
            if self._shown:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
                self._shown = False

    def _loop(self) -> None:
        while not self._stop.wait(self.INTERVAL_S):
            self.draw()

    def fps(self, now: float, done: int) -> float:
        """Frames per second over the last :attr:`WINDOW_S` (0 until two samples differ)."""
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.WINDOW_S:
            self._samples.pop(0)
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 and d1 > d0 else 0.0

    def draw(self) -> None:
        import shutil
        import time

        done, dropped = self.count()
        now = time.perf_counter()
        width = max(20, shutil.get_terminal_size((80, 24)).columns - 1)
        line = frame_progress_line(done, self.total, self.fps(now, done), now - self._started, dropped, width)
        with self._lock:
            self.stream.write("\r" + line + "\x1b[K")
            self.stream.flush()
            self._shown = True

    def close(self) -> None:
        """Draw the last state and end the line (the report follows on its own lines)."""
        if not self.enabled or self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._thread = None
        self.draw()
        with self._lock:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False
        for handler in self._handlers:
            handler.removeFilter(self._clear_for_log)
        self._handlers = []
