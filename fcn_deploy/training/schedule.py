"""Learning-rate schedules, as functions of the iteration count.

The paper trains at a fixed learning rate; later FCN-style work (DeepLab, PSPNet, the
torchvision references) uses "poly" decay, ``lr = base * (1 - t / T) ** 0.9``, often after a
short linear warm-up. The schedule is a plain object with ``state_dict`` so that a resumed
run picks up at exactly the same step.
"""
from __future__ import annotations

from typing import Dict, List

import torch

SCHEDULES = ("poly", "fixed")


def poly_factor(iteration: int, total_iters: int, power: float = 0.9) -> float:
    """``(1 - iteration / total_iters) ** power``, clamped at 0 past the end."""
    if total_iters <= 0:
        raise ValueError(f"total_iters must be > 0, not {total_iters}")
    return max(0.0, 1.0 - iteration / total_iters) ** power


def warmup_factor(iteration: int, warmup_iters: int, start: float = 0.001) -> float:
    """Linear ramp from ``start`` to 1 over ``warmup_iters`` iterations (1 afterwards)."""
    if warmup_iters <= 0 or iteration >= warmup_iters:
        return 1.0
    alpha = iteration / warmup_iters
    return start + (1.0 - start) * alpha


class LRSchedule:
    """Sets each parameter group's learning rate to ``base_lr * factor(iteration)``.

    ``kind`` is ``"poly"`` (decay to 0 at ``total_iters``) or ``"fixed"`` (the paper's).
    Call :meth:`step` once per optimiser step; ``iteration`` counts steps taken so far.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        kind: str = "poly",
        total_iters: int = 1,
        power: float = 0.9,
        warmup_iters: int = 0,
    ) -> None:
        if kind not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, not {kind!r}")
        self.optimizer = optimizer
        self.kind = kind
        self.total_iters = max(1, int(total_iters))
        self.power = power
        self.warmup_iters = int(warmup_iters)
        self.base_lrs: List[float] = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        for group, base in zip(optimizer.param_groups, self.base_lrs):
            group["initial_lr"] = base
        self.iteration = 0
        self._apply()

    def factor(self, iteration: int) -> float:
        decay = poly_factor(iteration, self.total_iters, self.power) if self.kind == "poly" else 1.0
        return decay * warmup_factor(iteration, self.warmup_iters)

    def _apply(self) -> None:
        f = self.factor(self.iteration)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * f

    def step(self) -> None:
        self.iteration += 1
        self._apply()

    def get_last_lr(self) -> List[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> Dict:
        return {
            "kind": self.kind,
            "total_iters": self.total_iters,
            "power": self.power,
            "warmup_iters": self.warmup_iters,
            "base_lrs": list(self.base_lrs),
            "iteration": self.iteration,
        }

    def load_state_dict(self, state: Dict) -> None:
        self.kind = state["kind"]
        self.total_iters = state["total_iters"]
        self.power = state["power"]
        self.warmup_iters = state["warmup_iters"]
        self.base_lrs = list(state["base_lrs"])
        self.iteration = state["iteration"]
        self._apply()
