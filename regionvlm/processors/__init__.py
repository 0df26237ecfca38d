"""Processors: inputs in (PIL images, strings), tensors/strings out, as in LAVIS."""

from regionvlm.processors.image_processors import BlipImageEvalProcessor, RegionImageTrainProcessor
from regionvlm.processors.text_processors import BlipCaptionProcessor, BlipQuestionProcessor, pre_caption

__all__ = [
    "BlipCaptionProcessor",
    "BlipImageEvalProcessor",
    "BlipQuestionProcessor",
    "RegionImageTrainProcessor",
    "load_processor",
    "pre_caption",
]


def load_processor(cfg) -> object:
    """Build a registered processor from a ``{name: ..., **kwargs}`` config."""
    from regionvlm.common.registry import registry

    cls = registry.get_class_or_raise("processor", cfg["name"])
    return cls.from_config(cfg)
