"""The HTTP output: MJPEG streams and the live page, served so that viewers can never hurt the run.

Each viewer of a stream gets ``multipart/x-mixed-replace`` (what browsers, VLC and ffplay show
as a moving picture): one JPEG part per published frame. ``GET /`` is the live page
(:mod:`.web_page`), ``GET /stream.mjpg`` the main stream (with several streams, their mosaic)
and ``GET /NAME`` stream ``NAME``.

Why it is built the way it is: an edge box sits on a shared network, and the run's own work
(label files, video files) matters more than any viewer. So:

* **Private by default.** With no host (``http://:8090``) it listens on 127.0.0.1 only.
* **One thread, no thread per connection.** A selector loop serves every socket without
  blocking; the publisher (the pipeline) only swaps in the newest JPEG and never waits.
* **Bounded.** At most ``max_viewers`` stream viewers (one more gets ``503``) and at most
  ``max_pending`` connections that have not finished their request (more are answered 503 and
  closed at once), so the file descriptors the server holds stay bounded however many clients
  connect, and the pipeline keeps the ones it needs for its files.
* **Timeouts.** A request must arrive within ``request_timeout`` seconds; a viewer that stops
  reading (no byte taken for ``send_timeout`` seconds) is dropped. A viewer that reads slowly
  but steadily simply skips to the newest frame.
* **A small send buffer per viewer** (:data:`VIEWER_SEND_BUFFER`). Linux grows a TCP socket's
  send buffer to megabytes, so a slow viewer on a fast link looked fast: every frame was copied
  into the kernel for it (about 170 us a 30 kB frame on loopback, 14 ms a frame with 50 slow
  viewers, a fifth of a 2-core box's frame time), and its backlog held seconds of old frames.
  With a few frames of buffer, a slow viewer pushes back at once and skips to the newest.
* **Optional token.** With ``token``, every request needs ``?token=...`` (or an
  ``Authorization: Bearer ...`` header), compared in constant time (:func:`hmac.compare_digest`).

The URI grammar (``--output``): ``http://[HOST]:PORT[?token=SECRET&viewers=N]``
(:func:`parse_http_output`).
"""
from __future__ import annotations

import errno
import hmac
import logging
import re
import selectors
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import FcnDeployError

log = logging.getLogger(__name__)

BOUNDARY = "fcndeployframe"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8090
DEFAULT_MAX_VIEWERS = 16
DEFAULT_MAX_PENDING = 32
DEFAULT_SEND_TIMEOUT_S = 10.0
DEFAULT_REQUEST_TIMEOUT_S = 5.0
MAX_REQUEST_BYTES = 8192
# SO_SNDBUF asked for each viewer (Linux doubles it): four 30 kB frames at 480x360 and, for a
# viewer across a LAN, room for MJPEG's few Mbit/s; see the module docstring.
VIEWER_SEND_BUFFER = 64 * 1024
STREAM_PATHS = ("/stream.mjpg", "/stream")
RESERVED_NAMES = ("index.html", "view", "stream", "stream.mjpg", "status.json", "assets", "")

# A page route: path -> (content type, body), or None when the path is not the page's.
PageRoute = Callable[[str], Optional[Tuple[str, bytes]]]


class HttpOutputError(FcnDeployError):
    """An HTTP output URI that cannot be served."""


@dataclass
class HttpOutputOptions:
    """What ``--output http://...`` asks for: where to listen, who may watch, how many."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: Optional[str] = None
    max_viewers: int = DEFAULT_MAX_VIEWERS


def parse_http_output(uri: str) -> HttpOutputOptions:
    """``http://[HOST]:PORT[/][?token=SECRET&viewers=N]`` -> :class:`HttpOutputOptions`.

    No host (``http://:8090``) means 127.0.0.1: exposing the stream to the network is a
    deliberate ``http://0.0.0.0:8090``. Unknown query keys are an error, so a typo such as
    ``?tokn=`` cannot silently leave the stream open.
    """
    text = uri.strip()
    shown = re.sub(r"(token=)[^&]*", r"\1***", text)  # error lines never echo the secret
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise HttpOutputError(f"bad port in {shown!r}: expected http://HOST:PORT") from None
    if parts.scheme.lower() != "http":
        raise HttpOutputError(f"{shown!r} is not an http:// output")
    if "@" in parts.netloc:
        raise HttpOutputError(f"{shown!r}: user names are not supported; use ?token=SECRET")
    host = (parts.hostname or "").strip("[]") or DEFAULT_HOST
    if port is None:
        port = DEFAULT_PORT
    if parts.path not in ("", "/"):
        raise HttpOutputError(f"{shown!r}: the HTTP output takes no path (streams are served at /NAME)")
    options = HttpOutputOptions(host=host, port=port)
    query = parse_qs(parts.query, keep_blank_values=True)
    for key, values in query.items():
        value = values[-1]
        if key == "token":
            if not value:
                raise HttpOutputError(f"{shown!r}: ?token= is empty; give a secret or leave it out")
            options.token = value
        elif key in ("viewers", "max-viewers"):
            if not re.fullmatch(r"[0-9]+", value) or int(value) < 1:
                raise HttpOutputError(f"{shown!r}: viewers must be a positive number, not {value!r}")
            options.max_viewers = int(value)
        else:
            raise HttpOutputError(f"{shown!r}: unknown option {key!r}; the HTTP output takes token= and viewers=")
    return options


def _response(status: str, content_type: str, body: bytes, extra: str = "") -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            f"Cache-Control: no-cache, no-store\r\nX-Content-Type-Options: nosniff\r\n{extra}"
            "Connection: close\r\n\r\n")
    return head.encode("latin-1") + body


def _error(status: str, text: str, extra: str = "") -> bytes:
    return _response(status, "text/plain; charset=utf-8", (text + "\n").encode(), extra)


BUSY = _error("503 Service Unavailable", "too many viewers; try again later", "Retry-After: 5\r\n")
CROWDED = _error("503 Service Unavailable", "too many connections; try again later", "Retry-After: 5\r\n")
STREAM_HEAD = (
    "HTTP/1.1 200 OK\r\n"
    f"Content-Type: multipart/x-mixed-replace; boundary={BOUNDARY}\r\n"
    "Cache-Control: no-cache, no-store\r\nPragma: no-cache\r\nConnection: close\r\n\r\n"
).encode("latin-1")


class _Connection:
    """One client socket: what it sent so far, what is left to send it, and its deadline."""

    __slots__ = ("sock", "request", "out", "sent", "channel", "seen", "deadline", "closing")

    def __init__(self, sock: socket.socket, deadline: float):
        self.sock = sock
        self.request = bytearray()
        self.out: bytes = b""
        self.sent = 0
        self.channel: Optional[str] = None  # set once it is a stream viewer
        self.seen = 0  # sequence number of the last frame queued to it
        self.deadline = deadline
        self.closing = False  # close once ``out`` is sent

    @property
    def pending_output(self) -> bool:
        return self.sent < len(self.out)


class MjpegServer:
    """Serve the newest published JPEG of each channel to its viewers, from one daemon thread.

    ``port=0`` picks a free port; :attr:`address` says which. ``page`` answers the other paths
    (the live page, its assets and status), or ``None`` for a plain page that shows the stream.
    """

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, token: Optional[str] = None,
                 max_viewers: int = DEFAULT_MAX_VIEWERS, max_pending: int = DEFAULT_MAX_PENDING,
                 send_timeout: float = DEFAULT_SEND_TIMEOUT_S, request_timeout: float = DEFAULT_REQUEST_TIMEOUT_S,
                 page: Optional[PageRoute] = None):
        if max_viewers < 1 or max_pending < 1:
            raise HttpOutputError("the HTTP output needs room for at least one viewer and one request")
        self.token = token
        self.max_viewers = max_viewers
        self.max_pending = max_pending
        self.send_timeout = send_timeout
        self.request_timeout = request_timeout
        self.page = page
        self.refused = 0  # connections answered 503 (over a cap): for logs and tests
        self.dropped = 0  # viewers dropped for not reading
        self._lock = threading.Lock()
        # channel -> (newest multipart part, its sequence number); "" is the main stream (or the mosaic)
        self._frames: Dict[str, Tuple[bytes, int]] = {"": (b"", 0)}
        self._viewers: Dict[str, int] = {}
        self._connections: Dict[int, _Connection] = {}
        self._closed = False
        self._wake_pending = False
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self._listener = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            raise HttpOutputError(f"cannot serve on http://{host}:{port}: {exc.strerror or exc}") from None
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((host, port))
            self._listener.listen(128)
            self._listener.setblocking(False)
            self._waker, self._wake_end = socket.socketpair()
            self._waker.setblocking(False)
            self._wake_end.setblocking(False)
        except (OSError, OverflowError) as exc:
            self._listener.close()
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise HttpOutputError(f"cannot serve on http://{host}:{port}: {why}") from None
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, "listen")
        self._selector.register(self._wake_end, selectors.EVENT_READ, "wake")
        self._accept_paused_until = 0.0
        self._thread = threading.Thread(target=self._serve, name="http-output", daemon=True)
        self._thread.start()

    # -- what the pipeline calls ----------------------------------------------------------------
    @property
    def address(self) -> Tuple[str, int]:
        host, port = self._listener.getsockname()[:2]
        return host, port

    @property
    def channels(self) -> List[str]:
        return list(self._frames)

    def add_channel(self, name: str) -> None:
        """Serve a stream at ``/name`` too (before or while running)."""
        if not name or "/" in name or "?" in name or name in RESERVED_NAMES:
            raise HttpOutputError(f"cannot serve a stream named {name!r} over HTTP")
        with self._lock:
            self._frames.setdefault(name, (b"", 0))

    def clients_of(self, channel: str = "") -> int:
        """How many viewers ``channel`` has now: nobody watching means no JPEG to encode."""
        return self._viewers.get(channel, 0)

    @property
    def clients(self) -> int:
        return self.clients_of("")

    @property
    def viewers(self) -> int:
        """Viewers of every channel together (what ``max_viewers`` caps)."""
        return sum(list(self._viewers.values()))

    @property
    def connections(self) -> int:
        """Sockets held now (viewers and requests in progress): bounded by the caps."""
        return len(self._connections)

    def publish(self, jpeg: bytes, channel: str = "") -> None:
        """Make ``jpeg`` the frame every viewer of ``channel`` gets next. Never blocks on a viewer."""
        part = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
                + jpeg + b"\r\n")
        with self._lock:
            self._frames[channel] = (part, self._frames.get(channel, (b"", 0))[1] + 1)
            wake = not self._wake_pending
            self._wake_pending = True
        if wake:
            try:
                self._waker.send(b"\0")
            except OSError:  # the pipe is full (the loop will look anyway) or closed
                pass

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._waker.send(b"\0")
        except OSError:
            pass
        self._thread.join(timeout=5.0)
        for conn in list(self._connections.values()):
            self._drop(conn)
        self._selector.close()
        for sock in (self._listener, self._waker, self._wake_end):
            sock.close()

    # -- the loop -------------------------------------------------------------------------------
    def _serve(self) -> None:
        try:
            while not self._closed:
                now = time.monotonic()
                if self._accept_paused_until and now >= self._accept_paused_until:
                    self._selector.register(self._listener, selectors.EVENT_READ, "listen")
                    self._accept_paused_until = 0.0
                for key, mask in self._selector.select(timeout=0.25):
                    if key.data == "listen":
                        self._accept()
                    elif key.data == "wake":
                        self._drain_wake()
                    else:
                        conn = key.data
                        if mask & selectors.EVENT_READ:
                            self._read(conn)
                        if mask & selectors.EVENT_WRITE and conn.sock.fileno() >= 0:
                            self._write(conn)
                self._feed_viewers()
                self._expire(time.monotonic())
        except Exception:  # a bug here must never take the run down: the stream stops, the run goes on
            log.exception("the HTTP output stopped")

    def _drain_wake(self) -> None:
        # Empty the pipe first, then let publish() wake the loop again: a frame published in
        # between is queued by _feed_viewers later in this same turn of the loop.
        try:
            while self._wake_end.recv(4096):
                pass
        except OSError:
            pass
        with self._lock:
            self._wake_pending = False

    def _accept(self) -> None:
        for _ in range(64):  # a burst at a time; the loop comes back for more
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors (the run's own files need them): stop accepting for a moment.
                    log.warning("HTTP output: cannot accept a viewer (%s); pausing", exc.strerror)
                    self._selector.unregister(self._listener)
                    self._accept_paused_until = time.monotonic() + 0.5
                    return
                continue  # ECONNABORTED and the like: that client is gone
            pending = len(self._connections) - self.viewers
            if pending >= self.max_pending:
                self.refused += 1
                try:
                    sock.setblocking(False)
                    sock.send(CROWDED)
                except OSError:
                    pass
                sock.close()
                continue
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, VIEWER_SEND_BUFFER)
            except OSError:  # a platform without it: the kernel's own buffer, as before
                pass
            conn = _Connection(sock, time.monotonic() + self.request_timeout)
            self._connections[sock.fileno()] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)
            self._read(conn)  # a request sent with the connection is answered now: it frees its place at once

    def _read(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        if not data:  # the client closed its side
            self._drop(conn)
            return
        if conn.channel is not None or conn.closing:
            return  # a viewer or a client being answered: what it sends now is ignored
        conn.request += data
        end = conn.request.find(b"\r\n\r\n")
        if end < 0:
            if len(conn.request) > MAX_REQUEST_BYTES:
                self._answer(conn, _error("431 Request Header Fields Too Large", "request too large"))
            return
        self._handle(conn, bytes(conn.request[:end]))

    def _handle(self, conn: _Connection, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        fields = lines[0].split()
        if len(fields) != 3 or not fields[2].startswith("HTTP/"):
            self._answer(conn, _error("400 Bad Request", "bad request"))
            return
        method, target = fields[0], fields[1]
        if method not in ("GET", "HEAD"):
            self._answer(conn, _error("405 Method Not Allowed", "only GET", "Allow: GET, HEAD\r\n"))
            return
        path, _, query = target.partition("?")
        path = unquote(path)
        if self.token is not None and not self._authorised(lines[1:], query):
            self._answer(conn, _error("401 Unauthorized", "this stream needs ?token=",
                                      'WWW-Authenticate: Bearer realm="fcn-deploy"\r\n'))
            return
        channel = self._channel_of(path)
        if channel is not None:
            if method == "HEAD":
                self._answer(conn, STREAM_HEAD.split(b"\r\n\r\n")[0] + b"\r\n\r\n")
            elif self.viewers >= self.max_viewers:
                self.refused += 1
                self._answer(conn, BUSY)
            else:
                self._watch(conn, channel)
            return
        routed = self.page(path) if self.page is not None else _plain_page(path)
        if routed is None:
            self._answer(conn, _error("404 Not Found", "no such page; try /"))
            return
        content_type, body = routed
        reply = _response("200 OK", content_type, body)
        self._answer(conn, reply.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" if method == "HEAD" else reply)

    def _authorised(self, header_lines: List[str], query: str) -> bool:
        given = parse_qs(query).get("token", [""])[-1]
        for line in header_lines:
            name, _, value = line.partition(":")
            if name.strip().lower() == "authorization" and value.strip().lower().startswith("bearer "):
                given = value.strip()[7:].strip()
        # Constant time: how long the comparison takes says nothing about how much of the token matched.
        return hmac.compare_digest(given.encode("utf-8"), self.token.encode("utf-8"))  # type: ignore[union-attr]

    def _channel_of(self, path: str) -> Optional[str]:
        if path in STREAM_PATHS:
            return ""
        name = path.strip("/")
        if name.endswith(".mjpg"):
            name = name[:-5]
        return name if name and name in self._frames else None

    def _watch(self, conn: _Connection, channel: str) -> None:
        conn.channel = channel
        conn.seen = 0
        self._viewers[channel] = self._viewers.get(channel, 0) + 1
        self._queue(conn, STREAM_HEAD)

    def _answer(self, conn: _Connection, reply: bytes) -> None:
        conn.closing = True
        self._queue(conn, reply)

    def _queue(self, conn: _Connection, data: bytes) -> None:
        conn.out, conn.sent = data, 0
        conn.deadline = time.monotonic() + self.send_timeout
        self._write(conn)
        if conn.sock.fileno() >= 0 and conn.pending_output:
            self._selector.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)

    def _write(self, conn: _Connection) -> None:
        try:
            while conn.pending_output:
                sent = conn.sock.send(memoryview(conn.out)[conn.sent:])
                if sent <= 0:
                    break
                conn.sent += sent
                conn.deadline = time.monotonic() + self.send_timeout  # progress: the viewer is reading
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        if not conn.pending_output:
            if conn.closing:
                self._drop(conn)
                return
            self._selector.modify(conn.sock, selectors.EVENT_READ, conn)

    def _feed_viewers(self) -> None:
        """Queue the newest frame to every viewer that has sent the last one."""
        with self._lock:
            frames = dict(self._frames)
        for conn in list(self._connections.values()):
            if conn.channel is None or conn.pending_output or conn.sock.fileno() < 0:
                continue
            part, number = frames.get(conn.channel, (b"", 0))
            if number != conn.seen and part:
                conn.seen = number
                self._queue(conn, part)

    def _expire(self, now: float) -> None:
        for conn in list(self._connections.values()):
            waiting = conn.channel is None or conn.pending_output  # a request, or a frame not taken
            if waiting and now > conn.deadline:
                if conn.channel is not None:
                    self.dropped += 1
                    log.info("HTTP output: dropped a viewer of %r that stopped reading", conn.channel or "/")
                self._drop(conn)

    def _drop(self, conn: _Connection) -> None:
        fileno = conn.sock.fileno()
        if fileno < 0:
            return
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        self._connections.pop(fileno, None)
        if conn.channel is not None:
            self._viewers[conn.channel] -= 1
            conn.channel = None
        conn.sock.close()


def _plain_page(path: str) -> Optional[Tuple[str, bytes]]:
    """The page without the live page's module: the stream, full width."""
    if path not in ("/", "/index.html"):
        return None
    body = ("<!doctype html><html><head><title>fcn-deploy</title></head><body style='margin:0;background:#111'>"
            "<img id='s' style='max-width:100%'><script>document.getElementById('s').src='stream.mjpg'"
            "+location.search</script></body></html>")
    return "text/html; charset=utf-8", body.encode()
