"""Writing files so that nothing the user had is lost to a failure half-way.

Checkpoints, ONNX files, engines, sidecars and logs are all written the same way: into a
temporary file in the target's folder (same file system), flushed to disk, then renamed over
the target in one ``os.replace``. A reader sees the old file or the whole new one, never half.
Torch-free, so the runtime can use it.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from typing import BinaryIO, Callable, Union

PathLike = Union[str, "os.PathLike[str]"]
Writer = Callable[[BinaryIO], None]


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
