"""``fcn-deploy check``: will TensorRT's ONNX parser accept this ONNX? (No TensorRT or GPU needed.)"""
from __future__ import annotations

import argparse

HELP = "check an ONNX against the ONNX parser of TensorRT 8.5, 8.6, 10 and 11 (no TensorRT or GPU needed)"

EPILOG = """\
examples:
  fcn-deploy check camvid                          # the bundled model, against every release
  fcn-deploy check camvid_fp16.onnx --tensorrt 8.5 # JetPack 5's TensorRT only
  fcn-deploy check camvid_int8.onnx --dla --shapes 1x360x480x3

One line per problem, then one line of verdict (which releases refuse it, how many problems,
under which rules) and exit status 1; or one line naming the releases that accept the graph.
TensorRT 10 and 11 are checked against the 10.0 operator matrix, the nearest published.
With --dla: the DLA's rules (one fixed shape; FP16 or INT8) and a note for each kind of layer
that would run on the GPU instead (fcn-deploy build --dla builds with GPU fallback).
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "check", help=HELP, description=HELP + ".", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="ONNX file, or a bundled model's name (camvid)")
    parser.add_argument(
        "--tensorrt", action="append", default=[], metavar="RELEASE",
        help="8.5, 8.6, 10 or 11; repeat or separate with commas (default: all; with --dla: 8.5, 8.6, 10)",
    )
    parser.add_argument("--dla", action="store_true", help="also check what a DLA engine needs and what it hands to the GPU")
    parser.add_argument(
        "--shapes", action="append", default=[], metavar="[NAME:]min=AxBxCxD,opt=...,max=...",
        help="the shape profile the engine would be built with (as for fcn-deploy build); the DLA needs one fixed shape",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from fcn_deploy.converters.tensorrt_check import check_onnx, load_model, parse_releases, profile_for
    from fcn_deploy.runtime.model_files import BUNDLED_MODELS, ONNX, resolve_model_file

    releases = parse_releases(args.tensorrt)
    path = resolve_model_file(args.model, (ONNX,))
    label = path.name if args.model in BUNDLED_MODELS else args.model
    model = load_model(path)
    profile = profile_for(model, args.shapes) if args.shapes else None
    report = check_onnx(model, releases, dla=args.dla, profile=profile, label=label)
    for line in report.lines():
        print(line)
    if not report.ok:  # the verdict last, where a long report's reader looks (lines() ends with it when ok)
        print(report.closing_line())
    return 0 if report.ok else 1
