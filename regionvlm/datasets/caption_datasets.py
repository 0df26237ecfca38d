"""Training datasets of RegionVLM (docs/method.md): region captions, global captions, the mix.

Every item is one image with one or more ``(text_input, text_output)`` samples:

* region sample: ``text_input`` is the region prompt ``[x y] ...`` of K (10) of a chunk's
  points, ``text_output`` the chunk text, the image cropped by the region-preserving crop;
* global sample: ``text_input`` is ``""`` (the official empty region text), ``text_output``
  an image caption (COCO Karpathy or web shards), the image uncropped.

Both texts go through the caption text processor (as the official code does; it leaves
``[12 34]`` unchanged), the image through the image processor (bicubic resize, CLIP
normalization; no flip).

Determinism: the randomness of a map-style item comes only from
``sample_rng(seed, epoch, index)`` (the runner calls ``dataset.set_epoch(epoch)``); no
global random state is touched, so an item is the same whatever the worker, batch or
resumption. With DataLoader workers, ``set_epoch`` reaches them only when workers are
re-created per epoch (``persistent_workers=False``, the default). Web samples are the
exception (a stream; see ``web_captions``).

``samples_per_image=m`` puts m samples of one image in an item (the image is loaded,
cropped and encoded once): m distinct chunks when the image has that many (with repeats
otherwise), one crop that keeps all their points inside; global items carry m captions
(other COCO captions of the same image when it has them, else repeats), so the mixing
probabilities hold for samples as well as for items. The collater stacks the images and
gives ``image_index`` (sample i uses image ``image_index[i]``), the model's input.
"""

from __future__ import annotations

import bisect
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from regionvlm.common.errors import ConfigError, InputError, MissingFileError
from regionvlm.data.images import open_image
from regionvlm.datasets.protocol import CaptionBatch, unit_key
from regionvlm.datasets.region_annotations import RegionAnnotations, StringTable, load_json_list
from regionvlm.datasets.transforms import DEFAULT_CROP_FRACTION, region_text, sample_crop
from regionvlm.datasets.web_captions import WebCaptionStream
from regionvlm.region import DEFAULT_NUM_POINTS

Processor = Callable[[Any], Any]
OFFICIAL_P_REGION = 0.6
OFFICIAL_P_COCO = 0.1
COCO_LAYOUT = (
    'a JSON list [{"image": "train2014/COCO_train2014_000000000009.jpg", "caption": "...", '
    '"image_id": "coco_9"}] (LAVIS coco_karpathy_train.json), images under `coco_image_root`'
)


def sample_rng(seed: int, epoch: int, index: int, *salt: int) -> np.random.Generator:
    """The generator of one item: a function of (seed, epoch, index) only."""
    for name, v in (("seed", seed), ("epoch", epoch), ("index", index)):
        if int(v) < 0:
            raise ConfigError(f"{name} must be non-negative for seeding, got {v}.")
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([int(seed), int(epoch), int(index), *map(int, salt)]))
    )


def load_image(path: Path, what: str, setting: str) -> Image.Image:
    """Open an RGB image, or stop with the path, where it was referenced and the setting."""
    try:
        return open_image(path, f"image ({what})")
    except MissingFileError:
        raise MissingFileError(
            f"image '{path}' ({what}) not found. Put it there or set `{setting}` to the "
            f"folder the annotation paths are relative to."
        ) from None


def _identity(x: Any) -> Any:
    return x


def _pick_distinct(n: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """m indices of range(n): distinct when n >= m, otherwise all n then random repeats."""
    if m == 1:
        return np.array([int(rng.integers(n))])
    if n >= m:
        return rng.choice(n, size=m, replace=False)
    return np.concatenate([rng.permutation(n), rng.integers(n, size=m - n)])


def collate_caption_batch(items: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """Items (one image, one or more samples each) -> the model's batch:
    ``image [N,3,S,S]``, ``image_index [B]``, ``text_input``/``text_output``/``source`` lists."""
    if not items:
        raise InputError("cannot collate an empty batch.")
    images, index, text_in, text_out, sources = [], [], [], [], []
    for item in items:
        ins, outs = item["text_input"], item["text_output"]
        ins = [ins] if isinstance(ins, str) else list(ins)
        outs = [outs] if isinstance(outs, str) else list(outs)
        if len(ins) != len(outs) or not ins:
            raise InputError(f"an item has {len(ins)} text inputs and {len(outs)} outputs; they must match.")
        index.extend([len(images)] * len(ins))
        images.append(item["image"])
        text_in.extend(ins)
        text_out.extend(outs)
        sources.extend([item.get("source", "")] * len(ins))
    return {
        "image": torch.stack(images),
        "image_index": torch.tensor(index, dtype=torch.long),
        "text_input": text_in,
        "text_output": text_out,
        "source": sources,
    }


class _CaptionDataset(torch.utils.data.Dataset, ABC):
    """Shared plumbing: processors, seed/epoch, samples per image, the collater."""

    collater = staticmethod(collate_caption_batch)

    def __init__(
        self,
        vis_processor: Optional[Processor],
        text_processor: Optional[Processor],
        samples_per_image: int = 1,
        seed: int = 0,
    ):
        if int(samples_per_image) < 1:
            raise ConfigError(f"samples_per_image must be at least 1, got {samples_per_image}.")
        self.vis_processor = vis_processor or _identity
        self.text_processor = text_processor or _identity
        self.samples_per_image = int(samples_per_image)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _item(self, image: Image.Image, ins: List[str], outs: List[str], source: str, **extra: Any) -> Dict[str, Any]:
        ins = [self.text_processor(t) for t in ins]
        outs = [self.text_processor(t) for t in outs]
        one = len(ins) == 1
        return {
            "image": self.vis_processor(image),
            "text_input": ins[0] if one else ins,
            "text_output": outs[0] if one else outs,
            "source": source,
            **extra,
        }

    def __getitem__(self, index: int) -> Dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        return self.sample(index, sample_rng(self.seed, self.epoch, index))

    @abstractmethod
    def sample(self, index: int, rng: np.random.Generator, num_samples: Optional[int] = None) -> Dict[str, Any]:
        """Item ``index`` drawn with ``rng`` (its own generator: the same item every time)."""


class RegionCaptionDataset(_CaptionDataset):
    """Region captions: item ``i`` is image ``i``; a random chunk, K of its points, the crop."""

    def __init__(
        self,
        annotations: Union[RegionAnnotations, Sequence[str]],
        vis_processor: Optional[Processor] = None,
        text_processor: Optional[Processor] = None,
        num_points: int = DEFAULT_NUM_POINTS,
        crop_max_fraction: float = DEFAULT_CROP_FRACTION,
        samples_per_image: int = 1,
        seed: int = 0,
        image_root: Optional[str] = None,
        setting: str = "region_ann",
        image_root_setting: str = "image_root",
        name: str = "localized_narratives",
        split: str = "train",
    ):
        super().__init__(vis_processor, text_processor, samples_per_image, seed)
        self.name, self.split = name, split
        self.image_root_setting = image_root_setting
        self.ann = (
            annotations
            if isinstance(annotations, RegionAnnotations)
            else RegionAnnotations(annotations, image_root=image_root, setting=setting)
        )
        if int(num_points) < 1:
            raise ConfigError(f"num_points must be at least 1, got {num_points}.")
        if not 0.0 <= float(crop_max_fraction) < 0.5:
            raise ConfigError(f"crop_max_fraction must be in [0, 0.5), got {crop_max_fraction}.")
        self.num_points = int(num_points)
        self.crop_max_fraction = float(crop_max_fraction)

    def __len__(self) -> int:
        return self.ann.num_images

    # -- held-out evaluation: the caption task's protocol (regionvlm.datasets.protocol)
    @property
    def eval_name(self) -> str:
        return self.name

    def identity(self) -> Dict[str, Any]:
        return {
            "dataset": self.name,
            "split": self.split,
            "summary": self.ann.summary(),
            "num_points": self.num_points,
            "crop_max_fraction": self.crop_max_fraction,
            "samples_per_image": self.samples_per_image,
            "seed": self.seed,
        }

    def caption_units(self, batch_size: int) -> List[Tuple[str, List[int]]]:
        """Items (an image with its ``samples_per_image`` regions) in units of about
        ``batch_size`` regions; an item is never split."""
        per_unit = max(1, batch_size // self.samples_per_image)
        indices = list(range(len(self)))
        return [(unit_key(unit), unit) for unit in (indices[i : i + per_unit] for i in range(0, len(self), per_unit))]

    def load_captions(self, indices: Sequence[int]) -> CaptionBatch:
        """Each item as the first epoch draws it (its chunk(s), crop and K points)."""
        images, image_index, regions, ids, references = [], [], [], [], []
        for index in indices:
            item = self.sample(index, sample_rng(self.seed, 0, index))
            ins = [item["text_input"]] if isinstance(item["text_input"], str) else item["text_input"]
            outs = [item["text_output"]] if isinstance(item["text_output"], str) else item["text_output"]
            image_index += [len(images)] * len(ins)
            images.append(item["image"])
            regions += ins
            ids += [f"{index}" if len(ins) == 1 else f"{index}/{j}" for j in range(len(ins))]
            references += [[o] for o in outs]
        return CaptionBatch(torch.stack(images), image_index, regions, ids, references)

    def caption_ground_truth(self) -> None:
        return None

    def sample(self, index: int, rng: np.random.Generator, num_samples: Optional[int] = None) -> Dict[str, Any]:
        """Item for image ``index % len(self)`` drawn with ``rng`` (chunks, crop, points)."""
        image_idx = index % len(self)
        m = num_samples or self.samples_per_image
        c0, c1 = self.ann.chunk_range(image_idx)
        chunks = (c0 + _pick_distinct(c1 - c0, m, rng)).tolist()
        points = [self.ann.chunk_points(c) for c in chunks]
        path = self.ann.image_path(image_idx)
        image = load_image(path, f"listed in {self.ann.source(image_idx)}", self.image_root_setting)
        crop = sample_crop(np.concatenate(points), rng, self.crop_max_fraction)
        image = crop.apply_image(image)
        ins = [region_text(crop.apply_points(p), self.num_points, rng) for p in points]
        outs = [self.ann.chunk_text(c) for c in chunks]
        return self._item(image, ins, outs, "region", image_id=self.ann.image_ids[image_idx])


class CocoCaptionDataset(_CaptionDataset):
    """Global captions from LAVIS's ``coco_karpathy_train.json``; item ``i`` is entry ``i``."""

    def __init__(
        self,
        ann_paths: Union[str, Sequence[str]],
        image_root: Optional[str] = None,
        vis_processor: Optional[Processor] = None,
        text_processor: Optional[Processor] = None,
        samples_per_image: int = 1,
        seed: int = 0,
        setting: str = "coco_ann",
        image_root_setting: str = "coco_image_root",
    ):
        super().__init__(vis_processor, text_processor, samples_per_image, seed)
        if isinstance(ann_paths, (str, Path)):
            ann_paths = [ann_paths]
        if not ann_paths:
            raise MissingFileError(f"no COCO caption file configured (set `{setting}`); expected {COCO_LAYOUT}.")
        self.image_root = Path(str(image_root)).expanduser() if image_root else None
        self.image_root_setting = image_root_setting
        images: Dict[str, int] = {}
        entry_image: List[int] = []
        captions: List[str] = []
        for path in ann_paths:
            p, data = load_json_list(path, "COCO caption file", setting, COCO_LAYOUT)
            for k, entry in enumerate(data):
                if (
                    not isinstance(entry, dict)
                    or not isinstance(entry.get("image"), str)
                    or not isinstance(entry.get("caption"), str)
                ):
                    raise InputError(f"{p} entry [{k}]: needs string 'image' and 'caption'; expected {COCO_LAYOUT}.")
                entry_image.append(images.setdefault(entry["image"], len(images)))
                captions.append(entry["caption"])
        if not captions:
            raise InputError(f"COCO caption files {list(map(str, ann_paths))} are empty; expected {COCO_LAYOUT}.")
        self.images = StringTable(images)
        self.captions = StringTable(captions)
        self.entry_image = np.asarray(entry_image, dtype=np.int64)
        self.by_image = np.argsort(self.entry_image, kind="stable")  # entries grouped per image
        self.image_start = np.searchsorted(self.entry_image[self.by_image], np.arange(len(images) + 1))

    def __len__(self) -> int:
        return len(self.captions)

    def sample(self, index: int, rng: np.random.Generator, num_samples: Optional[int] = None) -> Dict[str, Any]:
        """Entry ``index``; with m samples, m - 1 more captions of the same image."""
        entry = index % len(self)
        m = num_samples or self.samples_per_image
        img = int(self.entry_image[entry])
        entries = [entry]
        if m > 1:
            others = [int(e) for e in self.by_image[self.image_start[img] : self.image_start[img + 1]] if e != entry]
            if others:
                entries += [others[j] for j in _pick_distinct(len(others), m - 1, rng)]
            else:
                entries *= m
        rel = Path(self.images[img])
        path = self.image_root / rel if self.image_root is not None and not rel.is_absolute() else rel
        image = load_image(path, "COCO caption image", self.image_root_setting)
        return self._item(image, [""] * m, [self.captions[e] for e in entries], "coco")


class WebCaptionDataset(torch.utils.data.IterableDataset):
    """Global captions streamed from webdataset shards (one pass per epoch unless ``repeat``)."""

    collater = staticmethod(collate_caption_batch)

    def __init__(
        self,
        shards: Union[str, Sequence[str]],
        vis_processor: Optional[Processor] = None,
        text_processor: Optional[Processor] = None,
        samples_per_image: int = 1,
        seed: int = 0,
        shuffle_buffer: int = 0,
        repeat: bool = False,
        setting: str = "web_shards",
    ):
        self.stream = WebCaptionStream(shards, seed=seed, shuffle_buffer=shuffle_buffer, repeat=repeat, setting=setting)
        self.vis_processor = vis_processor or _identity
        self.text_processor = text_processor or _identity
        self.samples_per_image = int(samples_per_image)

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)

    def make_item(self, image: Image.Image, caption: str, m: int) -> Dict[str, Any]:
        ins = [self.text_processor("")] * m
        outs = [self.text_processor(caption)] * m
        one = m == 1
        return {
            "image": self.vis_processor(image),
            "text_input": ins[0] if one else ins,
            "text_output": outs[0] if one else outs,
            "source": "web",
        }

    def __iter__(self):
        for image, caption, _ in self.stream:
            yield self.make_item(image, caption, self.samples_per_image)


class RegionProbSchedule:
    """``epoch -> p_region``: the value of the largest ``by_epoch`` key <= epoch (``p_region``
    before the first key or without a schedule). A class, so datasets stay picklable."""

    def __init__(self, p_region: float, by_epoch: Optional[Mapping[Any, float]] = None):
        _check_prob("p_region", p_region)
        self.default = float(p_region)
        try:
            self.table = sorted((int(k), float(v)) for k, v in dict(by_epoch or {}).items())
        except (TypeError, ValueError):
            raise ConfigError(
                f"region_prob_by_epoch must map epochs to probabilities, got {by_epoch!r} "
                f"(on the command line write it with spaces: {{0: 1.0, 4: 0.6}})."
            ) from None
        for e, v in self.table:
            if e < 0:
                raise ConfigError(f"region_prob_by_epoch: epochs must be >= 0, got {e}.")
            _check_prob(f"region_prob_by_epoch[{e}]", v)
        self.keys = [e for e, _ in self.table]

    def values(self) -> List[float]:
        return [self.default] + [v for _, v in self.table]

    def __call__(self, epoch: int) -> float:
        i = bisect.bisect_right(self.keys, int(epoch)) - 1
        return self.default if i < 0 else self.table[i][1]


def region_prob_schedule(p_region: float, by_epoch: Optional[Mapping[Any, float]]) -> RegionProbSchedule:
    """See :class:`RegionProbSchedule`."""
    return RegionProbSchedule(p_region, by_epoch)


def _check_prob(name: str, value: float) -> None:
    if not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{name} must be a probability in [0, 1], got {value}.")


class RegionSources:
    """Several region-caption datasets (Localized Narratives annotations, region files) as the
    one region source of :class:`MixedCaptionDataset`.

    Without ``weights`` item ``i`` is item ``i`` of their concatenation (each source in
    proportion to its size); with ``weights`` (probabilities, one per source) the source is
    drawn from the item's generator and the item is ``i`` modulo the source's length."""

    def __init__(self, sources: Sequence[Any], weights: Optional[Sequence[float]] = None) -> None:
        if not sources:
            raise ConfigError("a region source needs at least one dataset.")
        self.sources = list(sources)
        self.offsets = np.cumsum([0] + [len(s) for s in self.sources])
        self.weights = None
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != (len(self.sources),) or np.any(w < 0) or not np.isclose(w.sum(), 1.0):
                raise ConfigError(f"region source weights must be {len(self.sources)} probabilities summing to 1.")
            self.weights = w

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def sample(self, index: int, rng: np.random.Generator, num_samples: Optional[int] = None) -> Dict[str, Any]:
        if self.weights is None:
            i = index % len(self)
            s = int(np.searchsorted(self.offsets, i, side="right")) - 1
            return self.sources[s].sample(i - int(self.offsets[s]), rng, num_samples)
        s = int(rng.choice(len(self.sources), p=self.weights))
        return self.sources[s].sample(index % len(self.sources[s]), rng, num_samples)


class MixedCaptionDataset(_CaptionDataset):
    """The RegionVLM training mix: with probability ``p_region`` a region item, otherwise a
    global one, from COCO with probability ``p_coco`` and from the web shards otherwise.

    Item ``i`` draws its branch and everything else from ``sample_rng(seed, epoch, i)``;
    region items use image ``i % len(region)``, COCO items a random entry, web items the
    next sample of this worker's stream. ``epoch_length`` (default: the number of region
    images) sets the items per epoch. ``region_prob_by_epoch`` overrides ``p_region`` from
    the given epochs on (a curriculum)."""

    def __init__(
        self,
        region: Optional[Union[RegionCaptionDataset, RegionSources]],
        coco: Optional[CocoCaptionDataset] = None,
        web: Optional[WebCaptionDataset] = None,
        p_region: float = OFFICIAL_P_REGION,
        p_coco: float = OFFICIAL_P_COCO,
        region_prob_by_epoch: Optional[Mapping[Any, float]] = None,
        samples_per_image: int = 1,
        seed: int = 0,
        epoch_length: Optional[int] = None,
    ):
        super().__init__(None, None, samples_per_image, seed)
        _check_prob("p_coco", p_coco)
        self.region, self.coco, self.web = region, coco, web
        self.p_coco = float(p_coco)
        self.region_prob = region_prob_schedule(p_region, region_prob_by_epoch)
        probs = self.region_prob.values()
        if region is None and any(p > 0 for p in probs):
            raise ConfigError(
                "the mix draws region samples (p_region > 0) but no region annotations are "
                "configured (set `region_ann`)."
            )
        if any(p < 1 for p in probs):
            if self.p_coco > 0 and coco is None:
                raise ConfigError(
                    f"p_coco = {self.p_coco} but no COCO captions are configured (set `coco_ann` "
                    f"and `coco_image_root`, or p_coco: 0)."
                )
            if self.p_coco < 1 and web is None:
                raise ConfigError(
                    f"global samples come from web shards with probability {1 - self.p_coco:g} "
                    f"but `web_shards` is not set; set it, or p_coco: 1.0 for COCO-only "
                    f"global captions (a deviation from the official 0.1)."
                )
        if epoch_length is None:
            if region is None:
                raise ConfigError("set `epoch_length` when the mix has no region annotations.")
            epoch_length = len(region)
        if int(epoch_length) < 1:
            raise ConfigError(f"epoch_length must be positive, got {epoch_length}.")
        self.epoch_length = int(epoch_length)
        self._web_iter: Optional[Any] = None

    def __len__(self) -> int:
        return self.epoch_length

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if self.web is not None and self._web_iter is None:
            self.web.set_epoch(epoch)

    def current_region_prob(self) -> float:
        return self.region_prob(self.epoch)

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state["_web_iter"] = None  # a live stream cannot be pickled into workers; each opens its own
        return state

    def _next_web(self):
        if self._web_iter is None:
            self._web_iter = iter(self.web.stream)
        try:
            return next(self._web_iter)
        except StopIteration:  # a non-repeating stream ran out: start another pass
            self._web_iter = iter(self.web.stream)
            return next(self._web_iter)

    def sample(self, index: int, rng: np.random.Generator, num_samples: Optional[int] = None) -> Dict[str, Any]:
        m = num_samples or self.samples_per_image
        if rng.random() < self.region_prob(self.epoch):
            return self.region.sample(index, rng, m)
        if rng.random() < self.p_coco:
            return self.coco.sample(int(rng.integers(len(self.coco))), rng, m)
        image, caption, _ = self._next_web()
        return self.web.make_item(image, caption, m)
