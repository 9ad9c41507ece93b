"""ONNX Runtime backend: the portable route, on the CPU, CUDA or TensorRT execution provider.

ONNX Runtime quietly runs a session on the CPU when a requested GPU provider cannot load
(onnxruntime-gpu without its CUDA libraries, or the CPU wheel installed instead): the user
then measures CPU speed believing it is the GPU's. Here a requested provider that is not
available is an error, checked both before the session is created and, in
``session.get_providers()``, after.
"""
from __future__ import annotations

import logging
import os
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

from ..metadata import (
    LAYOUT_NORMALIZED,
    LAYOUT_RAW_BGR,
    ModelMetadata,
    has_fcn_deploy_metadata,
)
from .base import Backend, BackendError, TensorSpec, check_array

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"

# device -> the providers to request, in priority order. The CPU provider stays last on GPU
# devices because ONNX Runtime places the few nodes a GPU provider does not take there; that
# is partitioning, not a fallback of the whole model.
DEVICE_PROVIDERS: Dict[str, Tuple[str, ...]] = {
    "cpu": (CPU,),
    "cuda": (CUDA, CPU),
    "tensorrt": (TENSORRT, CUDA, CPU),
}

# ONNX tensor type strings -> numpy dtype names.
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
}

ProfileShape = Tuple[int, int, int]


def _import_ort():
    try:
        import onnxruntime
    except ImportError:
        raise BackendError(
            "onnxruntime is not installed: pip install 'fcn-deploy[cpu]' (or 'fcn-deploy[gpu]' for "
            "onnxruntime-gpu; never both)"
        ) from None
    return onnxruntime


def parse_device(device: str) -> Tuple[str, int]:
    """``"cuda:1"`` -> ``("cuda", 1)``; ``"cpu"`` -> ``("cpu", 0)``."""
    kind, _, index = device.strip().lower().partition(":")
    if kind not in DEVICE_PROVIDERS:
        raise BackendError(f"unknown device {device!r}; expected one of {', '.join(DEVICE_PROVIDERS)} (optionally :INDEX)")
    if index and not index.isdigit():
        raise BackendError(f"bad device index in {device!r}")
    return kind, int(index or 0)


def _spec(node) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) or d is None else str(d) for d in node.shape)
    dtype = _ORT_TYPES.get(node.type)
    if dtype is None:
        raise BackendError(f"graph tensor {node.name} has unsupported type {node.type}")
    return TensorSpec(node.name, shape, dtype)


def _profile_text(name: str, layout: str, shape: ProfileShape) -> str:
    n, h, w = (int(v) for v in shape)
    dims = (n, h, w, 3) if layout == LAYOUT_RAW_BGR else (n, 3, h, w)
    return f"{name}:" + "x".join(str(d) for d in dims)


def tensorrt_options(
    device_id: int,
    input_name: str,
    layout: str,
    *,
    fp16: bool = False,
    engine_cache_dir: Optional[str] = None,
    timing_cache_dir: Optional[str] = None,
    profile_shapes: Optional[Mapping[str, ProfileShape]] = None,
    workspace_gb: Optional[float] = None,
) -> Dict[str, str]:
    """Provider options of ONNX Runtime's TensorRT execution provider.

    ``profile_shapes`` gives ``(N, H, W)`` for ``min``, ``opt`` and ``max``; they are written
    in the graph input's own layout (``N x H x W x 3`` for raw frames, ``N x 3 x H x W``
    otherwise). Without them TensorRT builds for the shapes it first sees and rebuilds when
    a larger one arrives.
    """
    opts = {"device_id": str(device_id), "trt_fp16_enable": "True" if fp16 else "False"}
    if engine_cache_dir:
        opts["trt_engine_cache_enable"] = "True"
        opts["trt_engine_cache_path"] = str(engine_cache_dir)
    if timing_cache_dir:
        opts["trt_timing_cache_enable"] = "True"
        opts["trt_timing_cache_path"] = str(timing_cache_dir)
    if workspace_gb:
        opts["trt_max_workspace_size"] = str(int(workspace_gb * (1 << 30)))
    if profile_shapes:
        missing = {"min", "opt", "max"} - set(profile_shapes)
        if missing:
            raise BackendError(f"profile_shapes needs min, opt and max; missing {', '.join(sorted(missing))}")
        for key in ("min", "opt", "max"):
            opts[f"trt_profile_{key}_shapes"] = _profile_text(input_name, layout, profile_shapes[key])
    return opts


class OnnxRuntimeBackend(Backend):
    """An ONNX file in an ONNX Runtime session.

    Options:
      ``threads``: intra-op threads (``None``: ONNX Runtime's default, one per core);
      ``spinning``: let idle intra-op threads spin-wait for work (ONNX Runtime's default). Spinning
      shaves a little latency on an idle machine but burns the cores that decoding and rendering
      need on a small edge CPU, so the video pipeline turns it off;
      ``require_metadata``: refuse graphs not exported by fcn-deploy (default ``True``);
      TensorRT provider only: ``fp16`` (let TensorRT pick FP16 kernels for an FP32 graph),
      ``engine_cache_dir`` (reuse built engines across runs), ``timing_cache_dir``,
      ``profile_shapes`` (``{"min": (N, H, W), "opt": ..., "max": ...}``, input sizes for the
      optimisation profile; the layout follows the graph's input), ``workspace_gb``.
    """

    def __init__(
        self,
        path: str,
        device: str = "cpu",
        *,
        threads: Optional[int] = None,
        spinning: bool = True,
        require_metadata: bool = True,
        fp16: bool = False,
        engine_cache_dir: Optional[str] = None,
        timing_cache_dir: Optional[str] = None,
        profile_shapes: Optional[Mapping[str, ProfileShape]] = None,
        workspace_gb: Optional[float] = None,
    ) -> None:
        ort = _import_ort()
        self.session = None
        self.path = str(path)
        self.device, device_id = parse_device(device)
        self.profile_shapes = dict(profile_shapes) if profile_shapes else None  # input_size keeps frames inside it
        if not os.path.isfile(self.path):
            raise BackendError(f"model file not found: {self.path}")
        trt_only = {"fp16": fp16, "engine_cache_dir": engine_cache_dir, "timing_cache_dir": timing_cache_dir,
                    "profile_shapes": profile_shapes, "workspace_gb": workspace_gb}
        given = [k for k, v in trt_only.items() if v]
        if given and self.device != "tensorrt":
            raise BackendError(f"{', '.join(given)}: options of the TensorRT provider; use device 'tensorrt'")
        wanted = DEVICE_PROVIDERS[self.device]
        available = ort.get_available_providers()
        missing = [p for p in wanted if p not in available]
        if missing:
            raise BackendError(
                f"device {self.device!r} needs {missing[0]}, which this onnxruntime "
                f"({ort.__version__}, providers: {', '.join(available)}) does not have; install "
                "onnxruntime-gpu (not together with onnxruntime) or choose --device cpu"
            )
        options = ort.SessionOptions()
        if threads is not None:
            if threads < 1:
                raise BackendError(f"threads must be >= 1, not {threads}")
            options.intra_op_num_threads = int(threads)
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only; our own messages say what went wrong

        provider_options: List[Dict[str, str]] = []
        for provider in wanted:
            if provider == TENSORRT:
                name, layout = self._peek_input() if profile_shapes else ("input", LAYOUT_RAW_BGR)
                for folder in (engine_cache_dir, timing_cache_dir):
                    if folder:
                        os.makedirs(folder, exist_ok=True)
                provider_options.append(
                    tensorrt_options(
                        device_id, name, layout, fp16=fp16, engine_cache_dir=engine_cache_dir,
                        timing_cache_dir=timing_cache_dir, profile_shapes=profile_shapes, workspace_gb=workspace_gb,
                    )
                )
            elif provider == CUDA:
                provider_options.append({"device_id": str(device_id)})
            else:
                provider_options.append({})
        try:
            self.session = ort.InferenceSession(
                self.path, sess_options=options, providers=list(wanted), provider_options=provider_options
            )
        except Exception as exc:  # ORT raises InvalidProtobuf, Fail, InvalidGraph, RuntimeException ...
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BackendError(f"cannot load ONNX model {self.path}: {first}") from None
        self.providers = list(self.session.get_providers())
        if wanted[0] not in self.providers:
            self.close()
            raise BackendError(
                f"ONNX Runtime could not start {wanted[0]} for {self.path} (session runs on "
                f"{', '.join(self.providers)}); check the CUDA/TensorRT libraries"
            )

        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise BackendError(
                f"{self.path} has {len(inputs)} inputs and {len(outputs)} outputs; a segmentation "
                "model has one of each"
            )
        self.input_spec = _spec(inputs[0])
        self.output_spec = _spec(outputs[0])
        props = self.session.get_modelmeta().custom_metadata_map
        if has_fcn_deploy_metadata(props):
            self.metadata: Optional[ModelMetadata] = ModelMetadata.from_props(props, self.path)
            self._check_layout()
            if self.device == "tensorrt" and self.metadata.int8_scheme not in (None, "s8s8"):
                self.close()
                raise BackendError(
                    f"{self.path} is a {self.metadata.int8_scheme} INT8 graph for ONNX Runtime on CPUs; TensorRT needs the "
                    "symmetric one (fcn-deploy export --int8)"
                )
        elif require_metadata:
            raise BackendError(
                f"{self.path} carries no fcn-deploy metadata; export it with `fcn-deploy export`"
            )
        else:
            self.metadata = None
        log.debug("opened %s on %s", self.path, ", ".join(self.providers))

    def _peek_input(self) -> Tuple[str, str]:
        """The graph input's name and layout, read with a CPU session before the TensorRT one."""
        ort = _import_ort()
        try:
            sess = ort.InferenceSession(self.path, providers=[CPU])
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BackendError(f"cannot load ONNX model {self.path}: {first}") from None
        node = sess.get_inputs()[0]
        layout = LAYOUT_RAW_BGR if node.type == "tensor(uint8)" else LAYOUT_NORMALIZED
        return node.name, layout

    def _check_layout(self) -> None:
        """The metadata's input layout and output kind must describe this very graph."""
        meta, spec, out = self.metadata, self.input_spec, self.output_spec
        raw = meta.input_layout == LAYOUT_RAW_BGR
        where = f"{self.path}: graph input {spec.describe()}"
        if spec.rank != 4:
            raise BackendError(f"{where} has rank {spec.rank}; the metadata says {meta.input_layout} (rank 4)")
        channels = spec.shape[3] if raw else spec.shape[1]
        if isinstance(channels, int) and channels != 3:
            raise BackendError(f"{where} has {channels} channels; the metadata says {meta.input_layout} (3 channels)")
        if spec.dtype != ("uint8" if raw else "float32"):
            raise BackendError(f"{where} is {spec.dtype}; the metadata says {meta.input_layout}")
        want_rank, want_dtype = (3, "uint8") if meta.output == "labels" else (4, "float32")
        if out.rank != want_rank or out.dtype != want_dtype:
            raise BackendError(
                f"{self.path}: metadata says output {meta.output} but the graph output is {out.describe()}"
            )

    def run_graph(self, x: np.ndarray) -> np.ndarray:
        if self.session is None:
            raise BackendError(f"{self.path}: backend is closed")
        x = check_array(x, self.input_spec)
        return self.session.run([self.output_spec.name], {self.input_spec.name: x})[0]

    def close(self) -> None:
        self.session = None
