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
from typing import Dict, List, Optional, Tuple, Union

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
class ReferSettings(DatasetSettings):
    """The keys of every builder that reads a refer-layout split (RIS, REC)."""

    data_root: Optional[str] = setting(None, help=_WHAT["data_root"])
    dataset_name: Optional[str] = setting(None, help="defaults to the builder's dataset")
    splitBy: Optional[str] = setting(None, help="default unc (refcoco, refcoco+), umd (refcocog)")
    split: Union[str, List[str]] = setting("val", help="a split name or a list")
    image_root: Optional[str] = setting(None, help=_WHAT["image_root"])
    skip_missing: bool = setting(False, help="skip (count and list) queries with missing files")


@dataclass(frozen=True)
class RISDatasetSettings(ReferSettings):
    proposals: Optional[str] = setting(None, help=_WHAT["proposals"])
    gt_mask: str = setting("official", choices=GT_MASK_RULES)


@dataclass(frozen=True)
class SyntheticRISSettings(RISDatasetSettings):
    world: Optional[str] = setting(None, help="a synthetic world: DIR/refer, DIR/images, DIR/proposals")


class ReferBuilder(BaseDatasetBuilder):
    """A builder of refer-layout splits: ``DATASET`` is the refer dataset it reads."""

    DATASET = ""
    PATHS = ("data_root", "image_root")

    def refer_dataset(self) -> Tuple[str, str]:
        """``(dataset, splitBy)`` of the section; another dataset's name is refused."""
        s = self.settings
        name = s.dataset_name or self.DATASET
        if name != self.DATASET:
            raise ConfigError(
                f"`{self.setting('dataset_name')}` is '{name}'; list that dataset under its own "
                f"builder name instead (datasets: {{{self.builder_for(name)}: ...}})."
            )
        return name, s.splitBy or DEFAULT_SPLIT_BY[name]

    @staticmethod
    def builder_for(dataset: str) -> str:
        """The builder that reads ``dataset`` (for the message above)."""
        return "ris_synthetic" if dataset == SYNTHETIC else dataset

    def paths(self) -> Dict[str, str]:
        return self.required({k: _WHAT[k] for k in self.PATHS})


class RISBuilder(ReferBuilder):
    """Builds the queries of one or more splits of a refer-layout dataset."""

    Settings = RISDatasetSettings
    PATHS = ("data_root", "image_root", "proposals")

    def build_datasets(self) -> Dict[str, RISDataset]:
        s = self.settings
        name, split_by = self.refer_dataset()
        paths = self.paths()
        vis, txt = self.build_processors("eval")
        out: Dict[str, RISDataset] = {}
        for split in self.splits():
            refer = load_refer(
                paths["data_root"], name, split_by, split, gt_mask=s.gt_mask, skip_missing=s.skip_missing
            )
            out[split] = RISDataset(refer, paths["image_root"], paths["proposals"], s.skip_missing, vis, txt)
        return out


@registry.register_builder("refcoco")
class RefCOCOBuilder(RISBuilder):
    NAME = DATASET = "refcoco"


@registry.register_builder("refcoco+")
class RefCOCOPlusBuilder(RISBuilder):
    NAME = DATASET = "refcoco+"


@registry.register_builder("refcocog")
class RefCOCOgBuilder(RISBuilder):
    NAME = DATASET = "refcocog"


@registry.register_builder("ris_synthetic")
class SyntheticRISBuilder(RISBuilder):
    """The synthetic world: ``world: DIR`` fills data_root/image_root/proposals."""

    NAME = "ris_synthetic"
    DATASET = SYNTHETIC
    Settings = SyntheticRISSettings

    def paths(self) -> Dict[str, str]:
        self.fill_from_world(data_root="refer", image_root="images", proposals="proposals")
        return super().paths()
