"""An exponential moving average (EMA) of the weights, the net that a run with ``--ema`` ships.

SGD's last iterate wanders around a minimum: on a small dataset such as CamVid the validation
mean IU of consecutive epochs differs by a point or more. Averaging the weights of the last
few hundred iterations lands nearer the centre of that region, which generalises better
(Polyak averaging; "stochastic weight averaging" in later work), at no cost at inference: the
average is an ordinary set of weights of the same net.

Batch-norm running statistics are averaged like the weights (a lag of the same length), so
the averaged net is used as it is, with no extra pass over the data. Integer buffers (batch
counters) are copied. For the first ``1 / (1 - decay)`` updates the average is the plain mean
of every iterate so far (decay ``n / (n + 1)`` at update ``n``), so that it is neither stuck
at the starting weights nor shorter than asked for; after that it is the EMA proper.
"""
from __future__ import annotations

import copy
from typing import Any, Dict

import torch
import torch.nn as nn


class WeightAverage:
    """``average = decay * average + (1 - decay) * weights`` after every optimiser step."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the EMA decay must be in (0, 1), not {decay}")
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, self.updates / (self.updates + 1.0))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current weights of ``model`` (the same architecture) into the average."""
        self.updates += 1
        d = self.current_decay()
        for average, current in zip(self.module.state_dict().values(), model.state_dict().values()):
            if average.dtype.is_floating_point:
                average.lerp_(current.detach(), 1.0 - d)
            else:
                average.copy_(current)

    def state_dict(self) -> Dict[str, Any]:
        """What ``last.pt`` stores so that a resumed run continues the same average."""
        return {"decay": self.decay, "updates": self.updates,
                "weights": {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()}}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.decay = float(state["decay"])
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["weights"])
