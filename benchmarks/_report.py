"""Statistics of a latency sample, and the outputs: terminal table, JSON, CSV, PNG, comparison.

Percentiles, not means alone: a video pipeline's frame budget is broken by the slow tail
(p90, p99), which a mean hides.
"""
from __future__ import annotations

import csv
import json
import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from fcn_deploy.errors import FcnDeployError

# The columns of the CSV, in order (every record's keys; nested values are JSON text).
CSV_FIELDS = (
    "model", "path", "backend", "precision", "int8_scheme", "execution_precision", "size", "height", "width", "batch", "graph",
    "p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms", "std_ms", "fps", "iters", "warmup",
    "speedup", "vs_fp32", "vs_peer", "best_peer", "h2d_ms", "compute_ms", "d2h_ms", "gflops", "achieved_gflops_s", "peak_gflops_s",
    "pct_of_peak", "peak_rss_mb", "peak_rss_added_mb", "threads", "device", "providers", "notes",
    "mean_iu", "pixel_acc", "images",
)


def latency_stats(times_s: Sequence[float], batch: int) -> Dict[str, float]:
    """min/mean/p50/p90/p99/max/std in milliseconds and throughput in images per second."""
    if not times_s:
        raise FcnDeployError("no timed iterations")
    ms = np.asarray(times_s, dtype=np.float64) * 1e3
    mean = float(ms.mean())
    return {
        "min_ms": float(ms.min()),
        "mean_ms": mean,
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        "std_ms": float(ms.std(ddof=1)) if len(ms) > 1 else 0.0,
        "fps": batch * 1e3 / mean,
        "iters": len(ms),
    }


def rounded(record: Dict[str, Any], digits: int = 6) -> Dict[str, Any]:
    """Floats to ``digits`` significant digits: enough for any timer, short enough to read."""
    return {k: (float(f"{v:.{digits}g}") if isinstance(v, float) and math.isfinite(v) else v) for k, v in record.items()}


def add_speedups(records: List[Dict[str, Any]], reference: Tuple[str, str] = ("pytorch", "fp32")) -> None:
    """``speedup``: the reference's p50 (PyTorch fp32 by default) over this record's, per size and batch."""
    refs = {}
    for r in records:
        if (r["backend"], r["precision"]) == reference:
            refs[(r["size"], r["batch"])] = r["p50_ms"]
    for r in records:
        ref = refs.get((r["size"], r["batch"]))
        r["speedup"] = round(ref / r["p50_ms"], 3) if ref and r.get("p50_ms") else None


def add_precision_ratios(records: List[Dict[str, Any]]) -> None:
    """``vs_fp32``: the p50 of the same backend's fp32 row (same size and batch) over this
    record's, for the lower precisions (bf16, fp16, int8): what the precision buys on that
    engine. ``None`` for fp32 rows and where no fp32 row was measured."""
    fp32 = {(r["backend"], r["size"], r["batch"]): r["p50_ms"] for r in records if r["precision"] == "fp32"}
    for r in records:
        ref = fp32.get((r["backend"], r["size"], r["batch"])) if r["precision"] != "fp32" else None
        r["vs_fp32"] = round(ref / r["p50_ms"], 3) if ref and r.get("p50_ms") else None


def add_peer_ratios(records: List[Dict[str, Any]]) -> None:
    """``vs_peer``: the best peer-path p50 of the same precision and size over this record's
    (above 1: faster than the fastest peer configuration); ``best_peer`` names it. Only where
    peer rows were measured."""
    best: Dict[Tuple[str, str, Any], Dict[str, Any]] = {}
    for r in records:
        if r.get("path") == "peer" and r.get("p50_ms"):
            key = (r["precision"], r["size"], r["batch"])
            if key not in best or r["p50_ms"] < best[key]["p50_ms"]:
                best[key] = r
    for r in records:
        peer = best.get((r["precision"], r["size"], r["batch"]))
        r["vs_peer"] = round(peer["p50_ms"] / r["p50_ms"], 3) if peer and r.get("p50_ms") else None
        r["best_peer"] = f"{peer['backend']} {peer['precision']}" if peer else None


# --------------------------------------------------------------------------------------------
# Terminal
# --------------------------------------------------------------------------------------------
def _fmt(value: Any, spec: str = ".1f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def precision_label(precision: str, int8_scheme: Optional[str]) -> str:
    """``fp32``, ``fp16``, ``bf16``, or ``int8 u8s8`` / ``int8 s8s8``: an INT8 number says which
    graph it ran. What the engine compiled is the ``execution_precision`` column beside it."""
    return f"{precision} {int8_scheme}" if precision == "int8" and int8_scheme else precision


def format_table(rows: List[Dict[str, Any]], columns: Sequence[Tuple[str, str, str]]) -> str:
    """A plain-text table; ``columns`` are ``(key, header, format spec)``."""
    cells = [[header for _, header, _ in columns]]
    for row in rows:
        cells.append([_fmt(row.get(key), spec) for key, _, spec in columns])
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = []
    for index, line in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if spec == "" else c.rjust(w)
                               for (c, w, (_, _, spec)) in zip(line, widths, columns)))
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: List[Dict[str, Any]], columns: Sequence[Tuple[str, str, str]]) -> str:
    """The same table as :func:`format_table`, as GitHub markdown (for a README)."""
    lines = ["| " + " | ".join(header for _, header, _ in columns) + " |",
             "|" + "|".join("---" if spec == "" else "---:" for _, _, spec in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(key), spec) for key, _, spec in columns) + " |")
    return "\n".join(lines)


def write_markdown(path: str, report: Dict[str, Any], columns: Sequence[Tuple[str, str, str]]) -> None:
    """A README-ready section: the command, the machine, what was timed, the table, the skips."""
    m = report["machine"]
    lines = [
        "```bash", report["command"], "```", "",
        f"{report['model']}; {m['cpu']}, {m['cpu_cores']} cores, {m['threads']} threads, "
        f"GPUs: {', '.join(m['gpus']) or 'none'}; load average at start {m['load_average_at_start']}; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v) + ".",
        f"Timed: {report['timed']}.", "",
        markdown_table(report["records"], columns), "",
    ]
    if report["skipped"]:
        lines.append("Skipped: " + "; ".join(
            f"{s['backend']} {s['precision']}: {s['reason'].rstrip('.')}" for s in report["skipped"]) + ".")
    _ensure_parent(path)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


LATENCY_COLUMNS = (
    ("path", "path", ""), ("backend", "backend", ""), ("prec", "prec", ""), ("execution_precision", "runs in", ""),
    ("size", "size HxW", ""), ("batch", "batch", "d"),
    ("p50_ms", "p50 ms", ".1f"), ("p90_ms", "p90 ms", ".1f"), ("p99_ms", "p99 ms", ".1f"),
    ("mean_ms", "mean ms", ".1f"), ("std_ms", "std", ".1f"), ("min_ms", "min ms", ".1f"),
    ("fps", "img/s", ".2f"), ("speedup", "x pytorch", ".2f"), ("vs_fp32", "x fp32", ".2f"),
    ("vs_peer", "x best peer", ".2f"), ("h2d_ms", "h2d", ".2f"),
    ("compute_ms", "compute", ".2f"), ("d2h_ms", "d2h", ".2f"), ("achieved_gflops_s", "GFLOP/s", ".0f"),
    ("pct_of_peak", "% peak", ".1f"), ("peak_rss_mb", "peak MB", ".0f"),
)


def machine_lines(m: Dict[str, Any]) -> List[str]:
    """The header lines that say what ran the numbers: CPU, GPUs, threads, load, allocator."""
    lines = [f"machine: {m['cpu']} ({m['cpu_cores']} cores), GPUs: {', '.join(m['gpus']) or 'none'}, "
             f"threads {m['threads']}, load average {m['load_average_at_start']}"]
    if m.get("allocator"):
        lines.append(f"malloc:  {m['allocator']}")
    if m.get("busy"):
        lines.append("note:    the machine was busy (load average above its core count): numbers are provisional; "
                     "PyTorch's OpenMP threads suffer most (try --threads 1 to compare backends on a shared CPU)")
    return lines


def format_skipped(skipped: List[Dict[str, Any]]) -> str:
    if not skipped:
        return "skipped: none"
    lines = ["skipped:"]
    for s in skipped:
        what = " ".join(str(s[k]) for k in ("backend", "precision", "size") if s.get(k))
        lines.append(f"  {what}: {s['reason']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------
def _ensure_parent(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)


def write_json(path: str, report: Dict[str, Any]) -> None:
    _ensure_parent(path)
    with open(path, "w") as f:
        json.dump(report, f, indent=1, sort_keys=False, default=str)
        f.write("\n")


def write_csv(path: str, records: List[Dict[str, Any]]) -> None:
    """One row per measured configuration; columns :data:`CSV_FIELDS` that any record has."""
    present = [k for k in CSV_FIELDS if any(k in r for r in records)]
    extra = sorted({k for r in records for k in r} - set(CSV_FIELDS))
    _ensure_parent(path)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=present + extra)
        writer.writeheader()
        for r in records:
            writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()})


def write_outputs(args: Any, report: Dict[str, Any], columns: Sequence[Tuple[str, str, str]]) -> None:
    """The files both benchmarks write on request: ``--json``, ``--csv``, ``--markdown``."""
    if args.json:
        write_json(args.json, report)
        print(f"wrote {args.json}")
    if args.csv:
        write_csv(args.csv, report["records"])
        print(f"wrote {args.csv}")
    if args.markdown:
        write_markdown(args.markdown, report, columns)
        print(f"wrote {args.markdown}")


def load_report(path: str) -> Dict[str, Any]:
    try:
        with open(path) as f:
            report = json.load(f)
    except OSError as exc:
        raise FcnDeployError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise FcnDeployError(f"{path} is not JSON: {exc}") from None
    if not isinstance(report, dict) or not isinstance(report.get("records"), list):
        raise FcnDeployError(f"{path} is not a benchmark report (no 'records' list)")
    return report


def plot(path: str, records: List[Dict[str, Any]], title: str, value: str = "p50_ms") -> None:
    """A bar chart of ``value`` by backend and precision, one bar per size and batch, p90 as whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = list(dict.fromkeys(f"{r['backend']}\n{r.get('prec', r['precision'])}" for r in records))
    groups = list(dict.fromkeys(f"{r['size']} b{r['batch']}" for r in records))
    width = 0.8 / max(1, len(groups))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(configs) + 2), 4.5))
    x = np.arange(len(configs))
    for g, group in enumerate(groups):
        heights, errors = [], []
        for config in configs:
            match = [r for r in records if f"{r['backend']}\n{r.get('prec', r['precision'])}" == config
                     and f"{r['size']} b{r['batch']}" == group]
            heights.append(match[0][value] if match else 0.0)
            errors.append(max(0.0, match[0]["p90_ms"] - match[0][value]) if match and value == "p50_ms" else 0.0)
        bars = ax.bar(x + (g - (len(groups) - 1) / 2) * width, heights, width, yerr=[np.zeros(len(errors)), errors],
                      capsize=3, label=group)
        ax.bar_label(bars, labels=[f"{h:.0f}" if h >= 10 else f"{h:.1f}" if h else "" for h in heights],
                     fontsize=7, padding=2)
    positive = [r[value] for r in records if r.get(value)]
    if positive and max(positive) / min(positive) > 50:
        ax.set_yscale("log")  # PyTorch and TensorRT can be two orders of magnitude apart
    ax.set_xticks(x)
    ax.set_xticklabels(configs, fontsize=8)
    ax.set_ylabel("latency p50, ms (whisker: p90)" if value == "p50_ms" else value)
    ax.set_title(title, fontsize=9)
    ax.legend(title="size, batch", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _ensure_parent(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# Comparing two runs
# --------------------------------------------------------------------------------------------
def _key(r: Dict[str, Any]) -> Tuple:
    return (r.get("model"), r["backend"], r["precision"], r.get("int8_scheme"), r["size"], r["batch"])


def compare(a: Dict[str, Any], b: Dict[str, Any], a_name: str = "A", b_name: str = "B") -> Tuple[str, int]:
    """A table of the configurations both reports measured: p50 and mean of each, and A / B.

    A ratio above 1 means B is faster. Returns the text and the number of matched rows.
    """
    b_by_key = {_key(r): r for r in b["records"]}
    rows = []
    for ra in a["records"]:
        rb = b_by_key.get(_key(ra))
        if rb is None:
            continue
        rows.append({
            "backend": ra["backend"], "precision": ra["precision"], "size": ra["size"], "batch": ra["batch"],
            "a_p50": ra["p50_ms"], "b_p50": rb["p50_ms"], "p50_ratio": ra["p50_ms"] / rb["p50_ms"],
            "a_mean": ra["mean_ms"], "b_mean": rb["mean_ms"], "mean_ratio": ra["mean_ms"] / rb["mean_ms"],
            "a_p99": ra["p99_ms"], "b_p99": rb["p99_ms"], "p99_ratio": ra["p99_ms"] / rb["p99_ms"],
        })
    columns = (
        ("backend", "backend", ""), ("prec", "prec", ""), ("size", "size HxW", ""), ("batch", "batch", "d"),
        ("a_p50", f"{a_name} p50", ".2f"), ("b_p50", f"{b_name} p50", ".2f"), ("p50_ratio", "p50 A/B", ".3f"),
        ("a_mean", f"{a_name} mean", ".2f"), ("b_mean", f"{b_name} mean", ".2f"), ("mean_ratio", "mean A/B", ".3f"),
        ("a_p99", f"{a_name} p99", ".2f"), ("b_p99", f"{b_name} p99", ".2f"), ("p99_ratio", "p99 A/B", ".3f"),
    )
    only_a = len(a["records"]) - len(rows)
    only_b = len(b["records"]) - len(rows)
    lines = [f"A = {a_name}", f"B = {b_name}", "ratio A/B > 1: B is faster", ""]
    lines.append(format_table(rows, columns) if rows else "no configuration was measured in both reports")
    if only_a or only_b:
        lines.append(f"\nunmatched: {only_a} only in A, {only_b} only in B")
    for name, report in ((a_name, a), (b_name, b)):
        machine = report.get("machine") or {}
        if machine:
            lines.append(f"{name}: {machine.get('cpu')} x{machine.get('cpu_cores')}, GPUs {machine.get('gpus') or 'none'}, "
                         f"threads {machine.get('threads')}, load {machine.get('load_average_at_start')}")
    return "\n".join(lines), len(rows)
