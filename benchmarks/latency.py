#!/usr/bin/env python3
"""Latency of one model across backends x precisions x input sizes x batch sizes.

    python3 benchmarks/latency.py --model camvid --backends pytorch,ort-cpu \\
        --precisions fp32,int8 --sizes 360x480 --iters 30 --json latency.json --plot latency.png

What is timed (the same work on every backend): by default the deployment graph, raw
``N x H x W x 3`` uint8 BGR frames in and ``N x H x W`` uint8 labels out, host to host,
with the pre-processing and the arg-max inside the graph. ONNX Runtime and TensorRT run the
exported file (with the exporter's exact rewrites: sub-pixel upsamplers, arg-max before the
last pixel shuffle); PyTorch runs the exporter's own wrapper around the trained network,
channels-last (which the rewrites would not speed up). INT8 runs the graph each backend is
built for: u8s8 on ONNX Runtime's CPU provider, s8s8 (TensorRT's) elsewhere, or the one
``--int8-scheme`` names. ``bf16`` runs the FP32 graph in an engine's bfloat16 mode (OpenVINO
on a CPU with AVX512_BF16 or AMX; a TensorRT 10 engine built with the BF16 flag); elsewhere it is
a skipped row with the reason. Every row says what its engine compiled (``runs in``: OpenVINO's
read back from the compiled model: ``fp32``, ``bf16``, ``u8 conv 29/29, fp32``), and each lower
precision's speed-up over the same engine's fp32 (``x fp32``). ``--graph logits`` times the bare network on every backend
instead (normalised float input prepared outside the timed region, logits out).
Video decoding, resizing and drawing are never included (see benchmarks/pipeline.py).
glibc's malloc is told to keep freed memory in the process (``--system-malloc`` to leave
it), so PyTorch eager is not timed page-faulting its activations back in.

Each configuration: warm-up iterations (not recorded), then ``--iters`` timed iterations
or as many as fit in ``--seconds``, each synchronised; ``--rounds R`` spreads them over R
interleaved sweeps of all configurations (for a shared machine). Reported: min, mean, p50, p90, p99,
std, images/s; the host-to-device / compute / device-to-host split where the backend
allows it; the peak resident memory while the configuration ran; the model's GFLOPs and
the achieved GFLOP/s (at p50) against the machine's measured fp32 GEMM peak. A backend or
precision that cannot run here is listed as skipped, with the reason.

``--compare A.json B.json`` prints the ratios of two earlier runs instead.

``--model triton://HOST:PORT/NAME`` (a model on a Triton server, e.g. ``fcn-deploy serve``)
measures what a server is for instead: ``--concurrency 1,2,4,8`` clients, each on its own
connection sending one frame at a time, for ``--seconds`` each (default 5), against the same
number of threads sharing one local ONNX Runtime session of ``--local`` (default the bundled
model). Reported per client count: throughput (frames/s over the wall time) and the
per-request p50/p99 latency, frames in to labels out, the network included.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

if __package__ in (None, ""):  # `python3 benchmarks/NAME.py` from a checkout: benchmarks/ is not installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _machine, _report, _runners, _variants
from fcn_deploy.runtime.metadata import INT8_SCHEMES
from fcn_deploy.options import parse_key_values, parse_sizes
from fcn_deploy.errors import FcnDeployError, first_line

log = logging.getLogger("benchmarks.latency")

TIMED = {
    "labels": ("uint8 BGR frames in -> uint8 labels out, host to host; pre-processing (cast, channel order, "
               "mean/std, transpose) and arg-max inside the timed graph on every backend; decode, resize and "
               "drawing excluded"),
    "logits": ("normalised float32 N x 3 x H x W in -> float32 logits out, host to host; host-side "
               "normalisation and arg-max excluded"),
}


PEER_TIMED = ("; peer path (peer-*): uint8 BGR frames in -> numpy normalisation -> the plain export's logits -> "
              "numpy arg-max -> uint8 labels, all timed")


def parse_ints(text: str, what: str) -> List[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise FcnDeployError(f"bad {what} {text!r}; expected whole numbers, e.g. 1,4") from None
    if not values or any(v < 1 for v in values):
        raise FcnDeployError(f"bad {what} {text!r}; every value must be >= 1")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="benchmarks/latency.py",
        description="Latency across backends, precisions, input sizes and batch sizes.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Backends: " + ", ".join(_runners.BACKENDS) + ". Precisions: " + ", ".join(_runners.PRECISIONS) + ".",
    )
    p.add_argument("--model", default="camvid",
                   help="zoo name (random weights), 'camvid' (the bundled model), a checkpoint, or an .onnx/.engine file")
    p.add_argument("--num-classes", type=int, default=11, help="classes of a zoo model (default 11, CamVid's)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="zoo model build option, e.g. width=16 (repeatable)")
    p.add_argument("--backends", default="all", help="comma list or 'all' (default)")
    p.add_argument("--precisions", default="fp32,bf16,fp16,int8",
                   help="comma list of fp32, bf16, fp16, int8, or all (default all four; bf16 is the FP32 graph "
                        "in an engine's bfloat16 mode, skipped with the reason where the hardware lacks it)")
    p.add_argument("--sizes", default="360x480", help="input sizes HxW, comma separated (default 360x480)")
    p.add_argument("--batch", default="1", help="batch sizes, comma separated (default 1)")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations per configuration (default 3)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--iters", type=int, default=None, help="timed iterations per configuration (default 20)")
    group.add_argument("--seconds", type=float, default=None, help="time each configuration for this long instead")
    p.add_argument("--rounds", type=int, default=1,
                   help="split the timed iterations over R sweeps of all configurations, pooled (default 1); "
                        "spreads a shared machine's bursts of load over every backend")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for PyTorch, ONNX Runtime and the GEMM peak (default: the cores available)")
    p.add_argument("--graph", choices=_variants.GRAPHS, default="labels",
                   help="labels: the deployment graph with pre-processing and arg-max folded in (default); "
                        "logits: the bare network")
    p.add_argument("--calib", default="synthetic",
                   help="INT8 calibration images: a folder or DATASET[:ROOT] (train split); default synthetic. "
                        "Changes accuracy, not speed")
    p.add_argument("--frames", default=None, metavar="DIR|DATASET[:ROOT]",
                   help="time on these images (a folder, or a dataset's training split), resized to each size; "
                   "default: seeded noise frames")
    p.add_argument("--calib-images", type=int, default=16, help="INT8 calibration images (default 16)")
    p.add_argument("--int8-scheme", choices=("auto",) + INT8_SCHEMES, default="auto",
                   help="INT8 graph per backend: auto gives ONNX Runtime CPU the u8s8 graph (integer kernels "
                        "on x86) and GPU backends the s8s8 one TensorRT builds (default); s8s8 or u8s8 forces one")
    p.add_argument("--workdir", default=None, help=f"cache of exported variants (default {_variants.default_workdir()})")
    p.add_argument("--no-peak", action="store_true", help="skip measuring the GEMM peak")
    p.add_argument("--system-malloc", action="store_true", help=_machine.SYSTEM_MALLOC_HELP)
    p.add_argument("--json", metavar="FILE", help="write the full report as JSON")
    p.add_argument("--markdown", metavar="FILE", help="write the table as a README-ready markdown section")
    p.add_argument("--csv", metavar="FILE", help="write one row per configuration as CSV")
    p.add_argument("--plot", metavar="FILE", help="write a PNG chart of latency by backend and size")
    p.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"),
                   help="print the ratios of two earlier reports and exit")
    p.add_argument("--concurrency", default="1,2,4,8", metavar="LIST",
                   help="with --model triton://...: concurrent clients to sweep (default 1,2,4,8)")
    p.add_argument("--local", default="camvid", metavar="M",
                   help="with --model triton://...: the local ONNX model to compare against (default camvid; "
                        "'none' leaves it out)")
    p.add_argument("-v", "--verbose", action="store_true", help="log exports and cache use")
    return p


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------
def time_runner(runner: _runners.Runner, x: Any, warmup: int, iters: Optional[int],
                seconds: Optional[float]) -> List[float]:
    """Seconds per synchronised call of ``runner.run(x)``, after ``warmup`` untimed calls.

    With ``seconds`` the loop runs until that much time has passed (and at least two calls,
    so a spread exists); otherwise exactly ``iters`` calls.
    """
    for _ in range(warmup):
        runner.run(x)
    runner.reset_split()
    clock = time.perf_counter
    times: List[float] = []
    deadline = clock() + seconds if seconds else None
    while True:
        start = clock()
        runner.run(x)
        times.append(clock() - start)
        if deadline is not None:
            if clock() >= deadline and len(times) >= 2:
                break
        elif len(times) >= iters:
            break
    return times


@dataclass
class Config:
    """One configuration to measure, and what its rounds gathered."""

    backend: str
    precision: str
    height: int
    width: int
    batch: int
    times: List[float] = field(default_factory=list)
    splits: List[Dict[str, float]] = field(default_factory=list)
    memory: List[Dict[str, Any]] = field(default_factory=list)
    runner: Optional[Dict[str, Any]] = None
    failure: Optional[str] = None

    @property
    def size(self) -> str:
        return f"{self.height}x{self.width}"

    def label(self) -> str:
        return f"{self.backend} {self.precision} {self.size} batch {self.batch}"


def measure_round(config: Config, source, cache, args, calibration, threads: int, iters: Optional[int],
                  seconds: Optional[float], memory: _machine.PeakMemory) -> None:
    """Open ``config``'s runner, warm it up, time it, measure its split, close it; add to ``config``."""
    runner = None
    memory.start()
    try:
        runner = _runners.open_runner(config.backend, config.precision, source, cache, args.graph,
                                      (config.batch, config.height, config.width), threads, calibration)
        x = runner.prepare(_variants.timing_frames(args.frames, config.batch, config.height, config.width))
        config.times.extend(time_runner(runner, x, args.warmup, iters, seconds))
        split = runner.split(x, min(10, max(2, len(config.times))))
        if split:
            config.splits.append(split)
    except Exception as exc:  # one broken configuration must not end a long sweep: it is listed, with why
        log.debug("%s failed", config.label(), exc_info=True)
        config.failure = f"{type(exc).__name__}: {first_line(exc)}"
        return
    finally:
        if runner is not None:
            runner.close()
    config.memory.append(memory.stop())
    config.runner = {"device": runner.device, "providers": runner.providers, "notes": "; ".join(runner.notes),
                     "split_note": runner.split_note, "int8_scheme": runner.int8_scheme,
                     "execution_precision": runner.execution_precision or config.precision}


def make_record(config: Config, source, args, flops, peaks, threads: int) -> Dict[str, Any]:
    record: Dict[str, Any] = {
        "model": source.name, "path": _runners.path_of(config.backend), "backend": config.backend,
        "precision": config.precision,
        "int8_scheme": config.runner["int8_scheme"],
        "prec": _report.precision_label(config.precision, config.runner["int8_scheme"]),
        "execution_precision": config.runner["execution_precision"],
        "size": config.size, "height": config.height, "width": config.width, "batch": config.batch, "graph": args.graph,
        "includes_preprocessing": args.graph == "labels", "includes_argmax": args.graph == "labels",
        "warmup": args.warmup, "rounds": args.rounds,
    }
    record.update(_report.latency_stats(config.times, config.batch))
    for key in ("h2d_ms", "compute_ms", "d2h_ms"):
        values = [s[key] for s in config.splits]
        record[key] = float(sum(values) / len(values)) if values else None
    record["split_note"] = config.runner["split_note"]
    worst = max(config.memory, key=lambda m: m["peak_rss_mb"])
    record.update(worst)
    device = config.runner["device"]
    record.update(_work(flops.gflops(config.height, config.width), config.batch, record["p50_ms"],
                        _machine.reference_peak(peaks, device, config.precision)))
    record.update({"threads": threads if device == "cpu" else None, "device": device,
                   "providers": config.runner["providers"], "notes": config.runner["notes"]})
    return _report.rounded(record)


def run_benchmark(args: argparse.Namespace) -> Dict[str, Any]:
    """Every configuration of ``args``: the report (records, skipped, machine, settings).

    With ``--rounds R`` the whole sweep runs R times, one after the other, each round timing
    ``iters / R`` iterations (or ``seconds / R``) of every configuration, and the samples are
    pooled: on a shared machine, a burst of someone else's load then spreads over every
    backend instead of landing on whichever ran at that moment.
    """
    backends = _runners.parse_backends(args.backends)
    precisions = _runners.parse_precisions(args.precisions)
    sizes = parse_sizes(args.sizes, "--sizes")
    batches = parse_ints(args.batch, "--batch")
    iters = args.iters if args.iters is not None else (None if args.seconds else 20)
    if iters is not None and iters < 1:
        raise FcnDeployError(f"--iters must be >= 1, not {iters}")
    if args.seconds is not None and args.seconds <= 0:
        raise FcnDeployError(f"--seconds must be > 0, not {args.seconds}")
    if args.warmup < 0:
        raise FcnDeployError(f"--warmup must be >= 0, not {args.warmup}")
    if args.rounds < 1:
        raise FcnDeployError(f"--rounds must be >= 1, not {args.rounds}")
    threads = args.threads or _machine.available_cores()
    if threads < 1:
        raise FcnDeployError(f"--threads must be >= 1, not {threads}")
    settings = {"warmup": args.warmup, "iters": iters, "seconds": args.seconds, "rounds": args.rounds,
                "threads": threads, "graph": args.graph, "backends": backends, "precisions": precisions,
                "sizes": [f"{h}x{w}" for h, w in sizes], "batches": batches}

    source = _variants.open_source(args.model, args.num_classes, parse_key_values(args.option))
    cache = _variants.ExportCache(args.workdir or _variants.default_workdir())
    calibration = _variants.Calibration(args.calib, args.calib_images, sizes[0], args.int8_scheme)
    flops = _variants.FlopCounter(source)
    machine = _machine.describe_machine(threads)
    machine["allocator"] = _machine.set_allocator(args.system_malloc)
    gpu = any(_runners.DEVICE[b] == "cuda" for b in backends)
    peaks = [] if args.no_peak else measure_peaks(threads, gpu)

    pairs, skipped = _runners.runnable(backends, precisions, source)
    configs = [Config(backend, precision, h, w, b) for backend, precision in pairs for h, w in sizes for b in batches]

    round_iters = -(-iters // args.rounds) if iters else None
    round_seconds = args.seconds / args.rounds if args.seconds else None
    memory = _machine.PeakMemory()
    for index in range(args.rounds):
        for config in configs:
            if config.failure:
                continue
            round_text = f" (round {index + 1}/{args.rounds})" if args.rounds > 1 else ""
            print(f"  running {config.label()}{round_text} ...", file=sys.stderr, flush=True)
            measure_round(config, source, cache, args, calibration, threads, round_iters, round_seconds, memory)
        if not args.no_peak:  # again after every round: on a shared machine the best is nearest the truth
            peaks = _machine.best_peaks(peaks, measure_peaks(threads, gpu))
    records = []
    for config in configs:
        if config.failure:
            skipped.append({"backend": config.backend, "precision": config.precision, "size": config.size,
                            "batch": config.batch, "reason": config.failure})
        else:
            records.append(make_record(config, source, args, flops, peaks, threads))
    _report.add_speedups(records)
    _report.add_precision_ratios(records)
    _report.add_peer_ratios(records)
    return {
        "benchmark": "latency",
        "command": " ".join(["python3", "benchmarks/latency.py"] + list(args.argv)),
        "model": source.describe(),
        "timed": TIMED[args.graph] + (PEER_TIMED if any(b in _runners.PEER_BACKENDS for b in backends) else ""),
        "machine": machine,
        "peaks": peaks,
        "settings": settings,
        "records": records,
        "skipped": skipped,
    }


def measure_peaks(threads: int, gpu: bool) -> List[Dict[str, Any]]:
    peaks = [_machine.matmul_peak(threads)]
    if gpu:
        peaks.extend(_machine.cuda_matmul_peaks())
    return peaks


def _work(gflops: Optional[float], batch: int, p50_ms: float, peak: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """GFLOPs per image, achieved GFLOP/s at the median latency, and its share of the measured peak."""
    achieved = gflops * batch / (p50_ms / 1e3) if gflops and p50_ms else None
    peak_value = peak["gflops_s"] if peak else None
    return {
        "gflops": gflops,
        "achieved_gflops_s": achieved,
        "peak_gflops_s": peak_value,
        "peak_kind": f"{peak['device']} {peak['dtype']} GEMM" if peak else None,
        "pct_of_peak": 100.0 * achieved / peak_value if achieved and peak_value else None,
    }


def print_report(report: Dict[str, Any]) -> None:
    m = report["machine"]
    print(f"model:   {report['model']}")
    print("\n".join(_report.machine_lines(m)))
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    print(f"versions: {versions}")
    for peak in report["peaks"]:
        runs = " and ".join(f"{v:.0f}" for v in peak.get("measured", []))
        print(f"peak:    {peak['gflops_s']:.0f} GFLOP/s {peak['device']} {peak['dtype']} ({peak['method']}; "
              f"best of the measurements before and after each round: {runs})")
    print(f"timed:   {report['timed']}")
    works = {}
    for r in report["records"]:
        if r.get("gflops"):
            works[r["size"]] = r["gflops"]
    if works:
        print("work:    " + ", ".join(f"{g:.4g} GFLOP per image at {s}" for s, g in works.items()))
    s = report["settings"]
    how = f"{s['iters']} iterations" if s["iters"] else f"{s['seconds']} s"
    rounds = f", spread over {s['rounds']} interleaved rounds (each with its warm-up)" if s["rounds"] > 1 else ""
    print(f"method:  {s['warmup']} warm-up, then {how} per configuration{rounds}; ms per batch; "
          "GFLOP/s and % of peak at p50\n")
    print(_report.format_table(report["records"], _report.LATENCY_COLUMNS) if report["records"]
          else "no configuration ran")
    print()
    print(_report.format_skipped(report["skipped"]))


# --------------------------------------------------------------------------------------------
# A Triton server under concurrent clients (--model triton://...)
# --------------------------------------------------------------------------------------------
CONCURRENCY_COLUMNS = [("backend", "backend", "s"), ("clients", "clients", "d"), ("size", "size", "s"),
                       ("fps", "frames/s", ".1f"), ("p50_ms", "p50 ms", ".1f"), ("p99_ms", "p99 ms", ".1f"),
                       ("mean_ms", "mean ms", ".1f"), ("iters", "requests", "d")]


def clients_sweep(open_client, clients: int, frame, warmup: int, seconds: float) -> Dict[str, Any]:
    """``clients`` threads, each with ``open_client()``'s backend, sending ``frame`` until ``seconds``
    pass; per-request latencies pooled, throughput over the wall time."""
    import threading

    backends = [open_client() for _ in range(clients)]
    latencies: List[List[float]] = [[] for _ in range(clients)]
    errors: List[BaseException] = []
    start_line = threading.Barrier(clients + 1)
    clock = time.perf_counter
    stop_at = [0.0]

    def work(k: int) -> None:
        try:
            for _ in range(warmup):
                backends[k].infer(frame)
            start_line.wait()
            while clock() < stop_at[0]:
                t0 = clock()
                backends[k].infer(frame)
                latencies[k].append(clock() - t0)
        except BaseException as exc:  # reported after the sweep
            errors.append(exc)
            start_line.abort()

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    try:
        try:
            stop_at[0] = clock() + 1e9
            start_line.wait()
            begin = clock()
            stop_at[0] = begin + seconds
        except threading.BrokenBarrierError:
            pass
        for t in threads:
            t.join()
        wall = clock() - begin if not errors else 0.0
    finally:
        closed = {id(b): b for b in backends}
        for b in closed.values():
            b.close()
    if errors:
        raise FcnDeployError(f"{first_line(errors[0])}")
    pooled = [x for per in latencies for x in per]
    stats = _report.latency_stats(pooled, 1)
    stats["fps"] = len(pooled) / wall
    return stats


def run_concurrency(args: argparse.Namespace) -> Dict[str, Any]:
    from fcn_deploy.runtime.backends import open_backend
    from fcn_deploy.runtime.model_files import resolve_model_file

    clients = parse_ints(args.concurrency, "--concurrency")
    (height, width), *_ = parse_sizes(args.sizes, "--sizes")
    seconds = args.seconds or 5.0
    frame = _variants.random_frames(1, height, width)
    with open_backend(args.model) as probe:  # one clear line if the server is not there
        remote = probe.providers[0]
        model = f"{probe.metadata.model_name} ({probe.metadata.precision}) at {args.model}"
    def remote_clients():  # a connection per client
        return lambda: open_backend(args.model)

    targets = [("triton", remote, remote_clients)]
    if args.local.lower() != "none":
        path = str(resolve_model_file(args.local))

        def local_clients():  # one session shared by every thread, as one box serving several cameras
            session: List[Any] = []

            def get():
                if not session:
                    session.append(open_backend(path, "cpu", threads=args.threads))
                return session[0]
            return get

        targets.append(("ort-cpu", f"ONNX Runtime CPU, {os.path.basename(path)}, one session", local_clients))
    records = []
    for name, where, clients_of in targets:
        for count in clients:
            print(f"  running {name} with {count} client(s) ...", file=sys.stderr, flush=True)
            stats = clients_sweep(clients_of(), count, frame, args.warmup, seconds)
            records.append(_report.rounded({"backend": name, "where": where, "clients": count,
                                            "size": f"{height}x{width}", **stats}))
    return {
        "benchmark": "latency-concurrency",
        "command": " ".join(["python3", "benchmarks/latency.py"] + list(args.argv)),
        "model": model,
        "timed": "one uint8 BGR frame per request, labels back, host to host (network and server queueing "
                 "included for Triton); each client sends its next frame when the last one is back",
        "machine": _machine.describe_machine(args.threads or _machine.available_cores()),
        "settings": {"seconds": seconds, "warmup": args.warmup, "clients": clients, "size": f"{height}x{width}"},
        "records": records,
        "skipped": [],
    }


def print_concurrency(report: Dict[str, Any]) -> None:
    print(f"model:   {report['model']}")
    print("\n".join(_report.machine_lines(report["machine"])))
    print(f"timed:   {report['timed']}")
    s = report["settings"]
    print(f"method:  {s['warmup']} warm-up requests per client, then {s['seconds']:g} s per client count\n")
    print(_report.format_table(report["records"], CONCURRENCY_COLUMNS))


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.compare:
            a, b = (_report.load_report(p) for p in args.compare)
            text, _ = _report.compare(a, b, os.path.basename(args.compare[0]), os.path.basename(args.compare[1]))
            print(text)
            return 0
        from fcn_deploy.runtime.model_files import is_remote

        if is_remote(args.model):
            report = run_concurrency(args)
            print_concurrency(report)
            _report.write_outputs(args, report, CONCURRENCY_COLUMNS)
            return 0
        report = run_benchmark(args)
        print_report(report)
        _report.write_outputs(args, report, _report.LATENCY_COLUMNS)
        if args.plot:
            if report["records"]:
                title = f"{report['model']}\n{report['machine']['cpu']}, {report['settings']['threads']} threads"
                _report.plot(args.plot, report["records"], title)
                print(f"wrote {args.plot}")
            else:
                print(f"no chart: nothing was measured ({args.plot} not written)")
    except FcnDeployError as exc:
        print(f"latency.py: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
