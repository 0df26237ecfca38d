"""PhraseCut as a query dataset of zero-shot RIS (built by the ``phrasecut`` builder, scored by
the ``ris`` task like RefCOCO; docs/phrasecut.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from regionvlm.data.phrasecut import GT_RULE, SUBSETS, PhraseCutImage, PhraseCutSplit, PhraseCutTask
from regionvlm.datasets.ris_datasets import RISQueryDataset


class PhraseCutDataset(RISQueryDataset):
    """The tasks of one PhraseCut split: a query is a task (its phrase), its ground truth the
    union of its instances' polygons; results name it by ``task_id`` and report PhraseCut's
    subsets (:data:`regionvlm.data.phrasecut.SUBSETS`). An image file whose size differs from
    ``image_data_split.json`` stops (or, under ``skip_missing``, skips its tasks)."""

    ID_FIELDS = ("task_id",)
    SUBSETS = SUBSETS

    def __init__(
        self,
        data: PhraseCutSplit,
        image_root: str | Path,
        proposals: str | Path,
        skip_missing: bool = False,
        vis_processor: Any = None,
        text_processor: Any = None,
    ):
        super().__init__(image_root, proposals, skip_missing, vis_processor, text_processor)
        self.data = data

    @property
    def dataset_name(self) -> str:
        return "phrasecut"

    @property
    def eval_name(self) -> str:
        return "phrasecut"

    @property
    def split(self) -> str:
        return self.data.split

    @property
    def queries(self) -> List[PhraseCutTask]:
        return self.data.tasks

    @property
    def skipped(self) -> List[Dict[str, Any]]:
        return self.data.skipped

    @property
    def sizes_file(self) -> Path:
        return self.data.image_info_path

    @property
    def queries_file(self) -> Path:
        return self.data.refer_paths[0] if len(self.data.refer_paths) == 1 else self.data.data_root

    def image(self, image_id: int) -> PhraseCutImage:
        return self.data.images[image_id]

    def image_ids(self) -> List[int]:
        return list(self.data.images)

    def groups(self) -> List[Tuple[int, List[PhraseCutTask]]]:
        return self.data.tasks_by_image()

    def gt_masks(self, queries: Sequence[PhraseCutTask]) -> List[np.ndarray]:
        return [self.data.gt_mask(t) for t in queries]

    def query_subsets(self, query: PhraseCutTask, gt: np.ndarray) -> List[str]:
        return self.data.subsets(query, gt)

    def describe_query(self, query: PhraseCutTask) -> str:
        return f"task {query.task_id} (image {query.image_id})"

    def identity(self) -> Dict[str, Any]:
        return {
            "dataset_name": self.dataset_name,
            "split": self.split,
            "refer": [str(p) for p in self.data.refer_paths],
            "image_info": str(self.data.image_info_path),
            "image_root": str(self.image_root),
            "proposals": str(self.proposals),
            "gt_mask": GT_RULE,
            "skip_missing": self.skip_missing,
        }
