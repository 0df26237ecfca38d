"""The expression dataset of zero-shot referring expression comprehension (REC): one refer
split, where its images live and which boxes are the candidates of each image."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from regionvlm.common.errors import ConfigError
from regionvlm.data.boxes import Box, box_mask, check_in_image
from regionvlm.data.detections import Detections
from regionvlm.data.refer import ReferSplit
from regionvlm.datasets.ris_datasets import ReferView

CANDIDATE_SOURCES = ("gt", "detections")


@dataclass(frozen=True)
class Candidate:
    """One candidate box of an image: ``id`` is the COCO annotation id (``gt``) or the box's
    index among the image's detections (``detections``); ``box`` is ``(x, y, w, h)``."""

    id: int
    box: Box


class RECDataset(ReferView):
    """The expressions of one split with their ground-truth boxes and each image's candidates
    (built by the ``rec_refcoco``/``rec_refcoco+``/``rec_refcocog``/``rec_synthetic`` builders,
    consumed by the ``rec`` task).

    ``candidates="gt"``: every annotation of the image in ``instances.json`` (the referred one
    and all others; their masks are known); ``"detections"``: the image's boxes in
    ``detections`` (boxes only). Every box is checked when the dataset is made, so a bad
    file stops before the model is loaded. ``vis_processor``/``text_processor`` may be None
    (the task then uses the model's evaluation processors)."""

    def __init__(
        self,
        refer: ReferSplit,
        image_root: str | Path,
        candidates: str = "gt",
        detections: Optional[Detections] = None,
        skip_missing: bool = False,
        vis_processor: Any = None,
        text_processor: Any = None,
    ):
        if candidates not in CANDIDATE_SOURCES:
            raise ConfigError(f"candidates must be one of {list(CANDIDATE_SOURCES)}, got {candidates!r}.")
        if (candidates == "detections") != (detections is not None):
            raise ConfigError("candidates 'detections' needs a detections file, and only it takes one.")
        if candidates == "gt" and refer.queries and not refer.image_annotations:
            raise ConfigError("ground-truth candidates need the refer split read with image_annotations=True.")
        self.refer = refer
        self.image_root = Path(image_root).expanduser()
        self.candidate_source = candidates
        self.detections = detections
        self.skip_missing = bool(skip_missing)
        self.vis_processor = vis_processor
        self.text_processor = text_processor
        self._gt_boxes = {q.ann_id: refer.box(q.ann_id) for q in refer.queries}
        self._candidates = {image_id: self._read_candidates(image_id) for image_id in refer.images}

    def _read_candidates(self, image_id: int) -> List[Candidate]:
        info = self.refer.images[image_id]
        if self.detections is None:
            out = [Candidate(a, self.refer.box(a)) for a in self.refer.image_annotations.get(image_id, [])]
            names = [f"'{self.refer.instances_path}' annotation {c.id}" for c in out]
        else:
            out = [Candidate(i, b) for i, b in enumerate(self.detections.for_image(image_id))]
            names = [f"'{self.detections.path}' image {image_id} box {c.id}" for c in out]
        for c, what in zip(out, names):
            check_in_image(c.box, info.width, info.height, what)
        return out

    def __getitem__(self, index: int) -> Dict[str, Any]:
        record = self.query_record(index)
        return {**record, "gt_box": list(self.gt_box(record["ann_id"]))}

    def identity(self) -> Dict[str, Any]:
        """What the results depend on besides the model and the protocol settings."""
        return {
            **self.refer_identity(),
            "candidates": self.candidate_source,
            "detections": None if self.detections is None else str(self.detections.path),
        }

    # -- per image
    def image_size(self, image_id: int) -> Tuple[int, int]:
        """``(height, width)`` of the image as ``instances.json`` gives it: the boxes' frame."""
        info = self.refer.images[image_id]
        return info.height, info.width

    def gt_box(self, ann_id: int) -> Box:
        return self._gt_boxes[ann_id]

    def candidates(self, image_id: int) -> List[Candidate]:
        return self._candidates[image_id]

    def candidate_masks(self, image_id: int) -> List[np.ndarray]:
        """Where each candidate's region points are drawn (bool, the image's frame): a ground-truth
        annotation's mask (union of its parts), or, for a detection or an annotation whose
        segmentation covers no pixel, the pixels of its box."""
        height, width = self.image_size(image_id)
        masks = []
        for c in self._candidates[image_id]:
            mask = self.refer.annotation_mask(c.id, "union") if self.detections is None else None
            masks.append(mask if mask is not None and mask.any() else box_mask(c.box, height, width))
        return masks

    def missing_files(self) -> List[Dict[str, Any]]:
        """Images that do not exist (checked before a long run starts)."""
        return [
            {"image_id": image_id, "what": "image", "path": str(self.image_path(image_id))}
            for image_id in self.refer.images
            if not self.image_path(image_id).is_file()
        ]
