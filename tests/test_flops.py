"""Multiply-accumulate counting (single layers by hand, whole nets against known figures)
and the ``fcn-deploy models`` table built on it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from fcn_deploy.models.flops import count_flops, count_macs, count_parameters
from fcn_deploy.models.resnet import ResNetBackbone, ResNetFCN


def test_single_conv_by_hand():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    # 8 x 10 x 12 outputs, each a dot product over 3 x 3 x 3 inputs.
    assert count_macs(conv, 10, 12) == 8 * 10 * 12 * 27
    assert count_flops(conv, 10, 12) == pytest.approx(2 * 8 * 10 * 12 * 27 / 1e9)
    assert count_parameters(conv) == 8 * 27 + 8


def test_grouped_strided_conv_by_hand():
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=4)
    # Output 16 x 5 x 6; each output sees 8 / 4 = 2 input channels x 3 x 3.
    assert count_macs(conv, 10, 12, channels=8) == 16 * 5 * 6 * 2 * 9


def test_transposed_conv_by_hand():
    deconv = nn.ConvTranspose2d(4, 6, 4, stride=2, padding=1)
    # Each of the 4 x 5 x 7 inputs is scattered through 6 x 4 x 4 weights; the output
    # (6 x 10 x 14) is *not* what the work scales with.
    assert count_macs(deconv, 5, 7, channels=4) == 4 * 5 * 7 * 6 * 16
    grouped = nn.ConvTranspose2d(6, 6, 16, stride=8, padding=4, groups=6, bias=False)
    # One 16 x 16 filter per channel: 1/6 of the dense 6 -> 6 form.
    assert count_macs(grouped, 5, 7, channels=6) == 6 * 5 * 7 * 1 * 256
    dense = nn.ConvTranspose2d(6, 6, 16, stride=8, padding=4, bias=False)
    assert count_macs(dense, 5, 7, channels=6) == 6 * count_macs(grouped, 5, 7, channels=6)


def test_linear_by_hand():
    net = nn.Sequential(nn.Conv2d(3, 2, 1, bias=False), nn.Flatten(), nn.Linear(2 * 4 * 5, 7))
    assert count_macs(net, 4, 5) == 2 * 4 * 5 * 3 + 40 * 7
    assert count_parameters(net) == 6 + 40 * 7 + 7


def test_hooks_removed_and_mode_restored():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Dropout(0.5))
    net.train()
    count_macs(net, 8, 8)
    assert net.training
    assert all(not m._forward_hooks for m in net.modules())


@pytest.mark.parametrize("depth,torchvision_gmacs", [(18, 1.81), (34, 3.66), (50, 4.09)])
def test_resnet_backbones_match_torchvision_figures(depth, torchvision_gmacs):
    # torchvision's model docs list these "GFLOPS" (multiply-accumulates) at 224 x 224;
    # our backbone lacks only the 1000-way classifier (0.0005-0.002 G).
    with torch.device("meta"):
        backbone = ResNetBackbone(depth)
    assert count_macs(backbone, 224, 224) / 1e9 == pytest.approx(torchvision_gmacs, abs=0.006)


def test_meta_model_counts_like_real_model_and_like_torch_counter():
    torch.manual_seed(0)
    real = ResNetFCN(18, 5, width=16)
    with torch.device("meta"):
        meta = ResNetFCN(18, 5, width=16)
    assert count_flops(meta, 45, 70) == count_flops(real, 45, 70)
    assert count_parameters(meta) == count_parameters(real)
    counter = FlopCounterMode(display=False)  # torch's own count of conv/matmul FLOPs
    with counter, torch.no_grad():
        real.eval()(torch.zeros(1, 3, 45, 70))
    assert 2 * count_macs(real, 45, 70) == counter.get_total_flops()


def test_bad_size():
    with pytest.raises(ValueError):
        count_macs(nn.Conv2d(3, 3, 1), 0, 5)


# --- fcn-deploy models: the zoo table --------------------------------------------------

def test_models_command_json_lists_every_model(capsys):
    from fcn_deploy.cli import main
    from fcn_deploy.models import available_models

    assert main(["models", "--json", "--num-classes", "11"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == available_models()
    by_name = {r["name"]: r for r in rows}
    r18 = by_name["fcn8s_resnet18"]
    assert r18["input_size"] == [360, 480]
    assert r18["normalization"] == "torchvision_imagenet" and r18["backbone"] == "resnet18"
    # The backbone (11.18M) plus the head: three 1x1 scorers and three dense 11 -> 11
    # deconvolutions (4x4, 4x4, 16x16).
    head = (512 + 256 + 128 + 3) * 11 + 11 * 11 * (16 + 16 + 256)
    assert r18["parameters"] == 11_176_512 + head
    with torch.device("meta"):
        model = ResNetFCN(18, 11)
    assert r18["gflops"] == pytest.approx(count_flops(model, 360, 480), abs=1e-3)
    for r in rows:
        assert r["parameters"] > 0 and r["gflops"] > 0


def test_models_command_table_and_size(capsys):
    from fcn_deploy.cli import main
    from fcn_deploy.models import available_models

    assert main(["models", "--size", "64x96"]) == 0
    out = capsys.readouterr().out
    assert "96x64" in out
    for name in available_models():
        assert name in out


@pytest.mark.parametrize("bad", ["360", "0x480", "axb", "360x480x3"])
def test_models_command_bad_size_is_one_line_error(capsys, bad):
    from fcn_deploy.cli import main

    assert main(["models", "--size", bad]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fcn-deploy: error: --size") and err.count("\n") == 1


def test_models_command_as_a_process():
    from fcn_deploy.models import available_models

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-m", "fcn_deploy.cli", "models", "--json"],
        cwd=root, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert [r["name"] for r in json.loads(proc.stdout)] == available_models()
