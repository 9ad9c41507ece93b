"""``fcn_deploy.export`` and ``fcn_deploy.train``: the training side's two workflows as functions.

``fcn-deploy export`` and ``fcn-deploy train`` parse their arguments and call these, so a
Python user gets exactly what the commands do (the checks, the defaults, the files written)
without going through argparse::

    import fcn_deploy
    run = fcn_deploy.train("fcn8s_resnet18", "camvid", root="data/CamVid", epochs=30)
    fcn_deploy.export(str(run.run_dir / "best.pt"), "model.onnx", precision="fp16")

Both need the ``train`` extra (PyTorch, onnxslim, ...): they import it lazily, so this module
imports anywhere, and without it they raise one :class:`~fcn_deploy.errors.FcnDeployError`
line naming what is missing and the install command. Printing (results, next steps,
progress bars) stays in the commands.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .commands._requirements import require_training
from .errors import FcnDeployError
from .fileio import check_output_file, make_folder, remove_stale_temps, removed_on_failure

if TYPE_CHECKING:  # pragma: no cover - names for annotations only
    from fcn_deploy.converters.onnx_export import ExportResult
    from .training import TrainResult

PathLike = Union[str, "os.PathLike[str]"]
Progress = Callable[[Iterable], Iterable]
DEFAULT_CALIB_IMAGES = 64
NONE = "none"  # crop="none", scale_range="none": turn a preset's value off (None keeps it)


def default_export_output(model_name: str, precision: str, logits: bool, int8_scheme: str = "s8s8") -> str:
    """``MODEL[_fp16|_int8[_u8s8]][_logits].onnx``: the file ``export`` writes when not told."""
    suffix = "" if precision == "fp32" else f"_{precision}"
    if precision == "int8" and int8_scheme != "s8s8":
        suffix += f"_{int8_scheme}"
    return f"{model_name}{suffix}{'_logits' if logits else ''}.onnx"


def _check_output(output: str, overwrite: bool) -> None:
    if not output.lower().endswith(".onnx"):
        raise FcnDeployError(f"output {output} must end in .onnx (the runtime picks the backend by suffix)")
    if os.path.exists(output) and not overwrite:
        raise FcnDeployError(f"{output} exists; pass --overwrite to replace it, or choose --output")
    check_output_file(output, "output")


def export(
    model: str = "camvid",
    output: Optional[PathLike] = None,
    *,
    precision: str = "fp32",
    logits: bool = False,
    calib: Union[None, str, Sequence[np.ndarray]] = None,
    calib_images: int = DEFAULT_CALIB_IMAGES,
    calib_size: Union[None, str, Tuple[int, int]] = None,
    int8_scheme: str = "s8s8",
    upsampling: str = "subpixel",
    keep_fp32: Sequence[str] = (),
    opset: int = 17,
    num_classes: int = 21,
    model_options: Optional[Mapping[str, Any]] = None,
    overwrite: bool = False,
    progress: Optional[Progress] = None,
) -> "ExportResult":
    """Export ``model`` to a deployable ONNX file; what ``fcn-deploy export`` runs.

    ``model``: a training checkpoint, the bundled ``camvid``, or a zoo name (untrained weights,
    for trying the deployment path; ``num_classes`` and ``model_options`` build it).
    ``output``: the ``.onnx`` to write (default ``MODEL[_fp16|_int8][_logits].onnx`` in the
    current folder); replaced atomically, and only with ``overwrite=True`` when it exists.
    ``precision``: ``fp32``, ``fp16`` or ``int8`` (which needs ``calib``: a folder of images,
    ``DATASET[:ROOT]``, or a list of BGR uint8 frames; ``calib_images`` of them are used, at
    ``calib_size`` (``(H, W)`` or ``"HxW"``) or the first one's size). ``int8_scheme``:
    ``s8s8`` (TensorRT) or ``u8s8`` (ONNX Runtime on x86 CPUs). ``logits=True`` writes the
    plain network (normalised float input, logits out) instead of the deployment graph.
    ``progress`` wraps the calibration loop (a progress bar). Returns
    :class:`fcn_deploy.converters.onnx_export.ExportResult` (``path``, ``metadata``, ``seconds``,
    ``agreement`` with FP32, ``tensorrt``: the ``fcn-deploy check`` verdict).

    Every option is checked before the model is loaded, and the output's folder before the
    trace, so a mistake costs a second rather than an export.
    """
    needs = ("torch", "onnxslim") + (("onnxconverter_common",) if precision == "fp16" else ())
    require_training("fcn_deploy.export()", needs)
    from fcn_deploy.converters.calibration import load_calibration_frames
    from fcn_deploy.converters.onnx_export import check_export_options
    from fcn_deploy.converters.onnx_export import export as export_graph
    from fcn_deploy.converters.resolve import resolve_model

    from .options import parse_size
    from .runtime.assets import BUNDLED_MODELS

    keep_fp32 = [str(n).strip() for n in keep_fp32 if str(n).strip()]
    check_export_options(precision, calibration=calib is not None and len(calib) > 0, keep_fp32=keep_fp32,
                         int8_scheme=int8_scheme, opset=opset)
    if calib_images < 1:
        raise FcnDeployError(f"calib_images must be at least 1, not {calib_images}")
    target = os.fspath(output) if output is not None else None
    if target is not None:
        _check_output(target, overwrite)
    resolved = resolve_model(model, num_classes, **dict(model_options or {}))
    if target is None:
        # A bundled model is named as the user named it (camvid_fp16.onnx), anything else by its net.
        name = model if model in BUNDLED_MODELS else getattr(resolved.model, "name", "model")
        target = default_export_output(name, precision, logits, int8_scheme)
        _check_output(target, overwrite)
    frames = None
    if isinstance(calib, str):
        size = parse_size(calib_size, "--calib-size") if isinstance(calib_size, str) else calib_size
        frames = load_calibration_frames(calib, calib_images, size)
    elif calib is not None:
        frames = list(calib)[:calib_images]
    return export_graph(
        resolved,
        target,
        precision=precision,
        fold_preprocessing=not logits,
        fold_argmax=not logits,
        opset=opset,
        keep_fp32=keep_fp32,
        calib_frames=frames,
        progress=progress or (lambda iterable: iterable),
        upsampling=upsampling,
        int8_scheme=int8_scheme,
    )


def train(
    model: Optional[str] = None,
    dataset: Optional[str] = None,
    *,
    root: Optional[PathLike] = None,
    out: Optional[PathLike] = None,
    preset: str = "fast",
    resume: Optional[PathLike] = None,
    on_step: Optional[Callable[[Dict[str, Any]], None]] = None,
    on_epoch: Optional[Callable[[Dict[str, Any]], None]] = None,
    on_download: Optional[Callable[..., None]] = None,
    **options: Any,
) -> "TrainResult":
    """Train zoo ``model`` on ``dataset``; what ``fcn-deploy train`` runs.

    ``root``: the dataset's folder (default ``$FCN_DEPLOY_DATA``'s match; ``synthetic`` needs
    none). ``out``: the run folder (default ``runs/MODEL-DATASET``), where ``best.pt``,
    ``last.pt``, ``log.csv``, ``log.json`` and ``curves.png`` go. ``preset``: ``fast`` or
    ``paper``; ``options`` are :class:`fcn_deploy.training.TrainConfig` fields on top of it
    (``epochs``, ``lr``, ``batch_size``, ``crop=(H, W)``, ``model_options={...}``,
    ``device``, ...): ``None`` keeps the preset's value, ``crop="none"`` and
    ``scale_range="none"`` turn the preset's cropping or random scaling off, and
    ``val_split="none"`` skips validation. ``resume``: a run folder or its ``last.pt``, to
    continue exactly where it stopped (only ``device``, ``threads``, ``num_workers`` may be
    given with it). ``on_step(info)`` is called after every iteration (``iteration``,
    ``total_iters``, ``epoch``, ``loss``, ``lr``), ``on_epoch(row)`` after every epoch,
    ``on_download`` with the progress of a weight file being fetched.
    Returns :class:`fcn_deploy.training.TrainResult`.
    """
    require_training("fcn_deploy.train()", ("torch",))
    from .commands._args import resolve_root
    from .training import config_for_resume, make_config
    from .training import train as run_training

    if resume is not None:
        runtime = {k: options.pop(k) for k in ("device", "threads", "num_workers") if k in options}
        given = sorted(k for k, v in options.items() if v is not None)
        if model or dataset or given:
            extra = ([f"model={model!r}"] if model else []) + ([f"dataset={dataset!r}"] if dataset else []) + given
            raise FcnDeployError(f"resume takes the run's own recipe; leave out {', '.join(extra)}")
        config, checkpoint = config_for_resume(os.fspath(resume), **runtime)
    else:
        if not model or not dataset:
            raise FcnDeployError("train needs a model and a dataset (or resume=RUN_DIR)")
        no_crop, no_scale = options.get("crop") == NONE, options.get("scale_range") == NONE
        if no_crop:
            options["crop"] = None
        if no_scale:
            options["scale_range"] = None
        val_split = options.get("val_split")
        if isinstance(val_split, str) and val_split.lower() == NONE:
            options["val_split"] = ""
        folder = os.fspath(out) if out is not None else os.path.join("runs", f"{model}-{dataset}")
        main_process = int(os.environ.get("RANK", "0")) == 0  # the process that writes the run folder
        # A run that fails (bad option, no dataset, Ctrl-C before the first checkpoint) removes the
        # folder it made while it is still empty.
        with removed_on_failure(folders=[folder] if main_process else []):
            if main_process:  # before any download or epoch
                make_folder(folder, "run folder")
            try:
                config = make_config(model, dataset, preset,
                                     root=resolve_root(dataset, os.fspath(root) if root else None),
                                     out=folder, **options)
            except TypeError as exc:  # an option TrainConfig does not have
                raise FcnDeployError(str(exc)) from None
            if no_crop:
                config.crop = None
            if no_scale:
                config.scale_range = None
            if config.val_split == "":
                config.val_split = None
            if main_process:
                _remove_stale_temps(folder)
            return run_training(config, resume_from=None, on_step=on_step, on_epoch=on_epoch,
                                on_download=on_download)
    if int(os.environ.get("RANK", "0")) == 0:
        _remove_stale_temps(config.out)
    return run_training(config, resume_from=checkpoint, on_step=on_step, on_epoch=on_epoch, on_download=on_download)


def _remove_stale_temps(run_dir: PathLike) -> None:
    """The temporary files of a run killed mid-write (``.curves.png.*.tmp``, ``.last.pt.*.tmp``):
    removed when the run is resumed or its folder reused, so they do not pile up."""
    from .training.checkpoint import BEST, LAST
    from .training.log import RECORD_FILES

    remove_stale_temps(run_dir, (LAST, BEST) + RECORD_FILES)
