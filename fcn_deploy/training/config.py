"""What a training run is: :class:`TrainConfig`, made from a preset, checked, and read back to resume.

The config is every choice of a run and nothing else; it is stored as each checkpoint's
``recipe`` in plain JSON-able values, so ``--resume`` rebuilds the same run from the
checkpoint alone. Only options that describe the process rather than the result
(:data:`RUNTIME_FIELDS`) may change on resume.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from ..errors import FcnDeployError
from .checkpoint import LAST, CheckpointError, load_checkpoint, resolve_resume
from .presets import PRESETS, preset_values

CLASS_WEIGHTS = ("none", "median-freq", "sqrt-median-freq", "dataset")
# Options that describe the process rather than the result: a resumed run may change them.
RUNTIME_FIELDS = ("device", "threads", "num_workers", "out")


@dataclass
class TrainConfig:
    """Every choice of a training run; stored as the checkpoint's ``recipe``."""

    model: str
    dataset: str
    root: Optional[str] = None
    out: str = "runs/train"
    model_options: Dict[str, Any] = field(default_factory=dict)
    dataset_options: Dict[str, Any] = field(default_factory=dict)
    train_split: str = "train"
    val_split: Optional[str] = "val"
    preset: str = "fast"
    epochs: int = 30
    max_iters: Optional[int] = None
    batch_size: int = 8
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "poly"
    poly_power: float = 0.9
    warmup_iters: int = 0
    loss: str = "mean"
    class_weights: str = "none"
    loss_sampling: float = 1.0
    lovasz: float = 0.0  # weight of the Lovász-softmax (mean IU) loss added to cross-entropy
    sampling_cell: int = 32
    crop: Optional[Tuple[int, int]] = (320, 320)
    scale_range: Optional[Tuple[float, float]] = (0.5, 2.0)
    flip: bool = True
    jitter: bool = True
    val_every: int = 1
    val_size: Optional[Tuple[int, int]] = None
    checkpoint_every: int = 0
    pretrained_backbone: str = "imagenet"
    init_from: Optional[str] = None
    freeze_bn: bool = False
    ema: Optional[float] = None  # decay of the weights' moving average that best.pt holds; None: no average
    device: str = "auto"
    amp: Optional[bool] = None
    channels_last: Optional[bool] = None
    threads: Optional[int] = None
    num_workers: Optional[int] = None  # None: 0 on CPU, several on CUDA (see resolve_workers)
    seed: int = 0
    deterministic: bool = False

    def recipe(self) -> Dict[str, Any]:
        """The config as plain JSON-able values (tuples become lists)."""
        out = {}
        for k, v in dataclasses.asdict(self).items():
            out[k] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_recipe(cls, recipe: Dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in recipe.items() if k in names}
        for k in ("crop", "scale_range", "val_size"):
            if values.get(k) is not None:
                values[k] = tuple(values[k])
        return cls(**values)


def make_config(model: str, dataset: str, preset: str = "fast", **options: Any) -> TrainConfig:
    """A :class:`TrainConfig` from ``preset``'s values with every non-``None`` option on top."""
    if preset not in PRESETS:
        raise FcnDeployError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    preset_keys = set(PRESETS[preset])
    values = preset_values(preset, {k: options.get(k) for k in preset_keys})
    rest = {k: v for k, v in options.items() if k not in preset_keys and v is not None}
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(rest) - names)
    if unknown:
        raise TypeError(f"unknown training option(s): {', '.join(unknown)}")
    return TrainConfig(model=model, dataset=dataset, preset=preset, **values, **rest)


def config_for_resume(path: str, **runtime: Any) -> Tuple[TrainConfig, Path]:
    """The stored recipe of the run at ``path`` (folder or ``last.pt``) and the checkpoint file.

    Only options that do not change the result (device, threads, workers) may be overridden.
    """
    ckpt_path = resolve_resume(path)
    ckpt = load_checkpoint(ckpt_path)
    if "training_state" not in ckpt:
        raise CheckpointError(f"{ckpt_path} holds no training state (resume from a run's {LAST})")
    config = TrainConfig.from_recipe(ckpt["recipe"])
    for k, v in runtime.items():
        if k not in RUNTIME_FIELDS:
            raise TypeError(f"{k} cannot change on resume")
        if v is not None:
            setattr(config, k, v)
    config.out = str(ckpt_path.parent)
    return config, ckpt_path


def validate_config(config: TrainConfig) -> None:
    """Refuse, in one line, a config that no run could carry out."""
    if config.epochs < 1:
        raise FcnDeployError("--epochs must be >= 1")
    if config.batch_size < 1:
        raise FcnDeployError("--batch-size must be >= 1")
    if config.max_iters is not None and config.max_iters < 1:
        raise FcnDeployError("--max-iters must be >= 1")
    if not 0.0 < config.loss_sampling <= 1.0:
        raise FcnDeployError("--loss-sampling must be in (0, 1]")
    if config.lovasz < 0:
        raise FcnDeployError("--lovasz must be >= 0")
    if config.val_every < 1:
        raise FcnDeployError("--val-every must be >= 1")
    if config.class_weights not in CLASS_WEIGHTS:
        raise FcnDeployError(f"--class-weights must be one of {', '.join(CLASS_WEIGHTS)}")
    if config.ema is not None and not 0.0 < config.ema < 1.0:
        raise FcnDeployError("--ema must be in (0, 1), e.g. 0.999")
    if config.lr <= 0:
        raise FcnDeployError("--lr must be > 0")
    if "pretrained" in config.model_options:
        # A checkpoint's model_options must rebuild the net without fetching weights again.
        raise FcnDeployError("give initial weights with --pretrained-backbone, not as a model option")


def val_size_note(config: TrainConfig) -> Optional[str]:
    """What ``--val-size`` does besides validating: the line a run logs at its start, or ``None``.

    The checkpoint kept is the one that scores best at the validation size, so the exporter
    records that size's scale (clamped into ``--scale-range``) as the model's training scale,
    and ``run``/``eval`` later resize frames to it (``fcn_deploy.runtime.input_size``). A flag
    that reads like a validation detail changes what the deployed model is fed, so it says so.
    """
    if config.val_size is None:
        return None
    from ..runtime.input_size import size_text, training_scale_facts

    recipe = config.recipe()
    chosen = training_scale_facts(config.dataset, recipe)
    plain = training_scale_facts(config.dataset, {**recipe, "val_size": None})
    asked = size_text(config.val_size)
    if chosen["reference_size"] is None:
        return None
    recorded = size_text(chosen["reference_size"])
    if chosen["image_size"] is None:
        return (f"--val-size {asked}: the model records {recorded} as its training scale (its frames' size is "
                f"unknown here), so `fcn-deploy run` and `eval` will feed frames at that size")
    how = f"{config.dataset} frames x{chosen['reference_scale']:g}"
    if chosen["scale_range"] is not None and min(config.val_size) / min(chosen["image_size"]) != chosen["reference_scale"]:
        how += f", --val-size's scale clamped into --scale-range {chosen['scale_range'][0]:g}-{chosen['scale_range'][1]:g}"
    without = size_text(plain["reference_size"]) if plain["reference_size"] else "the frames' own size"
    if recorded == without:
        return None
    return (f"--val-size {asked} also sets the training scale the model records: {recorded} ({how}); "
            f"`fcn-deploy run` and `eval` will resize frames to that scale (without --val-size: {without})")
