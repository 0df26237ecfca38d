"""Builder ``region_captions``: fine-tuning on your own region captions (docs/finetuning.md).

The section reads region files (the format of ``python -m regionvlm.predict``, JSONL or COCO
instances JSON, with a ``caption`` per region)::

    datasets:
      region_captions:
        ann_paths: data/mine/train.jsonl      # training regions (a file or a list): split "train"
        val_ann_paths: data/mine/val.jsonl    # held-out regions (one file): split "val", scored by
                                              # the region_captioning task (CIDEr, METEOR, ...)
        image_root: null                      # null: each file's own folder
        coco_region: auto                     # COCO files: segmentation, else bbox (or: bbox, segmentation)
        on_error: stop                        # a bad line stops the build (skip: drop it, counted)
        num_points: null                      # K points of the region prompt (null: the model's)
        crop_max_fraction: 0.1                # region-preserving crop of training images (0: none)
        samples_per_image: 1                  # regions of one image per item (encoded once)
        seed: null                            # null: run.seed

Regions without a caption (missing, null or blank) are skipped and counted, never trained
on or scored. To mix your regions with the Localized Narratives training mix, give them to
``regionvlm_mix`` as ``region_files`` instead (its ``p_region_files`` sets their share).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

from regionvlm.common.errors import ConfigError
from regionvlm.common.registry import registry
from regionvlm.common.settings import setting
from regionvlm.data.region_files import COCO_REGIONS
from regionvlm.datasets.builders.base_builder import EVAL_TEXT, EVAL_VIS, TRAIN_TEXT, TRAIN_VIS, BaseDatasetBuilder
from regionvlm.datasets.builders.caption_builders import (
    PathList,
    RegionDatasetSettings,
    region_file_set,
    training_regions,
)
from regionvlm.datasets.region_files import ON_ERROR, RegionFileEvalDataset, report_kept


@dataclass(frozen=True)
class RegionCaptionsSettings(RegionDatasetSettings):
    vis_processor: Dict[str, Any] = setting({**TRAIN_VIS, **EVAL_VIS}, help="{train: ..., eval: ...}")
    text_processor: Dict[str, Any] = setting({**TRAIN_TEXT, **EVAL_TEXT}, help="{train: ..., eval: ...}")
    ann_paths: PathList = setting(None, help="training region file(s) (split train)")
    val_ann_paths: Optional[str] = setting(None, help="held-out region file (split val)")
    image_root: Optional[str] = setting(None, help="joins relative image paths (null: each file's folder)")
    coco_region: str = setting("auto", choices=COCO_REGIONS, help="COCO files: segmentation or bbox")
    on_error: str = setting("stop", choices=ON_ERROR, help="a bad line stops the build, or is skipped")

    def validate(self, section: str) -> None:
        if not self.ann_paths and not self.val_ann_paths:
            raise ConfigError(f"`{section}` needs `ann_paths` (training regions) or `val_ann_paths` (held-out).")


@registry.register_builder("region_captions")
class RegionCaptionsBuilder(BaseDatasetBuilder):
    """Your region captions: ``train`` from ``ann_paths``, ``val`` from ``val_ann_paths``."""

    NAME = "region_captions"
    Settings = RegionCaptionsSettings

    def build_datasets(self) -> Dict[str, Any]:
        s = self.settings
        out: Dict[str, Any] = {}
        if s.ann_paths:
            vis, txt = self.build_processors("train")
            out["train"] = training_regions(
                self, s.ann_paths, s.image_root, s.coco_region, s.on_error, self.setting("ann_paths"), vis, txt
            )
        if s.val_ann_paths:
            vis, txt = self.build_processors("eval")
            regions = region_file_set(
                s.val_ann_paths, s.image_root, s.coco_region, s.on_error, self.setting("val_ann_paths")
            )
            out["val"] = RegionFileEvalDataset(regions, vis, txt, name=self.NAME, split="val")
            report_kept(self.NAME, "val", regions, len(out["val"]), out["val"].uncaptioned)
        return out
