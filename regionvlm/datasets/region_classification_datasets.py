"""The regions of a region classification file (LVIS, PACO, the synthetic world) with their images.

Regions are listed in file order (image by image, annotation by annotation); a unit of work is
a run of regions of one image (several images when their regions fit one batch), so each image
is read and encoded once. Images are looked up under one or more folders (LVIS and PACO mix
COCO 2017 train and val images); every image is found before the run starts, and an image
whose size differs from the file's ``height``/``width`` stops its unit (its masks would not
line up).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

import torch

from regionvlm.common.errors import MissingFileError
from regionvlm.data.images import check_image_size, open_image
from regionvlm.data.region_classes import ClassImage, RegionClassFile, find_image
from regionvlm.datasets.protocol import keyed_units, stack_images
from regionvlm.region import Region

_SHOWN = 3


@dataclass
class RegionClassBatch:
    """One unit: ``images`` (N, 3, S, S), and per region its image row, its geometry (a mask,
    or polygon vertices for a sliver), its ``(file_name, index)`` and its category."""

    images: torch.Tensor
    image_index: List[int]
    regions: List[Region]
    keys: List[Tuple[str, int]]
    categories: List[str]


class RegionClassDataset:
    """Regions to classify (built by ``lvis_regions``, ``paco_regions``, ``synthetic_regions``)."""

    def __init__(
        self,
        ann: RegionClassFile,
        image_roots: Sequence[str | Path],
        name: str,
        split: str,
        vis_processor: Callable[[Any], torch.Tensor],
        text_processor: Callable[[str], str] | None = None,
        setting: str = "image_root",
    ) -> None:
        self.ann = ann
        self.image_roots = [Path(str(r)).expanduser() for r in image_roots]
        self.name = name
        self._split = split
        self.vis_processor = vis_processor
        self.text_processor = text_processor
        self.items: List[Tuple[int, int]] = [(k, r.index) for k, im in enumerate(ann.images) for r in im.regions]
        self.paths = self._find_images(setting)

    def _find_images(self, setting: str) -> Dict[str, Path]:
        found, missing = {}, []
        for image in self.ann.images:
            if not image.regions:
                continue
            path = find_image(self.image_roots, image.file_name)
            if path is None:
                missing.append(image.file_name)
            else:
                found[image.file_name] = path
        if missing:
            roots = ", ".join(f"'{r}'" for r in self.image_roots)
            raise MissingFileError(
                f"{len(missing)} image(s) of '{self.ann.path}' are in none of the image folders {roots} (set by "
                f"`{setting}`), e.g. {', '.join(missing[:_SHOWN])}. LVIS and PACO regions lie on COCO 2017 train "
                "and val images: list both folders."
            )
        return found

    # -- what the evaluation loop reads
    @property
    def eval_name(self) -> str:
        return self.name

    @property
    def split(self) -> str:
        return self._split

    def __len__(self) -> int:
        return len(self.items)

    def identity(self) -> Dict[str, Any]:
        return {
            "dataset": self.name,
            "split": self._split,
            "ann_path": str(self.ann.path),
            "image_roots": [str(r) for r in self.image_roots],
            "regions": len(self.items),
        }

    def item_id(self, position: int) -> str:
        """``<file_name>/<region index>``: a region's name in keys and random draws."""
        entry, index = self.items[position]
        return f"{self.ann.images[entry].file_name}/{index}"

    def units(self, batch_size: int) -> List[Tuple[str, List[int]]]:
        """``(key, region positions)``: runs of at most ``batch_size`` regions, one image's together."""
        ids = [self.item_id(i) for i in range(len(self.items))]
        return keyed_units([entry for entry, _ in self.items], ids, batch_size)

    def load_unit(self, positions: Sequence[int]) -> RegionClassBatch:
        """Images (each decoded once) and region geometry of one unit (runs on prefetch threads)."""
        pixels: Dict[int, torch.Tensor] = {}
        regions: List[Region] = []
        keys: List[Tuple[str, int]] = []
        categories: List[str] = []
        order = []
        for position in positions:
            entry, index = self.items[position]
            image = self.ann.images[entry]
            if entry not in pixels:
                pixels[entry] = self._load_image(image)
            order.append(entry)
            regions.append(self.region(image, index))
            keys.append((image.file_name, index))
            categories.append(image.regions[index].category)
        images, image_index = stack_images(pixels, order)
        return RegionClassBatch(images, image_index, regions, keys, categories)

    def _load_image(self, image: ClassImage) -> torch.Tensor:
        path = self.paths[image.file_name]
        rgb = open_image(path, "image")
        check_image_size(
            rgb.size, (image.width, image.height), f"image '{path}'", f"'{self.ann.path}' entry [{image.entry}]"
        )
        return self.vis_processor(rgb)

    def region(self, image: ClassImage, index: int) -> Region:
        """Region ``index`` of ``image`` as geometry: its mask, or its polygon vertices when the
        polygons cover no pixel (see :mod:`regionvlm.data.region_classes`)."""
        if image.regions[index].empty:
            return Region.from_points(image.vertices(index), image_size=(image.width, image.height))
        what = f"'{self.ann.path}' entry [{image.entry}] ('{image.file_name}') region {index}"
        return Region.from_mask(image.mask(index, what))
