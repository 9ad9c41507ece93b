"""A Triton server process hosting one fcn-deploy model: its repository, start, readiness, stop.

The repository is the same ``config.pbtxt`` that ``export --triton`` writes
(:class:`fcn_deploy.converters.triton_repository.TritonModelConfig`: I/O, dynamic batching, the
model's metadata as parameters), with ``backend: "python"`` instead of the ONNX Runtime
platform, because the pip-installable server has only the Python backend; its ``model.py``
(:mod:`fcn_deploy.serve.triton_model`) runs the model with our own backends, with the settings
``serve.json`` beside it (the model file, the input bounds, this interpreter's ``sys.path``).

Private until opened (docs/security.md): every port on ``host`` (127.0.0.1 by default);
Triton's shared-memory, model-repository, logging and trace APIs closed through its own
restricted-API options unless an admin key is set (:func:`restricted_api_options`); Triton's
HTTP service on a private 127.0.0.1 port behind :class:`~fcn_deploy.serve.gate.TritonGate`,
which takes the public HTTP port and refuses requests outside the model's bounds before
Triton allocates anything for them.

:class:`TritonServer` starts ``tritonserver`` as a child process with its log in the work
folder, waits for the model to be ready, opens the gate, and stops both with SIGTERM
(Triton's graceful shutdown: in-flight requests finish), then SIGKILL if it does not stop in time.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import List, Optional, Tuple

from ..errors import FcnDeployError
from ..fileio import atomic_write
from ..runtime.metadata import ModelMetadata
from .bounds import InputBounds, model_bounds
from .gate import TritonGate
from .install import TritonInstall, python_settings

log = logging.getLogger(__name__)

MODEL_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "triton_model.py")
SETTINGS_FILE = "serve.json"
# Triton's APIs that change the server or reach outside the request: shared-memory regions (any
# POSIX segment the server's user can open), loading models, log settings, tracing to files.
ADMIN_APIS = ("shared-memory", "model-repository", "logging", "trace")
ADMIN_HEADER = "fcn-deploy-admin-key"
ADMIN_KEY_ENV = "FCN_DEPLOY_ADMIN_KEY"
MIN_KEY_LENGTH = 16  # triton_model.SETTINGS_FILE (that module imports nothing of ours at the top)


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
    host: str = "127.0.0.1"
    max_frame: Optional[Tuple[int, int]] = None
    admin_key: Optional[str] = None  # opens ADMIN_APIS to requests carrying it (restricted_api_options)


def write_python_model(repo: str, options: ServeOptions, metadata: ModelMetadata) -> str:
    """``REPO/NAME/config.pbtxt`` (Python backend), ``REPO/NAME/1/model.py`` and its settings
    ``REPO/NAME/1/serve.json``; returns the config path.

    What the model opens and this interpreter's ``sys.path`` go into ``serve.json``, not into
    the config's ``parameters``: every client may read the config (``/v2/models/NAME/config``,
    the triton:// backend's metadata), and the server's file system is none of its business.
    """
    from fcn_deploy.converters.triton_repository import CONFIG_FILE, PYTHON_BACKEND, VERSION, TritonModelConfig

    config = TritonModelConfig(
        options.name, metadata, platform=None, backend=PYTHON_BACKEND, max_batch_size=options.max_batch,
        queue_delay_us=options.queue_delay_us, instance_count=options.instances,
        instance_kind="KIND_CPU" if options.device == "cpu" else "KIND_GPU",
    )
    settings = {
        "model": {"path": os.path.abspath(options.model_path), "device": options.device, "threads": options.threads},
        "bounds": input_bounds(options, metadata).to_dict(),
        "python": python_settings(),
    }
    folder = os.path.join(repo, options.name)
    version = os.path.join(folder, VERSION)
    os.makedirs(version, exist_ok=True)
    with open(MODEL_FILE, "rb") as f:
        atomic_write(os.path.join(version, "model.py"), f.read())
    atomic_write(os.path.join(version, SETTINGS_FILE), json.dumps(settings, indent=1))
    path = os.path.join(folder, CONFIG_FILE)
    atomic_write(path, config.text())
    return path


def input_bounds(options: ServeOptions, metadata: ModelMetadata) -> InputBounds:
    """The largest request the served model takes (:mod:`fcn_deploy.serve.bounds`)."""
    return model_bounds(options.model_path, metadata, options.max_batch, options.max_frame)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port() -> int:
    """A port nothing listens on now, on 127.0.0.1 (for Triton's private HTTP service)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_admin_key(key: str) -> str:
    """``key`` if it can guard the admin APIs: 16 to 256 printable ASCII characters, no spaces
    (it travels as an HTTP header value and as gRPC metadata)."""
    if not MIN_KEY_LENGTH <= len(key) <= 256 or not all("!" <= c <= "~" for c in key):
        raise FcnDeployError(f"${ADMIN_KEY_ENV} must be {MIN_KEY_LENGTH} to 256 printable ASCII characters without "
                             "spaces (e.g. the output of: python3 -c 'import secrets; print(secrets.token_urlsafe(24))')")
    return key


def restricted_api_options(admin_key: Optional[str]) -> List[str]:
    """Triton's own restricted-API options for :data:`ADMIN_APIS`, on HTTP and gRPC.

    With a key, a request to those APIs must carry the header (gRPC: metadata)
    ``fcn-deploy-admin-key: KEY``; Triton answers 403 (PERMISSION_DENIED) otherwise. Without
    one they are closed: the value Triton expects then holds a line feed, which no HTTP header
    and no gRPC metadata value can carry, so not even a process that reads Triton's command
    line can send it.
    """
    value = admin_key if admin_key is not None else "closed\n" + secrets.token_hex(16)
    apis = ",".join(ADMIN_APIS)
    return [f"--http-restricted-api={apis}:{ADMIN_HEADER}={value}",
            f"--grpc-restricted-protocol={apis}:{ADMIN_HEADER}={value}"]


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
        self.gate: Optional[TritonGate] = None
        self.triton_http_port = free_port()  # Triton's own HTTP service, behind the gate
        self._log_file = None

    @property
    def http_url(self) -> str:
        """Triton's private HTTP service (the public port is the gate's)."""
        return f"http://127.0.0.1:{self.triton_http_port}"

    def command(self) -> List[str]:
        o = self.options
        return [
            self.install.binary,
            f"--model-repository={self.repository}",
            f"--backend-directory={self.install.backend_dir()}",
            "--http-address=127.0.0.1", f"--http-port={self.triton_http_port}",
            f"--grpc-address={o.host}", f"--grpc-port={o.grpc_port}",
            f"--metrics-address={o.host}", f"--metrics-port={o.metrics_port}",
            "--allow-metrics=true", "--allow-cpu-metrics=true", "--strict-readiness=true", "--exit-on-error=true",
            "--log-verbose=0",
            *restricted_api_options(o.admin_key),
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
        o = self.options
        try:
            self.gate = TritonGate(o.host, o.http_port, self.triton_http_port, input_bounds(o, self.metadata),
                                   self.metadata.input_layout)
        except OSError as exc:
            self.stop()
            self._failed(f"cannot listen on {o.host}:{o.http_port}: {exc.strerror or exc}")
        self.gate.start()

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
        if self.gate is not None:
            self.gate.stop()
            self.gate = None
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
