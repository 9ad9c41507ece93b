"""``fcn-deploy build``: an ONNX file -> a TensorRT engine with its sidecar (run on the target)."""
from __future__ import annotations

import argparse

HELP = "build a TensorRT engine from an exported ONNX (on the device that will run it)"

EPILOG = """\
examples:
  fcn-deploy build camvid.fp16.onnx
  fcn-deploy build camvid.onnx --shapes min=1x180x240x3,opt=1x360x480x3,max=1x720x960x3
  fcn-deploy build camvid.int8.onnx --dla 0 --timing-cache ~/.cache/fcn-deploy/timing.cache

The engine is tied to this TensorRT version and this GPU: build it where it will run. An
existing engine is reused when its sidecar (NAME.engine.json) matches; otherwise it is rebuilt
and the reason is printed. Without TensorRT, run the ONNX through ONNX Runtime's TensorRT
execution provider instead: fcn-deploy run --model MODEL.onnx --device tensorrt
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "build", help=HELP, description=HELP + ".", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("onnx", help="ONNX file from `fcn-deploy export`")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument(
        "--fp16", dest="precision", action="store_const", const="fp16",
        help="require FP16 (TensorRT >= 10 takes it from an FP16 ONNX: fcn-deploy export --fp16)",
    )
    precision.add_argument(
        "--bf16", dest="precision", action="store_const", const="bf16",
        help="build an FP32 ONNX in bf16 (TensorRT 10, GPUs of compute capability 8.0+; refused elsewhere)",
    )
    precision.add_argument(
        "--int8", dest="precision", action="store_const", const="int8",
        help="require INT8 (needs an INT8 Q/DQ ONNX: fcn-deploy export --int8)",
    )
    parser.add_argument(
        "--shapes", action="append", default=[], metavar="[NAME:]min=AxBxCxD,opt=...,max=...",
        help="shape range of a dynamic input (repeat per input); default: from the model's metadata",
    )
    parser.add_argument("--workspace", type=float, metavar="GB", help="builder workspace limit in GB")
    parser.add_argument("--opt-level", type=int, metavar="N", help="builder optimisation level 0-5 (TensorRT >= 8.6)")
    parser.add_argument("--dla", type=int, metavar="N", help="run on DLA core N (Jetson), falling back to the GPU")
    parser.add_argument("--timing-cache", metavar="FILE", help="read and update this timing cache")
    parser.add_argument(
        "--version-compatible", action="store_true",
        help="an engine later TensorRT releases can also run (TensorRT >= 8.6; may be slower)",
    )
    parser.add_argument(
        "--contexts", type=int, default=1, metavar="N",
        help="optimisation profiles for N concurrent execution contexts (2 lets the runtime overlap frames)",
    )
    parser.add_argument(
        "--max-batch", type=int, default=1, metavar="N",
        help="largest batch of the default profile: the number of streams `fcn-deploy run` batches (default 1)",
    )
    parser.add_argument("--device", default="cuda", metavar="cuda[:N]", help="the GPU to build for (default cuda, GPU 0)")
    parser.add_argument("-o", "--output", metavar="ENGINE", help="engine file (default: the ONNX's name with .engine)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the engine is up to date; overwrite any file")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from fcn_deploy.converters.tensorrt_shapes import parse_shapes_arg

    from ..fileio import removed_on_failure

    for text in args.shapes:  # bad syntax is reported before anything heavy happens
        parse_shapes_arg(text)
    # A build that fails (no TensorRT, a refused graph) leaves no folder that checking created.
    created = [f for f in (args.output, args.timing_cache) if f]
    with removed_on_failure(files=created):
        return _build(args)


def _build(args: argparse.Namespace) -> int:
    from fcn_deploy.converters.tensorrt_build import BuildOptions, ensure_engine
    from fcn_deploy.converters.tensorrt_shapes import profile_text

    from ..fileio import check_output_file

    if args.output:  # a path that cannot be written, before minutes of building
        check_output_file(args.output, "--output")
    if args.timing_cache:
        check_output_file(args.timing_cache, "--timing-cache")
    options = BuildOptions(
        precision=args.precision,
        shapes=list(args.shapes),
        workspace_gb=args.workspace,
        opt_level=args.opt_level,
        dla_core=args.dla,
        timing_cache=args.timing_cache,
        version_compatible=args.version_compatible,
        contexts=args.contexts,
        max_batch=args.max_batch,
    )
    result = ensure_engine(args.onnx, args.output, options, force=args.force, device=args.device)
    side = result.sidecar
    where = f"TensorRT {side.tensorrt_version}, {side.gpu_name} (sm {side.compute_capability}), {side.precision}"
    shapes = "; ".join(profile_text(p) for p in side.profiles[:1]) or "fixed shapes"
    if result.reused:
        print(f"{result.engine_path} is up to date ({where}); --force rebuilds it")
    else:
        print(f"built {result.engine_path} in {result.seconds:.1f} s ({where}; {shapes}); reason: {result.reason}")
    print(f"sidecar: {result.engine_path}.json")
    return 0
