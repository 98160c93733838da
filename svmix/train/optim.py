"""Optimisers, learning-rate schedules and early stopping (docs/method.md §Training recipes).

Schedules (registry ``SCHEDULERS``) own the learning rate: the trainer calls ``lr(step)`` before
every optimiser step and sets it on all parameter groups, and ``on_validation(eer)`` after each
validation. They hold no optimiser reference, so the released recipe's AdamW → SGD switch
(``optimizer_switch``) only replaces the optimiser.

- ``plateau``: base lr, multiplied by ``factor`` when validation EER has not improved (relative
  threshold 1e-4, as PyTorch's ReduceLROnPlateau) for more than ``patience`` validations.
- ``warm_restarts``: the authors' cosine annealing with warm restarts: cycle i lasts T_0·T_mult^i
  steps; lr rises linearly from the base lr to eta_max·gamma^i over T_up steps, then follows a
  cosine back to the base lr.
- ``constant``: the base lr.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, Optional

import torch

from svmix.errors import SvmixError
from svmix.registry import Registry

OPTIMIZERS = Registry("optimizer", provided=("params",))
SCHEDULERS = Registry("scheduler", provided=("base_lr",))

OPTIMIZERS.register("adamw")(torch.optim.AdamW)
OPTIMIZERS.register("adam")(torch.optim.Adam)
OPTIMIZERS.register("sgd")(torch.optim.SGD)


def build_optimizer(params: Iterable[torch.nn.Parameter], config: Dict[str, Any]) -> torch.optim.Optimizer:
    return OPTIMIZERS.build(config, params=list(params))


def optimizer_config_at(train_cfg: Dict[str, Any], step: int) -> Dict[str, Any]:
    """The optimiser in force at ``step`` (``optimizer_switch`` replaces it from ``at_step`` on)."""
    switch = train_cfg.get("optimizer_switch")
    if switch and step >= int(switch["at_step"]):
        return switch["optimizer"]
    return train_cfg["optimizer"]


class Schedule:
    def __init__(self, base_lr: float):
        self.base_lr = float(base_lr)

    def lr(self, step: int) -> float:
        return self.base_lr

    def on_validation(self, eer: float) -> None:
        pass

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        pass


SCHEDULERS.register("constant")(Schedule)


@SCHEDULERS.register("plateau")
class PlateauSchedule(Schedule):
    def __init__(self, base_lr: float, factor: float = 0.5, patience: int = 5, threshold: float = 1e-4,
                 min_lr: float = 0.0):
        super().__init__(base_lr)
        self.factor, self.patience, self.threshold, self.min_lr = factor, patience, threshold, min_lr
        self.best: Optional[float] = None
        self.bad, self.reductions = 0, 0

    def lr(self, step: int) -> float:
        return max(self.base_lr * self.factor ** self.reductions, self.min_lr)

    def on_validation(self, eer: float) -> None:
        if self.best is None or eer < self.best * (1 - self.threshold):
            self.best, self.bad = eer, 0
            return
        self.bad += 1
        if self.bad > self.patience:
            self.reductions += 1
            self.bad = 0

    def state_dict(self) -> Dict[str, Any]:
        return {"best": self.best, "bad": self.bad, "reductions": self.reductions}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.best, self.bad, self.reductions = state["best"], state["bad"], state["reductions"]


@SCHEDULERS.register("warm_restarts")
class WarmRestartSchedule(Schedule):
    def __init__(self, base_lr: float, t_0: int, t_up: int, eta_max: float, t_mult: float = 1.0,
                 gamma: float = 1.0):
        super().__init__(base_lr)
        if not 0 <= t_up < t_0:
            raise SvmixError(f"warm_restarts needs 0 <= t_up < t_0 (got t_up={t_up}, t_0={t_0})")
        self.t_0, self.t_up, self.eta_max, self.t_mult, self.gamma = t_0, t_up, eta_max, t_mult, gamma

    def lr(self, step: int) -> float:
        cycle, start, length = 0, 0, self.t_0
        while step >= start + length:
            start += length
            cycle += 1
            length = int(round(self.t_0 * self.t_mult ** cycle))
        t = step - start
        peak = self.eta_max * self.gamma ** cycle
        if t < self.t_up:
            return self.base_lr + (peak - self.base_lr) * t / self.t_up
        progress = (t - self.t_up) / max(1, length - self.t_up)
        return self.base_lr + (peak - self.base_lr) * (1 + math.cos(math.pi * progress)) / 2


def build_schedule(train_cfg: Dict[str, Any]) -> Schedule:
    return SCHEDULERS.build(train_cfg["scheduler"], base_lr=train_cfg["optimizer"]["lr"])


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class EarlyStopping:
    """Stop after ``patience`` validations without a new best EER (None: never)."""

    def __init__(self, patience: Optional[int]):
        self.patience = patience
        self.best: Optional[float] = None
        self.bad = 0

    def update(self, eer: float) -> None:
        if self.best is None or eer < self.best:
            self.best, self.bad = eer, 0
        else:
            self.bad += 1

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad >= self.patience

    def state_dict(self) -> Dict[str, Any]:
        return {"best": self.best, "bad": self.bad}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.best, self.bad = state["best"], state["bad"]
