"""`fcn-deploy run --stats/--zone/--event/--publish` as a user runs it: real models, real video
files, real label PNGs, a real MQTT broker; every number checked against a truth the test knows."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from broker_helpers import Broker, messages
from video_helpers import synthetic_frames, write_video

REPO = Path(__file__).resolve().parents[1]


def run(*args, cwd, timeout=180):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("DISPLAY", None)
    return subprocess.run([sys.executable, "-m", "fcn_deploy.cli", "run", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def shares(labels, classes):
    """What a user computes from a label PNG: each class's pixel count over the pixels."""
    counts = np.bincount(labels.ravel(), minlength=len(classes))
    return {name: int(counts[i]) / labels.size for i, name in enumerate(classes)}


def test_stats_shares_equal_those_of_the_label_pngs_for_every_frame(tmp_path, tiny_onnx):
    a = write_video(tmp_path / "a.avi", synthetic_frames(9), "MJPG")
    b = write_video(tmp_path / "b.avi", synthetic_frames(6, 40, 56), "MJPG")
    result = run("--model", tiny_onnx, "--source", f"front={a}", "--source", f"rear={b}", "--labels-dir", "L",
                 "--output", "none", "--stats", "s.jsonl", "--zone", "front:left=0,0,0.5,1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert "wrote 15 statistics records to s.jsonl" in result.stdout
    classes = list(records[0]["classes"])
    for name, count in (("front", 9), ("rear", 6)):
        mine = [r for r in records if r["stream"] == name]
        assert [r["frame"] for r in mine] == list(range(count))
        for record in mine:
            labels = cv2.imread(str(tmp_path / "L" / name / f"{record['frame']:06d}.png"), cv2.IMREAD_UNCHANGED)
            assert record["classes"] == shares(labels, classes)  # exactly, float for float
            assert record["time"] == pytest.approx(record["frame"] / 15.0, abs=1e-6) and record["latency_ms"] > 0
            if name == "front":
                assert record["zones"]["left"] == shares(labels[:, : labels.shape[1] // 2], classes)
            else:
                assert record["zones"] == {}


def colour_model(path, props_from):
    """A real ONNX model whose truth is known: each pixel's class is its strongest colour
    channel (0 blue, 1 green, 2 red), with a real export's metadata (3 classes)."""
    props = {p.key: p.value for p in onnx.load(str(props_from)).metadata_props}
    x = helper.make_tensor_value_info("input", TensorProto.UINT8, ["N", "H", "W", 3])
    y = helper.make_tensor_value_info("labels", TensorProto.UINT8, ["N", "H", "W"])
    nodes = [helper.make_node("Cast", ["input"], ["xf"], to=TensorProto.FLOAT),
             helper.make_node("ArgMax", ["xf"], ["index"], axis=3, keepdims=0),
             helper.make_node("Cast", ["index"], ["labels"], to=TensorProto.UINT8)]
    model = helper.make_model(helper.make_graph(nodes, "colour", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path, json.loads(props["classes"])


def crossing_clip(path):
    """40 frames of blue with a red bar 12 px wide: outside the right third ('door') on frames
    0-7, 16-23 and 32-39, inside it on 8-15 and 24-31 (two crossings in, two out); frame 3 has
    a one-frame flash of red in the door, which must not make an event."""
    frames = []
    for i in range(40):
        frame = np.zeros((48, 64, 3), np.uint8)
        frame[:] = (255, 0, 0)
        inside = (i // 8) % 2 == 1
        x = 48 if inside else 4
        frame[:, x:x + 12] = (0, 0, 255)
        if i == 3:
            frame[:, 48:60] = (0, 0, 255)
        frames.append(frame)
    return write_video(path, frames, "MJPG", fps=10.0)


def test_a_zone_event_fires_once_per_crossing(tmp_path, tiny_onnx):
    model, classes = colour_model(tmp_path / "colour.onnx", tiny_onnx)
    red = classes[2]
    clip = crossing_clip(tmp_path / "crossing.avi")
    result = run("--model", model, "--source", clip, "--input-size", "native", "--output", "none",
                 "--stats", "s.jsonl", "--zone", "door=40,0,64,48", "--event", f"door:{red}>0.25",
                 "--event-hold", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    records = [r for r in lines if "event" not in r]
    events = [r for r in lines if "event" in r]
    assert len(records) == 40
    door = [r["zones"]["door"][red] for r in records]
    assert door[3] > 0.25 and all(v < 0.05 for i, v in enumerate(door) if (i // 8) % 2 == 0 and i != 3)
    assert all(v == pytest.approx(0.5, abs=0.05) for i, v in enumerate(door) if (i // 8) % 2 == 1)
    # Each crossing confirmed on its third frame (hold 3), dated from its first; the flash makes none.
    assert [(e["state"], e["since_frame"], e["frame"]) for e in events] == [
        ("start", 8, 10), ("end", 16, 18), ("start", 24, 26), ("end", 32, 34)]
    assert all(e["zone"] == "door" and e["class"] == red and e["event"] == f"door:{red}>0.25" for e in events)


def test_mosquitto_sub_receives_the_lines_of_the_stats_file(tmp_path, tiny_onnx):
    broker = Broker(tmp_path)
    try:
        clip = write_video(tmp_path / "a.avi", synthetic_frames(12), "MJPG")
        subscriber = broker.subscribe("fcn/run", 12)
        result = run("--model", tiny_onnx, "--source", clip, "--output", "none", "--stats", "s.jsonl",
                     "--publish", f"mqtt://127.0.0.1:{broker.port}/fcn/run", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        received = messages(subscriber)
    finally:
        broker.close()
    written = (tmp_path / "s.jsonl").read_text().splitlines()
    assert len(written) == 12 and received == written


def test_bad_zones_events_and_destinations_are_one_line_and_leave_nothing(tmp_path, tiny_onnx):
    clip = write_video(tmp_path / "a.avi", synthetic_frames(3), "MJPG")
    try:  # without the publish extra, the missing package is the one line
        import paho.mqtt.client  # noqa: F401
        no_broker = "MQTT broker"
    except ImportError:
        no_broker = "needs paho-mqtt"
    for extra, needle in ((["--zone", "lane=0,0,1"], "x,y pairs"),
                          (["--event", "lane:class_2>0.2"], "no --zone named 'lane'"),
                          (["--zone", "rear:a=0,0,1,1"], "no stream 'rear'"),
                          (["--event", "class_2>0.2", "--event-hold", "0"], "--event-hold"),
                          (["--event", "Car>0.2"], "unknown class 'Car'"),
                          (["--publish", "mqtt://127.0.0.1:1/t", "--stats", "s.jsonl"], no_broker)):
        result = run("--model", tiny_onnx, "--source", clip, "--output", "none", *extra, cwd=tmp_path)
        assert result.returncode != 0 and needle in result.stderr, (extra, result.stderr)
        assert "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("fcn-deploy: error:")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.avi"]


def test_stats_to_stdout_leave_the_summary_on_stderr(tmp_path, tiny_onnx):
    clip = write_video(tmp_path / "a.avi", synthetic_frames(5), "MJPG")
    result = run("--model", tiny_onnx, "--source", clip, "--output", "none", "--stats", "-", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]  # nothing but JSON lines
    assert [r["frame"] for r in records] == list(range(5))
    assert "5 frames in" in result.stderr
