"""``fcn-deploy import``: a segmentation model of your own (an ONNX file, or torchvision's FCN,
DeepLabV3 or LR-ASPP with a weights file) to the deployable ONNX that ``export`` writes."""
from __future__ import annotations

import argparse
from typing import List, Optional

from ..runtime.metadata import INT8_SCHEMES

EPILOG = """\
examples:
  fcn-deploy import fcn_resnet50 --weights fcn_resnet50.pth --classes voc -o fcn_resnet50.onnx
  fcn-deploy import model.onnx --classes voc --rgb --scale 255 \\
      --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --output-name out -o model_deploy.onnx
  fcn-deploy import model.onnx --classes my_classes.txt --bgr --mean 104,117,123 --std 1,1,1 --fp16 -o m_fp16.onnx

The result takes raw N x H x W x 3 uint8 BGR frames and returns N x H x W uint8 labels, with
dynamic batch, height and width, pre-processing and arg-max folded in, scores smaller than the
frame resized to it, and the metadata every fcn-deploy command reads. Nothing is fetched.
"""

TORCHVISION_MEAN = "0.485,0.456,0.406"
TORCHVISION_STD = "0.229,0.224,0.225"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "import", help="import your own segmentation model (ONNX, or torchvision's FCN/DeepLabV3/LR-ASPP)",
        description="Turn a segmentation ONNX (N x 3 x H x W float image in, per-class scores out) or a "
        "torchvision segmentation model with its weights file into a deployable fcn-deploy ONNX.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", metavar="SOURCE", help="an .onnx file, or a torchvision model name (fcn_resnet50, "
                   "fcn_resnet101, deeplabv3_resnet50, lraspp_mobilenet_v3_large, ...) with --weights")
    p.add_argument("--output", "-o", metavar="OUT.onnx", help="output file (default: SOURCE_deploy.onnx here); "
                   "replaced atomically")
    p.add_argument("--weights", metavar="FILE.pth", help="with a torchvision name: its state dict (or a checkpoint "
                   "holding one under 'model' or 'state_dict'); classes and the aux head are read off it")
    p.add_argument("--classes", metavar="voc|cityscapes|camvid|FILE",
                   help="class names (and colours): a dataset's list, or a text file with one class a line, "
                   "NAME or NAME R G B. Its count must match the model's scores (default: class_0 ...)")
    p.add_argument("--mean", metavar="M1,M2,M3", help="per-channel mean the model subtracts, in the model's channel "
                   "order and in units of pixel/--scale (torchvision: 0.485,0.456,0.406 with --scale 255)")
    p.add_argument("--std", metavar="S1,S2,S3", help="per-channel standard deviation it divides by (same units)")
    order = p.add_mutually_exclusive_group()
    order.add_argument("--rgb", dest="channel_order", action="store_const", const="RGB",
                       help="the model takes RGB (default)")
    order.add_argument("--bgr", dest="channel_order", action="store_const", const="BGR", help="the model takes BGR")
    p.add_argument("--scale", type=float, default=None, metavar="S",
                   help="pixels are divided by S before the mean and std apply (255 for models fed 0..1; default 1)")
    p.add_argument("--output-name", metavar="NAME", help="the output holding the class scores, for graphs with "
                   "several (default: the only 4-D output, or torchvision's 'out')")
    p.add_argument("--input-size", metavar="HxW", help="the size the model was trained or validated at (its "
                   "training scale: the runtime resizes frames to this scale)")
    p.add_argument("--resize", choices=("bilinear", "nearest"), default="bilinear",
                   help="how scores smaller than the frame are upsampled to it (default bilinear, PyTorch's "
                   "align_corners=False)")
    p.add_argument("--name", metavar="NAME", help="the model's name in its metadata (default: SOURCE's name)")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="write the float16 variant (uint8/float32 I/O)")
    precision.add_argument("--int8", action="store_true", help="write the symmetric INT8 Q/DQ variant (--calib)")
    p.add_argument("--calib", metavar="DIR|DATASET[:ROOT]", help="calibration images for --int8")
    p.add_argument("--calib-images", type=int, default=64, metavar="N", help="calibration images to use (default 64)")
    p.add_argument("--calib-size", metavar="HxW", help="resize calibration images to this size")
    p.add_argument("--int8-scheme", choices=INT8_SCHEMES, default="s8s8", help="as for export (default s8s8)")
    p.add_argument("--keep-fp32", metavar="NODE,...", default="", help="with --fp16: node names kept in float32")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.set_defaults(func=run)


def parse_triple(text: str, option: str) -> List[float]:
    from ..errors import FcnDeployError

    try:
        values = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        values = []
    if len(values) != 3:
        raise FcnDeployError(f"{option}: expected three comma-separated numbers (one per channel), not {text!r}")
    return values


def normalization_for(args: argparse.Namespace, torchvision: bool):
    """The source's input normalisation from the options: torchvision's ImageNet one for a
    torchvision model unless told otherwise; an ONNX file must say."""
    from fcn_deploy.converters.import_onnx import normalization_from

    from ..errors import FcnDeployError

    given = args.mean is not None or args.std is not None
    if torchvision and not given and args.scale is None:
        mean, std, scale = TORCHVISION_MEAN, TORCHVISION_STD, 255.0
    elif args.mean is None or args.std is None:
        raise FcnDeployError(
            "say how the model expects its input: --mean and --std (with --rgb|--bgr and --scale), e.g. "
            f"torchvision's --rgb --scale 255 --mean {TORCHVISION_MEAN} --std {TORCHVISION_STD}")
    else:
        mean, std, scale = args.mean, args.std, args.scale if args.scale is not None else 1.0
    m, s = parse_triple(mean, "--mean"), parse_triple(std, "--std")
    if scale == 1.0 and args.scale is None and max(m) <= 1.0 and max(s) <= 1.0 and max(m) > 0:
        raise FcnDeployError(f"--mean {mean} --std {std} look like values for pixels in 0..1; add --scale 255 "
                             "(or give them in 0..255 units)")
    return normalization_from(m, s, args.channel_order or "RGB", scale)


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    from fcn_deploy.converters.import_onnx import import_onnx, read_classes

    from ..errors import FcnDeployError
    from ..fileio import check_output_file
    from ..options import parse_size
    from .export import describe_io

    is_onnx = args.source.lower().endswith(".onnx")
    if is_onnx and args.weights:
        raise FcnDeployError("--weights goes with a torchvision model name; an ONNX file carries its weights")
    if not is_onnx and not args.weights:
        if os.path.exists(args.source):
            raise FcnDeployError(f"{args.source}: give an .onnx file, or a torchvision model name with --weights FILE.pth")
        raise FcnDeployError(f"{args.source}: a torchvision model needs its weights: --weights FILE.pth "
                             "(nothing is downloaded)")
    precision = "fp16" if args.fp16 else "int8" if args.int8 else "fp32"
    name = args.name or os.path.splitext(os.path.basename(args.source))[0]
    output = args.output or f"{name}_deploy{'' if precision == 'fp32' else '_' + precision}.onnx"
    if not output.lower().endswith(".onnx"):
        raise FcnDeployError(f"output {output} must end in .onnx (the runtime picks the backend by suffix)")
    if os.path.exists(output) and not args.overwrite:
        raise FcnDeployError(f"{output} exists; pass --overwrite to replace it, or choose --output")
    check_output_file(output, "output")
    if os.path.abspath(output) == os.path.abspath(args.source):
        raise FcnDeployError("--output would replace SOURCE; write the imported model to another file")
    normalization = normalization_for(args, torchvision=not is_onnx)
    classes = read_classes(args.classes) if args.classes else None
    input_size = parse_size(args.input_size, "--input-size") if args.input_size else None
    frames = None
    if args.calib:
        from fcn_deploy.converters.calibration import load_calibration_frames

        size = parse_size(args.calib_size, "--calib-size") if args.calib_size else None
        frames = load_calibration_frames(args.calib, args.calib_images, size)
    model, facts, source_path = None, None, args.source
    if not is_onnx:
        from fcn_deploy.converters.import_torchvision import torchvision_source

        print(f"Building torchvision's {args.source} with {args.weights} and exporting it to ONNX ...", file=sys.stderr)
        model, facts = torchvision_source(args.source, args.weights)
        source_path = f"{args.source}.onnx"

    def progress(iterable):
        try:
            from tqdm import tqdm
        except ImportError:
            return iterable
        return tqdm(iterable, total=len(iterable) if hasattr(iterable, "__len__") else None, desc="calibrating",
                    unit="img", file=sys.stderr, leave=False)

    result = import_onnx(
        source_path, output, normalization=normalization, classes=classes, output_name=args.output_name,
        input_size=input_size, resize=args.resize, model_name=name, source_facts=facts, precision=precision,
        keep_fp32=[n.strip() for n in args.keep_fp32.split(",") if n.strip()], calib_frames=frames,
        progress=progress, int8_scheme=args.int8_scheme, model=model,
    )
    meta = result.metadata
    inp, out = describe_io(meta)
    size_mb = os.path.getsize(result.path) / 1e6
    print(f"Imported {args.source} ({precision}) to {result.path} ({size_mb:.1f} MB) in {result.seconds:.1f} s")
    print(f"  input   input:  {inp}")
    print(f"  output  {meta.output}: {out}")
    norm = meta.normalization
    print(f"  {meta.num_classes} classes ({', '.join(meta.classes[:6])}{', ...' if meta.num_classes > 6 else ''}); "
          f"normalisation {norm.channel_order} (x - {[round(v, 3) for v in norm.mean]}) / "
          f"{[round(v, 3) for v in norm.std]} on 0..255 pixels")
    scores = f"scores from output {meta.source.get('output_name')}: {result.score_size}"
    print(f"  {scores}" + (f", resized to the frame ({result.resized})" if result.resized else ", at the frame's size"))
    if result.dropped_outputs:
        print(f"  left out: {', '.join(result.dropped_outputs)}")
    if result.agreement is not None:
        print(f"  arg-max agreement with FP32 on {result.calibration_images} calibration images: "
              f"{100 * result.agreement:.2f}%")
    check = result.tensorrt
    if check is None:
        print("  TensorRT: not for TensorRT (a u8s8 INT8 graph for ONNX Runtime on CPUs)")
    elif check.ok:
        print(f"  TensorRT: {check.summary()}")
    else:
        for line in check.lines():
            print(f"  warning: {line}")
    rel = os.path.relpath(result.path)
    steps = []
    if is_onnx:
        steps.append((f"fcn-deploy compare {rel} {args.source}", "parity with the ONNX it came from"))
    steps.append((f"fcn-deploy run --model {rel} --camera 0", "live segmentation"))
    steps.append((f"fcn-deploy build {rel}", "TensorRT engine for this GPU"))
    print("Next steps:")
    width = max(len(cmd) for cmd, _ in steps)
    for cmd, why in steps:
        print(f"  {cmd.ljust(width)}   # {why}")
    return 0
