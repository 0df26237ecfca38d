"""The evaluation dataset of zero-shot COCO captioning: the images of a Karpathy split with
the COCO-format caption ground truth they are scored against (formats:
:mod:`regionvlm.data.coco_karpathy`)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import torch

from regionvlm.data.coco_karpathy import CaptionGroundTruth, KarpathyImage
from regionvlm.data.images import open_image
from regionvlm.datasets.protocol import CaptionBatch, keyed_units


class CocoCaptionEvalDataset:
    """One image per item (in the split file's order); ``gt`` is what the metrics read."""

    def __init__(
        self,
        images: Sequence[KarpathyImage],
        image_root: str | Path,
        vis_processor: Any,
        gt: CaptionGroundTruth,
        name: str,
        split: str,
        annotation_path: str,
    ) -> None:
        self.images = list(images)
        self.image_root = Path(image_root).expanduser()
        self.vis_processor = vis_processor
        self.gt = gt
        self.name = name
        self.split = split
        self.annotation_path = annotation_path

    @property
    def eval_name(self) -> str:
        return self.name

    def __len__(self) -> int:
        return len(self.images)

    def identity(self) -> Dict[str, Any]:
        """What results depend on besides the model and the settings."""
        ids = hashlib.sha256(",".join(str(im.image_id) for im in self.images).encode()).hexdigest()[:16]
        return {
            "dataset": self.name,
            "split": self.split,
            "annotation": self.annotation_path,
            "gt": self.gt.path,
            "image_root": str(self.image_root),
            "images": len(self.images),
            "ids": ids,
        }

    def missing_images(self) -> List[str]:
        return [str(self.image_root / im.image) for im in self.images if not (self.image_root / im.image).is_file()]

    def load_image(self, image: KarpathyImage) -> torch.Tensor:
        path = self.image_root / image.image
        return self.vis_processor(open_image(path, f"image {image.image_id}"))

    # -- the caption task's protocol (regionvlm.datasets.protocol.CaptionEvalDataset)
    def caption_units(self, batch_size: int) -> List[Tuple[str, List[int]]]:
        ids = [im.image_id for im in self.images]
        return keyed_units(ids, ids, batch_size)

    def load_captions(self, indices: Sequence[int]) -> CaptionBatch:
        """The whole images (no region) of some items, with their references."""
        ids = [self.images[i].image_id for i in indices]
        return CaptionBatch(
            images=torch.stack([self.load_image(self.images[i]) for i in indices]),
            image_index=list(range(len(indices))),
            regions=[None] * len(indices),
            ids=ids,
            references=[list(self.gt.captions.get(i, ())) for i in ids],
        )

    def caption_ground_truth(self) -> CaptionGroundTruth:
        return self.gt
