"""Image processors: bicubic resize to a square and CLIP normalization.

No flip and no random-resized-crop anywhere: both would move the region away from
its coordinates. The region-preserving crop of training lives in the dataset, where
the points are known (``regionvlm.datasets.transforms``).

Every PIL mode is turned into RGB by :func:`regionvlm.data.images.to_rgb` (LAVIS's
``convert("RGB")`` where that is right; 16-bit images scaled, undefined ones refused).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from regionvlm.common.errors import ConfigError
from regionvlm.common.registry import registry
from regionvlm.data.images import to_rgb

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@registry.register_processor("blip_image_eval")
class BlipImageEvalProcessor:
    """PIL image -> normalized float tensor (3, size, size)."""

    def __init__(self, image_size: int = 364, mean: Optional[tuple] = None, std: Optional[tuple] = None):
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ConfigError(
                f"image processor image_size must be a positive whole number of pixels, got {image_size!r}."
            )
        for name, value in (("mean", mean), ("std", std)):
            if value is not None and (
                len(value) != 3
                or not all(isinstance(v, (int, float)) for v in value)
                or (name == "std" and min(value) <= 0)
            ):
                raise ConfigError(
                    f"image processor {name} must be 3 numbers (one per RGB channel"
                    f"{', positive' if name == 'std' else ''}), got {value!r}."
                )
        self.image_size = image_size
        self.transform = transforms.Compose(
            [
                transforms.Resize((self.image_size, self.image_size), interpolation=InterpolationMode.BICUBIC),
                transforms.ToTensor(),
                transforms.Normalize(mean or CLIP_MEAN, std or CLIP_STD),
            ]
        )

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.transform(to_rgb(image, "image"))

    @classmethod
    def from_config(cls, cfg: Optional[Mapping[str, Any]] = None):
        cfg = cfg or {}
        return cls(image_size=cfg.get("image_size", 364), mean=cfg.get("mean"), std=cfg.get("std"))


@registry.register_processor("region_image_train")
class RegionImageTrainProcessor(BlipImageEvalProcessor):
    """Training images: identical to evaluation (crop augmentation happens in the dataset)."""
