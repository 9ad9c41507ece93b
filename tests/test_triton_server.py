"""A real Triton Inference Server started by `fcn-deploy serve`, used through the triton:// backend.

Needs tritonclient (``pip install 'fcn-deploy[serve]'``) and a tritonserver binary
(``fcn-deploy serve`` fetches NVIDIA's PyTriton wheel with ``pip download --no-deps``; .ci/run
drops it into the cache first); each is skipped with the reason where missing.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np
import pytest

from fcn_deploy.cli import main
from fcn_deploy.runtime.backends import BackendError, open_backend
from fcn_deploy.runtime.model_files import bundled_onnx

from onnx_helpers import REPO, assert_one_line_error, run_cli, scene_frames

tritonclient_http = pytest.importorskip("tritonclient.http", reason="tritonclient is not installed: pip install 'fcn-deploy[serve]'")


def _tritonserver() -> None:
    from fcn_deploy.errors import FcnDeployError
    from fcn_deploy.serve.install import find_tritonserver

    try:
        find_tritonserver(download=False)
    except FcnDeployError as exc:
        pytest.skip(f"no tritonserver here: {exc}")


def free_ports(count: int) -> List[int]:
    sockets, ports = [], []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
        ports.append(s.getsockname()[1])
    for s in sockets:
        s.close()
    return ports


class Served:
    """`fcn-deploy serve` in a subprocess, ready."""

    def __init__(self, *extra: str) -> None:
        self.http, self.grpc, self.metrics = free_ports(3)
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fcn_deploy.cli", "serve", "--http-port", str(self.http), "--grpc-port",
             str(self.grpc), "--metrics-port", str(self.metrics), "--host", "127.0.0.1", "--threads", "1", *extra],
            cwd=str(REPO), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 240  # seconds in isolation; minutes on a 2-core box with a loaded suite
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited: {self.proc.stderr.read()}")
            try:
                import urllib.request

                with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        raise AssertionError(f"fcn-deploy serve was not ready within 240 s: {self.proc.stderr.read()[-2000:]}")

    def url(self, name: str = "camvid", grpc: bool = False) -> str:
        return f"triton+grpc://127.0.0.1:{self.grpc}/{name}" if grpc else f"triton://127.0.0.1:{self.http}/{name}"

    def server_pid(self) -> int:
        """The tritonserver process `fcn-deploy serve` started."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return int(children[0])

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(60)


@pytest.fixture(scope="module")
def served():
    _tritonserver()
    server = Served("--max-batch", "8", "--queue-delay-us", "20000")
    yield server
    # A clean stop on SIGTERM: exit 0, and the temporary repository is gone.
    code = server.stop(signal.SIGTERM)
    out = server.proc.stdout.read()
    assert code == 0, server.proc.stderr.read()
    assert "serving fcn8s_efficientnet_lite0" in out


def test_four_concurrent_clients_get_the_local_labels_and_triton_batches_them(served):
    local = open_backend(bundled_onnx("camvid"), threads=1)
    frames = {k: scene_frames(3, 72, 96, seed=k) for k in range(4)}
    expected = {k: local.infer_labels(f) for k, f in frames.items()}
    local.close()
    got: Dict[int, List[np.ndarray]] = {}
    errors: List[BaseException] = []
    barrier = threading.Barrier(4)

    def client(k: int) -> None:
        try:
            with open_backend(served.url()) as backend:
                barrier.wait()
                got[k] = [backend.infer_labels(frames[k][i:i + 1])[0] for i in range(3)]
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for k in range(4):
        assert np.array_equal(np.stack(got[k]), expected[k]), f"client {k}"

    stats = tritonclient_http.InferenceServerClient(f"127.0.0.1:{served.http}").get_inference_statistics("camvid")
    batches = {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats["model_stats"][0]["batch_stats"]}
    assert sum(size * count for size, count in batches.items()) >= 12
    assert max(batches) > 1, batches  # the dynamic batcher merged the clients' frames


def test_metadata_grpc_and_metrics(served):
    with open_backend(served.url(grpc=True)) as backend:
        assert backend.metadata.classes[0] == "Sky" and len(backend.metadata.palette) == 11
        assert backend.metadata.dataset == "camvid"
        frames = scene_frames(2, 40, 56, seed=9)
        with open_backend(bundled_onnx("camvid"), threads=1) as local:
            assert np.array_equal(backend.infer_labels(frames), local.infer_labels(frames))
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{served.metrics}/metrics", timeout=5) as r:
        text = r.read().decode()
    assert 'nv_inference_request_success{model="camvid"' in text


def test_model_not_ready_and_unreachable_server_are_one_line(served):
    with pytest.raises(BackendError, match=r"model 'nosuch' is not ready .*ready models: camvid"):
        open_backend(served.url("nosuch"))
    (port,) = free_ports(1)
    with pytest.raises(BackendError, match=f"cannot reach the Triton server at 127.0.0.1:{port}"):
        open_backend(f"triton://127.0.0.1:{port}/camvid")
    result = run_cli(["eval", "--model", f"triton://127.0.0.1:{port}/camvid", "--dataset", "synthetic"])
    assert_one_line_error(result, "cannot reach the Triton server")


def _camvid(root: Path) -> Path:
    """Three CamVid-layout test frames (RGB PNGs, index PNGs with 11 = ignore)."""
    (root / "test").mkdir(parents=True)
    (root / "testannot").mkdir()
    for i in range(3):
        frame = scene_frames(1, 60, 80, seed=20 + i)[0]
        label = np.random.default_rng(i).integers(0, 12, (60, 80), dtype=np.uint8)
        cv2.imwrite(str(root / "test" / f"Seq05VD_f{i:05d}.png"), frame)
        cv2.imwrite(str(root / "testannot" / f"Seq05VD_f{i:05d}.png"), label)
    return root


def test_eval_through_triton_scores_like_the_local_model(served, tmp_path, capsys):
    root = _camvid(tmp_path / "CamVid")
    scores = {}
    for model in ("camvid", served.url()):
        assert main(["eval", "--model", model, "--dataset", "camvid", "--root", str(root), "--json",
                     "--threads", "1"]) == 0
        scores[model] = json.loads(capsys.readouterr().out)
    local, remote = scores["camvid"], scores[served.url()]
    assert remote["mean_iu"] == local["mean_iu"] and remote["per_class_iu"] == local["per_class_iu"]
    assert "Triton" in remote["runs_on"]


def _group_alive(group: int) -> bool:
    """Whether a live (not zombie) process of process group ``group`` exists."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            return True
    return False


def test_server_dying_mid_run_is_one_line_and_keeps_the_labels_written(tmp_path):
    _tritonserver()
    server = Served("--max-batch", "4")
    images = tmp_path / "frames"
    images.mkdir()
    for i, frame in enumerate(scene_frames(40, 48, 64, seed=5)):
        cv2.imwrite(str(images / f"f{i:03d}.png"), frame)
    labels = tmp_path / "labels"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.Popen(
        [sys.executable, "-m", "fcn_deploy.cli", "run", "--model", server.url(), "--source", str(images),
         "--labels-dir", str(labels), "--output", "none", "--loop", "--input-size", "native"],
        cwd=str(REPO), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(labels.glob("*.png"))) < 5:
            time.sleep(0.1)
        assert len(list(labels.glob("*.png"))) >= 5, run.stderr.read() if run.poll() is not None else "no labels"
        server.server_group = os.getpgid(server.server_pid())  # tritonserver leads its own group
        os.kill(server.server_pid(), signal.SIGKILL)  # the Triton process dies under load
        out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
        code = server.stop()
    group, deadline = server.server_group, time.monotonic() + 15
    while _group_alive(group) and time.monotonic() < deadline:  # SIGKILLed stubs take a moment to go
        time.sleep(0.2)
    assert not _group_alive(group), "Triton's backend stub outlived the killed server"
    result = subprocess.CompletedProcess(run.args, run.returncode, out, err)
    assert_one_line_error(result, "lost the Triton server")
    written = sorted(labels.glob("*.png"))
    assert len(written) >= 5 and all(cv2.imread(str(p), cv2.IMREAD_UNCHANGED) is not None for p in written)
    # and `serve` says its server stopped by itself, in one line
    assert code == 1 and "Triton stopped by itself" in server.proc.stderr.read()


def test_latency_concurrency_sweep_against_local_onnx_runtime(served, tmp_path, capsys):
    from benchmarks import latency

    out = tmp_path / "sweep.json"
    assert latency.main(["--model", served.url(), "--concurrency", "1,2", "--seconds", "0.3", "--warmup", "1",
                         "--sizes", "36x48", "--threads", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = {(r["backend"], r["clients"]): r for r in report["records"]}
    assert set(rows) == {("triton", 1), ("triton", 2), ("ort-cpu", 1), ("ort-cpu", 2)}
    for row in rows.values():
        assert row["fps"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"] and row["iters"] >= 1
    assert "frames/s" in capsys.readouterr().out
    (port,) = free_ports(1)
    assert latency.main(["--model", f"triton://127.0.0.1:{port}/camvid", "--seconds", "0.1"]) == 1
    assert "cannot reach the Triton server" in capsys.readouterr().err


def test_compare_a_served_model_with_its_pytorch_checkpoint(served, capsys):
    pytest.importorskip("torch", reason="compare runs the PyTorch checkpoint")
    assert main(["compare", served.url(), "--sizes", "36x48"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"A: {served.url()}") and "PASSED (1/1 sizes)" in out


def test_serve_refuses_a_port_in_use_in_one_line(served):
    result = run_cli(["serve", "--http-port", str(served.http), "--grpc-port", str(served.grpc + 1000),
                      "--metrics-port", str(served.metrics + 1000)])
    assert_one_line_error(result, f"--http-port {served.http} is in use")
