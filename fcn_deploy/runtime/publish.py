"""Where statistics and event lines go: a JSON Lines file (or stdout) and an MQTT broker.

Every destination gets the same lines, one JSON object each (``--stats`` records and
``--event`` lines), so what ``mosquitto_sub`` prints and what the file holds agree line for line.

* ``--stats FILE.jsonl`` writes into a temporary file beside ``FILE.jsonl``, renamed over it when
  the run ends: the file appears complete or not at all, as every file the project writes. Use
  ``--stats -`` (stdout) or MQTT to follow a run live.
* ``--publish mqtt://[USER:PASSWORD@]HOST[:PORT]/TOPIC[?qos=0|1|2]`` publishes each line to
  ``TOPIC`` (paho-mqtt, the ``publish`` extra). QoS 1 by default: the broker acknowledges every
  line, and :meth:`MqttPublisher.close` waits for those acknowledgements, so no line of a run that
  ended is lost on the way.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, TextIO
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import FcnDeployError
from ..fileio import check_output_file

log = logging.getLogger(__name__)

MQTT_PORT = 1883
CONNECT_TIMEOUT_S = 10.0


class PublishError(FcnDeployError):
    """A statistics destination that cannot be opened or written."""


def json_line(record: Dict[str, Any]) -> str:
    """One record as one line of JSON (no spaces to spare, keys in the order made)."""
    return json.dumps(record, separators=(",", ":"), allow_nan=False)


class LineSink:
    """Base class: ``write`` one line (no newline), ``close`` once."""

    description = ""

    def write(self, line: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class JsonLinesFile(LineSink):
    """``--stats FILE.jsonl``: every line, in a file renamed into place at :meth:`close`; ``-`` is stdout."""

    def __init__(self, target: str, overwrite: bool = False):
        self.lines = 0
        self._tmp: Optional[str] = None
        if target == "-":
            self.path: Optional[Path] = None
            self._file: TextIO = sys.stdout
            self.description = "statistics to stdout"
            return
        self.path = Path(target).expanduser()
        if self.path.exists() and not overwrite:
            raise PublishError(f"{self.path} already exists; pass --overwrite to replace it, or choose another file")
        if self.path.is_dir():
            raise PublishError(f"--stats {target}: is a folder; give a file name such as stats.jsonl")
        try:
            check_output_file(self.path, "--stats")
            fd, self._tmp = tempfile.mkstemp(dir=str(self.path.parent.resolve()),
                                             prefix=f".{self.path.name}.", suffix=".tmp")
            self._file = os.fdopen(fd, "w", encoding="utf-8")
        except (OSError, FcnDeployError) as exc:
            raise PublishError(f"--stats {target}: cannot write there: {getattr(exc, 'strerror', None) or exc}") from None
        self.description = f"statistics in {self.path}"

    def write(self, line: str) -> None:
        try:
            self._file.write(line + "\n")
            if self.path is None:
                self._file.flush()  # stdout: a reader follows it line by line
        except OSError as exc:
            raise PublishError(f"cannot write {self.path or 'stdout'}: {exc.strerror or exc}") from None
        self.lines += 1

    def close(self) -> None:
        if self.path is None or self._tmp is None:
            return
        tmp, self._tmp = self._tmp, None
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, self.path)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise PublishError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def discard(self) -> None:
        """Leave nothing behind (the run failed before it began)."""
        if self._tmp is not None:
            self._file.close()
            os.unlink(self._tmp)
            self._tmp = None


def parse_mqtt_uri(uri: str) -> Dict[str, Any]:
    """``mqtt://[USER:PASSWORD@]HOST[:PORT]/TOPIC[?qos=N]`` -> its parts (host, port, topic, qos, user, password)."""
    try:
        parts = urlsplit(uri.strip())
        port = parts.port
    except ValueError:
        raise PublishError(f"--publish {uri!r}: bad port; expected mqtt://HOST:PORT/TOPIC") from None
    if parts.scheme.lower() != "mqtt":
        raise PublishError(f"--publish {uri!r}: only mqtt://HOST:PORT/TOPIC is supported")
    topic = unquote(parts.path.lstrip("/"))
    if not parts.hostname or not topic:
        raise PublishError(f"--publish {uri!r}: expected mqtt://HOST:PORT/TOPIC (a host and a topic)")
    if any(ch in topic for ch in "+#") or "#" in uri:
        raise PublishError(f"--publish {uri!r}: a topic to publish to has no wildcards (+ or #)")
    qos = 1
    for key, values in parse_qs(parts.query).items():
        if key != "qos" or values[-1] not in ("0", "1", "2"):
            raise PublishError(f"--publish {uri!r}: the only option is qos=0, 1 or 2")
        qos = int(values[-1])
    return {"host": parts.hostname, "port": port or MQTT_PORT, "topic": topic, "qos": qos,
            "user": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else None}


class MqttPublisher(LineSink):
    """``--publish mqtt://HOST:PORT/TOPIC``: each line a message on TOPIC, in order, from paho's own thread."""

    def __init__(self, uri: str):
        options = parse_mqtt_uri(uri)
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise PublishError("--publish mqtt:// needs paho-mqtt: pip install 'fcn-deploy[publish]'") from None
        self.topic, self.qos = options["topic"], options["qos"]
        self.description = f"MQTT mqtt://{options['host']}:{options['port']}/{self.topic}"
        version = getattr(mqtt, "CallbackAPIVersion", None)
        self._client = mqtt.Client(version.VERSION2) if version is not None else mqtt.Client()
        if options["user"]:
            self._client.username_pw_set(options["user"], options["password"])
        self._pending: List[Any] = []
        try:
            self._client.connect(options["host"], options["port"], keepalive=30)
        except (OSError, ValueError) as exc:
            raise PublishError(f"--publish: cannot reach the MQTT broker at {options['host']}:{options['port']}: "
                               f"{getattr(exc, 'strerror', None) or exc}") from None
        self._client.loop_start()

    def write(self, line: str) -> None:
        info = self._client.publish(self.topic, line.encode("utf-8"), qos=self.qos)
        if info.rc != 0:
            log.warning("MQTT: a line was not queued (error %s)", info.rc)
            return
        self._pending.append(info)
        self._pending = [i for i in self._pending if not i.is_published()] if len(self._pending) > 256 else self._pending

    def close(self) -> None:
        try:
            for info in self._pending:
                try:
                    info.wait_for_publish(timeout=CONNECT_TIMEOUT_S)
                except (RuntimeError, ValueError):  # not connected any more: counted below
                    pass
            unsent = sum(1 for info in self._pending if not info.is_published())
            if unsent:
                log.warning("MQTT: %d line(s) were not acknowledged by the broker", unsent)
        finally:
            self._client.disconnect()
            self._client.loop_stop()
