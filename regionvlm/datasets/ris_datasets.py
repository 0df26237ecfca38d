"""The query dataset of zero-shot RIS: one refer split plus where its images and proposals live."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple

from regionvlm.data.images import check_image_size, open_image
from regionvlm.data.proposals import proposal_path
from regionvlm.data.refer import ReferQuery, ReferSplit


class RISDataset:
    """The queries of one split plus where their images and proposals live (built by the
    ``refcoco``/``refcoco+``/``refcocog``/``ris_synthetic`` builders, consumed by the ``ris`` task).

    ``vis_processor``/``text_processor`` may be None; the task then uses the evaluation
    processors that match the model (bicubic resize to its image size, BLIP caption cleaning)."""

    def __init__(
        self,
        refer: ReferSplit,
        image_root: str | Path,
        proposals: str | Path,
        skip_missing: bool = False,
        vis_processor: Any = None,
        text_processor: Any = None,
    ):
        self.refer = refer
        self.image_root = Path(image_root).expanduser()
        self.proposals = Path(proposals).expanduser()
        self.skip_missing = bool(skip_missing)
        self.vis_processor = vis_processor
        self.text_processor = text_processor

    @property
    def eval_name(self) -> str:
        """Name in metric keys: the dataset and its partition, e.g. ``refcocog_umd``."""
        return f"{self.dataset_name}_{self.split_by}"

    @property
    def dataset_name(self) -> str:
        return self.refer.dataset_name

    @property
    def split_by(self) -> str:
        return self.refer.split_by

    @property
    def split(self) -> str:
        return self.refer.split

    @property
    def queries(self) -> List[ReferQuery]:
        return self.refer.queries

    def __len__(self) -> int:
        return len(self.refer.queries)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        q = self.refer.queries[index]
        return {
            "index": q.index,
            "ref_id": q.ref_id,
            "sent_id": q.sent_id,
            "ann_id": q.ann_id,
            "image_id": q.image_id,
            "sentence": q.sentence,
            "image_path": str(self.image_path(q.image_id)),
            "proposal_path": str(self.proposal_path(q.image_id)),
        }

    def image_path(self, image_id: int) -> Path:
        return self.image_root / self.refer.images[image_id].file_name

    def read_image(self, image_id: int) -> Any:
        """The image's RGB pixels, checked against the size ``instances.json`` records for it
        (the ground-truth masks and the proposals are of that size)."""
        info = self.refer.images[image_id]
        path = self.image_path(image_id)
        image = open_image(path, f"image {image_id}")
        check_image_size(
            image.size,
            (info.width, info.height),
            f"image '{path}'",
            f"'{self.refer.instances_path}' (image {image_id})",
        )
        return image

    def proposal_path(self, image_id: int) -> Path:
        return proposal_path(self.proposals, self.refer.images[image_id].file_name)

    def groups(self) -> List[Tuple[int, List[ReferQuery]]]:
        return self.refer.queries_by_image()

    def missing_files(self) -> List[Dict[str, Any]]:
        """Images and proposal files that do not exist (checked before a long run starts)."""
        missing = []
        for image_id in self.refer.images:
            for what, path in (("image", self.image_path(image_id)), ("proposals", self.proposal_path(image_id))):
                if not path.is_file():
                    missing.append({"image_id": image_id, "what": what, "path": str(path)})
        return missing

    def identity(self) -> Dict[str, Any]:
        """What the results depend on besides the model and the protocol settings."""
        return {
            "dataset_name": self.dataset_name,
            "splitBy": self.split_by,
            "split": self.split,
            "refs": str(self.refer.refs_path),
            "instances": str(self.refer.instances_path),
            "image_root": str(self.image_root),
            "proposals": str(self.proposals),
            "gt_mask": self.refer.gt_mask_rule,
            "skip_missing": self.skip_missing,
        }
