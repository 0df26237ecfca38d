"""Model loading in LAVIS's words: ``load_model`` and ``load_model_and_preprocess``."""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
from omegaconf import OmegaConf

from regionvlm.common.registry import registry
from regionvlm.models.regionvlm_t5 import RegionVLMT5

__all__ = ["RegionVLMT5", "load_model", "load_model_and_preprocess", "load_preprocess", "place_model"]


def place_model(model: torch.nn.Module, is_eval: bool, device: str | torch.device) -> torch.nn.Module:
    """Move to ``device``; on GPU the frozen ViT and T5 are stored in bf16 as the official code does
    (autocast would otherwise re-cast their fp32 weights on every call)."""
    device = torch.device(device)
    if device.type == "cuda" and getattr(model, "freeze_t5", False):
        model.t5_model.to(torch.bfloat16)  # frozen T5 in bf16, as the official code
    if device.type == "cuda" and getattr(model, "freeze_vit", False):
        model.visual_encoder.to(torch.bfloat16)
    model = model.to(device)
    return model.eval() if is_eval else model


def load_model(name: str, model_type: str, is_eval: bool = False, device: str | torch.device = "cpu",
               checkpoint: Optional[str] = None, **overrides: Any) -> torch.nn.Module:
    """Build a registered model preset; ``overrides`` replace keys of its ``model:`` config."""
    import regionvlm.registration  # noqa: F401

    cls = registry.get_class_or_raise("model", name)
    model = cls.from_pretrained(model_type, **overrides)
    if checkpoint:
        model.load_checkpoint(checkpoint)
    return place_model(model, is_eval, device)


def load_preprocess(config: Any) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Image and text processors (``train``/``eval``) from a preset's ``preprocess:`` section."""
    from regionvlm.processors import load_processor

    def build(section) -> Dict[str, Any]:
        section = section or {}
        return {split: load_processor(section[split]) for split in ("train", "eval") if split in section}

    config = config or OmegaConf.create()
    return build(config.get("vis_processor")), build(config.get("text_processor"))


def load_model_and_preprocess(name: str, model_type: str, is_eval: bool = False,
                              device: str | torch.device = "cpu", **overrides: Any):
    """``model, vis_processors, txt_processors`` exactly as LAVIS returns them."""
    import regionvlm.registration  # noqa: F401

    cls = registry.get_class_or_raise("model", name)
    cfg = OmegaConf.load(cls.default_config_path(model_type))
    model = load_model(name, model_type, is_eval=is_eval, device=device, **overrides)
    vis_processors, txt_processors = load_preprocess(cfg.get("preprocess"))
    return model, vis_processors, txt_processors
