"""``fcn-deploy models``: the model zoo with parameter counts and GFLOPs."""
from __future__ import annotations

import argparse

DEFAULT_SIZE = "360x480"  # H x W: CamVid's 480x360 frames


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list the model zoo with parameters and GFLOPs",
        description="List every model build_model() knows, with its parameter count, GFLOPs "
        "(2 x multiply-accumulates of convolutions and linear layers) for one image, "
        "the input normalisation its weights expect, and its backbone.",
    )
    parser.add_argument("--size", default=DEFAULT_SIZE, metavar="HxW",
                        help=f"input height x width for GFLOPs (default {DEFAULT_SIZE})")
    parser.add_argument("--num-classes", type=int, default=21, metavar="N",
                        help="output classes (default 21, PASCAL VOC's)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def normalization_name(norm) -> str:
    """The short name of a known normalisation, else its order, mean and std."""
    from .. import normalization as N

    for name in ("CAFFE_VGG", "TORCHVISION_IMAGENET", "EFFICIENTNET_LITE"):
        if norm == getattr(N, name):
            return name.lower()
    return f"{norm.channel_order} mean={norm.mean} std={norm.std}"


def backbone_name(model, name: str) -> str:
    """``model.backbone_name`` if set, else what follows ``fcnXs_`` (and ``atonce_``) in the name."""
    explicit = getattr(model, "backbone_name", None)
    if explicit:
        return explicit
    rest = name.split("_", 1)[1] if "_" in name else name
    return rest[len("atonce_"):] if rest.startswith("atonce_") else rest


def _build_meta(name: str, num_classes: int):
    """Build ``name`` with no real storage (shapes only), falling back to a real build."""
    import torch

    from ..models import build_model

    try:
        with torch.device("meta"):
            return build_model(name, num_classes)
    except Exception:  # a family whose constructor needs real tensors
        with torch.no_grad():
            return build_model(name, num_classes).to("meta")


def describe(name: str, num_classes: int, height: int, width: int) -> dict:
    """One row of the zoo table."""
    from ..models.flops import count_flops, count_parameters

    model = _build_meta(name, num_classes)
    return {
        "name": name,
        "parameters": count_parameters(model),
        "gflops": round(count_flops(model, height, width), 3),
        "input_size": [height, width],
        "normalization": normalization_name(model.normalization),
        "backbone": backbone_name(model, name),
    }


def format_table(rows) -> str:
    header = ("model", "params (M)", "GFLOPs", "normalisation", "backbone")
    lines = [header] + [
        (r["name"], f"{r['parameters'] / 1e6:.2f}", f"{r['gflops']:.1f}", r["normalization"], r["backbone"])
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    right = {1, 2}
    out = []
    for line in lines:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    import json

    from ..errors import FcnDeployError
    from ..models import available_models
    from ..options import parse_size

    height, width = parse_size(args.size, "--size")
    if args.num_classes < 1:
        raise FcnDeployError(f"--num-classes must be at least 1, not {args.num_classes}")
    rows = [describe(name, args.num_classes, height, width) for name in available_models()]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"GFLOPs for one {width}x{height} (WxH) image, {args.num_classes} classes")
        print(format_table(rows))
    return 0
