"""A real headless browser for the tests: Debian's ``chromium`` (``apt-get install chromium``).

``browser_problem()`` says why the tests that need it skip; ``page_result(url)`` loads a page
and returns what its script wrote into ``document.title`` once it finished (the DOM that
``--dump-dom`` prints after ``--virtual-time-budget``); ``serve_folder(folder)`` serves files
on 127.0.0.1 with their proper types, as a page and its video need.
"""
from __future__ import annotations

import contextlib
import functools
import re
import shutil
import subprocess
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, List, Optional

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-default-apps", "--disable-sync", "--no-first-run",
                  "--mute-audio", "--autoplay-policy=no-user-gesture-required"]


@functools.lru_cache(maxsize=None)
def chromium() -> Optional[str]:
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


def browser_problem() -> Optional[str]:
    """Why no headless browser test can run here, or ``None``."""
    if chromium() is None:
        return "no chromium on PATH (apt-get install chromium)"
    return None


def page_result(url: str, budget_ms: int = 10000, timeout: float = 90.0, extra: List[str] = ()) -> str:
    """Load ``url`` in headless Chromium; the page's ``<title>`` after the time budget."""
    with tempfile.TemporaryDirectory() as profile:
        command = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                   f"--virtual-time-budget={budget_ms}", *extra, "--dump-dom", url]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    match = re.search(r"<title>(.*?)</title>", result.stdout, re.S)
    if match is None:
        raise AssertionError(f"chromium printed no page (exit {result.returncode}): {result.stderr[-2000:]}")
    return match.group(1)


@contextlib.contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """Serve ``folder`` at ``http://127.0.0.1:PORT/`` (yielded) while the block runs."""

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


VIDEO_PAGE = """<!doctype html><html><head><title>loading</title></head><body>
<video id="v" src="{src}" muted autoplay playsinline></video>
<script>
const v = document.getElementById('v');
function report(what) {{
  document.title = what + ' readyState=' + v.readyState + ' width=' + v.videoWidth + ' height=' + v.videoHeight
    + ' time=' + v.currentTime.toFixed(2) + ' duration=' + (v.duration || 0).toFixed(2)
    + ' error=' + (v.error ? v.error.code : 0);
}}
v.addEventListener('error', () => report('error'));
v.addEventListener('loadeddata', () => report('loaded'));
v.addEventListener('timeupdate', () => {{ if (v.currentTime > 0.3) report('playing'); }});
</script></body></html>"""


def play_video(folder: Path, name: str, budget_ms: int = 8000) -> dict:
    """Play ``folder/name`` in a ``<video>`` of headless Chromium; the element's state as a dict
    (``state``: loaded / playing / error, ``readyState``, ``width``, ``height``, ``time``...)."""
    page = folder / "play_video.html"
    page.write_text(VIDEO_PAGE.format(src=name))
    try:
        with serve_folder(folder) as base:
            title = page_result(base + page.name, budget_ms)
    finally:
        page.unlink()
    words = title.split()
    result = {"state": words[0] if words else title}
    for word in words[1:]:
        key, _, value = word.partition("=")
        result[key] = float(value) if value.replace(".", "", 1).isdigit() else value
    return result
