"""Builders of the REC expression datasets: ``rec_refcoco``, ``rec_refcoco+``, ``rec_refcocog``
and ``rec_synthetic`` (the synthetic world in the same layout; candidates: its objects).

YAML (under ``datasets:``; every key but the paths has a default)::

    rec_refcoco:
      data_root: data/refer            # holds refcoco/refs(unc).p and refcoco/instances.json
      image_root: data/coco/train2014  # <image_root>/<file_name>
      splitBy: unc                     # default unc (refcoco, refcoco+), umd (refcocog), unc (synthetic)
      split: val                       # or a list, e.g. [val, testA, testB]
      candidates: gt                   # gt: every COCO annotation of the image | detections
      detections: null                 # with candidates: detections, the detections JSON (docs/rec.md)
      skip_missing: false              # true: skip (count and list) expressions with missing images

``rec_synthetic`` also takes ``world: DIR`` meaning data_root DIR/refer and image_root
DIR/images (each overridable).

``build_datasets()`` returns ``{split: RECDataset}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Union

from regionvlm.common.errors import ConfigError
from regionvlm.common.registry import registry
from regionvlm.common.settings import setting
from regionvlm.data.detections import read_detections
from regionvlm.data.refer import DEFAULT_SPLIT_BY, SYNTHETIC, load_refer
from regionvlm.datasets.builders.base_builder import BaseDatasetBuilder, DatasetSettings
from regionvlm.datasets.rec_datasets import CANDIDATE_SOURCES, RECDataset

_WHAT = {
    "data_root": "the folder holding <dataset>/refs(<splitBy>).p and <dataset>/instances.json (--data-root)",
    "image_root": "the image folder, e.g. COCO train2014 (--image-root)",
}


@dataclass(frozen=True)
class RECDatasetSettings(DatasetSettings):
    data_root: Optional[str] = setting(None, help=_WHAT["data_root"])
    dataset_name: Optional[str] = setting(None, help="defaults to the builder's dataset")
    splitBy: Optional[str] = setting(None, help="default unc (refcoco, refcoco+), umd (refcocog)")
    split: Union[str, List[str]] = setting("val", help="a split name or a list")
    image_root: Optional[str] = setting(None, help=_WHAT["image_root"])
    candidates: str = setting(
        "gt", choices=CANDIDATE_SOURCES, help="gt: every annotation of the image | detections: a detections file"
    )
    detections: Optional[str] = setting(None, help="detections JSON (refer toolkit or ReCLIP layout)")
    skip_missing: bool = setting(False, help="skip (count and list) expressions whose image is missing")

    def validate(self, section: str) -> None:
        if self.candidates == "detections" and not self.detections:
            raise ConfigError(
                f"`{section}.candidates` is 'detections' but `{section}.detections` is not set; give the "
                "detections JSON (--detections), or use candidates: gt."
            )
        if self.candidates == "gt" and self.detections:
            raise ConfigError(
                f"`{section}.detections` is set but `{section}.candidates` is 'gt', which scores the COCO "
                "annotations; set candidates: detections to score the file's boxes, or remove detections."
            )


@dataclass(frozen=True)
class SyntheticRECSettings(RECDatasetSettings):
    world: Optional[str] = setting(None, help="a synthetic world: DIR/refer, DIR/images")


class RECBuilder(BaseDatasetBuilder):
    """Builds the expressions of one or more splits of a refer-layout dataset."""

    Settings = RECDatasetSettings
    DATASET = ""  # the refer dataset this builder reads

    def paths(self) -> Dict[str, str]:
        values = {k: getattr(self.settings, k) for k in ("data_root", "image_root")}
        for key, value in values.items():
            if not value:
                raise ConfigError(f"`{self.setting(key)}` is not set; it must point to {_WHAT[key]}.")
        return values

    def build_datasets(self) -> Dict[str, RECDataset]:
        s = self.settings
        name = s.dataset_name or self.DATASET
        if name != self.DATASET:
            raise ConfigError(
                f"`{self.setting('dataset_name')}` is '{name}'; list that dataset under its own "
                f"builder name instead (datasets: {{rec_{name}: ...}})."
            )
        splits = [s.split] if isinstance(s.split, str) else list(s.split)
        if not splits:
            raise ConfigError(f"`{self.setting('split')}` must be a split name or a list, got {s.split!r}.")
        split_by = s.splitBy or DEFAULT_SPLIT_BY[name]
        paths = self.paths()
        vis, txt = self.build_processors("eval")
        detections = None
        out: Dict[str, RECDataset] = {}
        for split in splits:
            refer = load_refer(
                paths["data_root"],
                name,
                split_by,
                split,
                skip_missing=s.skip_missing,
                image_annotations=s.candidates == "gt",
            )
            if s.candidates == "detections" and detections is None:
                detections = read_detections(s.detections, refer.known_image_ids, self.setting("detections"))
            out[split] = RECDataset(refer, paths["image_root"], s.candidates, detections, s.skip_missing, vis, txt)
        return out


@registry.register_builder("rec_refcoco")
class RECRefCOCOBuilder(RECBuilder):
    NAME = "rec_refcoco"
    DATASET = "refcoco"


@registry.register_builder("rec_refcoco+")
class RECRefCOCOPlusBuilder(RECBuilder):
    NAME = "rec_refcoco+"
    DATASET = "refcoco+"


@registry.register_builder("rec_refcocog")
class RECRefCOCOgBuilder(RECBuilder):
    NAME = "rec_refcocog"
    DATASET = "refcocog"


@registry.register_builder("rec_synthetic")
class SyntheticRECBuilder(RECBuilder):
    """The synthetic world: ``world: DIR`` fills data_root/image_root; its candidates are the
    scene's objects (its annotations), each with its mask."""

    NAME = "rec_synthetic"
    DATASET = SYNTHETIC
    Settings = SyntheticRECSettings

    def paths(self) -> Dict[str, str]:
        world = self.settings.world
        if world:
            base = Path(world).expanduser()
            defaults = {"data_root": base / "refer", "image_root": base / "images"}
            filled = {k: str(v) for k, v in defaults.items() if not getattr(self.settings, k)}
            self.settings = self.settings.replace(**filled)
        return super().paths()
