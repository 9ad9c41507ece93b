"""Small models, checkpoints and frames shared by the ONNX export, backend and compare tests."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]

# Build options that make each zoo model small enough for a 2-core CPU test.
_SMALL = {"vgg16": {"width": 16}, "resnet": {"width": 16}}


def small_options(name: str) -> Dict:
    for family, options in _SMALL.items():
        if family in name:
            return dict(options)
    return {}


def perturb_scorers(model, seed: int = 0) -> None:
    """Make an untrained zoo model behave, numerically, like a trained one.

    With the paper's zero-initialised scorers every class scores the same, and an
    ONNX-vs-PyTorch comparison of arg-maxes would be vacuous. Random scorers alone are not
    enough: an untrained VGG's activations shrink layer by layer (its scores would sit in
    float16's subnormal range, which no trained net does), and an untrained backbone's
    features hardly vary across an image, so one class would win everywhere. Hence, on
    sample frames and in execution order, every backbone convolution is scaled to unit
    output spread (LSUV-style), each scorer gets random weights at unit output spread and a
    bias that cancels its mean response: scores of order one, decided by the image, as in a
    trained network. The bilinear deconvolutions keep their diagonal form, so the exporter
    still turns them into grouped ones.
    """
    import torch
    import torch.nn as nn

    from fcn_deploy.runtime.backends.base import normalize_frames

    gen = torch.Generator().manual_seed(seed)

    def is_scorer(name: str) -> bool:
        return name.split(".")[-1].startswith("score")

    def rescale(module, args, output):
        if is_scorer(module._perturb_name):
            module.weight.copy_(torch.randn(module.weight.shape, generator=gen))
            output = torch.nn.functional.conv2d(args[0], module.weight, None, module.stride, module.padding)
            shift = output.mean(dim=(0, 2, 3))
        else:
            shift = torch.zeros(output.shape[1])
        spread = output.std().clamp_min(1e-12)
        module.weight.div_(spread)
        if module.bias is not None:
            base = module.bias if not is_scorer(module._perturb_name) else torch.zeros_like(module.bias)
            module.bias.copy_(base / spread - shift / spread)
        return (output - shift[None, :, None, None]) / spread

    model.eval()
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            module._perturb_name = name
            handles.append(module.register_forward_hook(rescale))
    with torch.no_grad():
        model(torch.from_numpy(normalize_frames(scene_frames(2, 64, 96, seed), model.normalization)))
    for handle in handles:
        handle.remove()


def small_model(name: str, num_classes: int = 5, seed: int = 0):
    import torch

    from fcn_deploy.models import build_model

    torch.manual_seed(seed)
    model = build_model(name, num_classes, **small_options(name))
    perturb_scorers(model, seed)
    return model


def write_checkpoint(path: Path, name: str = "fcn8s_resnet18", num_classes: int = 5, seed: int = 0) -> Path:
    """A checkpoint laid out as `fcn-deploy train` writes it."""
    import torch

    model = small_model(name, num_classes, seed)
    torch.save(
        {
            "format": "fcn-deploy-checkpoint",
            "model_name": name,
            "num_classes": num_classes,
            "model_options": small_options(name),
            "model_state": model.state_dict(),
            "classes": [f"thing{i}" for i in range(num_classes)],
            "palette": [[10 * i, 20 * i, 30 * i] for i in range(num_classes)],
            "dataset": "camvid",
            "metrics": {"mean_iu": 0.625, "pixel_acc": 0.9},
        },
        path,
    )
    return path


def random_frames(batch: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Uniform noise frames: every uint8 value, no structure."""
    return np.random.default_rng([seed, h, w]).integers(0, 256, size=(batch, h, w, 3), dtype=np.uint8)


def scene_frames(batch: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Frames with structure, like photos: colour gradients, a few flat discs, mild noise.

    An untrained network's features vary across such an image much more than across noise,
    so its arg-max is decided by clear margins, as a trained network's is.
    """
    rng = np.random.default_rng([seed, h, w, 7])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = np.empty((batch, h, w, 3), np.uint8)
    for i in range(batch):
        angle = rng.uniform(0, 2 * np.pi, 3)
        ramp = np.stack([np.cos(a) * xx / max(w, 1) + np.sin(a) * yy / max(h, 1) for a in angle], -1)
        image = 128 + 100 * ramp + rng.normal(0, 8, (h, w, 3))
        for _ in range(4):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            r = rng.uniform(0.1, 0.3) * max(h, w)
            image[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
        frames[i] = np.clip(image, 0, 255).astype(np.uint8)
    return frames


def write_images(folder: Path, count: int = 6, size=(48, 64), seed: int = 0) -> Path:
    """Smooth synthetic photos (gradients plus blobs), written as PNG files."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(count):
        base = np.stack([(xx * 255 / w), (yy * 255 / h), np.full((h, w), 40.0 * i)], axis=-1)
        for _ in range(3):
            cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(4, 16)
            base[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
        cv2.imwrite(str(folder / f"img{i:02d}.png"), np.clip(base, 0, 255).astype(np.uint8))
    return folder


def run_cli(args: Sequence[str], timeout: float = 180, env_extra: Dict[str, str] = None) -> subprocess.CompletedProcess:
    """``fcn-deploy ARGS`` in a fresh interpreter, from the repository root."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"  # tiny models: one thread is fastest
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "fcn_deploy.cli", *map(str, args)],
        cwd=str(REPO), env=env, capture_output=True, text=True, timeout=timeout,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """Non-zero exit, no traceback, and exactly one ``fcn-deploy: error:`` line on stderr."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors: List[str] = [l for l in result.stderr.splitlines() if l.startswith("fcn-deploy: error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


# -- real exported graphs, for the TensorRT-side tests ---------------------------------------
_EXPORTED: Dict[tuple, Path] = {}


def exported_onnx(path, *, precision: str = "fp32", logits: bool = False, num_classes: int = 3,
                  upsampling: str = "subpixel", metadata: bool = True, extra_node=None) -> str:
    """A real `fcn-deploy export` of a small FCN-8s EfficientNet-Lite0, copied to ``path``.

    The TensorRT tests build and run exactly what the exporter writes (node order, types,
    Casts at the boundary), never a graph of their own. Each variant is exported once per
    test session. ``metadata=False`` strips the fcn-deploy metadata (a foreign graph);
    ``extra_node`` (an ``onnx.NodeProto`` taking the last score tensor) makes a hand-made bad
    graph from the real one, for the parser's error paths.
    """
    import shutil
    import tempfile

    import onnx

    import pytest

    key = (precision, logits, num_classes, upsampling)
    if key not in _EXPORTED:
        # Exporting needs PyTorch; the runtime-only venvs (JetPack's Pythons) skip these tests.
        torch = pytest.importorskip("torch", reason="exporting the test graph needs PyTorch")

        from fcn_deploy.converters.onnx_export import export
        from fcn_deploy.converters.resolve import ResolvedModel

        folder = Path(tempfile.mkdtemp(prefix="fcn-deploy-tests-"))
        name = "fcn8s_efficientnet_lite0"
        model = small_model(name, num_classes)
        resolved = ResolvedModel(model=model, spec=name, num_classes=num_classes, model_options=small_options(name),
                                 classes=[f"c{i}" for i in range(num_classes)], dataset="camvid")
        frames = None
        if precision == "int8":
            frames = list(scene_frames(4, 64, 96, seed=3))
        with torch.no_grad():
            result = export(resolved, str(folder / f"{precision}{'_logits' if logits else ''}.onnx"),
                            precision=precision, fold_preprocessing=not logits, fold_argmax=not logits,
                            calib_frames=frames, upsampling=upsampling)
        _EXPORTED[key] = Path(result.path)
    path = Path(path)
    shutil.copyfile(_EXPORTED[key], path)
    if not metadata or extra_node is not None:
        model = onnx.load(str(path))
        if not metadata:
            del model.metadata_props[:]
        if extra_node is not None:
            model.graph.node.append(extra_node)
            for domain in {extra_node.domain} - {o.domain for o in model.opset_import}:
                model.opset_import.append(onnx.helper.make_opsetid(domain, 1))
        onnx.save(model, str(path))
    return str(path)


def graph_failing_off_8x8(path: Path, props: Dict[str, str]) -> Path:
    """A real ONNX graph that fails inside ONNX Runtime (a broadcast) on any frame but 8x8.

    It takes frames and returns labels in 0..2, like an exported model, and carries ``props``
    (an exported model's metadata), so a backend and a pipeline accept it; a run on a frame of
    another size fails in the kernel, as a real run on a bad frame does.
    """
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.UINT8, ["N", "H", "W", 3])
    y = helper.make_tensor_value_info("labels", TensorProto.UINT8, ["N", "H", "W"])
    zeros = helper.make_tensor("zeros", TensorProto.FLOAT, [1, 8, 8, 3], [0.0] * 192)
    nodes = [
        helper.make_node("Cast", ["input"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["xf", "zeros"], ["sum"]),
        helper.make_node("ArgMax", ["sum"], ["index"], axis=3, keepdims=0),
        helper.make_node("Cast", ["index"], ["labels"], to=TensorProto.UINT8),
    ]
    graph = helper.make_graph(nodes, "fails_off_8x8", [x], [y], initializer=[zeros])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path
