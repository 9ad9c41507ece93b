"""``fcn-deploy eval``: the paper's four metrics and per-class IU of a model on a dataset split.

The model is a training checkpoint (run in PyTorch), an exported ``.onnx`` file or a
TensorRT engine (run through the runtime backends, without torch), or ``camvid`` for the
bundled model. All are scored by :func:`fcn_deploy.evaluation.evaluate` at label resolution.

Images go in at the size the video runtime would choose (:mod:`fcn_deploy.runtime.input_size`):
the images of the model's own training dataset at their own size (they are the training
scale), any other dataset's resized to the model's training scale; ``--input-size`` as in
``run``. ``--scales`` scores every image resized by each factor instead, to choose the
scale for a camera.
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
    p.add_argument("--model", required=True, help="checkpoint .pt, model .onnx/.engine, camvid (bundled), or "
                   "triton://HOST:PORT/NAME (a model on a Triton server; triton+grpc:// for gRPC)")
    add_data_arguments(p, dataset_required=False)
    p.add_argument("--split", default="test", help="dataset split (default test)")
    p.add_argument("--input-size", default=None, metavar="native|HxW",
                   help="network input size: native (each image's own), HxW (one size for all); default: the "
                   "model's training scale (the images' own size on the dataset it was trained on). Scores stay "
                   "at label size")
    p.add_argument("--size", type=parse_size, default=None, metavar="HxW", help=argparse.SUPPRESS)  # old --input-size HxW
    p.add_argument("--scales", default=None, metavar="LIST",
                   help="score each image resized by each of these factors (e.g. 0.5,0.75,1,1.5,2): mean IU per "
                   "input scale, to choose the scale for a camera")
    p.add_argument("--device", default=None,
                   help="cpu or cuda for checkpoints and ONNX (default cpu: ONNX Runtime); tensorrt for ONNX through "
                   "the TensorRT EP; openvino or openvino:GPU for ONNX in OpenVINO; cuda for an engine (its default)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="precision of an exported model's float layers: fp32 (default, on every engine) or bf16 "
                   "(--device openvino on a CPU with AVX512_BF16 or AMX)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images (a quick look)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=run)


def parse_scales(text: str) -> List[float]:
    """``"0.5,0.75,1,1.5,2"`` -> ``[0.5, 0.75, 1.0, 1.5, 2.0]``; positive factors only."""
    scales = []
    for part in (p.strip() for p in text.split(",")):
        try:
            value = float(part)
        except ValueError:
            value = 0.0
        if not value > 0 or value > 16:
            raise FcnDeployError(f"--scales: bad factor {part!r}; expected positive numbers up to 16, e.g. 0.5,1,2")
        scales.append(value)
    return scales


def resolve_model(spec: str) -> str:
    """``camvid`` -> the bundled ONNX (or, where only that is installed, its checkpoint); a
    path of any model kind, or a ``triton://`` URL, as is."""
    from ..runtime.model_files import CHECKPOINT, ENGINE, ONNX, TRITON, resolve_model_file

    return str(resolve_model_file(spec, (ONNX, ENGINE, CHECKPOINT, TRITON)))


class _Model:
    """What eval needs of a model: a predictor (at each image's own size), the facts to
    report, its training scale and the sizes it accepts (an engine's profile)."""

    def __init__(self, predict: Callable, num_classes: int, classes: Optional[List[str]], dataset: Optional[str],
                 runs_on: str, close: Callable[[], None] = lambda: None, scale: Any = None, profile: Any = None) -> None:
        self.predict, self.num_classes, self.classes = predict, num_classes, classes
        self.dataset, self.runs_on, self.close = dataset, runs_on, close
        self.scale, self.profile = scale, profile


def open_model(path: str, device: Optional[str], size: Optional[Tuple[int, int]], threads: Optional[int],
               precision: str = "fp32") -> _Model:
    from ..runtime.model_files import CHECKPOINT, ONNX, default_device, model_kind

    kind = model_kind(path)
    device = device or default_device(kind)
    if kind != CHECKPOINT:
        from ..evaluation import BackendPredictor
        from ..runtime.backends import open_backend

        options: Dict[str, Any] = {"threads": threads} if threads and kind == ONNX else {}
        backend = open_backend(path, device=device, precision=precision, **options)
        meta = backend.metadata
        if meta is None:
            backend.close()
            raise FcnDeployError(f"{path} carries no fcn-deploy metadata: export it with `fcn-deploy export`")
        from ..runtime.input_size import backend_profile, training_scale

        runs_on = f"{type(backend).__name__} ({', '.join(backend.providers)}; {backend.execution_precision})"
        return _Model(BackendPredictor(backend, size), meta.num_classes, list(meta.classes), meta.dataset,
                      runs_on, backend.close, training_scale(meta), backend_profile(backend))
    else:
        import torch

        from ..training.checkpoint import load_checkpoint_model
        from ..training.predict import TorchPredictor

        if precision != "fp32":
            raise FcnDeployError(f"--precision {precision} is for exported models: a checkpoint is scored in PyTorch "
                                 f"fp32; export it and score the .onnx with --device openvino --precision {precision}")
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
        from ..runtime.input_size import scale_from_facts, training_scale_facts

        scale = scale_from_facts(training_scale_facts(ckpt.get("dataset"), ckpt.get("recipe")))
        return _Model(predictor, int(ckpt["num_classes"]), ckpt.get("classes"), ckpt.get("dataset"),
                      f"PyTorch {torch.__version__} on {device}", scale=scale)


def run(args: argparse.Namespace) -> int:
    import json
    import time

    from ..data import build_dataset
    from ..evaluation import (
        ResizedPredictor, check_classes, evaluate, evaluate_scales, format_report, format_scales, json_safe, sizes_text,
    )
    from ..runtime.input_size import InputSizer, parse_input_size

    if args.limit is not None and args.limit < 1:
        raise FcnDeployError("--limit must be >= 1")
    spec = args.size if args.size else parse_input_size(args.input_size, "--input-size")
    scales = parse_scales(args.scales) if args.scales is not None else None
    if scales and (args.input_size or args.size):
        raise FcnDeployError("--scales and --input-size both choose the input size: give one")
    path = resolve_model(args.model)
    model = open_model(path, args.device, None, args.threads, args.precision)
    try:
        dataset_name = args.dataset or model.dataset
        if not dataset_name:
            raise FcnDeployError(f"{path} does not say what it was trained on: give --dataset")
        root = resolve_root(dataset_name, args.root)
        dataset = build_dataset(dataset_name, root, args.split, **dict(args.dataset_option))
        check_classes(model.classes, model.num_classes, dataset, os.path.basename(path))
        count = len(dataset) if args.limit is None else min(args.limit, len(dataset))
        own = bool(model.dataset) and str(model.dataset).lower() == str(dataset_name).lower()
        sizer = InputSizer(spec, model.scale, model.profile, own_dataset=own, announce=False)
        predict = ResizedPredictor(model.predict, sizer.size_for)

        bar = None
        try:
            from tqdm import tqdm

            bar = tqdm(total=count * len(scales or [1]), unit="img", desc=f"eval {dataset_name}/{args.split}",
                       disable=None)
        except ImportError:
            pass
        progress = bar.update if bar is not None else None
        start = time.perf_counter()
        try:
            if scales:
                fit = model.profile.fit if model.profile is not None else None
                records = evaluate_scales(dataset, model.predict, scales, range(count), progress, fit)
            else:
                cm = evaluate(dataset, predict, range(count), progress)
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - start
    finally:
        model.close()

    if scales:
        if args.json:
            print(json.dumps({"model": path, "runs_on": model.runs_on, "dataset": dataset_name, "split": args.split,
                              "images": count, "scales": records, "seconds": round(seconds, 3)}, indent=2))
        else:
            print(f"{path} on {dataset_name}/{args.split}: {count} images per scale, images resized by each factor, "
                  f"labels mapped back to the ground truth's size; {model.runs_on}, {seconds:.1f} s "
                  "(ms/img includes reading the image)")
            print(format_scales(records))
        return 0

    scores = cm.scores()
    if args.json:
        safe = json_safe(scores)
        report = {
            "model": path,
            "runs_on": model.runs_on,
            "dataset": dataset_name,
            "split": args.split,
            "images": count,
            "size": list(spec) if isinstance(spec, tuple) else None,
            "input_size": sizes_text(predict.sizes),
            "input_size_rule": sizer.summary(),
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
        print(f"{path} on {dataset_name}/{args.split}: {count} images, input {sizes_text(predict.sizes)} "
              f"({sizer.summary()}), {model.runs_on}, {seconds:.1f} s")
        print(format_report(scores, dataset.classes))
    return 0
