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
from typing import Dict, Optional

from regionvlm.common.errors import ConfigError
from regionvlm.common.registry import registry
from regionvlm.common.settings import setting
from regionvlm.data.detections import read_detections
from regionvlm.data.refer import SYNTHETIC, load_refer
from regionvlm.datasets.builders.ris_builder import ReferBuilder, ReferSettings
from regionvlm.datasets.rec_datasets import CANDIDATE_SOURCES, RECDataset


@dataclass(frozen=True)
class RECDatasetSettings(ReferSettings):
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


class RECBuilder(ReferBuilder):
    """Builds the expressions of one or more splits of a refer-layout dataset."""

    Settings = RECDatasetSettings

    @staticmethod
    def builder_for(dataset: str) -> str:
        return f"rec_{dataset}"

    def build_datasets(self) -> Dict[str, RECDataset]:
        s = self.settings
        name, split_by = self.refer_dataset()
        paths = self.paths()
        vis, txt = self.build_processors("eval")
        detections = None
        out: Dict[str, RECDataset] = {}
        for split in self.splits():
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
        self.fill_from_world(data_root="refer", image_root="images")
        return super().paths()
