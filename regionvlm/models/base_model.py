"""The LAVIS model surface: presets by name, ``from_config``, ``from_pretrained``."""
from __future__ import annotations

from contextlib import nullcontext
from importlib import resources
from pathlib import Path
from typing import Dict

import torch
from omegaconf import OmegaConf
from torch import nn

from regionvlm.common.errors import ConfigError


class BaseModel(nn.Module):
    """Models name their preset YAMLs (package-relative) in ``PRETRAINED_MODEL_CONFIG_DICT``."""

    PRETRAINED_MODEL_CONFIG_DICT: Dict[str, str] = {}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @classmethod
    def default_config_path(cls, model_type: str) -> str:
        if model_type not in cls.PRETRAINED_MODEL_CONFIG_DICT:
            raise ConfigError(
                f"unknown model_type '{model_type}' for {cls.__name__}; "
                f"available: {sorted(cls.PRETRAINED_MODEL_CONFIG_DICT)}."
            )
        return str(Path(str(resources.files("regionvlm"))) / cls.PRETRAINED_MODEL_CONFIG_DICT[model_type])

    @classmethod
    def from_pretrained(cls, model_type: str, **overrides):
        """Build a preset, loading the weights its YAML points to (``overrides`` win)."""
        cfg = OmegaConf.load(cls.default_config_path(model_type)).model
        cfg = OmegaConf.merge(cfg, OmegaConf.create(overrides))
        return cls.from_config(cfg)

    def maybe_autocast(self, dtype: torch.dtype = torch.bfloat16):
        """bf16 autocast on GPU (as the official code), plain fp32 on CPU."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=dtype)
        return nullcontext()

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
