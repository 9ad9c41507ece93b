"""Whether a net can train channels-last on the CPU.

Channels-last (NHWC) is the faster memory format for convolutions on the CPU, so training uses
it there by default. PyTorch 2.13's oneDNN has a bug in it: the weight gradient of a 1x1
convolution with a stride above 1 and fewer input channels than one vector register holds
(8 floats with AVX2, 16 with AVX-512) corrupts the heap, and the run dies with SIGSEGV or
"double free or corruption" a few iterations in. Real-width nets never meet it; narrow ones do
(``fcn8s_resnet18`` at ``--width 16``, a sixteenth of the channels: the downsamples of
``layer2`` and ``layer3`` take 4 and 8). Such a net trains in the contiguous (NCHW) format instead, which is correct on every
CPU, only slower.

The bound is 16, the widest vector any x86-64 CPU gives oneDNN, so the choice does not depend
on which CPU the run is on.
"""
from __future__ import annotations

from typing import List

import torch.nn as nn

# Fewer input channels than this, in a strided 1x1 convolution, hits the bug (AVX-512: 16 floats).
MIN_SAFE_IN_CHANNELS = 16


def channels_last_hazards(model: nn.Module) -> List[str]:
    """The names of ``model``'s convolutions whose channels-last weight gradient crashes
    PyTorch 2.13 on the CPU: 1x1 kernels with a stride above 1 and fewer than
    :data:`MIN_SAFE_IN_CHANNELS` input channels (a single input channel is safe, but too rare
    to special-case)."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d)
        and tuple(module.kernel_size) == (1, 1)
        and any(s > 1 for s in module.stride)
        and module.in_channels < MIN_SAFE_IN_CHANNELS
    ]


def channels_last_note(model_name: str, hazards: List[str]) -> str:
    """The one line a run prints when it turns channels-last off for ``hazards``."""
    first = hazards[0]
    more = f" and {len(hazards) - 1} more" if len(hazards) > 1 else ""
    return (
        f"training {model_name} without channels-last: its strided 1x1 convolution {first}{more} has fewer "
        f"than {MIN_SAFE_IN_CHANNELS} input channels, which crashes PyTorch's CPU kernels in that format"
    )
