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
from typing import Any, Dict, List, Mapping, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf

from regionvlm.common.errors import ConfigError
from regionvlm.common.registry import registry
from regionvlm.data.refer import DEFAULT_SPLIT_BY, SYNTHETIC, RISDataset, load_refer


def _plain(cfg: Any) -> Dict[str, Any]:
    if cfg is None:
        return {}
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg)


class RISBuilder:
    """Builds the queries of one or more splits of a refer-layout dataset."""

    DATASET_NAME: str = ""
    KEYS = ("data_root", "dataset_name", "splitBy", "split", "image_root", "proposals", "skip_missing",
            "gt_mask", "vis_processor", "text_processor", "type")
    EXTRA_KEYS: tuple = ()

    def __init__(self, cfg: Optional[Mapping[str, Any]] = None):
        self.config = _plain(cfg)

    @classmethod
    def default_config_path(cls, type: str = "default") -> Optional[str]:
        return None  # defaults live in code (see the module docstring)

    def _setting(self, key: str) -> str:
        value = self.config.get(key)
        if value in (None, ""):
            raise ConfigError(f"datasets.{self.DATASET_NAME}.{key} is not set; it must point to "
                              f"{_WHAT[key]} (see regionvlm/datasets/builders/ris_builder.py).")
        return str(value)

    def _paths(self) -> Dict[str, str]:
        return {k: self._setting(k) for k in ("data_root", "image_root", "proposals")}

    def _splits(self) -> List[str]:
        split = self.config.get("split", "val")
        splits = [split] if isinstance(split, str) else list(split or [])
        if not splits or not all(isinstance(s, str) for s in splits):
            raise ConfigError(f"datasets.{self.DATASET_NAME}.split must be a split name or a list, got {split!r}.")
        return splits

    def _processor(self, key: str) -> Any:
        section = self.config.get(key)
        if not section:
            return None
        from regionvlm.processors import load_processor

        spec = section.get("eval", section) if isinstance(section, Mapping) else None
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise ConfigError(f"datasets.{self.DATASET_NAME}.{key} must be {{eval: {{name: ...}}}}, got {section!r}.")
        return load_processor(spec)

    def build_datasets(self) -> Dict[str, RISDataset]:
        unknown = sorted(set(self.config) - set(self.KEYS) - set(self.EXTRA_KEYS))
        if unknown:
            raise ConfigError(f"datasets.{self.DATASET_NAME}: unknown key(s) {unknown}; known: "
                              f"{sorted(set(self.KEYS) | set(self.EXTRA_KEYS))}.")
        name = self.config.get("dataset_name") or self.DATASET_NAME
        if name != self.DATASET_NAME:
            raise ConfigError(f"datasets.{self.DATASET_NAME}.dataset_name is '{name}'; list that dataset under "
                              f"its own builder name instead (datasets: {{{name if name != SYNTHETIC else 'ris_synthetic'}: ...}}).")
        split_by = str(self.config.get("splitBy") or DEFAULT_SPLIT_BY[name])
        paths = self._paths()
        skip = bool(self.config.get("skip_missing", False))
        gt_rule = str(self.config.get("gt_mask", "official"))
        vis, txt = self._processor("vis_processor"), self._processor("text_processor")
        out: Dict[str, RISDataset] = {}
        for split in self._splits():
            refer = load_refer(paths["data_root"], name, split_by, split, gt_mask=gt_rule, skip_missing=skip)
            out[split] = RISDataset(refer, paths["image_root"], paths["proposals"], skip, vis, txt)
        return out


_WHAT = {
    "data_root": "the folder holding <dataset>/refs(<splitBy>).p and <dataset>/instances.json (--data-root)",
    "image_root": "the image folder, e.g. COCO train2014 (--image-root)",
    "proposals": "the SAM proposal folder written by `python -m regionvlm.proposals` (--proposals)",
}


@registry.register_builder("refcoco")
class RefCOCOBuilder(RISBuilder):
    DATASET_NAME = "refcoco"


@registry.register_builder("refcoco+")
class RefCOCOPlusBuilder(RISBuilder):
    DATASET_NAME = "refcoco+"


@registry.register_builder("refcocog")
class RefCOCOgBuilder(RISBuilder):
    DATASET_NAME = "refcocog"


@registry.register_builder("ris_synthetic")
class SyntheticRISBuilder(RISBuilder):
    """The synthetic world: ``world: DIR`` fills data_root/image_root/proposals."""

    DATASET_NAME = SYNTHETIC
    EXTRA_KEYS = ("world",)

    def _paths(self) -> Dict[str, str]:
        world = self.config.get("world")
        if world:
            base = Path(str(world)).expanduser()
            defaults = {"data_root": base / "refer", "image_root": base / "images", "proposals": base / "proposals"}
            for key, value in defaults.items():
                if self.config.get(key) in (None, ""):
                    self.config[key] = str(value)
        return super()._paths()
