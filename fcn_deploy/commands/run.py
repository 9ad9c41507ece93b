"""``fcn-deploy run``: live segmentation from any source to any number of outputs.

With no arguments it plays the bundled CamVid clip through the bundled CamVid model and
writes ``./fcn-deploy-out/camvid_clip_overlay.mp4``: the README's first command.
"""
from __future__ import annotations

import argparse

OUT_DIR = "fcn-deploy-out"


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="segment a camera, stream, video or image folder in real time",
        description="Segment frames from a camera, stream, video file, image folder or GStreamer\n"
        "pipeline with an exported model, and show, stream or save the result.\n"
        "With no arguments: the bundled CamVid model on the bundled CamVid clip, written to\n"
        "./fcn-deploy-out/. Ctrl-C stops cleanly: output files are finalised.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="sources: 0 | /dev/video0 | v4l2://0 | csi://0 | rtsp://... | http(s)://... | clip.mp4 | "
        "frames/ | 'frames/*.png' | 'GSTREAMER ! ... ! appsink'\n"
        "outputs: display://0 | out.mp4 | out.avi | frames_out/ | http://0.0.0.0:8554 | none\n"
        "examples:\n"
        "  fcn-deploy run --camera 0 --output display://0\n"
        "  fcn-deploy run --source csi://0 --width 1280 --height 720 --output http://0.0.0.0:8554\n"
        "  fcn-deploy run --source images/ --labels-dir labels/ --output none   # batch prediction",
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
    model.add_argument("--input-size", default=None, metavar="native|HxW",
                       help="network input size: 'native' keeps each frame's own size, HxW forces one "
                       "(default: each frame resized, aspect ratio kept, so that objects appear at the scale "
                       "the model was trained at; labels always come back at the frame's size)")

    source = parser.add_argument_group("input")
    which = source.add_mutually_exclusive_group()
    which.add_argument("--source", default=None, metavar="URI", help="what to read (see below; default: the demo clip)")
    which.add_argument("--camera", type=int, default=None, metavar="N", help="camera index N (same as --source N)")
    source.add_argument("--loop", action="store_true", help="play a file or folder again when it ends")
    source.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames")
    source.add_argument("--width", type=int, default=None, help="camera capture width (csi:// default 1280)")
    source.add_argument("--height", type=int, default=None, help="camera capture height (csi:// default 720)")
    source.add_argument("--framerate", type=float, default=None, metavar="FPS",
                        help="camera frame rate (csi:// default 30)")
    source.add_argument("--flip-method", type=int, default=0, metavar="0-7",
                        help="csi:// nvvidconv flip-method: 0 none, 2 rotate 180, 4 mirror, 6 flip (default 0)")

    output = parser.add_argument_group("output")
    output.add_argument("--output", action="append", default=None, metavar="URI",
                        help="where to send the rendered frames; repeat for several (default: a video "
                        f"in ./{OUT_DIR}/, or none when --labels-dir is given)")
    output.add_argument("--labels-dir", default=None, metavar="DIR",
                        help="also write a single-channel PNG of class indices per frame, named after the source image")
    output.add_argument("--overwrite", action="store_true", help="replace output files that already exist")

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


def default_output(stem: str, mode: str):
    """``./fcn-deploy-out/STEM_MODE.mp4``, numbered so that no earlier result is overwritten."""
    from pathlib import Path

    base = Path(OUT_DIR) / f"{stem}_{mode.replace('-', '')}"
    path = base.with_suffix(".mp4")
    number = 2
    while path.exists():
        path = Path(f"{base}_{number}.mp4")
        number += 1
    return path


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
    for target in list(outputs) + ([labels_dir] if labels_dir else []):
        if "://" in target and not target.startswith("file://"):
            continue
        path = Path(target[len("file://"):] if target.startswith("file://") else target).expanduser().resolve()
        if path == source or (path == folder and source.is_dir()):
            raise FcnDeployError(f"output {target} is the source being read; choose another output")


def run(args: argparse.Namespace) -> int:
    import logging
    import os

    if not args.verbose:
        # FFmpeg prints its own lines ("moov atom not found") for a bad file; ours say it once.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

    from ..errors import FcnDeployError
    from ..runtime.assets import demo_clip
    from ..runtime.model_files import ONNX, default_device, model_kind, resolve_model_file
    from ..runtime.backends import open_backend
    from ..runtime.input_size import InputSizer, parse_input_size
    from ..runtime.pipeline import Pipeline
    from ..runtime.sinks import LabelSink, VideoFileSink, open_sink
    from ..runtime.sources import CameraOptions, camera_uri, open_source
    from ..runtime.visualize import VisualOptions, Visualizer

    log = logging.getLogger("fcn_deploy.run")
    if args.max_frames is not None and args.max_frames < 1:
        raise FcnDeployError(f"--max-frames must be at least 1, not {args.max_frames}")
    if args.queue_size < 1:
        raise FcnDeployError(f"--queue-size must be at least 1, not {args.queue_size}")
    input_size = parse_input_size(args.input_size, "--input-size")
    options = VisualOptions(
        mode=args.mode, alpha=args.alpha, upscale=args.upscale, legend=not args.no_legend, hud=not args.no_hud,
        classes=split_list(args.classes) if args.classes is not None else None,
        ignore=split_list(args.ignore_class),
    )
    model_path = resolve_model_file(args.model)
    kind = model_kind(model_path)
    if args.threads and kind != ONNX:
        raise FcnDeployError(f"--threads sets ONNX Runtime's CPU threads; {model_path} is a TensorRT engine (leave it out)")
    device = args.device or default_device(kind)
    if args.camera is not None:
        uri = camera_uri(args.camera)
    elif args.source is not None:
        uri = args.source
    else:
        uri = str(demo_clip())

    outputs = args.output
    if outputs is None:
        outputs = ["none"] if args.labels_dir else [str(default_output(source_stem(uri), args.mode))]

    refuse_source_as_output(uri, outputs, args.labels_dir)
    camera = CameraOptions(args.width, args.height, args.framerate, args.flip_method)
    source = open_source(uri, loop=args.loop, camera=camera)
    sinks, label_sink, backend = [], None, None
    handed_over = False  # once the pipeline runs, it closes the sinks however it ends
    try:
        for output in outputs:
            sinks.append(open_sink(output, fps=source.fps, overwrite=args.overwrite))
        if args.labels_dir:
            label_sink = LabelSink(args.labels_dir, overwrite=args.overwrite)
        backend_options = {"threads": args.threads} if args.threads else {}
        if kind == ONNX:
            backend_options["spinning"] = False  # spinning ORT threads starve capture and rendering
        engine_choice = None
        if kind == ONNX and device.strip().lower() == "cpu":  # the faster installed CPU engine for this model
            from ..runtime.engine_choice import choose_cpu_backend

            device, engine_choice = choose_cpu_backend(model_path, args.threads, spinning=False)
        backend = open_backend(model_path, device, **backend_options)
        meta = backend.metadata
        visualizer = Visualizer(meta.classes, meta.palette, options)
        if engine_choice:
            log.info("%s", engine_choice)  # said once the options are known to be good

        log.info("%s on %s (%s) -> %s", meta.model_name, source.description, device,
                 ", ".join([s.description for s in sinks] + ([label_sink.description] if label_sink else [])))
        for sink in sinks:
            if hasattr(sink, "url"):
                log.info("watch the stream at %s", sink.url)
        sizer = InputSizer.for_backend(backend, input_size)
        if getattr(source, "size", None):  # said once, at start: the size frames go in at, and why
            width, height = source.size
            sizer.size_for((height, width))
        pipeline = Pipeline(source, backend, visualizer, sinks, label_sink, input_size=sizer,
                            max_frames=args.max_frames, queue_size=args.queue_size)
        handed_over = True
        report = pipeline.run()
    except BaseException:
        if not handed_over:
            for sink in sinks:
                sink.close()
            if label_sink is not None:
                label_sink.close()
        raise
    finally:
        source.close()
        if backend is not None:
            backend.close()

    print(report.format())
    for sink in sinks:
        if isinstance(sink, VideoFileSink) and sink.frames:
            print(f"wrote {sink.path} ({sink.frames} frames at {sink.fps:g} fps)")
    if label_sink is not None:
        print(f"wrote {label_sink.frames} label PNGs to {label_sink.folder}")
    if report.frames_rendered == 0:
        raise FcnDeployError(f"no frame was processed from {source.description}")
    return 0
