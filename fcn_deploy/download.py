"""Fetching published files (datasets, weights) over HTTP(S) so that nothing is lost or half-done.

One function, :func:`download`, does what every download here needs:

* it streams into ``DEST.part`` and resumes a ``.part`` left by an interrupted run with an
  HTTP ``Range`` request (a server that ignores Range answers 200 instead of 206, and the file
  is then fetched from the start);
* it checks the published checksum (sha256 where the publisher gives one, else the md5 they
  give, and the size where known) *before* the file is renamed into place, so a truncated or
  tampered file never takes the name of the good one: a mismatch is refused in one line,
  whatever was at ``DEST`` stays as it was, and the bad ``.part`` is removed;
* ``max_bytes`` bounds what is fetched where the publisher gives no size (an archive's expected
  size times a margin): a ``Content-Length`` over it is refused before a byte is written, and a
  body that runs past it (no or a false ``Content-Length``) is stopped there and its ``.part``
  removed, so a server cannot fill the disk;
* a write that fails (a full disk) is one line and is not retried: the ``.part`` stays for the
  next run to resume once there is room;
* without network it says in one line which URL it could not reach and where to put the file
  by hand (a file placed there is then checked like a download);
* progress goes to a callback ``progress(done_bytes, total_bytes_or_None)``; library code
  never prints, the CLI draws a bar (:func:`fcn_deploy.commands._progress.download_bar`).

Standard library only and Python 3.8 compatible: the runtime (no PyTorch) uses it too.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import socket
import urllib.error
import urllib.request
from typing import Callable, Iterator, Optional

from .errors import FcnDeployError, first_line
from .fileio import user_cache_root

log = logging.getLogger(__name__)

Progress = Callable[[int, Optional[int]], None]
CHUNK = 1 << 20
USER_AGENT = "fcn-deploy-downloader"


class DownloadError(FcnDeployError):
    """A file could not be fetched, or what came does not match its published checksum."""


def cache_dir(*parts: str) -> str:
    """A folder under the user cache (:func:`fcn_deploy.fileio.user_cache_root`), created."""
    path = os.path.join(user_cache_root(), *parts)
    os.makedirs(path, exist_ok=True)
    return path


class Checksum:
    """What a published file must hash to: its sha256 and/or md5 (hex), and/or its size.

    Publishers give different things (torchvision the sha256, whose first 8 hex digits name
    the file; PASCAL VOC and pytorch-fcn an md5); every value given is checked.
    """

    def __init__(self, sha256: Optional[str] = None, md5: Optional[str] = None, size: Optional[int] = None) -> None:
        self.sha256 = sha256.lower() if sha256 else None
        self.md5 = md5.lower() if md5 else None
        self.size = size

    def __repr__(self) -> str:
        return f"Checksum(sha256={self.sha256!r}, md5={self.md5!r}, size={self.size!r})"

    @property
    def empty(self) -> bool:
        return not (self.sha256 or self.md5 or self.size is not None)

    def mismatch(self, path: str) -> Optional[str]:
        """None if the file at ``path`` matches, else what differs (for a one-line error)."""
        size = os.path.getsize(path)
        if self.size is not None and size != self.size:
            return f"size {size} bytes, expected {self.size}"
        if not (self.sha256 or self.md5):
            return None
        sha256, md5 = hashlib.sha256(), hashlib.md5()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                if self.sha256:
                    sha256.update(block)
                if self.md5:
                    md5.update(block)
        if self.sha256 and sha256.hexdigest() != self.sha256:
            return f"sha256 {sha256.hexdigest()}, expected {self.sha256}"
        if self.md5 and md5.hexdigest() != self.md5:
            return f"md5 {md5.hexdigest()}, expected {self.md5}"
        return None


def _offline_hint(url: str, dest: str) -> str:
    hint = f"download {url} on a machine with network access and place it at {dest}"
    if os.path.isfile(dest):
        hint += " (the file there now does not match its published checksum)"
    return hint


def _open(url: str, start: int, timeout_s: float):
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if start:
        request.add_header("Range", f"bytes={start}-")
    return urllib.request.urlopen(request, timeout=timeout_s)  # noqa: S310 (http(s) only, checked)


def _content_start(response, start: int) -> int:
    """Where the body begins in the file: ``start`` for a 206 that starts there, else 0."""
    if start and response.status == 206:
        content_range = response.headers.get("Content-Range", "")  # "bytes START-END/TOTAL"
        try:
            first = int(content_range.split()[1].split("-")[0])
        except (IndexError, ValueError):
            first = -1
        if first == start:
            return start
    return 0


def _total_size(response, offset: int) -> Optional[int]:
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


class TooLarge(DownloadError):
    """More bytes came (or were announced) than the file can hold; its ``.part`` is removed."""


def _too_large(url: str, size: int, max_bytes: int, announced: bool) -> TooLarge:
    what = f"announces {size} bytes" if announced else f"sent more than {max_bytes} bytes"
    return TooLarge(f"{url} {what}, over the {max_bytes} this file can be (its expected size with a margin); "
                    "stopped, nothing was kept")


class WriteFailed(DownloadError):
    """Writing the ``.part`` failed (a full disk, a read-only cache): not the network's fault, so
    not retried; the ``.part`` stays for the next run to resume once there is room."""


@contextlib.contextmanager
def _written(part: str) -> Iterator[None]:
    """Writes to ``part`` inside: an :class:`OSError` there is :class:`WriteFailed`, one line."""
    try:
        yield
    except OSError as exc:
        raise WriteFailed(f"cannot write {part} ({exc.strerror or exc}); make room there and run again: "
                          "the download resumes from what was written") from None


def _fetch_once(url: str, part: str, timeout_s: float, progress: Optional[Progress],
                max_bytes: Optional[int] = None) -> None:
    """One GET into ``part``, resuming from its current length where the server allows;
    never more than ``max_bytes`` in all (:class:`TooLarge`)."""
    start = os.path.getsize(part) if os.path.isfile(part) else 0
    try:
        response = _open(url, start, timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # the .part is as long as the file (or longer): start over
            os.unlink(part)
            return _fetch_once(url, part, timeout_s, progress, max_bytes)
        raise
    with response:
        offset = _content_start(response, start)
        if start and not offset:
            log.info("%s: the server sent the whole file instead of the rest; downloading it again", url)
        total = _total_size(response, offset)
        if max_bytes is not None and total is not None and total > max_bytes:
            raise _too_large(url, total, max_bytes, announced=True)
        done = offset
        if progress:
            progress(done, total)
        with _written(part):  # only the writes: a read that fails is the network's, and retried
            f = open(part, "r+b" if offset else "wb")
        with f:
            with _written(part):
                f.seek(offset)
                f.truncate()
            while True:
                block = response.read(CHUNK)
                if not block:
                    break
                done += len(block)
                if max_bytes is not None and done > max_bytes:
                    raise _too_large(url, done, max_bytes, announced=False)
                with _written(part):
                    f.write(block)
                if progress:
                    progress(done, total)
            with _written(part):
                f.flush()
                os.fsync(f.fileno())
    if total is not None and done < total:  # a server that closed early without an error
        raise http.client.IncompleteRead(b"", total - done)


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    """Hold an exclusive lock on ``.NAME.lock`` beside ``path`` (POSIX ``flock``, released if the process dies),
    so that the processes of one ``torchrun`` job fetch a shared file once, not into one
    ``.part`` together. Where ``fcntl`` is missing (Windows) there is no lock."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    folder, name = os.path.split(path)
    with open(os.path.join(folder, "." + name + ".lock"), "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def download(
    url: str,
    dest: str,
    checksum: Optional[Checksum] = None,
    progress: Optional[Progress] = None,
    timeout_s: float = 30.0,
    retries: int = 3,
    max_bytes: Optional[int] = None,
) -> str:
    """Fetch ``url`` to ``dest`` (verified against ``checksum``); return ``dest``.

    A ``dest`` that already matches the checksum is used as it is (so a file placed by hand
    works offline). Interrupted transfers are retried ``retries`` times, each resuming the
    ``.part``; one that still fails leaves the ``.part`` for the next run to resume.
    ``max_bytes``: the most the file may be (see the module docstring); ``None``, no bound.
    """
    checksum = checksum or Checksum()
    dest = os.path.abspath(dest)
    if not url.startswith(("http://", "https://")):
        raise DownloadError(f"not an http(s) URL: {url}")
    if os.path.isfile(dest) and checksum.mismatch(dest) is None:
        return dest
    try:
        os.makedirs(os.path.dirname(dest), exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create {os.path.dirname(dest)} ({exc.strerror}); {_offline_hint(url, dest)}") from None
    with _locked(dest):
        return _download_locked(url, dest, checksum, progress, timeout_s, retries, max_bytes)


def _download_locked(url: str, dest: str, checksum: Checksum, progress: Optional[Progress],
                     timeout_s: float, retries: int, max_bytes: Optional[int]) -> str:
    if os.path.isfile(dest):  # another process may have fetched it while this one waited
        problem = checksum.mismatch(dest)
        if problem is None:
            return dest
        log.warning("%s does not match its published checksum (%s); downloading it again", dest, problem)
    part = dest + ".part"
    attempt = 0
    while True:
        try:
            _fetch_once(url, part, timeout_s, progress, max_bytes)
            break
        except TooLarge:
            if os.path.exists(part):
                os.unlink(part)
            raise
        except urllib.error.HTTPError as exc:
            raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}; {_offline_hint(url, dest)}") from None
        except urllib.error.URLError as exc:  # no route, refused, DNS: nothing to retry
            reason = exc.reason if isinstance(exc.reason, str) else first_line(exc.reason)
            raise DownloadError(f"cannot reach {url} ({reason}); {_offline_hint(url, dest)}") from None
        except (OSError, http.client.HTTPException, socket.timeout) as exc:
            have = os.path.getsize(part) if os.path.isfile(part) else 0
            attempt += 1
            if attempt > retries:
                raise DownloadError(
                    f"download of {url} interrupted after {have} bytes ({type(exc).__name__}); "
                    f"run again to resume from {part}, or {_offline_hint(url, dest)}"
                ) from None
            log.info("%s: interrupted after %d bytes (%s); resuming", url, have, type(exc).__name__)
    problem = checksum.mismatch(part)
    if problem is not None:
        with open(part, "rb") as f:
            head = f.read(512).lstrip().lower()
        if head.startswith((b"<!doctype html", b"<html")):
            # Google Drive answers a quota or sign-in problem with a page, not the file.
            problem += "; the server sent a web page instead of the file: open the URL in a browser"
        os.unlink(part)
        kept = f"{dest} left as it was" if os.path.exists(dest) else "nothing was written"
        raise DownloadError(f"{url} does not match its published checksum ({problem}); {kept}")
    os.replace(part, dest)
    return dest
