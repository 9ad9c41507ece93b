"""PyTorch FCN -> deployable ONNX: dynamic N/H/W, folded pre- and post-processing, metadata.

The steps, each for a failure users of such toolkits keep reporting:

1. :func:`converters.resolve.resolve_model` turns what the user typed (a zoo name, a
   checkpoint path, or ``camvid`` for the bundled model) into a network plus what is known
   about it (classes, palette, dataset, mean IU, the checkpoint's sha256).
2. The class-to-class bilinear deconvolutions become their grouped form (one filter per
   class: the same outputs at 1/C of the work).
3. :class:`fcn_deploy.converters.deploy_graph.DeployGraph` wraps the network so that the graph takes
   the camera's raw uint8 BGR frames and returns uint8 labels (both optional: ``--logits``
   gives the plain network).
4. The TorchScript exporter (``dynamo=False``; the dynamo exporter writes the FCN-8s output
   height as an expression) at opset 17, which TensorRT 8.6 and later parse, with plain
   dynamic dims ``N``, ``H``, ``W``, checked afterwards.
5. onnxslim, strict shape inference, the exact rewrites of :mod:`fcn_deploy.converters.onnx_rewrites`
   (the arg-max ahead of the last pixel shuffle, the last upsampler split by phase group), the
   full checker, the lowest IR version the opset needs, fcn-deploy metadata, a run in ONNX
   Runtime at an odd size, and an atomic write.

FP16 and INT8 variants start from the checked FP32 graph (:mod:`fcn_deploy.converters.onnx_fp16`,
:mod:`fcn_deploy.converters.onnx_int8`) and go through the same final checks.
"""
from __future__ import annotations

import copy
import dataclasses
import io
import logging
import os
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import onnx
import torch
import torch.nn as nn

import fcn_deploy
from fcn_deploy.errors import first_line
from fcn_deploy.models.upsampling import convert_upsampling_to_grouped, convert_upsampling_to_subpixel
from fcn_deploy.normalization import Normalization
from fcn_deploy.runtime.input_size import training_scale_facts
from fcn_deploy.runtime.metadata import (
    LAYOUT_NORMALIZED,
    LAYOUT_RAW_BGR,
    OUTPUT_LABELS,
    OUTPUT_LOGITS,
    INT8_SCHEMES,
    PRECISIONS,
    UPSAMPLING_FORMS,
    ModelMetadata,
    class_names,
    default_palette,
)

from . import onnx_passes
from fcn_deploy.runtime.tensorrt_compat import TENSORRT_INT8_SCHEME, tensorrt_int8_problem

from .deploy_graph import DeployGraph
from .onnx_passes import DEFAULT_OPSET, ExportError
from .resolve import ResolvedModel
from .tensorrt_check import CheckReport, check_onnx
from .onnx_rewrites import argmax_before_pixel_shuffle, split_subpixel_phases
from .onnx_verify import label_agreement, smoke_test

log = logging.getLogger(__name__)

INPUT_NAME = "input"
# The size the graph is traced at: small, non-square, not a multiple of 32, so nothing
# size-specific can hide behind a coincidence.
TRACE_SIZE = (70, 94)


def io_dims(metadata: ModelMetadata) -> Dict[str, List[Any]]:
    """The declared dims the exported graph must have, by tensor name."""
    input_dims = ["N", "H", "W", 3] if metadata.folds_preprocessing else ["N", 3, "H", "W"]
    output_dims = ["N", "H", "W"] if metadata.folds_argmax else ["N", metadata.num_classes, "H", "W"]
    return {INPUT_NAME: input_dims, metadata.output: output_dims}


def tool_versions(*extra: str) -> Dict[str, str]:
    """Versions of the tools that shaped the graph (written into the metadata)."""
    import onnxslim

    versions = {"fcn_deploy": fcn_deploy.__version__, "torch": torch.__version__,
                "onnx": onnx.__version__, "onnxslim": onnxslim.__version__}
    for module in extra:
        mod = __import__(module)
        versions[module] = getattr(mod, "__version__", "unknown")
    return versions


def metadata_for(
    resolved: ResolvedModel,
    fold_preprocessing: bool = True,
    fold_argmax: bool = True,
    precision: str = "fp32",
    opset: int = DEFAULT_OPSET,
    upsampling: str = "subpixel",
) -> ModelMetadata:
    if upsampling not in UPSAMPLING_FORMS:
        raise ExportError(f"unknown upsampling form {upsampling!r}; choose from {', '.join(UPSAMPLING_FORMS)}")
    model, n = resolved.model, resolved.num_classes
    normalization = getattr(model, "normalization", None)
    if not isinstance(normalization, Normalization):
        raise ExportError(f"{resolved.spec}: the model has no `normalization`; cannot describe its input")
    palette = resolved.palette if resolved.palette and len(resolved.palette) == n else default_palette(n)
    return ModelMetadata(
        model_name=getattr(model, "name", type(model).__name__),
        num_classes=n,
        classes=class_names(n, resolved.classes),
        palette=palette,
        normalization=normalization,
        input_layout=LAYOUT_RAW_BGR if fold_preprocessing else LAYOUT_NORMALIZED,
        output=OUTPUT_LABELS if fold_argmax else OUTPUT_LOGITS,
        precision=precision,
        dataset=resolved.dataset,
        mean_iu=resolved.mean_iu,
        source={
            "checkpoint": resolved.checkpoint,
            "sha256": resolved.checkpoint_sha256,
            "model_options": resolved.model_options,
            "trained": resolved.trained,
        },
        exporter={**tool_versions(), "opset": opset},
        extra={"upsampling": upsampling, "training_scale": training_scale_facts(resolved.dataset, resolved.recipe),
               **({"mean_iu_split": resolved.mean_iu_split} if resolved.mean_iu_split else {})},
    )


def trace_to_onnx(
    model: nn.Module, metadata: ModelMetadata, opset: int = DEFAULT_OPSET, trace_size: Tuple[int, int] = TRACE_SIZE
) -> onnx.ModelProto:
    """Export ``model`` (N x 3 x H x W -> N x C x H x W) as the graph ``metadata`` describes.

    Works on a copy: the caller's model keeps its dense upsampling layers. The copy's
    class-to-class deconvolutions become grouped where their weights allow, then sub-pixel
    convolutions unless ``metadata.extra["upsampling"]`` is ``deconv``.
    """
    if metadata.folds_argmax and metadata.num_classes > 256:
        raise ExportError(f"{metadata.num_classes} classes do not fit uint8 labels; export with --logits")
    net = copy.deepcopy(model).eval()
    grouped = convert_upsampling_to_grouped(net)
    log.debug("converted %d class-to-class deconvolutions to grouped form", grouped)
    if metadata.extra.get("upsampling", "subpixel") == "subpixel":
        log.debug("wrote %d deconvolutions in sub-pixel form", convert_upsampling_to_subpixel(net))
    graph = DeployGraph(net, metadata.normalization, metadata.folds_preprocessing, metadata.folds_argmax).eval()
    h, w = trace_size
    if metadata.folds_preprocessing:
        sample = torch.randint(0, 256, (1, h, w, 3), dtype=torch.uint8)
        in_axes = {0: "N", 1: "H", 2: "W"}
    else:
        sample = torch.randn(1, 3, h, w)
        in_axes = {0: "N", 2: "H", 3: "W"}
    out_axes = {0: "N", 1: "H", 2: "W"} if metadata.folds_argmax else {0: "N", 2: "H", 3: "W"}
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        try:
            torch.onnx.export(
                graph,
                (sample,),
                buffer,
                input_names=[INPUT_NAME],
                output_names=[metadata.output],
                opset_version=opset,
                dynamic_axes={INPUT_NAME: in_axes, metadata.output: out_axes},
                do_constant_folding=True,
                dynamo=False,
            )
        except Exception as exc:
            first = first_line(exc)
            raise ExportError(f"torch.onnx.export failed for {metadata.model_name}: {type(exc).__name__}: {first}") from None
    data = buffer.getvalue()
    del buffer
    return onnx.load_from_string(data)


def finalize(model: onnx.ModelProto, metadata: ModelMetadata, simplify: bool = True) -> onnx.ModelProto:
    """The checks every variant passes before it is written: see the module docstring."""
    expected = io_dims(metadata)
    onnx_passes.require_plain_dims(model, expected)
    if simplify:
        model = onnx_passes.simplify(model)
    dims = onnx_passes.graph_io_dims(model)
    model = onnx_passes.check_and_infer(model)
    if argmax_before_pixel_shuffle(model):
        split_subpixel_phases(model)
        model = onnx_passes.check_and_infer(model)
    onnx_passes.restore_io_dims(model, dims)
    onnx_passes.require_plain_dims(model, expected)
    onnx_passes.set_ir_version(model)
    onnx_passes.set_metadata(model, metadata.to_props())
    model.producer_name, model.producer_version = "fcn-deploy", fcn_deploy.__version__
    model.doc_string = f"{metadata.model_name} ({metadata.precision}), exported by fcn-deploy"
    onnx.checker.check_model(model)  # the full check ran above; IR version and metadata changed since
    smoke_test(model, metadata)
    return model


# --------------------------------------------------------------------------------------------
# One call: what `fcn-deploy export` does
# --------------------------------------------------------------------------------------------
def check_export_options(precision: str, *, calibration: bool, keep_fp32: Sequence[str] = (),
                         int8_scheme: str = TENSORRT_INT8_SCHEME, opset: int = DEFAULT_OPSET) -> None:
    """The rules between export options, checked once: by :func:`export`, and by the CLI
    before it loads a model, so a bad combination fails in a second, not after the trace."""
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if int8_scheme not in INT8_SCHEMES:
        raise ExportError(f"unknown INT8 scheme {int8_scheme!r}; choose from {', '.join(INT8_SCHEMES)}")
    if precision == "int8" and not calibration:
        raise ExportError("INT8 export needs calibration images: --calib DIR|DATASET[:ROOT] (real images the model will see)")
    if int8_scheme != TENSORRT_INT8_SCHEME and precision != "int8":
        raise ExportError(f"--int8-scheme {int8_scheme} goes with --int8")
    if calibration and precision == "fp32":
        raise ExportError("--calib is used with --int8 (or --fp16, to measure agreement); add one")
    if keep_fp32 and precision != "fp16":
        raise ExportError("--keep-fp32 applies to --fp16 only")
    if opset < 13:
        raise ExportError(f"--opset {opset} is too old; per-channel Q/DQ and TensorRT need 13 or later")


def precision_variant(
    fp32: onnx.ModelProto,
    meta32: ModelMetadata,
    precision: str,
    *,
    keep_fp32: Sequence[str] = (),
    calib_frames: Optional[Sequence[np.ndarray]] = None,
    progress: Callable[[Iterable], Iterable] = lambda it: it,
    int8_scheme: str = TENSORRT_INT8_SCHEME,
) -> Tuple[onnx.ModelProto, ModelMetadata, Optional[float]]:
    """The ``precision`` variant of a finalized FP32 graph: ``(model, metadata, agreement)``.

    One path for every FP32 graph that ends as a deployable file, traced here
    (:func:`export`) or imported (:mod:`fcn_deploy.converters.import_onnx`): FP16 keeps the
    folded pre-processing and ``keep_fp32`` nodes in float32; INT8 is calibrated on
    ``calib_frames``; ``agreement`` is the arg-max agreement with FP32 on them (``None`` for
    FP32, or FP16 without frames).
    """
    def variant_metadata() -> ModelMetadata:
        return dataclasses.replace(meta32, precision=precision, exporter=dict(meta32.exporter),
                                   extra=copy.deepcopy(meta32.extra), source=copy.deepcopy(meta32.source))

    if precision == "fp32":
        return fp32, meta32, None
    if precision == "fp16":
        from .onnx_fp16 import convert_to_fp16

        meta = variant_metadata()
        meta.exporter.update(tool_versions("onnxconverter_common"))
        meta.extra["keep_fp32"] = list(keep_fp32)
        model = finalize(convert_to_fp16(fp32, keep_fp32), meta, simplify=False)
        agreement = label_agreement(fp32, model, calib_frames, meta) if calib_frames else None
        return model, meta, agreement
    if precision != "int8":
        raise ExportError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    from .onnx_int8 import quantize_int8

    meta = variant_metadata()
    meta.exporter.update(tool_versions("onnxruntime"))
    quantized = quantize_int8(fp32, calib_frames, meta32, progress, scheme=int8_scheme)
    agreement = label_agreement(fp32, quantized, calib_frames, meta32)
    meta.extra["calibration"] = {
        "images": len(calib_frames),
        "size": list(calib_frames[0].shape[:2]),
        "method": "minmax",
        "bias_correction": True,
        "scheme": int8_scheme,
        "symmetric": int8_scheme == TENSORRT_INT8_SCHEME,
        "per_channel": True,
        "for": "TensorRT and ONNX Runtime" if int8_scheme == TENSORRT_INT8_SCHEME else "ONNX Runtime on CPUs",
        "agreement_with_fp32": round(agreement, 6),
    }
    return finalize(quantized, meta, simplify=False), meta, agreement


@dataclass
class ExportResult:
    path: str
    metadata: ModelMetadata
    seconds: float
    agreement: Optional[float] = None  # arg-max agreement with FP32 on the calibration frames
    calibration_images: int = 0
    ir_version: int = 0
    tensorrt: Optional[CheckReport] = None  # fcn-deploy check's verdict; None for a CPU-only (u8s8) graph


def export(
    resolved: ResolvedModel,
    output: str,
    *,
    precision: str = "fp32",
    fold_preprocessing: bool = True,
    fold_argmax: bool = True,
    opset: int = DEFAULT_OPSET,
    keep_fp32: Sequence[str] = (),
    calib_frames: Optional[Sequence[np.ndarray]] = None,
    progress: Callable[[Iterable], Iterable] = lambda it: it,
    upsampling: str = "subpixel",
    int8_scheme: str = TENSORRT_INT8_SCHEME,
) -> ExportResult:
    """Export ``resolved`` to ``output`` at ``precision`` (``fp32``, ``fp16`` or ``int8``).

    INT8 needs ``calib_frames`` (BGR uint8 images, one size); when given for FP16 too, the
    arg-max agreement with FP32 on them is measured. ``int8_scheme`` is ``s8s8`` (TensorRT)
    or ``u8s8`` (ONNX Runtime on CPUs; see :mod:`fcn_deploy.converters.onnx_int8`). ``upsampling`` is
    ``subpixel`` (a convolution at input resolution plus DepthToSpace; see SubPixelUpsample;
    several times faster than ConvTranspose in ONNX Runtime's CPU provider) or
    ``deconv`` (ConvTranspose, as trained); the outputs are the same. ``output`` is replaced
    atomically, and only once every check has passed.
    """
    check_export_options(precision, calibration=bool(calib_frames), keep_fp32=keep_fp32, int8_scheme=int8_scheme,
                         opset=opset)
    if not str(output).lower().endswith(".onnx"):
        raise ExportError(f"output {output} must end in .onnx (the runtime picks the backend by suffix)")
    start = time.perf_counter()
    meta32 = metadata_for(resolved, fold_preprocessing, fold_argmax, "fp32", opset, upsampling)
    fp32 = finalize(trace_to_onnx(resolved.model, meta32, opset), meta32)
    result_model, meta, agreement = precision_variant(fp32, meta32, precision, keep_fp32=keep_fp32,
                                                      calib_frames=calib_frames, progress=progress,
                                                      int8_scheme=int8_scheme)
    # Checked where it is written, since no machine here can run TensorRT: the CLI reports it
    # and leaves `build` out of its next steps when a release would refuse the graph.
    tensorrt = None
    if tensorrt_int8_problem(meta.int8_scheme, output) is None:
        tensorrt = check_onnx(result_model, label=os.path.basename(str(output)))
    path = onnx_passes.save_atomic(result_model, output)
    return ExportResult(
        path=path,
        metadata=meta,
        seconds=time.perf_counter() - start,
        agreement=agreement,
        calibration_images=len(calib_frames or ()),
        ir_version=result_model.ir_version,
        tensorrt=tensorrt,
    )
