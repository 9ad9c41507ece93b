import os

import pytest

# Two cores are shared by the test process and any subprocess it starts: keep torch from
# oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# No oneDNN ISA cap here: it would hold for OpenVINO too. The PyTorch channels-last bug it
# once dodged is handled where it lives, in training (fcn_deploy/training/memory_format.py).
#
# Tests whose path depends on the CPU's features (each passes on AVX2-only and AVX-512/BF16 CPUs):
# - test_channels_last.py: which oneDNN kernel crashes (< 8 input channels with AVX2, < 16 with
#   AVX-512); the AVX2 case also runs on an AVX-512 CPU, capped in its subprocess only.
# - test_onnx_export.py's INT8 weight-range test: CPUs without VNNI saturate 8-bit weights.
# - OpenVINO tests: on AVX512_BF16/AMX CPUs OpenVINO would compile fp32 graphs in bf16 unless
#   told not to; bf16 tests run where the CPU has it and check the one-line refusal elsewhere.
# - test_engine_choice.py: which CPU engine is faster is this machine's measurement.
# - test_results.py: the results header names this CPU's ISA flags.
# `run` and Segmenter on `--device cpu` take the faster of ONNX Runtime and OpenVINO, measured on
# this machine; tests that compare their labels with ONNX Runtime's pin the engine
# (tests/test_engine_choice.py takes the pin away to test the choice itself).
os.environ.setdefault("FCN_DEPLOY_CPU_ENGINE", "ort-cpu")

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # the runtime-only install runs without torch
    torch = None


@pytest.fixture(autouse=True)
def _seed():
    if torch is not None:
        torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory):
    """A real exported FCN-8s (ResNet-18 / 16, 3 classes), made once for every video and
    pipeline test that needs a model (tests/video_helpers.export_tiny_model)."""
    if torch is None:
        pytest.skip("exporting the tiny model needs torch (the train extra)")
    from video_helpers import export_tiny_model

    return export_tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx")
