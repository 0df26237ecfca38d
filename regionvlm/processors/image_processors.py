"""Image processors: bicubic resize to a square and CLIP normalization.

No flip and no random-resized-crop anywhere: both would move the region away from
its coordinates. The region-preserving crop of training lives in the dataset, where
the points are known (``regionvlm.datasets.transforms``).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from regionvlm.common.errors import InputError
from regionvlm.common.registry import registry

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@registry.register_processor("blip_image_eval")
class BlipImageEvalProcessor:
    """PIL image -> normalized float tensor (3, size, size)."""

    def __init__(self, image_size: int = 364, mean: Optional[tuple] = None, std: Optional[tuple] = None):
        self.image_size = int(image_size)
        self.transform = transforms.Compose([
            transforms.Resize((self.image_size, self.image_size), interpolation=InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            transforms.Normalize(mean or CLIP_MEAN, std or CLIP_STD),
        ])

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if not isinstance(image, Image.Image):
            raise InputError(f"image processor expects a PIL image, got {type(image).__name__}.")
        return self.transform(image.convert("RGB"))

    @classmethod
    def from_config(cls, cfg: Optional[Mapping[str, Any]] = None):
        cfg = cfg or {}
        return cls(image_size=cfg.get("image_size", 364), mean=cfg.get("mean"), std=cfg.get("std"))


@registry.register_processor("region_image_train")
class RegionImageTrainProcessor(BlipImageEvalProcessor):
    """Training images: identical to evaluation (crop augmentation happens in the dataset)."""
