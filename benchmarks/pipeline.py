"""End-to-end pipeline FPS against model-only FPS, same backend, same input size.

    python3 benchmarks/pipeline.py                          # bundled CamVid model (or its untrained twin)
    python3 benchmarks/pipeline.py --model m.onnx --size 360x480 --frames 60 --rounds 3 --json out.json
    python3 benchmarks/pipeline.py --size 720x1280          # a 720p camera: frames resized to the training scale

``--size`` is the video's frame size; the network input size follows the runtime's rule (the
model's training scale, :mod:`fcn_deploy.runtime.input_size`) unless ``--input-size`` says
``native`` or ``HxW``, and model-only runs at that same input size.

*Model-only* runs ``backend.infer_labels`` on one real frame in a loop: the ceiling. The
*pipeline* plays a video file through :class:`fcn_deploy.runtime.pipeline.Pipeline` with its
decoding, resizing, rendering (overlay, legend, HUD) and an output (``none``: render and drop;
``mp4``: also encode a video file, in each codec of ``--codecs``: ``--codecs h264,mp4v`` measures
the H.264 default against the old MPEG-4 Part 2 in the same run). Its end-to-end FPS over the model-only FPS says how much
of the model's throughput the video loop keeps; the target is 90% or more.

Other processes may share the machine's cores, so the measurements alternate (model-only,
pipeline, model-only, ...), each pipeline run is compared with the model-only runs on either
side of it, and the median ratio over the rounds is reported, with the CPU time per frame
(process time, which contention does not inflate) as a check on the host-side overhead.

**Many streams** (``--streams 1,2,4``): for each N, N copies of the clip run as N streams of
one :class:`~fcn_deploy.runtime.pipeline.MultiStreamPipeline` (one batched inference call
per batch of N frames), against N separate ``fcn-deploy run`` processes on the same clips at
the same time (what a user without stream batching runs), and against the model alone on
batches of N frames (the ceiling). Reported: aggregate FPS of each, the pipeline's share of
the batched model-only throughput (target 90% or more), each stream's FPS over the mean
(fairness: target no stream below 90% for equal sources), and the batch sizes actually run.
The outputs of one N (``--codecs h264,mp4v``) run back to back in each round, in alternating
order, between two model-only runs: on a shared machine, compare codecs within one run only.

``--model`` takes an ``.onnx`` file, ``camvid`` (the bundled model), or a zoo name, which is
exported (untrained) to a temporary file first (that needs torch; the run itself does not).
The default is ``camvid`` when installed, else ``fcn8s_efficientnet_lite0`` with CamVid's 11
classes: the same network, so the same speed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Optional
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]

if __package__ in (None, ""):  # `python3 benchmarks/NAME.py` from a checkout: benchmarks/ is not installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fcn_deploy.options import parse_size
from fcn_deploy.runtime.assets import ASSETS, DEMO_CLIP, BUNDLED_MODELS
from fcn_deploy.runtime.backends import open_backend
from fcn_deploy.runtime.input_size import InputSizer, parse_input_size, resize_frame, size_text
from fcn_deploy.runtime.pipeline import MultiStreamPipeline, Pipeline, Stream
from fcn_deploy.runtime.encoders import VideoSettings
from fcn_deploy.runtime.sinks import Sink, VideoFileSink
from fcn_deploy.runtime.sources import open_source
from fcn_deploy.runtime.visualize import VisualOptions, Visualizer


def resolve_model(spec: str, workdir: Path, num_classes: int) -> Path:
    """An ONNX path for ``spec``: a file, the bundled model, or a zoo name exported here; a
    ``triton://`` URL as it is (a model on a Triton server)."""
    from fcn_deploy.runtime.model_files import is_remote

    if is_remote(spec):
        return spec
    if spec in BUNDLED_MODELS and (ASSETS / BUNDLED_MODELS[spec]).is_file():
        return ASSETS / BUNDLED_MODELS[spec]
    if spec.endswith(".onnx"):
        return Path(spec)
    if spec in BUNDLED_MODELS:  # not installed yet: its untrained twin
        spec = "fcn8s_efficientnet_lite0"
        print(f"bundled model not installed; using an untrained {spec} ({num_classes} classes): same speed")
    from fcn_deploy.converters.onnx_export import export
    from fcn_deploy.converters.resolve import resolve_model as resolve_zoo

    path = workdir / f"{spec}.onnx"
    export(resolve_zoo(spec, num_classes=num_classes), str(path))
    return path


def make_clip(path: Path, size, frames: int) -> Path:
    """The bundled CamVid clip at ``size`` (or as it is), ``frames`` long at most."""
    clip = ASSETS / DEMO_CLIP
    h, w = size
    cap = cv2.VideoCapture(str(clip))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (w, h))
    written = 0
    while written < frames:
        ok, img = cap.read()
        if not ok:
            break
        writer.write(img if img.shape[:2] == (h, w) else cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA))
        written += 1
    writer.release()
    return path


def open_model(args, workdir: Path, size, input_spec):
    """The model file and clip both modes time, the backend as ``fcn-deploy run`` opens it (on
    ``--device cpu`` the faster installed CPU engine), its visualiser and input sizer, and the
    clip's first frame at the input size."""
    model_path = resolve_model(args.model, workdir, args.num_classes)
    clip = make_clip(workdir / "clip.mp4", size, args.frames)
    options = {"threads": args.threads} if args.threads else {}
    if str(model_path).endswith(".onnx"):
        options["spinning"] = False  # spinning ORT threads starve capture and rendering
        if args.device.strip().lower() == "cpu":
            from fcn_deploy.runtime.engine_choice import choose_cpu_backend

            args.device, why = choose_cpu_backend(model_path, args.threads, spinning=False)
            print(why)
    backend = open_backend(model_path, args.device, **options)
    meta = backend.metadata
    visualizer = Visualizer(meta.classes, meta.palette, VisualOptions())
    sizer = InputSizer.for_backend(backend, input_spec, announce=False)
    frame = open_source(str(clip)).read().image
    input_size = sizer.size_for(frame.shape[:2])
    frame = resize_frame(frame, input_size)  # model-only runs at the pipeline's input size
    return model_path, clip, backend, visualizer, sizer, frame, input_size


def model_only_fps(backend, frame: np.ndarray, iterations: int, cpu_ms: list) -> float:
    batch = frame[None]
    cpu = time.process_time()
    start = time.perf_counter()
    for _ in range(iterations):
        backend.infer_labels(batch)
    fps = iterations / (time.perf_counter() - start)
    cpu_ms.append(1000 * (time.process_time() - cpu) / iterations)
    return fps


class RenderOnly(Sink):
    """Takes the rendered picture and drops it: the pipeline's cost without an output's."""

    def write(self, image, frame) -> None:
        pass


def output_codec(output: str):
    """``mp4:h264`` -> (``mp4``, ``h264``); ``none`` -> (``none``, None)."""
    kind, _, codec = output.partition(":")
    return kind, codec or None


def expand_outputs(outputs, codecs):
    """``mp4`` once per codec (``mp4:h264``, ``mp4:mp4v``); other outputs as they are."""
    return [f"{o}:{c}" for o in outputs for c in codecs] if codecs else outputs


def pipeline_run(backend, visualizer, clip: Path, frames: int, output: str, workdir: Path, sizer: InputSizer,
                 decode: str = "auto"):
    source = open_source(str(clip), loop=True, decode=decode, scale=sizer.decoder_scale)
    kind, codec = output_codec(output)
    if kind == "mp4":
        target = workdir / "out.mp4"
        if target.exists():
            target.unlink()
        sink = VideoFileSink(target, source.fps, settings=VideoSettings(codec=codec))
    else:
        sink = RenderOnly()
    try:
        return Pipeline(source, backend, visualizer, [sink], input_size=sizer, max_frames=frames, queue_size=2).run()
    finally:
        source.close()


def batched_model_fps(backend, frame: np.ndarray, batch: int, iterations: int, cpu_ms: Optional[list] = None) -> float:
    """Frames per second of the model alone on batches of ``batch`` copies of ``frame``
    (and its CPU ms per frame appended to ``cpu_ms``)."""
    frames = np.ascontiguousarray(np.repeat(frame[None], batch, axis=0))
    cpu = time.process_time()
    start = time.perf_counter()
    for _ in range(iterations):
        backend.infer_labels(frames)
    fps = batch * iterations / (time.perf_counter() - start)
    if cpu_ms is not None:
        cpu_ms.append(1000 * (time.process_time() - cpu) / (batch * iterations))
    return fps


def multi_stream_run(backend, visualizer, clip: Path, streams: int, frames: int, output: str, workdir: Path,
                     sizer: InputSizer):
    """N streams of ``clip`` through one pipeline; ``output`` none (no drawing) or mp4 (one file each)."""
    opened = []
    kind, codec = output_codec(output)
    for index in range(streams):
        source = open_source(str(clip), loop=True)
        sinks = []
        if kind == "mp4":
            target = workdir / f"multi_{index}.mp4"
            if target.exists():
                target.unlink()
            sinks.append(VideoFileSink(target, source.fps, settings=VideoSettings(codec=codec)))
        opened.append(Stream(source, sinks, name=str(index)))
    try:
        return MultiStreamPipeline(opened, backend, visualizer, input_size=sizer, max_frames=frames,
                                   queue_size=2).run()
    finally:
        for stream in opened:
            stream.source.close()


def separate_processes_fps(model_path: Path, clip: Path, streams: int, frames: int, output: str, workdir: Path,
                           input_size, threads, device: str) -> float:
    """Aggregate FPS of ``streams`` ``fcn-deploy run`` processes started together on the clip:
    all their frames over the longest run (each process's own wall time, start-up not counted).
    Summing each process's own FPS would overstate it whenever the runs do not fully overlap."""
    import re
    import subprocess

    processes = []
    kind, codec = output_codec(output)
    for index in range(streams):
        target = workdir / f"separate_{index}.mp4"
        if target.exists():
            target.unlink()
        command = [sys.executable, "-m", "fcn_deploy.cli", "run", "--model", str(model_path), "--source", str(clip),
                   "--loop", "--max-frames", str(frames), "--device", device,
                   "--output", str(target) if kind == "mp4" else "none"]
        if codec:
            command += ["--codec", codec]
        if input_size:
            command += ["--input-size", f"{input_size[0]}x{input_size[1]}"]
        if threads:
            command += ["--threads", str(threads)]
        processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    total, longest = 0, 0.0
    for process in processes:
        out, err = process.communicate(timeout=900)
        match = re.search(r"^(\d+) frames in ([0-9.]+) s", out, re.MULTILINE)
        if process.returncode != 0 or not match:
            raise SystemExit(f"fcn-deploy run failed: {err.strip().splitlines()[-1] if err.strip() else out}")
        total += int(match.group(1))
        longest = max(longest, float(match.group(2)))
    return total / longest if longest > 0 else 0.0


def multi_stream_main(args, size, input_spec, outputs) -> int:
    counts = [int(n) for n in args.streams.split(",") if n.strip()]
    if not counts or min(counts) < 1:
        raise SystemExit(f"--streams: expected stream counts such as 1,2,4, not {args.streams!r}")
    results = {"size": list(size), "device": args.device, "threads": args.threads, "cpus": os.cpu_count(),
               "machine": platform.processor() or platform.machine(), "frames_per_stream": args.frames,
               "rounds": args.rounds, "streams": {}}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model_path, clip, backend, visualizer, sizer, frame, input_size = open_model(args, workdir, size, input_spec)
        meta = backend.metadata
        forced = input_size if input_spec is not None else None
        for count in counts:  # warm-up: every batch size once, the codecs, the thread pools
            batched_model_fps(backend, frame, count, 1)
        for output in outputs:  # and each output's codec
            multi_stream_run(backend, visualizer, clip, 1, 3, output, workdir, sizer)
        print(f"{meta.model_name} ({model_path.name}), frames {size_text(size)} -> input {size_text(input_size)}, "
              f"{args.device}, ONNX Runtime threads={args.threads or 'default (cores)'}, {os.cpu_count()} CPUs, "
              f"{args.frames} frames per stream x {args.rounds} rounds (medians)", flush=True)
        for count in counts:
            # M P(a) P(b) M S(a) S(b), M P(b) P(a) M ...: the outputs (codecs) of one stream count
            # run back to back in each round, in alternating order, and each pipeline is compared
            # with the model-only runs either side of it, so a slow spell of the shared machine
            # hits the codecs and their reference alike.
            iterations = max(2, args.frames // count)
            model_cpu: list = []
            model = [batched_model_fps(backend, frame, count, iterations, model_cpu)]
            pipe, ratios, cpu_ms, separate, fairness, reports = ({o: [] for o in outputs} for _ in range(6))
            for round_index in range(args.rounds):
                order = outputs if round_index % 2 == 0 else outputs[::-1]
                for output in order:
                    cpu = time.process_time()
                    report = multi_stream_run(backend, visualizer, clip, count, args.frames, output, workdir, sizer)
                    cpu_ms[output].append(1000 * (time.process_time() - cpu) / max(1, report.frames_rendered))
                    pipe[output].append(report.fps)
                    rates = [s.fps for s in report.streams]
                    fairness[output].append(min(rates) / (sum(rates) / len(rates)))
                    reports[output].append(report)
                model.append(batched_model_fps(backend, frame, count, iterations, model_cpu))
                reference = (model[-2] + model[-1]) / 2
                for output in order:
                    ratios[output].append(pipe[output][-1] / reference)
                    separate[output].append(separate_processes_fps(model_path, clip, count, args.frames, output,
                                                                   workdir, forced, args.threads, args.device))
            m = statistics.median(model)
            for output in outputs:
                p, ratio, cpu, sep, fair = (statistics.median(v[output])
                                            for v in (pipe, ratios, cpu_ms, separate, fairness))
                batches = dict(reports[output][pipe[output].index(statistics.median_low(pipe[output]))].batch_sizes)
                print(f"  {count} stream(s) -> {output:<8}  model-only batch {count}: {m:6.2f} FPS "
                      f"(CPU {statistics.median(model_cpu):5.1f} ms/frame)   "
                      f"one pipeline: {p:6.2f} FPS ({100 * ratio:5.1f}% of model-only, CPU {cpu:5.1f} ms/frame)   "
                      f"{count} processes: {sep:6.2f} FPS   slowest stream {100 * fair:5.1f}% of mean   "
                      f"batches {', '.join(f'{n} x {b}' for b, n in sorted(batches.items(), reverse=True))}",
                      flush=True)
                results["streams"].setdefault(str(count), {})[output] = {
                    "model_only_fps": model, "model_only_cpu_ms_per_frame": model_cpu, "pipeline_fps": pipe[output], "ratios": ratios[output],
                    "pipeline_cpu_ms_per_frame": cpu_ms[output], "separate_processes_fps": separate[output],
                    "slowest_stream_over_mean": fairness[output], "median_ratio": ratio, "batch_sizes": batches,
                }
        backend.close()
    results["load_average"] = os.getloadavg()[0]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="camvid",
                        help="an .onnx file, 'camvid', a zoo name, or triton://HOST:PORT/NAME (a Triton server)")
    parser.add_argument("--num-classes", type=int, default=11, help="classes of an exported zoo model")
    parser.add_argument("--size", default="360x480", help="video frame HxW (default CamVid's 360x480)")
    parser.add_argument("--input-size", default=None, metavar="native|HxW",
                        help="network input size (default: the model's training scale, as fcn-deploy run)")
    parser.add_argument("--device", default="cpu",
                        help="as fcn-deploy run: cpu (the faster installed CPU engine), ort-cpu, openvino[:GPU], "
                             "cuda, tensorrt (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: cores)")
    parser.add_argument("--frames", type=int, default=40, help="frames per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    parser.add_argument("--outputs", default="none,mp4", help="pipeline outputs to measure: none, mp4")
    parser.add_argument("--codecs", default=None, metavar="C,C,...",
                        help="codecs of the mp4 output, each measured in the same run as mp4:CODEC "
                             "(e.g. h264,mp4v; default: the output's default, H.264, reported as mp4)")
    parser.add_argument("--streams", default=None, metavar="N,N,...",
                        help="compare N streams in one pipeline with N processes and batched model-only (e.g. 1,2,4)")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--decode", default="auto", choices=("auto", "nvidia", "gstreamer", "ffmpeg"),
                        help="the pipeline's decoder, as fcn-deploy run --decode (default auto)")
    parser.add_argument("--decode-cost", default=None, metavar="MODE,MODE",
                        help="instead: CPU time per frame of decoding an H.264 clip of --size plus resizing to the "
                             "input size, per decode mode (e.g. gstreamer,ffmpeg; benchmarks/decode_cost.py)")
    args = parser.parse_args()

    size = parse_size(args.size, "--size")
    input_spec = parse_input_size(args.input_size, "--input-size")
    outputs = [o.strip() for o in args.outputs.split(",") if o.strip()]
    codecs = [c.strip() for c in (args.codecs or "").split(",") if c.strip()]
    outputs = [x for o in outputs for x in (expand_outputs([o], codecs) if o == "mp4" else [o])]
    if args.decode_cost:
        from benchmarks import decode_cost

        modes = [m.strip() for m in args.decode_cost.split(",") if m.strip()]
        results = decode_cost.run(modes, size, args.frames, args.rounds, args.model, input_spec)
        if args.json:
            Path(args.json).write_text(json.dumps({"decode_cost": results}, indent=2))
        return 0
    if args.streams:
        return multi_stream_main(args, size, input_spec, outputs)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model_path, clip, backend, visualizer, sizer, frame, input_size = open_model(args, workdir, size, input_spec)
        meta = backend.metadata
        for _ in range(3):  # warm-up: allocations, thread pools
            backend.infer_labels(frame[None])
        for output in outputs:  # and the codecs, the legend panel
            pipeline_run(backend, visualizer, clip, 3, output, workdir, sizer, args.decode)

        # M P P M P P ... M: each pipeline run is compared with the model-only runs on
        # either side of it, so a slow spell of the shared machine hits both alike.
        model_cpu: list = []
        model_fps = [model_only_fps(backend, frame, args.frames, model_cpu)]
        pipe_fps, ratios, reports, pipe_cpu = ({o: [] for o in outputs} for _ in range(4))
        for round_index in range(args.rounds):
            runs = {}
            for output in outputs:
                cpu = time.process_time()
                runs[output] = pipeline_run(backend, visualizer, clip, args.frames, output, workdir, sizer, args.decode)
                pipe_cpu[output].append(1000 * (time.process_time() - cpu) / max(1, runs[output].frames_rendered))
            model_fps.append(model_only_fps(backend, frame, args.frames, model_cpu))
            reference = (model_fps[-2] + model_fps[-1]) / 2
            for output, report in runs.items():
                pipe_fps[output].append(report.fps)
                ratios[output].append(report.fps / reference)
                reports[output].append(report)
            print(f"round {round_index + 1}: model-only {reference:.2f} FPS, "
                  + ", ".join(f"pipeline->{o} {pipe_fps[o][-1]:.2f} FPS ({100 * ratios[o][-1]:.0f}%)"
                              for o in outputs), flush=True)
        backend.close()

    model = statistics.median(model_fps)
    print()
    print(f"{meta.model_name} ({os.path.basename(str(model_path))}), frames {size_text(size)} -> input {size_text(input_size)}, {args.device}, "
          f"ONNX Runtime threads={args.threads or 'default (cores)'}, {os.cpu_count()} CPUs, "
          f"{args.frames} frames x {args.rounds} rounds (medians), load average {os.getloadavg()[0]:.1f}")
    print(f"  model only          {model:7.2f} FPS  {1000 / model:7.1f} ms/frame  "
          f"CPU {statistics.median(model_cpu):.1f} ms/frame")
    results = {"model": meta.model_name, "size": list(size), "input_size": list(input_size), "device": args.device,
               "threads": args.threads,
               "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
               "frames": args.frames, "rounds": args.rounds, "model_only_fps": model_fps,
               "model_only_cpu_ms_per_frame": statistics.median(model_cpu),
               "load_average": os.getloadavg()[0], "pipelines": {}}
    for output in outputs:
        fps = statistics.median(pipe_fps[output])
        ratio = statistics.median(ratios[output])
        best = reports[output][pipe_fps[output].index(fps)]
        stages = {name: round(stage.mean_ms, 3) for name, stage in best.stages.items()}
        cpu_ms = statistics.median(pipe_cpu[output])
        print(f"  pipeline -> {output:<6} {fps:7.2f} FPS  {100 * ratio:5.1f}% of model-only  "
              f"CPU {cpu_ms:.1f} ms/frame  stages: " + ", ".join(f"{k} {v:.1f} ms" for k, v in stages.items()))
        results["pipelines"][output] = {"fps": pipe_fps[output], "median_fps": fps, "ratios": ratios[output],
                                        "median_ratio": ratio, "stage_ms": stages, "cpu_ms_per_frame": cpu_ms,
                                        "latency_p50_ms": best.latency_ms(50)}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
