"""Narrow nets train on the CPU without crashing (fcn_deploy/training/memory_format.py).

PyTorch 2.13's oneDNN corrupts the heap computing the channels-last weight gradient of a
strided 1x1 convolution with fewer input channels than a vector register holds (8 with AVX2,
16 with AVX-512). These tests run real training in real subprocesses, because the failure is a
SIGSEGV that would take the test process with it.

CPU features: the crash itself depends on the CPU (which oneDNN kernel runs). The AVX2 case is
tested here on any AVX-512 machine by capping oneDNN at AVX2 in the subprocess
(ONEDNN_MAX_CPU_ISA, which oneDNN reads at start-up); on an AVX2-only machine both cases run the
AVX2 kernel.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from fcn_deploy.models import build_model  # noqa: E402
from fcn_deploy.training.memory_format import channels_last_hazards  # noqa: E402

# Issue 30's repro, cut to a few iterations (the crash came in the first). Crops stay at the
# default 320x320: the bug shows from about 48x48 at the strided convolution.
TRAIN = [
    "train", "--model", "fcn8s_resnet18", "--width", "16", "--dataset", "synthetic",
    "--dataset-option", "size=(64,64)", "--pretrained-backbone", "none", "--epochs", "1",
    "--max-iters", "2", "--batch-size", "4", "--threads", "1",
]


def _env(isa_cap):
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    if isa_cap:
        env["ONEDNN_MAX_CPU_ISA"] = isa_cap
    return env


def _train(tmp_path, prelude: str, isa_cap=None) -> subprocess.CompletedProcess:
    code = prelude + "from fcn_deploy.cli import main\nraise SystemExit(main(sys.argv[1:]))\n"
    return subprocess.run(
        [sys.executable, "-c", "import sys\n" + code, *TRAIN, "--out", str(tmp_path / "run")],
        cwd=tmp_path, env=_env(isa_cap), capture_output=True, text=True, timeout=600,
    )


@pytest.mark.parametrize("width, hazards", [
    (16, ["backbone.layer2.0.downsample.0", "backbone.layer3.0.downsample.0"]),
    (8, ["backbone.layer2.0.downsample.0"]),
    (4, []),
])
def test_hazards_are_the_narrow_strided_1x1_convolutions(width, hazards):
    assert channels_last_hazards(build_model("fcn8s_resnet18", 3, width=width)) == hazards
    assert channels_last_hazards(build_model("fcn8s_resnet18", 3)) == []  # full width


@pytest.mark.parametrize("isa_cap", [None, "AVX2"], ids=["native-isa", "avx2"])
def test_narrow_net_trains_without_channels_last(tmp_path, isa_cap):
    done = _train(tmp_path, "", isa_cap)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "without channels-last" in done.stderr
    assert "backbone.layer2.0.downsample.0" in done.stderr
    assert (tmp_path / "run" / "best.pt").is_file()


def test_without_the_check_the_same_run_crashes(tmp_path):
    """The check guards a real crash: the same run with it taken out dies by a signal. When a
    PyTorch release fixes the kernel this fails, and memory_format.py can go."""
    prelude = "import fcn_deploy.training.loop as loop\nloop.channels_last_hazards = lambda model: []\n"
    done = _train(tmp_path, prelude)
    assert done.returncode < 0 or done.returncode in (134, 139), (
        f"exit {done.returncode}: PyTorch {torch.__version__} no longer crashes here; "
        "the channels-last check in fcn_deploy/training/memory_format.py may go"
    )
