"""A minimal MJPEG-over-HTTP server: how a headless Jetson shows its live view in a browser.

Each client gets ``multipart/x-mixed-replace`` (the format browsers, VLC and ffplay show as a
moving picture): one JPEG part per published frame. Clients that read slower than frames are
published simply skip to the newest frame; the publisher never waits for a client. JPEG
encoding is done by the caller only while someone is watching (:attr:`MjpegServer.clients`).

``GET /`` and ``GET /stream.mjpg`` serve the stream; ``GET /index.html`` a page that embeds it.
With several streams, each is a *channel*: ``GET /NAME`` serves stream ``NAME``, ``/`` the
mosaic of all of them, and ``/index.html`` links every channel.
"""
from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple

from ..errors import FcnDeployError

log = logging.getLogger(__name__)

BOUNDARY = "fcndeployframe"
PAGE = (
    "<!doctype html><html><head><title>fcn-deploy</title></head>"
    "<body style='margin:0;background:#111'><img src='/stream.mjpg' style='max-width:100%'></body></html>"
)


class MjpegServer:
    """Serve the newest published JPEG to every connected client, on its own daemon threads.

    ``port=0`` picks a free port; :attr:`address` says which.
    """

    def __init__(self, host: str = "0.0.0.0", port: int = 8554):
        self._condition = threading.Condition()
        # channel -> (newest JPEG, its sequence number); "" is the main stream (or the mosaic)
        self._frames: Dict[str, Tuple[Optional[bytes], int]] = {"": (None, 0)}
        self._closed = False
        self._clients: Dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt, *args):  # route the access log to logging, not stderr
                log.debug("mjpeg %s: " + fmt, self.address_string(), *args)

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                channel = path.strip("/")
                if path in ("/index.html", "/view"):
                    body = server._page().encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif path in ("/", "/stream.mjpg", "/stream"):
                    server._stream(self, "")
                elif channel in server.channels:
                    server._stream(self, channel)
                else:
                    self.send_error(404, "try / or /index.html")

        try:
            self._httpd = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise FcnDeployError(f"cannot serve MJPEG on http://{host}:{port}: {exc.strerror or exc}") from None
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="mjpeg-server", daemon=True)
        self._thread.start()

    @property
    def address(self) -> Tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return host, port

    @property
    def channels(self) -> List[str]:
        return list(self._frames)

    def add_channel(self, name: str) -> None:
        """Serve a stream at ``/name`` too (before or while running)."""
        if not name or "/" in name or name in ("index.html", "view", "stream", "stream.mjpg"):
            raise FcnDeployError(f"cannot serve a stream named {name!r} over HTTP")
        with self._condition:
            self._frames.setdefault(name, (None, 0))

    def clients_of(self, channel: str = "") -> int:
        """How many viewers ``channel`` has now: nobody watching means no JPEG to encode."""
        return self._clients.get(channel, 0)

    @property
    def clients(self) -> int:
        return self.clients_of("")

    def publish(self, jpeg: bytes, channel: str = "") -> None:
        """Make ``jpeg`` the frame every client of ``channel`` gets next."""
        with self._condition:
            self._frames[channel] = (jpeg, self._frames.get(channel, (None, 0))[1] + 1)
            self._condition.notify_all()

    def _page(self) -> str:
        named = [c for c in self._frames if c]
        if not named:
            return PAGE
        links = " ".join(f"<a style='color:#ccc' href='/{c}'>{c}</a>" for c in named)
        return PAGE.replace("<img", f"<div style='padding:4px;font:14px sans-serif'>{links}</div><img")

    def _stream(self, handler: BaseHTTPRequestHandler, channel: str) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        handler.send_header("Cache-Control", "no-cache, no-store")
        handler.send_header("Pragma", "no-cache")
        handler.send_header("Connection", "close")
        handler.end_headers()
        with self._condition:
            self._clients[channel] = self._clients.get(channel, 0) + 1
        seen = 0
        try:
            while True:
                with self._condition:
                    self._condition.wait_for(lambda: self._closed or self._frames[channel][1] != seen, timeout=1.0)
                    if self._closed:
                        return
                    if self._frames[channel][1] == seen:
                        continue
                    jpeg, seen = self._frames[channel]
                handler.wfile.write(
                    f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
                )
                handler.wfile.write(jpeg)
                handler.wfile.write(b"\r\n")
                handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the viewer went away
        finally:
            with self._condition:
                self._clients[channel] -= 1

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=2.0)
