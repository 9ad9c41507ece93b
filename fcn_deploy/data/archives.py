"""Archives of published datasets: checked (a git tree id, every zip member's CRC) and unpacked
safely, for :mod:`fcn_deploy.data.download`.

Kept apart from fetching because this is the part that reads untrusted bytes: every member's
path is checked to stay inside the target folder, links and devices are refused, unpacking is
bounded (a "zip bomb" stops early), and anything wrong with an archive (cut short, a bad CRC,
not an archive at all) is one :class:`BadArchive` line, never a traceback from ``tarfile`` or
``zipfile``. A write that fails (a full disk) is not the archive's fault and says so.
"""
from __future__ import annotations

import hashlib
import os
import stat
import tarfile
import zipfile
from typing import BinaryIO, Callable, Iterator, Optional, Sequence

from ..errors import FcnDeployError, first_line

CHUNK = 1 << 20


class BadArchive(FcnDeployError):
    """An archive that cannot be read to its end, unpacks to too much, or fails its check: not
    worth keeping, so :mod:`fcn_deploy.data.download` removes it from the cache."""


# ---------------------------------------------------------------------------- checking

def _git_object(kind: bytes, data: bytes) -> bytes:
    return hashlib.sha1(kind + b" %d\0" % len(data) + data).digest()


def _blob_sha1(path: str) -> bytes:
    digest = hashlib.sha1(b"blob %d\0" % os.path.getsize(path))
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()


def _tree_sha1(path: str, names: Optional[Sequence[str]] = None) -> Optional[bytes]:
    entries = []
    for name in os.listdir(path) if names is None else names:
        full = os.path.join(path, name)
        raw = os.fsencode(name)
        if os.path.isdir(full):
            sub = _tree_sha1(full)
            if sub is not None:  # git keeps no empty folders
                entries.append((raw + b"/", b"40000 " + raw + b"\0" + sub))
        else:
            mode = b"100755" if os.stat(full).st_mode & stat.S_IXUSR else b"100644"
            entries.append((raw, mode + b" " + raw + b"\0" + _blob_sha1(full)))
    if not entries:
        return None
    return _git_object(b"tree", b"".join(e for _, e in sorted(entries)))


def git_tree_id(path: str, names: Optional[Sequence[str]] = None) -> str:
    """The id git gives the folder ``path`` as a tree (``git write-tree`` of its files).

    Publishers on GitHub pin a folder by commit, and the commit pins this id, so it checks a
    downloaded folder byte for byte. ``names`` limits the top level to those entries.
    """
    tree = _tree_sha1(path, names)
    return (tree or _git_object(b"tree", b"")).hex()


def check_zip(path: str) -> None:
    """Every member's CRC-32 (a zip's own checksum), for zips published without one."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except Exception as exc:  # noqa: BLE001 (zipfile and its decompressors raise many types)
        raise BadArchive(f"{path} is not a readable zip ({type(exc).__name__}: {first_line(exc)})") from None
    if bad is not None:
        raise BadArchive(f"{path} is damaged ({bad} fails its CRC check)")


# ---------------------------------------------------------------------------- unpacking

def _safe_member_path(top: str, name: str, archive: str) -> str:
    """``top/name``, refusing names that would land outside ``top`` (absolute, ``..``)."""
    clean = name.replace("\\", "/")
    parts = [p for p in clean.split("/") if p not in ("", ".")]
    if clean.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
        raise BadArchive(f"{archive}: member {name!r} would be written outside the target folder; refused")
    target = os.path.realpath(os.path.join(top, *parts))
    if os.path.commonpath([target, os.path.realpath(top)]) != os.path.realpath(top):
        raise BadArchive(f"{archive}: member {name!r} would be written outside the target folder; refused")
    return target


def _member_name(name: str) -> str:
    """A member's name as ``keep`` sees it: forward slashes, no leading ``./``."""
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name


class _Budget:
    """Bytes left to unpack: :class:`BadArchive` once members write more than ``limit``."""

    def __init__(self, archive: str, limit: Optional[int]) -> None:
        self.archive, self.limit, self.used = archive, limit, 0

    def take(self, n: int) -> None:
        self.used += n
        if self.limit is not None and self.used > self.limit:
            raise BadArchive(f"{self.archive} unpacks to more than {self.limit} bytes, over this dataset's "
                             "expected size with a margin; stopped there")


def _damaged(archive: str, exc: BaseException) -> BadArchive:
    """What reading ``archive`` raised, as one line: truncated gzip (EOFError), bad CRC
    (BadZipFile), a broken stream (zlib.error, OSError) all mean the same to the user."""
    return BadArchive(f"{archive} is damaged or cut short ({type(exc).__name__}: {first_line(exc)})")


_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ")  # gzip, bzip2, xz


def _copy_member(src: BinaryIO, path: str, archive: str, budget: _Budget) -> None:
    """Copy one member to ``path``: a read that fails is the archive's fault (:class:`BadArchive`),
    a write that fails (a full disk) is not, and says so."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as out:
        while True:
            try:
                block = src.read(CHUNK)
            except FcnDeployError:
                raise
            except Exception as exc:  # noqa: BLE001 (each decompressor has its own error types)
                raise _damaged(archive, exc) from None
            if not block:
                return
            budget.take(len(block))
            try:
                out.write(block)
            except OSError as exc:
                raise FcnDeployError(f"cannot write {path} while unpacking: {exc.strerror or exc}") from None


def _tar_members(tf: tarfile.TarFile, archive: str) -> Iterator[tarfile.TarInfo]:
    """The members of ``tf``, a header that cannot be read being :class:`BadArchive`."""
    members = iter(tf)
    while True:
        try:
            member = next(members)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 (tarfile.ReadError, EOFError, zlib.error, ...)
            raise _damaged(archive, exc) from None
        yield member


def extract(archive: str, dest: str, keep: Callable[[str], bool] = lambda name: True,
            max_bytes: Optional[int] = None) -> int:
    """Unpack the tar (any compression) or zip ``archive`` into ``dest``; return files written.

    Only regular files and folders are written (links and devices are refused), each at a
    path checked to stay inside ``dest``; ``keep(name)`` skips members not wanted. Members
    kept write at most ``max_bytes`` in all (counted as written, whatever the archive claims).
    Anything wrong with the archive is one :class:`BadArchive` line.
    """
    budget = _Budget(archive, max_bytes)
    count = 0
    if zipfile.is_zipfile(archive):
        try:
            zf = zipfile.ZipFile(archive)
        except Exception as exc:  # noqa: BLE001
            raise _damaged(archive, exc) from None
        with zf:
            for info in zf.infolist():
                if not keep(_member_name(info.filename)):
                    continue
                target = _safe_member_path(dest, info.filename, archive)
                if info.is_dir():
                    os.makedirs(target, exist_ok=True)
                    continue
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise BadArchive(f"{archive}: member {info.filename!r} is a link; refused")
                try:
                    src = zf.open(info)
                except Exception as exc:  # noqa: BLE001 (a bad local header, an unknown compression)
                    raise _damaged(archive, exc) from None
                with src:
                    _copy_member(src, target, archive, budget)
                count += 1
        return count
    try:
        tf = tarfile.open(archive)
    except Exception as exc:  # noqa: BLE001 (ReadError lists every method tried, one per line)
        with open(archive, "rb") as f:  # gzip, bzip2 or xz that ends before the first tar header
            compressed = f.read(6).startswith(_COMPRESSED_MAGIC)
        kind = "is damaged or cut short" if compressed else "is neither a tar nor a zip archive"
        raise BadArchive(f"{archive} {kind} ({type(exc).__name__})") from None
    with tf:
        for member in _tar_members(tf, archive):
            if not keep(_member_name(member.name)):
                continue
            target = _safe_member_path(dest, member.name, archive)
            if member.isdir():
                os.makedirs(target, exist_ok=True)
            elif member.isfile():
                try:
                    src = tf.extractfile(member)
                except Exception as exc:  # noqa: BLE001
                    raise _damaged(archive, exc) from None
                _copy_member(src, target, archive, budget)
                count += 1
            elif member.type == tarfile.XGLTYPE or member.type == tarfile.XHDTYPE:
                continue
            else:
                raise BadArchive(f"{archive}: member {member.name!r} is a link or device; refused")
    return count
