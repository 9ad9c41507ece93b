"""Writing files so that nothing the user had is lost to a failure half-way.

Checkpoints, ONNX files, engines, sidecars and logs are all written the same way: into a
temporary file in the target's folder (same file system), flushed to disk, then renamed over
the target in one ``os.replace``. A reader sees the old file or the whole new one, never half.
Torch-free, so the runtime can use it.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import shutil
import tempfile
from typing import BinaryIO, Callable, Iterator, List, Optional, Sequence, Union

PathLike = Union[str, "os.PathLike[str]"]
Writer = Callable[[BinaryIO], None]

log = logging.getLogger(__name__)


def atomic_write(path: PathLike, data: Union[bytes, memoryview, str, Writer], overwrite: bool = True,
                 durable: bool = True) -> None:
    """Replace ``path`` atomically with ``data`` (bytes, text as UTF-8, or ``write(file)``).

    With ``overwrite=False`` the file is created only if nothing is at ``path`` when it is put
    in place (checked atomically then: :class:`FileExistsError` otherwise, and nothing changes).
    ``durable=False`` skips the flushes to disk (``fsync``): the file is still whole or absent if
    the process dies, but not after a power cut; for the many small files of a video's frames,
    where an ``fsync`` each would cost more than the frame (tens of ms on an SD card).
    """
    with TempBeside(path) as temp:
        with open(temp.fd, "wb", closefd=False) as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
        temp.publish(overwrite, durable)


def write_failure(exc: BaseException) -> Optional[str]:
    """Why a write failed, in the system's words ("No space left on device"), where ``exc`` is or
    wraps an :class:`OSError` (``torch.save`` raises a ``RuntimeError`` about zip offsets over
    the ``OSError`` of the full disk); ``None`` where no write failed (a pickling error, a bug)."""
    seen: Optional[BaseException] = exc
    while seen is not None:
        if isinstance(seen, OSError):
            return seen.strerror or str(seen) or type(seen).__name__
        seen = seen.__cause__ or seen.__context__
    return None


TEMP_SUFFIX = ".tmp"


def _fsync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable (where the platform allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _lock(fd: int, blocking: bool = True) -> bool:
    """``flock`` ``fd`` exclusively; False if another process holds it (True without fcntl)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock, and no clean-up of other runs' temporary files
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return True
    except OSError:
        return False


class TempBeside:
    """A temporary file beside ``target`` (same folder, so the same file system), published
    under the target's name in one step when it is complete.

    Why: a reader, a crash or a full disk must never leave half a file under the name the user
    asked for. The file is ``.NAME.XXXX.tmp`` (hidden, and recognisable by
    :func:`remove_stale_temps`); this process holds an ``flock`` on it while it lives, so a
    later run can tell the leftover of a killed run (no lock) from another run's work in
    progress. Write to :attr:`fd` or let a library write to :attr:`path`, then
    :meth:`publish`; leaving the ``with`` block without publishing removes it.
    """

    def __init__(self, target: PathLike):
        self.target = os.path.abspath(os.path.expanduser(os.fspath(target)))
        self.folder = os.path.dirname(self.target)
        os.makedirs(self.folder, exist_ok=True)
        self.fd, self.path = tempfile.mkstemp(dir=self.folder, prefix="." + os.path.basename(self.target) + ".",
                                              suffix=TEMP_SUFFIX)
        _lock(self.fd)
        self.published = False

    def publish(self, overwrite: bool = True, durable: bool = True) -> None:
        """Flush the file to disk and put it at the target's name.

        ``overwrite=False``: the existence check is the creation itself (a hard link, which
        fails if the name is taken), so two runs finishing the same file cannot both succeed.
        Raises :class:`FileExistsError` then, or :class:`OSError` for a failed flush (a full
        disk); the temporary file is removed either way by :meth:`discard`/the ``with`` block.
        """
        if durable:
            os.fsync(self.fd)
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.path, 0o666 & ~umask)
        if overwrite:
            os.replace(self.path, self.target)
        else:
            _link_new(self.path, self.target)
        self.published = True
        if durable:
            _fsync_folder(self.folder)
        self._close_fd()

    def discard(self) -> None:
        """Remove the temporary file (nothing is published)."""
        self._close_fd()
        if not self.published:
            try:
                os.unlink(self.path)
            except OSError:
                pass

    def _close_fd(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock
            self.fd = None

    def __enter__(self) -> "TempBeside":
        return self

    def __exit__(self, *exc) -> None:
        self.discard()


def _link_new(source: str, target: str) -> None:
    """Give ``source`` the name ``target`` only if nothing has that name (atomically), then drop
    the name ``source``. File systems without hard links (FAT on an SD card) reserve the name
    with ``O_EXCL`` and rename over the empty reservation."""
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
            raise
        os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        os.replace(source, target)
        return
    os.unlink(source)


def remove_stale_temps(folder: PathLike, names: Sequence[str], min_age_s: float = 0.0) -> List[str]:
    """Remove the temporary files that :func:`atomic_write` and :class:`TempBeside` left for
    ``names`` in ``folder`` when their process was killed mid-write (SIGKILL, a power cut: no
    clean-up ran); return their paths.

    A temporary file whose lock a live process holds is another run's work in progress and is
    left alone, so this is safe in a folder that several runs write. ``min_age_s`` leaves
    younger files too (a writer takes its lock a moment after it creates the file).
    """
    import time

    folder = os.fspath(folder)
    removed: List[str] = []
    try:
        entries = os.listdir(folder)
    except OSError:
        return removed
    prefixes = tuple("." + name + "." for name in names)
    for entry in entries:
        if not (entry.endswith(TEMP_SUFFIX) and entry.startswith(prefixes)):
            continue
        path = os.path.join(folder, entry)
        try:
            if min_age_s and time.time() - os.stat(path).st_mtime < min_age_s:
                continue
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            if _lock(fd, blocking=False):
                os.unlink(path)
                removed.append(path)
                log.info("removed %s, left by a run that was killed while writing", path)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


# -- folders a user names: one line when one cannot be used ---------------------------------------
def _blocking_file(path: str) -> Optional[str]:
    """The nearest existing ancestor of ``path`` when it is a file (so nothing below it can be
    made), else ``None``."""
    parent = os.path.dirname(os.path.abspath(path))
    while parent and not os.path.exists(parent):
        up = os.path.dirname(parent)
        if up == parent:
            return None
        parent = up
    return parent if parent and not os.path.isdir(parent) else None


def _folder_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be made into (or used as) a folder to write in, or ``None`` once it
    exists and a file can be created in it."""
    if os.path.exists(path) and not os.path.isdir(path):
        return f"{path} is a file, not a folder"
    blocker = _blocking_file(path)
    if blocker is not None:
        return f"{blocker} is a file, not a folder"
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        return f"cannot create {path}: {exc.strerror or exc}"
    try:  # a real file: os.access says yes to root on a read-only mount or in /proc
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        return f"cannot write in {path}: {exc.strerror or exc}"
    return None


def make_folder(folder: PathLike, what: str) -> str:
    """Create ``folder`` (and its parents) for writing, or raise one
    :class:`~fcn_deploy.errors.FcnDeployError` line naming ``what`` (``--labels-dir``, say):
    a file in its place or on its path, a place where nothing can be created (``/proc``), a
    folder that cannot be written. Checked before any work starts, not at the first write."""
    from .errors import FcnDeployError

    path = os.path.expanduser(os.fspath(folder))
    problem = _folder_problem(path)
    if problem is not None:
        raise FcnDeployError(f"{what} {os.fspath(folder)}: {problem}")
    return path


def check_output_file(path: PathLike, what: str) -> None:
    """Fail now, in one line, where the file ``path`` could not be written later: it is a
    folder, or its folder cannot be created or written in. The folder is created."""
    from .errors import FcnDeployError

    text = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if os.path.isdir(text):
        raise FcnDeployError(f"{what} {os.fspath(path)} is a folder; give a file name")
    problem = _folder_problem(os.path.dirname(text))
    if problem is not None:
        raise FcnDeployError(f"{what} {os.fspath(path)}: {problem}")


# -- what a failed command created: removed again -------------------------------------------------
def _missing_folders(path: str) -> List[str]:
    """``path`` and those of its parents that do not exist yet: what creating it creates."""
    missing = []
    path = os.path.abspath(path)
    while not os.path.exists(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing


@contextlib.contextmanager
def removed_on_failure(files: Sequence[PathLike] = (), folders: Sequence[PathLike] = ()) -> Iterator[None]:
    """Undo, if the body raises (an error, Ctrl-C, SIGTERM turned into an exception), what it
    created of ``files`` and ``folders`` (and of their parent folders): a file that did not
    exist before is removed, a folder that did not exist is removed while it is empty. What
    existed before is never touched, and a folder that got something in it (a checkpoint to
    resume from) stays. Only SIGKILL or a power cut leaves an empty folder behind.
    """
    new_files = [os.path.abspath(os.fspath(f)) for f in files if not os.path.lexists(os.fspath(f))]
    new_folders: List[str] = []
    for target in [os.path.dirname(f) for f in new_files] + [os.fspath(d) for d in folders]:
        new_folders += _missing_folders(target)
    try:
        yield
    except BaseException:
        for path in new_files:
            with contextlib.suppress(OSError):
                os.unlink(path)
        for folder in sorted(set(new_folders), key=len, reverse=True):  # children before parents
            with contextlib.suppress(OSError):  # not empty, or gone: leave it
                os.rmdir(folder)
        raise


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def user_cache_root() -> str:
    """fcn-deploy's folder in the user's cache, the one rule for everything cached: downloaded
    weights and dataset archives, engine caches, benchmark exports.

    ``$FCN_DEPLOY_HOME``, else ``$FCN_DEPLOY_CACHE`` (its earlier name), else
    ``$XDG_CACHE_HOME/fcn-deploy``, else ``~/.cache/fcn-deploy``.
    """
    explicit = os.environ.get("FCN_DEPLOY_HOME") or os.environ.get("FCN_DEPLOY_CACHE")
    if explicit:
        return os.path.abspath(os.path.expanduser(explicit))
    return os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "fcn-deploy"
    )


@contextlib.contextmanager
def unpacking_folder(folder: PathLike, prefix: str) -> Iterator[str]:
    """A fresh temporary folder ``folder/prefix*`` to unpack into, as the only fcn-deploy
    process unpacking into ``folder``; it is removed afterwards (move what you keep out of it).

    First the folders ``prefix*`` that an interrupted run (killed, power cut: no ``finally``
    ran) left are removed: each may hold a whole dataset or server, and under the lock none of
    them can be another run's. The lock is ``flock`` on ``folder`` itself, released when the
    process ends however it ends, so no lock file is left beside the user's data. Without
    ``fcntl`` (Windows) there is neither lock nor clean-up.
    """
    from .errors import FcnDeployError

    folder = os.fspath(folder)
    try:
        import fcntl
    except ImportError:
        fcntl = None
    try:
        fd = os.open(folder, os.O_RDONLY) if fcntl is not None else None
    except OSError as exc:
        raise FcnDeployError(f"cannot unpack into {folder}: {exc.strerror}") from None
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            for name in sorted(os.listdir(folder)):
                if name.startswith(prefix):
                    log.info("removing %s, left by an interrupted run", os.path.join(folder, name))
                    shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
        try:
            work = tempfile.mkdtemp(prefix=prefix, dir=folder)
        except OSError as exc:
            raise FcnDeployError(f"cannot create a folder in {folder}: {exc.strerror}") from None
        try:
            yield work
        finally:
            shutil.rmtree(work, ignore_errors=True)
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock
