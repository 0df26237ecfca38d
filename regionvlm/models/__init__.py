"""Model loading in LAVIS's words: ``load_model`` and ``load_model_and_preprocess``."""

from __future__ import annotations

import inspect
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from omegaconf import OmegaConf

from regionvlm.common.config import Config
from regionvlm.common.errors import ConfigError
from regionvlm.common.registry import registry
from regionvlm.models.precision import place_model
from regionvlm.models.regionvlm_t5 import RegionVLMT5

__all__ = [
    "RANDOM_WEIGHTS_WARNING",
    "RegionVLMT5",
    "create_model",
    "load_model",
    "load_model_and_preprocess",
    "load_preprocess",
    "model_config",
    "model_setting",
    "place_model",
    "random_weights_notice",
]

RANDOM_WEIGHTS_WARNING = (
    "warning: the model's weights are random (no checkpoint given, model.load_pretrained false): its outputs "
    "mean nothing. Pass --checkpoint (model.checkpoint) or load the released files (model.load_pretrained: true)."
)


def random_weights_notice(model_cfg: Any, training: bool = False) -> Optional[str]:
    """The line a command prints first when its model config loads no weights at all (a
    checkpoint and the released files both absent); None when weights are loaded."""
    if model_cfg.get("load_pretrained", False) or model_cfg.get("checkpoint", None) is not None:
        return None
    if training:
        return "note: training starts from random weights (no model.checkpoint, model.load_pretrained false)."
    return RANDOM_WEIGHTS_WARNING


def model_config(
    model_type: str,
    checkpoint: Optional[str] = None,
    cfg_path: Optional[str] = None,
    options: Sequence[str] = (),
    flag: str = "the checkpoint path",
) -> Any:
    """The ``model:`` config the commands' flags describe: the preset ``model_type`` (or
    ``cfg_path``'s ``model:`` section) with ``options`` on top and ``checkpoint`` as
    ``model.checkpoint`` (an empty one is an error naming ``flag``, not random weights)."""
    options = list(options or [])
    if checkpoint is not None:
        if not str(checkpoint).strip():
            raise ConfigError(f"{flag} is empty; give a checkpoint file, or leave it out for the preset's weights.")
        options.append(f"model.checkpoint={checkpoint}")
    if cfg_path:
        return Config(cfg_path, options).model_cfg
    return Config.from_dict({"model": {"arch": "regionvlm_t5", "model_type": model_type}}, options).model_cfg


def model_setting(model_cfg: Any, key: str) -> Any:
    """A ``model:`` key's value: the config's if set, else the model class's default (the one
    place each default lives: its constructor). How builders learn the model's image size and
    number of region points before the model is built."""
    value = model_cfg.get(key, None) if model_cfg is not None else None
    if value is not None:
        return value
    cls = registry.get_model_class(str(model_cfg.get("arch", "regionvlm_t5")))
    param = inspect.signature(cls.__init__).parameters.get(key)
    return None if param is None or param.default is inspect.Parameter.empty else param.default


def create_model(
    model_cfg: Any, device: str | torch.device = "cpu", is_eval: bool = True, precision: Optional[str] = None
) -> torch.nn.Module:
    """Build a ``model:`` config for one device, as open_clip's ``create_model(precision=,
    device=)``: the precision policy is decided once, from ``device`` (``auto``: official on
    CUDA, fp32 elsewhere), the released files are read straight into the dtypes it gives the
    frozen towers, and the model is placed there. Nothing guesses the device."""
    cls = registry.get_model_class(str(model_cfg.get("arch", "regionvlm_t5")))
    return cls.from_config(model_cfg, device=device, is_eval=is_eval, precision=precision)


def load_model(
    name: str,
    model_type: str,
    is_eval: bool = False,
    device: str | torch.device = "cpu",
    checkpoint: Optional[str] = None,
    **overrides: Any,
) -> torch.nn.Module:
    """Build a registered model preset on ``device``; ``overrides`` replace keys of its ``model:`` config."""
    if checkpoint is not None:
        overrides["checkpoint"] = checkpoint
    return registry.get_model_class(name).from_pretrained(model_type, device=device, is_eval=is_eval, **overrides)


def load_preprocess(config: Any) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Image and text processors (``train``/``eval``) from a preset's ``preprocess:`` section."""
    from regionvlm.processors import load_processor

    def build(section) -> Dict[str, Any]:
        section = section or {}
        return {split: load_processor(section[split]) for split in ("train", "eval") if split in section}

    config = config or OmegaConf.create()
    return build(config.get("vis_processor")), build(config.get("text_processor"))


def load_model_and_preprocess(
    name: str, model_type: str, is_eval: bool = False, device: str | torch.device = "cpu", **overrides: Any
):
    """``model, vis_processors, txt_processors`` exactly as LAVIS returns them."""
    cls = registry.get_model_class(name)
    cfg = OmegaConf.load(cls.default_config_path(model_type))
    model = load_model(name, model_type, is_eval=is_eval, device=device, **overrides)
    vis_processors, txt_processors = load_preprocess(cfg.get("preprocess"))
    return model, vis_processors, txt_processors
