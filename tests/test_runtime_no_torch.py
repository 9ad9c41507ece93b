"""The runtime runs where PyTorch is not installed (a Jetson with TensorRT, a CPU box with ORT).

A fresh interpreter gets a meta path finder that refuses ``torch``; it then imports every
runtime module, opens an exported model, reads its metadata and runs it.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from onnx_helpers import REPO, write_checkpoint

pytest.importorskip("onnxruntime")

BLOCK_TORCH = textwrap.dedent(
    """
    import importlib, importlib.abc, pkgutil, sys

    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError(f"torch is blocked: the runtime must not import {name}")
            return None

    sys.meta_path.insert(0, NoTorch())
    """
)

SCRIPT = BLOCK_TORCH + textwrap.dedent(
    """
    import numpy as np
    import fcn_deploy.runtime as runtime
    from fcn_deploy.runtime.backends import open_backend
    from fcn_deploy.runtime.metadata import ModelMetadata

    # Every runtime module imports without torch; a module that needs another optional
    # engine (tensorrt, cuda) may be missing here, but not because of torch.
    for info in pkgutil.walk_packages(runtime.__path__, "fcn_deploy.runtime."):
        try:
            importlib.import_module(info.name)
        except ImportError as exc:
            if "torch is blocked" in str(exc):
                raise SystemExit(f"{info.name} imports torch: {exc}")

    frames = np.random.default_rng(0).integers(0, 256, (2, 37, 53, 3), dtype=np.uint8)
    for path in sys.argv[1:]:
        with open_backend(path, "cpu", threads=1) as backend:
            assert isinstance(backend.metadata, ModelMetadata)
            labels = backend.infer_labels(frames)
            assert labels.shape == (2, 37, 53) and labels.dtype == np.uint8
            print(backend.metadata.model_name, backend.output_kind, labels.shape)
    assert "torch" not in sys.modules
    print("no torch")
    """
)


def test_runtime_runs_without_torch(tmp_path):
    import torch

    from fcn_deploy.converters.onnx_export import export
    from fcn_deploy.converters.resolve import model_from_checkpoint

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        resolved = model_from_checkpoint(str(write_checkpoint(tmp_path / "ck.pt")))
        deploy = export(resolved, str(tmp_path / "deploy.onnx")).path
        plain = export(resolved, str(tmp_path / "plain.onnx"), fold_preprocessing=False, fold_argmax=False).path
    finally:
        torch.set_num_threads(before)
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, deploy, plain],
        cwd=str(REPO), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fcn8s_resnet18 labels (2, 37, 53)" in result.stdout
    assert "fcn8s_resnet18 logits (2, 37, 53)" in result.stdout
    assert result.stdout.strip().endswith("no torch")


def test_blocking_torch_really_blocks():
    """The finder itself works: importing torch under it fails."""
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + "import torch\n"], cwd=str(REPO), capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and "torch is blocked" in result.stderr
