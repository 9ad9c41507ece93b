#!/usr/bin/env python3
"""Our best CPU configuration against the best peer-path one, per precision, from earlier reports.

    python3 benchmarks/versus_peer.py --latency latency.json [--accuracy accuracy.json] [--markdown FILE]

Reads the JSON of ``benchmarks/latency.py`` (and, for mean IU, of ``benchmarks/accuracy.py``)
run with our backends and the ``peer-*`` ones, and for each model, size and precision class
(fp32, int8) picks the fastest ``ours`` row and the fastest ``peer`` row by p50; prints their
p50, the ratio, and the mean IU of the same backend and precision from the accuracy report.
No measuring here, so docs/benchmarks.md's table is re-made from whatever the two commands last wrote.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, List, Optional, Sequence

import os
if __package__ in (None, ""):  # `python3 benchmarks/NAME.py` from a checkout: benchmarks/ is not installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _report
from fcn_deploy.errors import FcnDeployError

NAMES = {"ort-cpu": "ONNX Runtime", "openvino": "OpenVINO", "peer-ort-cpu": "ONNX Runtime",
         "peer-openvino": "OpenVINO"}


def _best(records: List[Dict[str, Any]], path: str, precision: str, size: str) -> Optional[Dict[str, Any]]:
    rows = [r for r in records if r.get("path") == path and r["precision"] == precision and r["size"] == size
            and r.get("batch", 1) == 1 and r.get("device", "cpu") == "cpu"]
    return min(rows, key=lambda r: r["p50_ms"]) if rows else None


def _config(r: Dict[str, Any]) -> str:
    what = NAMES.get(r["backend"], r["backend"])
    if r["path"] == "peer":
        tool = {"peer-ort-cpu": "quantize_static", "peer-openvino": "NNCF"}[r["backend"]]
        return f"{what}, plain export" + (f" + {tool} INT8" if r["precision"] == "int8" else "")
    return f"{what}, our graph" + (f" ({r['int8_scheme']})" if r.get("int8_scheme") else "")


def rows(latency: Dict[str, Any], accuracy: Optional[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per size and precision class that has both an ``ours`` and a ``peer`` record
    (``accuracy``: one report, or a list of them, for the mean IU)."""
    scores = {}
    reports = accuracy if isinstance(accuracy, list) else [accuracy or {}]
    for r in (r for report in reports for r in report.get("records", [])):
        scores[(r["backend"], r["precision"], r.get("int8_scheme"))] = r["mean_iu_pct"]
    records = latency["records"]
    out = []
    for size in dict.fromkeys(r["size"] for r in records):
        for precision in ("fp32", "int8"):
            ours, peer = _best(records, "ours", precision, size), _best(records, "peer", precision, size)
            if ours is None or peer is None:
                continue
            ours_iu = scores.get((ours["backend"], precision, ours.get("int8_scheme")))
            peer_iu = scores.get((peer["backend"], precision, peer.get("int8_scheme")))
            out.append({
                "model": ours["model"], "size": size, "precision": precision,
                "ours": _config(ours), "ours_p50": ours["p50_ms"], "peer": _config(peer), "peer_p50": peer["p50_ms"],
                "ratio": peer["p50_ms"] / ours["p50_ms"], "ours_iu": ours_iu, "peer_iu": peer_iu,
                "iu_delta": ours_iu - peer_iu if ours_iu is not None and peer_iu is not None else None,
            })
    return out


COLUMNS = (
    ("model", "model", ""), ("precision", "prec", ""), ("ours", "ours (best)", ""), ("ours_p50", "p50 ms", ".1f"),
    ("peer", "peer path (best)", ""), ("peer_p50", "p50 ms ", ".1f"), ("ratio", "ours x faster", ".2f"),
    ("ours_iu", "mean IU ours", ".2f"), ("peer_iu", "mean IU peer", ".2f"), ("iu_delta", "IU diff", "+.2f"),
)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/versus_peer.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--latency", required=True, metavar="FILE", help="JSON of benchmarks/latency.py with peer-* rows")
    p.add_argument("--accuracy", metavar="FILE", nargs="+",
                   help="JSON of benchmarks/accuracy.py on the same model (mean IU); several are merged")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = p.parse_args(argv)
    try:
        latency = _report.load_report(args.latency)
        accuracy = [_report.load_report(path) for path in args.accuracy] if args.accuracy else None
        table = rows(latency, accuracy)
        if not table:
            raise FcnDeployError(f"{args.latency} has no size with both an 'ours' and a 'peer' row; "
                                 "run latency.py with e.g. --backends ort-cpu,openvino,peer-ort-cpu,peer-openvino")
    except FcnDeployError as exc:
        print(f"versus_peer.py: error: {exc}", file=sys.stderr)
        return 1
    m = latency["machine"]
    print(f"{m['cpu']}, {m['threads']} threads, load average at start {m['load_average_at_start']}; "
          f"{latency['command']}" + "".join(f"; {a['command']}" for a in accuracy or []))
    print(_report.markdown_table(table, COLUMNS) if args.markdown else _report.format_table(table, COLUMNS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
