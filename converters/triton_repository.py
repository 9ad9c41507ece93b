"""A Triton Inference Server model repository for an exported model: ``config.pbtxt`` and the files.

Triton serves a folder of models, ``REPO/NAME/config.pbtxt`` plus ``REPO/NAME/1/<model file>``.
Hand-written configs are where deployments go wrong (a batch dimension counted twice, uint8
frames declared as FP32, a missing ``dynamic_batching``), so the config is written from the
model's own metadata here, once, for every way this project hosts a model:

* ``platform: "onnxruntime_onnx"`` with ``model.onnx``: what ``fcn-deploy export --triton``
  writes for Triton's ONNX Runtime backend (the NGC container, KServe's Triton runtime), with
  ONNX Runtime's TensorRT accelerator at the precision the metadata records;
* ``platform: "tensorrt_plan"`` with one plan per GPU compute capability
  (``cc_model_filenames``), from engines ``fcn-deploy build`` made (their sidecars name the GPU);
* ``backend: "python"``: what ``fcn-deploy serve`` hosts with the pip-installable Triton, whose
  only backend is the Python one (our own backends run the model inside it).

Batching: the graphs take ``N x ...``; Triton's ``dims`` leave the batch dimension out when
``max_batch_size > 0``, so the frames are ``[-1, -1, 3]`` (H, W, BGR) uint8 and the labels
``[-1, -1]`` uint8 (``[C, -1, -1]`` FP32 for a logits graph).

The model's metadata (classes, palette, normalisation, ...) goes into ``parameters``, one
entry per :meth:`ModelMetadata.to_props` key with the same JSON value, so a client
(:mod:`fcn_deploy.runtime.backends.triton`) rebuilds the very same :class:`ModelMetadata`
from the server's model config, and overlays and metrics work unchanged.

Torch-free and protobuf-free: the text is written here by hand; the tests parse it with
Triton's own schema (``tritonclient``'s ``model_config_pb2``).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from fcn_deploy.errors import FcnDeployError
from fcn_deploy.fileio import atomic_write
from fcn_deploy.runtime.backends.triton import metadata_from_parameters  # noqa: F401 (the reading side)
from fcn_deploy.runtime.metadata import ModelMetadata

log = logging.getLogger(__name__)

INPUT_NAME = "input"  # the exporter's input name (converters.onnx_export.INPUT_NAME)
CONFIG_FILE = "config.pbtxt"
VERSION = "1"
ONNX_PLATFORM = "onnxruntime_onnx"
PLAN_PLATFORM = "tensorrt_plan"
PYTHON_BACKEND = "python"
DEFAULT_MAX_BATCH = 8
DEFAULT_QUEUE_DELAY_US = 2000
# Metadata precision -> ONNX Runtime TensorRT accelerator precision_mode in Triton's ORT backend.
_TRT_PRECISION = {"fp32": "FP32", "fp16": "FP16", "int8": "INT8"}
INSTANCE_KINDS = ("KIND_GPU", "KIND_CPU")


@dataclass(frozen=True)
class TritonTensor:
    """One input or output as Triton declares it (dims without the batch dimension)."""

    name: str
    data_type: str
    dims: Tuple[int, ...]


def io_tensors(meta: ModelMetadata) -> Tuple[TritonTensor, TritonTensor]:
    """The graph's input and output, as the exporter writes them, in Triton's terms."""
    if meta.folds_preprocessing:
        inp = TritonTensor(INPUT_NAME, "TYPE_UINT8", (-1, -1, 3))
    else:
        inp = TritonTensor(INPUT_NAME, "TYPE_FP32", (3, -1, -1))
    if meta.folds_argmax:
        out = TritonTensor(meta.output, "TYPE_UINT8", (-1, -1))
    else:
        out = TritonTensor(meta.output, "TYPE_FP32", (meta.num_classes, -1, -1))
    return inp, out


def quote(text: str) -> str:
    """``text`` as a protobuf text-format string literal."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def preferred_batch_sizes(max_batch_size: int) -> List[int]:
    """Half the maximum and the maximum: batches the scheduler should wait a little to fill."""
    return sorted({max(1, max_batch_size // 2), max_batch_size}) if max_batch_size > 1 else []


@dataclass
class TritonModelConfig:
    """What ``config.pbtxt`` says; :meth:`text` writes it.

    Exactly one of ``platform`` (``onnxruntime_onnx``, ``tensorrt_plan``) and ``backend``
    (``python``) is set. ``parameters`` are extra string parameters next to the metadata's.
    """

    name: str
    metadata: ModelMetadata
    platform: Optional[str] = ONNX_PLATFORM
    backend: Optional[str] = None
    max_batch_size: int = DEFAULT_MAX_BATCH
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    instance_kind: str = "KIND_GPU"
    instance_count: int = 1
    tensorrt_accelerator: bool = True
    default_model_filename: Optional[str] = None
    cc_model_filenames: Dict[str, str] = field(default_factory=dict)
    parameters: Dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.platform is None) == (self.backend is None):
            raise FcnDeployError("a Triton model config names a platform or a backend, not both or neither")
        self.check_name(self.name)
        if self.max_batch_size < 1:
            raise FcnDeployError(f"max batch size must be >= 1, not {self.max_batch_size}")
        if self.instance_kind not in INSTANCE_KINDS:
            raise FcnDeployError(f"unknown instance kind {self.instance_kind!r}; expected {' or '.join(INSTANCE_KINDS)}")
        if self.instance_count < 1:
            raise FcnDeployError(f"instance count must be >= 1, not {self.instance_count}")
        if self.queue_delay_us < 0:
            raise FcnDeployError(f"queue delay must be >= 0 microseconds, not {self.queue_delay_us}")
        clash = set(self.parameters) & set(self.metadata.to_props())
        if clash:
            raise FcnDeployError(f"parameters {sorted(clash)} would hide the model's metadata")

    @staticmethod
    def check_name(name: str) -> None:
        """A model name is a folder name in the repository (and part of the URL)."""
        if not name or any(c in name for c in "/\\ :") or name.startswith("."):
            raise FcnDeployError(f"bad Triton model name {name!r}: a plain folder name, e.g. camvid")

    def _accelerator_lines(self) -> List[str]:
        """ONNX Runtime's TensorRT execution provider inside Triton's ORT backend, on GPUs only.

        A u8s8 INT8 graph (for CPUs) is left to ONNX Runtime's CUDA provider: TensorRT refuses it.
        """
        meta = self.metadata
        if not (self.tensorrt_accelerator and self.platform == ONNX_PLATFORM and self.instance_kind == "KIND_GPU"):
            return []
        if meta.int8_scheme == "u8s8":
            return ["# no TensorRT accelerator: a u8s8 INT8 graph is for ONNX Runtime on CPUs; TensorRT refuses it"]
        return [
            "optimization {",
            "  execution_accelerators {",
            "    gpu_execution_accelerator: [",
            "      {",
            '        name: "tensorrt"',
            f'        parameters {{ key: "precision_mode" value: "{_TRT_PRECISION[meta.precision]}" }}',
            '        parameters { key: "max_workspace_size_bytes" value: "1073741824" }',
            "      }",
            "    ]",
            "  }",
            "}",
        ]

    def text(self) -> str:
        meta = self.metadata
        inp, out = io_tensors(meta)
        lines = [
            f"# {meta.model_name} ({meta.precision}), written by fcn-deploy from the model's metadata",
            f"name: {quote(self.name)}",
            f"platform: {quote(self.platform)}" if self.platform else f"backend: {quote(self.backend)}",
            f"max_batch_size: {self.max_batch_size}",
        ]
        if self.default_model_filename:
            lines.append(f"default_model_filename: {quote(self.default_model_filename)}")
        for cc, filename in sorted(self.cc_model_filenames.items()):
            lines.append(f"cc_model_filenames {{ key: {quote(cc)} value: {quote(filename)} }}")
        for section, tensor in (("input", inp), ("output", out)):
            dims = ", ".join(str(d) for d in tensor.dims)
            lines.append(f"{section} [ {{ name: {quote(tensor.name)} data_type: {tensor.data_type} dims: [ {dims} ] }} ]")
        preferred = preferred_batch_sizes(self.max_batch_size)
        lines.append("dynamic_batching {")
        if preferred:
            lines.append(f"  preferred_batch_size: [ {', '.join(str(p) for p in preferred)} ]")
        lines.append(f"  max_queue_delay_microseconds: {self.queue_delay_us}")
        lines.append("}")
        lines.append(f"instance_group [ {{ count: {self.instance_count} kind: {self.instance_kind} }} ]")
        lines.extend(self._accelerator_lines())
        params = dict(meta.to_props())
        params.update(self.parameters)
        for key in sorted(params):
            lines.append(f"parameters {{ key: {quote(key)} value: {{ string_value: {quote(params[key])} }} }}")
        return "\n".join(lines) + "\n"


# -- writing a repository -------------------------------------------------------------------------
def model_dir(repo: "str | os.PathLike[str]", name: str) -> str:
    return os.path.join(os.fspath(repo), name)


def check_free(repo: "str | os.PathLike[str]", name: str, overwrite: bool = False) -> str:
    """``REPO/NAME`` as a path, refusing to replace a model already there unless ``overwrite``."""
    folder = model_dir(repo, name)
    if os.path.exists(os.path.join(folder, CONFIG_FILE)) and not overwrite:
        raise FcnDeployError(f"{folder} already holds a Triton model; pass --overwrite to replace it, or choose --name")
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise FcnDeployError(f"{folder} exists and is not a folder")
    return folder


@dataclass
class Repository:
    """What :func:`write_onnx_model` or :func:`write_plan_model` wrote."""

    folder: str
    config_path: str
    model_files: List[str]
    config: TritonModelConfig


def _copy_into(src: str, dst: str) -> None:
    """Copy ``src`` to ``dst`` through a temporary file beside it (a unique, locked name that a
    killed run's clean-up recognises; not a fixed ``dst.tmp`` two exports would share)."""
    if os.path.abspath(src) == os.path.abspath(dst):
        return
    with open(src, "rb") as source:
        atomic_write(dst, lambda out: shutil.copyfileobj(source, out, 1 << 20))


def write_onnx_model(
    onnx_path: "str | os.PathLike[str]",
    repo: "str | os.PathLike[str]",
    name: str,
    *,
    max_batch_size: int = DEFAULT_MAX_BATCH,
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
    instance_kind: str = "KIND_GPU",
    instance_count: int = 1,
    overwrite: bool = False,
) -> Repository:
    """``REPO/NAME/config.pbtxt`` and ``REPO/NAME/1/model.onnx`` for Triton's ONNX Runtime backend.

    ``onnx_path`` is a fcn-deploy export (its metadata says the I/O); it is copied in, unless
    it already is ``REPO/NAME/1/model.onnx``. The config is written last, atomically, so a
    half-written repository is never one Triton would load.
    """
    from fcn_deploy.runtime.model_files import read_metadata

    onnx_path = os.fspath(onnx_path)
    meta = read_metadata(onnx_path)
    folder = check_free(repo, name, overwrite)
    config = TritonModelConfig(name, meta, platform=ONNX_PLATFORM, max_batch_size=max_batch_size,
                               queue_delay_us=queue_delay_us, instance_kind=instance_kind,
                               instance_count=instance_count)
    target = os.path.join(folder, VERSION, "model.onnx")
    _copy_into(onnx_path, target)
    config_path = os.path.join(folder, CONFIG_FILE)
    atomic_write(config_path, config.text())
    return Repository(folder, config_path, [target], config)


def plan_filename(compute_capability: str) -> str:
    return f"model_sm{compute_capability.replace('.', '')}.plan"


def write_plan_model(
    engines: Sequence["str | os.PathLike[str]"],
    repo: "str | os.PathLike[str]",
    name: str,
    *,
    max_batch_size: Optional[int] = None,
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
    instance_count: int = 1,
    overwrite: bool = False,
) -> Repository:
    """A ``tensorrt_plan`` model from engines ``fcn-deploy build`` made, one per GPU kind.

    Each engine's sidecar names its compute capability; Triton picks the plan for the GPU it
    runs on through ``cc_model_filenames``. The engines must be builds of one model (the same
    metadata); ``max_batch_size`` defaults to the smallest profile maximum of the engines.
    """
    from fcn_deploy.runtime.engine_cache import read_sidecar

    if not engines:
        raise FcnDeployError("no TensorRT engine given for the tensorrt_plan model")
    by_cc: Dict[str, str] = {}
    meta: Optional[ModelMetadata] = None
    batch_limits: List[int] = []
    for engine in map(os.fspath, engines):
        if not os.path.isfile(engine):
            raise FcnDeployError(f"engine not found: {engine}")
        sidecar = read_sidecar(engine)
        if not sidecar.metadata:
            raise FcnDeployError(f"{engine}: its sidecar carries no fcn-deploy model metadata")
        this = ModelMetadata.from_dict(sidecar.metadata, engine)
        if meta is not None and (this.model_name, this.classes, this.output) != (meta.model_name, meta.classes, meta.output):
            raise FcnDeployError(f"{engine} is a build of another model than {engines[0]}")
        meta = meta or this
        cc = sidecar.compute_capability
        if cc in by_cc:
            raise FcnDeployError(f"{engine} and {by_cc[cc]} are both for compute capability {cc}; give one per GPU kind")
        by_cc[cc] = engine
        for profile in sidecar.profiles:
            for shapes in (profile.values() if isinstance(profile, Mapping) else []):
                try:
                    batch_limits.append(int(shapes["max"][0]))
                except (KeyError, TypeError, ValueError, IndexError):
                    pass
    batch = max_batch_size or (min(batch_limits) if batch_limits else 1)
    folder = check_free(repo, name, overwrite)
    filenames = {cc: plan_filename(cc) for cc in by_cc}
    config = TritonModelConfig(name, meta, platform=PLAN_PLATFORM, max_batch_size=batch, queue_delay_us=queue_delay_us,
                               instance_count=instance_count, cc_model_filenames=filenames,
                               default_model_filename=filenames[sorted(filenames)[-1]])
    files = []
    for cc, engine in by_cc.items():
        target = os.path.join(folder, VERSION, filenames[cc])
        _copy_into(engine, target)
        files.append(target)
    config_path = os.path.join(folder, CONFIG_FILE)
    atomic_write(config_path, config.text())
    return Repository(folder, config_path, files, config)


def ngc_command(repo: str, tag: str = "24.10-py3") -> str:
    """The NGC container command that serves ``repo`` (printed by ``export --triton``)."""
    return (f"docker run --gpus all --rm -p 8000:8000 -p 8001:8001 -p 8002:8002 "
            f"-v {os.path.abspath(repo)}:/models nvcr.io/nvidia/tritonserver:{tag} "
            "tritonserver --model-repository=/models")
