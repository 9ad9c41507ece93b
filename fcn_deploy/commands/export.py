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
    scale_out = parser.add_mutually_exclusive_group()
    scale_out.add_argument("--triton", metavar="REPO",
                           help="write a Triton model repository: REPO/NAME/config.pbtxt and REPO/NAME/1/model.onnx "
                                "(ONNX Runtime backend, dynamic batching, the metadata as parameters)")
    scale_out.add_argument("--deepstream", metavar="DIR",
                           help="write what DeepStream's nvinfer needs into DIR: a float NCHW -> per-class scores "
                                "ONNX, config_infer_primary_fcn.txt, labels.txt and a deepstream-app config")
    parser.add_argument("--engine", action="append", default=[], metavar="ENGINE",
                        help="with --triton: a TensorRT engine from `fcn-deploy build` (repeatable, one per GPU kind) "
                             "to serve as a tensorrt_plan model instead of exporting ONNX")
    parser.add_argument("--name", default=None,
                        help="with --triton: the model's name in the repository (default: camvid, or the net's name)")
    parser.add_argument("--max-batch", type=int, default=8, metavar="N",
                        help="with --triton: max_batch_size of the model config (default 8)")
    parser.add_argument("--infer-size", default=None, metavar="HxW",
                        help="with --deepstream: nvinfer's network input size (default: the input-size rule for "
                             "--deepstream-source-size: short side to the model's training short side, aspect kept)")
    parser.add_argument("--deepstream-source-size", default="1080x1920", metavar="HxW",
                        help="with --deepstream: the camera's frame size, the streammux's (HxW like every size here; "
                             "default 1080x1920, a 1080p camera); nvinfer keeps its aspect ratio "
                             "(maintain-aspect-ratio=1, symmetric-padding=1)")
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


def _deepstream(result, folder: str, size, source_size, overwrite: bool) -> int:
    """The DeepStream files from the logits graph just exported (removed afterwards)."""
    import os

    from fcn_deploy.converters.deepstream import write_deepstream

    try:
        files = write_deepstream(result.path, folder, size=size, source_size=source_size, overwrite=overwrite)
    finally:
        os.remove(result.path)
    keys = files.keys
    print(f"DeepStream files for {result.metadata.model_name} in {folder}:")
    print(f"  {os.path.basename(files.onnx_path)}: input N x 3 x H x W float (nvinfer normalises), output scores "
          f"N x {result.metadata.num_classes} x H x W (softmax)")
    print(f"  {os.path.basename(files.infer_config)}: network-type=2, infer-dims={keys['infer-dims']}, "
          f"net-scale-factor={keys['net-scale-factor']}, offsets={keys['offsets']}, network-mode={keys['network-mode']}")
    print(f"  streammux {source_size[1]}x{source_size[0]} (the camera's size), maintain-aspect-ratio=1, "
          "symmetric-padding=1: frames keep their aspect ratio")
    print(f"  {os.path.basename(files.labels)}, {os.path.basename(files.app_config)} (nvsegvisual)")
    print(f"On the Jetson:  cd {folder} && deepstream-app -c {os.path.basename(files.app_config)}")
    return 0


def _plan_repository(args: argparse.Namespace) -> int:
    """``--triton REPO --engine E ...``: a tensorrt_plan model from built engines (nothing exported)."""
    import os

    from fcn_deploy.converters.triton_repository import ngc_command, write_plan_model

    from ..errors import FcnDeployError

    name = args.name or os.path.splitext(os.path.basename(args.engine[0]))[0].split("_sm")[0]
    repo = write_plan_model(args.engine, args.triton, name, overwrite=args.overwrite)
    ccs = ", ".join(sorted(repo.config.cc_model_filenames))
    if not ccs:
        raise FcnDeployError("no engine was written")
    print(f"Triton model repository: {repo.config_path} (platform tensorrt_plan, compute capability {ccs}, "
          f"max batch {repo.config.max_batch_size})")
    print(f"  serve it with NVIDIA's container:  {ngc_command(args.triton)}")
    print(f"  then run against it:               fcn-deploy run --model triton://localhost:8000/{name}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Export (see the parser); a failed export leaves nothing it created behind (the ONNX file,
    ``REPO/NAME/1/``, the DeepStream folder, the folders ``--output`` named)."""
    import contextlib

    with contextlib.ExitStack() as undo:
        return _run(args, undo)


def _run(args: argparse.Namespace, undo) -> int:
    import os
    import sys

    from ..fileio import removed_on_failure

    if args.engine:
        from ..errors import FcnDeployError

        if not args.triton:
            raise FcnDeployError("--engine goes with --triton REPO (a tensorrt_plan model from built engines)")
        # Nothing is exported from built engines: options that shape an export would be ignored.
        ignored = [flag for flag, given in (
            ("--fp16", args.fp16), ("--int8", args.int8), ("--calib", args.calib), ("--logits", args.logits),
            ("--keep-fp32", args.keep_fp32), ("--output", args.output),
        ) if given]
        if ignored:
            raise FcnDeployError(
                f"{', '.join(ignored)} cannot apply to --engine: an engine's precision and graph were fixed "
                f"when it was built (fcn-deploy build MODEL.onnx --fp16 ...)")
        undo.enter_context(removed_on_failure(folders=[args.triton]))
        return _plan_repository(args)
    from fcn_deploy.converters.tensorrt_build import NOT_BUILT_HINT, build_after_export, tensorrt_available

    from ..options import parse_key_values
    from ..workflows import export

    from ..errors import FcnDeployError
    from ..options import parse_size
    from ..runtime.assets import BUNDLED_MODELS

    precision = "fp16" if args.fp16 else "int8" if args.int8 else "fp32"

    if args.name and not args.triton:
        raise FcnDeployError("--name names the model in a Triton repository; it goes with --triton REPO")
    if args.deepstream and (args.int8 or args.logits or args.output):
        raise FcnDeployError("--deepstream writes its own float NCHW scores graph (fp32 or --fp16) into DIR; "
                             "leave out --int8, --logits and --output")
    if args.triton and args.output:
        raise FcnDeployError("--triton writes the model into REPO/NAME/1/model.onnx; leave out --output")
    infer_size = parse_size(args.infer_size, "--infer-size") if args.infer_size else None
    source_size = parse_size(args.deepstream_source_size, "--deepstream-source-size")
    # A bundled model or zoo net is named as the user named it, a checkpoint by its file.
    name = args.model if args.model in BUNDLED_MODELS or not os.path.exists(args.model) else \
        os.path.splitext(os.path.basename(args.model))[0]
    output, overwrite = args.output, args.overwrite
    triton_name = None
    if args.triton:
        from fcn_deploy.converters.triton_repository import TritonModelConfig, check_free, model_dir

        triton_name = args.name or name
        TritonModelConfig.check_name(triton_name)
        if args.max_batch < 1:
            raise FcnDeployError(f"--max-batch must be >= 1, not {args.max_batch}")
        check_free(args.triton, triton_name, args.overwrite)
        output = os.path.join(model_dir(args.triton, triton_name), "1", "model.onnx")
    logits = args.logits or bool(args.deepstream)
    # From here on files and folders are made: a failure removes those this command made.
    if args.deepstream:
        undo.enter_context(removed_on_failure(folders=[args.deepstream]))
    elif output is not None:
        undo.enter_context(removed_on_failure(files=[output]))
    if args.deepstream:
        from fcn_deploy.converters.deepstream import ONNX_FILE

        if os.path.exists(os.path.join(args.deepstream, ONNX_FILE)) and not args.overwrite:
            raise FcnDeployError(f"{os.path.join(args.deepstream, ONNX_FILE)} exists; pass --overwrite to replace the "
                                 "DeepStream files")
        os.makedirs(args.deepstream, exist_ok=True)
        output, overwrite = os.path.join(args.deepstream, f".{name}_logits.onnx"), True  # a working file

    def progress(iterable):
        try:
            from tqdm import tqdm
        except ImportError:  # the train extra brings it; without it, no bar
            return iterable
        return tqdm(iterable, total=len(iterable) if hasattr(iterable, "__len__") else None, desc="calibrating",
                    unit="img", file=sys.stderr, leave=False)

    result = export(
        args.model,
        output,
        precision=precision,
        logits=logits,
        calib=args.calib,
        calib_images=args.calib_images,
        calib_size=args.calib_size,
        int8_scheme=args.int8_scheme,
        upsampling=args.upsampling,
        keep_fp32=args.keep_fp32.split(","),
        opset=args.opset,
        num_classes=args.num_classes,
        model_options=parse_key_values(args.model_option),
        overwrite=overwrite,
        progress=progress,
    )
    trained = bool(result.metadata.source.get("trained"))
    meta = result.metadata
    if args.deepstream:
        return _deepstream(result, args.deepstream, infer_size, source_size, args.overwrite)
    inp, out = describe_io(meta)
    split = f" on {meta.extra['mean_iu_split']}" if meta.extra.get("mean_iu_split") else ""
    size_mb = os.path.getsize(result.path) / 1e6
    print(f"Exported {meta.model_name} ({precision}) to {result.path} ({size_mb:.1f} MB) in {result.seconds:.1f} s")
    print(f"  input   input:  {inp}")
    print(f"  output  {meta.output}: {out}")
    print(f"  opset {args.opset}, IR version {result.ir_version}, {meta.num_classes} classes"
          + (f", trained on {meta.dataset} (mean IU {meta.mean_iu:.3f}{split})" if meta.dataset and meta.mean_iu is not None else ""))
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
    if triton_name:
        from fcn_deploy.converters.triton_repository import ngc_command, write_onnx_model

        repo = write_onnx_model(result.path, args.triton, triton_name, max_batch_size=args.max_batch, overwrite=True)
        print(f"Triton model repository: {repo.config_path} (platform onnxruntime_onnx, max batch {args.max_batch}, "
              "dynamic batching)")
        print(f"  serve it with NVIDIA's container:  {ngc_command(args.triton)}")
        print(f"  then run against it:               fcn-deploy run --model triton://localhost:8000/{triton_name}")
        return 0
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
