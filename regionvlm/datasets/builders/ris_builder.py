"""Builders of the RIS query datasets: ``refcoco``, ``refcoco+``, ``refcocog`` and
``ris_synthetic`` (the synthetic world in the same layout).

YAML (under ``datasets:``; every key but the paths has a default)::

    refcoco:
      data_root: data/refer            # holds refcoco/refs(unc).p and refcoco/instances.json
      image_root: data/coco/train2014  # <image_root>/<file_name>
      proposals: data/sam_proposals    # <proposals>/<image name>.json (python -m regionvlm.proposals)
      splitBy: unc                     # default unc (refcoco, refcoco+), umd (refcocog), unc (synthetic)
      split: val                       # or a list, e.g. [val, testA, testB]
      skip_missing: false              # true: skip (count and list) queries with missing files
      gt_mask: official                # or union (see regionvlm.data.refer)
      # optional LAVIS-style processors; default: the model's evaluation processors
      # vis_processor: {eval: {name: blip_image_eval, image_size: 364}}
      # text_processor: {eval: {name: blip_caption}}

``ris_synthetic`` also takes ``world: DIR`` meaning data_root DIR/refer, image_root
DIR/images and proposals DIR/proposals (each overridable).

``build_datasets()`` returns ``{split: RISDataset}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Union

from regionvlm.common.errors import ConfigError
from regionvlm.common.registry import registry
from regionvlm.common.settings import setting
from regionvlm.data.refer import DEFAULT_SPLIT_BY, GT_MASK_RULES, SYNTHETIC, load_refer
from regionvlm.datasets.builders.base_builder import BaseDatasetBuilder, DatasetSettings
from regionvlm.datasets.ris_datasets import RISDataset

_WHAT = {
    "data_root": "the folder holding <dataset>/refs(<splitBy>).p and <dataset>/instances.json (--data-root)",
    "image_root": "the image folder, e.g. COCO train2014 (--image-root)",
    "proposals": "the SAM proposal folder written by `python -m regionvlm.proposals` (--proposals)",
}


@dataclass(frozen=True)
class RISDatasetSettings(DatasetSettings):
    data_root: Optional[str] = setting(None, help=_WHAT["data_root"])
    dataset_name: Optional[str] = setting(None, help="defaults to the builder's name")
    splitBy: Optional[str] = setting(None, help="default unc (refcoco, refcoco+), umd (refcocog)")
    split: Union[str, List[str]] = setting("val", help="a split name or a list")
    image_root: Optional[str] = setting(None, help=_WHAT["image_root"])
    proposals: Optional[str] = setting(None, help=_WHAT["proposals"])
    skip_missing: bool = setting(False, help="skip (count and list) queries with missing files")
    gt_mask: str = setting("official", choices=GT_MASK_RULES)


@dataclass(frozen=True)
class SyntheticRISSettings(RISDatasetSettings):
    world: Optional[str] = setting(None, help="a synthetic world: DIR/refer, DIR/images, DIR/proposals")


class RISBuilder(BaseDatasetBuilder):
    """Builds the queries of one or more splits of a refer-layout dataset."""

    Settings = RISDatasetSettings

    def paths(self) -> Dict[str, str]:
        values = {k: getattr(self.settings, k) for k in ("data_root", "image_root", "proposals")}
        for key, value in values.items():
            if not value:
                raise ConfigError(f"`{self.setting(key)}` is not set; it must point to {_WHAT[key]}.")
        return values

    def build_datasets(self) -> Dict[str, RISDataset]:
        s = self.settings
        name = s.dataset_name or self.NAME
        if name != self.NAME:
            builder = "ris_synthetic" if name == SYNTHETIC else name
            raise ConfigError(
                f"`{self.setting('dataset_name')}` is '{name}'; list that dataset under its own "
                f"builder name instead (datasets: {{{builder}: ...}})."
            )
        splits = [s.split] if isinstance(s.split, str) else list(s.split)
        if not splits:
            raise ConfigError(f"`{self.setting('split')}` must be a split name or a list, got {s.split!r}.")
        split_by = s.splitBy or DEFAULT_SPLIT_BY[name]
        paths = self.paths()
        vis, txt = self.build_processors("eval")
        out: Dict[str, RISDataset] = {}
        for split in splits:
            refer = load_refer(
                paths["data_root"], name, split_by, split, gt_mask=s.gt_mask, skip_missing=s.skip_missing
            )
            out[split] = RISDataset(refer, paths["image_root"], paths["proposals"], s.skip_missing, vis, txt)
        return out


@registry.register_builder("refcoco")
class RefCOCOBuilder(RISBuilder):
    NAME = "refcoco"


@registry.register_builder("refcoco+")
class RefCOCOPlusBuilder(RISBuilder):
    NAME = "refcoco+"


@registry.register_builder("refcocog")
class RefCOCOgBuilder(RISBuilder):
    NAME = "refcocog"


@registry.register_builder("ris_synthetic")
class SyntheticRISBuilder(RISBuilder):
    """The synthetic world: ``world: DIR`` fills data_root/image_root/proposals."""

    NAME = SYNTHETIC
    Settings = SyntheticRISSettings

    def paths(self) -> Dict[str, str]:
        world = self.settings.world
        if world:
            base = Path(world).expanduser()
            defaults = {"data_root": base / "refer", "image_root": base / "images", "proposals": base / "proposals"}
            filled = {k: str(v) for k, v in defaults.items() if not getattr(self.settings, k)}
            self.settings = self.settings.replace(**filled)
        return super().paths()
