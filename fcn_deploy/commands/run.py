"""``fcn-deploy run``: live segmentation from any source to any number of outputs.

With no arguments it plays the bundled CamVid clip through the bundled CamVid model and
writes ``./fcn-deploy-out/camvid_clip_overlay.mp4``: the README's first command.
"""
from __future__ import annotations

import argparse
from typing import Sequence

OUT_DIR = "fcn-deploy-out"


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="segment a camera, stream, video or image folder in real time",
        description="Segment frames from a camera, stream, video file, image folder or GStreamer\n"
        "pipeline with an exported model, and show, stream or save the result.\n"
        "With no arguments: the bundled CamVid model on the bundled CamVid clip, written to\n"
        "./fcn-deploy-out/. Ctrl-C (or SIGTERM) stops cleanly: output files are finalised. A camera or\n"
        "stream stopped that way ends normally (status 0); a video file or image folder stopped before\n"
        "its end exits with status 130 (SIGINT) or 143 (SIGTERM) and says how many frames were processed.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="sources: 0 | /dev/video0 | v4l2://0 | csi://0 | rtsp://... | http(s)://... | clip.mp4 | "
        "frames/ | 'frames/*.png' | 'GSTREAMER ! ... ! appsink'\n"
        "outputs: display://0 | out.mp4 | out.avi | frames_out/ | http://[HOST]:PORT[?token=T&viewers=N] | none\n"
        "examples:\n"
        "  fcn-deploy run --camera 0 --output display://0\n"
        "  fcn-deploy run --source csi://0 --width 1280 --height 720 --output 'http://0.0.0.0:8090?token=SECRET'\n"
        "  fcn-deploy run --source images/ --labels-dir labels/ --output none   # batch prediction\n"
        "  fcn-deploy run --source front=rtsp://cam1/live --source rear=rtsp://cam2/live \\\n"
        "      --output 'out_{stream}.mp4' --output http://:8090   # several streams, batched",
    )
    model = parser.add_argument_group("model")
    model.add_argument("--model", default="camvid", metavar="M",
                       help="an exported .onnx or .engine file, or 'camvid' (the bundled model; default)")
    model.add_argument("--device", default=None, metavar="D",
                       help="cpu, ort-cpu, openvino[:GPU], cuda[:N] or tensorrt (default: cuda for a TensorRT engine, "
                       "else cpu, which runs an ONNX file in the faster installed CPU engine, ONNX Runtime or "
                       "OpenVINO, measured once per machine and model; ort-cpu and openvino name one)")
    model.add_argument("--threads", type=int, default=None, metavar="N",
                       help="inference threads on the CPU (default: one per core)")
    model.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                       help="precision of the float layers: fp32 (default, on every engine) or bf16 (OpenVINO on a "
                       "CPU with AVX512_BF16 or AMX; refused where the hardware or engine lacks it)")
    model.add_argument("--input-size", default=None, metavar="native|HxW",
                       help="network input size: 'native' keeps each frame's own size, HxW forces one "
                       "(default: each frame resized, aspect ratio kept, so that objects appear at the scale "
                       "the model was trained at; labels always come back at the frame's size)")

    source = parser.add_argument_group("input")
    source.add_argument("--source", dest="sources", action="append", default=None, metavar="[NAME=]URI",
                        help="what to read (see below; default: the demo clip); repeat for several streams, "
                        "batched into one inference call; NAME names the stream (default: its index from 0)")
    source.add_argument("--camera", dest="sources", action="append", type=camera_source, metavar="N",
                        help="camera index N (same as --source N); repeatable")
    source.add_argument("--batch-timeout", type=float, default=DEFAULT_BATCH_TIMEOUT_MS, metavar="MS",
                        help="with several streams, how long a batch waits for streams that have no frame yet "
                        f"(default {DEFAULT_BATCH_TIMEOUT_MS:g})")
    source.add_argument("--loop", action="store_true", help="play a file or folder again when it ends")
    source.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames")
    source.add_argument("--width", type=int, default=None, help="camera capture width (csi:// default 1280)")
    source.add_argument("--height", type=int, default=None, help="camera capture height (csi:// default 720)")
    source.add_argument("--framerate", type=float, default=None, metavar="FPS",
                        help="camera frame rate (csi:// default 30)")
    source.add_argument("--flip-method", type=int, default=0, metavar="0-7",
                        help="csi:// nvvidconv flip-method: 0 none, 1 turn left, 2 rotate 180, 3 turn right, 4 mirror, "
                        "6 flip, 5/7 transpose; 1, 3, 5, 7 swap width and height (default 0)")
    source.add_argument("--decode", choices=("auto", "nvidia", "gstreamer", "ffmpeg"), default="auto",
                        help="decoder of video files, rtsp:// streams and (nvidia/gstreamer) MJPEG USB cameras: "
                        "nvidia = GStreamer with NVDEC and nvvidconv (Jetson), gstreamer = the same with software "
                        "elements, ffmpeg = OpenCV's FFmpeg; the GStreamer ones scale to the input size before the "
                        "CPU sees the frame; auto takes the first this OpenCV and GStreamer can run (default)")

    output = parser.add_argument_group("output")
    output.add_argument("--output", action="append", default=None, metavar="URI",
                        help="where to send the rendered frames; repeat for several (default: a video "
                        f"in ./{OUT_DIR}/, or none when --labels-dir is given). With several streams "
                        "'{stream}' in a file or folder name makes one per stream (out_{stream}.mp4); "
                        "http://HOST:PORT serves each stream at /NAME and a mosaic at /; any other "
                        "output gets the mosaic")
    output.add_argument("--labels-dir", default=None, metavar="DIR",
                        help="also write a single-channel PNG of class indices per frame, named after the source "
                        "image (with several streams, in DIR/NAME/)")
    output.add_argument("--overwrite", action="store_true", help="replace output files that already exist")
    video = parser.add_argument_group("video encoding (files and rtsp:// streams)")
    video.add_argument("--codec", default=None, metavar="C",
                       help="h264 (default for .mp4/.mov/.mkv and rtsp://: plays in every browser), h265, mp4v, "
                       "mjpeg (default for .avi), or an FFmpeg encoder name")
    video.add_argument("--bitrate", type=_bitrate, default=None, metavar="BPS",
                       help="target bits per second, e.g. 4M or 800k (default: constant quality)")
    video.add_argument("--preset", default=None, metavar="P",
                       help="x264/x265 speed preset: ultrafast (default: about mp4v's CPU cost) ... medium "
                       "(smaller files, more CPU)")
    video.add_argument("--encoder", default="auto", choices=("auto", "cpu", "jetson"),
                       help="auto: the Jetson hardware encoder (nvv4l2h264enc) where GStreamer has it, else the "
                       "CPU (PyAV's libx264) (default auto)")

    numbers = parser.add_argument_group("statistics, zones and events (docs/outputs.md)")
    numbers.add_argument("--stats", default=None, metavar="FILE.jsonl|-",
                         help="one JSON line per processed frame and stream: stream, frame, time, latency_ms, "
                         "the share of each class in the frame (classes) and in each zone (zones); '-' is stdout")
    numbers.add_argument("--zone", dest="zones", action="append", default=[], metavar="[STREAM:]NAME=x1,y1,x2,y2,...",
                         help="a polygon (two points: a rectangle) whose class shares are reported on their own; "
                         "coordinates in 0..1 are fractions of the frame, else pixels; repeatable")
    numbers.add_argument("--event", dest="events", action="append", default=[], metavar="'[ZONE:]CLASS>SHARE'",
                         help="a line when the condition starts and when it ends (e.g. 'lane:Car>0.2', 'Sky<0.1'; "
                         "no ZONE: the whole frame); repeatable")
    numbers.add_argument("--event-hold", type=int, default=3, metavar="N",
                         help="frames in a row a condition must hold (or fail) before it starts (or ends) "
                         "(default 3: one noisy frame does not flap)")
    numbers.add_argument("--publish", action="append", default=[], metavar="mqtt://HOST:PORT/TOPIC",
                         help="send the statistics and event lines to an MQTT broker too (needs "
                         "'fcn-deploy[publish]'); repeatable")

    look = parser.add_argument_group("visualisation")
    look.add_argument("--mode", default="overlay", choices=("overlay", "mask", "side-by-side"),
                      help="how to draw the labels (default overlay)")
    look.add_argument("--alpha", type=float, default=0.5, help="overlay weight of the class colours, 0..1 (default 0.5)")
    look.add_argument("--upscale", default="nearest", choices=("nearest", "linear"),
                      help="label map to frame size: hard class edges or smooth colours (default nearest)")
    look.add_argument("--classes", default=None, metavar="LIST", help="only draw these classes (names or indices, comma separated)")
    look.add_argument("--ignore-class", default=None, metavar="LIST", help="never draw these classes (names or indices)")
    look.add_argument("--no-legend", action="store_true", help="hide the class legend")
    look.add_argument("--no-hud", action="store_true", help="hide the FPS and latency display")
    parser.add_argument("--queue-size", type=int, default=2, metavar="N", help="frames buffered between stages (default 2)")
    parser.set_defaults(func=run)


DEFAULT_BATCH_TIMEOUT_MS = 20.0  # fcn_deploy.runtime.pipeline's; here so that --help imports nothing


def _bitrate(text: str) -> int:
    """``4M``, ``800k`` or ``2500000`` -> bits per second (a usage error otherwise)."""
    value = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(value[-1:], 1)
    number = value[:-1] if scale > 1 else value
    try:
        bits = float(number) * scale
    except ValueError:
        bits = 0
    if bits < 1000:
        raise argparse.ArgumentTypeError(f"bitrate must be bits per second such as 4M or 800k, not {text!r}")
    return int(bits)


def camera_source(text: str) -> str:
    """``--camera N``: the camera's source URI (checked here so that a bad N is a usage error)."""
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"camera index must be a number, not {text!r}")
    return str(int(text))


def split_list(text):
    return [item for item in (text or "").split(",") if item.strip()]


def source_stem(uri: str) -> str:
    """A short name for default output files: the file or folder name, ``camera0``, ``stream``."""
    import re
    from pathlib import Path

    text = uri.strip()
    if text.isdigit():
        return f"camera{text}"
    scheme, sep, rest = text.partition("://")
    if sep and scheme.lower() in ("v4l2", "csi"):
        return f"{scheme.lower()}{re.sub(r'[^0-9]', '', rest) or 0}"
    if text.startswith("/dev/video"):
        return f"camera{text[len('/dev/video'):]}"
    if "!" in text or (sep and scheme.lower() != "file"):
        return "stream"
    path = Path(rest if sep else text.rstrip("/"))
    if any(ch in path.name for ch in "*?["):
        path = path.parent
    return re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem or path.name) or "output"


def default_output(stem: str, mode: str, streams: Sequence[str] = ()):
    """``./fcn-deploy-out/STEM_MODE.mp4``, numbered so that no earlier result is overwritten.

    With ``streams`` (names), ``STEM`` holds ``{stream}`` and the number is the first for
    which no stream's file exists yet.
    """
    from pathlib import Path

    from ..runtime.streams import expand_output

    base = f"{OUT_DIR}/{stem}_{mode.replace('-', '')}"
    names = list(streams) or [""]
    number = 1
    while True:
        candidate = f"{base}.mp4" if number == 1 else f"{base}_{number}.mp4"
        if not any(Path(expand_output(candidate, name)).exists() for name in names):
            return candidate if streams else Path(candidate)
        number += 1


def frames_to_come(streams, max_frames):
    """How many frames the run will process, for the progress bar: known for files and
    folders (capped by ``--max-frames``; a looped one plays until ``--max-frames``), ``None``
    when it is not known or any stream is a camera or network stream (live: it runs until
    stopped, and drops frames to stay current)."""
    total = 0
    for stream in streams:
        source = stream.source
        count = None if getattr(source, "loop", False) else getattr(source, "frame_count", None)
        if source.live or stream.reopen is not None:
            return None
        if count and max_frames:
            count = min(count, max_frames)
        count = count or max_frames
        if not count:
            return None
        total += count
    return total


def refuse_source_as_output(uri: str, outputs, labels_dir) -> None:
    """Even with --overwrite, never write over the input being read."""
    from pathlib import Path

    from ..errors import FcnDeployError

    text = uri[len("file://"):] if uri.startswith("file://") else uri
    source = Path(text).expanduser()
    if not source.exists():
        return
    source = source.resolve()
    folder = source if source.is_dir() else source.parent
    for target in list(outputs) + ([str(labels_dir)] if labels_dir else []):
        if "://" in target and not target.startswith("file://"):
            continue
        path = Path(target[len("file://"):] if target.startswith("file://") else target).expanduser().resolve()
        if path == source or (path == folder and source.is_dir()):
            raise FcnDeployError(f"output {target} is the source being read; choose another output")


def stopped_early(report) -> None:
    """Raise :class:`~fcn_deploy.errors.StoppedEarly` when a signal stopped the run before the
    end of a file or folder: its outputs hold only part of it, so the run did not do what it was
    asked. A camera or network stream (or a file played with --loop) has no end: Ctrl-C or
    SIGTERM is how such a run ends, with status 0."""
    import signal

    from ..errors import StoppedEarly

    if report.stopped_by not in ("SIGINT", "SIGTERM") or not report.cut_short:
        return
    parts = []
    for stream in report.cut_short:
        of = f" of {stream.total}" if stream.total is not None else ""
        parts.append(f"{stream.description}: {stream.processed}{of} frames processed")
    raise StoppedEarly(f"stopped by {report.stopped_by} before the end of the input ({'; '.join(parts)}); "
                       "the outputs hold only those frames", getattr(signal, report.stopped_by))


def run(args: argparse.Namespace) -> int:
    import logging
    import os
    import sys

    if not args.verbose:
        # FFmpeg prints its own lines ("moov atom not found") for a bad file; ours say it once.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

    from ..errors import FcnDeployError
    from ..runtime.assets import demo_clip
    from ._progress import FrameProgress
    from ..runtime.model_files import ONNX, default_device, model_kind, resolve_model_file
    from ..runtime.backends import open_backend
    from ..runtime.input_size import InputSizer, parse_input_size
    from ..runtime.pipeline import MultiStreamPipeline
    from ..runtime.results_setup import ResultsOptions, open_results
    from ..runtime.sinks import MjpegSink, VideoFileSink
    from ..runtime.zones import parse_zones
    from ..runtime.sources import CameraOptions
    from ..runtime.encoders import VideoSettings
    from ..runtime.streams import (STREAM_FIELD, StreamSpec, close_streams, expand_output, labels_folder, open_streams,
                                   stream_specs)
    from ..runtime.visualize import VisualOptions, Visualizer

    log = logging.getLogger("fcn_deploy.run")
    if args.max_frames is not None and args.max_frames < 1:
        raise FcnDeployError(f"--max-frames must be at least 1, not {args.max_frames}")
    if args.queue_size < 1:
        raise FcnDeployError(f"--queue-size must be at least 1, not {args.queue_size}")
    if args.batch_timeout < 0:
        raise FcnDeployError(f"--batch-timeout must be 0 or more milliseconds, not {args.batch_timeout:g}")
    input_size = parse_input_size(args.input_size, "--input-size")
    options = VisualOptions(
        mode=args.mode, alpha=args.alpha, upscale=args.upscale, legend=not args.no_legend, hud=not args.no_hud,
        classes=split_list(args.classes) if args.classes is not None else None,
        ignore=split_list(args.ignore_class),
    )
    model_path = resolve_model_file(args.model)
    kind = model_kind(model_path)
    if args.threads and kind != ONNX:
        what = "served by Triton, which sets its own" if kind == "triton" else "a TensorRT engine"
        raise FcnDeployError(f"--threads sets ONNX Runtime's CPU threads; {model_path} is {what} (leave it out)")
    device = args.device or default_device(kind)
    specs = stream_specs(args.sources) if args.sources else [StreamSpec("0", str(demo_clip()))]
    many = len(specs) > 1

    outputs = args.output
    if outputs is None:
        if args.labels_dir:
            outputs = ["none"]
        elif many:
            outputs = [default_output(STREAM_FIELD, args.mode, [s.name for s in specs])]
        else:
            outputs = [str(default_output(source_stem(specs[0].uri), args.mode))]
    for spec in specs:
        targets = [expand_output(o, spec.name) for o in outputs]
        labels = labels_folder(args.labels_dir, spec.name, many) if args.labels_dir else None
        refuse_source_as_output(spec.uri, targets, labels)

    zones = parse_zones(args.zones, [s.name for s in specs])  # every flag checked before anything opens
    if args.event_hold < 1:
        raise FcnDeployError(f"--event-hold must be at least 1 frame, not {args.event_hold}")
    camera = CameraOptions(args.width, args.height, args.framerate, args.flip_method)
    video = VideoSettings(codec=args.codec, bitrate=args.bitrate, preset=args.preset, encoder=args.encoder)
    # Sources first: a camera that will not open is one line at once, before any engine loads.
    early = InputSizer.for_model_file(model_path, input_size) if kind != "triton" else None
    streams, mosaic_sinks = open_streams(specs, outputs, args.labels_dir, overwrite=args.overwrite, loop=args.loop,
                                         camera=camera, video=video, decode=args.decode,
                                         scale=early.decoder_scale if early is not None else None)
    backend = None
    results = None
    pipeline = None
    try:
        backend_options = {"threads": args.threads} if args.threads else {}
        if kind == ONNX:
            backend_options["spinning"] = False  # spinning ORT threads starve capture and rendering
        engine_choice = None
        if kind == ONNX and device.strip().lower() == "cpu":  # the faster installed CPU engine for this model
            from ..runtime.engine_choice import choose_cpu_backend
            from ..runtime.onnx_props import onnx_metadata_props

            onnx_metadata_props(str(model_path))  # a file that is not ONNX: one line, before two engines try it

            device, engine_choice = choose_cpu_backend(model_path, args.threads, spinning=False,
                                                       precision=args.precision)
        backend = open_backend(model_path, device, precision=args.precision, **backend_options)
        meta = backend.metadata
        visualizer = Visualizer(meta.classes, meta.palette, options)
        if engine_choice:
            log.info("%s", engine_choice)  # said once the options are known to be good

        sizer = InputSizer.for_backend(backend, input_size)
        for note in dict.fromkeys(s.source.decode_note for s in streams if s.source.decode_note):
            log.info("%s", note)  # what --decode auto took, once
        for stream in streams:
            outs = [s.description for s in stream.sinks] + ([stream.label_sink.description] if stream.label_sink else [])
            log.info("%s%s on %s (%s) in %s -> %s", f"stream {stream.name}: " if many else "", meta.model_name,
                     stream.source.description, device, backend.execution_precision, ", ".join(outs) or "mosaic only")
        if mosaic_sinks:
            log.info("mosaic of %d streams -> %s", len(streams), ", ".join(s.description for s in mosaic_sinks))
        for sink in mosaic_sinks + ([] if many else list(streams[0].sinks)):
            if hasattr(sink, "url"):
                log.info("watch the stream%s at %s", "s" if many else "", sink.url)
        if not many and getattr(streams[0].source, "size", None):
            width, height = streams[0].source.size  # said once, at start: the size frames go in at, and why
            sizer.size_for((height, width))
        servers = list({id(k.server): k.server for k in mosaic_sinks + [k for st in streams for k in st.sinks]
                         if isinstance(k, MjpegSink)}.values())
        results, live = open_results(
            ResultsOptions(args.stats, args.publish, zones, args.events, args.event_hold, args.overwrite, servers),
            meta.classes, meta.palette, [s.name for s in streams], meta.model_name)
        pipeline = MultiStreamPipeline(streams, backend, visualizer, mosaic_sinks, input_size=sizer,
                                       batch_timeout_ms=args.batch_timeout, max_frames=args.max_frames,
                                       queue_size=args.queue_size, results=results)
        if live is not None:
            live.report = pipeline.report  # the page marks a failed stream as failed
        frames = pipeline.report
        with FrameProgress(lambda: (frames.frames_rendered, frames.frames_dropped),
                           frames_to_come(streams, args.max_frames)):
            report = pipeline.run()
    except BaseException:
        if results is not None and pipeline is None:
            results.abandon()  # no run: no --stats file
        raise
    finally:
        close_streams(streams, mosaic_sinks)  # a second close of what the pipeline closed is harmless
        if backend is not None:
            backend.close()

    # When stdout carries the JSON lines (--stats -, or events alone), the summary goes to stderr.
    out = sys.stderr if args.stats == "-" or (args.events and not args.stats and not args.publish) else sys.stdout
    print(report.format(), file=out)
    if args.stats and args.stats != "-":
        print(f"wrote {results.records} statistics records to {args.stats}", file=out)
    for stream in streams:
        for sink in list(stream.sinks):
            if isinstance(sink, VideoFileSink) and sink.frames:
                print(f"wrote {sink.path} ({sink.frames} frames at {sink.fps:g} fps)", file=out)
        if stream.label_sink is not None:
            print(f"wrote {stream.label_sink.frames} label PNGs to {stream.label_sink.folder}", file=out)
    for sink in mosaic_sinks:
        if isinstance(sink, VideoFileSink) and sink.frames:
            print(f"wrote {sink.path} (mosaic, {sink.frames} frames at {sink.fps:g} fps)", file=out)
    stopped_early(report)
    if pipeline.stream_errors:
        if not many:
            raise next(iter(pipeline.stream_errors.values()))
        failed = report.failed
        raise FcnDeployError(f"{len(failed)} of {len(streams)} streams failed: "
                             + "; ".join(f"{s.name}: {s.error}" for s in failed))
    if report.frames_rendered == 0:
        raise FcnDeployError("no frame was processed from " + ", ".join(s.source.description for s in streams))
    skipped = [(stream, path) for stream in streams for path in getattr(stream.source, "skipped", None) or []]
    if skipped:  # an image folder's unreadable files, each warned about as it was met
        names = ", ".join(str(p) for _, p in skipped[:3]) + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else "")
        total = sum(len(getattr(s.source, "paths", ())) for s in streams)
        raise FcnDeployError(f"skipped {len(skipped)} of {total} images that cannot be read "
                             f"(corrupt or not images): {names}; the others were processed")
    return 0
