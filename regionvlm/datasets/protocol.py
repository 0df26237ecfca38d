"""What the evaluation loop asks of a dataset, as typing Protocols (beside the model's
:class:`~regionvlm.models.protocol.RegionStepModel`).

Every evaluation dataset has a name for result files and metric keys (``eval_name``), a
``split`` and an ``identity()`` (what its results depend on: files, options), which guards
resumption. A task's evaluator reads the rest through the task's own protocol; the caption
task's is :class:`CaptionEvalDataset`, so a region-captioning benchmark is one dataset class
that implements it (RefCOCOg, Visual Genome, a held-out Localized Narratives file, COCO); the
RIS task's is ``regionvlm.datasets.ris_datasets.RISQueryDataset`` (RefCOCO family, PhraseCut).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Hashable, List, Mapping, Optional, Protocol, Sequence, Tuple, Union, runtime_checkable

import torch

from regionvlm.region import Region

RegionLike = Union[Region, str, None]  # geometry (points drawn by the task), a ready region text, or the whole image


@runtime_checkable
class EvalDataset(Protocol):
    @property
    def eval_name(self) -> str:
        """The dataset's name in result files and metric keys, e.g. ``refcoco_unc``."""

    @property
    def split(self) -> str: ...

    def identity(self) -> Mapping[str, Any]:
        """What its results depend on besides the model and the task settings."""

    def __len__(self) -> int: ...


@dataclass
class CaptionBatch:
    """One unit of a caption evaluation: ``images`` (N, 3, S, S) and, per region to caption,
    the row of its image (``image_index``), its region (:data:`RegionLike`), a result id
    (unique in the split) and its reference captions (may be empty)."""

    images: torch.Tensor
    image_index: List[int]
    regions: List[RegionLike]
    ids: List[Hashable]
    references: List[List[str]]


@runtime_checkable
class CaptionEvalDataset(EvalDataset, Protocol):
    def caption_units(self, batch_size: int) -> List[Tuple[str, Any]]:
        """``(key, spec)`` units of at most ``batch_size`` regions, the regions of one image
        together where they fit (each unit encodes its images once)."""

    def load_captions(self, spec: Any) -> CaptionBatch:
        """The inputs of one unit (runs on prefetch threads)."""

    def caption_ground_truth(self) -> Optional[Any]:
        """A COCO-format caption ground truth (``regionvlm.data.coco_karpathy.CaptionGroundTruth``)
        whose image ids are the result ids, or None to build one from the references."""


def group_units(image_keys: Sequence[Hashable], batch_size: int) -> List[List[int]]:
    """Consecutive item indices in units of at most ``batch_size``, a new unit starting where
    the image changes if the next image's items would not fit: the regions of one image stay
    together (one encoding) unless they alone exceed ``batch_size``."""
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    runs: List[List[int]] = []
    for i, key in enumerate(image_keys):
        if runs and image_keys[runs[-1][-1]] == key:
            runs[-1].append(i)
        else:
            runs.append([i])
    units: List[List[int]] = []
    current: List[int] = []
    for run in runs:
        for start in range(0, len(run), batch_size):
            part = run[start : start + batch_size]
            if current and len(current) + len(part) > batch_size:
                units.append(current)
                current = []
            current = current + part
    if current:
        units.append(current)
    return units


def unit_key(ids: Sequence[Hashable]) -> str:
    """A stable key of a unit from its items' ids (short: first, last, count)."""
    return f"{ids[0]}..{ids[-1]}#{len(ids)}" if len(ids) > 1 else str(ids[0])


def keyed_units(
    image_keys: Sequence[Hashable], ids: Sequence[Hashable], batch_size: int
) -> List[Tuple[str, List[int]]]:
    """``(key, item indices)`` of :func:`group_units`, each keyed by its items' ``ids``."""
    return [(unit_key([ids[i] for i in unit]), unit) for unit in group_units(image_keys, batch_size)]


def stack_images(images: Dict[Hashable, torch.Tensor], order: Sequence[Hashable]) -> Tuple[torch.Tensor, List[int]]:
    """``(N, 3, S, S)`` of the distinct images in first-use order and each item's row."""
    rows: Dict[Hashable, int] = {}
    index = [rows.setdefault(key, len(rows)) for key in order]
    return torch.stack([images[key] for key in rows]), index
