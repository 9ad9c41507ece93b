"""A real MQTT broker (Debian's mosquitto) on 127.0.0.1 and a real subscriber (mosquitto_sub),
for the publishing tests: skipped with the reason where they are not installed."""
import shutil
import socket
import subprocess
import time

import pytest


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need_mosquitto():
    missing = [tool for tool in ("mosquitto", "mosquitto_sub") if not shutil.which(tool)
               and not shutil.which(tool, path="/usr/sbin:/usr/bin")]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (Debian: apt-get install mosquitto mosquitto-clients)")
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt not installed (pip install 'fcn-deploy[publish]')")


class Broker:
    """mosquitto listening on 127.0.0.1 only, on a free port, with nothing kept on disk."""

    def __init__(self, folder):
        need_mosquitto()
        self.port = _free_port()
        config = folder / "mosquitto.conf"
        config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                          "log_dest stderr\n")
        binary = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/bin")
        self.process = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"mosquitto did not start: {self.process.stderr.read()}")
                time.sleep(0.05)
        self.close()
        raise RuntimeError("mosquitto did not listen within 10 s")

    def subscribe(self, topic, count, timeout=60):
        """A running ``mosquitto_sub`` that prints ``count`` messages of ``topic`` and exits; wait
        until it is subscribed before publishing."""
        line_buffered = ["stdbuf", "-oL"] if shutil.which("stdbuf") else []  # -d's SUBACK line at once
        process = subprocess.Popen([*line_buffered, "mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.port), "-t", topic,
                                    "-q", "1", "-C", str(count), "-W", str(timeout), "-d"],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # -d prints the SUBACK: from then on nothing is missed
            line = process.stdout.readline()
            lines.append(line)
            if "SUBACK" in line:
                return process
        process.kill()
        raise RuntimeError(f"mosquitto_sub did not subscribe: {''.join(lines)}")

    def close(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()


def messages(subscriber, timeout=60):
    """What a :meth:`Broker.subscribe` process printed: the messages, without its debug lines."""
    out, _ = subscriber.communicate(timeout=timeout)
    return [line for line in out.splitlines() if line.startswith("{")]
