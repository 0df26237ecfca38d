"""The evaluation dataset of region-captioning benchmarks (RefCOCOg, Visual Genome, the
synthetic world): the units of a :class:`~regionvlm.data.region_captions.RegionCaptionSet`
through the caption task's protocol (:class:`~regionvlm.datasets.protocol.CaptionEvalDataset`).

A unit's region reaches the task as geometry, ``Region.from_box`` of its pixel box in the
listed image size (or ``Region.from_mask`` of its segmentation with ``region="mask"``), so
the task draws its K points. Units are grouped by image (in order of the image's first
appearance) so that each work unit decodes and encodes an image once.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from regionvlm.common.errors import ConfigError
from regionvlm.data.coco_karpathy import CaptionGroundTruth, caption_gt_from_dataset
from regionvlm.data.images import check_image_size, open_image, read_image_size
from regionvlm.data.refer import decode_segmentation
from regionvlm.data.region_captions import CaptionedRegion, RegionCaptionSet
from regionvlm.data.region_classes import find_image
from regionvlm.datasets.protocol import CaptionBatch, keyed_units, stack_images
from regionvlm.region import Region

REGION_KINDS = ("box", "mask")
Roots = Union[str, Path, Sequence[Union[str, Path]]]


class RegionCaptionEvalDataset:
    """One item per scoring unit; ``image_root`` is a folder or a list of folders (the first
    one holding an image is used, e.g. Visual Genome's ``VG_100K`` and ``VG_100K_2``)."""

    def __init__(
        self,
        captions: RegionCaptionSet,
        image_root: Roots,
        vis_processor: Any,
        text_processor: Any = None,
        name: str = "region_captions",
        split: str = "val",
        region: str = "box",
    ) -> None:
        if region not in REGION_KINDS:
            raise ConfigError(f"region must be one of {list(REGION_KINDS)}, got {region!r}.")
        if region == "mask":
            lacking = [r.id for r in captions.regions if r.segmentation is None]
            if lacking:
                raise ConfigError(
                    f"region 'mask' needs a segmentation per region, but {len(lacking)} region(s) of "
                    f"'{captions.path}' have none (first: {lacking[:5]}); use region 'box'."
                )
        self.captions = captions
        self.roots = [
            Path(str(r)).expanduser() for r in ([image_root] if isinstance(image_root, (str, Path)) else image_root)
        ]
        if not self.roots:
            raise ConfigError("no image folder given for the region-caption images.")
        self.vis_processor = vis_processor
        self.text_processor = text_processor
        self.name = name
        self.split = split
        self.region = region
        # units of one image together, images in order of first appearance (stable)
        first: Dict[str, int] = {}
        for i, r in enumerate(captions.regions):
            first.setdefault(r.image, i)
        self.items: List[CaptionedRegion] = sorted(captions.regions, key=lambda r: first[r.image])
        self.gt: CaptionGroundTruth = caption_gt_from_dataset(captions.ground_truth, captions.ground_truth_source)
        self._paths: Dict[str, Path] = {}
        self._units_digest: Optional[str] = None

    @property
    def eval_name(self) -> str:
        return self.name

    def __len__(self) -> int:
        return len(self.items)

    def identity(self) -> Dict[str, Any]:
        """What results depend on besides the model and the settings: the file, the units
        (ids, images, boxes, references) and the region kind."""
        if self._units_digest is None:
            digest = hashlib.sha256()
            for r in self.items:
                digest.update(repr((r.id, r.image, r.width, r.height, r.box, r.references)).encode())
            self._units_digest = digest.hexdigest()[:16]
        return {
            "dataset": self.name,
            "split": self.split,
            "layout": self.captions.layout,
            "annotation": self.captions.path,
            "image_root": [str(r) for r in self.roots],
            "regions": len(self.items),
            "units": self._units_digest,
            "region": self.region,
        }

    def summary(self) -> str:
        notes = ", ".join(f"{k} {v}" for k, v in self.captions.notes.items() if v)
        images = len({r.image for r in self.items})
        text = f"{len(self.items)} regions of {images} images ({self.captions.layout} layout)"
        return f"{text}; {notes}" if notes else text

    # -- images
    def image_path(self, name: str) -> Path:
        """The first root holding ``name`` (the first root's path if none does)."""
        if name not in self._paths:
            self._paths[name] = find_image(self.roots, name) or self.roots[0] / name
        return self._paths[name]

    def missing_images(self) -> List[str]:
        return [
            str(self.image_path(name))
            for name in dict.fromkeys(r.image for r in self.items)
            if not self.image_path(name).is_file()
        ]

    def size_mismatches(self) -> List[str]:
        """Images whose file is not the size the annotation file lists (the frame of their
        boxes), read from the file headers: ``"path: WxH, listed wxh"``."""
        listed = {r.image: (r.width, r.height) for r in self.items}
        out = []
        for name, size in listed.items():
            path = self.image_path(name)
            actual = read_image_size(path, "region-caption image")
            if tuple(actual) != size:
                out.append(f"{path}: {actual[0]}x{actual[1]}, listed {size[0]}x{size[1]}")
        return out

    def _load_image(self, region: CaptionedRegion) -> Any:
        path = self.image_path(region.image)
        image = open_image(path, f"image of region {region.id}")
        check_image_size(image.size, (region.width, region.height), f"image '{path}'", f"'{self.captions.path}'")
        return self.vis_processor(image)

    def geometry(self, region: CaptionedRegion) -> Region:
        """The unit's region in normalized image coordinates."""
        if self.region == "mask":
            mask = decode_segmentation(
                region.segmentation,
                region.height,
                region.width,
                "official",
                f"region {region.id} of '{self.captions.path}'",
            )
            return Region.from_mask(mask)
        return Region.from_box(region.box, image_size=(region.width, region.height))

    # -- the caption task's protocol (regionvlm.datasets.protocol.CaptionEvalDataset)
    def caption_units(self, batch_size: int) -> List[Tuple[str, List[int]]]:
        return keyed_units([r.image for r in self.items], [r.id for r in self.items], batch_size)

    def load_captions(self, indices: Sequence[int]) -> CaptionBatch:
        """The unit's distinct images (each decoded once), its regions and references."""
        regions = [self.items[i] for i in indices]
        images: Dict[str, Any] = {}
        for r in regions:
            if r.image not in images:
                images[r.image] = self._load_image(r)
        stacked, image_index = stack_images(images, [r.image for r in regions])
        return CaptionBatch(
            images=stacked,
            image_index=image_index,
            regions=[self.geometry(r) for r in regions],
            ids=[r.id for r in regions],
            references=[list(r.references) for r in regions],
        )

    def caption_ground_truth(self) -> Optional[CaptionGroundTruth]:
        return self.gt
