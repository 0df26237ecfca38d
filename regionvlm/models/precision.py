"""Precision policies: which dtype each tower's weights have and which autocast each step runs
under, in one object that the model (evaluation and forward) and the runner (training) share.

========  ====================================================  ==================================
policy    evaluation                                            training
========  ====================================================  ==================================
official  ViT weights fp16, run under fp16 autocast;            whole step under fp16 autocast with
          ``ln_vision`` + Q-Former + ``t5_proj`` in fp32        a GradScaler; ViT weights fp32
          (no autocast); T5 weights bf16 under bf16 autocast    (fp16 autocast); T5 weights bf16
                                                                under bf16 autocast
bf16      frozen towers' weights bf16; every step under bf16    the same, no loss scaling
          autocast
fp32      everything fp32, no autocast                          the same
========  ====================================================  ==================================

``official`` is what the authors' LAVIS code does (``vit_precision: fp16`` at evaluation,
``amp: True`` in training, T5 cast to bf16 at construction). Reduced-precision *weights*
apply to frozen towers only: a tower that trains keeps fp32 master weights and gets the
step's autocast. ``auto`` resolves to ``official`` on CUDA and ``fp32`` on CPU; asking for
a policy on CPU applies it there too (CPU autocast supports fp16 and bf16), which is how
the tests check every policy and how ``bf16`` lets the full model fit in 16 GB of RAM.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ContextManager, Optional

import torch

from regionvlm.common.errors import ConfigError

POLICIES = ("auto", "official", "bf16", "fp32")
TOWERS = ("vit", "qformer", "t5")


def resolve(name: str, device_type: str) -> str:
    """``auto`` -> ``official`` on CUDA, ``fp32`` elsewhere; other names as given."""
    if name not in POLICIES:
        raise ConfigError(f"precision must be one of {list(POLICIES)}, got {name!r}.")
    if name == "auto":
        return "official" if device_type == "cuda" else "fp32"
    return name


@dataclass(frozen=True)
class PrecisionPolicy:
    """A resolved policy on one device type ("cuda" or "cpu")."""

    name: str = "fp32"
    device_type: str = "cpu"

    @classmethod
    def create(cls, name: str = "auto", device: Optional[torch.device | str] = None) -> "PrecisionPolicy":
        device_type = torch.device(device).type if device is not None else "cpu"
        return cls(resolve(name, device_type), device_type)

    # -- weights -------------------------------------------------------------------
    def weight_dtype(self, tower: str, frozen: bool, training: bool) -> torch.dtype:
        """Storage dtype of a tower's weights (trainable towers keep fp32 master weights)."""
        if tower not in TOWERS:
            raise ValueError(f"unknown tower {tower!r}")
        if not frozen or tower == "qformer" or self.name == "fp32":
            return torch.float32
        if self.name == "bf16":
            return torch.bfloat16
        if tower == "t5":
            return torch.bfloat16
        return torch.float32 if training else torch.float16  # official ViT: fp32 in training, fp16 at eval

    # -- autocast ------------------------------------------------------------------
    def autocast_dtype(self, tower: str, training: bool) -> Optional[torch.dtype]:
        """The autocast dtype a tower's step runs under (None: no autocast, plain fp32)."""
        if self.name == "fp32":
            return None
        if self.name == "bf16":
            return torch.bfloat16
        if tower == "t5":
            return torch.bfloat16
        if tower == "vit":
            return torch.float16
        return torch.float16 if training else None  # official Q-Former: fp32 at eval, under the step's fp16 in training

    def autocast(self, tower: str, training: bool) -> ContextManager:
        dtype = self.autocast_dtype(tower, training)
        if dtype is None:
            return torch.autocast(self.device_type, enabled=False)
        return torch.autocast(self.device_type, dtype=dtype)

    def train_autocast(self) -> ContextManager:
        """The context of a whole training step (the runner's ``amp`` autocast)."""
        if self.name == "official":
            return torch.autocast(self.device_type, dtype=torch.float16)
        if self.name == "bf16":
            return torch.autocast(self.device_type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # -- loss scaling --------------------------------------------------------------
    @property
    def uses_grad_scaler(self) -> bool:
        """fp16 training needs loss scaling; bf16 and fp32 do not."""
        return self.name == "official"

    def grad_scaler(self) -> Optional["torch.amp.GradScaler"]:
        return torch.amp.GradScaler(self.device_type) if self.uses_grad_scaler else None


def place_model(
    model: torch.nn.Module, is_eval: bool, device: str | torch.device, precision: Optional[str] = None
) -> torch.nn.Module:
    """Move to ``device`` under a precision policy (default: the model's ``precision`` setting,
    ``auto`` = the official numerics on GPU, fp32 on CPU); frozen towers get the policy's
    weight dtype (above)."""
    device = torch.device(device)
    name = precision or getattr(model, "precision_name", "auto")
    if hasattr(model, "set_precision"):
        model.set_precision(PrecisionPolicy.create(name, device), training=not is_eval)
    model = model.to(device)
    return model.eval() if is_eval else model.train()
