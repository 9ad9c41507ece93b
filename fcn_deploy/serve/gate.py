"""The HTTP front door of ``fcn-deploy serve``: bounds checked before Triton reads a request.

Why it exists: Triton 2.51's HTTP frontend allocates the buffer for a JSON request's
``"data"`` from the shape the request *declares*, before anything checks it; one request
declaring ``[1, 100000, 100000, 3]`` with three values made it throw ``std::bad_alloc`` and
abort, taking the server down. No Triton option bounds that (the model config's ``-1`` dims
have no maximum, and the model sees a request only after the allocation), and its gRPC
frontend and binary HTTP data are not affected (they compare the declared size with the bytes
received, and refuse a mismatch with 400 / INVALID_ARGUMENT). So Triton's HTTP service
listens on a private port on 127.0.0.1, and this gate takes the public HTTP port:

* ``POST /v2/models/NAME[/versions/V]/infer``: the JSON header is read and every input's
  declared shape is checked against the model's bounds (:mod:`fcn_deploy.serve.bounds`);
  JSON ``"data"`` must hold exactly one value per declared element. A request outside gets
  400 with Triton's error body, ``{"error": "..."}``, and never reaches Triton.
* a body must say its length (``Content-Length``), at most the bounds' largest batch of
  frames in binary plus 1 MiB (413 beyond), and a JSON body without binary data at most
  :data:`MAX_JSON_BODY` (tritonclient sends frames as binary data; JSON values are the
  debugging format).
* everything else (health, metadata, config, statistics, the restricted admin APIs with their
  key header) passes through unchanged; Triton answers it.
* at most :data:`MAX_CONNECTIONS` connections at once (one over gets 503), each dropped after
  :data:`TIMEOUT_S` seconds of silence; no log line per request.

Processes on this machine can still reach Triton's private port directly: the gate guards the
network, as the bind address does (docs/security.md).
"""
from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple

from ..runtime.metadata import LAYOUT_RAW_BGR
from .bounds import InputBounds

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 64
TIMEOUT_S = 60.0
MAX_JSON_BODY = 32 << 20  # 32 MiB of JSON values: ~8 M uint8 values, a 1080p frame
MAX_HEADER_JSON = 1 << 20
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
               "transfer-encoding", "upgrade", "host", "content-length", "expect"}
_DTYPE_BYTES = {"BOOL": 1, "UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "BF16": 2, "UINT32": 4,
                "INT32": 4, "FP32": 4, "UINT64": 8, "INT64": 8, "FP64": 8}


def _count(values: Any) -> int:
    """How many scalars a JSON ``"data"`` value holds (Triton accepts nested or flat lists)."""
    if isinstance(values, list):
        return sum(_count(v) for v in values)
    return 1


def check_infer(header: Dict[str, Any], bounds: InputBounds, layout: Optional[str]) -> Optional[str]:
    """Why the inference request whose JSON part is ``header`` is refused, or ``None``."""
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        return "an inference request needs a list of inputs"
    for entry in inputs:
        if not isinstance(entry, dict):
            return "each input must be a JSON object"
        name, shape = entry.get("name"), entry.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
            return f"input {name!r}: shape must be a list of integers"
        refused = bounds.refuse(shape, layout)
        if refused:
            return f"input {name!r}: {refused}"
        if "data" in entry:
            elements = 1
            for d in shape:
                elements *= d
            got = _count(entry["data"])
            if got != elements:
                return f"input {name!r}: shape {shape} declares {elements} values, 'data' holds {got}"
    return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16  # buffered: a reply's headers and body leave together
    server: "TritonGate"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.timeout_s)
        # Replies go out in one write; without NODELAY, Nagle's algorithm and the client's
        # delayed ACK would still hold a small reply back by up to 40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        log.debug("%s %s", self.address_string(), format % args)

    def _reply(self, status: int, body: bytes, headers: Optional[List[Tuple[str, str]]] = None) -> None:
        """Status, headers and body, sent together (see :meth:`setup`)."""
        self.send_response(status)
        for key, value in headers or [("Content-Type", "application/json")]:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()  # into wfile's buffer (wbufsize), sent with the body by the flush
        self.wfile.write(body)
        self.wfile.flush()

    def _refuse(self, status: int, message: str, close: bool = False) -> None:
        if close:
            self.close_connection = True
        self._reply(status, json.dumps({"error": message}).encode())

    def _body(self) -> Optional[bytes]:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._refuse(411, "send the body with a Content-Length, not chunked", close=True)
            return None
        length_text = self.headers.get("Content-Length", "0").strip()
        if not length_text.isdigit():
            self._refuse(400, "bad Content-Length", close=True)
            return None
        length = int(length_text)
        if length > self.server.max_body:
            self._refuse(413, f"request body of {length} bytes is larger than this server takes "
                              f"({self.server.max_body} bytes: {self.server.bounds.describe()})", close=True)
            return None
        return self.rfile.read(length) if length else b""

    def _checked(self, body: bytes) -> Optional[str]:
        """Why an inference request is refused before Triton sees it, or ``None``."""
        header_length = self.headers.get("Inference-Header-Content-Length")
        if header_length is not None:
            if not header_length.strip().isdigit() or not 0 < int(header_length) <= min(len(body), MAX_HEADER_JSON):
                return "bad Inference-Header-Content-Length"
            text = body[: int(header_length)]
        else:
            if len(body) > MAX_JSON_BODY:
                return (f"a JSON-only inference body is taken up to {MAX_JSON_BODY >> 20} MiB; "
                        "send tensors as binary data (tritonclient does)")
            text = body
        try:
            header = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            return f"the request is not JSON: {exc}"
        if not isinstance(header, dict):
            return "the request must be a JSON object"
        return check_infer(header, self.server.bounds, self.server.layout)

    def _forward(self) -> None:
        body = self._body() if self.command in ("POST", "PUT") else b""
        if body is None:
            return
        path = self.path.split("?", 1)[0]
        if self.command == "POST" and path.startswith("/v2/models/") and path.endswith("/infer"):
            refused = self._checked(body)
            if refused:
                self._refuse(400, refused)
                return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        try:
            status, reply_headers, reply = self.server.upstream(self.command, self.path, body, headers)
        except (OSError, http.client.HTTPException) as exc:
            self._refuse(502, f"the Triton server behind fcn-deploy serve did not answer: {exc}")
            return
        self._reply(status, reply, [(k, v) for k, v in reply_headers if k.lower() not in _HOP_BY_HOP])

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward


class TritonGate(ThreadingHTTPServer):
    """The public HTTP port in front of Triton's private one (see the module docstring)."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, host: str, port: int, triton_port: int, bounds: InputBounds, layout: Optional[str],
                 max_connections: int = MAX_CONNECTIONS, timeout_s: float = TIMEOUT_S) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.triton_port, self.bounds, self.layout = triton_port, bounds, layout
        element_bytes = 1 if layout in (None, LAYOUT_RAW_BGR) else 4  # uint8 frames, or float32 NCHW
        self.max_body = max(bounds.max_elements() * element_bytes + MAX_HEADER_JSON, MAX_JSON_BODY)
        self.timeout_s = timeout_s
        self._slots = threading.BoundedSemaphore(max_connections)
        self._local = threading.local()
        self._thread: Optional[threading.Thread] = None
        super().__init__((host, port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            body = b'{"error":"too many connections; retry later"}'
            try:
                request.settimeout(1.0)
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            connection = getattr(self._local, "connection", None)
            if connection is not None:
                connection.close()
                self._local.connection = None
            self._slots.release()

    def upstream(self, method: str, path: str, body: bytes, headers: Dict[str, str]) -> Tuple[int, List[Tuple[str, str]], bytes]:
        """One request to Triton over this thread's keep-alive connection (reopened once if Triton closed it)."""
        for attempt in (0, 1):
            connection = getattr(self._local, "connection", None)
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", self.triton_port, timeout=self.timeout_s)
                connection.connect()
                connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._local.connection = connection
            try:
                connection.request(method, path, body=body if body or method in ("POST", "PUT") else None,
                                   headers=headers)
                if _QUICKACK is not None:  # ACK Triton's reply headers at once: it sends the body after them
                    connection.sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
                response = connection.getresponse()
                return response.status, response.getheaders(), response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                connection.close()
                self._local.connection = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="fcn-deploy-gate", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join(10)
            self._thread = None
        self.server_close()
