"""The training loop: fine-tune a zoo model on a dataset, validate, checkpoint, resume.

One function, :func:`train`, runs a whole (or resumed) run from a
:class:`~fcn_deploy.training.config.TrainConfig`. What it does each iteration is the paper's:
SGD with momentum on the per-pixel multinomial logistic loss, optionally class-weighted and
with loss sampling (and, optionally, the Lovász-softmax loss on top); the learning rate
follows a fixed or poly schedule. After every ``val_every`` epochs it scores the validation
split with the four metrics, keeps the best checkpoint by mean IU, and writes ``last.pt``
(with everything needed to resume) and the CSV/JSON/PNG log. Setting the run up is the job
of :mod:`~fcn_deploy.training.initialization`, making its batches that of
:mod:`~fcn_deploy.training.batches`.

Exact resume. Batches depend only on the seed, the epoch and the position in it
(:mod:`~fcn_deploy.training.batches`), and the global RNGs (dropout, loss sampling) are saved
in every ``last.pt`` (:mod:`~fcn_deploy.training.rng`), together with the optimiser,
schedule, grad scaler and position. A run killed after iteration ``k`` and resumed from the
checkpoint written at ``k`` therefore takes the same steps as one that never stopped.

Library code logs; the CLI adds the progress bar through the ``on_step`` callback.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.nn as nn

from ..download import Progress
from ..errors import FcnDeployError
from ..models.pretrained import load_state_dict_checked
from . import distributed as ddp
from .averaging import WeightAverage
from .batches import build_transform, open_dataset, train_loader
from .checkpoint import BEST, LAST, CheckpointError, atomic_save, load_checkpoint, make_checkpoint
from .config import TrainConfig, val_size_note, validate_config
from .initialization import (
    build_network,
    build_optimizer,
    class_weights_for,
    freeze_batchnorm,
    initialise_weights,
    resolve_device,
    resolve_workers,
)
from .initialization import init_from_checkpoint  # noqa: F401 (imported from here before the split)
from .losses import lovasz_softmax, segmentation_loss
from .memory_format import channels_last_hazards, channels_last_note
from .rng import rng_state, seed_everything, set_rng_state

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What :func:`train` returns: where the run is, its best scores and its log rows."""

    run_dir: Path
    best_metrics: Dict[str, Any]
    best_epoch: Optional[int]
    iterations: int
    epochs: int
    wall_time_s: float
    history: List[Dict[str, Any]]
    config: Optional[TrainConfig] = None  # the recipe the run followed (a resumed run's own)


StepCallback = Callable[[Dict[str, Any]], None]


def _eta_text(epoch_seconds: float, epoch_iterations: int, remaining_iterations: int) -> str:
    """``"ETA 1h05m"`` for the remaining iterations at this epoch's pace (validation aside):
    a run on a shared or slow machine says when it will end, so it can be planned around."""
    if epoch_iterations <= 0 or epoch_seconds <= 0:
        return "ETA unknown"
    minutes = int(round(remaining_iterations * epoch_seconds / epoch_iterations / 60))
    return f"ETA {minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"ETA {minutes}m"


def train(
    config: TrainConfig,
    resume_from: Optional[os.PathLike] = None,
    on_step: Optional[StepCallback] = None,
    on_epoch: Optional[StepCallback] = None,
    on_download: Optional[Progress] = None,
) -> TrainResult:
    """Run (or, with ``resume_from`` a ``last.pt``, continue) the training ``config`` describes.

    ``on_step(info)`` is called after every iteration with ``iteration``, ``total_iters``,
    ``epoch``, ``loss`` and ``lr``; ``on_epoch(row)`` after every epoch with its log row.
    ``on_download(done_bytes, total_bytes)`` follows the download of published starting
    weights (``--pretrained-backbone imagenet`` the first time).
    Under torchrun every process calls this; rank 0 alone writes files.
    """
    validate_config(config)
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
        result = _Run(config, device, info, resume_from, on_step, on_epoch, on_download).run()
        finished = True
        return result
    finally:
        torch.set_num_threads(threads)
        if started_group:
            ddp.shutdown_distributed(wait_for_all=finished)


class _Run:
    """The state of one training run; :meth:`run` is the loop."""

    def __init__(self, config, device, info, resume_from, on_step, on_epoch, on_download=None) -> None:
        self.config = config
        self.on_download = on_download
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
        c = self.config
        probe = open_dataset(c, c.train_split)
        model = build_network(c, probe.num_classes)
        if self.resume_ckpt is None:
            initialise_weights(model, c, self.on_download)
        self.normalization = model.normalization
        self.train_set = open_dataset(c, c.train_split, build_transform(c, probe.ignore_index, self.normalization))
        self.val_set = open_dataset(c, c.val_split) if c.val_split else None
        self.class_weights = class_weights_for(probe, c.class_weights) if self.resume_ckpt is None else None
        if self.resume_ckpt is not None and self.resume_ckpt["training_state"].get("class_weights") is not None:
            self.class_weights = self.resume_ckpt["training_state"]["class_weights"]
        self.loss_weights = self.class_weights.to(self.device) if self.class_weights is not None else None
        if self.resume_ckpt is not None:
            load_state_dict_checked(model, self.resume_ckpt["model_state"], None, what="resumed checkpoint")

        if c.freeze_bn:
            freeze_batchnorm(model)
        model.to(self.device)
        if self.channels_last and self.device.type == "cpu":
            hazards = channels_last_hazards(model)
            if hazards:  # PyTorch 2.13's oneDNN would corrupt the heap (memory_format.py)
                log.warning(channels_last_note(getattr(model, "name", c.model), hazards))
                self.channels_last = False
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        # With --ema the run validates and ships a moving average of the weights (averaging.py).
        self.average = WeightAverage(model, c.ema) if c.ema else None
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
        self.optimizer, self.schedule, self.scaler = build_optimizer(self.model, c, self.total_iters, self.amp)

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
            "ema": self.average.state_dict() if self.average is not None else None,
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
        if self.average is not None:
            if state.get("ema") is None:
                raise CheckpointError("cannot resume: the checkpoint holds no weight average for --ema")
            self.average.load_state_dict(state["ema"])
        rngs = state["rng"]
        if state.get("world_size", 1) == self.info.world_size and self.info.rank < len(rngs):
            set_rng_state(rngs[self.info.rank], self.device)
        else:
            log.warning("world size changed since the checkpoint: RNG streams restart from the seed")
        log.info("resumed at epoch %d, iteration %d of %d", self.epoch + 1, self.iteration, self.total_iters)

    # -- files (rank 0) --------------------------------------------------------------------
    @property
    def shipped_model(self) -> nn.Module:
        """The net that is validated and written to best.pt: the weight average with --ema."""
        return self.average.module if self.average is not None else self.model

    def _checkpoint(self, metrics: Optional[Dict[str, Any]], epoch: int,
                    training_state: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        # last.pt (with training_state) holds the iterate that resume continues from; best.pt
        # the shipped net.
        return make_checkpoint(
            self.model if training_state is not None else self.shipped_model,
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
        return train_loader(self.train_set, self.sampler, c.batch_size, self.num_workers, self.drop_last, self.device)

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
        if c.lovasz > 0:
            loss = loss + c.lovasz * lovasz_softmax(logits, labels, self.train_set.ignore_index)
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
        if self.average is not None:
            self.average.update(self.model)
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
            note = val_size_note(c)
            if note:
                log.warning(note)
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
                           self.wall_time, self.history, self.config)

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
        eta = "" if last else f", {_eta_text(self.epoch_time, self.batch_in_epoch, self.total_iters - self.iteration)}"
        if score is not None:
            log.info(
                "epoch %d/%d: loss %.4f, mean IU %.2f (pixel acc %.2f)%s%s",
                epoch_number, self.num_epochs, loss, 100 * metrics["mean_iu"], 100 * metrics["pixel_acc"],
                " best" if improved else "", eta,
            )
        else:
            log.info("epoch %d/%d: loss %.4f%s", epoch_number, self.num_epochs, loss, eta)

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

        net = self.shipped_model
        net.eval()
        try:
            predictor = TorchPredictor(net, self.device, self.config.val_size, self.channels_last, self.amp)
            cm = evaluate(self.val_set, predictor, ddp.shard(len(self.val_set), self.info))
        finally:
            self.model.train()
            if self.config.freeze_bn:
                freeze_batchnorm(self.model)
        matrix = ddp.all_reduce_sum(cm.matrix, self.device)
        scores = ConfusionMatrix.from_matrix(matrix, self.val_set.ignore_index).scores()
        # nan (nothing counted) as None, so that JSON logs and comparisons stay simple.
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in scores.items()}
