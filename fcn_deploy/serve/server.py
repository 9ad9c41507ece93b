"""A Triton server process hosting one fcn-deploy model: its repository, start, readiness, stop.

The repository is the same ``config.pbtxt`` that ``export --triton`` writes
(:class:`fcn_deploy.converters.triton_repository.TritonModelConfig`: I/O, dynamic batching, the
model's metadata as parameters), with ``backend: "python"`` instead of the ONNX Runtime
platform, because the pip-installable server has only the Python backend; its ``model.py``
(:mod:`fcn_deploy.serve.triton_model`) runs the model with our own backends.

:class:`TritonServer` starts ``tritonserver`` as a child process with its log in the work
folder, waits for ``/v2/health/ready``, and stops it with SIGTERM (Triton's graceful
shutdown: in-flight requests finish), then SIGKILL if it does not stop in time.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import List, Optional

from ..errors import FcnDeployError
from ..runtime.metadata import ModelMetadata
from .install import TritonInstall

log = logging.getLogger(__name__)

MODEL_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "triton_model.py")


@dataclass
class ServeOptions:
    """What ``fcn-deploy serve`` hosts and where."""

    model_path: str
    name: str
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch: int = 8
    queue_delay_us: int = 2000
    instances: int = 1
    device: str = "cpu"
    threads: Optional[int] = None
    host: str = "0.0.0.0"


def write_python_model(repo: str, options: ServeOptions, metadata: ModelMetadata) -> str:
    """``REPO/NAME/config.pbtxt`` (Python backend) and ``REPO/NAME/1/model.py``; returns the config path."""
    from fcn_deploy.converters.triton_repository import CONFIG_FILE, PYTHON_BACKEND, VERSION, TritonModelConfig

    parameters = {"fcn_deploy_model_path": os.path.abspath(options.model_path), "fcn_deploy_device": options.device}
    if options.threads:
        parameters["fcn_deploy_threads"] = str(options.threads)
    config = TritonModelConfig(
        options.name, metadata, platform=None, backend=PYTHON_BACKEND, max_batch_size=options.max_batch,
        queue_delay_us=options.queue_delay_us, instance_count=options.instances,
        instance_kind="KIND_CPU" if options.device == "cpu" else "KIND_GPU", parameters=parameters,
    )
    folder = os.path.join(repo, options.name)
    os.makedirs(os.path.join(folder, VERSION), exist_ok=True)
    shutil.copyfile(MODEL_FILE, os.path.join(folder, VERSION, "model.py"))
    path = os.path.join(folder, CONFIG_FILE)
    with open(path, "w", encoding="utf-8") as f:
        f.write(config.text())
    return path


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _last_error(log_path: str) -> str:
    """The line of Triton's log that says why it stopped (its last error line, else its last line)."""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            lines = [l.strip() for l in f if l.strip()]
    except OSError:
        return "no log"
    errors = [l for l in lines if l.startswith("E") or "error" in l.lower()]
    return (errors or lines or ["empty log"])[-1][:400]


class TritonServer:
    """One ``tritonserver`` process serving ``options``' model; a context manager.

    ``workdir`` holds the repository and ``tritonserver.log``; a temporary one is removed on a
    clean stop and kept (with its log) when the server failed.
    """

    def __init__(self, install: TritonInstall, options: ServeOptions, metadata: ModelMetadata,
                 workdir: Optional[str] = None) -> None:
        for what, port in (("--http-port", options.http_port), ("--grpc-port", options.grpc_port),
                           ("--metrics-port", options.metrics_port)):
            if not 0 < port < 65536:
                raise FcnDeployError(f"{what} {port} is not a port number")
            if port_in_use(port):
                raise FcnDeployError(f"{what} {port} is in use (another server running?); choose another port")
        if len({options.http_port, options.grpc_port, options.metrics_port}) != 3:
            raise FcnDeployError("--http-port, --grpc-port and --metrics-port must differ")
        if options.max_batch < 1:
            raise FcnDeployError(f"--max-batch must be >= 1, not {options.max_batch}")
        if options.instances < 1:
            raise FcnDeployError(f"--instances must be >= 1, not {options.instances}")
        self.install, self.options, self.metadata = install, options, metadata
        self._temporary = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="fcn-deploy-serve-")
        self.repository = os.path.join(self.workdir, "repository")
        self.log_path = os.path.join(self.workdir, "tritonserver.log")
        self.process: Optional[subprocess.Popen] = None
        self._log_file = None

    @property
    def http_url(self) -> str:
        return f"http://localhost:{self.options.http_port}"

    def command(self) -> List[str]:
        o = self.options
        return [
            self.install.binary,
            f"--model-repository={self.repository}",
            f"--backend-directory={self.install.backend_dir()}",
            f"--http-port={o.http_port}", f"--grpc-port={o.grpc_port}", f"--metrics-port={o.metrics_port}",
            f"--http-address={o.host}", f"--grpc-address={o.host}", f"--metrics-address={o.host}",
            "--allow-metrics=true", "--allow-cpu-metrics=true", "--strict-readiness=true", "--exit-on-error=true",
            "--log-verbose=0",
        ]

    def start(self, timeout: float = 120.0) -> None:
        """Write the repository, start the server and wait until the model is ready."""
        os.makedirs(self.repository, exist_ok=True)
        write_python_model(self.repository, self.options, self.metadata)
        command = self.command()
        env = self.install.environment()
        self._log_file = open(self.log_path, "w", encoding="utf-8")
        log.debug("starting %s", " ".join(command))
        self.process = subprocess.Popen(command, stdout=self._log_file, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)  # Ctrl-C reaches us; we stop the server
        self.wait_ready(timeout)

    def ready(self) -> bool:
        url = f"{self.http_url}/v2/models/{self.options.name}/ready"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._failed(f"Triton exited (status {self.process.returncode}) while loading the model: "
                             f"{_last_error(self.log_path)}")
            if self.ready():
                return
            time.sleep(0.25)
        self.stop()
        self._failed(f"the model was not ready after {timeout:.0f} s: {_last_error(self.log_path)}")

    def _failed(self, message: str) -> None:
        self._temporary = False  # keep the log for the user
        raise FcnDeployError(f"{message} (log: {self.log_path})")

    def wait(self) -> int:
        """Block until the server exits; its exit status."""
        return self.process.wait() if self.process is not None else 0

    def stop(self, grace: float = 30.0) -> Optional[int]:
        """SIGTERM (Triton finishes the requests in flight and unloads), SIGKILL after ``grace`` s."""
        process, self.process = self.process, None
        code = None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(grace)
                except subprocess.TimeoutExpired:
                    log.warning("Triton did not stop within %.0f s; killing it", grace)
                    process.kill()
                    process.wait()
            code = process.returncode
            # Triton's Python backend stubs outlive a server that was killed (they are its children,
            # in the process group it leads): end whatever is left of the group.
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._temporary:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return code

    def __enter__(self) -> "TritonServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
