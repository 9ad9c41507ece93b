"""Checkpoints: the format, atomic writes, rebuilding a model, and exact resume."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

from fcn_deploy.data import build_dataset
from fcn_deploy.models import build_model
from fcn_deploy.training import (
    CheckpointError,
    atomic_save,
    config_for_resume,
    load_checkpoint,
    load_checkpoint_model,
    make_config,
    train,
)
from fcn_deploy.training.checkpoint import make_checkpoint

FORMAT_KEYS = {
    "format", "model_name", "num_classes", "model_options", "model_state", "classes", "palette",
    "ignore_index", "dataset", "normalization", "metrics", "epoch", "recipe", "wall_time_s",
}


class ExplodesWhenPickled:
    """Pickling fails part-way through a save, after earlier tensors have been written."""

    def __reduce__(self):
        raise RuntimeError("disk on fire")


def test_atomic_save_leaves_the_old_file_intact(tmp_path):
    path = tmp_path / "last.pt"
    atomic_save({"step": 1, "w": torch.arange(5)}, path)
    big = {"w": torch.randn(256, 256), "step": 2, "then": ExplodesWhenPickled()}
    with pytest.raises((RuntimeError, pickle.PicklingError)):
        atomic_save(big, path)
    old = torch.load(path, weights_only=True)
    assert old["step"] == 1 and torch.equal(old["w"], torch.arange(5))
    assert os.listdir(tmp_path) == ["last.pt"]  # no temporary file left behind
    atomic_save({"step": 3}, path)
    assert torch.load(path, weights_only=True)["step"] == 3


def test_checkpoint_format_and_rebuild(tmp_path):
    ds = build_dataset("synthetic", None, "val", size=(40, 56), count=2)
    model = build_model("fcn8s_resnet18", ds.num_classes, width=16)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path / "m.pt"
    atomic_save(make_checkpoint(model, {"width": 16}, ds, "synthetic", {"mean_iu": 0.5}, 3, {"lr": 0.1}, 12.5), path)

    ckpt = torch.load(path, weights_only=True)  # plain data: no pickled code needed
    assert FORMAT_KEYS <= set(ckpt)
    assert ckpt["format"] == "fcn-deploy-checkpoint"
    assert ckpt["classes"] == ds.classes and ckpt["ignore_index"] == 255
    assert ckpt["normalization"]["channel_order"] == model.normalization.channel_order

    rebuilt, info = load_checkpoint_model(path)
    assert not rebuilt.training and info["epoch"] == 3 and info["metrics"]["mean_iu"] == 0.5
    assert rebuilt.normalization == model.normalization
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model.eval()(x), rtol=0, atol=0)


def test_bad_checkpoints_fail_with_one_line(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a zip file at all")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(1)}, foreign)
    with pytest.raises(CheckpointError, match="not a fcn-deploy checkpoint"):
        load_checkpoint(foreign)


def _config(out, **extra):
    options = dict(
        model_options={"width": 16, "dropout": 0.2},  # dropout and loss sampling draw on the RNG
        dataset_options={"size": (48, 48), "count": 6},
        epochs=3,
        batch_size=2,  # 3 iterations per epoch
        crop=(40, 40),
        scale_range=(0.7, 1.3),
        loss_sampling=0.6,
        sampling_cell=8,
        lr=0.02,
        checkpoint_every=2,
        pretrained_backbone="none",
        threads=1,
        seed=3,
    )
    options.update(extra)
    return make_config("fcn8s_resnet18", "synthetic", out=str(out), **options)


class Killed(Exception):
    pass


@pytest.mark.parametrize("ema", [None, 0.8], ids=["plain", "ema"])
def test_killed_and_resumed_run_equals_uninterrupted(tmp_path, ema):
    straight = train(_config(tmp_path / "straight", ema=ema))
    assert straight.iterations == 9

    def kill_at_5(info):
        if info["iteration"] == 5:  # mid-epoch 2, one step after the checkpoint at iteration 4
            raise Killed()

    with pytest.raises(Killed):
        train(_config(tmp_path / "resumed", ema=ema), on_step=kill_at_5)
    state = load_checkpoint(tmp_path / "resumed" / "last.pt")["training_state"]
    assert (state["iteration"], state["epoch"], state["batch_in_epoch"]) == (4, 1, 1)

    # Resume from the run folder; worker processes must not change the result.
    config, ckpt_path = config_for_resume(str(tmp_path / "resumed"), num_workers=1)
    resumed = train(config, resume_from=ckpt_path)
    assert resumed.iterations == 9

    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert a["model_state"].keys() == b["model_state"].keys()
    for k in a["model_state"]:
        assert torch.equal(a["model_state"][k], b["model_state"][k]), k
    opt_a, opt_b = a["training_state"]["optimizer"]["state"], b["training_state"]["optimizer"]["state"]
    for k in opt_a:
        assert torch.equal(opt_a[k]["momentum_buffer"], opt_b[k]["momentum_buffer"])
    assert a["training_state"]["schedule"] == b["training_state"]["schedule"]
    strip = lambda rows: [{k: v for k, v in r.items() if "time" not in k} for r in rows]  # noqa: E731
    assert strip(straight.history) == strip(resumed.history)
    assert a["metrics"] == b["metrics"] and straight.best_epoch == resumed.best_epoch
    best_a, best_b = load_checkpoint(tmp_path / "straight" / "best.pt"), load_checkpoint(tmp_path / "resumed" / "best.pt")
    for k in best_a["model_state"]:
        assert torch.equal(best_a["model_state"][k], best_b["model_state"][k]), k
    if ema is not None:  # the weight average continues too, and it is what best.pt ships
        assert a["training_state"]["ema"]["updates"] == b["training_state"]["ema"]["updates"] == 9
        for k, v in a["training_state"]["ema"]["weights"].items():
            assert torch.equal(v, b["training_state"]["ema"]["weights"][k]), k


def _cli_train(out, *extra):
    import sys

    return [
        sys.executable, "-m", "fcn_deploy.cli", "train", "--model", "fcn8s_resnet18", "--width", "16",
        "--model-option", "dropout=0.2", "--dataset", "synthetic", "--dataset-option", "size=(48,48)",
        "--dataset-option", "count=8", "--batch-size", "2", "--crop", "40x40", "--epochs", "6",
        "--loss-sampling", "0.6", "--lr", "0.02", "--pretrained-backbone", "none", "--val-every", "3",
        "--checkpoint-every", "1", "--threads", "1", "--no-progress", "--out", str(out), *extra,
    ]


def test_sigkilled_cli_run_resumes_to_the_same_weights(tmp_path):
    """A real `kill -9` of `fcn-deploy train` at a random moment (possibly mid-save), then
    `--resume`: the final weights equal those of a run that was never interrupted."""
    import signal
    import subprocess
    import sys
    import time

    env = dict(os.environ, OMP_NUM_THREADS="1")
    straight = subprocess.run(_cli_train(tmp_path / "straight"), env=env, capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-2000:]

    run = tmp_path / "killed"
    proc = subprocess.Popen(_cli_train(run), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if load_checkpoint(run / "last.pt")["training_state"]["iteration"] >= 5:
                    break
            except CheckpointError:
                pass  # not written yet
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    state = load_checkpoint(run / "last.pt")["training_state"]  # never a half-written file
    assert 5 <= state["iteration"] < 24, "the run finished before it could be killed"

    resume = [sys.executable, "-m", "fcn_deploy.cli", "train", "--resume", str(run), "--threads", "1", "--no-progress"]
    resumed = subprocess.run(resume, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(run / "last.pt")
    assert a["training_state"]["iteration"] == b["training_state"]["iteration"] == 24
    for k in a["model_state"]:
        assert torch.equal(a["model_state"][k], b["model_state"][k]), k
    assert a["metrics"] == b["metrics"]
