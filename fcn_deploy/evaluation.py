"""Accuracy of any segmenter on a dataset: the paper's four metrics and per-class IU.

Torch-free: the core takes a ``predict(image) -> labels`` callable (H x W x 3 uint8 RGB in,
H x W integer class map out), so a checkpoint (``fcn_deploy.training.predict``), an ONNX
file or a TensorRT engine (:class:`BackendPredictor`, through the runtime backends) are
scored by the same code, on the same labels, at label resolution.

The network input size is a separate choice (:class:`ResizedPredictor`): the image is
resized as the video runtime resizes a frame, and the labels are mapped back to the
ground truth's size, so a score per input size (:func:`evaluate_scales`) says what a camera
of that resolution would get.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .errors import FcnDeployError
from .metrics import ConfusionMatrix

Predict = Callable[[np.ndarray], np.ndarray]


def evaluate(
    dataset: Any,
    predict: Predict,
    indices: Optional[Iterable[int]] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> ConfusionMatrix:
    """Count ``predict``'s labels against ``dataset``'s on items ``indices`` (all by default).

    ``dataset`` follows the item contract of :mod:`fcn_deploy.data` (untransformed items);
    ``progress(1)`` is called after every item (e.g. a tqdm bar's ``update``).
    """
    cm = ConfusionMatrix(dataset.num_classes, dataset.ignore_index)
    for index in range(len(dataset)) if indices is None else indices:
        image, label = dataset[index]
        pred = np.asarray(predict(image))
        if pred.shape != label.shape:
            raise FcnDeployError(
                f"prediction for item {index} is {pred.shape[-1]}x{pred.shape[0]} but its label is "
                f"{label.shape[1]}x{label.shape[0]}"
            )
        cm.update(pred, label)
        if progress is not None:
            progress(1)
    return cm


def check_classes(model_classes: Optional[Sequence[str]], num_classes: int, dataset: Any, what: str) -> None:
    """Fail with one line when a model's classes cannot be scored against the dataset's."""
    if num_classes != dataset.num_classes:
        raise FcnDeployError(
            f"{what} predicts {num_classes} classes but the dataset has {dataset.num_classes} "
            f"({', '.join(dataset.classes)})"
        )
    if model_classes and list(model_classes) != list(dataset.classes):
        import logging

        logging.getLogger(__name__).warning(
            "%s's class names (%s) differ from the dataset's (%s)", what, ", ".join(model_classes), ", ".join(dataset.classes)
        )


def _pct(value: Optional[float]) -> str:
    return "   n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100.0 * value:6.2f}"


def format_report(scores: Dict[str, Any], classes: Sequence[str]) -> str:
    """The four metrics and a per-class IU table, in percent, as plain text."""
    width = max([len("class")] + [len(c) for c in classes])
    lines = [
        f"pixel accuracy  {_pct(scores['pixel_acc'])}",
        f"mean accuracy   {_pct(scores['mean_acc'])}",
        f"mean IU         {_pct(scores['mean_iu'])}",
        f"f.w. IU         {_pct(scores['fw_iu'])}",
        "",
        f"{'class':<{width}}      IU     acc",
    ]
    accs = scores.get("per_class_acc") or [float("nan")] * len(classes)
    for name, iu, acc in zip(classes, scores["per_class_iu"], accs):
        lines.append(f"{name:<{width}}  {_pct(iu)}  {_pct(acc)}")
    return "\n".join(lines)


def json_safe(scores: Dict[str, Any]) -> Dict[str, Any]:
    """Scores with nan as None, for JSON."""

    def fix(v: Any) -> Any:
        if isinstance(v, float) and math.isnan(v):
            return None
        if isinstance(v, list):
            return [fix(x) for x in v]
        return v

    return {k: fix(v) for k, v in scores.items()}


def _resize_labels(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    from .data.transforms import resize_label

    return resize_label(labels, height, width)


class BackendPredictor:
    """``predict(image_rgb) -> labels`` through a runtime backend (ONNX Runtime, TensorRT).

    The backend takes raw BGR frames, so the RGB image is only reversed. With ``size`` the
    frame is resized for the network; logits are resized back bilinearly before the
    arg-max, labels (a graph with the arg-max folded in) by nearest neighbour.
    """

    def __init__(self, backend: Any, size: Optional[Tuple[int, int]] = None) -> None:
        self.backend = backend
        self.size = size

    def __call__(self, image: np.ndarray) -> np.ndarray:
        import cv2

        h, w = image.shape[:2]
        frame = np.ascontiguousarray(image[..., ::-1])
        if self.size is not None and (h, w) != tuple(self.size):
            frame = cv2.resize(frame, (self.size[1], self.size[0]), interpolation=cv2.INTER_LINEAR)
        out = self.backend.infer(frame[None])[0]
        if self.backend.output_kind == "labels":
            return out if out.shape == (h, w) else _resize_labels(out, h, w)
        logits = out.astype(np.float32, copy=False)
        if logits.shape[-2:] != (h, w):
            logits = np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_LINEAR) for c in logits])
        return logits.argmax(axis=0)


Size = Tuple[int, int]


class ResizedPredictor:
    """``predict`` run at the size ``size_for((h, w))`` gives for each image, its labels mapped
    back to the image's own size by nearest neighbour.

    The image is resized as the video pipeline resizes a frame
    (:func:`fcn_deploy.runtime.input_size.resize_frame`), so a score here is what the runtime
    gets on frames of that size. ``sizes`` counts the input sizes used, for reports.
    """

    def __init__(self, predict: Predict, size_for: Callable[[Size], Size]) -> None:
        self.predict = predict
        self.size_for = size_for
        self.sizes: Dict[Size, int] = {}

    def __call__(self, image: np.ndarray) -> np.ndarray:
        from .runtime.input_size import resize_frame

        h, w = image.shape[:2]
        size = tuple(int(v) for v in self.size_for((h, w)))
        self.sizes[size] = self.sizes.get(size, 0) + 1  # type: ignore[index]
        if size == (h, w):
            return self.predict(image)
        labels = np.asarray(self.predict(resize_frame(image, size)))  # type: ignore[arg-type]
        return _resize_labels(labels, h, w)


def sizes_text(sizes: Dict[Size, int]) -> str:
    """The input sizes a :class:`ResizedPredictor` used: ``"360x480"``, or the commonest and a count."""
    if not sizes:
        return "-"
    common = max(sizes, key=lambda s: sizes[s])
    text = f"{common[0]}x{common[1]}"
    return text if len(sizes) == 1 else f"{text} (+{len(sizes) - 1} other sizes)"


def evaluate_scales(
    dataset: Any,
    predict: Predict,
    scales: Sequence[float],
    indices: Optional[Sequence[int]] = None,
    progress: Optional[Callable[[int], None]] = None,
    fit: Optional[Callable[[Size], Size]] = None,
) -> List[Dict[str, Any]]:
    """Score ``predict`` with every image resized by each factor in ``scales`` (labels mapped
    back to the ground truth's size): one record per scale with the four metrics, the input
    size used and the seconds taken. ``fit`` moves a size into what the model accepts (an
    engine's profile); the record's ``input_size`` then says what really ran."""
    import time

    from .runtime.input_size import scaled_size

    indices = list(range(len(dataset))) if indices is None else list(indices)
    records = []
    for factor in scales:
        if not factor > 0:
            raise FcnDeployError(f"input scale must be positive, not {factor}")

        def size_for(hw: Size, factor: float = factor) -> Size:
            size = scaled_size(hw, factor)
            return fit(size) if fit is not None else size

        resized = ResizedPredictor(predict, size_for)
        start = time.perf_counter()
        scores = json_safe(evaluate(dataset, resized, indices, progress).scores())
        seconds = time.perf_counter() - start
        records.append({
            "scale": float(factor), "input_size": sizes_text(resized.sizes),
            "pixel_acc": scores["pixel_acc"], "mean_acc": scores["mean_acc"], "mean_iu": scores["mean_iu"],
            "fw_iu": scores["fw_iu"], "seconds": round(seconds, 3), "images": len(indices),
        })
    return records


def format_scales(records: Sequence[Dict[str, Any]]) -> str:
    """:func:`evaluate_scales`' records as a plain-text table, in percent."""
    lines = [f"{'scale':>6}  {'input (HxW)':<24}{'mean IU':>8}{'pixel acc':>11}{'mean acc':>10}{'f.w. IU':>9}{'ms/img':>9}"]
    for r in records:
        ms = 1000.0 * r["seconds"] / max(1, r["images"])
        lines.append(
            f"{r['scale']:>6g}  {r['input_size']:<24}{_pct(r['mean_iu']):>8}{_pct(r['pixel_acc']):>11}"
            f"{_pct(r['mean_acc']):>10}{_pct(r['fw_iu']):>9}{ms:>9.1f}"
        )
    return "\n".join(lines)
