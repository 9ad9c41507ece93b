"""A small RTSP server in the run itself: live H.264 that ffplay, ffmpeg, VLC and GStreamer read.

``--output rtsp://127.0.0.1:8554/live`` serves the rendered frames at that URL; nothing else
needs to run (no media server to install on the board). Why RTSP: it is what NVRs, VLC,
DeepStream and jetson-inference speak, and H.264 over it takes a fraction of MJPEG's bandwidth
(``benchmarks/stream_bandwidth.py`` measures both on the bundled clip).

What it implements of RTSP 1.0 (RFC 2326) is what a player needs to watch: ``OPTIONS``,
``DESCRIBE`` (an SDP with one H.264 track), ``SETUP`` over TCP only (RTP interleaved in the
RTSP connection, ``RTP/AVP/TCP``; a UDP request is answered ``461 Unsupported Transport``,
after which ffmpeg and VLC retry over TCP: nothing to open in a firewall, nothing lost to
packet loss), ``PLAY``, ``GET_PARAMETER`` (keep-alive) and ``TEARDOWN``. H.264 is carried
as RFC 6184 packets (single NAL units, FU-A fragments above 1400 bytes), made by :mod:`.rtp`;
this module is the server: connections, requests, channels and viewers.

Each *channel* (a path: ``/live``, or ``/live/NAME`` per stream of a multi-stream run) has
its own encoder, started when the first viewer plays it and stopped when the last leaves,
so a stream nobody watches costs nothing. A new viewer makes the encoder send a key frame
(with SPS/PPS in band), so a player starts within a frame. The encoder runs on the channel's
thread and each viewer has its own sender thread and bounded queue: a slow viewer skips to
the next key frame and never holds the pipeline or the other viewers back.

Safety (as for the HTTP output): the server binds 127.0.0.1 unless the URL names a host,
accepts at most ``MAX_VIEWERS`` connections, bounds the size and time of every request, and
offers no control over the run: a client can only watch.
"""
from __future__ import annotations

import collections
import logging
import queue
import secrets
import socket
import threading
from typing import Dict, List, Optional, Tuple
from urllib.parse import urlsplit

import numpy as np

from ..errors import FcnDeployError
from .encoders import VideoSettings, even_size, pyav_problem
from .rtp import (  # noqa: F401 (split_annexb, rtp_payloads: this module's public names before rtp.py)
    PAYLOAD_TYPE,
    RTP_CLOCK,
    LiveEncoder,
    frame_rate,
    is_keyframe,
    rtp_packet,
    rtp_payloads,
    split_annexb,
)
from .sink import Sink

log = logging.getLogger(__name__)

DEFAULT_PORT = 8554
DEFAULT_HOST = "127.0.0.1"
MAX_VIEWERS = 16
MAX_REQUEST_BYTES = 16384
REQUEST_TIMEOUT_S = 30.0  # a connection that sends no complete request for this long is closed
VIEWER_QUEUE = 32  # access units waiting for one viewer before it skips to the next key frame


class RtspError(FcnDeployError):
    """An RTSP output that cannot be served."""


# -- viewers and channels ----------------------------------------------------------------------
class Viewer:
    """One playing client: its own RTP sequence and SSRC, a bounded queue and a sender thread."""

    def __init__(self, connection: "Connection", interleaved: int):
        self.connection = connection
        self.interleaved = interleaved
        self.sequence = secrets.randbelow(1 << 16)
        self.ssrc = secrets.randbits(32)
        self.queue: "queue.Queue" = queue.Queue(maxsize=VIEWER_QUEUE)
        self.waiting_for_keyframe = True
        self.sent_bytes = 0
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._send_all, name="rtsp-viewer", daemon=True)

    def offer(self, units: List[bytes], timestamp: int, keyframe: bool) -> bool:
        """Queue one access unit; False when the viewer is behind (it then waits for a key frame)."""
        if self.waiting_for_keyframe and not keyframe:
            return True
        try:
            self.queue.put_nowait((units, timestamp))
            self.waiting_for_keyframe = False
            return True
        except queue.Full:
            self.waiting_for_keyframe = True
            return False

    def _send_all(self) -> None:
        while not self.closed.is_set():
            try:
                item = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            units, timestamp = item
            payloads = rtp_payloads(units)
            frames = []
            for index, payload in enumerate(payloads):
                packet = rtp_packet(payload, self.sequence, timestamp, self.ssrc, index == len(payloads) - 1)
                self.sequence += 1
                frames.append(b"$" + bytes([self.interleaved]) + len(packet).to_bytes(2, "big") + packet)
            data = b"".join(frames)
            if not self.connection.send(data):
                break
            self.sent_bytes += len(data)
        self.closed.set()


class Channel:
    """One path's stream: the newest frame waiting, the encoder thread, the viewers."""

    def __init__(self, path: str, settings: VideoSettings):
        self.path = path
        self.settings = settings
        self.viewers: List[Viewer] = []
        self.lock = threading.Lock()
        self._frames: "queue.Queue" = queue.Queue(maxsize=1)
        self._keyframe = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._closed = threading.Event()
        self._clock_start: Optional[float] = None
        self._captured: "collections.deque" = collections.deque(maxlen=20)  # the latest frames' times: the rate
        self.encoded_bytes = 0
        self.encoded_frames = 0

    def add(self, viewer: Viewer) -> None:
        with self.lock:
            self.viewers.append(viewer)
            self._keyframe.set()
            if self._thread is None:
                self._thread = threading.Thread(target=self._encode_all, name=f"rtsp-encode-{self.path}",
                                                daemon=True)
                self._thread.start()
        viewer.thread.start()

    def remove(self, viewer: Viewer) -> None:
        viewer.closed.set()
        with self.lock:
            if viewer in self.viewers:
                self.viewers.remove(viewer)

    @property
    def watched(self) -> bool:
        return bool(self.viewers)

    def publish(self, image: np.ndarray, captured: float) -> None:
        """Hand the newest frame to the encoder (an older one still waiting is dropped: live)."""
        with self.lock:
            self._captured.append(captured)
        if not self.viewers:
            return
        while True:
            try:
                self._frames.put_nowait((image, captured))
                return
            except queue.Full:
                try:
                    self._frames.get_nowait()
                except queue.Empty:
                    pass

    def _encode_all(self) -> None:
        encoder: Optional[LiveEncoder] = None
        guessed = False  # the encoder's rate is from fewer frames than _captured holds
        try:
            while not self._closed.is_set():
                with self.lock:
                    viewers = [v for v in self.viewers if not v.closed.is_set()]
                    self.viewers = viewers
                    if not viewers:
                        self._thread = None  # the next viewer starts a fresh encoder (and thread)
                        return
                try:
                    image, captured = self._frames.get(timeout=0.2)
                except queue.Empty:
                    continue
                size = (image.shape[1], image.shape[0])
                with self.lock:
                    known = list(self._captured)
                if encoder is not None and guessed and len(known) == self._captured.maxlen:
                    guessed = False  # a viewer came before the rate was known: now it is
                    if abs(frame_rate(known) / encoder.fps - 1) > 0.2:
                        encoder = None
                if encoder is None or encoder.size != even_size(*size):
                    encoder = LiveEncoder(size, self.settings, frame_rate(known))
                    log.debug("rtsp %s: H.264 %dx%d at %.1f fps", self.path, *encoder.size, encoder.fps)
                    guessed = len(known) < self._captured.maxlen
                    self._keyframe.set()
                if self._clock_start is None:
                    self._clock_start = captured
                timestamp = int(round((captured - self._clock_start) * RTP_CLOCK))
                keyframe = self._keyframe.is_set()
                self._keyframe.clear()
                for units in encoder.encode(image, timestamp, keyframe):
                    self.encoded_bytes += sum(len(u) for u in units)
                    self.encoded_frames += 1
                    key = is_keyframe(units)
                    for viewer in viewers:
                        if not viewer.offer(units, timestamp, key):
                            self._keyframe.set()  # a viewer fell behind: let it start again soon
        except Exception as exc:  # an encoder failure ends this channel's viewers, not the run
            log.warning("rtsp %s: encoding failed: %s", self.path, exc)
            with self.lock:
                for viewer in self.viewers:
                    viewer.closed.set()
                    viewer.connection.close()
                self.viewers = []
                self._thread = None

    def close(self) -> None:
        self._closed.set()
        with self.lock:
            for viewer in self.viewers:
                viewer.closed.set()


# -- the server --------------------------------------------------------------------------------
class Connection:
    """One RTSP client connection: requests in, responses and interleaved RTP out."""

    def __init__(self, server: "RtspServer", sock: socket.socket, address):
        self.server = server
        self.sock = sock
        self.address = address
        self.session = secrets.token_hex(8)
        self.channel: Optional[Channel] = None
        self.viewer: Optional[Viewer] = None
        self._send_lock = threading.Lock()
        self._closed = False

    def send(self, data: bytes) -> bool:
        with self._send_lock:
            if self._closed:
                return False
            try:
                self.sock.sendall(data)
                return True
            except OSError:
                self._closed = True
                return False

    def close(self) -> None:
        with self._send_lock:
            self._closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def serve(self) -> None:
        buffer = b""
        self.sock.settimeout(REQUEST_TIMEOUT_S)
        try:
            while not self.server.closed:
                # Interleaved data from the client (RTCP receiver reports): read and ignore.
                while buffer[:1] == b"$":
                    if len(buffer) < 4:
                        break
                    length = int.from_bytes(buffer[2:4], "big")
                    if len(buffer) < 4 + length:
                        break
                    buffer = buffer[4 + length:]
                end = buffer.find(b"\r\n\r\n")
                if end < 0 or buffer[:1] == b"$":
                    if len(buffer) > MAX_REQUEST_BYTES:
                        return
                    try:
                        chunk = self.sock.recv(4096)
                    except socket.timeout:
                        if self.viewer is not None and not self.viewer.closed.is_set():
                            continue  # a playing viewer need not talk
                        return
                    if not chunk:
                        return
                    buffer += chunk
                    continue
                head, buffer = buffer[:end].decode("latin-1"), buffer[end + 4:]
                method, url, headers = _parse_request(head)
                length = int(headers.get("content-length", "0") or 0)
                if length > MAX_REQUEST_BYTES:
                    return
                while len(buffer) < length:
                    chunk = self.sock.recv(4096)
                    if not chunk:
                        return
                    buffer += chunk
                buffer = buffer[length:]
                if not self._answer(method, url, headers):
                    return
        except (OSError, ValueError):
            return
        finally:
            if self.viewer is not None and self.channel is not None:
                self.channel.remove(self.viewer)
            self.close()
            self.server._forget(self)

    def _reply(self, cseq: str, status: str, headers: Optional[Dict[str, str]] = None, body: str = "") -> bool:
        lines = [f"RTSP/1.0 {status}", f"CSeq: {cseq}", "Server: fcn-deploy"]
        for key, value in (headers or {}).items():
            lines.append(f"{key}: {value}")
        if body:
            lines.append(f"Content-Length: {len(body.encode())}")
        return self.send(("\r\n".join(lines) + "\r\n\r\n" + body).encode())

    def _answer(self, method: str, url: str, headers: Dict[str, str]) -> bool:
        cseq = headers.get("cseq", "0")
        path = _channel_path(url)
        if method == "OPTIONS":
            return self._reply(cseq, "200 OK", {"Public": "OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER, TEARDOWN"})
        if method == "DESCRIBE":
            channel = self.server.channel(path)
            if channel is None:
                return self._reply(cseq, "404 Not Found")
            base = url if url.endswith("/") else url + "/"
            sdp = _sdp(channel.path, self.sock.getsockname()[0])
            return self._reply(cseq, "200 OK", {"Content-Type": "application/sdp", "Content-Base": base}, sdp)
        if method == "SETUP":
            channel = self.server.channel(path)
            if channel is None:
                return self._reply(cseq, "404 Not Found")
            transport = headers.get("transport", "")
            if "RTP/AVP/TCP" not in transport.upper():
                return self._reply(cseq, "461 Unsupported Transport")  # clients retry over TCP
            interleaved = 0
            for part in transport.split(";"):
                if part.strip().startswith("interleaved="):
                    interleaved = int(part.split("=", 1)[1].split("-")[0])
            self.channel = channel
            self.viewer = Viewer(self, interleaved)
            return self._reply(cseq, "200 OK", {
                "Transport": f"RTP/AVP/TCP;unicast;interleaved={interleaved}-{interleaved + 1}",
                "Session": f"{self.session};timeout=60"})
        if method == "PLAY":
            if self.viewer is None or self.channel is None:
                return self._reply(cseq, "455 Method Not Valid in This State")
            ok = self._reply(cseq, "200 OK", {"Session": self.session, "Range": "npt=0.000-",
                                              "RTP-Info": f"url={url};seq={self.viewer.sequence};rtptime=0"})
            if ok and self.viewer.thread.ident is None:
                self.channel.add(self.viewer)
                log.info("rtsp: %s watches %s", self.address[0], self.channel.path or "/")
            return ok
        if method == "GET_PARAMETER":
            return self._reply(cseq, "200 OK", {"Session": self.session})
        if method == "TEARDOWN":
            self._reply(cseq, "200 OK", {"Session": self.session})
            return False
        return self._reply(cseq, "405 Method Not Allowed", {"Allow": "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN"})


def _parse_request(head: str) -> Tuple[str, str, Dict[str, str]]:
    lines = head.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("RTSP/"):
        raise ValueError(f"not an RTSP request: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip().lower()] = value.strip()
    return parts[0].upper(), parts[1], headers


def _channel_path(url: str) -> str:
    """``rtsp://h:p/live/front/trackID=0`` -> ``live/front``."""
    path = urlsplit(url).path if "://" in url else url
    path = path.strip("/")
    if path.rsplit("/", 1)[-1].startswith("trackID="):
        path = path.rsplit("/", 1)[0] if "/" in path else ""
    return path


def _sdp(name: str, address: str) -> str:
    session = secrets.randbelow(1 << 31)
    return "\r\n".join([
        "v=0", f"o=- {session} 1 IN IP4 {address}", f"s=fcn-deploy {name or 'stream'}", "c=IN IP4 0.0.0.0",
        "t=0 0", "a=control:*", f"m=video 0 RTP/AVP {PAYLOAD_TYPE}", f"a=rtpmap:{PAYLOAD_TYPE} H264/{RTP_CLOCK}",
        f"a=fmtp:{PAYLOAD_TYPE} packetization-mode=1", "a=control:trackID=0", ""])


class RtspServer:
    """Listens on ``host:port`` and serves its channels; one per address, shared by the sinks
    that name it (:meth:`shared`). ``port=0`` picks a free port (:attr:`address`)."""

    _servers: Dict[Tuple[str, int], "RtspServer"] = {}
    _registry_lock = threading.Lock()

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, settings: Optional[VideoSettings] = None):
        self.settings = settings or VideoSettings()
        self.channels: Dict[str, Channel] = {}
        self.closed = False
        self.users = 0
        self._connections: List[Connection] = []
        self._lock = threading.Lock()
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self._sock = socket.socket(family, socket.SOCK_STREAM)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind((host, port))
            self._sock.listen(16)
        except OSError as exc:
            raise RtspError(f"cannot serve RTSP on {host}:{port}: {exc.strerror or exc}") from None
        self.host = host
        self.address = self._sock.getsockname()[:2]
        self._thread = threading.Thread(target=self._accept_all, name=f"rtsp-{self.address[1]}", daemon=True)
        self._thread.start()
        if host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("rtsp: serving on %s:%d: anyone who can reach this address can watch", host, self.address[1])

    @classmethod
    def shared(cls, host: str, port: int, settings: Optional[VideoSettings] = None) -> "RtspServer":
        with cls._registry_lock:
            server = cls._servers.get((host, port))
            if server is None or server.closed:
                server = cls(host, port, settings)
                if port:
                    cls._servers[(host, port)] = server
            server.users += 1
            return server

    def add_channel(self, path: str) -> Channel:
        path = path.strip("/")
        with self._lock:
            if path in self.channels:
                raise RtspError(f"rtsp://{self.host}:{self.address[1]}/{path} is already served by this run")
            self.channels[path] = Channel(path, self.settings)
            return self.channels[path]

    def channel(self, path: str) -> Optional[Channel]:
        return self.channels.get(path.strip("/"))

    def _accept_all(self) -> None:
        while not self.closed:
            try:
                sock, address = self._sock.accept()
            except OSError:
                return
            with self._lock:
                if len(self._connections) >= MAX_VIEWERS:
                    sock.close()
                    continue
                connection = Connection(self, sock, address)
                self._connections.append(connection)
            threading.Thread(target=connection.serve, name="rtsp-connection", daemon=True).start()

    def _forget(self, connection: Connection) -> None:
        with self._lock:
            if connection in self._connections:
                self._connections.remove(connection)

    def release(self) -> None:
        """One user fewer; the last one closes the server."""
        with self._registry_lock:
            self.users -= 1
            if self.users > 0:
                return
            if self._servers.get((self.host, self.address[1])) is self:
                del self._servers[(self.host, self.address[1])]
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for channel in self.channels.values():
            channel.close()
        try:
            self._sock.close()
        except OSError:
            pass
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.close()


def parse_rtsp_output(uri: str) -> Tuple[str, int, str]:
    """``rtsp://HOST:PORT/PATH`` -> (host, port, path); no host: 127.0.0.1, no port: 8554."""
    parts = urlsplit(uri.strip())
    if parts.scheme.lower() != "rtsp":
        raise RtspError(f"not an rtsp:// URL: {uri!r}")
    try:
        port = parts.port if parts.port is not None else DEFAULT_PORT
    except ValueError:
        raise RtspError(f"bad port in {uri!r}: expected rtsp://HOST:PORT/PATH") from None
    host = parts.hostname or DEFAULT_HOST
    return host, port, parts.path.strip("/")


class RtspSink(Sink):
    """``rtsp://HOST:PORT/PATH``: the rendered frames as live H.264 (see the module docstring).

    :meth:`channel` makes a sink for another stream of a multi-stream run at ``/PATH/NAME``.
    """

    def __init__(self, server: RtspServer, path: str):
        self.server = server
        self.path = path.strip("/")
        self._channel = server.add_channel(self.path)
        self._closed = False
        self.description = f"RTSP stream {self.url}"

    @classmethod
    def open(cls, uri: str, settings: Optional[VideoSettings] = None) -> "RtspSink":
        problem = pyav_problem()
        if problem:
            raise RtspError(f"{uri}: RTSP output encodes H.264 with PyAV: {problem}")
        codec = (settings.codec if settings else None) or "h264"
        if codec.lower() not in ("h264", "avc", "x264", "libx264"):
            raise RtspError(f"{uri}: the RTSP output sends H.264 (--codec {codec} applies to files only)")
        host, port, path = parse_rtsp_output(uri)
        server = RtspServer.shared(host, port, settings)
        try:
            return cls(server, path)
        except BaseException:
            server.release()
            raise

    def channel(self, name: str) -> "RtspSink":
        """A sink for stream ``name`` at ``/PATH/NAME`` on the same server."""
        self.server.users += 1
        return RtspSink(self.server, f"{self.path}/{name}" if self.path else name)

    @property
    def url(self) -> str:
        host, port = self.server.address
        return f"rtsp://{host}:{port}/{self.path}"

    @property
    def watched(self) -> bool:
        return self._channel.watched

    def write(self, image: np.ndarray, frame) -> None:
        self._channel.publish(image, frame.captured)

    def wants_stop(self) -> bool:
        return False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._channel.close()
            self.server.release()
