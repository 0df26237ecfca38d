"""Registered builders for the zero-shot VQA benchmarks: ``coco_vqa`` (alias ``vqav2``),
``ok_vqa`` and ``gqa``.

A dataset entry follows LAVIS's schema, so a LAVIS user's files and YAML carry over::

    datasets:
      coco_vqa:
        type: eval
        skip_missing_images: false          # true: skip questions whose image is missing (listed in results)
        vis_processor: {eval: {name: blip_image_eval, image_size: 364}}
        text_processor: {eval: {name: blip_question}}
        build_info:
          annotations:
            val:
              storage:                      # by position, as LAVIS:
                - .../vqa_val_eval.json     # 0: the questions (LAVIS list layout), required
                - .../answer_list.json      # 1: LAVIS's answer list: only used by ranking inference,
                                            #    which zero-shot evaluation does not use; not read
                - .../v2_OpenEnded_mscoco_val2014_questions.json   # 2: official questions  } scoring, as
                - .../v2_mscoco_val2014_annotations.json           # 3: official annotations} LAVIS does
          images:
            storage: .../coco/images/       # `image` paths of entry 0 are relative to it

With entries 2 and 3 (the default), answers, answer types and question types come from
the official files, exactly what LAVIS scores against; listed files must exist. With
only entry 0, the human answers of its ``answer`` lists are used and per-type accuracy
is not available. GQA needs one file (``testdev_balanced_questions.json``).

Default locations (``$REGIONVLM_DATA``, default ``./data``; relative paths resolve
against the working directory)::

    coco/annotations/{vqa_val_eval.json, answer_list.json,
                      v2_OpenEnded_mscoco_val2014_questions.json, v2_mscoco_val2014_annotations.json}
    coco/images/val2014/COCO_val2014_*.jpg
    okvqa/annotations/{vqa_val_eval.json, answer_list.json,
                       OpenEnded_mscoco_val2014_questions.json, mscoco_val2014_annotations.json}
    gqa/annotations/testdev_balanced_questions.json
    gqa/images/*.jpg

Defaults live here (``default_config_path`` returns None) and are merged under the
user's entry when the builder is created; splits the user lists under
``build_info.annotations`` replace the default split instead of adding to it.
"""

from __future__ import annotations

from dataclasses import dataclass, make_dataclass
from typing import Any, Dict, List, Mapping

from regionvlm.common.errors import ConfigError
from regionvlm.common.registry import registry
from regionvlm.common.settings import setting
from regionvlm.data.vqa import (
    attach_official_references,
    check_images,
    read_gqa_questions,
    read_lavis_vqa_questions,
    read_official_references,
)
from regionvlm.datasets.builders.base_builder import BaseDatasetBuilder, DatasetSettings
from regionvlm.datasets.vqa_datasets import VQAEvalDataset

DATA_ROOT = "${oc.env:REGIONVLM_DATA,data}"


@dataclass(frozen=True)
class VQADatasetSettings(DatasetSettings):
    text_processor: Dict[str, Any] = setting({"eval": {"name": "blip_question"}})
    skip_missing_images: bool = setting(False, help="skip questions whose image is missing (listed in results)")
    build_info: Dict[str, Any] = setting({}, help="annotations.<split>.storage (files), images.storage (folder)")
    REPLACED_ENTRIES = ("build_info.annotations",)  # the user's splits replace the default split


def vqa_settings(name: str, folder: str, split: str, files: List[str], images: str = "coco/images/") -> type:
    """The settings class of one benchmark: its default files under ``$REGIONVLM_DATA``."""
    default = {
        "annotations": {split: {"storage": [f"{DATA_ROOT}/{folder}/annotations/{f}" for f in files]}},
        "images": {"storage": f"{DATA_ROOT}/{images}"},
    }
    field = setting(default, help="annotations.<split>.storage (files), images.storage (folder)")
    return make_dataclass(
        f"{name}Settings", [("build_info", Dict[str, Any], field)], bases=(VQADatasetSettings,), frozen=True
    )


class VQAEvalBuilder(BaseDatasetBuilder):
    """Builds the evaluation splits named under ``build_info.annotations``."""

    metric = "vqa"

    def _storage(self, split: str) -> List[str]:
        ann = self.settings.build_info["annotations"][split]
        storage = ann.get("storage", None) if isinstance(ann, Mapping) else None
        if isinstance(storage, str):
            storage = [storage]
        if not isinstance(storage, list) or not storage:
            raise ConfigError(
                f"`{self.setting('build_info', 'annotations', split, 'storage')}` must list the "
                "annotation file(s) of that split."
            )
        return [str(s) for s in storage]

    def build_datasets(self) -> Dict[str, VQAEvalDataset]:
        build_info = self.settings.build_info
        if not build_info.get("annotations"):
            raise ConfigError(f"`{self.setting('build_info', 'annotations')}` lists no split.")
        images = build_info.get("images", None)
        vis_root = images.get("storage", None) if images is not None else None
        if not vis_root:
            raise ConfigError(f"`{self.setting('build_info', 'images', 'storage')}` (the image folder) is not set.")
        vis_processor, text_processor = self.build_processors("eval")
        out = {}
        for split in build_info["annotations"]:
            items = self.read_split(split, self._storage(split))
            items, skipped = check_images(
                items,
                vis_root,
                self.settings.skip_missing_images,
                self.setting("build_info", "images", "storage"),
                self.setting("skip_missing_images"),
            )
            out[split] = VQAEvalDataset(
                items, vis_root, vis_processor, text_processor, self.metric, self.NAME, split, skipped
            )
        return out

    def read_split(self, split: str, storage: List[str]):
        setting = self.setting("build_info", "annotations", split, "storage")
        if len(storage) >= 4:
            items = read_lavis_vqa_questions(storage[0], need_answers=False, setting=setting)
            question_ids, refs = read_official_references(storage[2], storage[3], setting)
            return attach_official_references(items, question_ids, refs, f"'{storage[0]}'")
        if len(storage) == 3:
            raise ConfigError(
                f"`{setting}` lists 3 files; give the question list alone, or with "
                "[answer list, official questions, official annotations] (4 files, LAVIS's order)."
            )
        return read_lavis_vqa_questions(storage[0], need_answers=True, setting=setting)


@registry.register_builder("coco_vqa")
class COCOVQABuilder(VQAEvalBuilder):
    """VQAv2 (val) in LAVIS's ``coco_vqa`` layout."""

    NAME = "coco_vqa"
    _FILES = [
        "vqa_val_eval.json",
        "answer_list.json",
        "v2_OpenEnded_mscoco_val2014_questions.json",
        "v2_mscoco_val2014_annotations.json",
    ]
    TYPES = dict.fromkeys(("default", "eval"), vqa_settings("COCOVQA", "coco", "val", _FILES))


@registry.register_builder("vqav2")
class VQAv2Builder(COCOVQABuilder):
    """The same as ``coco_vqa`` under the benchmark's own name."""

    NAME = "vqav2"


@registry.register_builder("ok_vqa")
class OKVQABuilder(VQAEvalBuilder):
    """OK-VQA (test = the COCO val2014 questions) in LAVIS's ``ok_vqa`` layout."""

    NAME = "ok_vqa"
    _FILES = [
        "vqa_val_eval.json",
        "answer_list.json",
        "OpenEnded_mscoco_val2014_questions.json",
        "mscoco_val2014_annotations.json",
    ]
    TYPES = {"default": vqa_settings("OKVQA", "okvqa", "test", _FILES)}


_GQA = vqa_settings("GQA", "gqa", "val", ["testdev_balanced_questions.json"], images="gqa/images/")


@registry.register_builder("gqa")
class GQABuilder(VQAEvalBuilder):
    """GQA balanced test-dev (LAVIS calls this split ``val``), scored by exact match."""

    NAME = "gqa"
    metric = "gqa"
    TYPES = dict.fromkeys(("default", "balanced_testdev"), _GQA)

    def read_split(self, split: str, storage: List[str]):
        return read_gqa_questions(storage[0], self.setting("build_info", "annotations", split, "storage"))
