"""The evaluation dataset of zero-shot VQA (VQAv2 val, OK-VQA test, GQA balanced test-dev):
questions of one split with their references (file formats: :mod:`regionvlm.data.vqa`).

Every image is checked before evaluation starts (``check_images``), so a missing file
stops the run at once, not hours later; ``skip_missing_images`` instead drops those
questions and keeps the list (it ends up in the results). Items sharing an image are
batched together and each image of a batch is decoded once (``batches`` / ``load_batch``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Sequence, Union

import torch
from PIL import Image
from torch.utils.data import Dataset

from regionvlm.data.images import open_image
from regionvlm.data.vqa import VQAItem, VQAReference


class VQAEvalDataset(Dataset):
    """Questions of one split with their references; ``metric`` is "vqa" or "gqa"."""

    def __init__(
        self,
        items: Sequence[VQAItem],
        vis_root: Union[str, Path],
        vis_processor: Callable[[Image.Image], torch.Tensor],
        text_processor: Callable[[str], str],
        metric: str,
        name: str = "",
        split: str = "",
        skipped: Sequence[Dict[str, Any]] = (),
    ) -> None:
        if metric not in ("vqa", "gqa"):
            raise ValueError(f"metric must be 'vqa' or 'gqa', got {metric!r}.")
        self.items = list(items)
        self.vis_root = Path(str(vis_root)).expanduser()
        self.vis_processor = vis_processor
        self.text_processor = text_processor
        self.metric = metric
        self.name = name
        self.split = split
        self.skipped = list(skipped)

    @property
    def eval_name(self) -> str:
        return self.name

    def identity(self) -> Dict[str, Any]:
        """What results depend on besides the model and the settings."""
        ids = [str(it.question_id) for it in self.items]
        digest = hashlib.sha256("|".join(ids).encode()).hexdigest()[:16]
        return {
            "dataset": self.name,
            "split": self.split,
            "metric": self.metric,
            "vis_root": str(self.vis_root),
            "questions": len(self.items),
            "question_ids": digest,
        }

    def __len__(self) -> int:
        return len(self.items)

    def load_image(self, relative: str) -> torch.Tensor:
        path = self.vis_root / relative
        return self.vis_processor(open_image(path, "image"))

    def __getitem__(self, index: int) -> Dict[str, Any]:
        item = self.items[index]
        return {
            "image": self.load_image(item.image),
            "text_input": self.text_processor(item.question),
            "question_id": item.question_id,
            "index": index,
        }

    @staticmethod
    def collater(samples: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
        """Stack images; keep question ids as a list (GQA ids may be strings)."""
        return {
            "image": torch.stack([s["image"] for s in samples]),
            "text_input": [s["text_input"] for s in samples],
            "question_id": [s["question_id"] for s in samples],
            "index": [s["index"] for s in samples],
        }

    def batches(self, batch_size: int) -> List[List[int]]:
        """Item indices in batches of ``batch_size``, ordered by image so that the questions on
        one image share a batch (and its image is decoded and encoded once)."""
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}.")
        order = sorted(range(len(self.items)), key=lambda i: (self.items[i].image, i))
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

    def load_batch(self, indices: Sequence[int]) -> Dict[str, Any]:
        """Model input for some items: each distinct image once, ``image_index`` maps questions to images."""
        slot: Dict[str, int] = {}
        images = []
        image_index = []
        for i in indices:
            name = self.items[i].image
            if name not in slot:
                slot[name] = len(images)
                images.append(self.load_image(name))
            image_index.append(slot[name])
        return {
            "image": torch.stack(images),
            "image_index": image_index,
            "text_input": [self.text_processor(self.items[i].question) for i in indices],
            "question_id": [self.items[i].question_id for i in indices],
            "index": list(indices),
        }

    def references(self) -> List[VQAReference]:
        return [VQAReference(it.question_id, it.answers, it.answer_type, it.question_type) for it in self.items]
