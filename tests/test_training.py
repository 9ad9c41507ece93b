"""Training: schedule, loss sampling, class weights, presets, and a short real run."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fcn_deploy.cli import main
from fcn_deploy.errors import FcnDeployError
from fcn_deploy.data.base import SegmentationDataset
from fcn_deploy.training import load_checkpoint, make_config, train
from fcn_deploy.training.initialization import class_weights_for, init_from_checkpoint
from fcn_deploy.training.losses import lovasz_softmax, sampling_mask, segmentation_loss
from fcn_deploy.training.presets import PRESETS
from fcn_deploy.training.schedule import LRSchedule, poly_factor

TINY = dict(
    model_options={"width": 16},
    dataset_options={"size": (64, 64), "count": 12},
    batch_size=4,
    crop=(64, 64),
    scale_range=(0.75, 1.25),
    pretrained_backbone="none",
    threads=1,  # the two cores are shared with other tests: one thread wastes least time spinning
)


def _optimizer(lr: float = 0.1) -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr, momentum=0.9)


# -- schedule -------------------------------------------------------------------------------


def test_poly_schedule_values():
    opt = _optimizer(0.1)
    sched = LRSchedule(opt, "poly", total_iters=100, power=0.9)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(100):
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[50] == pytest.approx(0.1 * 0.5**0.9)
    assert lrs[90] == pytest.approx(0.1 * 0.1**0.9)
    assert lrs[100] == 0.0
    assert all(a > b for a, b in zip(lrs[:-1], lrs[1:]))
    assert poly_factor(150, 100) == 0.0  # never negative past the end


def test_warmup_then_poly_and_fixed():
    opt = _optimizer(1.0)
    sched = LRSchedule(opt, "poly", total_iters=100, warmup_iters=10)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.001)
    for _ in range(5):
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx((0.001 + 0.999 * 0.5) * 0.95**0.9)
    for _ in range(5):
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.9**0.9)

    opt = _optimizer(1e-10)
    fixed = LRSchedule(opt, "fixed", total_iters=10)
    for _ in range(20):
        fixed.step()
    assert opt.param_groups[0]["lr"] == 1e-10


def test_schedule_state_round_trip():
    opt = _optimizer(0.01)
    sched = LRSchedule(opt, "poly", total_iters=40, warmup_iters=3)
    for _ in range(17):
        sched.step()
    opt2 = _optimizer(0.01)
    sched2 = LRSchedule(opt2, "poly", total_iters=40, warmup_iters=3)
    sched2.load_state_dict(sched.state_dict())
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    sched.step(), sched2.step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


# -- loss -----------------------------------------------------------------------------------


def test_loss_sampling_drops_cells_with_probability():
    g = torch.Generator().manual_seed(0)
    mask = sampling_mask((16, 320, 320), p=0.25, cell=32, generator=g)
    assert mask.shape == (16, 320, 320)
    cells = mask[:, ::32, ::32]
    # Each 32x32 cell is kept or dropped as a whole.
    assert torch.equal(cells.repeat_interleave(32, 1).repeat_interleave(32, 2), mask)
    assert cells.float().mean().item() == pytest.approx(0.25, abs=0.03)  # 1600 cells
    # Sizes that are not multiples of the cell are cropped, not padded.
    assert sampling_mask((1, 33, 70), 0.5, 32).shape == (1, 33, 70)


def test_loss_sampling_is_unbiased():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 64, 64)
    target = torch.randint(0, 4, (2, 64, 64))
    target[:, :8] = 255
    full_sum = segmentation_loss(logits, target, 255, reduction="sum")
    full_mean = segmentation_loss(logits, target, 255, reduction="mean")
    assert full_mean.item() == pytest.approx(F.cross_entropy(logits, target, ignore_index=255).item(), rel=1e-5)
    g = torch.Generator().manual_seed(1)
    sums = [segmentation_loss(logits, target, 255, reduction="sum", sample_p=0.5, cell=8, generator=g).item()
            for _ in range(300)]
    means = [segmentation_loss(logits, target, 255, reduction="mean", sample_p=0.5, cell=8, generator=g).item()
             for _ in range(300)]
    assert np.mean(sums) == pytest.approx(full_sum.item(), rel=0.02)
    assert np.mean(means) == pytest.approx(full_mean.item(), rel=0.02)
    assert np.std(sums) > 0  # it does sample


def test_class_weighted_loss_matches_torch():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 3, (2, 8, 8))
    target[0, 0] = 7
    w = torch.tensor([0.5, 2.0, 1.0])
    ours = segmentation_loss(logits, target, 7, class_weights=w, reduction="mean")
    ref = F.cross_entropy(logits, target, weight=w, ignore_index=7)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    ours_sum = segmentation_loss(logits, target, 7, class_weights=w, reduction="sum")
    assert ours_sum.item() == pytest.approx(F.cross_entropy(logits, target, weight=w, ignore_index=7,
                                                            reduction="sum").item(), rel=1e-5)


def _mean_iu_over_present(pred, target, ignore):
    valid = target != ignore
    ious = [((pred == c) & (target == c) & valid).sum() / (((pred == c) | (target == c)) & valid).sum()
            for c in target[valid].unique()]
    return torch.stack(ious).mean().item()


def test_lovasz_softmax_is_one_minus_mean_iu_on_hard_predictions():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (2, 9, 11), generator=g)
    target[0, :2] = 255  # ignored pixels count for nothing
    target[target == 3] = 4  # class 3 absent from the labels: left out of the mean
    pred = torch.randint(0, 5, (2, 9, 11), generator=g)  # ... but predicted here and there
    logits = F.one_hot(pred, 5).permute(0, 3, 1, 2).float() * 50
    loss = lovasz_softmax(logits, target, 255)
    assert loss.item() == pytest.approx(1 - _mean_iu_over_present(pred, target, 255), abs=1e-5)
    assert lovasz_softmax(F.one_hot(target.clamp(max=4), 5).permute(0, 3, 1, 2).float() * 50, target, 255).item() \
        == pytest.approx(0.0, abs=1e-6)


def test_lovasz_softmax_skipping_small_errors_changes_little_and_descends():
    torch.manual_seed(0)
    target = torch.randint(0, 4, (2, 16, 16))
    logits = (F.one_hot(target, 4).permute(0, 3, 1, 2).float() * 6 + torch.randn(2, 4, 16, 16)).requires_grad_()
    exact = lovasz_softmax(logits, target, 255, min_error=0.0)
    fast = lovasz_softmax(logits, target, 255, min_error=1e-2)
    assert 0 <= exact.item() - fast.item() < 1e-2
    fast.backward()
    # A small step against the gradient lowers the loss (it is a usable training signal).
    stepped = lovasz_softmax(logits.detach() - 5.0 * logits.grad, target, 255, min_error=0.0)
    assert stepped.item() < exact.item()
    assert lovasz_softmax(logits, torch.full_like(target, 255), 255).item() == 0.0


# -- class weights ----------------------------------------------------------------------------


class HandMade(SegmentationDataset):
    """Two 2x2 label maps: the median-frequency weights can be worked out by hand."""

    classes = ["a", "b", "c"]
    palette = [(0, 0, 0), (1, 1, 1), (2, 2, 2)]
    ignore_index = 255
    class_weights = [3.0, 2.0, 1.0]
    labels = [np.array([[0, 0], [0, 1]]), np.array([[0, 2], [2, 255]])]

    def __len__(self):
        return 2

    def load(self, index):
        return np.zeros((2, 2, 3), np.uint8), self.labels[index]


def test_median_frequency_weights_by_hand():
    ds = HandMade("train")
    # freq(a) = 4 px / 7 labelled px of the images holding a; freq(b) = 1/4; freq(c) = 2/3.
    freq = np.array([4 / 7, 1 / 4, 2 / 3])
    expected = np.median(freq) / freq  # = [1, 16/7, 6/7]
    np.testing.assert_allclose(expected, [1, 16 / 7, 6 / 7])
    np.testing.assert_allclose(class_weights_for(ds, "median-freq").numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(class_weights_for(ds, "sqrt-median-freq").numpy(), np.sqrt(expected), rtol=1e-6)
    np.testing.assert_allclose(class_weights_for(ds, "dataset").numpy(), [3, 2, 1])
    assert class_weights_for(ds, "none") is None


# -- presets ----------------------------------------------------------------------------------


def test_presets():
    paper = make_config("fcn8s_vgg16", "camvid", "paper")
    assert (paper.loss, paper.lr, paper.momentum, paper.batch_size, paper.schedule) == ("sum", 1e-10, 0.99, 1, "fixed")
    assert paper.crop is None
    assert make_config("fcn8s_vgg16", "camvid", "paper", loss="mean").lr == 1e-4
    fast = make_config("fcn8s_resnet18", "camvid", "fast", lr=0.02)
    assert (fast.loss, fast.lr, fast.momentum, fast.schedule) == ("mean", 0.02, 0.9, "poly")
    assert 4 <= fast.batch_size <= 8
    assert set(PRESETS) == {"paper", "fast"}


# -- a real run -------------------------------------------------------------------------------


def test_short_training_run_learns(tmp_path):
    config = make_config("fcn8s_resnet18", "synthetic", out=str(tmp_path / "run"), epochs=6, lr=0.05, **TINY)
    result = train(config)
    history = result.history
    assert [row["epoch"] for row in history] == [1, 2, 3, 4, 5, 6]
    assert history[-1]["loss"] < history[0]["loss"]
    # Chance on 5 classes: the all-"road" prediction scores about 0.08 mean IU; seeds 0-2 reach 0.28-0.31.
    assert result.best_metrics["mean_iu"] > 0.2
    assert history[-1]["lr"] == 0.0  # poly decay ends at zero

    run = tmp_path / "run"
    for name in ("best.pt", "last.pt", "log.csv", "log.json", "curves.png"):
        assert (run / name).is_file(), name
    rows = json.loads((run / "log.json").read_text())
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert set(rows[0]) >= {"loss", "lr", "pixel_acc", "mean_acc", "mean_iu", "fw_iu", "epoch_time_s"}
    csv_lines = (run / "log.csv").read_text().splitlines()
    assert csv_lines[0].startswith("epoch,iteration,loss,lr,") and len(csv_lines) == 7
    best = load_checkpoint(run / "best.pt")
    assert best["metrics"]["mean_iu"] == pytest.approx(result.best_metrics["mean_iu"])
    assert best["epoch"] == result.best_epoch
    assert "training_state" not in best and "training_state" in load_checkpoint(run / "last.pt")


def test_staged_initialisation_keeps_the_coarser_prediction(tmp_path):
    """FCN-8s initialised from FCN-32s (zero skip scorers) starts out at the 32s net's output,
    up to the final upsampling; shared layers are copied exactly."""
    from fcn_deploy.data import build_dataset
    from fcn_deploy.models import build_model
    from fcn_deploy.training.checkpoint import atomic_save, make_checkpoint

    coarse = build_model("fcn8s_resnet18", 5, width=16, variant="32s")
    with torch.no_grad():
        for p in coarse.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ds = build_dataset("synthetic", None, "train", size=(64, 64), count=2)
    path = tmp_path / "c32.pt"
    atomic_save(make_checkpoint(coarse, {"width": 16, "variant": "32s"}, ds, "synthetic", {}, 1, {}, 0.0), path)

    fine = build_model("fcn8s_resnet18", 5, width=16)
    copied = init_from_checkpoint(fine, str(path))
    assert copied > 0
    for k, v in coarse.state_dict().items():
        if k.startswith("backbone.") or k.startswith("score_fr."):
            assert torch.equal(fine.state_dict()[k], v), k
    assert torch.count_nonzero(fine.score_pool4.weight) == 0

    wider = build_model("fcn8s_resnet18", 5, width=8)
    with pytest.raises(FcnDeployError, match="does not fit"):
        init_from_checkpoint(wider, str(path))


def test_staged_initialisation_vgg(tmp_path):
    """FCN-32s -> FCN-16s on the paper's VGG nets: the trunk and score_fr are copied."""
    from fcn_deploy.data import build_dataset
    from fcn_deploy.models import build_model
    from fcn_deploy.training.checkpoint import atomic_save, make_checkpoint

    coarse = build_model("fcn32s_vgg16", 5, width=32)
    with torch.no_grad():
        coarse.score_fr.weight.normal_()
    ds = build_dataset("synthetic", None, "train", size=(64, 64), count=2)
    path = tmp_path / "vgg32.pt"
    atomic_save(make_checkpoint(coarse, {"width": 32}, ds, "synthetic", {}, 1, {}, 0.0), path)
    fine = build_model("fcn16s_vgg16", 5, width=32)
    init_from_checkpoint(fine, str(path))
    src, dst = coarse.state_dict(), fine.state_dict()
    shared = [k for k in src if k in dst]
    assert "score_fr.weight" in shared and any(k.startswith("conv1_1") for k in shared)
    for k in shared:
        assert torch.equal(dst[k], src[k]), k
    assert torch.count_nonzero(dst["score_pool4.weight"]) == 0


def test_staged_initialisation_reads_the_declared_variant(tmp_path):
    """Whether and how a net is initialised from another is decided by the FCN variant its
    family declares, never by its name; finer into coarser is refused for every family."""
    from fcn_deploy.data import build_dataset
    from fcn_deploy.models import PretrainedError, build_model
    from fcn_deploy.models.staged import init_from_coarser
    from fcn_deploy.training.checkpoint import atomic_save, make_checkpoint

    coarse = build_model("fcn8s_resnet18", 5, width=16, variant="16s")
    with torch.no_grad():
        for p in coarse.parameters():
            p.add_(0.05 * torch.randn_like(p))
    fine = build_model("fcn8s_resnet18", 5, width=16)
    coarse.name = fine.name = "fcn8s_vgg16_lookalike"  # a name says nothing
    copied = init_from_coarser(fine, coarse)
    assert {"score_fr.weight", "score_pool4.weight", "upscore2.weight"} <= set(copied)
    assert "upscore16.weight" not in copied
    assert torch.equal(fine.upscore2.weight, coarse.upscore2.weight)
    assert torch.count_nonzero(fine.score_pool3.weight) == 0

    class NoVariant(torch.nn.Module):  # a family that does not declare one takes no part
        def __init__(self):
            super().__init__()
            self.score_fr = torch.nn.Conv2d(1, 5, 1)

    with pytest.raises(PretrainedError, match="declares no FCN variant"):
        init_from_coarser(fine, NoVariant())

    ds = build_dataset("synthetic", None, "train", size=(64, 64), count=2)
    path = tmp_path / "fcn8s.pt"
    fine.name = "fcn8s_resnet18"
    atomic_save(make_checkpoint(fine, {"width": 16}, ds, "synthetic", {}, 1, {}, 0.0), path)
    coarser = build_model("fcn8s_resnet18", 5, width=16, variant="32s")
    with pytest.raises(FcnDeployError, match=r"--init-from .*FCN-8s is not coarser than FCN-32s"):
        init_from_checkpoint(coarser, str(path))


def test_train_cli_bad_inputs(tmp_path, capsys):
    code = main(["train", "--model", "fcn8s_resnet18", "--dataset", "camvid", "--root", str(tmp_path / "nope")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("fcn-deploy: error:") and len(err.splitlines()) == 1
    code = main(["train", "--resume", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "nothing to resume" in err and len(err.splitlines()) == 1
    code = main(["train", "--model", "no_such_net", "--dataset", "synthetic", "--out", str(tmp_path / "r"),
                 "--pretrained-backbone", "none", "--max-iters", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "no_such_net" in err and len(err.splitlines()) == 1


def test_train_cli_smoke(tmp_path, capsys):
    run = tmp_path / "cli"
    code = main([
        "train", "--model", "fcn8s_resnet18", "--width", "16", "--dataset", "synthetic",
        "--dataset-option", "size=(48,64)", "--dataset-option", "count=4", "--batch-size", "2",
        "--crop", "none", "--scale-range", "none", "--pretrained-backbone", "none", "--max-iters", "3",
        "--class-weights", "sqrt-median-freq", "--loss-sampling", "0.5", "--lovasz", "0.5", "--out", str(run), "--no-progress", "--threads", "1",
    ])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "3 iterations" in out and "fcn-deploy eval --model" in out
    ckpt = load_checkpoint(run / "last.pt")
    recipe = ckpt["recipe"]
    assert recipe["crop"] is None and recipe["scale_range"] is None
    assert recipe["class_weights"] == "sqrt-median-freq" and recipe["loss_sampling"] == 0.5
    assert recipe["lovasz"] == 0.5
    assert ckpt["model_options"] == {"width": 16} and ckpt["num_classes"] == 5
    assert ckpt["training_state"]["iteration"] == 3
    assert math.isfinite(ckpt["training_state"]["history"][-1]["loss"])

    # A finished run resumes to nothing more; a new run into its folder is refused.
    assert main(["train", "--resume", str(run), "--no-progress", "--threads", "1"]) == 0
    assert "3 iterations" in capsys.readouterr().out
    assert load_checkpoint(run / "last.pt")["training_state"]["iteration"] == 3
    code = main(["train", "--model", "fcn8s_resnet18", "--dataset", "synthetic", "--out", str(run),
                 "--pretrained-backbone", "none"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "already holds a run" in err and len(err.splitlines()) == 1


def test_weight_average_is_the_mean_then_the_ema():
    from fcn_deploy.training.averaging import WeightAverage

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1, bias=False), torch.nn.BatchNorm2d(1))
    weights = [float(v) for v in (0.0, 3.0, 6.0, 9.0, 12.0)]

    def set_weight(value):
        with torch.no_grad():
            net[0].weight.fill_(value)
            net[1].running_mean.fill_(value)
        net[1].num_batches_tracked.fill_(int(value))

    set_weight(weights[0])
    average = WeightAverage(net, decay=0.5)
    set_weight(weights[1])
    average.update(net)  # update 1: decay min(0.5, 1/2): the mean of the start and the iterate
    assert average.module[0].weight.item() == pytest.approx(1.5)
    set_weight(weights[2])
    average.update(net)  # update 2: decay 0.5 (the cap), not 2/3
    assert average.module[0].weight.item() == pytest.approx(0.5 * 1.5 + 0.5 * 6.0)
    assert average.module[1].running_mean.item() == pytest.approx(3.75)  # statistics averaged too
    assert average.module[1].num_batches_tracked.item() == 6  # counters copied
    assert not any(p.requires_grad for p in average.module.parameters())

    long = WeightAverage(net, decay=0.99)
    values = []
    for v in weights[1:]:
        set_weight(v)
        long.update(net)
        values.append(v)
    # Fewer updates than 1 / (1 - decay): the plain mean of every iterate and the start.
    assert long.module[0].weight.item() == pytest.approx(np.mean([6.0] + values))
    restored = WeightAverage(net, decay=0.99)
    restored.load_state_dict(long.state_dict())
    assert restored.updates == 4 and torch.equal(restored.module[0].weight, long.module[0].weight)
    with pytest.raises(ValueError):
        WeightAverage(net, decay=1.0)


def test_train_with_ema_ships_the_average(tmp_path):
    config = make_config("fcn8s_resnet18", "synthetic", out=str(tmp_path / "run"), epochs=2, lr=0.05,
                         ema=0.9, val_split="", **TINY)
    result = train(config)
    best, last = load_checkpoint(tmp_path / "run" / "best.pt"), load_checkpoint(tmp_path / "run" / "last.pt")
    ema = last["training_state"]["ema"]
    assert ema["updates"] == result.iterations and last["recipe"]["ema"] == 0.9
    # best.pt (the final epoch here) holds the average, last.pt the iterate that resume continues.
    assert result.best_epoch == 2
    for k, v in best["model_state"].items():
        assert torch.equal(v, ema["weights"][k]), k
    assert any(not torch.equal(v, last["model_state"][k]) for k, v in best["model_state"].items())
    with pytest.raises(FcnDeployError, match="--ema"):
        train(make_config("fcn8s_resnet18", "synthetic", out=str(tmp_path / "bad"), ema=1.5, **TINY))


def test_epoch_log_line_says_when_the_run_will_end():
    from fcn_deploy.training.loop import _eta_text

    assert _eta_text(120.0, 100, 250) == "ETA 5m"  # 1.2 s per iteration, 250 to go
    assert _eta_text(60.0, 117, 5850) == "ETA 50m"
    assert _eta_text(150.0, 117, 5265) == "ETA 1h52m"
    assert _eta_text(0.0, 0, 10) == "ETA unknown"
