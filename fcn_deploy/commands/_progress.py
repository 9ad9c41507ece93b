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
