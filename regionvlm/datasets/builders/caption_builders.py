"""Dataset builders of RegionVLM training (LAVIS style: registered, YAML-configured).

Each builder takes its ``datasets: <name>:`` section and returns ``{"train": dataset}``.
Paths are local (no downloads); relative paths are relative to the working directory.
A missing file stops the run with its path, the setting and the expected layout.

The official training mix, in one section (every key but the paths has this default)::

    datasets:
      regionvlm_mix:
        region_ann:                      # preprocessed annotations (one file or a list)
          - /data/ann/ln_coco_train.json       # python -m regionvlm.data.localized_narratives
          - /data/ann/ln_open_images_train.json
          - /data/ann/vg_regions.json          # python -m regionvlm.data.visual_genome
        image_root: null                 # joins relative image_path entries (null: as written)
        coco_ann: /data/coco/annotations/coco_karpathy_train.json
        coco_image_root: /data/coco/images
        web_shards: /data/laion115m/{00000..10487}.tar   # list, folder, glob or brace pattern
        web_shuffle_buffer: 0            # official: shard order shuffled only
        p_region: 0.6                    # region sample probability (official)
        p_coco: 0.1                      # COCO share of the global samples (official); web the rest
        region_prob_by_epoch: null       # e.g. {0: 1.0, 4: 0.6}: region-only epochs 0-3, then the mix
        epoch_length: null               # items per epoch (null: number of region images)
        num_points: 10                   # K points of the region prompt
        crop_max_fraction: 0.1           # region-preserving crop, per side (0 disables)
        samples_per_image: 1             # several samples of one image per item (encoded once)
        seed: null                       # null: run.seed (else 42)
        vis_processor: {train: {name: region_image_train, image_size: null}}   # null: the model's size
        text_processor: {train: {name: blip_caption, max_words: 50}}

On the command line: ``--options "datasets.regionvlm_mix.region_prob_by_epoch={0: 1.0, 4: 0.6}"``
(with the spaces; YAML reads ``{0:1.0}`` as something else). ``epoch_length`` larger than
the number of region images walks the images again with fresh draws (item ``i`` uses image
``i % images`` and its own generator), which beats repeating batches for small datasets.

``p_region: 1.0`` needs no global source; ``p_coco: 1.0`` (a deviation from the official
mix) needs no web shards. The other builders use the same keys for their part:
``localized_narratives`` / ``visual_genome_regions`` (``ann_paths`` — or ``region_ann`` —,
``image_root``, ``num_points``, ``crop_max_fraction``, ``samples_per_image``, ``seed``),
``coco_karpathy_caption`` (``ann_paths``, ``image_root``, ``samples_per_image``, ``seed``),
``webdataset_caption`` (``shards``, ``shuffle_buffer``, ``repeat``, ``samples_per_image``,
``seed``). Every dataset has ``set_epoch(epoch)`` and a ``collater``.
"""

from __future__ import annotations

from typing import Any, Dict

from omegaconf import OmegaConf

from regionvlm.common.cli import echo
from regionvlm.common.registry import registry
from regionvlm.datasets.builders.base_builder import TRAIN_PROCESSORS, BaseDatasetBuilder
from regionvlm.datasets.caption_datasets import (
    DEFAULT_NUM_POINTS,
    OFFICIAL_P_COCO,
    OFFICIAL_P_REGION,
    CocoCaptionDataset,
    MixedCaptionDataset,
    RegionCaptionDataset,
    WebCaptionDataset,
)
from regionvlm.datasets.transforms import DEFAULT_CROP_FRACTION

REGION_KEYS: Dict[str, Any] = {
    "image_root": None,
    "num_points": DEFAULT_NUM_POINTS,
    "crop_max_fraction": DEFAULT_CROP_FRACTION,
    "samples_per_image": 1,
    "seed": None,
    **TRAIN_PROCESSORS,
}


class CaptionBuilderBase(BaseDatasetBuilder):
    """Training caption builders: paths (a file or a list), the region dataset, a summary line."""

    def _paths(self, *keys: str):
        for key in keys:
            value = self.config.get(key)
            if value:
                return OmegaConf.to_container(value) if not isinstance(value, str) else value, self.setting(key)
        return None, self.setting(keys[0])

    def region_dataset(self, vis, txt, *path_keys: str, split: str = "train") -> RegionCaptionDataset:
        paths, setting = self._paths(*path_keys)
        cfg = self.config
        ds = RegionCaptionDataset(
            paths or [],
            vis,
            txt,
            num_points=cfg.num_points,
            crop_max_fraction=cfg.crop_max_fraction,
            samples_per_image=cfg.samples_per_image,
            seed=self.seed(),
            image_root=cfg.image_root,
            setting=setting,
            image_root_setting=self.setting("image_root"),
            name=self.NAME,
            split=split,
        )
        echo(f"[{self.NAME}] {ds.ann.summary()}")
        return ds


@registry.register_builder("localized_narratives")
class LocalizedNarrativesBuilder(CaptionBuilderBase):
    """Region captions from preprocessed Localized Narratives annotation file(s) (image or video)."""

    NAME = "localized_narratives"
    DEFAULTS = {"ann_paths": None, "region_ann": None, "split": "train", **REGION_KEYS}

    def build_datasets(self) -> Dict[str, Any]:
        """``{split: dataset}``; ``split: val`` (with ``crop_max_fraction: 0``) makes a held-out
        file an evaluation split of the ``region_captioning`` task."""
        vis, txt = self.build_processors("train")
        split = str(self.config.split)
        return {split: self.region_dataset(vis, txt, "ann_paths", "region_ann", split=split)}


@registry.register_builder("visual_genome_regions")
class VisualGenomeRegionsBuilder(LocalizedNarrativesBuilder):
    """Region captions from preprocessed Visual Genome boxes (same annotation shape)."""

    NAME = "visual_genome_regions"


@registry.register_builder("coco_karpathy_caption")
class CocoKarpathyCaptionBuilder(CaptionBuilderBase):
    """Global captions (empty region text) from LAVIS's coco_karpathy_train.json."""

    NAME = "coco_karpathy_caption"
    DEFAULTS = {"ann_paths": None, "image_root": None, "samples_per_image": 1, "seed": None, **TRAIN_PROCESSORS}

    def build_datasets(self) -> Dict[str, Any]:
        vis, txt = self.build_processors("train")
        paths, setting = self._paths("ann_paths")
        return {
            "train": CocoCaptionDataset(
                paths or [],
                self.config.image_root,
                vis,
                txt,
                samples_per_image=self.config.samples_per_image,
                seed=self.seed(),
                setting=setting,
                image_root_setting=self.setting("image_root"),
            )
        }


@registry.register_builder("webdataset_caption")
class WebdatasetCaptionBuilder(CaptionBuilderBase):
    """Global captions streamed from webdataset tar shards (an IterableDataset)."""

    NAME = "webdataset_caption"
    DEFAULTS = {
        "shards": None,
        "shuffle_buffer": 0,
        "repeat": False,
        "samples_per_image": 1,
        "seed": None,
        **TRAIN_PROCESSORS,
    }

    def build_datasets(self) -> Dict[str, Any]:
        vis, txt = self.build_processors("train")
        shards, setting = self._paths("shards")
        cfg = self.config
        return {
            "train": WebCaptionDataset(
                shards or [],
                vis,
                txt,
                samples_per_image=cfg.samples_per_image,
                seed=self.seed(),
                shuffle_buffer=cfg.shuffle_buffer,
                repeat=cfg.repeat,
                setting=setting,
            )
        }


@registry.register_builder("regionvlm_mix")
class RegionVLMMixBuilder(CaptionBuilderBase):
    """The official RegionVLM training mix (see the module docstring for the YAML)."""

    NAME = "regionvlm_mix"
    DEFAULTS = {
        "region_ann": None,
        **REGION_KEYS,
        "coco_ann": None,
        "coco_image_root": None,
        "web_shards": None,
        "web_shuffle_buffer": 0,
        "p_region": OFFICIAL_P_REGION,
        "p_coco": OFFICIAL_P_COCO,
        "region_prob_by_epoch": None,
        "epoch_length": None,
    }

    def build_datasets(self) -> Dict[str, Any]:
        cfg = self.config
        vis, txt = self.build_processors("train")
        seed = self.seed()
        schedule = OmegaConf.to_container(cfg.region_prob_by_epoch) if cfg.region_prob_by_epoch else None
        probs = [float(cfg.p_region), *[float(v) for v in (schedule or {}).values()]]
        region = self.region_dataset(vis, txt, "region_ann") if cfg.region_ann or max(probs) > 0 else None
        needs_global = min(probs) < 1.0
        coco = web = None
        if needs_global and float(cfg.p_coco) > 0:
            paths, setting = self._paths("coco_ann")
            coco = CocoCaptionDataset(
                paths or [],
                cfg.coco_image_root,
                vis,
                txt,
                seed=seed,
                setting=setting,
                image_root_setting=self.setting("coco_image_root"),
            )
        if needs_global and float(cfg.p_coco) < 1 and cfg.web_shards:
            shards, setting = self._paths("web_shards")
            web = WebCaptionDataset(
                shards, vis, txt, seed=seed, shuffle_buffer=cfg.web_shuffle_buffer, repeat=True, setting=setting
            )
        return {
            "train": MixedCaptionDataset(
                region,
                coco,
                web,
                p_region=cfg.p_region,
                p_coco=cfg.p_coco,
                region_prob_by_epoch=schedule,
                samples_per_image=cfg.samples_per_image,
                seed=seed,
                epoch_length=cfg.epoch_length,
            )
        }
