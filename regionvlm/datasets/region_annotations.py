"""Region-caption annotations (``{image_path, sent_to_points}`` per image) in flat arrays.

The official training file holds about a million images with several chunks of 20
points each. Kept as Python dicts and lists it costs gigabytes and, worse, every
DataLoader worker slowly copies it (reference counts touch every object page). Here all
points live in one float64 array, all strings in one UTF-8 byte array with offsets, so
workers share them copy-on-write. Points keep float64 because the official code
quantizes Python floats (``int(100 * v)``).
"""

from __future__ import annotations

from array import array
from itertools import chain
from pathlib import Path
from typing import Any, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from regionvlm.common.errors import InputError, MissingFileError
from regionvlm.common.io import read_json
from regionvlm.processors.text_processors import check_text

ANN_LAYOUT = (
    'a JSON list with one object per image: {"image_path": "<file>", "sent_to_points": '
    '{"<chunk text>": [[x, y], ...]}} (x, y normalized to [0, 1]), as written by '
    "`python -m regionvlm.data.localized_narratives` or `python -m regionvlm.data.visual_genome`"
)


class StringTable:
    """An immutable list of strings stored as one byte array and offsets."""

    def __init__(self, strings: Iterable[str]):
        encoded = [s.encode("utf-8") for s in strings]
        self.offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=self.offsets[1:])
        self.blob = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self.blob[self.offsets[i] : self.offsets[i + 1]].tobytes().decode("utf-8")


def load_json_list(path: str | Path, what: str, setting: str, layout: str) -> Tuple[Path, List[Any]]:
    """Load a JSON list (:func:`regionvlm.common.io.read_json` names the file, the setting and
    the expected layout for every failure); anything but a list is refused the same way."""
    p = Path(str(path)).expanduser()
    data = read_json(p, what, setting, layout)
    if not isinstance(data, list):
        raise InputError(f"{what} '{p}' must hold a JSON list, got {type(data).__name__}. Expected layout: {layout}.")
    return p, data


class RegionAnnotations:
    """All images and chunks of one or more annotation files."""

    def __init__(
        self, ann_paths: Sequence[str | Path], image_root: Optional[str | Path] = None, setting: str = "region_ann"
    ):
        if isinstance(ann_paths, (str, Path)):
            ann_paths = [ann_paths]
        if not ann_paths:
            raise MissingFileError(f"no region annotation file configured (set `{setting}`); expected {ANN_LAYOUT}.")
        self.image_root = Path(str(image_root)).expanduser() if image_root else None
        self.files = [str(p) for p in ann_paths]
        paths: List[str] = []
        ids: List[str] = []
        texts: List[str] = []
        file_of_image: List[int] = []
        chunk_counts: List[int] = []
        point_counts: List[int] = []
        buf = array("d")
        self.skipped_empty = 0  # entries without a usable chunk
        self.skipped_blank = 0  # chunks whose text is empty or blank: never a training target
        for file_idx, path in enumerate(ann_paths):
            p, data = load_json_list(path, "region annotation file", setting, ANN_LAYOUT)
            for k, entry in enumerate(data):
                where = f"{p} entry [{k}]"
                if (
                    not isinstance(entry, dict)
                    or not isinstance(entry.get("image_path"), str)
                    or not entry["image_path"].strip()
                    or not isinstance(entry.get("sent_to_points"), dict)
                ):
                    raise InputError(
                        f"{where}: needs a non-empty string 'image_path' and a dict 'sent_to_points'. "
                        f"Expected layout: {ANN_LAYOUT}."
                    )
                stp = entry["sent_to_points"]
                kept = 0
                for text, pts in stp.items():
                    check_text(text, f"{where} chunk text")
                    if not text.strip():
                        self.skipped_blank += 1
                        continue
                    before = len(buf)
                    try:
                        if not isinstance(pts, list) or not pts or set(map(len, pts)) != {2}:
                            raise ValueError
                        buf.extend(chain.from_iterable(pts))
                    except (TypeError, ValueError):
                        del buf[before:]
                        raise InputError(
                            f"{where} chunk {text!r}: points must be a non-empty list of [x, y] number pairs."
                        ) from None
                    texts.append(text)
                    point_counts.append(len(pts))
                    kept += 1
                if not kept:
                    self.skipped_empty += 1  # the authors' VG file has entries without chunks
                    continue
                paths.append(entry["image_path"])
                ids.append(str(entry.get("image_id", "")))
                file_of_image.append(file_idx)
                chunk_counts.append(kept)
        if not paths:
            raise InputError(
                f"region annotation files {self.files} hold no image with a chunk. Expected layout: {ANN_LAYOUT}."
            )
        self.points = np.frombuffer(buf, dtype=np.float64).reshape(-1, 2) if len(buf) else np.zeros((0, 2))
        self.point_offsets = np.zeros(len(point_counts) + 1, dtype=np.int64)
        np.cumsum(point_counts, out=self.point_offsets[1:])
        self.chunk_offsets = np.zeros(len(chunk_counts) + 1, dtype=np.int64)
        np.cumsum(chunk_counts, out=self.chunk_offsets[1:])
        self.image_paths = StringTable(paths)
        self.image_ids = StringTable(ids)
        self.texts = StringTable(texts)
        self.file_of_image = np.asarray(file_of_image, dtype=np.int32)
        self._check_values()

    def _check_values(self) -> None:
        if not np.all(np.isfinite(self.points)):
            raise InputError(f"region annotations {self.files} contain NaN or infinite coordinates.")
        starts = self.point_offsets[:-1]
        chunk_max = np.maximum.reduceat(self.points.max(axis=1), starts)
        chunk_min = np.minimum.reduceat(self.points.min(axis=1), starts)
        far = (chunk_max > 2.0) | (chunk_min < -1.0)
        if far.mean() > 0.5:
            raise InputError(
                f"region annotations {self.files}: {int(far.sum())} of {far.size} chunks have "
                f"coordinates far outside [0, 1] (e.g. {self.points[starts[np.argmax(far)]].tolist()}); "
                f"points must be normalized (x / width, y / height), not pixels."
            )
        self.chunks_outside_unit = int(((chunk_max > 1.0) | (chunk_min < 0.0)).sum())

    # ------------------------------------------------------------------ access
    @property
    def num_images(self) -> int:
        return len(self.chunk_offsets) - 1

    @property
    def num_chunks(self) -> int:
        return len(self.texts)

    def __len__(self) -> int:
        return self.num_images

    def chunk_range(self, image: int) -> Tuple[int, int]:
        return int(self.chunk_offsets[image]), int(self.chunk_offsets[image + 1])

    def chunk_text(self, chunk: int) -> str:
        return self.texts[chunk]

    def chunk_points(self, chunk: int) -> np.ndarray:
        return self.points[self.point_offsets[chunk] : self.point_offsets[chunk + 1]]

    def image_path(self, image: int) -> Path:
        p = Path(self.image_paths[image])
        return self.image_root / p if self.image_root is not None and not p.is_absolute() else p

    def source(self, image: int) -> str:
        return self.files[int(self.file_of_image[image])]

    def summary(self) -> str:
        return (
            f"region annotations: {self.num_images} images, {self.num_chunks} chunks from "
            f"{len(self.files)} file(s); {self.skipped_empty} entries without chunks and {self.skipped_blank} "
            "chunks with blank text skipped; "
            f"{self.chunks_outside_unit} chunks with points outside [0, 1] (clipped by the crop)"
        )
