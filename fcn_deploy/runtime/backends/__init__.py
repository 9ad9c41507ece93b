"""Inference backends behind one interface (:class:`~.base.Backend`), opened by :func:`open_backend`.

``open_backend`` picks the backend from the file's kind (:mod:`fcn_deploy.runtime.model_files`):
an ONNX file runs in ONNX Runtime (on the CPU, CUDA or TensorRT execution provider); a
serialized TensorRT plan runs in the native TensorRT backend, ``backends/tensorrt.py``. Each
backend module imports its engine only when opened, so a device with only one of them
installed runs the other's files, and says clearly what is missing for the rest. A
``triton://HOST:PORT/NAME`` URL (or ``triton+grpc://``) opens ``backends/triton.py``, a client
of a model served by Triton Inference Server.

The device string can also name the engine for an ONNX file: ``openvino`` or
``openvino:GPU`` opens it in OpenVINO (``backends/openvino.py``), ``ort-cpu`` in ONNX
Runtime on the CPU (what ``cpu`` means here; ``run`` lets ``cpu`` choose between the two,
:mod:`fcn_deploy.runtime.engine_choice`).
"""
from __future__ import annotations

import os
from typing import Any

from ...errors import FcnDeployError
from ..model_files import ENGINE, ONNX, is_remote, model_kind
from .base import Backend, BackendError, TensorSpec, check_execution_precision, check_frames, normalize_frames

__all__ = ["Backend", "BackendError", "TensorSpec", "check_frames", "normalize_frames", "open_backend"]


ORT_CPU = "ort-cpu"


def open_backend(path: "str | os.PathLike[str]", device: str = "cpu", **options: Any) -> Backend:
    """Open model file ``path`` on ``device`` (``"cpu"``, ``"cuda"``, ``"tensorrt"``; ``"cuda:1"``
    picks a GPU; ``"ort-cpu"`` is ``"cpu"`` by name; ``"openvino"``, ``"openvino:GPU"`` for OpenVINO).

    ``options`` go to the backend: for ONNX files see
    :class:`~fcn_deploy.runtime.backends.onnxruntime.OnnxRuntimeBackend` (``threads``,
    ``fp16``, ``engine_cache_dir``, ``timing_cache_dir``, ``profile_shapes`` ...); for engines
    :class:`~fcn_deploy.runtime.backends.tensorrt.TensorRTBackend` (``contexts`` ...); on OpenVINO
    :class:`~fcn_deploy.runtime.backends.openvino.OpenVINOBackend` (``threads``, ``in_flight``, ``cache_dir``).
    ``precision`` (``"fp32"``, the default, or ``"bf16"``): what the graph's floating-point
    layers run in. Only OpenVINO has a switch for it; every other backend runs the graph's own
    types (fp32 for an FP32 graph) and refuses bf16 in one line, saying where it runs.
    Raises :class:`BackendError` (a :class:`~fcn_deploy.errors.FcnDeployError`) for a
    missing or unreadable file, an unknown device or a missing execution provider.
    """
    path = os.fspath(path)
    precision = check_execution_precision(options.pop("precision", None))
    if is_remote(path):  # triton://HOST:PORT/NAME: a model on a Triton server, not a file
        if precision != "fp32":
            raise BackendError(f"precision {precision}: a model served by Triton runs in the precision the server "
                               "was given (its model repository), not one a client picks")
        from .triton import TritonBackend

        return TritonBackend(path, device, **options)
    if not os.path.isfile(path):
        raise BackendError(f"model file not found: {path}")
    try:
        kind = model_kind(path)
    except FcnDeployError as exc:
        raise BackendError(str(exc)) from None
    from .openvino import is_openvino_device

    if is_openvino_device(device):
        if kind != ONNX:
            raise BackendError(f"OpenVINO runs ONNX files; {path} is a {kind} file (--device openvino takes a .onnx)")
        from .openvino import OpenVINOBackend

        return OpenVINOBackend(path, device, precision=precision, **options)
    if str(device).strip().lower() == ORT_CPU:
        device = "cpu"
    if precision != "fp32":
        if kind == ENGINE:
            raise BackendError(f"precision {precision}: a TensorRT engine runs the precision it was built with; "
                               f"build a {precision} engine from the ONNX (fcn-deploy build --{precision})")
        raise BackendError(f"precision {precision}: ONNX Runtime has no {precision} mode (it runs the graph's own "
                           f"types); on a CPU with AVX512_BF16 or AMX use --device openvino")
    if kind == ENGINE:
        from .tensorrt import TensorRTBackend

        return TensorRTBackend(path, device, **options)
    if kind != ONNX:
        raise BackendError(f"{path} is a training checkpoint; export it first: fcn-deploy export --model {path}")
    from .onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(path, device, **options)
