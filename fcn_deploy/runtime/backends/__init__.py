"""Inference backends behind one interface (:class:`~.base.Backend`), opened by :func:`open_backend`.

``open_backend`` picks the backend from the file: an ``.onnx`` file runs in ONNX Runtime
(on the CPU, CUDA or TensorRT execution provider); a serialized TensorRT plan (``.engine``,
``.plan``) runs in the native TensorRT backend, ``backends/tensorrt.py``, whose
``TensorRTBackend(path, device, **options)`` implements the same interface. Each backend
module imports its engine only when opened, so a device with only one of them installed
runs the other's files with a clear message instead of an ImportError.
"""
from __future__ import annotations

import importlib
import os
from typing import Any

from .base import Backend, BackendError, TensorSpec, check_frames, normalize_frames

__all__ = ["Backend", "BackendError", "TensorSpec", "check_frames", "normalize_frames", "open_backend"]

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def open_backend(path: "str | os.PathLike[str]", device: str = "cpu", **options: Any) -> Backend:
    """Open model file ``path`` on ``device`` (``"cpu"``, ``"cuda"``, ``"tensorrt"``; ``"cuda:1"``
    picks a GPU).

    ``options`` go to the backend: for ONNX files see
    :class:`~fcn_deploy.runtime.backends.onnxruntime.OnnxRuntimeBackend` (``threads``,
    ``fp16``, ``engine_cache_dir``, ``timing_cache_dir``, ``profile_shapes`` ...).
    Raises :class:`BackendError` (a :class:`~fcn_deploy.errors.FcnDeployError`) for a
    missing or unreadable file, an unknown device or a missing execution provider.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise BackendError(f"model file not found: {path}")
    suffix = os.path.splitext(path)[1].lower()
    if suffix in ENGINE_SUFFIXES:
        try:
            module = importlib.import_module(".tensorrt", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.tensorrt":
                raise
            raise BackendError(f"{path} is a TensorRT engine, but this fcn-deploy has no TensorRT backend") from None
        return module.TensorRTBackend(path, device, **options)
    if suffix != ".onnx":
        raise BackendError(f"{path}: unknown model file type {suffix or '(none)'}; expected .onnx or .engine")
    from .onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(path, device, **options)
