"""Per-frame statistics, zones and events as a library: shares that count pixels exactly, zones
in fractions or pixels, and events that fire once per crossing however noisy the frames."""
import numpy as np
import pytest

from fcn_deploy.runtime.events import EventTracker, parse_event
from fcn_deploy.runtime.stats import FrameStatistics, class_fractions
from fcn_deploy.runtime.zones import ZoneError, parse_zone, parse_zones

CLASSES = ["sky", "road", "car"]


def test_class_fractions_are_count_over_pixels_for_every_class():
    labels = np.zeros((3, 4), np.uint8)
    labels[0, :3] = 1
    labels[2, 3] = 2
    shares = class_fractions(labels, CLASSES)
    assert shares == {"sky": 8 / 12, "road": 3 / 12, "car": 1 / 12}
    assert list(shares) == CLASSES and all(type(v) is float for v in shares.values())


def test_labels_outside_the_classes_count_in_the_pixels_only():
    labels = np.array([[0, 255], [1, 1]], np.uint8)
    assert class_fractions(labels, CLASSES) == {"sky": 0.25, "road": 0.5, "car": 0.0}


def test_zone_grammar_normalised_pixels_rectangles_and_streams():
    zone = parse_zone("lane=0.25,0.5,0.75,1")
    assert zone.normalised and zone.stream is None and len(zone.points) == 2
    mask = zone.mask(8, 8)
    assert mask[4:, 2:6].all() and mask.sum() == 4 * 4  # the pixels whose centre is inside
    pixels = parse_zone("front:door=10,10,30,10,30,20")
    assert not pixels.normalised and pixels.stream == "front" and pixels.applies_to("front")
    assert not pixels.applies_to("rear")
    assert pixels.mask(40, 40)[12, 26] and not pixels.mask(40, 40)[19, 11]  # a triangle
    box = parse_zone("box=3,1,7,4").mask(10, 10)
    expected = np.zeros((10, 10), bool)
    expected[1:4, 3:7] = True
    assert (box == expected).all()  # pixels x1,y1,x2,y2 are labels[y1:y2, x1:x2]


@pytest.mark.parametrize("text, message", [
    ("lane", "expected"),
    ("frame=0,0,1,1", "whole frame"),
    ("lane=0,0,1", "x,y pairs"),
    ("lane=0,0", "x,y pairs"),
    ("lane=a,b,c,d", "numbers"),
    ("lane=-1,0,1,1", "0 or more"),
    ("bad name=0,0,1,1", "letters"),
])
def test_bad_zones_are_one_line_errors(text, message):
    with pytest.raises(ZoneError, match=message):
        parse_zone(text)


def test_zones_of_unknown_streams_and_duplicates_are_refused():
    with pytest.raises(ZoneError, match="no stream 'side'"):
        parse_zones(["side:a=0,0,1,1"], ["front", "rear"])
    with pytest.raises(ZoneError, match="same name"):
        parse_zones(["a=0,0,1,1", "front:a=0,0,1,1"], ["front", "rear"])
    assert len(parse_zones(["front:a=0,0,1,1", "rear:a=0,0,1,1"], ["front", "rear"])) == 2


def test_a_record_has_the_zone_shares_of_its_stream_only():
    stats = FrameStatistics(CLASSES, parse_zones(["left=0,0,0.5,1", "b:right=0.5,0,1,1"], ["a", "b"]))
    labels = np.zeros((4, 4), np.uint8)
    labels[:, 2:] = 2
    a = stats.record("a", 7, 0.25, labels, 12.3456)
    assert a == {"stream": "a", "frame": 7, "time": 0.25, "latency_ms": 12.346,
                 "classes": {"sky": 0.5, "road": 0.0, "car": 0.5},
                 "zones": {"left": {"sky": 1.0, "road": 0.0, "car": 0.0}}}
    assert stats.record("b", 0, None, labels, 1.0)["zones"]["right"] == {"sky": 0.0, "road": 0.0, "car": 1.0}


def test_event_grammar():
    rule = parse_event("lane:car>0.2", CLASSES, parse_zones(["lane=0,0,1,1"]))
    assert (rule.zone, rule.class_name, rule.above, rule.threshold) == ("lane", "car", True, 0.2)
    assert parse_event("frame:sky<0.5", CLASSES).zone is None
    assert parse_event("road > .3", CLASSES).threshold == 0.3
    for text, message in (("lane:bus>0.2", "unknown class 'bus'"), ("side:car>0.2", "no --zone named 'side'"),
                          ("car=0.2", "expected"), ("car>2", "fraction")):
        with pytest.raises(ZoneError, match=message):
            parse_event(text, CLASSES, parse_zones(["lane=0,0,1,1"]))


def _records(shares, stream="0"):
    return [{"stream": stream, "frame": i, "time": i / 30, "classes": {"car": v}, "zones": {}}
            for i, v in enumerate(shares)]


def test_an_event_starts_and_ends_once_per_crossing_despite_single_noisy_frames():
    tracker = EventTracker([parse_event("car>0.2", CLASSES)], hold=3)
    shares = [0, 0.5, 0, 0, 0.3, 0.3, 0.3, 0.1, 0.3, 0.3, 0, 0, 0, 0.3, 0, 0]
    #          noise  |   crossing in      | noise (dip)  |  crossing out | noise
    events = [e for r in _records(shares) for e in tracker.update(r)]
    assert [(e["state"], e["frame"], e["since_frame"]) for e in events] == [("start", 6, 4), ("end", 12, 10)]
    assert events[0]["zone"] == "frame" and events[0]["value"] == 0.3 and events[1]["value"] == 0


def test_streams_are_tracked_apart_and_hold_1_follows_every_frame():
    tracker = EventTracker([parse_event("car>0.2", CLASSES)], hold=1)
    a = _records([0.5, 0.5, 0], "a")
    b = _records([0, 0.5, 0.5], "b")
    events = [e for pair in zip(a, b) for r in pair for e in tracker.update(r)]
    assert [(e["stream"], e["state"], e["frame"]) for e in events] == [
        ("a", "start", 0), ("b", "start", 1), ("a", "end", 2)]
    with pytest.raises(ZoneError):
        EventTracker([], hold=0)
