"""Which backends and precisions the benchmarks know, and which of them can run here.

Backends: ``pytorch`` (eager, CPU), ``pytorch-cuda`` (fp16 or fp32, channels-last, CUDA
graphs), ``ort-cpu``, ``ort-cuda``, ``ort-tensorrt`` (ONNX Runtime's execution providers),
``openvino``, ``openvino-gpu`` (OpenVINO on the CPU and an Intel GPU) and ``tensorrt`` (the
native TensorRT backend on an engine built from the same ONNX): our graphs, path ``ours``.
``peer-ort-cpu`` and ``peer-openvino`` are path ``peer``: the same checkpoint exported
plainly and quantised by each engine's own tool (:class:`~benchmarks._variants.PeerExports`).
A backend that cannot run here is reported by :func:`unavailable_reason`, and a backend that
cannot run a precision or model by :func:`unsupported_reason`: :func:`runnable` lists both
with the reason, so a report never drops a row silently.

Precisions: ``fp32``, ``fp16`` and ``int8`` are graphs (the exporter's FP32, FP16 and INT8 Q/DQ
files); ``bf16`` is the FP32 graph run in bfloat16 by an engine that can (OpenVINO on a CPU
whose OpenVINO lists BF16, a TensorRT 10 engine built with the BF16 flag), and a skipped row
with the reason elsewhere.

The runners that open these configurations are in :mod:`benchmarks._runners`; this module
imports no engine at import time, so ``--help`` and argument errors stay fast.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from fcn_deploy.errors import FcnDeployError
from fcn_deploy.runtime.metadata import PRECISIONS as GRAPH_PRECISIONS

BACKENDS = ("pytorch", "pytorch-cuda", "ort-cpu", "ort-cuda", "ort-tensorrt", "tensorrt",
            "openvino", "openvino-gpu", "peer-ort-cpu", "peer-openvino")
DEVICE = {
    "pytorch": "cpu",
    "pytorch-cuda": "cuda",
    "ort-cpu": "cpu",
    "ort-cuda": "cuda",
    "ort-tensorrt": "cuda",
    "tensorrt": "cuda",
    "openvino": "cpu",
    "openvino-gpu": "intel-gpu",
    "peer-ort-cpu": "cpu",
    "peer-openvino": "cpu",
}
OPENVINO_DEVICE = {"openvino": "openvino", "openvino-gpu": "openvino:GPU"}
PEER_BACKENDS = ("peer-ort-cpu", "peer-openvino")
# The exported graphs' precisions, then bf16: the FP32 graph in an engine's bfloat16 mode.
PRECISIONS = tuple(GRAPH_PRECISIONS) + ("bf16",)


def graph_precision(precision: str) -> str:
    """The exported graph a precision runs: its own, or FP32's for bf16."""
    return "fp32" if precision == "bf16" else precision


def openvino_bf16_problem(backend: str) -> Optional[str]:
    """Why OpenVINO cannot run bf16 on ``backend``'s device here (its OPTIMIZATION_CAPABILITIES
    lack BF16), or ``None``."""
    from fcn_deploy.runtime.backends.openvino import device_capabilities, precision_problem

    device = "GPU" if backend == "openvino-gpu" else "CPU"
    return precision_problem("bf16", device, device_capabilities(device))


def path_of(backend: str) -> str:
    """``ours`` (our exported graphs), ``peer`` (the plain export and the engines' own INT8) or
    ``eager`` (PyTorch): what a record's numbers stand for."""
    if backend in PEER_BACKENDS:
        return "peer"
    return "eager" if backend.startswith("pytorch") else "ours"


ORT_DEVICE = {"ort-cpu": "cpu", "ort-cuda": "cuda", "ort-tensorrt": "tensorrt"}
_ORT_PROVIDER = {"ort-cpu": "CPUExecutionProvider", "ort-cuda": "CUDAExecutionProvider",
                 "ort-tensorrt": "TensorrtExecutionProvider"}


def _parse_choices(text: str, choices: Tuple[str, ...], what: str) -> List[str]:
    """A comma list of ``choices`` (any case), or ``all``."""
    if text.strip().lower() == "all":
        return list(choices)
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    for name in names:
        if name not in choices:
            raise FcnDeployError(f"unknown {what} {name!r}; choose from {', '.join(choices)} or all")
    return names


def parse_backends(text: str) -> List[str]:
    return _parse_choices(text, BACKENDS, "backend")


def parse_precisions(text: str) -> List[str]:
    return _parse_choices(text, PRECISIONS, "precision")


def _torch_cuda() -> Optional[str]:
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    if not torch.cuda.is_available():
        return f"no CUDA device (torch {torch.__version__}: torch.cuda.is_available() is False)"
    return None


def unavailable_reason(backend: str) -> Optional[str]:
    """Why ``backend`` cannot run on this machine at all, or ``None`` when it can."""
    if backend == "pytorch":
        try:
            import torch  # noqa: F401
        except ImportError:
            return "PyTorch is not installed (pip install torch)"
        return None
    if backend == "pytorch-cuda":
        return _torch_cuda()
    if backend in _ORT_PROVIDER:
        try:
            import onnxruntime as ort
        except ImportError:
            return "onnxruntime is not installed (pip install 'fcn-deploy[cpu]' or '[gpu]')"
        available = ort.get_available_providers()
        if _ORT_PROVIDER[backend] not in available:
            return (f"onnxruntime {ort.__version__} has no {_ORT_PROVIDER[backend]} (providers: "
                    f"{', '.join(available)}); install onnxruntime-gpu")
        return None
    if backend in ("openvino", "openvino-gpu", "peer-openvino"):
        from fcn_deploy.runtime.backends.openvino import import_openvino

        try:
            ov = import_openvino()
        except FcnDeployError:
            return "openvino is not installed (pip install 'fcn-deploy[openvino]')"
        if backend == "openvino-gpu":
            from fcn_deploy.runtime.backends.openvino import shared_core

            devices = shared_core().available_devices
            if not any(d.startswith("GPU") for d in devices):
                return f"OpenVINO {ov.__version__.split('-')[0]} sees no Intel GPU (devices: {', '.join(devices)})"
        return None
    if backend == "peer-ort-cpu":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "onnxruntime is not installed (pip install 'fcn-deploy[cpu]')"
        return None
    if backend == "tensorrt":
        from fcn_deploy.runtime.backends.tensorrt import TensorRTError, import_tensorrt

        try:
            import_tensorrt()
        except TensorRTError as exc:
            return str(exc).split(". ")[0] + "."
        try:
            import fcn_deploy.converters.tensorrt_build  # noqa: F401
        except ImportError as exc:
            return f"the TensorRT engine builder (converters.tensorrt_build) cannot be imported: {exc}"
        return None
    raise FcnDeployError(f"unknown backend {backend!r}")


def unsupported_reason(backend: str, precision: str, source) -> Optional[str]:
    """Why this backend cannot run this model at this precision, or ``None``."""
    if precision == "bf16":
        if backend.startswith("pytorch"):
            return "bf16 is measured in the engines that deploy it (OpenVINO, TensorRT), not in PyTorch"
        if backend.startswith("ort-") or backend == "peer-ort-cpu":
            return "ONNX Runtime has no bf16 mode (it runs the graph's own types)"
        if backend in ("openvino", "openvino-gpu", "peer-openvino"):
            problem = openvino_bf16_problem(backend)
            if problem:
                return problem
    if backend.startswith("pytorch"):
        if not source.has_torch_model:
            return f"--model is an exported {source.kind} file; PyTorch needs a zoo name or checkpoint"
        if precision == "int8":
            return "PyTorch has no INT8 path comparable to the INT8 Q/DQ graph; INT8 runs in ONNX Runtime and TensorRT"
        if backend == "pytorch" and precision == "fp16":
            return "PyTorch eager on the CPU has no fast fp16 kernels; fp16 is measured on CUDA"
        return None
    if backend in PEER_BACKENDS and getattr(source, "imported_from", None):
        # An imported file: the peer path is the ONNX it came from, as the user brought it (FP32).
        return None if precision == "fp32" else f"the peer path of an imported file is its source ONNX, fp32 only"
    if backend in PEER_BACKENDS:
        if not source.has_torch_model:
            return f"--model is an exported {source.kind} file; the peer path exports a zoo name or checkpoint itself"
        if precision == "fp16":
            return "the peer path on a CPU has no fp16 (fp32 and each engine's own INT8)"
        if precision == "int8" and backend == "peer-openvino":
            try:
                import nncf  # noqa: F401
            except ImportError:
                return "OpenVINO's INT8 path needs NNCF (pip install nncf)"
        return None
    if source.kind == "engine" and backend != "tensorrt":
        return "--model is a TensorRT engine; only the native TensorRT backend runs it"
    if not source.has_torch_model and graph_precision(precision) != source.file_precision:
        return f"--model is a {source.file_precision} file; give a zoo name or checkpoint to export {precision}"
    return None


def runnable(backends: List[str], precisions: List[str], source) -> Tuple[List[Tuple[str, str]], List[Dict[str, Any]]]:
    """The ``(backend, precision)`` pairs that can run here, precision-major, and the skipped ones.

    A skipped entry is ``{"backend", "precision", "reason"}``; a backend that cannot run at all
    is listed once, with precision ``"all"``, so every report says why a row is missing.
    """
    skipped: List[Dict[str, Any]] = []
    unavailable = {b: unavailable_reason(b) for b in backends}
    for backend in backends:
        if unavailable[backend]:
            skipped.append({"backend": backend, "precision": "all", "reason": unavailable[backend]})
    pairs: List[Tuple[str, str]] = []
    for precision in precisions:
        for backend in backends:
            if unavailable[backend]:
                continue
            reason = unsupported_reason(backend, precision, source)
            if reason:
                skipped.append({"backend": backend, "precision": precision, "reason": reason})
            else:
                pairs.append((backend, precision))
    return pairs, skipped
