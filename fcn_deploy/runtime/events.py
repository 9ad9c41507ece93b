"""Events: a line when a condition on the statistics starts to hold, and one when it ends.

``--event 'ZONE:CLASS>0.2'`` watches the share of ``CLASS`` in zone ``ZONE`` (``frame:`` or no
``ZONE:`` at all means the whole frame); ``<`` watches for a share below the threshold. Every
stream that has the zone is watched on its own.

Segmentation flickers at edges: one frame's share can jump over the threshold and back. So a
condition *starts* only after it held on ``hold`` frames in a row, and *ends* only after it
failed on ``hold`` frames in a row (a debounce, as alarm systems do): one noisy frame never
makes a start and an end. Each event line says which frame confirmed it and which frame the
change began on::

    {"event": "lane:Car>0.2", "state": "start", "stream": "0", "frame": 14, "since_frame": 12,
     "time": 0.4667, "zone": "lane", "class": "Car", "value": 0.31}

A condition still holding when the input ends gets no end line: it had not ended.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .zones import WHOLE_FRAME, Zone, ZoneError

DEFAULT_HOLD_FRAMES = 3
_RULE = re.compile(r"^\s*(?:(?P<zone>[A-Za-z0-9_][A-Za-z0-9_.-]*)\s*:)?\s*(?P<cls>[^<>:]+?)\s*"
                   r"(?P<op>[<>])\s*(?P<value>[0-9]*\.?[0-9]+)\s*$")


@dataclass(frozen=True)
class EventRule:
    """``share of class_name in zone (None: the whole frame) > threshold`` (or ``<``)."""

    text: str
    zone: Optional[str]
    class_name: str
    above: bool
    threshold: float

    def holds(self, share: float) -> bool:
        return share > self.threshold if self.above else share < self.threshold


def parse_event(text: str, class_names: Sequence[str] = (), zones: Sequence[Zone] = ()) -> EventRule:
    """``[ZONE:]CLASS>SHARE`` or ``[ZONE:]CLASS<SHARE`` -> :class:`EventRule`, checked against the
    model's classes and the zones given (when given)."""
    match = _RULE.match(text)
    if not match:
        raise ZoneError(f"--event {text!r}: expected [ZONE:]CLASS>SHARE, e.g. 'lane:Car>0.2'")
    zone = match.group("zone")
    zone = None if zone in (None, WHOLE_FRAME) else zone
    class_name = match.group("cls").strip()
    threshold = float(match.group("value"))
    if not 0.0 <= threshold <= 1.0:
        raise ZoneError(f"--event {text!r}: the share is a fraction from 0 to 1")
    if class_names and class_name not in class_names:
        raise ZoneError(f"--event {text!r}: unknown class {class_name!r}; the model's classes are "
                        f"{', '.join(class_names)}")
    if zone is not None and zones is not None and zone not in {z.name for z in zones}:
        named = ", ".join(sorted({z.name for z in zones})) or "none"
        raise ZoneError(f"--event {text!r}: no --zone named {zone!r} (zones: {named})")
    return EventRule(text.strip(), zone, class_name, match.group("op") == ">", threshold)


@dataclass
class _State:
    active: bool = False
    streak: int = 0  # frames in a row on which the condition disagreed with ``active``
    since: Optional[int] = None  # the first of those frames


class EventTracker:
    """Feeds each frame's statistics record through every rule; returns the event lines due."""

    def __init__(self, rules: Sequence[EventRule], hold: int = DEFAULT_HOLD_FRAMES):
        if hold < 1:
            raise ZoneError(f"--event-hold must be at least 1 frame, not {hold}")
        self.rules = list(rules)
        self.hold = hold
        self._states: Dict[Tuple[str, int], _State] = {}

    def update(self, record: Dict[str, Any]) -> List[Dict[str, Any]]:
        """The event lines that ``record`` (from :class:`~.stats.FrameStatistics`) confirms."""
        events = []
        stream = record["stream"]
        for index, rule in enumerate(self.rules):
            shares = record["classes"] if rule.zone is None else record["zones"].get(rule.zone)
            if shares is None:
                continue  # this stream has no such zone
            value = shares.get(rule.class_name, 0.0)
            state = self._states.setdefault((stream, index), _State())
            if rule.holds(value) == state.active:
                state.streak, state.since = 0, None
                continue
            state.streak += 1
            if state.since is None:
                state.since = record["frame"]
            if state.streak < self.hold:
                continue
            state.active = not state.active
            events.append({
                "event": rule.text, "state": "start" if state.active else "end", "stream": stream,
                "frame": record["frame"], "since_frame": state.since, "time": record.get("time"),
                "zone": rule.zone or WHOLE_FRAME, "class": rule.class_name, "value": value,
            })
            state.streak, state.since = 0, None
        return events
