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
        region_files: null               # your region files with captions (docs/predict.md format),
        region_files_image_root: null    #   mixed into the region samples (null root: each file's folder)
        p_region_files: null             # their share of the region samples (null: in proportion to sizes)
        num_points: null                 # K points of the region prompt (null: the model's, 10)
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

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from regionvlm.common.cli import echo
from regionvlm.common.registry import registry
from regionvlm.common.settings import setting
from regionvlm.datasets.builders.base_builder import TRAIN_TEXT, TRAIN_VIS, BaseDatasetBuilder, DatasetSettings
from regionvlm.datasets.caption_datasets import (
    OFFICIAL_P_COCO,
    OFFICIAL_P_REGION,
    CocoCaptionDataset,
    MixedCaptionDataset,
    RegionCaptionDataset,
    RegionSources,
    WebCaptionDataset,
)
from regionvlm.datasets.region_files import RegionFileCaptionDataset, RegionFileSet, report_kept
from regionvlm.datasets.transforms import DEFAULT_CROP_FRACTION

PathList = Union[str, List[str], None]


@dataclass(frozen=True)
class TrainingDatasetSettings(DatasetSettings):
    """Keys of every training caption builder."""

    vis_processor: Dict[str, Any] = setting(TRAIN_VIS, help="{train: {name: ..., image_size: null}}")
    text_processor: Dict[str, Any] = setting(TRAIN_TEXT, help="{train: {name: ..., max_words: ...}}")
    samples_per_image: int = setting(1, min=1, help="samples of one image per item (encoded once)")
    seed: Optional[int] = setting(None, min=0, help="null: run.seed")


@dataclass(frozen=True)
class RegionDatasetSettings(TrainingDatasetSettings):
    """Region captions (Localized Narratives, Visual Genome): the region keys."""

    image_root: Optional[str] = setting(None, help="joins relative image_path entries (null: as written)")
    num_points: Optional[int] = setting(None, min=1, help="K points of the region prompt (null: the model's)")
    crop_max_fraction: float = setting(DEFAULT_CROP_FRACTION, min=0.0, max=0.4999, help="region-preserving crop")


@dataclass(frozen=True)
class LocalizedNarrativesSettings(RegionDatasetSettings):
    ann_paths: PathList = setting(None, help="preprocessed annotation file(s)")
    region_ann: PathList = setting(None, help="the same as ann_paths (the mix's name)")
    split: str = setting("train", help="val/test: a held-out file for the captioning task")


@dataclass(frozen=True)
class CocoKarpathyCaptionSettings(TrainingDatasetSettings):
    ann_paths: PathList = setting(None, help="LAVIS's coco_karpathy_train.json")
    image_root: Optional[str] = setting(None)


@dataclass(frozen=True)
class WebdatasetCaptionSettings(TrainingDatasetSettings):
    shards: PathList = setting(None, help="list, folder, glob or brace pattern of tar shards")
    shuffle_buffer: int = setting(0, min=0)
    repeat: bool = setting(False)


@dataclass(frozen=True)
class RegionVLMMixSettings(RegionDatasetSettings):
    region_ann: PathList = setting(None, help="preprocessed region annotation file(s)")
    coco_ann: PathList = setting(None, help="LAVIS's coco_karpathy_train.json")
    coco_image_root: Optional[str] = setting(None)
    web_shards: PathList = setting(None)
    web_shuffle_buffer: int = setting(0, min=0)
    p_region: float = setting(OFFICIAL_P_REGION, min=0.0, max=1.0, help="region sample probability (official 0.6)")
    p_coco: float = setting(OFFICIAL_P_COCO, min=0.0, max=1.0, help="COCO share of global samples (official 0.1)")
    region_prob_by_epoch: Optional[Dict[int, float]] = setting(None, help="e.g. {0: 1.0, 4: 0.6}")
    epoch_length: Optional[int] = setting(None, min=1, help="items per epoch (null: number of region images)")
    region_files: PathList = setting(None, help="your region files with captions (docs/predict.md format)")
    region_files_image_root: Optional[str] = setting(
        None, help="joins their relative image paths (null: each file's folder)"
    )
    p_region_files: Optional[float] = setting(
        None, min=0.0, max=1.0, help="share of region samples from region_files (null: in proportion to sizes)"
    )


def region_file_set(
    path: str, image_root: Optional[str], coco_region: str, on_error: str, setting: str
) -> RegionFileSet:
    """A region file checked against its images; its bad lines stop the build or are skipped."""
    regions = RegionFileSet(path, image_root, coco_region=coco_region, what=f"region file (`{setting}`)")
    if on_error == "stop":
        regions.stop_on_problems(
            f"Fix these lines (python -m regionvlm.predict --check '{path}'), or skip them with on_error: skip."
        )
    return regions


def training_regions(
    builder: BaseDatasetBuilder,
    paths: Union[str, Sequence[str]],
    image_root: Optional[str],
    coco_region: str,
    on_error: str,
    setting: str,
    vis: Any,
    txt: Any,
) -> Any:
    """The training dataset of one or more region files (their concatenation)."""
    s = builder.settings
    parts: List[RegionFileCaptionDataset] = []
    for path in [paths] if isinstance(paths, str) else list(paths):
        regions = region_file_set(path, image_root, coco_region, on_error, setting)
        dataset = RegionFileCaptionDataset(
            regions,
            vis,
            txt,
            num_points=builder.points(),
            crop_max_fraction=s.crop_max_fraction,
            samples_per_image=s.samples_per_image,
            seed=builder.seed(),
            name=builder.NAME,
        )
        report_kept(builder.NAME, "train", regions, len(dataset), dataset.uncaptioned)
        parts.append(dataset)
    return parts[0] if len(parts) == 1 else RegionSources(parts)


class CaptionBuilderBase(BaseDatasetBuilder):
    """Training caption builders: paths (a file or a list), the region dataset, a summary line."""

    def _paths(self, *keys: str) -> Tuple[PathList, str]:
        """The first of ``keys`` that is set, and its setting's name (for messages)."""
        for key in keys:
            value = getattr(self.settings, key)
            if value:
                return value, self.setting(key)
        return None, self.setting(keys[0])

    def region_dataset(self, vis, txt, *path_keys: str, split: str = "train") -> RegionCaptionDataset:
        paths, setting = self._paths(*path_keys)
        s = self.settings
        ds = RegionCaptionDataset(
            paths or [],
            vis,
            txt,
            num_points=self.points(),
            crop_max_fraction=s.crop_max_fraction,
            samples_per_image=s.samples_per_image,
            seed=self.seed(),
            image_root=s.image_root,
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
    Settings = LocalizedNarrativesSettings

    def build_datasets(self) -> Dict[str, Any]:
        """``{split: dataset}``; ``split: val`` (with ``crop_max_fraction: 0``) makes a held-out
        file an evaluation split of the ``region_captioning`` task."""
        vis, txt = self.build_processors("train")
        split = self.settings.split
        return {split: self.region_dataset(vis, txt, "ann_paths", "region_ann", split=split)}


@registry.register_builder("visual_genome_regions")
class VisualGenomeRegionsBuilder(LocalizedNarrativesBuilder):
    """Region captions from preprocessed Visual Genome boxes (same annotation shape)."""

    NAME = "visual_genome_regions"


@registry.register_builder("coco_karpathy_caption")
class CocoKarpathyCaptionBuilder(CaptionBuilderBase):
    """Global captions (empty region text) from LAVIS's coco_karpathy_train.json."""

    NAME = "coco_karpathy_caption"
    Settings = CocoKarpathyCaptionSettings

    def build_datasets(self) -> Dict[str, Any]:
        vis, txt = self.build_processors("train")
        paths, setting = self._paths("ann_paths")
        s = self.settings
        dataset = CocoCaptionDataset(
            paths or [],
            s.image_root,
            vis,
            txt,
            samples_per_image=s.samples_per_image,
            seed=self.seed(),
            setting=setting,
            image_root_setting=self.setting("image_root"),
        )
        return {"train": dataset}


@registry.register_builder("webdataset_caption")
class WebdatasetCaptionBuilder(CaptionBuilderBase):
    """Global captions streamed from webdataset tar shards (an IterableDataset)."""

    NAME = "webdataset_caption"
    Settings = WebdatasetCaptionSettings

    def build_datasets(self) -> Dict[str, Any]:
        vis, txt = self.build_processors("train")
        shards, setting = self._paths("shards")
        s = self.settings
        dataset = WebCaptionDataset(
            shards or [],
            vis,
            txt,
            samples_per_image=s.samples_per_image,
            seed=self.seed(),
            shuffle_buffer=s.shuffle_buffer,
            repeat=s.repeat,
            setting=setting,
        )
        return {"train": dataset}


@registry.register_builder("regionvlm_mix")
class RegionVLMMixBuilder(CaptionBuilderBase):
    """The official RegionVLM training mix (see the module docstring for the YAML)."""

    NAME = "regionvlm_mix"
    Settings = RegionVLMMixSettings

    def build_datasets(self) -> Dict[str, Any]:
        s = self.settings
        vis, txt = self.build_processors("train")
        seed = self.seed()
        schedule = s.region_prob_by_epoch
        probs = [s.p_region, *(schedule or {}).values()]
        region = self.region_sources(vis, txt) if s.region_ann or s.region_files or max(probs) > 0 else None
        needs_global = min(probs) < 1.0
        coco = web = None
        if needs_global and s.p_coco > 0:
            paths, setting = self._paths("coco_ann")
            coco = CocoCaptionDataset(
                paths or [],
                s.coco_image_root,
                vis,
                txt,
                seed=seed,
                setting=setting,
                image_root_setting=self.setting("coco_image_root"),
            )
        if needs_global and s.p_coco < 1 and s.web_shards:
            shards, setting = self._paths("web_shards")
            web = WebCaptionDataset(
                shards, vis, txt, seed=seed, shuffle_buffer=s.web_shuffle_buffer, repeat=True, setting=setting
            )
        mix = MixedCaptionDataset(
            region,
            coco,
            web,
            p_region=s.p_region,
            p_coco=s.p_coco,
            region_prob_by_epoch=schedule,
            samples_per_image=s.samples_per_image,
            seed=seed,
            epoch_length=s.epoch_length,
        )
        return {"train": mix}

    def region_sources(self, vis: Any, txt: Any) -> Any:
        """Localized Narratives annotations (``region_ann``), region files (``region_files``), or both."""
        s = self.settings
        if not s.region_files:
            return self.region_dataset(vis, txt, "region_ann")  # no file at all: its missing-file error
        files = training_regions(
            self, s.region_files, s.region_files_image_root, "auto", "stop", self.setting("region_files"), vis, txt
        )
        if not s.region_ann:
            return files
        narratives = self.region_dataset(vis, txt, "region_ann")
        weights = None if s.p_region_files is None else [1.0 - s.p_region_files, s.p_region_files]
        return RegionSources([narratives, files], weights)
