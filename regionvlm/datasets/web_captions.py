"""Captioned images from webdataset tar shards (the web-scale global captions of training,
docs/method.md).

A shard is a tar file in the `webdataset` convention: files sharing a key
(``000123.jpg``, ``000123.json``) form one sample. The image is the first of ``.jpg``,
``.jpeg``, ``.png``, ``.webp``; the caption is the ``"caption"`` field of ``.json`` or
else the text of ``.txt`` (what img2dataset writes).

Shards are split over consumers (DDP ranks x DataLoader workers): with at least as many
shards as consumers each consumer reads ``shards[consumer::consumers]``; otherwise every
consumer reads all shards (in its own order) and a warning says samples repeat across
consumers. The shard order is shuffled per pass with a generator seeded by
``(seed, epoch, pass, consumer)``; an optional shuffle buffer mixes samples across
shards. The official code shuffled shard order only, hence ``shuffle_buffer=0`` by
default.

Not deterministic across resumption: the stream position is not checkpointed, and which
web sample a mixed-dataset index receives depends on the worker layout. Everything else in
the caption datasets is keyed by (seed, epoch, index).
"""

from __future__ import annotations

import glob
import json
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from regionvlm.common import dist_utils
from regionvlm.common.errors import MissingFileError, RegionVLMError
from regionvlm.data.images import open_image
from regionvlm.processors.text_processors import check_text

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
SHARD_LAYOUT = (
    "tar files in the webdataset convention: per sample '<key>.jpg' (or .jpeg/.png/.webp) and "
    "'<key>.json' with a \"caption\" field (or '<key>.txt'), e.g. as written by img2dataset"
)
MAX_REPORTED_SKIPS = 10


def expand_shards(spec: Union[str, Sequence[str]], setting: str = "web_shards") -> List[str]:
    """Shard paths from a path, a directory (its ``*.tar``), a glob, a brace pattern
    (``shards/{00000..00099}.tar``) or a list of these; every shard must exist."""
    import braceexpand

    items = [spec] if isinstance(spec, (str, Path)) else list(spec or [])
    if not items:
        raise MissingFileError(f"no web shards configured (set `{setting}`); expected {SHARD_LAYOUT}.")
    out: List[str] = []
    for item in items:
        for path in braceexpand.braceexpand(str(Path(str(item)).expanduser())):
            if Path(path).is_dir():
                found = sorted(glob.glob(str(Path(path) / "*.tar")))
                if not found:
                    raise MissingFileError(
                        f"web shard folder '{path}' (from `{setting}`) holds no *.tar; expected {SHARD_LAYOUT}."
                    )
                out.extend(found)
            elif any(c in path for c in "*?["):
                found = sorted(glob.glob(path))
                if not found:
                    raise MissingFileError(
                        f"no web shard matches '{path}' (from `{setting}`); expected {SHARD_LAYOUT}."
                    )
                out.extend(found)
            elif not Path(path).is_file():
                raise MissingFileError(f"web shard '{path}' not found (set `{setting}`); expected {SHARD_LAYOUT}.")
            else:
                out.append(path)
    return out


def consumer_id() -> Tuple[int, int]:
    """``(consumer, consumers)`` for this process: DDP rank x DataLoader worker."""
    info = torch.utils.data.get_worker_info()
    worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
    rank, world = dist_utils.get_rank(), dist_utils.get_world_size()
    return rank * workers + worker, world * workers


def decode_sample(sample: Dict[str, Any]) -> Tuple[Image.Image, str]:
    """``(RGB image, caption)`` of one grouped tar sample; ValueError says what is missing or
    broken (the stream skips and counts such samples). Images go through
    ``regionvlm.data.images`` like every other image."""
    ext = next((e for e in IMAGE_EXTS if e in sample), None)
    if ext is None:
        raise ValueError(
            f"no image file ({', '.join(IMAGE_EXTS)}) among {sorted(k for k in sample if not k.startswith('__'))}"
        )
    caption = None
    if "json" in sample:
        try:
            meta = json.loads(sample["json"])
        except RecursionError:
            raise ValueError("the .json is nested too deeply") from None
        caption = meta.get("caption") if isinstance(meta, dict) else None
    if caption is None and "txt" in sample:
        caption = sample["txt"].decode("utf-8")
    if not isinstance(caption, str):
        raise ValueError('no caption (.json with "caption" or .txt)')
    try:
        check_text(caption, "the caption")
        image = open_image(bytes(sample[ext]), f"the .{ext} image")  # every PIL mode, bombs refused
    except RegionVLMError as exc:
        raise ValueError(str(exc)) from None
    return image, caption


class WebCaptionStream:
    """Iterator factory over ``(image, caption, key)`` of the shards this consumer owns."""

    def __init__(
        self,
        shards: Union[str, Sequence[str]],
        seed: int = 0,
        shuffle_buffer: int = 0,
        repeat: bool = True,
        setting: str = "web_shards",
    ):
        self.shards = expand_shards(shards, setting)
        self.seed = int(seed)
        self.shuffle_buffer = int(shuffle_buffer)
        self.repeat = bool(repeat)
        self.epoch = 0
        self.skipped = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _my_shards(self, consumer: int, consumers: int) -> List[str]:
        if len(self.shards) >= consumers:
            return self.shards[consumer::consumers]
        warnings.warn(
            f"{len(self.shards)} web shard(s) for {consumers} consumers (ranks x workers): every "
            f"consumer reads all shards, so web samples repeat across consumers.",
            stacklevel=2,
        )
        return list(self.shards)

    def _skip(self, exc: Exception) -> bool:
        self.skipped += 1
        if self.skipped <= MAX_REPORTED_SKIPS or self.skipped % 1000 == 0:
            print(f"[web captions] skipped sample #{self.skipped}: {exc}", file=sys.stderr)
        return True

    def _raw(self, consumer: int, consumers: int) -> Iterator[Tuple[Image.Image, str, str]]:
        from webdataset.tariterators import tarfile_samples

        shards = self._my_shards(consumer, consumers)
        rounds = 0
        while True:
            rng = np.random.default_rng([self.seed, self.epoch, rounds, consumer])
            order = [shards[i] for i in rng.permutation(len(shards))]
            produced = 0
            for sample in tarfile_samples([{"url": s} for s in order], handler=self._skip):
                try:
                    image, caption = decode_sample(sample)
                except (ValueError, OSError, UnicodeDecodeError) as exc:
                    self._skip(ValueError(f"{sample.get('__url__')}:{sample.get('__key__')}: {exc}"))
                    continue
                produced += 1
                yield image, caption, f"{sample.get('__url__')}:{sample.get('__key__')}"
            if produced == 0:
                raise MissingFileError(
                    f"web shards {shards[:3]}{'...' if len(shards) > 3 else ''} yielded no "
                    f"usable sample ({self.skipped} skipped); expected {SHARD_LAYOUT}."
                )
            rounds += 1
            if not self.repeat:
                return

    def __iter__(self) -> Iterator[Tuple[Image.Image, str, str]]:
        consumer, consumers = consumer_id()
        raw = self._raw(consumer, consumers)
        if self.shuffle_buffer <= 1:
            yield from raw
            return
        rng = np.random.default_rng([self.seed, self.epoch, consumer, 1])
        buffer: List[Tuple[Image.Image, str, str]] = []
        for item in raw:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(item)
                continue
            j = int(rng.integers(len(buffer)))
            buffer[j], item = item, buffer[j]
            yield item
        order = rng.permutation(len(buffer))
        for j in order:
            yield buffer[j]
