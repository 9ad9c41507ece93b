import os

import pytest

# Two cores are shared by the test process and any subprocess it starts: keep torch from
# oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "1")

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # the runtime-only install runs without torch
    torch = None


@pytest.fixture(autouse=True)
def _seed():
    if torch is not None:
        torch.manual_seed(0)
