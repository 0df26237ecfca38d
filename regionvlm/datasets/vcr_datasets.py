"""The VCR evaluation dataset: items of the official JSONL with their images and object masks,
loaded lazily (the file format itself is :mod:`regionvlm.data.vcr`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from regionvlm.data.images import check_image_size, open_image
from regionvlm.data.vcr import Skipped, VCRItem, load_metadata, object_mask


@dataclass
class VCRSample:
    """An item ready for the model: processed image and the masks of its referenced objects."""

    item: VCRItem
    image: Any
    masks: Dict[int, np.ndarray]
    mask_fallbacks: List[int] = field(default_factory=list)


class VCRDataset:
    """Indexable VCR split; ``dataset[i]`` loads image, metadata and masks lazily.

    ``skipped`` lists items left out while reading (under ``skip_missing``); the evaluation
    adds the ones whose image or metadata turns out unreadable when loaded."""

    def __init__(
        self,
        items: Sequence[VCRItem],
        image_root: Union[str, Path],
        metadata_root: Optional[Union[str, Path]] = None,
        vis_processor: Optional[Callable] = None,
        text_processor: Optional[Callable] = None,
        split: str = "val",
        annotation_path: Optional[str] = None,
        skipped: Optional[Sequence[Skipped]] = None,
        skip_missing: bool = False,
    ):
        self.items = list(items)
        self.image_root = Path(image_root)
        self.metadata_root = Path(metadata_root) if metadata_root is not None else self.image_root
        self.vis_processor = vis_processor
        self.text_processor = text_processor
        self.split = split
        self.annotation_path = annotation_path
        self.skipped = list(skipped or [])
        self.skip_missing = skip_missing

    @property
    def eval_name(self) -> str:
        return "vcr"

    def identity(self) -> Dict[str, Any]:
        """What results depend on besides the model and the settings."""
        return {
            "annotation": self.annotation_path,
            "split": self.split,
            "items": len(self.items),
            "image_root": str(self.image_root),
            "metadata_root": str(self.metadata_root),
            "skip_missing": self.skip_missing,
        }

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> VCRSample:
        return self.load(self.items[index])

    def load(self, item: VCRItem) -> VCRSample:
        meta = load_metadata(self.metadata_root / item.metadata_fn, len(item.objects), item.where)
        masks: Dict[int, np.ndarray] = {}
        fallbacks: List[int] = []
        for i in item.referenced_objects():
            masks[i], used_box = object_mask(meta, i, item.where)
            if used_box:
                fallbacks.append(i)
        image_path = self.image_root / item.img_fn
        image = open_image(image_path, f"{item.where}: image file")
        check_image_size(
            image.size,
            (meta["width"], meta["height"]),
            f"{item.where}: image file '{image_path}'",
            f"its metadata '{self.metadata_root / item.metadata_fn}'",
        )
        if self.vis_processor is not None:
            image = self.vis_processor(image)
        return VCRSample(item=item, image=image, masks=masks, mask_fallbacks=fallbacks)
