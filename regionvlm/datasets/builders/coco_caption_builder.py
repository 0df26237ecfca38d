"""Builder ``coco_caption``: COCO Karpathy evaluation splits in LAVIS's layout, for the
zero-shot captioning task (``run.task: captioning``).

YAML (under ``datasets:``; LAVIS's ``build_info`` schema; the defaults are the test split
under ``$REGIONVLM_DATA``, default ``./data``)::

    coco_caption:
      vis_processor: {eval: {name: blip_image_eval, image_size: null}}   # null: the model's (364)
      build_info:
        annotations:
          test:
            storage: data/coco/annotations/coco_karpathy_test.json   # the images of the split
            gt: data/coco_gt/coco_karpathy_test_gt.json              # COCO-format references
        images:
          storage: data/coco/images/                                 # `image` paths are relative to it

Every image of the split must exist and the split must list exactly the ground truth's
images (each gets one caption): both are checked before the model runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping

from regionvlm.common.errors import ConfigError, MissingFileError
from regionvlm.common.registry import registry
from regionvlm.common.settings import setting
from regionvlm.data.coco_karpathy import check_split_matches_gt, read_caption_gt, read_karpathy_split
from regionvlm.datasets.builders.base_builder import BaseDatasetBuilder, DatasetSettings
from regionvlm.datasets.coco_caption_datasets import CocoCaptionEvalDataset

DATA_ROOT = "${oc.env:REGIONVLM_DATA,data}"  # resolved when the section is parsed


@dataclass(frozen=True)
class CocoCaptionSettings(DatasetSettings):
    build_info: Dict[str, Any] = setting(
        {
            "annotations": {
                "test": {
                    "storage": f"{DATA_ROOT}/coco/annotations/coco_karpathy_test.json",
                    "gt": f"{DATA_ROOT}/coco_gt/coco_karpathy_test_gt.json",
                }
            },
            "images": {"storage": f"{DATA_ROOT}/coco/images/"},
        },
        help="LAVIS's layout: annotations.<split>.{storage, gt}, images.storage",
    )
    REPLACED_ENTRIES = ("build_info.annotations",)  # the user's splits replace the default split


@registry.register_builder("coco_caption")
class CocoCaptionBuilder(BaseDatasetBuilder):
    NAME = "coco_caption"
    Settings = CocoCaptionSettings

    def build_datasets(self) -> Dict[str, CocoCaptionEvalDataset]:
        vis, _ = self.build_processors("eval")
        build_info = self.settings.build_info
        image_root = (build_info.get("images") or {}).get("storage")
        if not image_root:
            raise ConfigError(f"`{self.setting('build_info', 'images', 'storage')}` (the image folder) is not set.")
        out = {}
        for split, files in (build_info.get("annotations") or {}).items():
            where = self.setting("build_info", "annotations", str(split))
            if not isinstance(files, Mapping) or not files.get("storage") or not files.get("gt"):
                raise ConfigError(
                    f"`{where}` needs `storage` (the Karpathy split file) and `gt` (its COCO-format ground truth)."
                )
            images = read_karpathy_split(str(files["storage"]))
            gt = read_caption_gt(str(files["gt"]))
            check_split_matches_gt(images, gt, str(files["storage"]))
            dataset = CocoCaptionEvalDataset(
                images, str(image_root), vis, gt, self.NAME, str(split), str(files["storage"])
            )
            missing = dataset.missing_images()
            if missing:
                raise MissingFileError(
                    f"{len(missing)} image(s) of {self.NAME} {split} are missing (e.g. {missing[:3]}); every "
                    f"ground-truth image needs a caption. Point `{self.setting('build_info', 'images', 'storage')}` "
                    "to the folder the split's `image` paths are relative to."
                )
            out[str(split)] = dataset
        if not out:
            raise ConfigError(f"`{self.setting('build_info', 'annotations')}` lists no split.")
        return out
