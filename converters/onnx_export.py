"""PyTorch FCN -> deployable ONNX: dynamic N/H/W, folded pre- and post-processing, metadata.

The steps, each for a failure users of such toolkits keep reporting:

1. :func:`resolve_model` turns what the user typed (a zoo name, a checkpoint path, or
   ``camvid`` for the bundled model) into a network plus what is known about it (classes,
   palette, dataset, mean IU, the checkpoint's sha256).
2. The class-to-class bilinear deconvolutions become their grouped form (one filter per
   class: the same outputs at 1/C of the work).
3. :class:`DeployGraph` wraps the network so that the graph takes the camera's raw uint8 BGR
   frames and returns uint8 labels (both optional: ``--logits`` gives the plain network).
4. The TorchScript exporter (``dynamo=False``; the dynamo exporter writes the FCN-8s output
   height as an expression) at opset 17, which TensorRT 8.6 and later parse, with plain
   dynamic dims ``N``, ``H``, ``W``, checked afterwards.
5. onnxslim, strict shape inference, the full checker, the lowest IR version the opset needs,
   fcn-deploy metadata, a run in ONNX Runtime at an odd size, and an atomic write.

FP16 and INT8 variants start from the checked FP32 graph (:mod:`converters.onnx_fp16`,
:mod:`converters.onnx_int8`) and go through the same final checks.
"""
from __future__ import annotations

import copy
import io
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import onnx
import torch
import torch.nn as nn

import fcn_deploy
from fcn_deploy.errors import FcnDeployError
from fcn_deploy.models import available_models, build_model
from fcn_deploy.models.upsampling import convert_upsampling_to_grouped, convert_upsampling_to_subpixel
from fcn_deploy.normalization import Normalization
from fcn_deploy.fileio import sha256_file
from fcn_deploy.runtime.assets import ASSETS, BUNDLED_MODELS
from fcn_deploy.runtime.input_size import training_scale_facts
from fcn_deploy.runtime.metadata import (
    LAYOUT_NORMALIZED,
    LAYOUT_RAW_BGR,
    OUTPUT_LABELS,
    OUTPUT_LOGITS,
    UPSAMPLING_FORMS,
    ModelMetadata,
    class_names,
    default_palette,
)

from . import onnx_passes
from .onnx_passes import DEFAULT_OPSET, ExportError
from .onnx_rewrites import argmax_before_pixel_shuffle
from .onnx_verify import label_agreement, smoke_test

log = logging.getLogger(__name__)

INPUT_NAME = "input"
# Build options that fetch weights; a checkpoint brings its own, so they are dropped.
_WEIGHT_OPTIONS = ("pretrained", "pretrained_backbone")
# The size the graph is traced at: small, non-square, not a multiple of 32, so nothing
# size-specific can hide behind a coincidence.
TRACE_SIZE = (70, 94)


# --------------------------------------------------------------------------------------------
# What to export
# --------------------------------------------------------------------------------------------
@dataclass
class ResolvedModel:
    """A network ready to export, with what is known about its weights."""

    model: nn.Module
    spec: str
    num_classes: int
    model_options: Dict[str, Any] = field(default_factory=dict)
    checkpoint: Optional[str] = None
    checkpoint_sha256: Optional[str] = None
    classes: Optional[List[str]] = None
    palette: Optional[List[Tuple[int, int, int]]] = None
    dataset: Optional[str] = None
    mean_iu: Optional[float] = None
    recipe: Optional[Dict[str, Any]] = None  # the checkpoint's training recipe (crop, scale range)

    @property
    def trained(self) -> bool:
        return self.checkpoint is not None


def bundled_checkpoint(name: str) -> Path:
    """Where the bundled model ``name`` (``camvid``) keeps its PyTorch checkpoint."""
    return ASSETS / f"{name}.pt"


def bundled_onnx(name: str) -> Path:
    """Where the bundled model ``name`` keeps its exported ONNX file."""
    return ASSETS / BUNDLED_MODELS[name]


def model_from_checkpoint(path: str) -> ResolvedModel:
    """Rebuild the network a fcn-deploy training checkpoint holds and load its weights.

    The checkpoint names the zoo model (``model_name``), ``num_classes`` and the build
    options (``model_options``); ``classes``, ``palette``, ``dataset`` and
    ``metrics["mean_iu"]`` go into the exported metadata.
    """
    from fcn_deploy.training.checkpoint import build_from_checkpoint, load_checkpoint

    state = load_checkpoint(path)
    # The checkpoint brings its own weights: no ImageNet/backbone loading while rebuilding.
    options = {k: v for k, v in dict(state.get("model_options") or {}).items() if k not in _WEIGHT_OPTIONS}
    # build_from_checkpoint also restores the normalisation the weights were trained with.
    model = build_from_checkpoint({**state, "model_options": options})
    num_classes = int(state["num_classes"])
    metrics = state.get("metrics") or {}
    mean_iu = metrics.get("mean_iu") if isinstance(metrics, dict) else None
    return ResolvedModel(
        model=model.eval(),
        spec=path,
        num_classes=num_classes,
        model_options=options,
        checkpoint=os.path.abspath(path),
        checkpoint_sha256=sha256_file(path),
        classes=list(state["classes"]) if state.get("classes") else None,
        palette=[tuple(int(v) for v in c) for c in state["palette"]] if state.get("palette") else None,
        dataset=state.get("dataset"),
        mean_iu=float(mean_iu) if mean_iu is not None else None,
        recipe=dict(state.get("recipe") or {}),
    )


def _build(name: str, num_classes: int, options: Dict[str, Any]) -> nn.Module:
    try:
        return build_model(name, num_classes, **options)
    except KeyError:
        raise FcnDeployError(f"unknown model {name!r}; available: {', '.join(available_models())}") from None
    except TypeError as exc:
        raise FcnDeployError(f"bad options {options} for model {name}: {exc}") from None


def resolve_model(spec: str, num_classes: int = 21, **options: Any) -> ResolvedModel:
    """The one place that turns a model name the user typed into a network.

    * ``camvid`` (a bundled model): its checkpoint under ``fcn_deploy/assets``;
    * a path to a fcn-deploy checkpoint;
    * a zoo name (``fcn8s_resnet18`` ...): a freshly initialised network with
      ``num_classes`` classes and build ``options`` -- untrained, with a warning, for trying
      the deployment path before training.
    """
    if spec in BUNDLED_MODELS:
        path = bundled_checkpoint(spec)
        if not path.is_file():
            raise FcnDeployError(
                f"the bundled model {spec!r} is not installed ({path} is missing); train one with "
                "`fcn-deploy train` or pass a checkpoint path"
            )
        resolved = model_from_checkpoint(str(path))
        # Record the bundled name, not this machine's install path: it resolves anywhere.
        resolved.checkpoint = spec
        return resolved
    if os.path.isfile(spec):
        return model_from_checkpoint(spec)
    zoo = available_models()
    if spec in zoo:
        model = _build(spec, num_classes, options)
        log.warning(
            "%s has random weights (no checkpoint given): fine for trying the deployment path, "
            "useless for segmenting anything", spec,
        )
        return ResolvedModel(model=model.eval(), spec=spec, num_classes=num_classes, model_options=dict(options))
    if os.sep in spec or spec.endswith((".pt", ".pth")):
        raise FcnDeployError(f"checkpoint not found: {spec}")
    raise FcnDeployError(
        f"unknown model {spec!r}: not a checkpoint file, a bundled model ({', '.join(BUNDLED_MODELS)}) "
        f"or a zoo name ({', '.join(zoo)})"
    )


# --------------------------------------------------------------------------------------------
# The graph
# --------------------------------------------------------------------------------------------
class DeployGraph(nn.Module):
    """The network with the camera-side pre-processing and the arg-max folded in.

    ``fold_preprocessing``: input ``N x H x W x 3`` uint8 BGR; the graph transposes to
    ``N x 3 x H x W``, casts to float, reorders channels if the weights want RGB, subtracts the
    mean and divides by the standard deviation -- the same arithmetic on every value as
    :func:`fcn_deploy.runtime.backends.base.normalize_frames`, so the results are identical.
    Transposing first makes the channel swap and the per-channel constants act on whole
    planes: in ONNX Runtime that is 0.2 ms at 480x360 on two cores instead of 2.2 ms for the
    same ops broadcast over the innermost 3-wide axis of ``N x H x W x 3``.
    ``fold_argmax``: output ``N x H x W`` uint8 class indices instead of ``N x C x H x W`` logits.
    """

    def __init__(self, net: nn.Module, normalization: Normalization, fold_preprocessing: bool, fold_argmax: bool):
        super().__init__()
        self.net = net
        self.fold_preprocessing = fold_preprocessing
        self.fold_argmax = fold_argmax
        order = normalization.channel_order.upper()
        if order not in ("BGR", "RGB"):
            raise ExportError(f"unknown channel order {normalization.channel_order!r}")
        self.to_rgb = order == "RGB"
        self.register_buffer("mean", torch.tensor(normalization.mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(normalization.std, dtype=torch.float32))

    def swap_channels(self, x: torch.Tensor) -> torch.Tensor:
        """BGR -> RGB on ``N x 3 x H x W`` (an index list: one Gather in the exported graph)."""
        return x[:, [2, 1, 0]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fold_preprocessing:
            x = x.permute(0, 3, 1, 2).to(torch.float32)
            if self.to_rgb:
                x = self.swap_channels(x)
            x = (x - self.mean[:, None, None]) / self.std[:, None, None]
        y = self.net(x)
        if self.fold_argmax:
            # Through float: TensorRT casts to uint8 only from float32/float16, not from the
            # integer index type of ArgMax.
            y = y.argmax(dim=1).to(torch.float32).to(torch.uint8)
        return y


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
        extra={"upsampling": upsampling, "training_scale": training_scale_facts(resolved.dataset, resolved.recipe)},
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
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
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
@dataclass
class ExportResult:
    path: str
    metadata: ModelMetadata
    seconds: float
    agreement: Optional[float] = None  # arg-max agreement with FP32 on the calibration frames
    calibration_images: int = 0
    ir_version: int = 0


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
    int8_scheme: str = "s8s8",
) -> ExportResult:
    """Export ``resolved`` to ``output`` at ``precision`` (``fp32``, ``fp16`` or ``int8``).

    INT8 needs ``calib_frames`` (BGR uint8 images, one size); when given for FP16 too, the
    arg-max agreement with FP32 on them is measured. ``int8_scheme`` is ``s8s8`` (TensorRT)
    or ``u8s8`` (ONNX Runtime on CPUs; see :mod:`converters.onnx_int8`). ``upsampling`` is
    ``subpixel`` (a convolution at input resolution plus DepthToSpace; see SubPixelUpsample;
    about 6x faster in ONNX Runtime's CPU provider on the bundled model's three upsamplers) or
    ``deconv`` (ConvTranspose, as trained); the outputs are the same. ``output`` is replaced
    atomically, and only once every check has passed.
    """
    if precision not in ("fp32", "fp16", "int8"):
        raise ExportError(f"unknown precision {precision!r}")
    if not str(output).lower().endswith(".onnx"):
        raise ExportError(f"output {output} must end in .onnx (the runtime picks the backend by suffix)")
    if precision == "int8" and not calib_frames:
        raise ExportError("INT8 export needs calibration images (--calib DIR or DATASET[:ROOT])")
    if keep_fp32 and precision != "fp16":
        raise ExportError("--keep-fp32 applies to --fp16 only")
    if int8_scheme != "s8s8" and precision != "int8":
        raise ExportError("--int8-scheme applies to --int8 only")
    start = time.perf_counter()
    meta32 = metadata_for(resolved, fold_preprocessing, fold_argmax, "fp32", opset, upsampling)
    fp32 = finalize(trace_to_onnx(resolved.model, meta32, opset), meta32)
    result_model, meta, agreement = fp32, meta32, None

    if precision == "fp16":
        from .onnx_fp16 import convert_to_fp16

        meta = metadata_for(resolved, fold_preprocessing, fold_argmax, "fp16", opset, upsampling)
        meta.exporter.update(tool_versions("onnxconverter_common"))
        meta.extra["keep_fp32"] = list(keep_fp32)
        result_model = finalize(convert_to_fp16(fp32, keep_fp32), meta, simplify=False)
        if calib_frames:
            agreement = label_agreement(fp32, result_model, calib_frames, meta)
    elif precision == "int8":
        from .onnx_int8 import quantize_int8

        meta = metadata_for(resolved, fold_preprocessing, fold_argmax, "int8", opset, upsampling)
        meta.exporter.update(tool_versions("onnxruntime"))
        quantized = quantize_int8(fp32, calib_frames, meta32, progress, scheme=int8_scheme)
        agreement = label_agreement(fp32, quantized, calib_frames, meta32)
        meta.extra["calibration"] = {
            "images": len(calib_frames),
            "size": list(calib_frames[0].shape[:2]),
            "method": "minmax",
            "bias_correction": True,
            "scheme": int8_scheme,
            "symmetric": int8_scheme == "s8s8",
            "per_channel": True,
            "for": "TensorRT and ONNX Runtime" if int8_scheme == "s8s8" else "ONNX Runtime on CPUs (TensorRT refuses it)",
            "agreement_with_fp32": round(agreement, 6),
        }
        result_model = finalize(quantized, meta, simplify=False)
    path = onnx_passes.save_atomic(result_model, output)
    return ExportResult(
        path=path,
        metadata=meta,
        seconds=time.perf_counter() - start,
        agreement=agreement,
        calibration_images=len(calib_frames or ()),
        ir_version=result_model.ir_version,
    )
