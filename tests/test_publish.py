"""Statistics lines to a JSON Lines file and to a real MQTT broker on 127.0.0.1, from the
results thread: the same lines everywhere, files that appear whole, one-line errors."""
import json
import os

import numpy as np
import pytest

from broker_helpers import Broker, messages
from fcn_deploy.runtime.events import EventTracker, parse_event
from fcn_deploy.runtime.publish import JsonLinesFile, MqttPublisher, PublishError, parse_mqtt_uri
from fcn_deploy.runtime.results import FrameResult, LiveStatus, ResultsWorker
from fcn_deploy.runtime.stats import FrameStatistics

CLASSES = ["sky", "road", "car"]


def frames(count, size=(12, 16)):
    """Label maps in which ``car`` fills a growing, then shrinking, share of the frame."""
    out = []
    for i in range(count):
        labels = np.zeros(size, np.uint8)
        labels[:, : min(i, count - i)] = 2
        out.append(labels)
    return out


def test_mqtt_uris():
    assert parse_mqtt_uri("mqtt://127.0.0.1/fcn/stats") == {
        "host": "127.0.0.1", "port": 1883, "topic": "fcn/stats", "qos": 1, "user": None, "password": None}
    options = parse_mqtt_uri("mqtt://me:s%40cret@broker:1884/a?qos=0")
    assert (options["port"], options["qos"], options["user"], options["password"]) == (1884, 0, "me", "s@cret")
    for uri, message in (("mqtt://host", "a host and a topic"), ("mqtt://host/a/#", "wildcards"),
                         ("mqtts://host/a", "only mqtt://"), ("mqtt://host/a?qos=3", "qos=0, 1 or 2"),
                         ("mqtt://host:x/a", "bad port")):
        with pytest.raises(PublishError, match=message):
            parse_mqtt_uri(uri)


def test_an_unreachable_broker_is_one_line():
    pytest.importorskip("paho.mqtt.client")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(PublishError, match="cannot reach the MQTT broker") as e:
        MqttPublisher(f"mqtt://127.0.0.1:{port}/t")
    assert "\n" not in str(e.value)


def test_the_jsonl_file_appears_whole_at_close_and_is_never_overwritten(tmp_path):
    target = tmp_path / "stats.jsonl"
    sink = JsonLinesFile(str(target))
    sink.write('{"a":1}')
    assert not target.exists()  # only the temporary file beside it, until the run ends
    sink.close()
    assert target.read_text() == '{"a":1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["stats.jsonl"]
    with pytest.raises(PublishError, match="already exists"):
        JsonLinesFile(str(target))
    JsonLinesFile(str(target), overwrite=True).close()
    assert target.read_text() == ""


def test_a_worker_error_leaves_no_half_file(tmp_path):
    target = tmp_path / "stats.jsonl"
    sink = JsonLinesFile(str(target))
    worker = ResultsWorker(FrameStatistics(CLASSES), [sink])
    worker.submit(FrameResult("0", 0, 0.0, np.zeros((2, 2, 2), np.uint8), 1.0))  # not a label map
    with pytest.raises(ValueError):
        worker.close()
    assert os.listdir(tmp_path) == []


def test_the_broker_receives_the_lines_of_the_file_in_order(tmp_path):
    broker = Broker(tmp_path)
    try:
        labels = frames(24)
        tracker = EventTracker([parse_event("car>0.3", CLASSES)], hold=2)
        subscriber = broker.subscribe("fcn/stats", len(labels) + 2)
        live = LiveStatus(["0"], CLASSES, [(0, 0, 0), (1, 1, 1), (2, 2, 2)])
        worker = ResultsWorker(FrameStatistics(CLASSES), [JsonLinesFile(str(tmp_path / "s.jsonl")),
                               MqttPublisher(f"mqtt://127.0.0.1:{broker.port}/fcn/stats")], tracker, live)
        for i, label_map in enumerate(labels):
            worker.submit(FrameResult("0", i, i / 30, label_map, 5.0))
        worker.close()
        received = messages(subscriber)
    finally:
        broker.close()
    written = (tmp_path / "s.jsonl").read_text().splitlines()
    assert received == written and len(written) == len(labels) + 2  # 24 records, a start and an end
    events = [json.loads(line) for line in written if '"event"' in line]
    assert [e["state"] for e in events] == ["start", "end"]
    assert live.snapshot()["streams"][0]["classes"]["car"] == json.loads(written[-1])["classes"]["car"]
