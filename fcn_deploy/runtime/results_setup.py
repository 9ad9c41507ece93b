"""From a run's options (``--stats``, ``--publish``, ``--zone``, ``--event``, an HTTP output) to
its results path: the :class:`~.results.ResultsWorker` the pipeline feeds, or ``None`` when
nothing asks for per-frame results (then the pipeline does no extra work at all)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from .events import DEFAULT_HOLD_FRAMES, EventTracker, parse_event
from .mjpeg import MjpegServer
from .publish import JsonLinesFile, LineSink, MqttPublisher
from .results import LiveStatus, ResultsWorker
from .stats import FrameStatistics
from .web_page import LivePage
from .zones import Zone


@dataclass
class ResultsOptions:
    """What the user asked of the results path (the ``run`` command's flags)."""

    stats: Optional[str] = None  # a .jsonl file or "-"
    publish: Sequence[str] = ()  # mqtt:// URIs
    zones: Sequence[Zone] = ()
    events: Sequence[str] = ()
    event_hold: int = DEFAULT_HOLD_FRAMES
    overwrite: bool = False
    servers: List[MjpegServer] = field(default_factory=list)  # HTTP outputs: they get the live page

    @property
    def wanted(self) -> bool:
        return bool(self.stats or self.publish or self.events or self.servers)


def open_results(options: ResultsOptions, class_names: Sequence[str], palette: Sequence[Tuple[int, int, int]],
                 streams: Sequence[str], model: str = "") -> Tuple[Optional[ResultsWorker], Optional[LiveStatus]]:
    """The worker (and the live page's status) for ``options``; ``(None, None)`` when not wanted.

    Event rules are checked against the model's classes and the zones before anything is
    opened. Lines go to ``--stats`` and each ``--publish``; events with neither go to stdout.
    Whatever was opened is closed again if a later destination fails to open.
    """
    if not options.wanted:
        return None, None
    rules = [parse_event(text, class_names, options.zones) for text in options.events]
    tracker = EventTracker(rules, options.event_hold) if rules else None
    sinks: List[LineSink] = []
    try:
        if options.stats:
            sinks.append(JsonLinesFile(options.stats, overwrite=options.overwrite))
        for uri in options.publish:
            sinks.append(MqttPublisher(uri))
        statistics_lines = bool(sinks)
        if tracker is not None and not sinks:
            sinks.append(JsonLinesFile("-"))  # events alone: one line each on stdout
    except BaseException:
        for sink in sinks:
            abandon(sink)
        raise
    live = None
    if options.servers:
        live = LiveStatus(streams, class_names, palette, model=model)
        page = LivePage(live)
        for server in options.servers:
            server.page = page
    worker = ResultsWorker(FrameStatistics(class_names, options.zones), sinks, tracker, live,
                           statistics_lines=statistics_lines)
    return worker, live


def abandon(sink: LineSink) -> None:
    """Close ``sink`` leaving no file behind (the run did not happen)."""
    if hasattr(sink, "discard"):
        sink.discard()
    else:
        sink.close()
