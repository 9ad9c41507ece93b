"""benchmarks/results.py: every table from one command, headed by the machine.

The quick run measures nothing worth keeping (an untrained tiny net, two iterations); it runs
the same benchmark commands as the full run, so CI checks that the command that writes
docs/results.md works end to end. The machine header it checks is this CPU's: its ISA line
names the flags present here and lists the others as absent (no test depends on which).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent

from benchmarks import _machine, results  # noqa: E402


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONPATH="")
    proc = subprocess.run([sys.executable, "benchmarks/results.py", "--quick", "--out", str(out / "results.md"),
                           "--workdir", str(out / "work")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, (out / "results.md").read_text(), json.loads((out / "results.json").read_text())


def test_every_table_is_written_with_its_command(quick_run):
    proc, text, _ = quick_run
    for heading in ("## Machine", "## Latency per backend and precision", "## Accuracy per backend and precision",
                    "## Ours against the peers' path", "## Memory", "## Video pipeline against the model alone",
                    "## Many streams: one process against as many processes"):
        assert heading in text
    for command in ("python3 benchmarks/latency.py --model fcn8s_resnet18", "python3 benchmarks/accuracy.py",
                    "python3 benchmarks/versus_peer.py --latency latency.json --accuracy accuracy.json",
                    "python3 benchmarks/pipeline.py", "python3 benchmarks/results.py --quick"):
        assert command in text
    assert "| ours | ort-cpu | fp32 |" in text and "| peer | peer-ort-cpu | fp32 |" in text
    assert "| model only |" in text and "| pipeline -> none |" in text
    assert "Quick run" in text and "Incomplete" not in text
    assert "wrote" in proc.stdout


def test_the_header_is_this_machine(quick_run):
    _, text, report = quick_run
    machine = report["machine"]
    assert set(machine["cpu_flags"]) == set(_machine.ISA_FLAGS)
    assert machine["cpu_flags"] == _machine.cpu_flags()
    present = [f for f, on in machine["cpu_flags"].items() if on]
    isa_line = next(line for line in text.splitlines() if line.startswith("- ISA: "))
    for flag in present:
        assert flag in isa_line.split("(not:")[0]
    assert f"- CPU: {_machine.cpu_model()}, {_machine.available_cores()} cores" in text
    assert "torch 2.13" in text and "onnxruntime" in text and "shared" in text


def test_the_json_holds_every_report(quick_run):
    _, _, report = quick_run
    assert set(report["runs"]) == {"latency", "accuracy", "pipeline", "streams"}
    assert report["not_measured"] == []
    latency = report["runs"]["latency"]["report"]
    assert {("ort-cpu", "fp32"), ("peer-ort-cpu", "fp32")} <= {(r["backend"], r["precision"]) for r in latency["records"]}
    assert all(r["peak_rss_mb"] > 0 for r in latency["records"])
    assert report["runs"]["accuracy"]["report"]["dataset"]["name"] == "synthetic"
    assert "2" in report["runs"]["streams"]["report"]["streams"]


def test_a_table_that_failed_or_did_not_run_is_marked(tmp_path):
    machine = _machine.describe_machine(1)
    runs = {"latency": {"command": "python3 benchmarks/latency.py --model camvid", "exit": 1, "seconds": 1.0,
                        "error": "latency.py: error: no such model"}}
    results.write_results(tmp_path / "r.md", machine, runs, ["accuracy", "pipeline"], "python3 benchmarks/results.py",
                          False)
    text = (tmp_path / "r.md").read_text()
    assert "**Not measured**: the command exited 1: `latency.py: error: no such model`" in text
    assert "**Incomplete**: not measured in this run (it stopped, or is still running): accuracy, pipeline." in text
    assert json.loads((tmp_path / "r.json").read_text())["not_measured"] == ["accuracy", "pipeline"]


def test_a_missing_dataset_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/results.py", "--root", str(tmp_path / "nope"),
                           "--out", str(tmp_path / "r.md")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"results.py: error: --root {tmp_path / 'nope'} is not a folder"]
    assert not (tmp_path / "r.md").exists()
