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

from pathlib import Path
from typing import Any, Dict, List

from regionvlm.common.errors import ConfigError
from regionvlm.common.registry import registry
from regionvlm.data.refer import DEFAULT_SPLIT_BY, GT_MASK_RULES, SYNTHETIC, load_refer
from regionvlm.datasets.builders.base_builder import EVAL_PROCESSORS, BaseDatasetBuilder
from regionvlm.datasets.ris_datasets import RISDataset

_WHAT = {
    "data_root": "the folder holding <dataset>/refs(<splitBy>).p and <dataset>/instances.json (--data-root)",
    "image_root": "the image folder, e.g. COCO train2014 (--image-root)",
    "proposals": "the SAM proposal folder written by `python -m regionvlm.proposals` (--proposals)",
}


class RISBuilder(BaseDatasetBuilder):
    """Builds the queries of one or more splits of a refer-layout dataset."""

    DEFAULTS: Dict[str, Any] = {
        "data_root": None,
        "dataset_name": None,
        "splitBy": None,
        "split": "val",
        "image_root": None,
        "proposals": None,
        "skip_missing": False,
        "gt_mask": "official",
        **EVAL_PROCESSORS,
    }

    def _path(self, key: str) -> str:
        value = self.config.get(key)
        if value in (None, ""):
            raise ConfigError(f"`{self.setting(key)}` is not set; it must point to {_WHAT[key]}.")
        return str(value)

    def paths(self) -> Dict[str, str]:
        return {k: self._path(k) for k in ("data_root", "image_root", "proposals")}

    def _splits(self) -> List[str]:
        split = self.config.get("split", "val")
        splits = [split] if isinstance(split, str) else list(split or [])
        if not splits or not all(isinstance(s, str) for s in splits):
            raise ConfigError(f"`{self.setting('split')}` must be a split name or a list, got {split!r}.")
        return splits

    def build_datasets(self) -> Dict[str, RISDataset]:
        name = self.config.get("dataset_name") or self.NAME
        if name != self.NAME:
            builder = "ris_synthetic" if name == SYNTHETIC else name
            raise ConfigError(
                f"`{self.setting('dataset_name')}` is '{name}'; list that dataset under its own "
                f"builder name instead (datasets: {{{builder}: ...}})."
            )
        gt_rule = str(self.config.get("gt_mask"))
        if gt_rule not in GT_MASK_RULES:
            raise ConfigError(f"`{self.setting('gt_mask')}` must be one of {list(GT_MASK_RULES)}, got {gt_rule!r}.")
        split_by = str(self.config.get("splitBy") or DEFAULT_SPLIT_BY[name])
        paths = self.paths()
        skip = bool(self.config.get("skip_missing"))
        vis, txt = self.build_processors("eval")
        out: Dict[str, RISDataset] = {}
        for split in self._splits():
            refer = load_refer(paths["data_root"], name, split_by, split, gt_mask=gt_rule, skip_missing=skip)
            out[split] = RISDataset(refer, paths["image_root"], paths["proposals"], skip, vis, txt)
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
    DEFAULTS = {**RISBuilder.DEFAULTS, "world": None}

    def paths(self) -> Dict[str, str]:
        world = self.config.get("world")
        if world:
            base = Path(str(world)).expanduser()
            defaults = {"data_root": base / "refer", "image_root": base / "images", "proposals": base / "proposals"}
            for key, value in defaults.items():
                if self.config.get(key) in (None, ""):
                    self.config[key] = str(value)
        return super().paths()
