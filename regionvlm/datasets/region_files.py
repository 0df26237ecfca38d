"""Datasets of region files (format: :mod:`regionvlm.data.region_files`, docs/predict.md).

* :class:`RegionFileSet`: a region file read and checked against its images (every problem
  kept with its line number); groups its regions into units of one image's regions and
  loads a unit (each image decoded and preprocessed once). Batch prediction
  (``python -m regionvlm.predict``) and the two datasets below share it.
* :class:`RegionFileCaptionDataset`: training region captions (builder ``region_captions``,
  or ``region_files`` of ``regionvlm_mix``). Item ``i`` is region ``i`` with its caption; its
  image gets the region-preserving crop, its region ``num_points`` points, both drawn from
  ``sample_rng(seed, epoch, i)``. A region without a caption (missing, null or blank) is
  skipped and counted, never trained on.
* :class:`RegionFileEvalDataset`: a held-out region file as a
  :class:`~regionvlm.datasets.protocol.CaptionEvalDataset` (no crop; the caption task draws
  each region's points from ``item_rng(seed, id)``), scored with CIDEr, METEOR, ...
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from regionvlm.common.cli import echo
from regionvlm.common.errors import InputError, RegionVLMError
from regionvlm.data.images import open_image
from regionvlm.data.region_files import (
    Problem,
    RegionFile,
    RegionRecord,
    build_region,
    check_images,
    image_path,
    read_region_file,
)
from regionvlm.datasets.caption_datasets import Processor, _CaptionDataset, _pick_distinct
from regionvlm.datasets.protocol import CaptionBatch, keyed_units
from regionvlm.datasets.transforms import DEFAULT_CROP_FRACTION, CropFractions, sample_crop
from regionvlm.region import Region

ON_ERROR = ("stop", "skip")
SHOWN_PROBLEMS = 20


def problem_report(problems: Sequence[Problem], limit: int = SHOWN_PROBLEMS) -> str:
    """The first ``limit`` problems, one per line, and how many more there are."""
    lines = [f"  {p}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)


@dataclass
class RegionBatch:
    """A unit's inputs: its distinct images ``(N, 3, S, S)``, each record's image row, its
    :class:`Region` (None where it failed) and the failures (record position -> message)."""

    records: List[RegionRecord]
    images: torch.Tensor
    image_index: List[int]
    regions: List[Optional[Region]]
    errors: Dict[int, str]


class RegionFileSet:
    """A region file, read and checked against its images (sizes from the headers only).

    ``records`` are the regions without a problem, in file order; ``problems`` every bad line
    (file and image problems, in file order). ``image_root`` (default: the file's folder)
    joins relative image paths."""

    def __init__(
        self,
        path: Union[str, Path],
        image_root: Union[str, Path, None] = None,
        need_question: bool = False,
        coco_region: str = "auto",
        what: str = "region file",
    ) -> None:
        self.file: RegionFile = read_region_file(path, need_question, coco_region, what)
        self.path = self.file.path
        self.image_root = Path(image_root).expanduser() if image_root else self.path.parent
        self.coco_region = coco_region
        self.sizes, image_problems, self.missing_images = check_images(self.file.records, self.image_root)
        self.records: List[RegionRecord] = list(self.file.records)
        self.problems: List[Problem] = list(self.file.problems)
        self.drop(image_problems)

    def __len__(self) -> int:
        return len(self.records)

    def summary(self) -> Dict[str, Any]:
        return {**self.file.summary(self.missing_images, self.records), "problems": len(self.problems)}

    @functools.cached_property
    def sha256(self) -> str:
        """SHA-256 of the file's bytes (part of every result's identity; read once, as a split's
        identity is asked for at its start and at its end)."""
        h = hashlib.sha256()
        with open(self.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    def identity(self) -> Dict[str, Any]:
        return {
            "file": str(self.path.resolve()),
            "sha256": self.sha256,
            "image_root": str(self.image_root.resolve()),
            "coco_region": self.coco_region,
            "regions": len(self.records),
        }

    def stop_on_problems(self, hint: str) -> None:
        """InputError listing the problems (the first few; ``hint`` says how to go on), if any."""
        if self.problems:
            count = len(self.problems)
            raise InputError(
                f"{count} bad line{'s' if count > 1 else ''} in '{self.path}':\n{problem_report(self.problems)}\n{hint}"
            )

    def drop(self, problems: Sequence[Problem]) -> None:
        """Leave out the records ``problems`` name, and list the problems (in line order: a
        stable sort, so COCO annotations, which have no line, keep file order)."""
        bad = {p.where for p in problems}
        self.records = [r for r in self.records if r.where not in bad]
        self.problems = sorted(self.problems + list(problems), key=lambda p: p.line or 0)

    def keep(self, records: Sequence[RegionRecord]) -> None:
        """Restrict to ``records`` (e.g. the ones with a caption)."""
        self.records = list(records)

    # ---------------------------------------------------------------- batching
    def units(self, batch_size: int) -> List[Tuple[str, List[int]]]:
        """``(key, positions)`` units of at most ``batch_size`` records, one image's records
        together (images in order of first appearance), so each unit encodes its images once."""
        positions = range(len(self.records))
        first: Dict[str, int] = {}
        for p in positions:
            first.setdefault(self.records[p].image, len(first))
        ordered = sorted(positions, key=lambda p: (first[self.records[p].image], p))
        records = [self.records[p] for p in ordered]
        units = keyed_units([r.image for r in records], [r.key for r in records], batch_size)
        return [(key, [ordered[i] for i in unit]) for key, unit in units]

    def load(self, positions: Sequence[int], vis_processor: Processor) -> RegionBatch:
        """The unit's images (each decoded once) and regions; failures are kept per record."""
        records = [self.records[p] for p in positions]
        pixels: Dict[str, torch.Tensor] = {}
        failed: Dict[str, str] = {}
        rows: Dict[str, int] = {}
        index: List[int] = []
        regions: List[Optional[Region]] = []
        errors: Dict[int, str] = {}
        for position, record in zip(positions, records):
            if record.image not in pixels and record.image not in failed:
                path = image_path(record, self.image_root)
                try:
                    pixels[record.image] = vis_processor(open_image(path, f"image '{path}'"))
                except RegionVLMError as exc:
                    failed[record.image] = str(exc).rstrip(".")
            if record.image in failed:
                errors[position] = failed[record.image]
                regions.append(None)
                index.append(-1)
                continue
            try:
                regions.append(build_region(record, self.sizes[record.image]))
            except RegionVLMError as exc:
                errors[position] = str(exc).split(": ", 1)[-1].rstrip(".")
                regions.append(None)
                index.append(-1)
                continue
            index.append(rows.setdefault(record.image, len(rows)))
        images = torch.stack([pixels[name] for name in rows]) if rows else torch.zeros(0)
        return RegionBatch(records, images, index, regions, errors)


# ------------------------------------------------------------------ training
def region_extent(region: Region) -> Optional[np.ndarray]:
    """Normalized points whose bounding box covers the region (what the crop must keep);
    None for the whole image (not cropped)."""
    if region.kind == "global":
        return None
    if region.kind == "box":
        return region.data.reshape(2, 2)
    if region.kind in ("points", "trace"):
        return region.data
    rows = np.flatnonzero(region.data.any(axis=1))
    cols = np.flatnonzero(region.data.any(axis=0))
    height, width = region.data.shape
    return np.array([[cols[0] / width, rows[0] / height], [(cols[-1] + 1) / width, (rows[-1] + 1) / height]])


def crop_region(region: Region, crop: CropFractions) -> Region:
    """The region in the coordinates of the cropped image."""
    if region.kind == "global":
        return region
    if region.kind == "box":
        return Region("box", crop.apply_points(region.data.reshape(2, 2)).reshape(4))
    if region.kind in ("points", "trace"):
        return Region(region.kind, crop.apply_points(region.data))
    height, width = region.data.shape
    x0, y0, x1, y1 = crop.pixel_box(width, height)
    return Region("mask", np.ascontiguousarray(region.data[y0:y1, x0:x1]))


def captioned(records: Sequence[RegionRecord]) -> Tuple[List[RegionRecord], int]:
    """The records with a caption, and how many have none (missing, null or blank)."""
    kept = [r for r in records if r.caption is not None and r.caption.strip()]
    return kept, len(records) - len(kept)


class RegionFileCaptionDataset(_CaptionDataset):
    """Region captions of a region file; item ``i`` is captioned region ``i`` (module docstring).

    ``samples_per_image=m``: the item also carries m - 1 other captioned regions of the same
    image (distinct when it has them), one crop keeping them all."""

    def __init__(
        self,
        regions: RegionFileSet,
        vis_processor: Optional[Processor] = None,
        text_processor: Optional[Processor] = None,
        num_points: int = 10,
        crop_max_fraction: float = DEFAULT_CROP_FRACTION,
        samples_per_image: int = 1,
        seed: int = 0,
        name: str = "region_captions",
        split: str = "train",
    ) -> None:
        super().__init__(vis_processor, text_processor, samples_per_image, seed)
        self.regions = regions
        self.records, self.uncaptioned = captioned(regions.records)
        if not self.records:
            raise InputError(f"region file '{regions.path}' has no region with a caption to train on.")
        self.num_points = int(num_points)
        self.crop_max_fraction = float(crop_max_fraction)
        self.name, self.split = name, split
        by_image: Dict[str, List[int]] = {}
        for i, record in enumerate(self.records):
            by_image.setdefault(record.image, []).append(i)
        self.same_image = [by_image[r.image] for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def sample(self, index: int, rng: np.random.Generator, num_samples: Optional[int] = None) -> Dict[str, Any]:
        first = index % len(self)
        m = num_samples or self.samples_per_image
        chosen = [first]
        if m > 1:
            others = [i for i in self.same_image[first] if i != first]
            chosen += [others[j] for j in _pick_distinct(len(others), m - 1, rng)] if others else [first] * (m - 1)
        records = [self.records[i] for i in chosen]
        path = image_path(records[0], self.regions.image_root)
        try:
            image = open_image(path, f"image '{path}' ({records[0].where} of '{self.regions.path}')")
            regions = [build_region(r, image.size) for r in records]
        except RegionVLMError as exc:
            raise InputError(f"region file '{self.regions.path}': {exc}") from None
        extents = [region_extent(r) for r in regions]
        if any(e is None for e in extents):  # a whole-image caption: the image stays whole
            crop = CropFractions(0.0, 0.0, 0.0, 0.0)
        else:
            crop = sample_crop(np.concatenate(extents), rng, self.crop_max_fraction)
        image = crop.apply_image(image)
        ins = [crop_region(r, crop).to_text(self.num_points, rng) for r in regions]
        return self._item(image, ins, [r.caption for r in records], "region_file", ids=[r.key for r in records])


class RegionFileEvalDataset:
    """A held-out region file scored by the caption task (:class:`CaptionEvalDataset`)."""

    def __init__(
        self,
        regions: RegionFileSet,
        vis_processor: Processor,
        text_processor: Optional[Processor] = None,
        name: str = "region_captions",
        split: str = "val",
    ) -> None:
        self.regions = regions
        self.records, self.uncaptioned = captioned(regions.records)
        if not self.records:
            raise InputError(f"held-out region file '{regions.path}' has no region with a caption to score.")
        regions.keep(self.records)
        self.vis_processor = vis_processor
        self.text_processor = text_processor
        self.name, self.split = name, split

    @property
    def eval_name(self) -> str:
        return self.name

    def __len__(self) -> int:
        return len(self.records)

    def identity(self) -> Dict[str, Any]:
        return {"dataset": self.name, "split": self.split, **self.regions.identity()}

    def caption_units(self, batch_size: int) -> List[Tuple[str, List[int]]]:
        return self.regions.units(batch_size)

    def load_captions(self, positions: Sequence[int]) -> CaptionBatch:
        batch = self.regions.load(positions, self.vis_processor)
        if batch.errors:
            position, message = next(iter(batch.errors.items()))
            raise InputError(f"region file '{self.regions.path}', {self.records[position].where}: {message}.")
        clean = self.text_processor or (lambda text: text)
        return CaptionBatch(
            batch.images,
            batch.image_index,
            batch.regions,
            [r.key for r in batch.records],
            [[clean(r.caption)] for r in batch.records],
        )

    def caption_ground_truth(self) -> None:
        return None


def report_kept(name: str, split: str, regions: RegionFileSet, kept: int, uncaptioned: int) -> None:
    """One line: captioned regions kept, bad lines skipped, regions without a caption skipped."""
    echo(
        f"[{name}] {split}: {kept} captioned regions of {len(regions.sizes)} images from '{regions.path}'; "
        f"skipped: {len(regions.problems)} bad line(s), {uncaptioned} region(s) without a caption"
    )
