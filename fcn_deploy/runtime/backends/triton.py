"""A model served by Triton Inference Server, behind the same :class:`~.base.Backend` interface.

``triton://HOST:PORT/NAME`` talks HTTP (Triton's port 8000 by default), ``triton+grpc://HOST:PORT/NAME``
gRPC (port 8001); ``/NAME/VERSION`` pins a version. Many edge boxes can then share GPU servers
whose dynamic batcher merges their frames, while ``run``, ``eval`` and the benchmarks stay the same.

The model's metadata (classes, palette, normalisation, training scale) comes from the server's
model config ``parameters``, which :mod:`fcn_deploy.converters.triton_repository` writes there from the
exported file's own metadata, so overlays, metrics and the input-size rule work unchanged.

Failures are one line each (:class:`~.base.BackendError`): a server that cannot be reached, a
model that is not ready (with the models that are), a server that stops answering mid-run.

``tritonclient`` is imported only here, when such a URL is opened (``pip install 'fcn-deploy[serve]'``).
Its HTTP client is not thread-safe, so every thread gets its own client; ``in_flight > 1``
keeps that many requests on the wire at once, from a small thread pool.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from ...errors import FcnDeployError, first_line
from ..metadata import ModelMetadata
from .base import Backend, BackendError, TensorSpec, check_array

log = logging.getLogger(__name__)

# URL scheme -> protocol, default port.
SCHEMES: Dict[str, Tuple[str, int]] = {
    "triton": ("http", 8000),
    "triton+http": ("http", 8000),
    "triton+grpc": ("grpc", 8001),
}
# Triton data types <-> numpy dtype names.
_TRITON_TYPES = {"TYPE_UINT8": "uint8", "TYPE_FP32": "float32", "TYPE_FP16": "float16", "TYPE_INT8": "int8",
                 "TYPE_INT32": "int32", "TYPE_INT64": "int64"}
_WIRE_TYPES = {"uint8": "UINT8", "float32": "FP32", "float16": "FP16", "int8": "INT8", "int32": "INT32",
               "int64": "INT64"}
INSTALL_HINT = "pip install 'fcn-deploy[serve]' (tritonclient[http,grpc])"


def is_triton_url(spec: Any) -> bool:
    """True when ``spec`` names a model on a Triton server (``triton://``, ``triton+grpc://``)."""
    text = str(spec)
    return any(text.lower().startswith(scheme + "://") for scheme in SCHEMES)


@dataclass(frozen=True)
class TritonURL:
    """A parsed ``triton[+grpc]://HOST:PORT/NAME[/VERSION]``."""

    protocol: str
    host: str
    port: int
    model: str
    version: str = ""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        scheme = "triton" if self.protocol == "http" else "triton+grpc"
        version = f"/{self.version}" if self.version else ""
        return f"{scheme}://{self.address}/{self.model}{version}"


def parse_triton_url(url: str) -> TritonURL:
    """``triton://localhost:8000/camvid`` -> its parts, or one clear error."""
    scheme, sep, rest = str(url).partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise BackendError(f"{url}: not a Triton URL; expected triton://HOST:PORT/NAME or triton+grpc://HOST:PORT/NAME")
    protocol, default_port = SCHEMES[scheme.lower()]
    address, _, path = rest.partition("/")
    parts = [p for p in path.split("/") if p]
    if not address or not parts or len(parts) > 2:
        raise BackendError(f"{url}: expected {scheme}://HOST:PORT/NAME[/VERSION], e.g. {scheme}://localhost:{default_port}/camvid")
    host, colon, port_text = address.rpartition(":")
    if not colon:
        host, port_text = address, str(default_port)
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise BackendError(f"{url}: bad HOST:PORT {address!r}")
    version = parts[1] if len(parts) == 2 else ""
    if version and not version.isdigit():
        raise BackendError(f"{url}: the model version must be a number, not {version!r}")
    return TritonURL(protocol, host.strip("[]"), int(port_text), parts[0], version)


def metadata_from_parameters(parameters: Mapping[str, Any], where: str) -> ModelMetadata:
    """The :class:`ModelMetadata` a Triton model config's ``parameters`` carry.

    ``fcn_deploy.converters.triton_repository`` writes one parameter per :meth:`ModelMetadata.to_props`
    key, with the same JSON text; ``parameters`` maps key -> string, or key ->
    ``{"string_value": ...}`` as Triton's JSON model config gives them.
    """
    props = {}
    for key, value in parameters.items():
        if isinstance(value, Mapping):
            value = value.get("string_value", "")
        props[str(key)] = str(value)
    return ModelMetadata.from_props(props, where)


def _import_client(protocol: str):
    try:
        if protocol == "grpc":
            import tritonclient.grpc as client
        else:
            import tritonclient.http as client
    except (ImportError, RuntimeError) as exc:  # tritonclient raises RuntimeError for a missing extra
        raise BackendError(f"a triton:// model needs tritonclient ({first_line(exc)}): {INSTALL_HINT}") from None
    return client


def _spec(tensor: Dict[str, Any], batched: bool, where: str) -> TensorSpec:
    dtype = _TRITON_TYPES.get(str(tensor.get("data_type")))
    if dtype is None:
        raise BackendError(f"{where}: tensor {tensor.get('name')} has unsupported type {tensor.get('data_type')}")
    dims = [int(d) for d in tensor.get("dims", [])]
    shape: List[Any] = [d if d > 0 else None for d in dims]
    if batched:
        shape.insert(0, "N")
    return TensorSpec(str(tensor.get("name")), tuple(shape), dtype)


class TritonBackend(Backend):
    """A model on a Triton server, opened from its URL (see the module docstring).

    Options: ``timeout`` (seconds for connecting and for one request, default 30),
    ``in_flight`` (requests on the wire at once through :meth:`submit`, default 1),
    ``require_metadata`` (refuse a model whose config carries no fcn-deploy metadata, default True).
    ``threads`` is accepted as ``None`` only (callers that pass the CLI's ``--threads`` through):
    the server's instances own their threads.
    ``device`` is where the *server* runs the model, which its config decides: only ``remote``
    (or ``cpu``, the CLI's default for files) is accepted here.
    """

    def __init__(self, url: str, device: Optional[str] = "remote", *, timeout: float = 30.0, in_flight: int = 1,
                 require_metadata: bool = True, threads: Optional[int] = None) -> None:
        self._local = threading.local()
        self._clients: List[Any] = []
        self._clients_lock = threading.Lock()
        self._pool: Optional[ThreadPoolExecutor] = None
        self._futures: Dict[int, Future] = {}
        self._next_ticket = 0
        self._closed = False
        self.url = parse_triton_url(url)
        self.path = str(url)
        if device not in (None, "remote", "cpu"):
            raise BackendError(f"{url}: the Triton server decides where the model runs (its instance_group); "
                               f"leave --device out, not {device!r}")
        if threads is not None:
            raise BackendError(f"{url}: the Triton server sets its own threads (fcn-deploy serve --threads); leave "
                               "--threads out")
        if timeout <= 0:
            raise BackendError(f"timeout must be > 0 seconds, not {timeout}")
        if in_flight < 1:
            raise BackendError(f"in_flight must be >= 1, not {in_flight}")
        self.device = "remote"
        self.timeout = float(timeout)
        self._in_flight = int(in_flight)
        self._module = _import_client(self.url.protocol)
        client = self._client()
        name, version = self.url.model, self.url.version
        try:
            live = client.is_server_live()
        except Exception as exc:  # ConnectionRefusedError, socket timeouts, InferenceServerException ...
            self.close()
            raise BackendError(f"cannot reach the Triton server at {self.url.address} ({self.url.protocol}): "
                               f"{first_line(exc)}; is it running (fcn-deploy serve)?") from None
        if not live:
            self.close()
            raise BackendError(f"the Triton server at {self.url.address} answers but is not live")
        try:
            ready = client.is_model_ready(name, version)
        except Exception as exc:
            self.close()
            raise BackendError(f"the Triton server at {self.url.address} failed to say whether model {name!r} is "
                               f"ready: {first_line(exc)}") from None
        if not ready:
            others = self._ready_models(client)
            self.close()
            listing = ", ".join(others) if others else "none"
            raise BackendError(f"model {name!r}{' version ' + version if version else ''} is not ready on the Triton "
                               f"server at {self.url.address} (ready models: {listing})")
        try:
            config = self._config(client)
            server = self._server_metadata(client)
        except Exception as exc:
            self.close()
            raise BackendError(f"cannot read model {name!r}'s config from {self.url.address}: {first_line(exc)}") from None
        self.config = config
        self._set_specs(config)
        self.metadata = self._metadata(config, require_metadata)
        kind = config.get("platform") or config.get("backend") or "?"
        self.providers = [f"Triton {server.get('version', '?')} {kind} at {self.url.address} ({self.url.protocol})"]
        log.debug("opened %s: %s", self.path, self.providers[0])

    # -- opening ----------------------------------------------------------------------------
    def _new_client(self) -> Any:
        try:
            if self.url.protocol == "grpc":
                return self._module.InferenceServerClient(self.url.address)
            return self._module.InferenceServerClient(self.url.address, connection_timeout=self.timeout,
                                                      network_timeout=self.timeout)
        except Exception as exc:
            raise BackendError(f"cannot create a Triton client for {self.url.address}: {first_line(exc)}") from None

    def _client(self) -> Any:
        """This thread's client (tritonclient's HTTP client must not be shared between threads)."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._new_client()
            self._local.client = client
            with self._clients_lock:
                self._clients.append(client)
        return client

    def _ready_models(self, client: Any) -> List[str]:
        """The models the server has ready: its repository index, or, where that API is restricted
        (``fcn-deploy serve`` closes the model-repository API by default), the models it keeps
        statistics for (only loaded ones have them)."""
        grpc = {"as_json": True} if self.url.protocol == "grpc" else {}
        try:
            index = client.get_model_repository_index(**grpc)
        except Exception:
            index = None
        if index is not None:
            if isinstance(index, dict):
                index = index.get("models", [])
            return sorted(str(m.get("name")) for m in index if str(m.get("state", "")).upper() == "READY")
        try:
            stats = client.get_inference_statistics(**grpc)
        except Exception:
            return []
        return sorted({str(m.get("name")) for m in (stats or {}).get("model_stats", []) if m.get("name")})

    def _config(self, client: Any) -> Dict[str, Any]:
        if self.url.protocol == "grpc":
            return client.get_model_config(self.url.model, self.url.version, as_json=True)["config"]
        return client.get_model_config(self.url.model, self.url.version)

    def _server_metadata(self, client: Any) -> Dict[str, Any]:
        if self.url.protocol == "grpc":
            return client.get_server_metadata(as_json=True)
        return client.get_server_metadata()

    def _set_specs(self, config: Dict[str, Any]) -> None:
        inputs, outputs = config.get("input", []), config.get("output", [])
        if len(inputs) != 1 or len(outputs) != 1:
            raise BackendError(f"{self.path} has {len(inputs)} inputs and {len(outputs)} outputs; a segmentation "
                               "model has one of each")
        self.max_batch_size = int(config.get("max_batch_size", 0) or 0)
        batched = self.max_batch_size > 0
        self.input_spec = _spec(inputs[0], batched, self.path)
        self.output_spec = _spec(outputs[0], batched, self.path)
        if not batched:
            raise BackendError(f"{self.path}: the model config has max_batch_size 0; the runtime sends N x H x W x 3 "
                               "batches (export the repository with fcn-deploy export --triton)")

    def _metadata(self, config: Dict[str, Any], require: bool) -> Optional[ModelMetadata]:
        parameters = config.get("parameters") or {}
        try:
            return metadata_from_parameters(parameters, f"{self.path} (model config parameters)")
        except FcnDeployError as exc:
            if require:
                raise BackendError(f"{exc}; write the repository with fcn-deploy export --triton (or serve it with "
                                   "fcn-deploy serve), which puts the model's metadata into its config") from None
            return None

    # -- running ----------------------------------------------------------------------------
    def run_graph(self, x: np.ndarray) -> np.ndarray:
        if self._closed:
            raise BackendError(f"{self.path}: backend is closed")
        x = check_array(x, self.input_spec)
        if self.max_batch_size and x.shape[0] > self.max_batch_size:
            parts = [self._infer(x[i:i + self.max_batch_size]) for i in range(0, x.shape[0], self.max_batch_size)]
            return np.concatenate(parts)
        return self._infer(x)

    def _infer(self, x: np.ndarray) -> np.ndarray:
        client = self._client()
        module = self._module
        request = module.InferInput(self.input_spec.name, list(x.shape), _WIRE_TYPES[str(x.dtype)])
        request.set_data_from_numpy(x)
        wanted = [module.InferRequestedOutput(self.output_spec.name)]
        try:
            if self.url.protocol == "grpc":
                result = client.infer(self.url.model, [request], model_version=self.url.version, outputs=wanted,
                                      client_timeout=self.timeout)
            else:
                result = client.infer(self.url.model, [request], model_version=self.url.version, outputs=wanted)
            output = result.as_numpy(self.output_spec.name)
        except Exception as exc:
            raise BackendError(self._failure(exc)) from None
        if output is None or output.shape[0] != x.shape[0]:
            got = "nothing" if output is None else "x".join(str(d) for d in output.shape)
            raise BackendError(f"{self.path}: the server returned {got} for a batch of {x.shape[0]}")
        return output

    def _failure(self, exc: BaseException) -> str:
        """One line for a request that failed: a server that went away, or one that refused the frame."""
        text = first_line(exc)
        try:
            alive = self._new_client().is_server_live()
        except Exception:
            alive = False
        if not alive:
            return f"lost the Triton server at {self.url.address} during inference ({text}); did it stop?"
        return f"the Triton server at {self.url.address} failed on a frame for model {self.url.model!r}: {text}"

    # -- frames in flight -------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return self._in_flight

    def submit(self, x: np.ndarray) -> int:
        """Send ``x`` and return a ticket for :meth:`result`; above ``in_flight`` 1 it returns at once."""
        if self._in_flight == 1:
            return super().submit(x)
        if self._closed:
            raise BackendError(f"{self.path}: backend is closed")
        x = check_array(x, self.input_spec)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._in_flight, thread_name_prefix="triton-client")
        ticket = self._next_ticket
        self._next_ticket += 1
        self._futures[ticket] = self._pool.submit(self.run_graph, x)
        return ticket

    def result(self, ticket: int) -> np.ndarray:
        if self._in_flight == 1:
            return super().result(ticket)
        future = self._futures.pop(ticket, None)
        if future is None:
            raise BackendError(f"{self.path}: no frame in flight with ticket {ticket}")
        return future.result()

    def close(self) -> None:
        """Wait for requests still on the wire, then close every thread's connection."""
        self._closed = True
        pool, self._pool = getattr(self, "_pool", None), None
        if pool is not None:
            pool.shutdown(wait=True)
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.close()
            except Exception:
                pass
        self._local = threading.local()
