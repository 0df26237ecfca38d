"""Dataset builder ``vcr``: the official VCR JSONL + metadata files as a :class:`VCRDataset`.

Config (``datasets: vcr:``), every key optional except where the files are::

    data_root: /data/vcr          # folder with train.jsonl / val.jsonl / test.jsonl
    annotation: null              # explicit JSONL path (default <data_root>/<split>.jsonl)
    image_root: null              # vcr1images folder (default <data_root>/vcr1images)
    metadata_root: null           # metadata JSON folder (default image_root, as VCR ships it)
    split: val
    skip_missing: false           # true: skip bad items (missing files, malformed lines,
                                  #       object index out of range), counted and listed
    check_files: true             # check every image/metadata file exists before starting
    vis_processor: {eval: {name: blip_image_eval, image_size: 364}}
    text_processor: {eval: {name: blip_caption}}   # also cleans the region text, as officially

The VCR task fills ``vis_processor.eval.image_size`` from the model when it is null.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from omegaconf import DictConfig, OmegaConf

from regionvlm.common.errors import ConfigError
from regionvlm.common.registry import registry
from regionvlm.data.vcr import VCRDataset, read_vcr_jsonl

SPLITS = ("train", "val", "test")

DEFAULTS: Dict[str, Any] = {
    "data_root": None,
    "annotation": None,
    "image_root": None,
    "metadata_root": None,
    "split": "val",
    "skip_missing": False,
    "check_files": True,
    "vis_processor": {"eval": {"name": "blip_image_eval", "image_size": None}},
    "text_processor": {"eval": {"name": "blip_caption"}},
}


@registry.register_builder("vcr")
class VCRBuilder:
    """Builds ``{split: VCRDataset}`` for the one split named in the config."""

    def __init__(self, cfg: Optional[Mapping[str, Any]] = None):
        user = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg or {}))
        self.config = OmegaConf.merge(OmegaConf.create(DEFAULTS), user)

    @classmethod
    def default_config_path(cls, type: str = "default") -> Optional[str]:
        """No preset YAML: the defaults live in :data:`DEFAULTS`."""
        return None

    def annotation_path(self) -> Path:
        cfg = self.config
        split = str(cfg.split)
        if cfg.annotation:
            return Path(str(cfg.annotation)).expanduser()
        if split not in SPLITS:
            raise ConfigError(f"datasets.vcr.split must be one of {list(SPLITS)}, got '{split}' "
                              "(or give datasets.vcr.annotation explicitly).")
        if not cfg.data_root:
            raise ConfigError("datasets.vcr.data_root is not set: point it to the folder holding "
                              "train.jsonl/val.jsonl/test.jsonl (or set datasets.vcr.annotation).")
        return Path(str(cfg.data_root)).expanduser() / f"{split}.jsonl"

    def image_root(self) -> Path:
        cfg = self.config
        if cfg.image_root:
            return Path(str(cfg.image_root)).expanduser()
        if not cfg.data_root:
            raise ConfigError("datasets.vcr.image_root is not set (the vcr1images folder), and there is "
                              "no data_root to default to <data_root>/vcr1images.")
        return Path(str(cfg.data_root)).expanduser() / "vcr1images"

    def build_processors(self):
        from regionvlm.processors import load_processor

        vis_cfg = self.config.vis_processor.get("eval")
        if vis_cfg is None or vis_cfg.get("image_size") is None:
            raise ConfigError("datasets.vcr.vis_processor.eval.image_size is not set; it must equal the "
                              "model's image_size (364 for the FlanT5-XL presets).")
        txt_cfg = self.config.text_processor.get("eval")
        vis = load_processor(OmegaConf.to_container(vis_cfg, resolve=True))
        txt = load_processor(OmegaConf.to_container(txt_cfg, resolve=True)) if txt_cfg is not None else None
        return vis, txt

    def build_datasets(self) -> Dict[str, VCRDataset]:
        cfg = self.config
        vis, txt = self.build_processors()
        annotation = self.annotation_path()
        image_root = self.image_root()
        metadata_root = Path(str(cfg.metadata_root)).expanduser() if cfg.metadata_root else image_root
        items, skipped = read_vcr_jsonl(annotation, image_root, metadata_root,
                                        skip_missing=bool(cfg.skip_missing), check_files=bool(cfg.check_files))
        dataset = VCRDataset(items, image_root, metadata_root, vis_processor=vis, text_processor=txt,
                             split=str(cfg.split), annotation_path=str(annotation), skipped=skipped,
                             skip_missing=bool(cfg.skip_missing))
        return {str(cfg.split): dataset}
