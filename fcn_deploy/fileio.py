"""Writing files so that nothing the user had is lost to a failure half-way.

Checkpoints, ONNX files, engines, sidecars and logs are all written the same way: into a
temporary file in the target's folder (same file system), flushed to disk, then renamed over
the target in one ``os.replace``. A reader sees the old file or the whole new one, never half.
Torch-free, so the runtime can use it.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from typing import BinaryIO, Callable, Iterator, List, Optional, Sequence, Union

PathLike = Union[str, "os.PathLike[str]"]
Writer = Callable[[BinaryIO], None]

log = logging.getLogger(__name__)


def atomic_write(path: PathLike, data: Union[bytes, memoryview, str, Writer]) -> None:
    """Replace ``path`` atomically with ``data`` (bytes, text as UTF-8, or ``write(file)``)."""
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


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


def remove_stale_temps(folder: PathLike, names: Sequence[str]) -> List[str]:
    """Remove the temporary files :func:`atomic_write` left for ``names`` in ``folder`` when its
    process was killed mid-write (SIGKILL: no clean-up ran); return their paths.

    Only for a folder with one writer at a time (a training run's folder): there, a temporary
    file is always a dead writer's.
    """
    folder = os.fspath(folder)
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    removed = []
    for entry in entries:
        if entry.endswith(".tmp") and any(entry.startswith("." + name + ".") for name in names):
            path = os.path.join(folder, entry)
            with contextlib.suppress(OSError):
                os.unlink(path)
                removed.append(path)
                log.info("removed %s, left by a run that was killed while writing", path)
    return removed


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
