"""Time to first frame: how long ``fcn-deploy run --max-frames 1 --output none`` takes, start to exit.

    python3 benchmarks/startup.py                        # the bundled model, 3 timed runs
    python3 benchmarks/startup.py --runs 5 -- --model m.onnx --device ort-cpu

What a user waits for before the first frame: the interpreter, the imports, the model's
metadata, the CPU engine choice (cached after the first run, so one untimed run comes
first), opening the backend and one frame through the pipeline. Each run is a fresh process,
timed by the wall clock around it; its CPU time (user + system, which other processes on a
shared machine do not inflate) is printed beside it. Arguments after ``--`` go to ``run``.

It also says which heavy modules the start-up imported that it does not need: ``onnx``
(which pulls in ``ml_dtypes``) and ``torch`` are never needed to run an exported model.
The target is 0.5 s with every extra installed; the number depends on the CPU and on how
busy it is (the load average is printed), so compare runs made on one machine.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import List, Tuple

if __package__ in (None, ""):  # `python3 benchmarks/NAME.py` from a checkout: benchmarks/ is not installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._machine import cpu_model, library_versions, load_average

TARGET_S = 0.5
NOT_NEEDED = ("onnx", "ml_dtypes", "torch")
# Runs the CLI as `fcn-deploy` does, then writes the modules it imported (for the report).
_CHILD = """
import json, sys
from fcn_deploy.cli import main
try:
    code = main(sys.argv[2:])
finally:
    with open(sys.argv[1], "w") as f:
        json.dump(sorted(m for m in {modules!r} if m in sys.modules), f)
sys.exit(code)
"""


def one_run(run_args: List[str], workdir: str) -> Tuple[float, float, List[str]]:
    """(wall seconds, CPU seconds, unneeded modules imported) of one ``fcn-deploy run``."""
    modules_file = os.path.join(workdir, "modules.json")
    command = [sys.executable, "-c", _CHILD.format(modules=NOT_NEEDED), modules_file,
               "run", "--max-frames", "1", "--output", "none", *run_args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"fcn-deploy run failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    with open(modules_file) as f:
        return wall, cpu, json.load(f)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="timed runs (default 3), after one untimed")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the numbers here")
    parser.add_argument("run_args", nargs="*", metavar="-- RUN_ARGS", help="arguments for fcn-deploy run")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, not {args.runs}")
    versions = library_versions()
    engines = ", ".join(f"{name} {versions[name]}" for name in ("onnxruntime", "openvino", "onnx", "torch")
                        if versions.get(name))
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, load average {load_average()}")
    print(f"installed: {engines or 'no engine'}")
    command = "fcn-deploy run --max-frames 1 --output none " + " ".join(args.run_args)
    print(f"command: {command.strip()}")
    with tempfile.TemporaryDirectory(prefix="fcn-startup-") as workdir:
        one_run(args.run_args, workdir)  # untimed: fills the CPU engine choice cache
        runs = [one_run(args.run_args, workdir) for _ in range(args.runs)]
    for index, (wall, cpu, modules) in enumerate(runs, 1):
        print(f"  run {index}: {wall:.2f} s wall, {cpu:.2f} s CPU; imported {', '.join(modules) or 'nothing'} "
              f"of {', '.join(NOT_NEEDED)}")
    median = statistics.median(wall for wall, _, _ in runs)
    verdict = "met" if median <= TARGET_S else "not met"
    print(f"time to first frame: median {median:.2f} s over {len(runs)} runs (target {TARGET_S} s: {verdict}; "
          f"load average after: {load_average()})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": command.strip(), "runs": [{"wall_s": w, "cpu_s": c, "imported": m}
                                                            for w, c, m in runs],
                       "median_s": median, "target_s": TARGET_S, "versions": versions}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
