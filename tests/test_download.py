"""fcn_deploy.download against a real local HTTP server: verify, resume, refuse, offline.

Also the weight files by name (fcn_deploy.models.weight_files): a real state dict served
and loaded into a small model through ``load_pretrained``.
"""
from __future__ import annotations

import hashlib

import pytest
from http_helpers import FileServer, refused_url

from small_disk import file_limit_here, full_disk_reason, small_disk

from fcn_deploy.download import Checksum, DownloadError, WriteFailed, download
from fcn_deploy.fileio import user_cache_root

pytestmark = pytest.mark.runtime

PAYLOAD = bytes(range(256)) * 4096 * 3  # 3 MiB: several reads of fcn_deploy.download.CHUNK


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def server():
    with FileServer() as s:
        s.files["/w.bin"] = PAYLOAD
        yield s


def test_download_verifies_sha256_and_md5_and_reports_progress(server, tmp_path):
    seen = []
    dest = tmp_path / "sub" / "w.bin"
    checksum = Checksum(sha256=sha(PAYLOAD), md5=hashlib.md5(PAYLOAD).hexdigest(), size=len(PAYLOAD))
    out = download(server.url("/w.bin"), str(dest), checksum, progress=lambda d, t: seen.append((d, t)))
    assert out == str(dest) and dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "sub" / "w.bin.part").exists()
    assert seen[0] == (0, len(PAYLOAD)) and seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    # Present and matching: used as it is, no request.
    n = len(server.requests)
    download(server.url("/w.bin"), str(dest), checksum)
    assert len(server.requests) == n


def test_checksum_mismatch_is_refused_and_the_good_file_kept(server, tmp_path):
    dest = tmp_path / "w.bin"
    dest.write_bytes(b"the good old file")
    wrong = Checksum(sha256=sha(b"something else"))
    with pytest.raises(DownloadError) as info:
        download(server.url("/w.bin"), str(dest), wrong)
    message = str(info.value)
    assert "\n" not in message and "does not match its published checksum" in message
    assert sha(PAYLOAD) in message and "left as it was" in message
    assert dest.read_bytes() == b"the good old file"
    assert not (tmp_path / "w.bin.part").exists()


def test_md5_mismatch_names_md5(server, tmp_path):
    with pytest.raises(DownloadError, match="md5 .* expected 0{32}"):
        download(server.url("/w.bin"), str(tmp_path / "w.bin"), Checksum(md5="0" * 32))
    assert not (tmp_path / "w.bin").exists()


def test_interrupted_download_resumes_with_range(server, tmp_path):
    dest = tmp_path / "w.bin"
    cut_at = len(PAYLOAD) // 3
    server.cut["/w.bin"] = cut_at
    with pytest.raises(DownloadError, match="interrupted after .* run again to resume"):
        download(server.url("/w.bin"), str(dest), Checksum(sha256=sha(PAYLOAD)), retries=0)
    part = tmp_path / "w.bin.part"
    assert part.stat().st_size == cut_at and not dest.exists()
    download(server.url("/w.bin"), str(dest), Checksum(sha256=sha(PAYLOAD)))
    assert dest.read_bytes() == PAYLOAD and not part.exists()
    assert server.requests[-1] == ("/w.bin", f"bytes={cut_at}-")


def test_a_cut_is_retried_within_one_call(server, tmp_path):
    server.cut["/w.bin"] = 1000
    download(server.url("/w.bin"), str(tmp_path / "w.bin"), Checksum(sha256=sha(PAYLOAD)))
    assert [r for _, r in server.requests] == [None, "bytes=1000-"]


def test_a_full_disk_is_one_line_not_retried_and_the_part_resumes_once_there_is_room(server, tmp_path):
    """A write that fails is not the network's fault: no retry (three more requests that would
    fail the same way), one line that says so, and the ``.part`` written so far is kept."""
    small = tmp_path / "small"
    dest = small / "w.bin"
    checksum = Checksum(sha256=sha(PAYLOAD))
    with small_disk(small, "300k") as mounted, file_limit_here(mounted, 300 * 1024):
        with pytest.raises(WriteFailed) as info:
            download(server.url("/w.bin"), str(dest), checksum)
        message = str(info.value)
        kept = (small / "w.bin.part").read_bytes()
    assert "\n" not in message and f"cannot write {dest}.part ({full_disk_reason(mounted)})" in message, message
    assert "make room there and run again: the download resumes" in message
    assert server.requests == [("/w.bin", None)]  # not retried
    assert 0 < len(kept) <= 300 * 1024 and PAYLOAD.startswith(kept)
    roomy = tmp_path / "roomy" / "w.bin"  # where there is room, the next run resumes from the .part
    roomy.parent.mkdir()
    (tmp_path / "roomy" / "w.bin.part").write_bytes(kept)
    download(server.url("/w.bin"), str(roomy), checksum)
    assert roomy.read_bytes() == PAYLOAD and server.requests[-1] == ("/w.bin", f"bytes={len(kept)}-")


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    part = tmp_path / "w.bin.part"
    part.write_bytes(b"X" * 5000)  # a stale partial file: must not stay in front of the data
    server.ignore_range = True
    download(server.url("/w.bin"), str(tmp_path / "w.bin"), Checksum(sha256=sha(PAYLOAD)))
    assert (tmp_path / "w.bin").read_bytes() == PAYLOAD
    assert server.requests[-1] == ("/w.bin", "bytes=5000-")


def test_part_as_long_as_the_file_starts_over(server, tmp_path):
    (tmp_path / "w.bin.part").write_bytes(b"Y" * len(PAYLOAD))  # 416 Range Not Satisfiable
    download(server.url("/w.bin"), str(tmp_path / "w.bin"), Checksum(sha256=sha(PAYLOAD)))
    assert (tmp_path / "w.bin").read_bytes() == PAYLOAD


def test_offline_is_one_line_naming_url_and_place(tmp_path):
    url = refused_url()
    dest = tmp_path / "w.bin"
    with pytest.raises(DownloadError) as info:
        download(url, str(dest), Checksum(sha256=sha(PAYLOAD)), timeout_s=5)
    message = str(info.value)
    assert "\n" not in message and f"cannot reach {url}" in message and f"place it at {dest}" in message
    # Placing the file there by hand then works offline.
    dest.write_bytes(PAYLOAD)
    assert download(url, str(dest), Checksum(sha256=sha(PAYLOAD))) == str(dest)


def test_http_404_is_one_line(server, tmp_path):
    with pytest.raises(DownloadError, match=r"HTTP 404"):
        download(server.url("/missing.bin"), str(tmp_path / "m.bin"))


def test_cache_root_rule(monkeypatch, tmp_path):
    monkeypatch.delenv("FCN_DEPLOY_CACHE", raising=False)
    monkeypatch.setenv("FCN_DEPLOY_HOME", str(tmp_path / "home"))
    assert user_cache_root() == str(tmp_path / "home")
    monkeypatch.delenv("FCN_DEPLOY_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_root() == str(tmp_path / "xdg" / "fcn-deploy")


def test_concurrent_downloads_of_one_file_fetch_it_once(server, tmp_path):
    """Two processes of one torchrun job asking for the same weights: one GET, both get the file."""
    import threading

    dest = str(tmp_path / "w.bin")
    results, errors = [], []

    def fetch() -> None:
        try:
            results.append(download(server.url("/w.bin"), dest, Checksum(sha256=sha(PAYLOAD))))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [dest, dest]
    assert len(server.requests) == 1
    assert open(dest, "rb").read() == PAYLOAD


def test_a_web_page_instead_of_the_file_is_named(server, tmp_path):
    server.files["/drive"] = b"<!DOCTYPE html><html><title>Google Drive - Quota exceeded</title></html>"
    with pytest.raises(DownloadError, match="sent a web page instead of the file"):
        download(server.url("/drive"), str(tmp_path / "w.bin"), Checksum(md5="0" * 32))


def test_redirect_is_followed_and_range_kept(server, tmp_path):
    """GitHub's archive URLs answer 302 to codeload; a resume must carry its Range through."""
    server.redirects["/archive/w.bin"] = "/w.bin"
    (tmp_path / "w.bin.part").write_bytes(PAYLOAD[:777])
    download(server.url("/archive/w.bin"), str(tmp_path / "w.bin"), Checksum(sha256=sha(PAYLOAD)))
    assert (tmp_path / "w.bin").read_bytes() == PAYLOAD
    assert server.requests == [("/archive/w.bin", "bytes=777-"), ("/w.bin", "bytes=777-")]


@pytest.mark.parametrize("announced", [True, False], ids=["content-length", "no-content-length"])
def test_max_bytes_stops_a_download_that_runs_over(server, tmp_path, announced):
    """A file bigger than its expected size with a margin is refused when announced, or
    stopped as the body passes the bound when not; its .part is removed, nothing kept."""
    server.no_length = not announced
    dest = tmp_path / "w.bin"
    with pytest.raises(DownloadError) as info:
        download(server.url("/w.bin"), str(dest), max_bytes=len(PAYLOAD) // 3)
    message = str(info.value)
    assert "\n" not in message and "stopped, nothing was kept" in message
    assert (f"announces {len(PAYLOAD)} bytes" if announced else f"sent more than {len(PAYLOAD) // 3} bytes") in message
    assert sorted(p.name for p in tmp_path.iterdir()) == [".w.bin.lock"]
    # The bound leaves a file within it alone.
    assert download(server.url("/w.bin"), str(dest), max_bytes=len(PAYLOAD)) == str(dest)
    assert dest.read_bytes() == PAYLOAD
