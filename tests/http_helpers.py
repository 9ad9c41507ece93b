"""A real HTTP server on 127.0.0.1 for the download tests: Range requests, and responses cut
mid-body on request, so resuming is tested against real sockets rather than a mock."""
from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple


class FileServer:
    """Serves ``files`` (URL path -> bytes). ``cut[path] = n`` makes the next response to that
    path stop after n body bytes (the connection is closed with the Content-Length unmet);
    ``ignore_range`` answers every request with the whole file (200); ``no_length`` leaves out
    Content-Length (the body ends when the connection closes). ``requests`` records
    (path, Range header or None) of every GET."""

    def __init__(self) -> None:
        self.files: Dict[str, bytes] = {}
        self.cut: Dict[str, int] = {}
        self.ignore_range = False
        self.no_length = False  # send no Content-Length: the body ends when the connection closes
        self.redirects: Dict[str, str] = {}  # path -> path, answered with 302 (as GitHub's archive URLs)
        self.requests: List[Tuple[str, Optional[str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep the test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                if self.path in server.redirects:
                    self.send_response(302)
                    self.send_header("Location", server.redirects[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                start = 0
                if rng and not server.ignore_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                part = body[start:]
                if server.no_length:
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(len(part)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                limit = server.cut.pop(self.path, None)
                if limit is not None:
                    self.wfile.write(part[:limit])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(part)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def __enter__(self) -> "FileServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def refused_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (the port was just free): connection refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/file.bin"
