"""Builder ``phrasecut``: PhraseCut's release files as query datasets of the ``ris`` task
(docs/phrasecut.md).

YAML (under ``datasets:``; every key but the paths has a default)::

    phrasecut:
      data_root: data/VGPhraseCut_v0        # refer_<split>.json, image_data_split.json
      image_root: null                      # null: <data_root>/images (<image_id>.jpg)
      proposals: data/sam_proposals/phrasecut   # <proposals>/<image_id>.json (python -m regionvlm.proposals)
      split: test                           # train, val, test, miniv, joined (val_miniv) or a list
      skip_missing: false                   # true: skip (count and list) tasks with missing files

``build_datasets()`` returns ``{split: PhraseCutDataset}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Union

from regionvlm.common.errors import ConfigError
from regionvlm.common.registry import registry
from regionvlm.common.settings import setting
from regionvlm.data.phrasecut import load_phrasecut, parse_split
from regionvlm.datasets.builders.base_builder import BaseDatasetBuilder, DatasetSettings
from regionvlm.datasets.phrasecut_datasets import PhraseCutDataset

_WHAT = {
    "data_root": "PhraseCut's VGPhraseCut_v0 folder (refer_<split>.json, image_data_split.json)",
    "proposals": "the SAM proposal folder written by `python -m regionvlm.proposals`",
}


@dataclass(frozen=True)
class PhraseCutSettings(DatasetSettings):
    data_root: Optional[str] = setting(None, help=_WHAT["data_root"])
    split: Union[str, List[str]] = setting("test", help="train, val, test, miniv, joined by _ (val_miniv), or a list")
    image_root: Optional[str] = setting(None, help="the image folder (<image_id>.jpg); null: <data_root>/images")
    proposals: Optional[str] = setting(None, help=_WHAT["proposals"])
    skip_missing: bool = setting(False, help="skip (count and list) tasks with missing files or unknown images")


@registry.register_builder("phrasecut")
class PhraseCutBuilder(BaseDatasetBuilder):
    """Builds the tasks of one or more PhraseCut splits."""

    NAME = "phrasecut"
    Settings = PhraseCutSettings

    def build_datasets(self) -> Dict[str, PhraseCutDataset]:
        s = self.settings
        self.required(_WHAT)
        splits = self.splits()
        for split in splits:
            try:
                parse_split(split)
            except ConfigError as exc:
                raise ConfigError(f"`{self.setting('split')}`: {exc}") from None
        image_root = s.image_root or str(Path(s.data_root).expanduser() / "images")
        vis, txt = self.build_processors("eval")
        return {
            split: PhraseCutDataset(
                load_phrasecut(s.data_root, split, skip_missing=s.skip_missing),
                image_root,
                s.proposals,
                s.skip_missing,
                vis,
                txt,
            )
            for split in splits
        }
