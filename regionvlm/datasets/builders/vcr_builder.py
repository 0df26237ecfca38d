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

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from regionvlm.common.errors import ConfigError
from regionvlm.common.registry import registry
from regionvlm.common.settings import setting
from regionvlm.data.vcr import read_vcr_jsonl
from regionvlm.datasets.builders.base_builder import BaseDatasetBuilder, DatasetSettings
from regionvlm.datasets.vcr_datasets import VCRDataset

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class VCRDatasetSettings(DatasetSettings):
    data_root: Optional[str] = setting(None, help="folder with train.jsonl / val.jsonl / test.jsonl")
    annotation: Optional[str] = setting(None, help="explicit JSONL path (default <data_root>/<split>.jsonl)")
    image_root: Optional[str] = setting(None, help="vcr1images folder (default <data_root>/vcr1images)")
    metadata_root: Optional[str] = setting(None, help="metadata JSON folder (default image_root)")
    split: str = setting("val")
    skip_missing: bool = setting(False, help="skip bad items (counted and listed)")
    check_files: bool = setting(True, help="check every image/metadata file exists before starting")


@registry.register_builder("vcr")
class VCRBuilder(BaseDatasetBuilder):
    """Builds ``{split: VCRDataset}`` for the one split named in the config."""

    NAME = "vcr"
    Settings = VCRDatasetSettings

    def annotation_path(self) -> Path:
        cfg = self.settings
        split = str(cfg.split)
        if cfg.annotation:
            return Path(str(cfg.annotation)).expanduser()
        if split not in SPLITS:
            raise ConfigError(
                f"`{self.setting('split')}` must be one of {list(SPLITS)}, got '{split}' "
                f"(or give `{self.setting('annotation')}` explicitly)."
            )
        if not cfg.data_root:
            raise ConfigError(
                f"`{self.setting('data_root')}` is not set: point it to the folder holding "
                f"train.jsonl/val.jsonl/test.jsonl (or set `{self.setting('annotation')}`)."
            )
        return Path(str(cfg.data_root)).expanduser() / f"{split}.jsonl"

    def image_root(self) -> Path:
        cfg = self.settings
        if cfg.image_root:
            return Path(str(cfg.image_root)).expanduser()
        if not cfg.data_root:
            raise ConfigError(
                f"`{self.setting('image_root')}` is not set (the vcr1images folder), and there is "
                "no data_root to default to <data_root>/vcr1images."
            )
        return Path(str(cfg.data_root)).expanduser() / "vcr1images"

    def build_datasets(self) -> Dict[str, VCRDataset]:
        cfg = self.settings
        vis, txt = self.build_processors("eval")
        annotation = self.annotation_path()
        image_root = self.image_root()
        metadata_root = Path(str(cfg.metadata_root)).expanduser() if cfg.metadata_root else image_root
        items, skipped = read_vcr_jsonl(
            annotation,
            image_root,
            metadata_root,
            skip_missing=bool(cfg.skip_missing),
            check_files=bool(cfg.check_files),
        )
        dataset = VCRDataset(
            items,
            image_root,
            metadata_root,
            vis_processor=vis,
            text_processor=txt,
            split=str(cfg.split),
            annotation_path=str(annotation),
            skipped=skipped,
            skip_missing=bool(cfg.skip_missing),
        )
        return {str(cfg.split): dataset}
