"""A real Triton Inference Server started by `fcn-deploy serve`, used through the triton:// backend.

Needs tritonclient (``pip install 'fcn-deploy[serve]'``) and a tritonserver binary
(``fcn-deploy serve`` fetches NVIDIA's PyTriton wheel with ``pip download --no-deps``; .ci/run
drops it into the cache first); each is skipped with the reason where missing.

`serve` runs as a user starts it: the console script of this interpreter (a venv's, with
fcn-deploy installed editable: found through the install's import hook, never through
PYTHONPATH or the working directory), with its default host and no admin key, so the tests
see the defaults a user gets.
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
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional

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


def serve_command() -> List[str]:
    """How a user starts `fcn-deploy serve` with this interpreter: its console script."""
    script = Path(sys.executable).parent / "fcn-deploy"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "fcn_deploy.cli"]


class Served:
    """`fcn-deploy serve` in a subprocess, ready."""

    def __init__(self, *extra: str, admin_key: Optional[str] = None) -> None:
        self.http, self.grpc, self.metrics = free_ports(3)
        env = {k: v for k, v in os.environ.items() if k != "FCN_DEPLOY_ADMIN_KEY"}
        if admin_key:
            env["FCN_DEPLOY_ADMIN_KEY"] = admin_key
        cwd = "/"  # not the checkout: fcn_deploy must come from the install, as for a user
        self.proc = subprocess.Popen(
            [*serve_command(), "serve", "--http-port", str(self.http), "--grpc-port",
             str(self.grpc), "--metrics-port", str(self.metrics), "--threads", "1", *extra],
            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
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

    def log_path(self) -> Path:
        """Triton's log file (its standard output)."""
        return Path(os.readlink(f"/proc/{self.server_pid()}/fd/1"))

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
    assert "serving fcn8s_efficientnet_lite0" in out and "listening on 127.0.0.1\n" in out
    assert "admin APIs (shared-memory, model-repository, logging, trace) closed" in out


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


def _descendants(pid: int) -> List[int]:
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").iterdir():
            children = [int(c) for c in (task / "children").read_text().split()]
            found.extend(children)
            todo.extend(children)
    return found


def _mapped(pid: int, fragment: str) -> List[str]:
    """The files whose name holds ``fragment`` that process ``pid`` has mapped (its loaded libraries)."""
    lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return sorted({os.path.realpath(l.split()[-1]) for l in lines if fragment in l.split()[-1]})


def test_the_model_runs_on_the_packages_of_the_python_that_started_serve(served):
    # Triton's Python-backend stub starts an isolated interpreter whose sys.path is the base
    # Python's; the model adopts this one's (a venv's, an editable install's). Proof: the stub
    # loaded the very numpy and ONNX Runtime extension modules this process loaded.
    import onnxruntime.capi.onnxruntime_pybind11_state as ort_state

    multiarray = sys.modules.get("numpy._core._multiarray_umath") or sys.modules["numpy.core._multiarray_umath"]
    stubs = [p for p in _descendants(served.server_pid()) if "triton_python_backend_stub" in Path(f"/proc/{p}/cmdline").read_text()]
    assert stubs, "no Python-backend stub running"
    for library in (ort_state.__file__, multiarray.__file__):
        assert _mapped(stubs[0], os.path.basename(library)) == [os.path.realpath(library)]


def _listening(pids: List[int]) -> List[str]:
    """``ADDRESS:PORT`` of every listening TCP socket the processes ``pids`` hold (as ss -ltn shows them)."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            address, port = fields[1].split(":")
            raw = bytes.fromhex(address)
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # little-endian 32-bit words
            found.append(f"{socket.inet_ntop(socket.AF_INET if width == 8 else socket.AF_INET6, words)}:{int(port, 16)}")
    return found


def test_a_default_serve_listens_on_127_0_0_1_only(served):
    listening = _listening([served.proc.pid, served.server_pid()])
    ports = {int(a.rsplit(":", 1)[1]) for a in listening}
    assert {served.http, served.grpc, served.metrics} <= ports, listening
    assert all(a.startswith(("127.0.0.1:", "::ffff:127.0.0.1:")) for a in listening), listening


def _post(port: int, path: str, body: bytes, headers: Optional[Dict[str, str]] = None):
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", path, body=body, headers=dict({"Content-Type": "application/json"}, **(headers or {})))
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


@pytest.fixture
def victim():
    """A POSIX shared-memory segment of another program: 32 bytes of text."""
    name = f"fcn_victim_segment_{os.getpid()}"
    path = Path("/dev/shm") / name
    if not path.parent.is_dir():
        pytest.skip("no /dev/shm here")
    path.write_bytes(b"another program's 32 bytes......")
    yield name, path
    path.unlink()


def test_the_shared_memory_api_is_refused_on_a_default_serve(served, victim):
    name, path = victim
    status, body = _post(served.http, "/v2/systemsharedmemory/region/victim/register",
                         json.dumps({"key": f"/{name}", "offset": 0, "byte_size": 32}).encode())
    assert status == 403 and "restricted" in body
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException, match="restricted"):
        grpcclient.InferenceServerClient(f"127.0.0.1:{served.grpc}").register_system_shared_memory("victim", f"/{name}", 32)
    for admin in ("/v2/logging", "/v2/repository/index", "/v2/trace/setting"):
        assert _post(served.http, admin, b"{}")[0] == 403, admin
    # the inference that would have written labels into the segment finds no region
    request = {"inputs": [{"name": "input", "shape": [1, 4, 4, 3], "datatype": "UINT8", "data": [0] * 48}],
               "outputs": [{"name": "labels", "parameters": {"shared_memory_region": "victim", "shared_memory_byte_size": 16}}]}
    status, body = _post(served.http, "/v2/models/camvid/infer", json.dumps(request).encode())
    assert status in (400, 404) and "victim" in body, body  # Triton: no such region
    assert path.read_bytes() == b"another program's 32 bytes......"


def test_an_oversized_declared_shape_gets_an_error_and_the_server_keeps_serving(served):
    huge = {"inputs": [{"name": "input", "shape": [1, 100000, 100000, 3], "datatype": "UINT8", "data": [1, 2, 3]}]}
    status, body = _post(served.http, "/v2/models/camvid/infer", json.dumps(huge).encode())
    assert status == 400 and "larger than this server takes" in json.loads(body)["error"]
    short = {"inputs": [{"name": "input", "shape": [1, 100, 100, 3], "datatype": "UINT8", "data": [1, 2, 3]}]}
    status, body = _post(served.http, "/v2/models/camvid/infer", json.dumps(short).encode())
    assert status == 400 and "declares 30000 values, 'data' holds 3" in body
    status, body = _post(served.http, "/v2/models/camvid/infer", b"x" * 64, {"Content-Length": str(1 << 40)})
    assert status == 413
    # gRPC, as a hostile client sends it: three bytes for a 30 GB shape. Triton compares sizes itself.
    import grpc as grpc_core
    import tritonclient.grpc as grpcclient
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    request = service_pb2.ModelInferRequest(model_name="camvid")
    declared = request.inputs.add(name="input", datatype="UINT8")
    declared.shape.extend([1, 100000, 100000, 3])
    request.raw_input_contents.append(bytes(3))
    with grpc_core.insecure_channel(f"127.0.0.1:{served.grpc}") as channel:
        with pytest.raises(grpc_core.RpcError, match="byte size mismatch"):
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{served.grpc}")
    # A real frame just over the bound, by both protocols: refused by the model, in one line.
    for url in (served.url(), served.url(grpc=True)):
        with open_backend(url) as backend:
            with pytest.raises(BackendError, match=r"larger than this server takes \(batch <= 8, frame <= 1920x1920"):
                backend.infer_labels(np.zeros((1, 1921, 32, 3), np.uint8))
    assert grpc.is_model_ready("camvid")
    with urllib.request.urlopen(f"http://127.0.0.1:{served.http}/v2/models/camvid/ready", timeout=5) as r:
        assert r.status == 200
    with open_backend(served.url()) as backend:
        assert backend.infer_labels(scene_frames(1, 24, 32, seed=3)).shape == (1, 24, 32)


def test_a_thousand_inferences_leave_the_server_log_small(served):
    log_path = served.log_path()
    before = log_path.stat().st_size
    frame = scene_frames(1, 24, 32, seed=4)
    errors: List[BaseException] = []

    def client() -> None:  # 4 clients x 250: the batcher's preferred batch of 4 goes without its queue delay
        try:
            with open_backend(served.url()) as backend:
                for _ in range(250):
                    backend.infer_labels(frame)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    stats = tritonclient_http.InferenceServerClient(f"127.0.0.1:{served.http}").get_inference_statistics("camvid")
    assert int(stats["model_stats"][0]["inference_count"]) >= 1000
    after = log_path.stat().st_size
    assert after < 100_000, f"{after} bytes"
    assert after - before < 1000, log_path.read_text()[before:before + 2000]  # no line per request


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


ADMIN_KEY = "test-admin-key-0123456789abcdef"


def test_admin_key_opens_the_admin_apis_and_a_server_dying_mid_run_is_one_line(tmp_path):
    _tritonserver()
    server = Served("--max-batch", "4", admin_key=ADMIN_KEY)  # a second server: both checks share its start
    # $FCN_DEPLOY_ADMIN_KEY set: the admin APIs answer requests carrying it, and only those.
    assert "admin APIs (shared-memory, model-repository, logging, trace) open" in _read_banner(server)
    assert _post(server.http, "/v2/logging", b"{}")[0] == 403
    assert _post(server.http, "/v2/logging", b"{}", {"fcn-deploy-admin-key": "wrong-key-0123456789"})[0] == 403
    status, body = _post(server.http, "/v2/logging", b"{}", {"fcn-deploy-admin-key": ADMIN_KEY})
    assert status == 200 and "log_verbose_level" in body
    import tritonclient.grpc as grpcclient

    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc}")
    # gRPC metadata: Triton prefixes the key's name with "triton-grpc-protocol-"
    assert "log_verbose_level" in str(grpc.get_log_settings(headers={"triton-grpc-protocol-fcn-deploy-admin-key": ADMIN_KEY}))
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
        try:  # `serve` notices that its Triton died and exits by itself
            code = server.proc.wait(30)
        except subprocess.TimeoutExpired:
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


def _read_banner(server: Served) -> str:
    """What `serve` printed once ready (up to its "Ctrl-C" line)."""
    lines = []
    while not lines or not lines[-1].startswith("Ctrl-C"):
        line = server.proc.stdout.readline()
        assert line, "serve closed its output"
        lines.append(line)
    return "".join(lines)


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
