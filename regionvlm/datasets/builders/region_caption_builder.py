"""Builders of the region-captioning benchmarks, scored by the ``captioning`` task
(docs/region_captioning.md):

* ``refcocog_captions``: RefCOCOg val in GLaMM's layout (MDETR's ``finetune_refcocog_val_captions.json``);
* ``vg_captions_glamm``: Visual Genome test, GLaMM's ``test_caption.json`` (one region per image);
* ``vg_captions_grit``: Visual Genome test, GRiT's ``test.json`` (every region of every test image);
* ``synthetic_captions``: the synthetic world's referring sentences (its refer files), e.g.
  for the quickstart's tiny model.

YAML (under ``datasets:``; the paths default to ``$REGIONVLM_DATA``, default ``./data``)::

    refcocog_captions:
      annotation: data/refer/mdetr_annotations/finetune_refcocog_val_captions.json
      image_root: data/coco/images/train2014     # a folder, or a list of folders searched in order
      split: val                                  # the split's name in result files
      box_margin: 1.0                             # px a box may overshoot the image (clipped); more: error
      vis_processor: {eval: {name: blip_image_eval, image_size: null}}   # null: the model's

    vg_captions_glamm:  {annotation: data/visual_genome/ann/test_caption.json, image_root: data/gqa/images}
    vg_captions_grit:   {annotation: data/visual_genome/ann/test.json, image_root: data/gqa/images}
    synthetic_captions: {world: DIR, split: test, splitBy: unc, region: mask}   # or region: box

Every image must exist and be the size the file lists; both are checked before the model runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

from regionvlm.common.cli import echo
from regionvlm.common.errors import ConfigError, InputError, MissingFileError
from regionvlm.common.registry import registry
from regionvlm.common.settings import setting
from regionvlm.data.refer import SYNTHETIC, load_refer
from regionvlm.data.region_captions import (
    DEFAULT_BOX_MARGIN,
    RegionCaptionSet,
    read_glamm_region_captions,
    read_grit_region_captions,
    regions_from_refer,
)
from regionvlm.datasets.builders.base_builder import BaseDatasetBuilder, DatasetSettings
from regionvlm.datasets.region_caption_datasets import REGION_KINDS, RegionCaptionEvalDataset

DATA_ROOT = "${oc.env:REGIONVLM_DATA,data}"  # resolved when the section is parsed
Folders = Union[str, List[str]]


@dataclass(frozen=True)
class RegionCaptionSettings(DatasetSettings):
    image_root: Optional[Folders] = setting(None, help="the image folder (or a list searched in order)")
    split: str = setting("test", help="the split's name in result files and metric keys")
    box_margin: float = setting(DEFAULT_BOX_MARGIN, min=0.0, help="px a box may overshoot the image (clipped)")


@dataclass(frozen=True)
class CaptionFileSettings(RegionCaptionSettings):
    annotation: Optional[str] = setting(None, help="the benchmark's annotation file")


@dataclass(frozen=True)
class RefcocogCaptionSettings(CaptionFileSettings):
    annotation: Optional[str] = setting(
        f"{DATA_ROOT}/refer/mdetr_annotations/finetune_refcocog_val_captions.json",
        help="MDETR's RefCOCOg val in GLaMM's layout",
    )
    image_root: Optional[Folders] = setting(f"{DATA_ROOT}/coco/images/train2014", help="COCO train2014 images")
    split: str = setting("val", help="the split's name in result files and metric keys")


@dataclass(frozen=True)
class VGGlammCaptionSettings(CaptionFileSettings):
    annotation: Optional[str] = setting(f"{DATA_ROOT}/visual_genome/ann/test_caption.json", help="GLaMM's VG file")
    image_root: Optional[Folders] = setting(f"{DATA_ROOT}/gqa/images", help="Visual Genome images <id>.jpg")


@dataclass(frozen=True)
class VGGritCaptionSettings(CaptionFileSettings):
    annotation: Optional[str] = setting(f"{DATA_ROOT}/visual_genome/ann/test.json", help="GRiT's VG test.json")
    image_root: Optional[Folders] = setting(f"{DATA_ROOT}/gqa/images", help="Visual Genome images <id>.jpg")


@dataclass(frozen=True)
class SyntheticCaptionSettings(RegionCaptionSettings):
    world: Optional[str] = setting(None, help="a synthetic world folder (python -m regionvlm.synthetic)")
    splitBy: str = setting("unc", help="the refs file: DIR/refer/synthetic/refs(<splitBy>).p")
    region: str = setting("mask", choices=REGION_KINDS, help="caption from the object's mask or its box")


class RegionCaptionBuilder(BaseDatasetBuilder):
    """One benchmark file -> ``{split: RegionCaptionEvalDataset}``."""

    Settings = CaptionFileSettings
    DEFAULT_REGION = "box"
    read: Callable[..., RegionCaptionSet] = staticmethod(read_glamm_region_captions)

    def captions(self) -> RegionCaptionSet:
        s = self.settings
        if not s.annotation:
            raise ConfigError(f"`{self.setting('annotation')}` (the benchmark's annotation file) is not set.")
        return self.read(s.annotation, s.box_margin, self.setting("annotation"), self.setting())

    def image_roots(self) -> Any:
        root = self.settings.image_root
        if not root:
            raise ConfigError(f"`{self.setting('image_root')}` (the image folder) is not set.")
        return root

    def build_datasets(self) -> Dict[str, RegionCaptionEvalDataset]:
        vis, txt = self.build_processors("eval")
        region = getattr(self.settings, "region", self.DEFAULT_REGION)
        name = self.NAME if region == self.DEFAULT_REGION else f"{self.NAME}_{region}"
        dataset = RegionCaptionEvalDataset(
            self.captions(), self.image_roots(), vis, txt, name, self.settings.split, region
        )
        missing = dataset.missing_images()
        if missing:
            raise MissingFileError(
                f"{len(missing)} image(s) of {self.NAME} are missing (e.g. {missing[:3]}); every region is captioned. "
                f"Point `{self.setting('image_root')}` to the folder(s) the file names are relative to."
            )
        wrong = dataset.size_mismatches()
        if wrong:
            raise InputError(
                f"{len(wrong)} image(s) of {self.NAME} are not the size its annotation file lists, the frame of their "
                f"boxes (e.g. {wrong[:3]}); use the images the file was made for."
            )
        echo(f"[{self.NAME}] {dataset.summary()}")
        return {self.settings.split: dataset}


@registry.register_builder("refcocog_captions")
class RefcocogCaptionBuilder(RegionCaptionBuilder):
    NAME = "refcocog_captions"
    Settings = RefcocogCaptionSettings


@registry.register_builder("vg_captions_glamm")
class VGGlammCaptionBuilder(RegionCaptionBuilder):
    NAME = "vg_captions_glamm"
    Settings = VGGlammCaptionSettings


@registry.register_builder("vg_captions_grit")
class VGGritCaptionBuilder(RegionCaptionBuilder):
    NAME = "vg_captions_grit"
    Settings = VGGritCaptionSettings
    read = staticmethod(read_grit_region_captions)


@registry.register_builder("synthetic_captions")
class SyntheticCaptionBuilder(RegionCaptionBuilder):
    """The synthetic world's referring sentences: one unit per sentence, from the object's
    mask (default, as the quickstart captions) or box."""

    NAME = "synthetic_captions"
    Settings = SyntheticCaptionSettings
    DEFAULT_REGION = "mask"

    def world(self) -> Path:
        if not self.settings.world:
            raise ConfigError(
                f"`{self.setting('world')}` is not set; give a folder written by `python -m regionvlm.synthetic`."
            )
        return Path(self.settings.world).expanduser()

    def captions(self) -> RegionCaptionSet:
        s = self.settings
        split = load_refer(self.world() / "refer", SYNTHETIC, s.splitBy, s.split)
        return regions_from_refer(split, s.box_margin, self.setting())

    def image_roots(self) -> Any:
        return self.settings.image_root or str(self.world() / "images")
