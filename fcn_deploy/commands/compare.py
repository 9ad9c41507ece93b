"""``fcn-deploy compare``: an exported model against its PyTorch checkpoint or another ONNX file."""
from __future__ import annotations

import argparse

DEFAULT_SIZES = "97x131,256x320,360x480"  # fcn_deploy.converters.compare.DEFAULT_SIZES (no import for --help)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare an ONNX model with its checkpoint (or another ONNX file)",
        description="Run A (an ONNX file) and B on the same frames at several sizes and report, per "
        "size, the absolute and relative error of the logits (max, mean, p99) and the arg-max "
        "agreement, with pass/fail against tolerances. B defaults to the checkpoint A was "
        "exported from. Exit status 0 when every size passes, 1 otherwise.",
    )
    parser.add_argument("a", metavar="A.onnx", help="the model under test (an .onnx file, or triton://HOST:PORT/NAME)")
    parser.add_argument("b", nargs="?", metavar="B",
                        help="reference: a checkpoint or an ONNX file (default: A's source checkpoint)")
    parser.add_argument("--sizes", default=None, metavar="HxW,...",
                        help=f"input sizes (default {DEFAULT_SIZES}; for an INT8 model, the sizes the runtime "
                        "feeds it: each common camera's frame at the model's training scale, and its calibration "
                        "size)")
    parser.add_argument("--batch", type=int, default=2, metavar="N", help="frames per run (default 2)")
    parser.add_argument("--atol", type=float, metavar="X",
                        help="absolute logit tolerance (default: 1e-4 x the reference's logit range "
                        "for FP32; logits not judged for FP16/INT8 unless given)")
    parser.add_argument("--rtol", type=float, default=0.0, metavar="X",
                        help="relative logit tolerance (default 0)")
    parser.add_argument("--min-agreement", type=float, metavar="F",
                        help="minimum arg-max agreement, a fraction (default 0.999 fp32, 0.995 fp16, "
                        "0.95 bf16, 0.95 int8)")
    parser.add_argument("--images", metavar="DIR|DATASET[:ROOT]",
                        help="real images to compare on, a folder or a dataset's training split (resized to "
                             "each size); default: seeded noise. Judge an INT8 model on real images: it is "
                             "calibrated for them, and noise drives its activations outside those ranges")
    parser.add_argument("--device", default="cpu", help="device for A: cpu, cuda, tensorrt, openvino, openvino:GPU (default cpu: ONNX Runtime)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                        help="precision of A's float layers: fp32 (default, on every engine) or bf16 (--device "
                        "openvino on a CPU with AVX512_BF16 or AMX; judged on agreement, like fp16)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise frames")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fcn_deploy.converters.calibration import load_calibration_frames
    from fcn_deploy.converters.compare import (
        DEFAULT_MIN_AGREEMENT,
        OnnxSide,
        Tolerances,
        compare,
        default_sizes,
        format_report,
        reference_side,
    )

    from ..errors import FcnDeployError
    from ..options import parse_sizes
    from ..runtime.model_files import ONNX, TRITON, resolve_model_file

    sizes = parse_sizes(args.sizes, "--sizes") if args.sizes is not None else None
    if sizes is not None and not sizes:
        raise FcnDeployError("--sizes is empty; give e.g. 97x131,360x480")
    if args.batch < 1:
        raise FcnDeployError(f"--batch must be >= 1, not {args.batch}")
    if args.min_agreement is not None and not 0.0 <= args.min_agreement <= 1.0:
        raise FcnDeployError(f"--min-agreement is a fraction in [0, 1], not {args.min_agreement}")
    a = OnnxSide(str(resolve_model_file(args.a, (ONNX, TRITON))), args.device, precision=args.precision)
    try:
        b = reference_side(a, args.b)
    except BaseException:
        a.close()
        raise
    sizes = sizes or default_sizes(a.metadata)
    images = load_calibration_frames(args.images, 64) if args.images else None
    # What A is judged as: its file's precision, or bf16 when its FP32 layers were asked to run in bf16.
    precision = "bf16" if args.precision == "bf16" and a.metadata.precision == "fp32" else a.metadata.precision
    tolerances = Tolerances(
        atol=args.atol,
        rtol=args.rtol,
        min_agreement=args.min_agreement if args.min_agreement is not None else DEFAULT_MIN_AGREEMENT[precision],
        judge_logits=precision == "fp32" or args.atol is not None or args.rtol > 0,
    )
    print(f"A: {a.description}")
    print(f"B: {b.description}")
    if precision == "int8" and images is None:
        print("note: INT8 judged on seeded noise, outside the range of the images it was calibrated on; "
              "pass --images DIR|DATASET[:ROOT] for the agreement on real frames")
    if precision == "bf16" and images is None:
        print("note: bf16 judged on seeded noise, where near-ties are everywhere; pass --images DIR|DATASET[:ROOT] "
              "for the agreement on real frames")
    try:
        reports = compare(a, b, sizes, args.batch, tolerances, args.seed, images)
    finally:
        a.close()
        b.close()
    for line in format_report(reports, tolerances):
        print(line)
    return 0 if all(r.passed for r in reports) else 1
