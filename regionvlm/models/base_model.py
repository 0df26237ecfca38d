"""The LAVIS model surface: presets by name, ``from_config``, ``from_pretrained``.

A model's ``model:`` config keys are its constructor's parameters plus the loader keys
(:data:`LOADER_KEYS`); nested sections are typed :class:`~regionvlm.common.settings.Settings`
classes named in ``CONFIG_SECTIONS`` and reach the constructor as those typed objects.
:meth:`BaseModel.check_config` derives the accepted keys from the constructor, so a new
constructor argument is a new config key with no list to update; ``RANGES`` adds the allowed
values of top-level keys. Everything is checked there, once.
"""

from __future__ import annotations

import inspect
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple, Type

import torch
from omegaconf import OmegaConf
from torch import nn

from regionvlm.common.errors import ConfigError
from regionvlm.common.settings import Settings, check_keys, check_range, coerce, to_plain

# Keys of a ``model:`` section read by the loading code rather than the constructor.
LOADER_KEYS = ("arch", "model_type", "load_pretrained", "weights", "checkpoint", "use_grad_checkpoint")
_LOADER_TYPES = {
    "arch": str,
    "model_type": str,
    "load_pretrained": bool,
    "checkpoint": typing.Optional[str],
    "use_grad_checkpoint": bool,
}


class BaseModel(nn.Module):
    """Models name their preset YAMLs (package-relative) in ``PRETRAINED_MODEL_CONFIG_DICT``."""

    PRETRAINED_MODEL_CONFIG_DICT: Dict[str, str] = {}
    CONFIG_SECTIONS: Dict[str, Type[Settings]] = {}
    # Allowed values of top-level constructor keys: {key: {"min": ..., "max": ..., "choices": ...}}.
    RANGES: Dict[str, Dict[str, Any]] = {}

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
    def constructor_keys(cls) -> Tuple[str, ...]:
        params = inspect.signature(cls.__init__).parameters
        return tuple(name for name in params if name != "self")

    @classmethod
    def check_config(cls, cfg: Any) -> Dict[str, Any]:
        """Check every key and value of a ``model:`` config; return it as a plain dict.

        Unknown keys, wrong types and bad nested sections stop with the key and what is
        allowed (before any weight is read)."""
        plain = to_plain(cfg) or {}
        if not isinstance(plain, Mapping):
            raise ConfigError(f"`model` must be a mapping of settings, got {plain!r}.")
        check_keys(plain, cls.constructor_keys() + LOADER_KEYS, "model")
        hints = typing.get_type_hints(cls.__init__)
        out: Dict[str, Any] = {}
        for key, value in plain.items():
            if key in cls.CONFIG_SECTIONS:
                out[key] = cls.CONFIG_SECTIONS[key].parse(value, f"model.{key}")  # typed, checked once
            elif key in hints:
                out[key] = coerce(value, hints[key], f"model.{key}")
                check_range(out[key], cls.RANGES.get(key, {}), f"model.{key}")
            elif key in _LOADER_TYPES:
                out[key] = coerce(value, _LOADER_TYPES[key], f"model.{key}")
            else:
                out[key] = value
        return out

    @classmethod
    def from_pretrained(
        cls, model_type: str, device: Any = None, is_eval: bool = True, **overrides: Any
    ) -> "BaseModel":
        """Build a preset, loading the weights its YAML points to (``overrides`` win); the
        subclass's ``from_config`` does the building (on ``device``, when given)."""
        cfg = OmegaConf.load(cls.default_config_path(model_type)).model
        cfg = OmegaConf.merge(cfg, OmegaConf.create(overrides))
        return cls.from_config(cfg, device=device, is_eval=is_eval)

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
