"""A small disk that fills up, for the tests of issue 30 ("a full disk is reported as success").

Where the tests run as root and ``mount`` works (CI containers, this machine), :func:`small_disk`
mounts a real tmpfs of a few hundred kB: writes past it fail with ENOSPC, as on a full SD card.
Elsewhere it mounts nothing, and the test limits the size of any one file instead
(``RLIMIT_FSIZE``): a write past the limit fails with EFBIG, through the same ``write`` calls and
the same error paths. :func:`full_disk_reason` says which message to expect.
"""
from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Callable, Iterator


@contextlib.contextmanager
def small_disk(folder: Path, size: str = "300k") -> Iterator[bool]:
    """``folder`` created; a tmpfs of ``size`` mounted on it where possible (yields whether it
    was), unmounted afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = False
    if os.geteuid() == 0 and shutil.which("mount") is not None:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True)
        mounted = done.returncode == 0
    try:
        yield mounted
    finally:
        if mounted and subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], check=False)  # a file still open: detach it


def full_disk_reason(mounted: bool) -> str:
    """The system's words for the failed write: a full tmpfs, or a file over the size limit."""
    return "No space left on device" if mounted else "File too large"


def child_file_limit(mounted: bool, limit: int) -> "Callable[[], None] | None":
    """``preexec_fn`` for a child process: none on a real small disk, else writes past ``limit``
    bytes of one file fail (EFBIG) as on a full disk."""
    if mounted:
        return None

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@contextlib.contextmanager
def file_limit_here(mounted: bool, limit: int) -> Iterator[None]:
    """The same in this process (for library calls), undone afterwards; nothing on a real small disk."""
    if mounted:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
