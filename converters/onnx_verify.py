"""Run an exported graph in ONNX Runtime before calling the export a success.

The export checks what the graph declares; these run it: at an odd size, to see that the
output really has the input's height and width, and against another variant (FP32 vs FP16
or INT8) to measure how often the two agree on the class of a pixel.
"""
from __future__ import annotations

from typing import Iterable, Sequence, Tuple

import numpy as np
import onnx

from fcn_deploy.errors import first_line
from fcn_deploy.runtime.backends.base import normalize_frames
from fcn_deploy.runtime.metadata import ModelMetadata

from .onnx_passes import ExportError


def session_for(model: onnx.ModelProto, threads: int = 0):
    """A CPU ONNX Runtime session on an in-memory model."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = first_line(exc)
        raise ExportError(f"ONNX Runtime cannot load the exported graph: {first}") from None


def graph_input(frames: np.ndarray, metadata: ModelMetadata) -> np.ndarray:
    """BGR uint8 frames -> what the graph takes, as the metadata says."""
    return frames if metadata.folds_preprocessing else normalize_frames(frames, metadata.normalization)


def predict_labels(session, frames: np.ndarray, metadata: ModelMetadata) -> np.ndarray:
    """``N x H x W`` uint8 labels for BGR uint8 ``frames`` (arg-max on the host for logits graphs)."""
    name = session.get_inputs()[0].name
    out = session.run(None, {name: graph_input(frames, metadata)})[0]
    return out if metadata.folds_argmax else out.argmax(axis=1).astype(np.uint8)


def smoke_test(model: onnx.ModelProto, metadata: ModelMetadata, sizes: Sequence[Tuple[int, int]] = ((37, 53),)) -> None:
    """Run ``model`` on random frames of ``sizes`` (batch 2) and check the output shape."""
    session = session_for(model)
    rng = np.random.default_rng(0)
    for h, w in sizes:
        frames = rng.integers(0, 256, size=(2, h, w, 3), dtype=np.uint8)
        name = session.get_inputs()[0].name
        out = session.run(None, {name: graph_input(frames, metadata)})[0]
        want = (2, h, w) if metadata.folds_argmax else (2, metadata.num_classes, h, w)
        if out.shape != want:
            raise ExportError(f"exported graph maps a 2x{h}x{w} input to {out.shape}, expected {want}")


def label_agreement(
    reference: onnx.ModelProto,
    candidate: onnx.ModelProto,
    frames: Iterable[np.ndarray],
    metadata: ModelMetadata,
) -> float:
    """Fraction of pixels where ``candidate`` predicts the class ``reference`` predicts.

    ``frames`` are single BGR uint8 ``H x W x 3`` images; both graphs share ``metadata``'s
    input layout and output kind.
    """
    ref, cand = session_for(reference), session_for(candidate)
    same = total = 0
    for frame in frames:
        batch = frame[None]
        a, b = predict_labels(ref, batch, metadata), predict_labels(cand, batch, metadata)
        same += int((a == b).sum())
        total += a.size
    if total == 0:
        raise ExportError("no frames to measure agreement on")
    return same / total
