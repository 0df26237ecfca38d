"""Builders of region classification datasets: ``lvis_regions``, ``paco_regions`` (Osprey's
evaluation files) and ``synthetic_regions`` (the synthetic world's shapes).

YAML (under ``datasets:``)::

    lvis_regions:                     # or paco_regions (the same layout)
      ann_path: data/coco/annotations/lvis_val_1k_category.json
      image_root: [data/coco/images/val2017, data/coco/images/train2017]   # a folder or a list
      split: val                      # the split's name in result files and metric keys
      # vis_processor: {eval: {name: blip_image_eval, image_size: null}}   # null: the model's
      # text_processor: {eval: {name: blip_caption}}                      # cleans the region text

    synthetic_regions:
      world: DIR                      # python -m regionvlm.synthetic --out DIR
      split: test                     # DIR/region_classes/synthetic_<split>_category.json, DIR/images

``build_datasets()`` returns ``{split: RegionClassDataset}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Union

from regionvlm.common.errors import ConfigError
from regionvlm.common.registry import registry
from regionvlm.common.settings import setting
from regionvlm.data.region_classes import load_region_classes
from regionvlm.datasets.builders.base_builder import BaseDatasetBuilder, DatasetSettings
from regionvlm.datasets.region_classification_datasets import RegionClassDataset

_ANN = "the region classification JSON (Osprey's lvis_val_1k_category.json / paco_val_1k_category.json layout)"
_IMAGES = "the image folder, or a list of folders searched in order (COCO 2017 val and train for LVIS and PACO)"


@dataclass(frozen=True)
class RegionClassSettings(DatasetSettings):
    ann_path: Optional[str] = setting(None, help=_ANN)
    image_root: Union[str, List[str], None] = setting(None, help=_IMAGES)
    split: str = setting("val", help="the split's name in result files and metric keys")


@dataclass(frozen=True)
class SyntheticRegionClassSettings(RegionClassSettings):
    world: Optional[str] = setting(None, help="a synthetic world: DIR/region_classes, DIR/images")
    split: str = setting("test", choices=("train", "val", "test"))


class RegionClassBuilder(BaseDatasetBuilder):
    """One split from one annotation file and its image folders."""

    Settings = RegionClassSettings
    EVAL_NAME = ""

    def paths(self) -> tuple[Path, List[Path]]:
        s = self.settings
        self.required({"ann_path": _ANN})
        roots = [s.image_root] if isinstance(s.image_root, str) else list(s.image_root or [])
        if not roots or not all(str(r).strip() for r in roots):
            raise ConfigError(f"`{self.setting('image_root')}` is not set; it must be {_IMAGES}.")
        return Path(s.ann_path).expanduser(), [Path(r).expanduser() for r in roots]

    def build_datasets(self) -> Dict[str, RegionClassDataset]:
        ann_path, roots = self.paths()
        ann = load_region_classes(ann_path, self.setting("ann_path"))
        vis, txt = self.build_processors("eval")
        split = self.settings.split
        return {split: RegionClassDataset(ann, roots, self.EVAL_NAME, split, vis, txt, self.setting("image_root"))}


@registry.register_builder("lvis_regions")
class LVISRegionsBuilder(RegionClassBuilder):
    NAME = "lvis_regions"
    EVAL_NAME = "lvis"


@registry.register_builder("paco_regions")
class PACORegionsBuilder(RegionClassBuilder):
    NAME = "paco_regions"
    EVAL_NAME = "paco"


@registry.register_builder("synthetic_regions")
class SyntheticRegionsBuilder(RegionClassBuilder):
    """The synthetic world: ``world: DIR`` fills ann_path and image_root (each overridable)."""

    NAME = "synthetic_regions"
    EVAL_NAME = "synthetic"
    Settings = SyntheticRegionClassSettings

    def paths(self) -> tuple[Path, List[Path]]:
        self.fill_from_world(
            ann_path=f"region_classes/synthetic_{self.settings.split}_category.json", image_root="images"
        )
        return super().paths()
