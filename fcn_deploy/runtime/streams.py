"""Several streams at once: their names, their outputs, and opening them all or none.

``fcn-deploy run --source front=rtsp://... --source rear=rtsp://... --source 0`` runs three
streams named ``front``, ``rear`` and ``2`` (a stream without a name is called by its index
from 0, in the order given). Outputs follow one rule per kind, so that one ``--output`` list
serves any number of streams:

=================================  =========================================================
``out_{stream}.mp4``, ``{stream}/``  one file or folder per stream (``{stream}`` is its name,
                                   also with one stream)
``http://HOST:PORT``               one server: each stream at ``/NAME``, the mosaic at ``/``
``rtsp://HOST:PORT/PATH``          one server: each stream at ``/PATH/NAME``, the mosaic at
                                   ``/PATH``; ``rtsp://HOST:PORT/{stream}`` puts each at ``/NAME``
``display://0``, ``out.mp4`` ...   the mosaic of all streams (each stream's own, with one)
``--labels-dir DIR``               label PNGs in ``DIR/NAME/`` (in ``DIR`` with one stream);
                                   ``--labels-dir 'l_{stream}/'`` names the folders itself
=================================  =========================================================

:func:`open_streams` opens every source and output before anything runs, and closes what it
opened if any of them fails, so a camera that is not there is one error naming its stream
and no file is left half-made.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

from ..errors import FcnDeployError
from .pipeline import Stream
from .encoders import VideoSettings
from .sinks import LabelSink, Sink, open_sink
from .sources import STREAM_SCHEMES, CameraOptions, ScaleRule, Source, open_source

STREAM_FIELD = "{stream}"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


def parse_source_arg(text: str, index: int) -> Tuple[str, str]:
    """``NAME=URI`` -> ``(NAME, URI)``; a bare ``URI`` -> ``(str(index), URI)``.

    ``=`` names a stream only when what precedes it is a plain name (letters, digits, ``_.-``)
    and is not a path that exists, so a GStreamer pipeline (``sensor-id=0``), a URL's query
    (``?a=b``) or a file called ``a=b.mp4`` stay URIs.
    """
    name, sep, uri = text.partition("=")
    if sep and _NAME.match(name) and uri.strip() and not Path(text).exists():
        return name, uri
    return str(index), text


def is_network_uri(uri: str) -> bool:
    """True for a network stream (rtsp://, http(s)://, ...): one that drops and comes back."""
    scheme, sep, _ = uri.strip().partition("://")
    return bool(sep) and scheme.lower() in STREAM_SCHEMES


def expand_output(uri: str, name: str) -> str:
    """``uri`` with ``{stream}`` replaced by the stream's ``name``."""
    return uri.replace(STREAM_FIELD, name)


@dataclass
class StreamSpec:
    """What the user asked for one stream: its name and source URI."""

    name: str
    uri: str


def stream_specs(texts: Sequence[str]) -> List[StreamSpec]:
    """``--source`` values as named streams, checking that names differ."""
    specs = [StreamSpec(*parse_source_arg(text, index)) for index, text in enumerate(texts)]
    seen = set()
    for spec in specs:
        if spec.name in seen:
            raise FcnDeployError(f"two streams are named {spec.name!r}; give each --source its own NAME=")
        seen.add(spec.name)
    return specs


def _close_all(streams: Sequence[Stream], sinks: Sequence[Sink]) -> None:
    for stream in streams:
        for sink in stream.sinks:
            sink.close()
        if stream.label_sink is not None:
            stream.label_sink.close()
        stream.source.close()
    for sink in sinks:
        sink.close()


def labels_folder(labels_dir: str, name: str, many: bool) -> Path:
    """Where stream ``name``'s label PNGs go: ``{stream}`` replaced, else ``DIR/NAME`` with
    several streams and ``DIR`` with one."""
    if STREAM_FIELD in labels_dir:
        return Path(expand_output(labels_dir, name))
    return Path(labels_dir) / name if many else Path(labels_dir)


def open_streams(specs: Sequence[StreamSpec], outputs: Sequence[str], labels_dir: Optional[str] = None,
                 overwrite: bool = False, loop: bool = False,
                 camera: Optional[CameraOptions] = None,
                 video: Optional[VideoSettings] = None, decode: str = "auto",
                 scale: Optional[ScaleRule] = None) -> Tuple[List[Stream], List[Sink]]:
    """Open every stream's source and outputs: ``(streams, mosaic_sinks)``.

    ``decode`` and ``scale`` go to :func:`~fcn_deploy.runtime.sources.open_source`: the decoder
    (``auto``, ``nvidia``, ``gstreamer``, ``ffmpeg``) and the inference size a GStreamer
    decoder scales each stream's frames to.

    With one stream, every output is that stream's. With several, outputs follow the module
    docstring's table. Network streams get :attr:`~fcn_deploy.runtime.pipeline.Stream.reopen`
    so that the pipeline reconnects them. Any failure closes everything opened so far and is
    raised as one :class:`~fcn_deploy.errors.FcnDeployError` that names the stream.
    """
    many = len(specs) > 1
    camera = camera or CameraOptions()
    streams: List[Stream] = []
    mosaic_sinks: List[Sink] = []
    servers: List[Sink] = []
    try:
        sources: List[Source] = []
        for spec in specs:
            try:
                sources.append(open_source(spec.uri, loop=loop, camera=camera, decode=decode, scale=scale))
            except FcnDeployError as exc:
                raise type(exc)(f"stream {spec.name}: {exc}" if many else str(exc)) from None
            streams.append(Stream(sources[-1], [], None, spec.name, _reopener(spec.uri, camera, decode, scale)))
        fps = next((s.fps for s in sources if s.fps), None)
        any_live = any(s.live for s in sources)
        for output in outputs:
            if STREAM_FIELD in output:  # one output per stream, also with one stream
                for stream in streams:
                    stream.sinks.append(open_sink(expand_output(output, stream.name), fps=stream.source.fps,
                                                  overwrite=overwrite, video=video,
                                                  live=stream.source.live))  # type: ignore[attr-defined]
                continue
            sink = open_sink(output, fps=fps if many else sources[0].fps, overwrite=overwrite, video=video,
                             live=any_live if many else sources[0].live)
            if not many:
                streams[0].sinks.append(sink)  # type: ignore[attr-defined]
            elif hasattr(sink, "channel"):  # a server (HTTP, RTSP): each stream on its own path
                servers.append(sink)
                mosaic_sinks.append(sink)
                for stream in streams:
                    stream.sinks.append(sink.channel(stream.name))  # type: ignore[attr-defined]
            else:
                mosaic_sinks.append(sink)
        if labels_dir:
            for stream in streams:
                stream.label_sink = LabelSink(labels_folder(labels_dir, stream.name, many), overwrite=overwrite)
    except BaseException:
        _close_all(streams, mosaic_sinks)
        raise
    return streams, mosaic_sinks


def _reopener(uri: str, camera: CameraOptions, decode: str = "auto",
              scale: Optional[ScaleRule] = None) -> Optional[Callable[[], Source]]:
    if not is_network_uri(uri):
        return None
    return lambda: open_source(uri, camera=camera, decode=decode, scale=scale)


def close_streams(streams: Sequence[Stream], mosaic_sinks: Sequence[Sink] = ()) -> None:
    """Close every source and sink of :func:`open_streams` (the pipeline closes the sinks of
    a run; closing twice is harmless)."""
    _close_all(streams, mosaic_sinks)
