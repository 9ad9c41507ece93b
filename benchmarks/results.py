#!/usr/bin/env python3
"""Every measured table from one machine, by one command: docs/results.md and docs/results.json.

    python3 benchmarks/results.py --root PATH/TO/CamVid          # the full run (about half an hour on 2 cores)
    python3 benchmarks/results.py --quick --out /tmp/results.md  # a tiny model, a few iterations: checks the command

A number measured on one CPU says little about another (AVX2 against AVX-512, VNNI, BF16, AMX
change which kernels run), so the project's numbers come from here, all from one run on one
machine, headed by that machine. Each table is made by an existing benchmark, run as the user
runs it (a subprocess from the repository root, so each has its own memory peak and a crash
ends only its own table), and its exact command is written above it:

- latency per backend and precision, ours and the peers' path (``latency.py``, every backend
  and precision; those that cannot run here are listed with why), with peak memory;
- accuracy per backend and precision on CamVid test (``accuracy.py --root``; left out, with a
  note, without ``--root``);
- ours against the peers' path (``versus_peer.py`` on the two reports above);
- the video pipeline against the model alone, and many streams in one process against as many
  processes (``pipeline.py``).

A table whose command failed is marked so in the file and the command exits 1.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

if __package__ in (None, ""):  # `python3 benchmarks/NAME.py` from a checkout: benchmarks/ is not installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _machine, _report
from benchmarks.accuracy import ACCURACY_COLUMNS
from benchmarks.versus_peer import COLUMNS as PEER_COLUMNS
from benchmarks.versus_peer import rows as peer_rows
from fcn_deploy.fileio import atomic_write

REPO = Path(__file__).resolve().parents[1]

# The settings of each run. Full: the bundled model, medians over interleaved rounds (the machine
# may be shared). Quick: a sixteenth-width untrained net on tiny inputs, to test the command.
FULL = {
    "model": ["--model", "camvid"],
    "latency": ["--sizes", "360x480", "--warmup", "5", "--iters", "60", "--rounds", "3", "--calib-images", "32"],
    "accuracy": ["--split", "test", "--calib-images", "32"],
    "pipeline": ["--frames", "40", "--rounds", "3"],
    "streams": ["--streams", "1,2,4", "--frames", "40", "--rounds", "2"],
}
QUICK = {
    "model": ["--model", "fcn8s_resnet18", "--option", "width=16"],
    "latency": ["--sizes", "32x48", "--warmup", "1", "--iters", "2", "--calib-images", "2", "--no-peak"],
    "accuracy": ["--dataset", "synthetic", "--limit", "2", "--calib-images", "2", "--warmup", "1"],
    "pipeline": ["--model", "fcn8s_resnet18", "--size", "48x64", "--frames", "4", "--rounds", "1", "--outputs", "none"],
    "streams": ["--model", "fcn8s_resnet18", "--size", "48x64", "--streams", "2", "--frames", "4", "--rounds", "1",
                "--outputs", "none"],
}
MEMORY_COLUMNS = (
    ("path", "path", ""), ("backend", "backend", ""), ("prec", "prec", ""), ("size", "size HxW", ""),
    ("batch", "batch", "d"), ("peak_rss_mb", "peak MB", ".0f"), ("peak_rss_added_mb", "added MB", ".0f"),
)
SHARED_NOTE = ("The machine may be shared: other work (other people's builds, tests, benchmarks) may have run "
               "at the same time; the load averages above say how busy it was. Latencies are pooled over "
               "interleaved rounds and pipeline figures are medians of alternating rounds, so a burst of load "
               "lands on every row alike; compare rows with each other rather than with another machine.")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/results.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--root", help="CamVid folder for the accuracy table (CamVid test); without it the table is left out")
    p.add_argument("--out", default=str(REPO / "docs" / "results.md"),
                   help="the results file (default docs/results.md); its JSON is written beside it (.json)")
    p.add_argument("--quick", action="store_true", help="a tiny model and a few iterations (tests the command)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for every engine (default: the cores)")
    p.add_argument("--workdir", default=None, help="cache of exported variants (default: the benchmarks' own)")
    p.add_argument("--only", default=None, help="comma list of tables to run: latency, accuracy, pipeline, streams")
    return p


def _commands(args: argparse.Namespace, tmp: Path) -> Dict[str, List[str]]:
    """Each table's benchmark command line (after ``python3``), writing its JSON into ``tmp``."""
    s = QUICK if args.quick else FULL
    common = (["--threads", str(args.threads)] if args.threads else []) + (
        ["--workdir", args.workdir] if args.workdir else [])
    cmds = {
        "latency": ["benchmarks/latency.py", *s["model"], "--backends", "all", "--precisions", "all",
                    *s["latency"], *common, "--json", str(tmp / "latency.json")],
        "pipeline": ["benchmarks/pipeline.py", *(s["pipeline"] if args.quick else s["model"] + s["pipeline"]),
                     *(["--threads", str(args.threads)] if args.threads else []), "--json", str(tmp / "pipeline.json")],
        "streams": ["benchmarks/pipeline.py", *(s["streams"] if args.quick else s["model"] + s["streams"]),
                    *(["--threads", str(args.threads)] if args.threads else []), "--json", str(tmp / "streams.json")],
    }
    if args.quick or args.root:
        data = [] if args.quick else ["--root", args.root]
        cmds["accuracy"] = ["benchmarks/accuracy.py", *s["model"], *data, "--backends", "all", "--precisions", "all",
                            *s["accuracy"], *common, "--json", str(tmp / "accuracy.json")]
    order = ["latency", "accuracy", "pipeline", "streams"]
    wanted = [t.strip() for t in args.only.split(",")] if args.only else order
    unknown = sorted(set(wanted) - set(order))
    if unknown:
        raise SystemExit(f"results.py: error: --only: unknown table(s) {', '.join(unknown)} (choose from {', '.join(order)})")
    return {name: cmds[name] for name in order if name in wanted and name in cmds}


def _run(name: str, argv: List[str], tmp: Path) -> Dict[str, Any]:
    """Run one benchmark; its stdout/stderr go to a log in ``tmp``, its JSON is read back."""
    shown = " ".join(["python3"] + [_shown(a, tmp) for a in argv])
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {shown}", file=sys.stderr, flush=True)
    start = time.monotonic()
    log_path = tmp / f"{name}.log"
    with open(log_path, "w") as log:
        code = subprocess.call([sys.executable, *argv], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - start
    run: Dict[str, Any] = {"command": shown, "exit": code, "seconds": round(seconds, 1)}
    json_path = Path(argv[argv.index("--json") + 1])
    if code == 0 and json_path.is_file():
        run["report"] = json.loads(json_path.read_text())
    else:
        tail = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()][-1:]
        run["error"] = tail[0] if tail else "no output"
    print(f"[{time.strftime('%H:%M:%S')}] {name}: " + (f"done in {seconds:.0f} s" if "report" in run else
          f"FAILED (exit {code}): {run['error']}"), file=sys.stderr, flush=True)
    return run


def _shown(arg: str, tmp: Path) -> str:
    """An argument as a reader would type it: the temporary JSON paths become plain file names."""
    return Path(arg).name if arg.startswith(str(tmp)) else arg


def machine_header(machine: Dict[str, Any]) -> List[str]:
    flags = machine.get("cpu_flags", {})
    have = [f for f, on in flags.items() if on] or ["none of " + ", ".join(flags)]
    lacks = [f for f, on in flags.items() if not on]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    return [
        f"- CPU: {machine['cpu']}, {machine['cpu_cores']} cores available",
        f"- ISA: {', '.join(have)}" + (f" (not: {', '.join(lacks)})" if lacks else ""),
        f"- memory: {machine.get('memory_gib')} GiB; GPUs: {', '.join(machine['gpus']) or 'none'}",
        f"- OS: {machine.get('os')}",
        f"- versions: {versions}",
        f"- started {machine['date']}; load average (1 / 5 / 15 min, {machine['cpu_cores']} cores) "
        f"{_load(machine.get('load_average_at_start'))} at the start"
        + (f", {_load(machine['load_average_at_end'])} after the last table" if machine.get("load_average_at_end") else ""),
    ]


def _load(values: Optional[Sequence[float]]) -> str:
    if not values:
        return "unknown"
    return " / ".join(f"{v:.1f}" for v in values)


def _failed(run: Dict[str, Any]) -> List[str]:
    return [f"**Not measured**: the command exited {run['exit']}: `{run['error']}`", ""]


def _block(run: Dict[str, Any], seconds: bool = True) -> List[str]:
    took = f" ({run['seconds']:.0f} s)" if seconds else ""
    return ["```bash", run["command"], "```" + took, ""]


def _skipped(report: Dict[str, Any]) -> List[str]:
    if not report.get("skipped"):
        return []
    return ["Not run here: " + "; ".join(
        f"{s['backend']} {s['precision']}: {s['reason'].rstrip('.')}" for s in report["skipped"]) + ".", ""]


def latency_section(run: Dict[str, Any]) -> List[str]:
    lines = ["## Latency per backend and precision", ""] + _block(run)
    if "report" not in run:
        return lines + _failed(run)
    r = run["report"]
    peaks = "; ".join(f"{p['gflops_s']:.0f} GFLOP/s {p['device']} {p['dtype']} ({p['method']})" for p in r["peaks"])
    s = r["settings"]
    lines += [f"{r['model']}. Timed: {r['timed']}. {s['warmup']} warm-up, then {s['iters']} iterations per "
              f"configuration over {s['rounds']} interleaved round(s), {s['threads']} threads; ms per batch."
              + (f" Peak: {peaks}." if peaks else ""), "",
              _report.markdown_table(r["records"], _report.LATENCY_COLUMNS), ""]
    return lines + _skipped(r)


def memory_section(run: Dict[str, Any]) -> List[str]:
    lines = ["## Memory", ""]
    if "report" not in run:
        return lines + ["From the latency run, which did not finish.", ""]
    return lines + [
        "Peak resident memory of the latency process while each configuration ran (from the latency "
        "command above; `added MB`: above what was resident when the configuration started).", "",
        _report.markdown_table(run["report"]["records"], MEMORY_COLUMNS), ""]


def accuracy_section(run: Optional[Dict[str, Any]], pending: bool = False) -> List[str]:
    lines = ["## Accuracy per backend and precision", ""]
    if run is None:
        return lines + ["Not measured (yet) in this run." if pending else
                        "Not measured in this run: it needs the dataset (`--root PATH/TO/CamVid`).", ""]
    lines += _block(run)
    if "report" not in run:
        return lines + _failed(run)
    r = run["report"]
    d, c = r["dataset"], r["calibration"]
    lines += [f"{r['model']}; {d['name']} {d['split']}, {d['images']} images; INT8 calibrated on {c['source']} "
              f"({c['images']} train images). Timed: {r['timed']}.", "",
              _report.markdown_table(r["records"], ACCURACY_COLUMNS), ""]
    return lines + _skipped(r)


def peer_section(latency: Dict[str, Any], accuracy: Optional[Dict[str, Any]]) -> List[str]:
    lines = ["## Ours against the peers' path", ""]
    if "report" not in latency:
        return lines + ["From the latency run, which did not finish.", ""]
    acc = accuracy.get("report") if accuracy else None
    table = peer_rows(latency["report"], acc)
    command = "python3 benchmarks/versus_peer.py --latency latency.json" + (" --accuracy accuracy.json" if acc else "")
    lines += ["```bash", command + " --markdown", "```", "",
              "The fastest row of each path per precision, from the two tables above (peer path: the same "
              "checkpoint exported plainly, quantised by each engine's own tool, normalised and arg-maxed in numpy).", ""]
    return lines + ([_report.markdown_table(table, PEER_COLUMNS), ""] if table else
                    ["No precision had both an `ours` and a `peer` row.", ""])


def pipeline_section(run: Dict[str, Any]) -> List[str]:
    lines = ["## Video pipeline against the model alone", ""] + _block(run)
    if "report" not in run:
        return lines + _failed(run)
    r = run["report"]
    model = sorted(r["model_only_fps"])[len(r["model_only_fps"]) // 2]
    lines += [f"{r['model']}, frames {r['size'][0]}x{r['size'][1]} -> input {r['input_size'][0]}x{r['input_size'][1]}, "
              f"device {r['device']}, {r['frames']} frames x {r['rounds']} rounds (medians), load average at the end "
              f"{r['load_average']:.1f}.", "",
              "| run | FPS | % of model-only | CPU ms/frame |", "|---|---:|---:|---:|",
              f"| model only | {model:.2f} | 100 | {r['model_only_cpu_ms_per_frame']:.1f} |"]
    for output, p in r["pipelines"].items():
        lines.append(f"| pipeline -> {output} | {p['median_fps']:.2f} | {100 * p['median_ratio']:.1f} | "
                     f"{p['cpu_ms_per_frame']:.1f} |")
    return lines + [""]


def streams_section(run: Dict[str, Any]) -> List[str]:
    lines = ["## Many streams: one process against as many processes", ""] + _block(run)
    if "report" not in run:
        return lines + _failed(run)
    r = run["report"]
    median = lambda values: sorted(values)[len(values) // 2]  # noqa: E731
    lines += [f"{r['frames_per_stream']} frames per stream x {r['rounds']} rounds (medians), device {r['device']}, "
              f"frames {r['size'][0]}x{r['size'][1]}.", "",
              "| streams | output | model-only, batch N FPS | one pipeline FPS | % of model-only | N processes FPS "
              "| slowest stream % of mean | batches run |", "|---:|---|---:|---:|---:|---:|---:|---|"]
    for count, outputs in r["streams"].items():
        for output, m in outputs.items():
            batches = ", ".join(f"{n} x {b}" for b, n in sorted(m["batch_sizes"].items(), reverse=True))
            lines.append(f"| {count} | {output} | {median(m['model_only_fps']):.2f} | {median(m['pipeline_fps']):.2f} | "
                         f"{100 * m['median_ratio']:.1f} | {median(m['separate_processes_fps']):.2f} | "
                         f"{100 * median(m['slowest_stream_over_mean']):.1f} | {batches} |")
    return lines + [""]


def render(machine: Dict[str, Any], runs: Dict[str, Dict[str, Any]], pending: List[str], command: str,
           quick: bool) -> str:
    lines = ["# Measured results", "",
             "Every number below comes from one run of one command on one machine:", "",
             "```bash", command, "```", ""]
    if quick:
        lines += ["**Quick run** (`--quick`): an untrained sixteenth-width net on tiny inputs, a few iterations. "
                  "It checks the command; its numbers mean nothing.", ""]
    if pending:
        lines += [f"**Incomplete**: not measured in this run (it stopped, or is still running): {', '.join(pending)}.", ""]
    lines += ["## Machine", ""] + machine_header(machine) + ["", SHARED_NOTE, ""]
    if "latency" in runs:
        lines += latency_section(runs["latency"])
    if "accuracy" in runs or "latency" in runs:
        lines += accuracy_section(runs.get("accuracy"), "accuracy" in pending)
    if "latency" in runs:
        lines += peer_section(runs["latency"], runs.get("accuracy"))
        lines += memory_section(runs["latency"])
    if "pipeline" in runs:
        lines += pipeline_section(runs["pipeline"])
    if "streams" in runs:
        lines += streams_section(runs["streams"])
    return "\n".join(lines).rstrip() + "\n"


def write_results(out: Path, machine: Dict[str, Any], runs: Dict[str, Dict[str, Any]], pending: List[str],
                  command: str, quick: bool) -> None:
    """The results file and its JSON, each complete or not at all; rewritten after every table, so
    that a run stopped part-way leaves the tables that finished, the others marked as not measured."""
    text = render(machine, runs, pending, command, quick)
    atomic_write(out, text)
    atomic_write(out.with_suffix(".json"), json.dumps(
        {"command": command, "quick": quick, "machine": machine, "runs": runs, "not_measured": pending},
        indent=1, default=str) + "\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.root and not Path(args.root).is_dir():
        print(f"results.py: error: --root {args.root} is not a folder", file=sys.stderr)
        return 1
    out = Path(args.out)
    threads = args.threads or _machine.available_cores()
    machine = _machine.describe_machine(threads)
    command = " ".join(["python3", "benchmarks/results.py", *argv])
    runs: Dict[str, Dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="fcn-deploy-results-") as tmp_name:
        tmp = Path(tmp_name)
        commands = _commands(args, tmp)
        for name, cmd in commands.items():
            runs[name] = _run(name, cmd, tmp)
            machine["load_average_at_end"] = _machine.load_average()
            write_results(out, machine, runs, [n for n in commands if n not in runs], command, args.quick)
    failed = [name for name, run in runs.items() if "report" not in run]
    print(f"wrote {out} and {out.with_suffix('.json')}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
