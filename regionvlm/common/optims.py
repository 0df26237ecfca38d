"""Optimizer and learning-rate schedule of the official recipe (AdamW, warm-up + cosine)."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Tuple

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
        raise ConfigError("the model has no trainable parameters; check freeze_* settings.")
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, run_cfg: Any) -> torch.optim.Optimizer:
    betas: Tuple[float, float] = tuple(run_cfg.get("betas", (0.9, 0.999)))  # type: ignore[assignment]
    return torch.optim.AdamW(param_groups(model, float(run_cfg.get("weight_decay", 0.05))),
                             lr=float(run_cfg.init_lr), betas=betas)


@registry.register_lr_scheduler("linear_warmup_cosine_lr")
class LinearWarmupCosineLR:
    """Per-step schedule: linear warm-up from ``warmup_lr`` over ``warmup_steps``, then cosine
    from ``init_lr`` to ``min_lr`` at ``total_steps``. Stateless apart from the step count."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, init_lr: float,
                 min_lr: float = 0.0, warmup_lr: float = 0.0, warmup_steps: int = 0):
        self.optimizer = optimizer
        self.total_steps = max(1, int(total_steps))
        self.init_lr, self.min_lr, self.warmup_lr = float(init_lr), float(min_lr), float(warmup_lr)
        self.warmup_steps = int(warmup_steps)
        self.step_count = 0
        self._apply()

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.warmup_lr + (self.init_lr - self.warmup_lr) * step / max(1, self.warmup_steps)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr + (self.init_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def _apply(self) -> None:
        lr = self.lr_at(self.step_count)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def get_last_lr(self) -> List[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> Dict[str, Any]:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.step_count = int(state["step_count"])
        self._apply()

    @classmethod
    def from_config(cls, optimizer: torch.optim.Optimizer, run_cfg: Any, total_steps: int):
        return cls(optimizer, total_steps, init_lr=run_cfg.init_lr, min_lr=run_cfg.get("min_lr", 0.0),
                   warmup_lr=run_cfg.get("warmup_lr", 0.0), warmup_steps=run_cfg.get("warmup_steps", 0))

