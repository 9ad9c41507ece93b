"""The live page of the HTTP output: every stream, the legend, class shares and FPS/latency charts.

``GET /`` is ``assets/web/index.html``; its script and style (``/assets/live.js``,
``/assets/live.css``) are files of the package, served by the run itself, so the page works on a
network with no internet. The script reads ``/status.json`` (:meth:`LiveStatus.snapshot`) once a
second and shows each stream's MJPEG (``/stream.mjpg`` for one stream, ``/NAME`` for several),
its FPS and latency over the last minute, its class shares as bars, and a stream that failed as
failed. A token given to the output (``?token=``) is carried by the page to every request.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional, Tuple

from .results import LiveStatus

WEB_ASSETS = Path(__file__).resolve().parents[1] / "assets" / "web"
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8"}


class LivePage:
    """Answers the page's paths for :class:`~.mjpeg.MjpegServer` (its ``page`` route)."""

    def __init__(self, status: LiveStatus, assets: Path = WEB_ASSETS):
        self.status = status
        self._files: Dict[str, Tuple[str, bytes]] = {}
        for path in sorted(assets.iterdir()):  # read once: a request never touches the disk
            if path.suffix in _TYPES:
                self._files[path.name] = (_TYPES[path.suffix], path.read_bytes())

    def __call__(self, path: str) -> Optional[Tuple[str, bytes]]:
        if path in ("/", "/index.html"):
            return self._files["index.html"]
        if path == "/status.json":
            return "application/json", json.dumps(self.status.snapshot(), allow_nan=False).encode()
        if path.startswith("/assets/"):
            name = path[len("/assets/"):]
            if name != "index.html" and "/" not in name:
                return self._files.get(name)
        return None
