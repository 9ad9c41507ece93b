"""``fcn-deploy eval``: the paper's four metrics and per-class IU of a model on a dataset split.

The model is a training checkpoint (run in PyTorch), an exported ``.onnx`` file or a
TensorRT engine (run through the runtime backends, without torch), or ``camvid`` for the
bundled model. All are scored by :func:`fcn_deploy.evaluation.evaluate` at label resolution.
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..errors import FcnDeployError
from ._args import add_data_arguments, resolve_root, size_or_none as parse_size


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="score a model on a dataset split (pixel acc, mean acc, mean IU, f.w. IU)",
        description="Score a checkpoint (.pt), an exported model (.onnx, .engine) or the bundled "
        "model (camvid) on a dataset split with the paper's four metrics and per-class IU.",
    )
    p.add_argument("--model", required=True, help="checkpoint .pt, model .onnx/.engine, or camvid (bundled)")
    add_data_arguments(p, dataset_required=False)
    p.add_argument("--split", default="test", help="dataset split (default test)")
    p.add_argument("--size", type=parse_size, default=None, metavar="HxW",
                   help="run the network at this size (default: each image's own); scores stay at label size")
    p.add_argument("--device", default=None,
                   help="cpu or cuda for checkpoints and ONNX (default cpu); tensorrt for ONNX through the "
                   "TensorRT EP; cuda for an engine (its default)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images (a quick look)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=run)


def resolve_model(spec: str) -> str:
    """``camvid`` -> the bundled ONNX (or, where only that is installed, its checkpoint); a
    path of any model kind as is."""
    from ..runtime.model_files import CHECKPOINT, ENGINE, ONNX, resolve_model_file

    return str(resolve_model_file(spec, (ONNX, ENGINE, CHECKPOINT)))


class _Model:
    """What eval needs of a model: a predictor and the facts to report."""

    def __init__(self, predict: Callable, num_classes: int, classes: Optional[List[str]], dataset: Optional[str],
                 runs_on: str, close: Callable[[], None] = lambda: None) -> None:
        self.predict, self.num_classes, self.classes = predict, num_classes, classes
        self.dataset, self.runs_on, self.close = dataset, runs_on, close


def open_model(path: str, device: Optional[str], size: Optional[Tuple[int, int]], threads: Optional[int]) -> _Model:
    from ..runtime.model_files import CHECKPOINT, ONNX, default_device, model_kind

    kind = model_kind(path)
    device = device or default_device(kind)
    if kind != CHECKPOINT:
        from ..evaluation import BackendPredictor
        from ..runtime.backends import open_backend

        options: Dict[str, Any] = {"threads": threads} if threads and kind == ONNX else {}
        backend = open_backend(path, device=device, **options)
        meta = backend.metadata
        if meta is None:
            backend.close()
            raise FcnDeployError(f"{path} carries no fcn-deploy metadata: export it with `fcn-deploy export`")
        runs_on = f"{type(backend).__name__} ({', '.join(backend.providers)})"
        return _Model(BackendPredictor(backend, size), meta.num_classes, list(meta.classes), meta.dataset,
                      runs_on, backend.close)
    else:
        import torch

        from ..training.checkpoint import load_checkpoint_model
        from ..training.predict import TorchPredictor

        if threads:
            torch.set_num_threads(threads)
        if device not in ("cpu",) and not device.startswith("cuda"):
            raise FcnDeployError(f"a checkpoint runs on cpu or cuda, not {device!r} (export it for TensorRT)")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise FcnDeployError("--device cuda asked for, but this torch has no usable CUDA device")
        model, ckpt = load_checkpoint_model(path, device)
        predictor = TorchPredictor(model, torch.device(device), size, channels_last=device == "cpu")
        if device == "cpu":
            model.to(memory_format=torch.channels_last)
        return _Model(predictor, int(ckpt["num_classes"]), ckpt.get("classes"), ckpt.get("dataset"),
                      f"PyTorch {torch.__version__} on {device}")


def run(args: argparse.Namespace) -> int:
    import json
    import time

    from ..data import build_dataset
    from ..evaluation import check_classes, evaluate, format_report, json_safe

    if args.limit is not None and args.limit < 1:
        raise FcnDeployError("--limit must be >= 1")
    path = resolve_model(args.model)
    model = open_model(path, args.device, args.size, args.threads)
    try:
        dataset_name = args.dataset or model.dataset
        if not dataset_name:
            raise FcnDeployError(f"{path} does not say what it was trained on: give --dataset")
        root = resolve_root(dataset_name, args.root)
        dataset = build_dataset(dataset_name, root, args.split, **dict(args.dataset_option))
        check_classes(model.classes, model.num_classes, dataset, os.path.basename(path))
        count = len(dataset) if args.limit is None else min(args.limit, len(dataset))

        bar = None
        try:
            from tqdm import tqdm

            bar = tqdm(total=count, unit="img", desc=f"eval {dataset_name}/{args.split}", disable=None)
        except ImportError:
            pass
        start = time.perf_counter()
        try:
            cm = evaluate(dataset, model.predict, range(count), bar.update if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - start
    finally:
        model.close()

    scores = cm.scores()
    if args.json:
        safe = json_safe(scores)
        report = {
            "model": path,
            "runs_on": model.runs_on,
            "dataset": dataset_name,
            "split": args.split,
            "images": count,
            "size": list(args.size) if args.size else None,
            "pixel_acc": safe["pixel_acc"],
            "mean_acc": safe["mean_acc"],
            "mean_iu": safe["mean_iu"],
            "fw_iu": safe["fw_iu"],
            "classes": list(dataset.classes),
            "per_class_iu": dict(zip(dataset.classes, safe["per_class_iu"])),
            "per_class_acc": dict(zip(dataset.classes, safe["per_class_acc"])),
            "seconds": round(seconds, 3),
        }
        print(json.dumps(report, indent=2))
    else:
        size = f"{args.size[0]}x{args.size[1]}" if args.size else "full resolution"
        print(f"{path} on {dataset_name}/{args.split}: {count} images at {size}, {model.runs_on}, {seconds:.1f} s")
        print(format_report(scores, dataset.classes))
    return 0
