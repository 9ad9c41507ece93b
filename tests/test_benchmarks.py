"""The benchmark scripts, run briefly on a tiny model: the files they write and what they say.

One latency run as a subprocess (the way users start it, from the repository root) feeds
most checks; the rest call ``main(argv)`` in-process. A tiny FCN-8s ResNet-18 (width/16) at
32x48 with two timed iterations keeps the whole file well under a minute on two cores.
"""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent

from benchmarks import _machine, _report, _runners, _variants
from benchmarks import accuracy, latency

TINY = ["--model", "fcn8s_resnet18", "--option", "width=16"]
# The fixture's sweep: every backend on our graphs but OpenVINO's (the OpenVINO and peer-path
# rows have their own tests below, at one batch size, so that this file stays fast).
SWEPT = ("pytorch", "pytorch-cuda", "ort-cpu", "ort-cuda", "ort-tensorrt", "tensorrt")
REQUIRED = ("backend", "precision", "size", "batch", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "fps")


@pytest.fixture(scope="module")
def latency_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("latency")
    argv = TINY + [
        "--backends", ",".join(SWEPT), "--precisions", "fp32,int8", "--sizes", "32x48", "--batch", "1,2",
        "--warmup", "1", "--iters", "2", "--calib-images", "2", "--workdir", str(out / "work"),
        "--json", str(out / "l.json"), "--csv", str(out / "l.csv"), "--plot", str(out / "l.png"),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONPATH="")
    proc = subprocess.run([sys.executable, "benchmarks/latency.py"] + argv, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout, json.loads((out / "l.json").read_text())


def test_latency_json_has_every_configuration_with_sane_statistics(latency_run):
    _, _, report = latency_run
    records = report["records"]
    measured = {(r["backend"], r["precision"], r["batch"]) for r in records}
    for batch in (1, 2):
        assert {("pytorch", "fp32", batch), ("ort-cpu", "fp32", batch), ("ort-cpu", "int8", batch)} <= measured
    for r in records:
        assert all(k in r for k in REQUIRED)
        assert r["size"] == "32x48" and r["iters"] == 2 and r["warmup"] == 1
        assert r["min_ms"] <= r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["max_ms"]
        assert r["fps"] == pytest.approx(r["batch"] * 1e3 / r["mean_ms"], rel=1e-2)
        assert r["includes_preprocessing"] and r["includes_argmax"]
        assert r["peak_rss_mb"] > 0
    # Each backend gets the INT8 graph it is built for: u8s8 on ONNX Runtime's CPU provider.
    assert {r["int8_scheme"] for r in records if r["backend"] == "ort-cpu" and r["precision"] == "int8"} == {"u8s8"}
    assert all(r["int8_scheme"] is None for r in records if r["precision"] != "int8")
    assert report["machine"]["allocator"].startswith(("glibc malloc keeping freed blocks", "system default"))
    assert report["machine"]["cpu_cores"] >= 1 and report["machine"]["versions"]["numpy"] == np.__version__
    assert report["peaks"][0]["gflops_s"] > 0
    assert "uint8 labels out" in report["timed"]


def test_latency_lists_every_backend_it_did_not_run_with_a_reason(latency_run):
    _, stdout, report = latency_run
    ran = {r["backend"] for r in report["records"]}
    skipped = report["skipped"]
    for backend in SWEPT:
        assert backend in ran or any(s["backend"] == backend for s in skipped), backend
    assert all(s["reason"] for s in skipped)
    int8 = [s for s in skipped if s["backend"] == "pytorch" and s["precision"] == "int8"]
    assert int8 and "INT8" in int8[0]["reason"]
    if _runners.unavailable_reason("ort-cuda"):
        assert any(s["backend"] == "ort-cuda" and "CUDAExecutionProvider" in s["reason"] for s in skipped)
    assert "skipped:" in stdout and "pytorch int8" in stdout


def test_latency_work_is_the_deployed_graphs_gflops_against_the_measured_peak(latency_run):
    from fcn_deploy.models.flops import count_flops

    _, _, report = latency_run
    source = _variants.open_source("fcn8s_resnet18", 11, {"width": 16})
    expected = _variants.FlopCounter(source).gflops(32, 48)
    assert 0 < expected <= count_flops(source.resolved.model, 32, 48)  # grouped upsampling: less work
    peak = report["peaks"][0]["gflops_s"]
    for r in report["records"]:
        assert r["gflops"] == pytest.approx(expected, rel=1e-3)
        assert r["achieved_gflops_s"] == pytest.approx(r["gflops"] * r["batch"] / (r["p50_ms"] / 1e3), rel=2e-2)
        assert r["pct_of_peak"] == pytest.approx(100 * r["achieved_gflops_s"] / peak, rel=2e-2)


def test_latency_csv_and_png(latency_run):
    out, _, report = latency_run
    with open(out / "l.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(report["records"])
    assert set(REQUIRED) <= set(rows[0])
    assert float(rows[0]["p50_ms"]) == pytest.approx(report["records"][0]["p50_ms"])
    png = (out / "l.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_exports_are_cached_and_reused_and_seconds_bounds_the_run(latency_run, capsys):
    out, _, _ = latency_run
    work = out / "work"
    files = sorted(work.glob("*.onnx"))
    assert len(files) == 2 and all(Path(str(f) + ".key.json").is_file() for f in files)
    stamps = {f: f.stat().st_mtime_ns for f in files}
    code = latency.main(TINY + ["--backends", "ort-cpu", "--precisions", "fp32,int8", "--sizes", "32x48",
                                "--warmup", "0", "--seconds", "0.2", "--calib-images", "2", "--no-peak",
                                "--workdir", str(work), "--json", str(out / "again.json")])
    assert code == 0
    assert sorted(work.glob("*.onnx")) == files
    assert {f: f.stat().st_mtime_ns for f in files} == stamps
    assert "ort-cpu  int8 u8s8" in capsys.readouterr().out
    again = json.loads((out / "again.json").read_text())
    assert len(again["records"]) == 2 and all(r["iters"] >= 2 for r in again["records"])
    assert again["settings"]["seconds"] == 0.2 and again["settings"]["iters"] is None
    # Forcing the TensorRT graph on the CPU exports (and caches) it beside the u8s8 one.
    code = latency.main(TINY + ["--backends", "ort-cpu", "--precisions", "int8", "--int8-scheme", "s8s8",
                                "--sizes", "32x48", "--warmup", "0", "--iters", "2", "--calib-images", "2",
                                "--no-peak", "--workdir", str(work), "--json", str(out / "s8.json")])
    assert code == 0
    assert [r["int8_scheme"] for r in json.loads((out / "s8.json").read_text())["records"]] == ["s8s8"]
    assert len(list(work.glob("*int8-s8s8-*.onnx"))) == 1 and len(list(work.glob("*int8-u8s8-*.onnx"))) == 1


def test_pytorch_and_onnx_runtime_run_the_same_graph(latency_run):
    """The PyTorch side is the exported graph's own wrapper: same labels from the same frames."""
    out, _, _ = latency_run
    source = _variants.open_source("fcn8s_resnet18", 11, {"width": 16})
    cache = _variants.ExportCache(str(out / "work"))
    torch_runner = _runners.open_runner("pytorch", "fp32", source, cache, "labels", (2, 37, 53), 2)
    ort_runner = _runners.open_runner("ort-cpu", "fp32", source, cache, "labels", (2, 37, 53), 2)
    frames = _variants.random_frames(2, 37, 53, seed=1)
    a, b = torch_runner.infer(frames), ort_runner.infer(frames)
    assert a.dtype == b.dtype == np.uint8 and a.shape == b.shape == (2, 37, 53)
    assert (a == b).mean() >= 0.999


def test_an_exported_file_runs_as_it_is(latency_run, tmp_path, capsys):
    out, _, _ = latency_run
    fp32 = next(f for f in (out / "work").glob("*-fp32-*.onnx"))
    model = tmp_path / "model.onnx"
    shutil.copy(fp32, model)
    code = latency.main(["--model", str(model), "--backends", "pytorch,ort-cpu", "--precisions", "fp32,int8",
                         "--sizes", "32x48", "--warmup", "0", "--iters", "4", "--rounds", "2", "--no-peak",
                         "--workdir", str(tmp_path / "w"), "--json", str(tmp_path / "f.json")])
    assert code == 0
    report = json.loads((tmp_path / "f.json").read_text())
    assert [(r["backend"], r["precision"]) for r in report["records"]] == [("ort-cpu", "fp32")]
    reasons = {(s["backend"], s["precision"]): s["reason"] for s in report["skipped"]}
    assert "exported onnx file" in reasons[("pytorch", "fp32")]
    assert "fp32 file" in reasons[("ort-cpu", "int8")]
    assert report["records"][0]["gflops"] > 0  # counted on the network rebuilt from the metadata
    assert report["records"][0]["iters"] == 4 and report["records"][0]["rounds"] == 2


def test_compare_prints_ratios(latency_run, tmp_path, capsys):
    out, _, report = latency_run
    faster = json.loads(json.dumps(report))
    for r in faster["records"]:
        r["p50_ms"] /= 2
        r["mean_ms"] /= 4
    (tmp_path / "b.json").write_text(json.dumps(faster))
    assert latency.main(["--compare", str(out / "l.json"), str(tmp_path / "b.json")]) == 0
    text = capsys.readouterr().out
    assert "p50 A/B" in text and "2.000" in text and "4.000" in text
    assert text.count("ort-cpu") >= 4


def test_bad_input_is_one_error_line(tmp_path, capsys):
    assert latency.main(TINY + ["--sizes", "32by48"]) == 1
    assert latency.main(TINY + ["--backends", "pytorch,onnx"]) == 1
    assert latency.main(["--compare", str(tmp_path / "missing.json"), str(tmp_path / "also.json")]) == 1
    (tmp_path / "corrupt.onnx").write_bytes(b"not a model")
    assert latency.main(["--model", str(tmp_path / "corrupt.onnx")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("latency.py: error: ") for line in err)
    assert "32by48" in err[0] and "onnx" in err[1] and "missing.json" in err[2]
    assert "cannot read ONNX file" in err[3]


def test_latency_stats_and_speedups():
    stats = _report.latency_stats([0.010, 0.020, 0.030, 0.040, 0.100], batch=2)
    assert stats["min_ms"] == pytest.approx(10) and stats["p50_ms"] == pytest.approx(30)
    assert stats["p90_ms"] == pytest.approx(76) and stats["p99_ms"] == pytest.approx(97.6)
    assert stats["mean_ms"] == pytest.approx(40) and stats["fps"] == pytest.approx(50)
    assert stats["std_ms"] == pytest.approx(np.std([10, 20, 30, 40, 100], ddof=1))
    records = [{"backend": "pytorch", "precision": "fp32", "size": "1x1", "batch": 1, "p50_ms": 30.0},
               {"backend": "ort-cpu", "precision": "int8", "size": "1x1", "batch": 1, "p50_ms": 10.0}]
    _report.add_speedups(records)
    assert [r["speedup"] for r in records] == [1.0, 3.0]


def test_peak_memory_is_per_configuration():
    memory = _machine.PeakMemory()
    memory.start()
    block = np.ones(64 * 1024 * 1024 // 8)  # 64 MiB, touched
    used = memory.stop()
    del block
    assert used["peak_rss_mb"] > 0
    if used["peak_rss_scope"] == "config":
        assert used["peak_rss_added_mb"] >= 50


def test_accuracy_scores_every_backend_on_the_same_images(tmp_path):
    out = tmp_path / "a.json"
    code = accuracy.main(TINY + ["--dataset", "synthetic", "--limit", "2", "--backends", "pytorch,ort-cpu,ort-cuda",
                                 "--precisions", "fp32,int8", "--calib-images", "2", "--warmup", "1",
                                 "--workdir", str(tmp_path / "w"), "--json", str(out), "--csv", str(tmp_path / "a.csv"),
                                 "--markdown", str(tmp_path / "a.md")])
    assert code == 0
    report = json.loads(out.read_text())
    by = {(r["backend"], r["precision"]): r for r in report["records"]}
    assert set(by) == {("pytorch", "fp32"), ("ort-cpu", "fp32"), ("ort-cpu", "int8")}
    for r in by.values():
        assert 0.0 <= r["mean_iu"] <= 1.0 and r["images"] == 2 and r["size"] == "96x128"
        assert r["p50_ms"] > 0 and r["fps"] > 0
    # the same graph on two runtimes: the same labels, so the same score
    assert by[("ort-cpu", "fp32")]["mean_iu"] == pytest.approx(by[("pytorch", "fp32")]["mean_iu"], abs=1e-3)
    assert by[("pytorch", "fp32")]["delta_pts"] == 0
    assert report["calibration"]["source"] == "synthetic"
    assert any(s["backend"] == "pytorch" and s["precision"] == "int8" for s in report["skipped"])
    with open(tmp_path / "a.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and "mean_iu" in rows[0] and "p50_ms" in rows[0]
    markdown = (tmp_path / "a.md").read_text()
    assert "python3 benchmarks/accuracy.py --model fcn8s_resnet18" in markdown
    assert "| path | backend | prec | runs in | size HxW | mean IU % |" in markdown and markdown.count("| ort-cpu |") == 2


def test_accuracy_refuses_a_model_with_other_classes(latency_run, tmp_path, capsys):
    out, _, _ = latency_run
    fp32 = next(f for f in (out / "work").glob("*-fp32-*.onnx"))  # 11 classes; synthetic has 5
    code = accuracy.main(["--model", str(fp32), "--dataset", "synthetic", "--limit", "1", "--backends", "ort-cpu",
                          "--precisions", "fp32", "--workdir", str(tmp_path)])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("accuracy.py: error: ") and "11 classes" in err[0]


def test_logits_graph_times_the_bare_network_on_both_runtimes(latency_run, tmp_path):
    out, _, _ = latency_run
    work = out / "work"
    code = latency.main(TINY + ["--graph", "logits", "--backends", "pytorch,ort-cpu", "--precisions", "fp32",
                                "--sizes", "32x48", "--warmup", "0", "--iters", "1", "--no-peak",
                                "--workdir", str(work), "--json", str(tmp_path / "g.json")])
    assert code == 0
    report = json.loads((tmp_path / "g.json").read_text())
    assert [r["backend"] for r in report["records"]] == ["pytorch", "ort-cpu"]
    assert not any(r["includes_preprocessing"] or r["includes_argmax"] for r in report["records"])
    assert "logits out" in report["timed"]
    source = _variants.open_source("fcn8s_resnet18", 11, {"width": 16})
    cache = _variants.ExportCache(str(work))
    frames = _variants.random_frames(1, 32, 48, seed=2)
    a = _runners.open_runner("pytorch", "fp32", source, cache, "logits", (1, 32, 48), 2).infer(frames)
    b = _runners.open_runner("ort-cpu", "fp32", source, cache, "logits", (1, 32, 48), 2).infer(frames)
    assert a.shape == b.shape == (1, 11, 32, 48) and a.dtype == b.dtype == np.float32
    assert np.abs(a - b).max() <= 1e-4 * (a.max() - a.min())


def test_the_cuda_graph_friendly_wrapper_computes_what_the_exported_wrapper_does():
    import torch
    from fcn_deploy.converters.deploy_graph import DeployGraph

    source = _variants.open_source("fcn8s_resnet18", 11, {"width": 16})
    norm = source.resolved.model.normalization
    assert norm.channel_order == "RGB"  # so the channel swap is exercised
    capturable = _variants.torch_module(source, "fp32", "labels", capturable=True)
    assert isinstance(capturable, DeployGraph)
    logits_a = DeployGraph(capturable.net, norm, fold_preprocessing=True, fold_argmax=False)
    logits_b = type(capturable)(capturable.net, norm, fold_preprocessing=True, fold_argmax=False)
    frames = torch.from_numpy(_variants.random_frames(2, 33, 47, seed=3))
    with torch.no_grad():
        assert torch.equal(logits_a(frames), logits_b(frames))


@pytest.mark.gpu
def test_pytorch_cuda_fp16_with_cuda_graphs_reports_the_copy_split(tmp_path):
    if _runners.unavailable_reason("pytorch-cuda"):
        pytest.skip(_runners.unavailable_reason("pytorch-cuda"))
    code = latency.main(TINY + ["--backends", "pytorch-cuda", "--precisions", "fp32,fp16", "--sizes", "64x96",
                                "--batch", "2", "--warmup", "2", "--iters", "5", "--no-peak",
                                "--workdir", str(tmp_path), "--json", str(tmp_path / "c.json")])
    assert code == 0
    report = json.loads((tmp_path / "c.json").read_text())
    assert [r["precision"] for r in report["records"]] == ["fp32", "fp16"]
    for r in report["records"]:
        assert "CUDA graph" in r["notes"] and "channels-last" in r["notes"]
        assert r["h2d_ms"] > 0 and r["compute_ms"] > 0 and r["d2h_ms"] > 0
        assert r["h2d_ms"] + r["compute_ms"] + r["d2h_ms"] <= r["max_ms"] * 1.05


def test_openvino_and_peer_path_rows(tmp_path, capsys):
    """OpenVINO on our graphs, and the peers' path (plain export, the engine's own INT8,
    numpy normalisation and arg-max) on both engines: rows marked ``ours`` and ``peer``, each
    compared with the fastest peer row of its precision."""
    pytest.importorskip("openvino", reason="openvino is not installed")
    backends = "ort-cpu,openvino,peer-ort-cpu,peer-openvino"
    try:
        import nncf  # noqa: F401
    except ImportError:
        nncf = None
    out = tmp_path / "p.json"
    work = tmp_path / "work"
    argv = TINY + ["--backends", backends, "--precisions", "fp32,fp16,int8", "--sizes", "32x48", "--warmup", "1",
                   "--iters", "2", "--calib-images", "2", "--no-peak", "--workdir", str(work), "--json", str(out),
                   "--markdown", str(tmp_path / "p.md")]
    assert latency.main(argv) == 0
    report = json.loads(out.read_text())
    by = {(r["backend"], r["precision"]): r for r in report["records"]}
    expected = {(b, p) for b in backends.split(",") for p in ("fp32", "int8")}
    if nncf is None:
        expected.discard(("peer-openvino", "int8"))
    assert set(by) - {("ort-cpu", "fp16"), ("openvino", "fp16")} == expected
    for (backend, precision), r in by.items():
        assert r["path"] == ("peer" if backend.startswith("peer-") else "ours")
        if precision in ("fp32", "int8"):
            best = min(p["p50_ms"] for p in report["records"] if p["path"] == "peer" and p["precision"] == precision)
            assert r["vs_peer"] == pytest.approx(best / r["p50_ms"], rel=1e-2, abs=1e-3)  # vs_peer keeps 3 decimals
    assert by[("openvino", "int8")]["int8_scheme"] == "u8s8"  # the CPU's INT8 graph, as on ONNX Runtime
    assert by[("openvino", "fp32")]["providers"][0].startswith("OpenVINO")
    # What each engine compiled, read back: fp32 in fp32 on every CPU (never OpenVINO's own bf16
    # default), INT8's convolutions in integers.
    for backend in ("openvino", "peer-openvino", "ort-cpu"):
        assert by[(backend, "fp32")]["execution_precision"] == "fp32"
    assert by[("openvino", "int8")]["execution_precision"].startswith("u8 conv ")
    assert by[("openvino", "int8")]["execution_precision"].endswith(", fp32")
    assert by[("peer-ort-cpu", "int8")]["int8_scheme"] is None and "quantize_static" in by[("peer-ort-cpu", "int8")]["notes"]
    # The peer path has no CPU fp16; it says so.
    assert any(s["backend"] == "peer-ort-cpu" and s["precision"] == "fp16" and "no fp16" in s["reason"]
               for s in report["skipped"])
    assert "peer path" in report["timed"]
    # One plain export per shape, reused by both engines; each INT8 made once.
    assert len(list(work.glob("peer-*-fp32-1x32x48-*.onnx"))) == 1
    assert len(list(work.glob("peer-*-int8-ort-*.onnx"))) == 1
    if nncf is not None:
        assert len(list(work.glob("peer-*-int8-nncf-*.xml"))) == 1
    text = capsys.readouterr().out
    assert "x best peer" in text and "peer  peer-ort-cpu" in text
    assert "| path | backend | prec |" in (tmp_path / "p.md").read_text()
    # A file cannot take the peer path: it needs the checkpoint to export.
    fp32 = next(work.glob("fcn8s_resnet18-labels-fp32-*.onnx"))
    assert latency.main(["--model", str(fp32), "--backends", "peer-ort-cpu", "--precisions", "fp32", "--sizes", "32x48",
                         "--iters", "1", "--no-peak", "--json", str(tmp_path / "f.json")]) == 0
    skipped = json.loads((tmp_path / "f.json").read_text())["skipped"]
    assert skipped and "peer path exports" in skipped[0]["reason"]


def test_versus_peer_picks_the_fastest_of_each_path(tmp_path, capsys):
    from benchmarks import versus_peer

    def record(path, backend, precision, p50, scheme=None):
        return {"model": "m", "path": path, "backend": backend, "precision": precision, "int8_scheme": scheme,
                "size": "360x480", "batch": 1, "device": "cpu", "p50_ms": p50}

    latency_report = {"command": "python3 benchmarks/latency.py", "machine": {"cpu": "x", "threads": 2,
                                                                            "load_average_at_start": [0.1]},
                      "records": [record("ours", "ort-cpu", "fp32", 20.0), record("ours", "openvino", "fp32", 25.0),
                                  record("peer", "peer-ort-cpu", "fp32", 40.0),
                                  record("peer", "peer-openvino", "fp32", 30.0),
                                  record("ours", "openvino", "int8", 10.0, "u8s8"),
                                  record("peer", "peer-ort-cpu", "int8", 30.0)]}
    accuracy_report = {"command": "python3 benchmarks/accuracy.py", "records": [
        dict(record("ours", "ort-cpu", "fp32", 1.0), mean_iu_pct=70.0),
        dict(record("peer", "peer-openvino", "fp32", 1.0), mean_iu_pct=69.5),
        dict(record("ours", "openvino", "int8", 1.0, "u8s8"), mean_iu_pct=70.2)]}
    (tmp_path / "l.json").write_text(json.dumps(latency_report))
    (tmp_path / "a.json").write_text(json.dumps(accuracy_report))
    fp32, int8 = versus_peer.rows(latency_report, accuracy_report)
    assert fp32["ours"] == "ONNX Runtime, our graph" and fp32["peer"] == "OpenVINO, plain export"
    assert fp32["ratio"] == pytest.approx(1.5) and fp32["iu_delta"] == pytest.approx(0.5)
    assert int8["ours"] == "OpenVINO, our graph (u8s8)" and int8["peer"] == "ONNX Runtime, plain export + quantize_static INT8"
    assert int8["ratio"] == pytest.approx(3.0) and int8["peer_iu"] is None
    assert versus_peer.main(["--latency", str(tmp_path / "l.json"), "--accuracy", str(tmp_path / "a.json"),
                             "--markdown"]) == 0
    assert "| m | fp32 | ONNX Runtime, our graph | 20.0 |" in capsys.readouterr().out
    (tmp_path / "ours.json").write_text(json.dumps(dict(latency_report, records=latency_report["records"][:2])))
    assert versus_peer.main(["--latency", str(tmp_path / "ours.json")]) == 1
    assert "no size with both" in capsys.readouterr().err


def test_accuracy_reports_openvino_label_agreement_with_onnx_runtime(tmp_path):
    """OpenVINO fp32 against ONNX Runtime on the same graph; bf16 (where the CPU has it: the FP32
    graph in bfloat16) against ONNX Runtime's fp32 labels, with what each engine compiled."""
    pytest.importorskip("openvino", reason="openvino is not installed")
    from fcn_deploy.runtime.backends.openvino import device_capabilities

    out = tmp_path / "a.json"
    assert accuracy.main(TINY + ["--dataset", "synthetic", "--limit", "2", "--backends", "ort-cpu,openvino",
                                 "--precisions", "fp32,bf16", "--warmup", "1", "--workdir", str(tmp_path / "w"),
                                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    by = {(r["backend"], r["precision"]): r for r in report["records"]}
    assert by[("ort-cpu", "fp32")]["agreement_pct"] is None and by[("ort-cpu", "fp32")]["path"] == "ours"
    ov = by[("openvino", "fp32")]
    assert ov["agrees_with"] == "ort-cpu" and ov["agreement_pct"] >= 99.9 and ov["execution_precision"] == "fp32"
    assert "_labels" not in ov
    if "BF16" in device_capabilities("CPU"):  # CPU feature: AVX512_BF16 or AMX
        bf16 = by[("openvino", "bf16")]
        assert bf16["execution_precision"] == "bf16" and bf16["agrees_with"] == "ort-cpu"
        assert bf16["delta_pts"] is not None and bf16["reference"] == "ort-cpu fp32"
    else:
        assert any(s["backend"] == "openvino" and s["precision"] == "bf16" and "AVX512_BF16 or AMX" in s["reason"]
                   for s in report["skipped"])
    assert any(s["backend"] == "ort-cpu" and s["precision"] == "bf16" and "no bf16 mode" in s["reason"]
               for s in report["skipped"])


def test_bf16_row_beside_fp32_with_its_speed_up(tmp_path, capsys):
    """latency.py --precisions fp32,bf16: OpenVINO's bf16 row (where the CPU has bf16; its
    one-line reason where not) next to the fp32 rows, ``x fp32`` its fp32/bf16 p50 ratio, and
    every row's ``runs in`` what the engine compiled. ONNX Runtime's bf16 is a skipped row."""
    pytest.importorskip("openvino", reason="openvino is not installed")
    from fcn_deploy.runtime.backends.openvino import device_capabilities

    out = tmp_path / "b.json"
    argv = TINY + ["--backends", "ort-cpu,openvino", "--precisions", "fp32,bf16", "--sizes", "32x48", "--warmup", "1",
                   "--iters", "2", "--no-peak", "--workdir", str(tmp_path / "work"), "--json", str(out)]
    assert latency.main(argv) == 0
    text = capsys.readouterr().out
    assert "runs in" in text and "x fp32" in text
    report = json.loads(out.read_text())
    by = {(r["backend"], r["precision"]): r for r in report["records"]}
    assert by[("ort-cpu", "fp32")]["execution_precision"] == "fp32" and by[("ort-cpu", "fp32")]["vs_fp32"] is None
    assert by[("openvino", "fp32")]["execution_precision"] == "fp32"
    if "BF16" in device_capabilities("CPU"):  # CPU feature: AVX512_BF16 or AMX
        bf16 = by[("openvino", "bf16")]
        assert bf16["execution_precision"] == "bf16" and bf16["prec"] == "bf16"
        assert bf16["vs_fp32"] == pytest.approx(by[("openvino", "fp32")]["p50_ms"] / bf16["p50_ms"], rel=1e-2)
    else:
        reason = next(s["reason"] for s in report["skipped"] if s["backend"] == "openvino" and s["precision"] == "bf16")
        assert "bf16 is not supported by OpenVINO's CPU" in reason and "\n" not in reason
    assert ("ort-cpu", "bf16") not in by
    assert any(s["backend"] == "ort-cpu" and s["precision"] == "bf16" for s in report["skipped"])


def test_op_profile_splits_each_paths_time_by_node_type(tmp_path, capsys):
    """benchmarks/op_profile.py: OpenVINO's per-node counters for our graph and the peers'
    plain export, the convolutions' share and kernels, and the bound on the ratio they imply."""
    pytest.importorskip("openvino", reason="openvino is not installed")
    from benchmarks import op_profile

    argv = TINY + ["--precisions", "fp32", "--size", "32x48", "--warmup", "1", "--iters", "2",
                   "--workdir", str(tmp_path / "work")]
    assert op_profile.main(argv) == 0
    out = capsys.readouterr().out
    ours = next(line for line in out.splitlines() if line.startswith("ours  fp32"))
    peer = next(line for line in out.splitlines() if line.startswith("peer  fp32"))
    for line in (ours, peer):
        total, conv = (float(line.split(word)[1].split("ms")[0]) for word in ("total", "convolutions"))
        assert 0 < conv <= total
    assert "kernels: " in out and "ConvolutionBackpropData" in out  # the plain export keeps its deconvolutions
    bound = float(out.split("bound: peer total / our convolutions = ")[1].split("x")[0])
    assert bound > 0
    assert op_profile.main(TINY + ["--precisions", "fp16"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown precision 'fp16'; choose from fp32, bf16, int8" in err
