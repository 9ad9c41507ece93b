"""Compare an exported model with its PyTorch checkpoint or another ONNX file, like Polygraphy.

Both sides get the same raw BGR uint8 frames, exactly what the video pipeline hands a
backend, so the comparison covers the folded pre-processing too. Per input size it reports
the absolute and relative error of the logits (max, mean, 99th percentile) where both sides
produce logits, and the arg-max agreement always, each judged against a tolerance.

Default tolerances follow the precision of the model under test: FP32 logits within
``1e-4`` of the reference's logit range and 99.9 % agreement; FP16, BF16 (an FP32 graph run in
bfloat16, ``--precision bf16``) and INT8 are judged on agreement only (99.5 %, 95 % and 95 %),
their logits reported for information. BF16 keeps 8 bits of significand to FP16's 11, a step as
coarse as INT8's, so it gets INT8's floor: on the bundled model it moves 0.4 % of the labels of
real frames at 360x480 but 2 to 5 % at 97x131, where every pixel is near a boundary. Its
accuracy is measured where it matters, as mean IU (benchmarks/accuracy.py).

Default sizes follow it too. FP32 and FP16 must give the same labels at any size, so they are
tried at odd and small sizes (:data:`DEFAULT_SIZES`), where padding and cropping go wrong
first. An INT8 model's activation ranges were calibrated at one size on one kind of image, and
it is judged where it runs (:func:`int8_sizes`): at the size each common camera's frame goes in
at by the runtime's rule (:mod:`fcn_deploy.runtime.input_size`) and at its calibration size.
Far below its training scale the labels themselves are unsure, and a small frame is mostly
class boundaries, where the two precisions differ first: the bundled CamVid model in INT8 u8s8
agrees with PyTorch on 98.3-98.7 % of the pixels of CamVid frames at 256x320, 360x480 and
360x640, and on 93.8 % at 97x131, a quarter of its training scale, where the runtime never
feeds it (`fcn-deploy compare camvid_int8_u8s8.onnx --images camvid:ROOT --sizes ...`).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from fcn_deploy.errors import FcnDeployError
from fcn_deploy.runtime.backends import open_backend
from fcn_deploy.runtime.backends.base import check_frames, normalize_frames

log = logging.getLogger(__name__)

DEFAULT_MIN_AGREEMENT = {"fp32": 0.999, "fp16": 0.995, "bf16": 0.95, "int8": 0.95}
DEFAULT_SIZES = ((97, 131), (256, 320), (360, 480))  # FP32 and FP16: odd, small and the usual size
DEFAULT_RELATIVE_ATOL = 1e-4  # of the reference's logit range, for FP32


@dataclass
class Outputs:
    labels: np.ndarray  # N x H x W uint8
    logits: Optional[np.ndarray] = None  # N x C x H x W float32, where the side has them


class OnnxSide:
    """An ONNX file in ONNX Runtime (or OpenVINO, ``device="openvino"``), fed raw frames through the runtime backend."""

    def __init__(self, path: str, device: str = "cpu", threads: Optional[int] = None,
                 precision: Optional[str] = None) -> None:
        self.backend = open_backend(path, device, threads=threads, precision=precision)
        self.metadata = self.backend.metadata
        m = self.metadata
        engine = self.backend.providers[0]
        if not engine.startswith("OpenVINO"):
            engine = f"ONNX Runtime {engine}"
        runs = self.backend.execution_precision
        self.description = (f"{path} ({engine}, {m.precision} graph run in {runs}, "
                            f"{m.input_layout} -> {m.output})")

    def run(self, frames: np.ndarray) -> Outputs:
        out = self.backend.infer(frames)
        if self.metadata.folds_argmax:
            return Outputs(labels=out)
        return Outputs(labels=out.argmax(axis=1).astype(np.uint8), logits=out)

    def close(self) -> None:
        self.backend.close()


class TorchSide:
    """A PyTorch model fed the same frames, normalised in numpy exactly as the runtime does."""

    def __init__(self, resolved) -> None:
        self.model = resolved.model.eval()
        self.normalization = self.model.normalization
        self.description = f"{resolved.checkpoint or resolved.spec} (PyTorch, {getattr(self.model, 'name', '')})"

    def run(self, frames: np.ndarray) -> Outputs:
        import torch

        x = torch.from_numpy(normalize_frames(check_frames(frames), self.normalization))
        with torch.no_grad():
            logits = self.model(x).numpy()
        return Outputs(labels=logits.argmax(axis=1).astype(np.uint8), logits=logits)

    def close(self) -> None:
        pass


def int8_sizes(metadata) -> List[Tuple[int, int]]:
    """The sizes an INT8 model is judged at: those the runtime feeds it for each common camera
    (its training scale by the rule) and its calibration size; (H, W), sorted."""
    from fcn_deploy.runtime.input_size import COMMON_CAMERAS, rule_size, training_scale

    reference = training_scale(metadata).reference_size
    sizes = {rule_size(camera, reference) for camera in COMMON_CAMERAS} if reference else set(DEFAULT_SIZES[1:])
    if reference:
        sizes.add(tuple(reference))
    calibration = (metadata.extra or {}).get("calibration") or {}
    size = calibration.get("size") if isinstance(calibration, dict) else None
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size):
        sizes.add((int(size[0]), int(size[1])))
    return sorted(sizes)


def default_sizes(metadata) -> List[Tuple[int, int]]:
    """What ``fcn-deploy compare`` tries when ``--sizes`` is not given (see the module docstring)."""
    return int8_sizes(metadata) if metadata.precision == "int8" else list(DEFAULT_SIZES)


def reference_side(a: OnnxSide, b_spec: Optional[str]):
    """Side B: ``b_spec`` (an ONNX file or a checkpoint), or the checkpoint A was exported from."""
    from fcn_deploy.fileio import sha256_file

    from fcn_deploy.runtime.model_files import bundled_checkpoint

    from fcn_deploy.runtime.assets import BUNDLED_MODELS

    from .resolve import resolve_model

    imported = bool((a.metadata.source or {}).get("imported"))
    if b_spec and b_spec.lower().endswith(".onnx"):
        from fcn_deploy.runtime.metadata import has_fcn_deploy_metadata
        from fcn_deploy.runtime.model_files import onnx_metadata_props

        if imported and not has_fcn_deploy_metadata(onnx_metadata_props(b_spec)):
            return SourceOnnxSide(b_spec, a.metadata)
        return OnnxSide(b_spec, "cpu")
    if not b_spec and imported:
        source = a.metadata.source
        if not source.get("onnx"):
            raise FcnDeployError(f"{a.backend.path} was imported from {source.get('torchvision') or 'a model'} without an "
                                 "ONNX file; pass B (an ONNX export of it)")
        if not os.path.isfile(source["onnx"]):
            raise FcnDeployError(f"{a.backend.path} was imported from {source['onnx']}, which is not here; pass B")
        if source.get("sha256") and sha256_file(source["onnx"]) != source["sha256"]:
            log.warning("%s changed since the import (sha256 differs): expect differences", source["onnx"])
        return SourceOnnxSide(source["onnx"], a.metadata)
    if not b_spec:
        source = a.metadata.source or {}
        b_spec = source.get("checkpoint")
        if not b_spec:
            raise FcnDeployError(
                f"{a.backend.path} was exported from an untrained zoo model, so it has no reference "
                "checkpoint; pass B (a checkpoint or another ONNX file)"
            )
        path = str(bundled_checkpoint(b_spec)) if b_spec in BUNDLED_MODELS else b_spec
        if not os.path.isfile(path):
            raise FcnDeployError(
                f"{a.backend.path} was exported from {b_spec}, which is not here; pass B explicitly"
            )
        recorded = source.get("sha256")
        if recorded and sha256_file(path) != recorded:
            log.warning("%s changed since the export (sha256 differs): expect differences", b_spec)
    resolved = resolve_model(b_spec)
    if not resolved.trained:
        raise FcnDeployError(f"B must be a checkpoint or an ONNX file; {b_spec} is an untrained zoo model")
    if resolved.model.normalization != a.metadata.normalization:
        log.warning("A and B expect different input normalisation: %s vs %s",
                    a.metadata.normalization, resolved.model.normalization)
    return TorchSide(resolved)


class SourceOnnxSide:
    """The ONNX file an imported model came from (no fcn-deploy metadata), in ONNX Runtime.

    Frames are normalised in numpy as A's metadata says and the score output A was made from is
    read; scores smaller than the frame are upsampled bilinearly (OpenCV's ``INTER_LINEAR``,
    PyTorch's ``align_corners=False``). A source fixed to one input size runs exactly as
    exported at that size (a frame at a time where its batch is fixed too); at other sizes it
    runs with the import's dynamic rewrite of it (:func:`fcn_deploy.converters.import_dynamic.make_dynamic`).
    """

    def __init__(self, path: str, metadata) -> None:
        from .import_dynamic import make_dynamic, session
        from .import_source import load_source, read_source

        source = read_source(load_source(path), path, (metadata.source or {}).get("output_name"))
        self.source, self.normalization = source, metadata.normalization
        dims = source.input_dims
        self.fixed_size = tuple(dims[2:]) if all(isinstance(d, int) for d in dims[2:]) else None
        self.fixed_batch = dims[0] if isinstance(dims[0], int) else None
        self.as_exported = session(source.model)
        self.dynamic = session(make_dynamic(source)) if self.fixed_size or self.fixed_batch else self.as_exported
        fixed = f"; fixed to {'x'.join(map(str, dims))}, made dynamic for other sizes" if self.fixed_size else ""
        self.description = f"{path} (ONNX Runtime CPU, the source graph, output {source.output_name}{fixed})"

    def run(self, frames: np.ndarray) -> Outputs:
        x = normalize_frames(check_frames(frames), self.normalization)
        name, out = self.source.input_name, self.source.output_name
        if self.fixed_size == tuple(x.shape[2:]):
            step = self.fixed_batch or len(x)
            scores = np.concatenate([self.as_exported.run([out], {name: x[i:i + step]})[0]
                                     for i in range(0, len(x), step)])
        else:
            scores = self.dynamic.run([out], {name: x})[0]
        h, w = x.shape[2:]
        if scores.shape[2:] != (h, w):
            import cv2

            scores = np.stack([np.stack([cv2.resize(plane, (w, h), interpolation=cv2.INTER_LINEAR) for plane in image])
                               for image in scores])
        return Outputs(labels=scores.argmax(axis=1).astype(np.uint8), logits=scores)

    def close(self) -> None:
        pass


@dataclass
class Tolerances:
    atol: Optional[float] = None  # None: DEFAULT_RELATIVE_ATOL x the reference's logit range (FP32)
    rtol: float = 0.0
    min_agreement: float = 0.999
    judge_logits: bool = True


@dataclass
class SizeReport:
    size: Tuple[int, int]
    batch: int
    agreement: float
    agreement_ok: bool
    logits: Dict[str, float] = field(default_factory=dict)  # empty when a side has no logits
    logits_ok: Optional[bool] = None  # None: not judged

    @property
    def passed(self) -> bool:
        return self.agreement_ok and self.logits_ok is not False


def error_stats(a: np.ndarray, b: np.ndarray, atol: float, rtol: float) -> Dict[str, float]:
    """Polygraphy-style statistics of ``a`` against reference ``b``."""
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    rel = diff / np.maximum(np.abs(b.astype(np.float64)), 1e-12)
    return {
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "p99_abs": float(np.percentile(diff, 99)),
        "max_rel": float(rel.max()),
        "mean_rel": float(rel.mean()),
        "p99_rel": float(np.percentile(rel, 99)),
        "range": float(b.max() - b.min()),
        "atol": float(atol),
        "rtol": float(rtol),
        "within": float(np.mean(diff <= atol + rtol * np.abs(b))),
    }


def sample_frames(size: Tuple[int, int], batch: int, seed: int, images: Optional[Sequence[np.ndarray]] = None) -> np.ndarray:
    """``batch`` BGR uint8 frames of ``size``: real ``images`` resized, or seeded noise."""
    h, w = size
    if images:
        import cv2

        picked = [images[i % len(images)] for i in range(batch)]
        return np.stack([cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA) for im in picked])
    rng = np.random.default_rng([seed, h, w])
    return rng.integers(0, 256, size=(batch, h, w, 3), dtype=np.uint8)


def compare(
    a,
    b,
    sizes: Sequence[Tuple[int, int]],
    batch: int,
    tolerances: Tolerances,
    seed: int = 0,
    images: Optional[Sequence[np.ndarray]] = None,
) -> List[SizeReport]:
    """Run sides ``a`` (under test) and ``b`` (reference) on the same frames at every size."""
    reports = []
    for size in sizes:
        frames = sample_frames(size, batch, seed, images)
        out_a, out_b = a.run(frames), b.run(frames)
        if out_a.labels.shape != out_b.labels.shape:
            raise FcnDeployError(f"at {size[0]}x{size[1]} A gives {out_a.labels.shape}, B {out_b.labels.shape}")
        agreement = float(np.mean(out_a.labels == out_b.labels))
        report = SizeReport(size, batch, agreement, agreement >= tolerances.min_agreement)
        if out_a.logits is not None and out_b.logits is not None:
            if out_a.logits.shape != out_b.logits.shape:
                raise FcnDeployError(f"at {size[0]}x{size[1]} A's logits are {out_a.logits.shape}, B's {out_b.logits.shape}")
            value_range = float(out_b.logits.max() - out_b.logits.min())
            atol = tolerances.atol if tolerances.atol is not None else DEFAULT_RELATIVE_ATOL * value_range
            report.logits = error_stats(out_a.logits, out_b.logits, atol, tolerances.rtol)
            if tolerances.judge_logits:
                report.logits_ok = report.logits["within"] == 1.0
        reports.append(report)
    return reports


def format_report(reports: Sequence[SizeReport], tolerances: Tolerances) -> List[str]:
    lines = []
    for r in reports:
        lines.append(f"[{r.size[0]}x{r.size[1]}, batch {r.batch}]")
        if r.logits:
            s = r.logits
            verdict = {None: "info", True: "PASS", False: "FAIL"}[r.logits_ok]
            lines.append(
                f"  logits  abs: max {s['max_abs']:.3g}  mean {s['mean_abs']:.3g}  p99 {s['p99_abs']:.3g} | "
                f"rel: max {s['max_rel']:.3g}  mean {s['mean_rel']:.3g}  p99 {s['p99_rel']:.3g}"
            )
            lines.append(
                f"          range {s['range']:.3g}; within atol {s['atol']:.3g} + rtol {s['rtol']:.3g}: "
                f"{100 * s['within']:.4f}%  {verdict}"
            )
        lines.append(
            f"  labels  agreement {100 * r.agreement:.4f}% (min {100 * tolerances.min_agreement:.2f}%)  "
            f"{'PASS' if r.agreement_ok else 'FAIL'}"
        )
    passed = sum(r.passed for r in reports)
    lines.append(f"{'PASSED' if passed == len(reports) else 'FAILED'} ({passed}/{len(reports)} sizes)")
    return lines
