#!/usr/bin/env python3
"""Mean IU and speed per backend and precision, in one table (as Ultralytics' benchmark does).

    python3 benchmarks/accuracy.py --model camvid --root ../shared/datasets/CamVid \\
        --backends pytorch,ort-cpu --precisions fp32,int8 --json accuracy.json

Every backend and precision segments the same images of a dataset split (CamVid val by
default) through the same runner the latency benchmark times: raw BGR uint8 frames in,
the pre-processing and the arg-max inside the graph, labels out. Scores are the paper's
four metrics at label resolution (:func:`fcn_deploy.evaluation.evaluate`); latency is
measured on the same calls (batch 1, after ``--warmup`` untimed calls; resizing excluded).
INT8 is calibrated on the dataset's *training* split, never on the images it is scored on.
``bf16`` is the FP32 graph in an engine's bfloat16 mode (OpenVINO on a CPU with AVX512_BF16 or
AMX); each row says what its engine compiled (``runs in``), and its labels are compared with
the first engine's on the same graph (the FP32 graph for bf16).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

import os
if __package__ in (None, ""):  # `python3 benchmarks/NAME.py` from a checkout: benchmarks/ is not installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _machine, _report, _runners, _variants
from fcn_deploy.errors import FcnDeployError, first_line
from fcn_deploy.runtime.metadata import INT8_SCHEMES
from fcn_deploy.options import parse_key_values, parse_size
from fcn_deploy.runtime.input_size import InputSizer, scale_from_facts, training_scale_facts

log = logging.getLogger("benchmarks.accuracy")

ACCURACY_COLUMNS = (
    ("path", "path", ""), ("backend", "backend", ""), ("prec", "prec", ""), ("execution_precision", "runs in", ""),
    ("size", "size HxW", ""),
    ("mean_iu_pct", "mean IU %", ".2f"), ("delta_pts", "vs ref pts", "+.2f"), ("pixel_acc_pct", "pixel acc %", ".2f"),
    ("agreement_pct", "labels = first engine %", ".3f"),
    ("p50_ms", "p50 ms", ".1f"), ("p90_ms", "p90 ms", ".1f"), ("p99_ms", "p99 ms", ".1f"),
    ("mean_ms", "mean ms", ".1f"), ("fps", "img/s", ".2f"), ("speedup", "x pytorch", ".2f"),
    ("vs_fp32", "x fp32", ".2f"), ("vs_peer", "x best peer", ".2f"), ("images", "images", "d"),
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="benchmarks/accuracy.py",
        description="Mean IU and latency per backend and precision on a dataset split.",
        epilog="Backends: " + ", ".join(_runners.BACKENDS) + ".",
    )
    p.add_argument("--model", default="camvid",
                   help="zoo name (random weights), 'camvid' (the bundled model), a checkpoint, or an .onnx/.engine file")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="zoo model build option, e.g. width=16 (repeatable)")
    p.add_argument("--dataset", default="camvid", help="dataset name (default camvid)")
    p.add_argument("--root", default=None, help="dataset folder (not needed for synthetic)")
    p.add_argument("--split", default="val", help="split to score (default val)")
    p.add_argument("--limit", type=int, default=None, help="score only the first N images (quick runs)")
    p.add_argument("--size", default=None,
                   help="run the network at HxW (images resized; scores at label resolution); default: "
                        "the input-size rule for the first image (its own size on the model's training dataset)")
    p.add_argument("--backends", default="pytorch,ort-cpu,ort-cuda,ort-tensorrt,tensorrt",
                   help="comma list or 'all' (default: every backend but pytorch-cuda)")
    p.add_argument("--precisions", default="fp32,fp16,int8",
                   help="comma list of fp32, bf16, fp16, int8, or all (default fp32,fp16,int8)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls before scoring (default 2)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the cores available)")
    p.add_argument("--calib", default=None,
                   help="INT8 calibration images: a folder or DATASET[:ROOT]; default the dataset's train split")
    p.add_argument("--calib-images", type=int, default=32, help="INT8 calibration images (default 32)")
    p.add_argument("--int8-scheme", choices=("auto",) + INT8_SCHEMES, default="auto",
                   help="INT8 graph per backend: auto gives ONNX Runtime CPU the u8s8 graph and GPU backends "
                        "the s8s8 one TensorRT builds (default); s8s8 or u8s8 forces one")
    p.add_argument("--workdir", default=None, help=f"cache of exported variants (default {_variants.default_workdir()})")
    p.add_argument("--json", metavar="FILE", help="write the report as JSON")
    p.add_argument("--markdown", metavar="FILE", help="write the table as a README-ready markdown section")
    p.add_argument("--csv", metavar="FILE", help="write one row per backend and precision as CSV")
    p.add_argument("--system-malloc", action="store_true", help=_machine.SYSTEM_MALLOC_HELP)
    p.add_argument("-v", "--verbose", action="store_true", help="log exports and cache use")
    return p


class TimedRunner:
    """A runner whose ``infer`` calls are timed (what :class:`BackendPredictor` calls)."""

    def __init__(self, runner: _runners.Runner) -> None:
        self.runner = runner
        self.output_kind = runner.output_kind
        self.times: List[float] = []

    def infer(self, frames: np.ndarray) -> np.ndarray:
        x = self.runner.prepare(frames)
        start = time.perf_counter()
        out = self.runner.run(x)
        self.times.append(time.perf_counter() - start)
        return out


def score(runner: _runners.Runner, dataset, indices: List[int], size, warmup: int) -> Dict[str, Any]:
    """Mean IU and friends of ``runner`` on ``dataset[indices]``, with the latency of its calls."""
    from fcn_deploy.evaluation import BackendPredictor, evaluate

    timed = TimedRunner(runner)
    backend_predict = BackendPredictor(timed, size)
    image = dataset[indices[0]][0]
    for _ in range(warmup):
        backend_predict(image)
    timed.times = []
    labels: List[np.ndarray] = []

    def predict(image: np.ndarray) -> np.ndarray:
        out = backend_predict(image)
        labels.append(np.asarray(out, dtype=np.uint8))  # kept to compare engines label by label
        return out

    scores = evaluate(dataset, predict, indices).scores()
    record = _report.latency_stats(timed.times, 1)
    record.update({
        "mean_iu": scores["mean_iu"], "pixel_acc": scores["pixel_acc"], "mean_acc": scores["mean_acc"],
        "fw_iu": scores["fw_iu"], "mean_iu_pct": 100.0 * scores["mean_iu"], "pixel_acc_pct": 100.0 * scores["pixel_acc"],
        "images": len(indices),
    })
    record["_labels"] = labels
    return record


def add_agreements(records: List[Dict[str, Any]]) -> None:
    """``agreement_pct``: the share of pixels on which a row's labels equal those of the first
    row of the same path, graph and INT8 scheme (``agrees_with`` names it): OpenVINO against
    ONNX Runtime on the same graph, and a bf16 row (the FP32 graph in bfloat16) against the
    first fp32 row. Drops the kept labels."""
    first: Dict[Any, Dict[str, Any]] = {}
    for r in records:
        key = (r["path"], _runners.graph_precision(r["precision"]), r.get("int8_scheme"))
        ref = first.setdefault(key, r)
        if ref is r:
            r["agreement_pct"], r["agrees_with"] = None, None
            continue
        same = sum(int(np.count_nonzero(a == b)) for a, b in zip(r["_labels"], ref["_labels"]))
        total = sum(a.size for a in ref["_labels"])
        r["agreement_pct"] = 100.0 * same / total if total else None
        r["agrees_with"] = ref["backend"]
    for r in records:
        r.pop("_labels", None)


def add_deltas(records: List[Dict[str, Any]]) -> None:
    """``delta_pts``: mean IU minus the reference's, in points (the reference: PyTorch fp32, else the first fp32)."""
    ref = next((r for r in records if (r["backend"], r["precision"]) == ("pytorch", "fp32")), None)
    ref = ref or next((r for r in records if r["precision"] == "fp32"), None)
    for r in records:
        r["delta_pts"] = None if ref is None else round(r["mean_iu_pct"] - ref["mean_iu_pct"], 3)
        r["reference"] = None if ref is None else f"{ref['backend']} {ref['precision']}"


def run_benchmark(args: argparse.Namespace) -> Dict[str, Any]:
    from fcn_deploy.data import build_dataset
    from fcn_deploy.evaluation import check_classes

    backends = _runners.parse_backends(args.backends)
    precisions = _runners.parse_precisions(args.precisions)
    threads = args.threads or _machine.available_cores()
    allocator = _machine.set_allocator(args.system_malloc)
    if threads < 1:
        raise FcnDeployError(f"--threads must be >= 1, not {threads}")
    if args.limit is not None and args.limit < 1:
        raise FcnDeployError(f"--limit must be >= 1, not {args.limit}")
    dataset = build_dataset(args.dataset, args.root, args.split)
    if len(dataset) == 0:
        raise FcnDeployError(f"{args.dataset} {args.split} has no images")
    indices = list(range(len(dataset) if args.limit is None else min(args.limit, len(dataset))))
    source = _variants.open_source(args.model, dataset.num_classes, parse_key_values(args.option))
    if args.size:
        size = parse_size(args.size, "--size")
    else:  # one size for every backend (an engine's profile is built for it): the rule's for the first image
        own = (source.dataset or "").lower() == args.dataset.lower()
        scale = scale_from_facts(training_scale_facts(source.dataset))
        size = InputSizer(None, scale, own_dataset=own, announce=False).size_for(dataset[indices[0]][0].shape[:2])
    h, w = size

    check_classes(None, source.num_classes, dataset, source.name)
    calib = args.calib or (args.dataset if args.root is None else f"{args.dataset}:{args.root}")
    calibration = _variants.Calibration(calib, args.calib_images, size, args.int8_scheme)
    cache = _variants.ExportCache(args.workdir or _variants.default_workdir())

    records: List[Dict[str, Any]] = []
    pairs, skipped = _runners.runnable(backends, precisions, source)
    for backend, precision in pairs:
        print(f"  scoring {backend} {precision} on {len(indices)} images ...", file=sys.stderr, flush=True)
        runner = None
        try:
            runner = _runners.open_runner(backend, precision, source, cache, "labels", (1, h, w), threads, calibration)
            result = score(runner, dataset, indices, size, args.warmup)
        except Exception as exc:  # one broken configuration must not end the run: it is listed, with why
            log.debug("%s %s failed", backend, precision, exc_info=True)
            first = first_line(exc)
            skipped.append({"backend": backend, "precision": precision, "reason": f"{type(exc).__name__}: {first}"})
            continue
        finally:
            if runner is not None:
                runner.close()
        record = {"model": source.name, "path": _runners.path_of(backend), "backend": backend, "precision": precision,
                  "int8_scheme": runner.int8_scheme, "prec": _report.precision_label(precision, runner.int8_scheme),
                  "execution_precision": runner.execution_precision or precision,
                  "size": f"{h}x{w}",
                  "height": h, "width": w, "batch": 1, "dataset": args.dataset, "split": args.split}
        record.update(result)
        record.update({"device": runner.device, "providers": runner.providers,
                       "threads": threads if runner.device == "cpu" else None})
        records.append(record)
    add_agreements(records)
    records = [_report.rounded(r) for r in records]
    add_deltas(records)
    _report.add_speedups(records)
    _report.add_precision_ratios(records)
    _report.add_peer_ratios(records)
    return {
        "benchmark": "accuracy",
        "command": " ".join(["python3", "benchmarks/accuracy.py"] + list(args.argv)),
        "model": source.describe(),
        "dataset": {"name": args.dataset, "root": args.root, "split": args.split, "images": len(indices),
                    "classes": list(dataset.classes)},
        "calibration": calibration.key(),
        "timed": ("per image, batch 1: uint8 BGR frame in -> uint8 labels out, pre-processing and arg-max inside "
                  "the graph (peer path: in numpy around the plain export, timed too); resizing to the network "
                  "size and back excluded"),
        "machine": {**_machine.describe_machine(threads), "allocator": allocator},
        "records": records,
        "skipped": skipped,
    }


def print_report(report: Dict[str, Any]) -> None:
    m, d = report["machine"], report["dataset"]
    print(f"model:   {report['model']}")
    print(f"data:    {d['name']} {d['split']}, {d['images']} images; INT8 calibrated on {report['calibration']['source']} "
          f"({report['calibration']['images']} train images)")
    print("\n".join(_report.machine_lines(m)))
    print(f"timed:   {report['timed']}\n")
    print(_report.format_table(report["records"], ACCURACY_COLUMNS) if report["records"] else "no configuration ran")
    print()
    print(_report.format_skipped(report["skipped"]))


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        report = run_benchmark(args)
        print_report(report)
        _report.write_outputs(args, report, ACCURACY_COLUMNS)
    except FcnDeployError as exc:
        print(f"accuracy.py: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
