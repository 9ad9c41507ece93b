"""A real two-process torchrun run (gloo on CPU) on the synthetic set."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from fcn_deploy.cli import main
from fcn_deploy.training import load_checkpoint
from fcn_deploy.training.distributed import EpochSampler

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")


def test_epoch_sampler_shards_and_resumes():
    full = EpochSampler(10, seed=1)
    full.set_epoch(2)
    order = list(full)
    assert sorted(order) == list(range(10))
    again = EpochSampler(10, seed=1)
    again.set_epoch(2)
    assert list(again) == order  # a function of (seed, epoch) alone
    again.set_epoch(3)
    assert list(again) != order
    # Two ranks: disjoint strides of the same permutation, padded to equal length.
    shards = []
    for rank in range(2):
        s = EpochSampler(9, seed=1, rank=rank, world_size=2)
        s.set_epoch(0)
        shards.append(list(s))
    assert len(shards[0]) == len(shards[1]) == 5
    assert set(shards[0]) | set(shards[1]) == set(range(9))
    # Skipping k samples resumes part-way through the same order.
    s = EpochSampler(10, seed=1)
    s.set_epoch(2, skip=4)
    assert list(s) == order[4:] and len(s) == 6


def test_torchrun_two_processes(tmp_path, capsys):
    run = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "fcn_deploy.cli", "train", "--model", "fcn8s_resnet18", "--width", "16",
        "--dataset", "synthetic", "--dataset-option", "size=(48,48)", "--dataset-option", "count=7",
        "--batch-size", "2", "--crop", "48x48", "--epochs", "2", "--lr", "0.02",
        "--pretrained-backbone", "none", "--threads", "1", "--out", str(run), "--no-progress",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("trained fcn8s_resnet18") == 1  # rank 0 alone reports

    last = load_checkpoint(run / "last.pt")
    state = last["training_state"]
    # 7 images over 2 processes: 4 each (padded), 2 iterations of 2 per epoch.
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert state["iteration"] == 4 and last["epoch"] == 2
    assert (run / "best.pt").is_file() and len(json.loads((run / "log.json").read_text())) == 2

    # The validation scores were summed over both processes' shards (4 + 3 of 7 images): one
    # process scoring the whole split with the same weights gets the same numbers.
    capsys.readouterr()
    code = main(["eval", "--model", str(run / "last.pt"), "--split", "val", "--dataset-option", "size=(48,48)",
                 "--dataset-option", "count=7", "--json", "--threads", "1"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["images"] == 7
    assert report["mean_iu"] == pytest.approx(last["metrics"]["mean_iu"], abs=1e-6)
    assert report["pixel_acc"] == pytest.approx(last["metrics"]["pixel_acc"], abs=1e-6)
