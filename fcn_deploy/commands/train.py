"""``fcn-deploy train``: fine-tune a zoo model on a dataset (see :mod:`fcn_deploy.training`).

Multi-process: ``torchrun --nproc_per_node N -m fcn_deploy.cli train ...`` (gloo on CPU,
nccl on GPU); every process runs this command and rank 0 writes the run folder.
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Dict

from ..errors import FcnDeployError
from ._args import BooleanOptionalAction, add_data_arguments, or_none, parse_option, parse_range, size_or_none


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train an FCN on a dataset",
        description="Fine-tune a zoo model on a segmentation dataset: SGD with momentum, poly or fixed "
        "learning rate, validation with the paper's four metrics, best/last checkpoints, exact --resume.",
    )
    p.add_argument("--model", help="zoo model, e.g. fcn8s_efficientnet_lite0, fcn32s_vgg16 (see `fcn-deploy models`)")
    add_data_arguments(p, dataset_required=True)
    p.add_argument("--out", default=None, help="run folder (default: runs/MODEL-DATASET)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR_OR_CKPT",
                   help="continue a run exactly where it stopped (its recipe is taken from the checkpoint)")
    g = p.add_argument_group("recipe (a preset's values unless given)")
    g.add_argument("--preset", choices=["fast", "paper"], default="fast",
                   help="(default fast) fast: mean loss, lr 0.01, poly, momentum 0.9, batch 8, crops; paper: summed loss, "
                   "lr 1e-10, fixed, momentum 0.99, batch 1, whole images")
    g.add_argument("--epochs", type=int, default=None, help="epochs (default 30)")
    g.add_argument("--max-iters", type=int, default=None, help="stop (and end the schedule) after this many iterations")
    g.add_argument("--batch-size", type=int, default=None, help="images per process per step")
    g.add_argument("--lr", type=float, default=None, help="base learning rate")
    g.add_argument("--momentum", type=float, default=None)
    g.add_argument("--weight-decay", type=float, default=None)
    g.add_argument("--schedule", choices=["poly", "fixed"], default=None, help="poly: lr * (1 - t/T)^0.9")
    g.add_argument("--warmup-iters", type=int, default=None, help="linear learning-rate warm-up")
    g.add_argument("--loss", choices=["mean", "sum"], default=None, help="sum = the paper's unnormalised loss")
    g.add_argument("--class-weights", choices=["none", "median-freq", "sqrt-median-freq", "dataset"], default=None,
                   help="class balancing counted on the training labels, or the dataset's own weights")
    g.add_argument("--loss-sampling", type=float, default=None, metavar="P",
                   help="keep each 32x32 output cell in the loss with probability P (the paper's patch sampling)")
    g.add_argument("--lovasz", type=float, default=None, metavar="W",
                   help="add W times the Lovász-softmax loss, a surrogate of 1 - mean IU over the classes in "
                   "the batch (for a fine-tuning stage; default 0)")
    g.add_argument("--crop", type=or_none(size_or_none), default=None, metavar="HxW", help="random crop size, or none")
    g.add_argument("--scale-range", type=or_none(parse_range), default=None, metavar="LO,HI", help="random scale, or none")
    g.add_argument("--flip", action=BooleanOptionalAction, default=None, help="random horizontal flips")
    g.add_argument("--jitter", action=BooleanOptionalAction, default=None, help="photometric jitter")
    g.add_argument("--freeze-bn", action="store_true", default=None, help="keep batch-norm layers fixed")
    g.add_argument("--ema", type=float, default=None, metavar="DECAY",
                   help="validate and ship (best.pt) a moving average of the weights with this decay per "
                   "iteration, e.g. 0.999 (about the last 1000 iterations)")
    m = p.add_argument_group("model")
    m.add_argument("--width", type=int, default=None, help="channel divisor of the zoo model (1 = the real net)")
    m.add_argument("--model-option", action="append", type=parse_option, default=[], metavar="KEY=VALUE",
                   help="other build option, e.g. variant=16s, dropout=0.1; repeatable")
    m.add_argument("--pretrained-backbone", default=None, metavar="imagenet|NAME|PATH|none",
                   help="initial weights (default imagenet): the model's ImageNet file, a published file "
                   "by name (vgg16-imagenet, resnet18-imagenet, fcn32s-caffe, fcn8s-caffe, ...; "
                   "downloaded once into ~/.cache/fcn-deploy, FCN_DEPLOY_HOME overrides), a file, or none")
    m.add_argument("--init-from", default=None, metavar="CKPT",
                   help="staged training: copy the shared layers of a coarser net's checkpoint (32s -> 16s -> 8s)")
    v = p.add_argument_group("validation and checkpoints")
    v.add_argument("--train-split", default=None, help="default train")
    v.add_argument("--val-split", default=None, help="default val; none to skip validation")
    v.add_argument("--val-every", type=int, default=None, help="validate every K epochs (and after the last)")
    v.add_argument("--val-size", type=size_or_none, default=None, metavar="HxW", help="validate at this size (default: the frames' own). Also sets the training scale the "
                   "model records (this size's scale, clamped into --scale-range): run and eval then feed frames "
                   "at that scale")
    v.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                   help="also write last.pt every N iterations (it is always written every epoch)")
    r = p.add_argument_group("runtime")
    r.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N")
    r.add_argument("--amp", action=BooleanOptionalAction, default=None, help="mixed precision (CUDA; default on)")
    r.add_argument("--channels-last", action=BooleanOptionalAction, default=None,
                   help="channels-last memory format (default on for CPU)")
    r.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    r.add_argument("--workers", type=int, default=None, help="DataLoader worker processes (default 0 on CPU, up to 8 on CUDA)")
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--deterministic", action="store_true", default=None, help="deterministic algorithms")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _options_from_args(args: argparse.Namespace) -> Dict[str, Any]:
    """The recipe options of :func:`fcn_deploy.train` that the command line gives (``None``:
    the preset's value; ``"none"``: a preset's crop or random scale turned off)."""
    model_options: Dict[str, Any] = dict(args.model_option)
    if args.width is not None:
        model_options["width"] = args.width
    return dict(
        model_options=model_options,
        dataset_options=dict(args.dataset_option),
        epochs=args.epochs,
        max_iters=args.max_iters,
        batch_size=args.batch_size,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        warmup_iters=args.warmup_iters,
        loss=args.loss,
        class_weights=args.class_weights,
        loss_sampling=args.loss_sampling,
        lovasz=args.lovasz,
        crop=args.crop,
        scale_range=args.scale_range,
        flip=args.flip,
        jitter=args.jitter,
        freeze_bn=args.freeze_bn,
        ema=args.ema,
        pretrained_backbone=args.pretrained_backbone,
        init_from=args.init_from,
        train_split=args.train_split,
        val_split=args.val_split,
        val_every=args.val_every,
        val_size=args.val_size,
        checkpoint_every=args.checkpoint_every,
        device=args.device,
        amp=args.amp,
        channels_last=args.channels_last,
        threads=args.threads,
        num_workers=args.workers,
        seed=args.seed,
        deterministic=args.deterministic,
    )


def run(args: argparse.Namespace) -> int:
    import logging

    from ..training.distributed import launched_by_torchrun
    from ..workflows import train

    log = logging.getLogger("fcn_deploy.train")
    if not args.resume and (not args.model or not args.dataset):
        raise FcnDeployError("train needs --model and --dataset (or --resume RUN_DIR)")

    main_process = int(os.environ.get("RANK", "0")) == 0
    bar = None
    download_bar = None
    if main_process and not args.no_progress:
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        if tqdm is not None:
            bar = tqdm(unit="it", dynamic_ncols=True, disable=None)
        from ._progress import DownloadProgress

        download_bar = DownloadProgress()

    def on_step(info: Dict[str, Any]) -> None:
        if bar is None:
            return
        if bar.total != info["total_iters"]:
            bar.reset(total=info["total_iters"])
            bar.update(info["iteration"] - 1)
        bar.set_description(f"epoch {info['epoch']}")
        bar.set_postfix(loss=f"{info['loss']:.4f}", lr=f"{info['lr']:.3g}", refresh=False)
        bar.update(1)

    try:
        if args.resume:
            result = train(resume=args.resume, on_step=on_step, on_download=download_bar, device=args.device,
                           threads=args.threads, num_workers=args.workers)
        else:
            result = train(args.model, args.dataset, root=args.root, out=args.out, preset=args.preset,
                           on_step=on_step, on_download=download_bar, **_options_from_args(args))
    finally:
        if download_bar is not None:
            download_bar.close()
        if bar is not None:
            bar.close()
    config = result.config
    if main_process:
        best = result.best_metrics.get("mean_iu")
        best_text = f"best val mean IU {100 * best:.2f} at epoch {result.best_epoch}" if best is not None else "no validation"
        print(f"trained {config.model} for {result.iterations} iterations in {result.wall_time_s:.0f} s: {best_text}")
        print(f"run folder: {result.run_dir} (best.pt, last.pt, log.csv, log.json, curves.png)")
        data = f"--dataset {config.dataset}" + (f" --root {config.root}" if config.root else "")
        data += "".join(f" --dataset-option '{k}={v!r}'" for k, v in config.dataset_options.items())
        print("next:")
        print(f"  fcn-deploy eval --model {result.run_dir / 'best.pt'} {data} --split test")
        print(f"  fcn-deploy export --model {result.run_dir / 'best.pt'} --output model.onnx")
        if launched_by_torchrun():
            log.debug("distributed run finished")
    return 0
