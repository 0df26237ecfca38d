"""Optimizer and learning-rate schedules (AdamW; LAVIS's warm-up + cosine).

A schedule is a pure function of where training is — ``(epoch, iteration in the epoch,
optimizer updates so far)`` — that the runner applies before every iteration, so a resumed
run needs no scheduler state to continue exactly.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Dict, List

import torch

from regionvlm.common.errors import ConfigError
from regionvlm.common.registry import registry


def param_groups(model: torch.nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    """Trainable parameters in two groups: no decay on biases, norms and 1-D tensors."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "bias" in name or "norm" in name.lower() or "ln_" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    if not decay and not no_decay:
        raise ConfigError("the model has no trainable parameters; check the freeze_* settings.")
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, settings: Any) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters (``settings``: the run settings)."""
    return torch.optim.AdamW(
        param_groups(model, settings.weight_decay), lr=settings.init_lr, betas=tuple(settings.betas)
    )


class Schedule(ABC):
    """Base: the run's schedule settings; ``lr_at`` says the learning rate, ``apply`` writes it
    into the optimizer. ``warmup_lr`` unset means the subclass's ``DEFAULT_WARMUP_START``."""

    DEFAULT_WARMUP_START = "init_lr"

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_epoch: int,
        init_lr: float,
        min_lr: float = 0.0,
        warmup_lr: float | None = None,
        warmup_steps: int = 0,
        updates_per_epoch: int = 1,
    ) -> None:
        self.optimizer = optimizer
        self.max_epoch, self.init_lr, self.min_lr = int(max_epoch), float(init_lr), float(min_lr)
        default_start = self.init_lr if self.DEFAULT_WARMUP_START == "init_lr" else 0.0
        self.warmup_lr = default_start if warmup_lr is None else float(warmup_lr)
        self.warmup_steps = int(warmup_steps)
        self.total_updates = max(1, self.max_epoch * int(updates_per_epoch))

    @abstractmethod
    def lr_at(self, epoch: int, iteration: int, update: int) -> float:
        """The learning rate of iteration ``iteration`` of ``epoch`` after ``update`` updates."""

    def apply(self, epoch: int, iteration: int, update: int) -> float:
        lr = self.lr_at(epoch, iteration, update)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr


@registry.register_lr_scheduler("linear_warmup_cosine_lr")
class LinearWarmupCosineLR(Schedule):
    """LAVIS's ``linear_warmup_cosine_lr``, exactly: in epoch 0 the lr rises linearly from
    ``warmup_lr`` to ``init_lr`` over ``warmup_steps`` *iterations* (data batches, counted
    within the epoch) and then stays at ``init_lr`` for the rest of epoch 0; in epoch
    ``e >= 1`` it is ``min_lr + (init_lr - min_lr) * 0.5 * (1 + cos(pi * e / max_epoch))`` for
    the whole epoch — a staircase that never reaches ``min_lr``. ``warmup_lr`` unset means no
    warm-up (LAVIS's -1)."""

    def lr_at(self, epoch: int, iteration: int, update: int) -> float:
        if epoch == 0:
            rise = (self.init_lr - self.warmup_lr) * iteration / max(self.warmup_steps, 1)
            return min(self.init_lr, self.warmup_lr + rise)
        cosine = 0.5 * (1.0 + math.cos(math.pi * epoch / self.max_epoch))
        return (self.init_lr - self.min_lr) * cosine + self.min_lr


@registry.register_lr_scheduler("linear_warmup_step_cosine_lr")
class LinearWarmupStepCosineLR(Schedule):
    """A smooth variant (not LAVIS's): linear warm-up from ``warmup_lr`` (unset: 0) over
    ``warmup_steps`` optimizer *updates*, then a per-update cosine from ``init_lr`` to
    ``min_lr`` at the last update. The tiny preset's training uses it."""

    DEFAULT_WARMUP_START = "zero"

    def lr_at(self, epoch: int, iteration: int, update: int) -> float:
        if update < self.warmup_steps:
            return self.warmup_lr + (self.init_lr - self.warmup_lr) * update / max(1, self.warmup_steps)
        span = max(1, self.total_updates - self.warmup_steps)
        progress = min(1.0, (update - self.warmup_steps) / span)
        return self.min_lr + (self.init_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_schedule(optimizer: torch.optim.Optimizer, settings: Any, updates_per_epoch: int) -> Schedule:
    """The registered schedule ``settings.lr_sched`` for this run."""
    cls = registry.get_lr_scheduler_class(settings.lr_sched)
    return cls(
        optimizer,
        max_epoch=settings.max_epoch,
        init_lr=settings.init_lr,
        min_lr=settings.min_lr,
        warmup_lr=settings.warmup_lr,
        warmup_steps=settings.warmup_steps,
        updates_per_epoch=updates_per_epoch,
    )
