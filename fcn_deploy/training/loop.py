"""The training loop: fine-tune a zoo model on a dataset, validate, checkpoint, resume.

One function, :func:`train`, runs a whole (or resumed) run from a :class:`TrainConfig`.
What it does each iteration is the paper's: SGD with momentum on the per-pixel
multinomial logistic loss, optionally class-weighted and with loss sampling; the learning
rate follows a fixed or poly schedule. After every ``val_every`` epochs it scores the
validation split with the four metrics, keeps the best checkpoint by mean IU, and writes
``last.pt`` (with everything needed to resume) and the CSV/JSON/PNG log.

Exact resume. The sample order of an epoch depends only on ``(seed, epoch)``, an item's
augmentation only on ``(seed, epoch, index)``, and the DataLoader draws its worker seeds
from a private generator; the global RNGs (dropout, loss sampling) are saved in every
``last.pt``. A run killed after iteration ``k`` and resumed from the checkpoint written at
``k`` therefore takes the same steps as one that never stopped.

Library code logs; the CLI adds the progress bar through the ``on_step`` callback.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from ..errors import FcnDeployError
from . import distributed as ddp
from .checkpoint import (
    BEST,
    LAST,
    CheckpointError,
    atomic_save,
    build_from_checkpoint,
    load_checkpoint,
    make_checkpoint,
    resolve_resume,
)
from .losses import segmentation_loss
from .presets import PRESETS, preset_values
from .schedule import LRSchedule

log = logging.getLogger(__name__)

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


@dataclass
class TrainResult:
    run_dir: Path
    best_metrics: Dict[str, Any]
    best_epoch: Optional[int]
    iterations: int
    epochs: int
    wall_time_s: float
    history: List[Dict[str, Any]]


# -- set-up helpers --------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise FcnDeployError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FcnDeployError("--device cuda asked for, but this torch has no usable CUDA device")
    if device.type not in ("cpu", "cuda"):
        raise FcnDeployError(f"training runs on cpu or cuda, not {name!r}")
    return device


def resolve_workers(requested: Optional[int], device: torch.device) -> int:
    """DataLoader workers: as asked, else 0 for CPU training and up to 8 per process on CUDA.

    On CPU the network takes every core; loading and augmenting a CamVid batch of 4 costs
    about 5% of a training step on 2 cores, and measured with 0, 1 and 2 workers there, 2
    workers were slowest (they take cores from the convolutions) and 1 was within noise of 0.
    On a GPU the loader is the bottleneck, so it gets the host's cores.
    """
    if requested is not None:
        if requested < 0:
            raise FcnDeployError("--workers must be >= 0")
        return requested
    if device.type != "cuda":
        return 0
    per_process = (os.cpu_count() or 2) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(8, per_process - 1))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> Dict[str, Any]:
    """The global RNG states, as tensors and plain values (loadable with weights_only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: Dict[str, Any], device: torch.device) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _rgb_fill(normalization) -> List[float]:
    """The model's mean colour in RGB: padding with it normalises to zero."""
    mean = list(normalization.mean)
    return mean if normalization.channel_order == "RGB" else mean[::-1]


def build_transform(config: TrainConfig, ignore_index: int, normalization) -> Any:
    from ..data.transforms import (
        Compose,
        Normalize,
        PhotometricJitter,
        RandomCrop,
        RandomHorizontalFlip,
        RandomScale,
    )

    steps: List[Any] = []
    if config.jitter:
        steps.append(PhotometricJitter())
    if config.scale_range is not None:
        steps.append(RandomScale(*config.scale_range))
    if config.crop is not None:
        steps.append(RandomCrop(config.crop[0], config.crop[1], ignore_index, _rgb_fill(normalization)))
    if config.flip:
        steps.append(RandomHorizontalFlip())
    steps.append(Normalize(normalization))
    return Compose(steps)


def open_dataset(config: TrainConfig, split: str, transform: Any = None) -> Any:
    from ..data import build_dataset

    return build_dataset(config.dataset, config.root, split, transform, seed=config.seed, **config.dataset_options)


def class_weights_for(dataset: Any, mode: str) -> Optional[torch.Tensor]:
    """Per-class loss weights: none, the dataset's own, or (square-root) median frequency.

    Median frequency is counted in one pass over the untransformed training labels.
    """
    from ..data.class_weights import class_pixel_frequencies, median_frequency_weights

    if mode == "none":
        return None
    if mode == "dataset":
        if getattr(dataset, "class_weights", None) is None:
            raise FcnDeployError(f"dataset {type(dataset).__name__} ships no class weights; use median-freq")
        weights = np.asarray(dataset.class_weights, dtype=np.float64)
    elif mode in ("median-freq", "sqrt-median-freq"):
        weights = np.asarray(median_frequency_weights(class_pixel_frequencies(dataset)), dtype=np.float64)
        if mode == "sqrt-median-freq":
            weights = np.sqrt(weights)
    else:
        raise FcnDeployError(f"--class-weights must be one of {', '.join(CLASS_WEIGHTS)}, not {mode!r}")
    log.info("class weights: %s", " ".join(f"{c}={w:.3f}" for c, w in zip(dataset.classes, weights)))
    return torch.tensor(weights, dtype=torch.float32)


def init_from_checkpoint(model: nn.Module, path: str) -> int:
    """Staged training (paper section 4.2): start FCN-16s from FCN-32s, FCN-8s from FCN-16s.

    The checkpoint's net is rebuilt and every tensor it shares with ``model`` (same name and
    shape: the backbone, ``score_fr``, and from FCN-16s on ``score_pool4`` and ``upscore2``)
    is copied by :func:`~fcn_deploy.models.staged.init_from_coarser`, for any family whose
    models declare their FCN variant. The new skip scorers keep their zero initialisation, so
    the finer net starts out computing the coarser net's prediction. Returns the number of
    tensors copied.
    """
    from ..models.pretrained import PretrainedError
    from ..models.staged import init_from_coarser

    ckpt = load_checkpoint(path)
    coarse = build_from_checkpoint(ckpt)
    if int(ckpt["num_classes"]) != model.num_classes:
        raise FcnDeployError(
            f"--init-from {path}: it predicts {ckpt['num_classes']} classes, this run {model.num_classes}"
        )
    try:
        copied = init_from_coarser(model, coarse)
    except PretrainedError as exc:
        raise FcnDeployError(f"--init-from {path}: {exc}") from None
    log.info("initialised %s from %s (%s): %d of %d tensors copied",
             model.name, ckpt["model_name"], path, len(copied), len(model.state_dict()))
    return len(copied)


def load_backbone(model: nn.Module, source: str) -> None:
    from ..models import load_pretrained

    if source in ("none", "", None):
        log.info("training %s from scratch (no pretrained backbone)", model.name)
        return
    try:
        load_pretrained(model, source)
    except FcnDeployError as exc:
        raise FcnDeployError(f"{exc} (or train from scratch with --pretrained-backbone none)") from None
    log.info("loaded pretrained weights into %s from %s", model.name, source)


def freeze_batchnorm(model: nn.Module) -> None:
    """Keep batch-norm statistics and affine parameters fixed (small batches, fine-tuning)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)


class _Normalised(torch.utils.data.Dataset):
    """Items as tensors for the DataLoader: ``(3 x H x W float32, H x W int64)``."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        image, label = self.dataset[index]
        return torch.from_numpy(image), torch.from_numpy(label)


def _collate(batch: List[Tuple[torch.Tensor, torch.Tensor]]) -> Tuple[torch.Tensor, torch.Tensor]:
    shapes = {tuple(x.shape) for x, _ in batch}
    if len(shapes) > 1:
        raise FcnDeployError(
            "training images differ in size within a batch; give --crop HxW (or --batch-size 1)"
        )
    return torch.stack([x for x, _ in batch]), torch.stack([y for _, y in batch])


def _validate_config(config: TrainConfig) -> None:
    if config.epochs < 1:
        raise FcnDeployError("--epochs must be >= 1")
    if config.batch_size < 1:
        raise FcnDeployError("--batch-size must be >= 1")
    if config.max_iters is not None and config.max_iters < 1:
        raise FcnDeployError("--max-iters must be >= 1")
    if not 0.0 < config.loss_sampling <= 1.0:
        raise FcnDeployError("--loss-sampling must be in (0, 1]")
    if config.val_every < 1:
        raise FcnDeployError("--val-every must be >= 1")
    if config.class_weights not in CLASS_WEIGHTS:
        raise FcnDeployError(f"--class-weights must be one of {', '.join(CLASS_WEIGHTS)}")
    if config.lr <= 0:
        raise FcnDeployError("--lr must be > 0")
    if "pretrained" in config.model_options:
        # A checkpoint's model_options must rebuild the net without fetching weights again.
        raise FcnDeployError("give initial weights with --pretrained-backbone, not as a model option")


# -- the run -----------------------------------------------------------------------------------

StepCallback = Callable[[Dict[str, Any]], None]


def train(
    config: TrainConfig,
    resume_from: Optional[os.PathLike] = None,
    on_step: Optional[StepCallback] = None,
    on_epoch: Optional[StepCallback] = None,
) -> TrainResult:
    """Run (or, with ``resume_from`` a ``last.pt``, continue) the training ``config`` describes.

    ``on_step(info)`` is called after every iteration with ``iteration``, ``total_iters``,
    ``epoch``, ``loss`` and ``lr``; ``on_epoch(row)`` after every epoch with its log row.
    Under torchrun every process calls this; rank 0 alone writes files.
    """
    _validate_config(config)
    device = resolve_device(config.device)
    started_group = ddp.launched_by_torchrun() and not torch.distributed.is_initialized()
    info = ddp.init_distributed(device.type)
    threads = torch.get_num_threads()
    finished = False
    try:
        if device.type == "cuda":
            # One GPU per process under torchrun; otherwise the one asked for (or the current).
            if info.enabled:
                device = torch.device("cuda", info.local_rank)
            elif device.index is None:
                device = torch.device("cuda", torch.cuda.current_device())
            torch.cuda.set_device(device)
        result = _Run(config, device, info, resume_from, on_step, on_epoch).run()
        finished = True
        return result
    finally:
        torch.set_num_threads(threads)
        if started_group:
            ddp.shutdown_distributed(wait_for_all=finished)


class _Run:
    """The state of one training run; :meth:`run` is the loop."""

    def __init__(self, config, device, info, resume_from, on_step, on_epoch) -> None:
        self.config = config
        self.device = device
        self.info = info
        self.on_step = on_step
        self.on_epoch = on_epoch
        self.run_dir = Path(config.out)
        if resume_from is None and (self.run_dir / LAST).exists():
            raise FcnDeployError(
                f"{self.run_dir} already holds a run: continue it with --resume {self.run_dir}, or choose another --out"
            )
        self.resume_ckpt = load_checkpoint(resume_from) if resume_from is not None else None
        if self.resume_ckpt is not None and "training_state" not in self.resume_ckpt:
            raise CheckpointError(f"{resume_from} holds no training state (resume from a run's {LAST})")

        if config.threads:
            torch.set_num_threads(config.threads)
        if config.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        seed_everything(config.seed + info.rank)
        self.amp = device.type == "cuda" and (config.amp is None or config.amp)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = not config.deterministic  # fixed crop sizes: pick fast kernels once
        self.channels_last = (device.type == "cpu") if config.channels_last is None else config.channels_last
        self.num_workers = resolve_workers(config.num_workers, device)

        self._build_model_and_data()
        self._build_optimisation()

    # -- set-up --------------------------------------------------------------------------
    def _build_model_and_data(self) -> None:
        from ..models import build_model

        c = self.config
        probe = open_dataset(c, c.train_split)
        try:
            model = build_model(c.model, probe.num_classes, **c.model_options)
        except KeyError as exc:
            raise FcnDeployError(str(exc.args[0])) from None
        except TypeError as exc:
            raise FcnDeployError(f"model {c.model}: {exc}") from None
        if self.resume_ckpt is None:
            if c.init_from:
                init_from_checkpoint(model, c.init_from)
            else:
                load_backbone(model, c.pretrained_backbone)
        self.normalization = model.normalization
        self.train_set = open_dataset(c, c.train_split, build_transform(c, probe.ignore_index, self.normalization))
        self.val_set = open_dataset(c, c.val_split) if c.val_split else None
        self.class_weights = class_weights_for(probe, c.class_weights) if self.resume_ckpt is None else None
        if self.resume_ckpt is not None and self.resume_ckpt["training_state"].get("class_weights") is not None:
            self.class_weights = self.resume_ckpt["training_state"]["class_weights"]
        self.loss_weights = self.class_weights.to(self.device) if self.class_weights is not None else None
        if self.resume_ckpt is not None:
            from ..models.pretrained import load_state_dict_checked

            load_state_dict_checked(model, self.resume_ckpt["model_state"], None, what="resumed checkpoint")

        if c.freeze_bn:
            freeze_batchnorm(model)
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        self.net: nn.Module = model
        if self.info.enabled:
            self.net = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )

        self.sampler = ddp.EpochSampler(len(self.train_set), True, c.seed, self.info.rank, self.info.world_size)
        self.drop_last = self.sampler.per_rank >= c.batch_size
        per_rank = self.sampler.per_rank
        self.iters_per_epoch = per_rank // c.batch_size if self.drop_last else -(-per_rank // c.batch_size)
        total = c.epochs * self.iters_per_epoch
        self.total_iters = min(total, c.max_iters) if c.max_iters else total
        self.num_epochs = -(-self.total_iters // self.iters_per_epoch)

    def _build_optimisation(self) -> None:
        c = self.config
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
        self.schedule = LRSchedule(self.optimizer, c.schedule, self.total_iters, c.poly_power, c.warmup_iters)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

        self.epoch = 0
        self.batch_in_epoch = 0
        self.iteration = 0
        self.loss_sum = 0.0
        self.loss_count = 0
        self.epoch_time = 0.0
        self.wall_time = 0.0
        self.best_metrics: Dict[str, Any] = {}
        self.best_epoch: Optional[int] = None
        self.history: List[Dict[str, Any]] = []
        if self.resume_ckpt is not None:
            self._restore(self.resume_ckpt["training_state"], self.resume_ckpt)

    def _training_state(self, rng: List[Dict[str, Any]]) -> Dict[str, Any]:
        return {
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "iteration": self.iteration,
            "total_iters": self.total_iters,
            "world_size": self.info.world_size,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng,
            "loss_sum": self.loss_sum,
            "loss_count": self.loss_count,
            "epoch_time_s": self.epoch_time,
            "best_metrics": dict(self.best_metrics),
            "best_epoch": self.best_epoch,
            "history": list(self.history),
            "class_weights": self.class_weights,
        }

    def _restore(self, state: Dict[str, Any], ckpt: Dict[str, Any]) -> None:
        if state["total_iters"] != self.total_iters:
            raise CheckpointError(
                f"cannot resume: the run had {state['total_iters']} iterations in all, this set-up "
                f"gives {self.total_iters} (dataset or world size changed?)"
            )
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = state["epoch"]
        self.batch_in_epoch = state["batch_in_epoch"]
        self.iteration = state["iteration"]
        self.loss_sum = state["loss_sum"]
        self.loss_count = state["loss_count"]
        self.epoch_time = state["epoch_time_s"]
        self.wall_time = float(ckpt.get("wall_time_s", 0.0))
        self.best_metrics = dict(state["best_metrics"])
        self.best_epoch = state["best_epoch"]
        self.history = list(state["history"])
        rngs = state["rng"]
        if state.get("world_size", 1) == self.info.world_size and self.info.rank < len(rngs):
            set_rng_state(rngs[self.info.rank], self.device)
        else:
            log.warning("world size changed since the checkpoint: RNG streams restart from the seed")
        log.info("resumed at epoch %d, iteration %d of %d", self.epoch + 1, self.iteration, self.total_iters)

    # -- files (rank 0) --------------------------------------------------------------------
    def _checkpoint(self, metrics: Optional[Dict[str, Any]], epoch: int,
                    training_state: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        return make_checkpoint(
            self.model,
            self.config.model_options,
            self.train_set,
            self.config.dataset,
            metrics,
            epoch,
            self.config.recipe(),
            self.wall_time,
            training_state,
        )

    def _save_last(self, metrics: Optional[Dict[str, Any]], epoch: int) -> None:
        rng = ddp.gather_objects(rng_state(self.device))  # every process takes part
        if self.info.is_main:
            atomic_save(self._checkpoint(metrics, epoch, self._training_state(rng)), self.run_dir / LAST)

    # -- the loop ----------------------------------------------------------------------------
    def _loader(self) -> torch.utils.data.DataLoader:
        c = self.config
        self.train_set.set_epoch(self.epoch)
        self.sampler.set_epoch(self.epoch, skip=self.batch_in_epoch * c.batch_size)
        return torch.utils.data.DataLoader(
            _Normalised(self.train_set),
            batch_size=c.batch_size,
            sampler=self.sampler,
            num_workers=self.num_workers,
            collate_fn=_collate,
            drop_last=self.drop_last,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator(),  # worker seeds must not consume the global RNG
        )

    def _step(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        c = self.config
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, enabled=self.amp):
            logits = self.net(images)
        loss = segmentation_loss(
            logits,
            labels,
            self.train_set.ignore_index,
            self.loss_weights,
            c.loss,
            c.loss_sampling,
            c.sampling_cell,
        )
        if not torch.isfinite(loss):
            raise FcnDeployError(
                f"the loss became {loss.item()} at iteration {self.iteration + 1}; lower --lr "
                f"(now {self.schedule.get_last_lr()[0]:.3g})"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.schedule.step()
        return float(loss.item())

    def run(self) -> TrainResult:
        c = self.config
        if self.info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            log.info(
                "training %s on %s/%s (%d images): %d iterations in %d epoch(s) of up to %d, batch %d x %d "
                "process(es), on %s%s",
                c.model, c.dataset, c.train_split, len(self.train_set), self.total_iters, self.num_epochs,
                self.iters_per_epoch, c.batch_size, self.info.world_size, self.device,
                ", mixed precision" if self.amp else "",
            )
        self.model.train()
        if c.freeze_bn:
            freeze_batchnorm(self.model)
        while self.epoch < self.num_epochs and self.iteration < self.total_iters:
            t0 = time.perf_counter()
            for images, labels in self._loader():
                loss = self._step(images, labels)
                self.iteration += 1
                self.batch_in_epoch += 1
                self.loss_sum += loss
                self.loss_count += 1
                now = time.perf_counter()
                self.epoch_time += now - t0
                self.wall_time += now - t0
                t0 = now
                done = self.iteration >= self.total_iters
                if c.checkpoint_every and self.iteration % c.checkpoint_every == 0 and not done:
                    self._save_last(None, self.epoch)
                if self.on_step is not None:
                    self.on_step({
                        "iteration": self.iteration, "total_iters": self.total_iters, "epoch": self.epoch + 1,
                        "loss": loss, "lr": self.schedule.get_last_lr()[0],
                    })
                if done:
                    break
            self._end_epoch()
        return TrainResult(self.run_dir, self.best_metrics, self.best_epoch, self.iteration, self.epoch,
                           self.wall_time, self.history)

    def _end_epoch(self) -> None:
        c = self.config
        epoch_number = self.epoch + 1
        last = epoch_number >= self.num_epochs or self.iteration >= self.total_iters
        t0 = time.perf_counter()
        metrics: Dict[str, Any] = {}
        if self.val_set is not None and (epoch_number % c.val_every == 0 or last):
            metrics = self.validate()
        self.wall_time += time.perf_counter() - t0
        loss = self.loss_sum / max(1, self.loss_count)
        loss = ddp.all_reduce_mean(loss, self.device)
        row = {
            "epoch": epoch_number,
            "iteration": self.iteration,
            "loss": loss,
            "lr": self.schedule.get_last_lr()[0],
            **{k: metrics.get(k) for k in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")},
            "epoch_time_s": round(self.epoch_time, 3),
            "wall_time_s": round(self.wall_time, 3),
        }
        self.history.append(row)
        score = metrics.get("mean_iu")
        improved = score is not None and (self.best_epoch is None or score > (self.best_metrics.get("mean_iu") or -1.0))
        if self.val_set is None:
            improved = last  # without validation, the final weights are the best we know
        if improved:
            self.best_metrics, self.best_epoch = dict(metrics), epoch_number
        if score is not None:
            log.info(
                "epoch %d/%d: loss %.4f, mean IU %.2f (pixel acc %.2f)%s",
                epoch_number, self.num_epochs, loss, 100 * metrics["mean_iu"], 100 * metrics["pixel_acc"],
                " best" if improved else "",
            )
        else:
            log.info("epoch %d/%d: loss %.4f", epoch_number, self.num_epochs, loss)

        self.epoch += 1
        self.batch_in_epoch = 0
        self.loss_sum, self.loss_count, self.epoch_time = 0.0, 0, 0.0
        # best.pt and the logs before last.pt: a run killed in between redoes this epoch on
        # resume (exactly) and rewrites them, so they never run ahead of or lag last.pt.
        if self.info.is_main:
            if improved:
                atomic_save(self._checkpoint(metrics, epoch_number), self.run_dir / BEST)
            from .log import write_history

            write_history(self.run_dir, self.history)
        self._save_last(metrics or None, epoch_number)
        if self.on_epoch is not None:
            self.on_epoch(row)

    def validate(self) -> Dict[str, Any]:
        """The four metrics on the validation split, summed over all processes."""
        from ..evaluation import evaluate
        from ..metrics import ConfusionMatrix
        from .predict import TorchPredictor

        self.model.eval()
        try:
            predictor = TorchPredictor(self.model, self.device, self.config.val_size, self.channels_last, self.amp)
            cm = evaluate(self.val_set, predictor, ddp.shard(len(self.val_set), self.info))
        finally:
            self.model.train()
            if self.config.freeze_bn:
                freeze_batchnorm(self.model)
        matrix = ddp.all_reduce_sum(cm.matrix, self.device)
        scores = ConfusionMatrix.from_matrix(matrix, self.val_set.ignore_index).scores()
        # nan (nothing counted) as None, so that JSON logs and comparisons stay simple.
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in scores.items()}
