"""The query datasets of zero-shot RIS: what the ``ris`` task reads of a benchmark
(:class:`RISQueryDataset`) and the refer-layout datasets (:class:`RISDataset`: RefCOCO,
RefCOCO+, RefCOCOg, the synthetic world). PhraseCut's is in ``phrasecut_datasets``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Dict, Hashable, List, Optional, Sequence, Tuple

import numpy as np

from regionvlm.common.errors import MissingFileError
from regionvlm.data.images import check_image_size, open_image
from regionvlm.data.proposals import proposal_path
from regionvlm.data.refer import ReferImage, ReferQuery, ReferSplit


class RISQueryDataset(ABC):
    """What the ``ris`` task reads of a dataset, so one evaluator scores every benchmark.

    - referring queries grouped by image (:meth:`groups`), each with ``index`` (its place in
      the split: the order of the results), ``image_id`` and ``sentence``, and the fields in
      ``ID_FIELDS`` that name it in the results (with ``image_id``);
    - per query a ground-truth mask at the image's resolution (:meth:`gt_masks`);
    - per image its record (:meth:`image`: ``file_name``, ``height``, ``width``), the image
      file (``<image_root>/<file_name>``, read by :meth:`load_image`) and the proposal file
      (``<proposals>/<file_name without extension>.json``);
    - what the reader left out (``skipped``), the files that state the image sizes and hold
      the sentences (for messages), ``eval_name``/``split`` and ``identity()``;
    - optionally named subsets of the queries (``SUBSETS``, :meth:`query_subsets`): the
      results then hold oIoU/mIoU per subset.

    ``vis_processor``/``text_processor`` may be None; the task then uses the evaluation
    processors that match the model (bicubic resize to its image size, BLIP caption cleaning)."""

    ID_FIELDS: ClassVar[Tuple[str, ...]] = ()
    SUBSETS: ClassVar[Tuple[str, ...]] = ()

    def __init__(
        self,
        image_root: str | Path,
        proposals: str | Path,
        skip_missing: bool = False,
        vis_processor: Any = None,
        text_processor: Any = None,
    ):
        self.image_root = Path(image_root).expanduser()
        self.proposals = Path(proposals).expanduser()
        self.skip_missing = bool(skip_missing)
        self.vis_processor = vis_processor
        self.text_processor = text_processor

    # -- what each benchmark supplies
    @property
    @abstractmethod
    def dataset_name(self) -> str: ...

    @property
    @abstractmethod
    def eval_name(self) -> str:
        """Name in result files and metric keys, e.g. ``refcocog_umd``, ``phrasecut``."""

    @property
    @abstractmethod
    def split(self) -> str: ...

    @property
    @abstractmethod
    def queries(self) -> Sequence[Any]:
        """Every query of the split; ``queries[q.index] is q``."""

    @property
    @abstractmethod
    def skipped(self) -> List[Dict[str, Any]]:
        """Queries the reader left out (``skip_missing``): their ids and the reason."""

    @property
    @abstractmethod
    def sizes_file(self) -> Path:
        """The file that states the images' sizes."""

    @property
    @abstractmethod
    def queries_file(self) -> Path:
        """The file that holds the sentences."""

    @abstractmethod
    def groups(self) -> List[Tuple[Hashable, List[Any]]]:
        """``(image_id, queries)`` in order of first appearance."""

    @abstractmethod
    def image_ids(self) -> List[Hashable]:
        """Every image with a query."""

    @abstractmethod
    def image(self, image_id: Hashable) -> Any:
        """The image's record: ``file_name``, ``height``, ``width``."""

    @abstractmethod
    def gt_masks(self, queries: Sequence[Any]) -> List[np.ndarray]:
        """The ground-truth masks (bool, the image's height x width) of ``queries``."""

    @abstractmethod
    def describe_query(self, query: Any) -> str:
        """The query in words for messages, e.g. ``sentence 120 of ref 12``."""

    @abstractmethod
    def identity(self) -> Dict[str, Any]:
        """What the results depend on besides the model and the protocol settings."""

    # -- shared
    def __len__(self) -> int:
        return len(self.queries)

    def query_ids(self, query: Any) -> Dict[str, Any]:
        """The fields naming ``query`` in the results: ``ID_FIELDS`` then ``image_id``."""
        return {**{f: getattr(query, f) for f in self.ID_FIELDS}, "image_id": query.image_id}

    def query_label(self, query: Any) -> str:
        """``ref10_sent100``-style label of a query (or of its results record) for file names."""
        get = query.get if isinstance(query, dict) else lambda f: getattr(query, f)
        return "_".join(f"{f.removesuffix('_id')}{get(f)}" for f in self.ID_FIELDS)

    def query_subsets(self, query: Any, gt: np.ndarray) -> Optional[List[str]]:
        """The names among ``SUBSETS`` the query belongs to (None: the dataset has no subsets)."""
        return None

    def image_path(self, image_id: Hashable) -> Path:
        return self.image_root / self.image(image_id).file_name

    def proposal_path(self, image_id: Hashable) -> Path:
        return proposal_path(self.proposals, self.image(image_id).file_name)

    def load_image(self, image_id: Hashable) -> Any:
        """The image's RGB pixels (PIL), checked against the size the dataset records for it
        (the ground-truth masks and the proposals are of that size); a missing file names the
        expected path."""
        path = self.image_path(image_id)
        info = self.image(image_id)
        if not path.is_file():
            raise MissingFileError(
                f"image {image_id} not found at '{path}' (expected "
                f"<image_root>/{info.file_name}; set `image_root` / --image-root)."
            )
        image = open_image(path, f"image {image_id}")
        check_image_size(
            image.size, (info.width, info.height), f"image '{path}'", f"'{self.sizes_file}' (image {image_id})"
        )
        return image

    def missing_files(self) -> List[Dict[str, Any]]:
        """Images and proposal files that do not exist (checked before a long run starts)."""
        missing = []
        for image_id in self.image_ids():
            for what, path in (("image", self.image_path(image_id)), ("proposals", self.proposal_path(image_id))):
                if not path.is_file():
                    missing.append({"image_id": image_id, "what": what, "path": str(path)})
        return missing


class ReferView:
    """The refer split behind a dataset (RIS and REC read the same files): its names, its
    queries grouped by image, its images, and what its results depend on."""

    ID_FIELDS: ClassVar[Tuple[str, ...]] = ("ref_id", "sent_id")

    refer: ReferSplit
    image_root: Path
    skip_missing: bool

    def query_ids(self, query: Any) -> Dict[str, Any]:
        """The fields naming ``query`` in the results: ``ID_FIELDS`` then ``image_id``."""
        return {**{f: getattr(query, f) for f in self.ID_FIELDS}, "image_id": query.image_id}

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

    @property
    def skipped(self) -> List[Dict[str, Any]]:
        return self.refer.skipped

    @property
    def queries_file(self) -> Path:
        return self.refer.refs_path

    def describe_query(self, query: ReferQuery) -> str:
        return f"sentence {query.sent_id} of ref {query.ref_id}"

    def __len__(self) -> int:
        return len(self.refer.queries)

    def image(self, image_id: int) -> ReferImage:
        return self.refer.images[image_id]

    def image_ids(self) -> List[int]:
        return list(self.refer.images)

    def image_path(self, image_id: int) -> Path:
        return self.image_root / self.refer.images[image_id].file_name

    def groups(self) -> List[Tuple[int, List[ReferQuery]]]:
        return self.refer.queries_by_image()

    def query_record(self, index: int) -> Dict[str, Any]:
        """Query ``index`` as a plain record (ids, sentence, image path)."""
        q = self.refer.queries[index]
        return {
            "index": q.index,
            "ref_id": q.ref_id,
            "sent_id": q.sent_id,
            "ann_id": q.ann_id,
            "image_id": q.image_id,
            "sentence": q.sentence,
            "image_path": str(self.image_path(q.image_id)),
        }

    def refer_identity(self) -> Dict[str, Any]:
        """The files and options every refer-based result depends on."""
        return {
            "dataset_name": self.dataset_name,
            "splitBy": self.split_by,
            "split": self.split,
            "refs": str(self.refer.refs_path),
            "instances": str(self.refer.instances_path),
            "image_root": str(self.image_root),
            "skip_missing": self.skip_missing,
        }


class RISDataset(ReferView, RISQueryDataset):
    """The queries of one refer split plus where their images and proposals live (built by the
    ``refcoco``/``refcoco+``/``refcocog``/``ris_synthetic`` builders, consumed by the ``ris`` task).
    A query is a sentence of a ref; its ground truth is the ref's annotation."""

    def __init__(
        self,
        refer: ReferSplit,
        image_root: str | Path,
        proposals: str | Path,
        skip_missing: bool = False,
        vis_processor: Any = None,
        text_processor: Any = None,
    ):
        super().__init__(image_root, proposals, skip_missing, vis_processor, text_processor)
        self.refer = refer

    @property
    def sizes_file(self) -> Path:
        return self.refer.instances_path

    def __getitem__(self, index: int) -> Dict[str, Any]:
        record = self.query_record(index)
        return {**record, "proposal_path": str(self.proposal_path(record["image_id"]))}

    def gt_masks(self, queries: Sequence[ReferQuery]) -> List[np.ndarray]:
        """One decode per annotation (a ref's sentences share it)."""
        decoded: Dict[int, np.ndarray] = {}
        for q in queries:
            if q.ann_id not in decoded:
                decoded[q.ann_id] = self.refer.gt_mask(q.ann_id)
        return [decoded[q.ann_id] for q in queries]

    def identity(self) -> Dict[str, Any]:
        """What the results depend on besides the model and the protocol settings."""
        return {**self.refer_identity(), "proposals": str(self.proposals), "gt_mask": self.refer.gt_mask_rule}
