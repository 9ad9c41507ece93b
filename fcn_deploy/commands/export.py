"""``fcn-deploy export``: a trained FCN (or a zoo model) to a deployable ONNX file."""
from __future__ import annotations

import argparse

from ..runtime.metadata import INT8_SCHEMES, UPSAMPLING_FORMS

DEFAULT_CALIB_IMAGES = 64  # fcn_deploy.workflows.DEFAULT_CALIB_IMAGES


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a model to ONNX (fp32, fp16 or int8 Q/DQ)",
        description="Export a model to ONNX with dynamic batch, height and width. By default the "
        "graph takes raw camera frames (N x H x W x 3 uint8 BGR) and returns labels (N x H x W "
        "uint8): pre-processing and arg-max run on the accelerator. The file carries the class "
        "names, palette, normalisation and training metrics in its metadata.",
    )
    parser.add_argument("--model", default="camvid", metavar="NAME|CHECKPOINT",
                        help="a checkpoint from `fcn-deploy train`, the bundled model `camvid` "
                        "(default), or a zoo name (untrained; for trying the deployment path)")
    parser.add_argument("--output", "-o", metavar="M.onnx",
                        help="output file (default: MODEL[_fp16|_int8][_logits].onnx here); replaced atomically")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true",
                           help="float16 graph with float32/uint8 inputs and outputs")
    precision.add_argument("--int8", action="store_true",
                           help="symmetric INT8 Q/DQ graph calibrated on --calib images")
    parser.add_argument("--calib", metavar="DIR|DATASET[:ROOT]",
                        help="calibration images for --int8: a folder, or a dataset's training split")
    parser.add_argument("--calib-images", type=int, default=DEFAULT_CALIB_IMAGES, metavar="N",
                        help=f"calibration images to use, spread over the source (default {DEFAULT_CALIB_IMAGES})")
    parser.add_argument("--calib-size", metavar="HxW",
                        help="resize calibration images to this size (default: the first image's size)")
    parser.add_argument("--logits", action="store_true",
                        help="the plain network: input N x 3 x H x W float32 normalised, output "
                        "N x C x H x W float32 logits (for parity work and foreign tools)")
    parser.add_argument("--int8-scheme", choices=INT8_SCHEMES, default="s8s8",
                        help="with --int8: s8s8, symmetric, what TensorRT builds (default); u8s8, uint8 "
                             "activations and int32 biases, which ONNX Runtime runs as integer kernels on "
                             "x86 CPUs (TensorRT refuses it)")
    parser.add_argument("--upsampling", choices=UPSAMPLING_FORMS, default="subpixel",
                        help="how the learned upsamplers are written: subpixel, a convolution plus "
                             "DepthToSpace, several times faster on CPUs (default); deconv, ConvTranspose "
                             "as trained. The outputs are the same")
    parser.add_argument("--keep-fp32", metavar="NODE,...", default="",
                        help="with --fp16: graph node names kept in float32")
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    parser.add_argument("--opset", type=int, default=17,
                        help="ONNX opset (default 17: TensorRT 8.6 and later parse it)")
    parser.add_argument("--num-classes", type=int, default=21, metavar="N",
                        help="classes of an untrained zoo model (default 21); checkpoints bring their own")
    parser.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                        help="build option of an untrained zoo model, e.g. width=16 (repeatable)")
    parser.set_defaults(func=run)


def describe_io(meta) -> tuple:
    if meta.folds_preprocessing:
        inp = "N x H x W x 3 uint8 BGR (pre-processing folded in)"
    else:
        norm = meta.normalization
        inp = f"N x 3 x H x W float32, {norm.channel_order} normalised (x - {list(norm.mean)}) / {list(norm.std)}"
    out = "N x H x W uint8 class indices (arg-max folded in)" if meta.folds_argmax else \
        f"N x {meta.num_classes} x H x W float32 logits"
    return inp, out


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    from converters.tensorrt_build import NOT_BUILT_HINT, build_after_export, tensorrt_available

    from ..options import parse_key_values
    from ..workflows import export

    precision = "fp16" if args.fp16 else "int8" if args.int8 else "fp32"

    def progress(iterable):
        try:
            from tqdm import tqdm
        except ImportError:  # the train extra brings it; without it, no bar
            return iterable
        return tqdm(iterable, total=len(iterable) if hasattr(iterable, "__len__") else None, desc="calibrating",
                    unit="img", file=sys.stderr, leave=False)

    result = export(
        args.model,
        args.output,
        precision=precision,
        logits=args.logits,
        calib=args.calib,
        calib_images=args.calib_images,
        calib_size=args.calib_size,
        int8_scheme=args.int8_scheme,
        upsampling=args.upsampling,
        keep_fp32=args.keep_fp32.split(","),
        opset=args.opset,
        num_classes=args.num_classes,
        model_options=parse_key_values(args.model_option),
        overwrite=args.overwrite,
        progress=progress,
    )
    trained = bool(result.metadata.source.get("trained"))
    meta = result.metadata
    inp, out = describe_io(meta)
    size_mb = os.path.getsize(result.path) / 1e6
    print(f"Exported {meta.model_name} ({precision}) to {result.path} ({size_mb:.1f} MB) in {result.seconds:.1f} s")
    print(f"  input   input:  {inp}")
    print(f"  output  {meta.output}: {out}")
    print(f"  opset {args.opset}, IR version {result.ir_version}, {meta.num_classes} classes"
          + (f", trained on {meta.dataset} (mean IU {meta.mean_iu:.3f})" if meta.dataset and meta.mean_iu is not None else ""))
    if result.agreement is not None:
        print(f"  arg-max agreement with FP32 on {result.calibration_images} calibration images: "
              f"{100 * result.agreement:.2f}%")
    if not trained:
        print("  note: untrained weights (zoo name given); export a checkpoint for real use")
    rel = os.path.relpath(result.path)
    rel = result.path if rel.startswith("..") else rel
    check = result.tensorrt  # fcn-deploy check on what was written; None for a CPU-only graph
    if check is None:
        print("  TensorRT: not for TensorRT (a u8s8 INT8 graph for ONNX Runtime on CPUs; `--int8` alone "
              "writes TensorRT's)")
    elif check.ok:
        print(f"  TensorRT: {check.summary()}")
    else:
        for line in check.lines():
            print(f"  warning: {line}")
    for_tensorrt = check is not None and check.ok
    # The card's one-step flow: `export --fp16` also builds the engine where TensorRT is here.
    built = build_after_export(result.path) if precision == "fp16" and for_tensorrt else None
    if built is not None:
        print(f"Built TensorRT engine {built.engine_path} "
              f"(TensorRT {built.sidecar.tensorrt_version}, {built.sidecar.gpu_name})")
    steps = []
    if trained:
        # INT8 is judged on the kind of image it was calibrated on, not on noise.
        on_images = f" --images {args.calib}" if precision == "int8" else ""
        steps.append((f"fcn-deploy compare {rel}{on_images}", "parity with the PyTorch checkpoint"))
    steps.append((f"fcn-deploy run --model {rel} --camera 0", "live segmentation with ONNX Runtime"))
    if built is not None:
        steps.append((f"fcn-deploy run --model {built.engine_path} --device cuda --camera 0",
                      "live segmentation with TensorRT"))
    elif for_tensorrt and tensorrt_available():
        flag = f" --{precision}" if precision == "int8" else ""
        steps.append((f"fcn-deploy build {rel}{flag}", "TensorRT engine for this GPU"))
    print("Next steps:")
    width = max(len(cmd) for cmd, _ in steps)
    for cmd, why in steps:
        print(f"  {cmd.ljust(width)}   # {why}")
    if for_tensorrt and not tensorrt_available():
        print(NOT_BUILT_HINT.format(onnx=rel))
    return 0
