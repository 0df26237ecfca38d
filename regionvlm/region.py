"""Regions and their text prompts (docs/method.md, "Region prompts").

A :class:`Region` is what a user points at: click points, a box, an ordered trace
(scribble, mouse path) or a binary mask, or nothing (the whole image). The model sees
it as text: ``K`` points, each ``[x y]`` with ``x = int(100 * x_normalized)``, joined by
single spaces — e.g. ``[12 34] [15 40] [60 71]``.

Coordinates: constructors take *normalized* ``(x, y)`` in ``[0, 1]`` by default; pass
``image_size=(width, height)`` to give *pixel* coordinates instead. Sampling always takes
an explicit ``numpy.random.Generator`` so that a seed reproduces a prompt.

Quantization follows the official code literally: ``int(100 * v)`` evaluated in the dtype
the points are stored in. Mask samples are float32 (the official RIS/VCR code divides
float32 pixel indices), traces, boxes and clicks are float64 (the official training code
uses Python floats). The two differ only on exact boundaries (e.g. ``29/100``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from regionvlm.common.errors import ConfigError, InputError

DEFAULT_NUM_POINTS = 10
# Each point takes at least 4 Q-Former tokens ("[", "12", "34", "]") of BERT's 512 positions,
# so no more than 128 points of a region text can ever reach the model.
MAX_NUM_POINTS = 128
MAX_SAMPLED_POINTS = 1_000_000  # a guard for sample_points (memory), far above any real use
MAX_PIXELS_ENV = "REGIONVLM_MAX_IMAGE_PIXELS"
KINDS = ("points", "box", "trace", "mask", "global")
_DATA_LAYOUT = {
    "points": "an (N, 2) float array in [0, 1]",
    "trace": "an (N, 2) float array in [0, 1]",
    "box": "a float array (x0, y0, x1, y1) in [0, 1]",
    "mask": "a non-empty 2-D bool array",
    "global": "no data",
}

ArrayLike = Union[np.ndarray, Sequence[Sequence[float]], Sequence[float]]


def format_points(points: np.ndarray) -> str:
    """Render normalized points as the official region text ``[x y] [x y] ...``.

    Points must be an (N, 2) array of finite values in [0, 1]; anything else would print
    garbage (``int(100 * nan)``) or coordinates the model never saw (``[150 20]``)."""
    pts = np.asarray(points)
    if pts.size == 0:
        return ""
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise InputError(f"region points must be an (N, 2) array of (x, y), got shape {pts.shape}.")
    if not (np.issubdtype(pts.dtype, np.floating) or np.issubdtype(pts.dtype, np.integer)):
        raise InputError(f"region points must be numbers, got dtype {pts.dtype}.")
    if not np.issubdtype(pts.dtype, np.floating):
        pts = pts.astype(np.float64)
    if not np.all(np.isfinite(pts)) or pts.min() < 0 or pts.max() > 1:
        raise InputError(
            f"region points must be finite and normalized to [0, 1], got {pts.tolist()[:4]}"
            f"{' ...' if len(pts) > 4 else ''}."
        )
    scaled = (pts * pts.dtype.type(100)).astype(np.int64)
    return " ".join(f"[{x} {y}]" for x, y in scaled.tolist())


def select_in_order(num_available: int, k: int, rng: Optional[np.random.Generator]) -> np.ndarray:
    """Indices of K points of an ordered trace: K distinct random ones kept in trace order;
    with fewer than K points (or ``rng=None``, the official evaluation rule) K evenly spaced
    indices ``int((n - 1) / (k - 1) * j)``, repeating points when ``n < K``."""
    if num_available <= 0:
        raise InputError("cannot select points from an empty trace.")
    if k <= 0:
        raise InputError(f"number of points must be positive, got {k}.")
    if k == 1:
        return np.zeros(1, dtype=np.int64) if rng is None else np.sort(rng.choice(num_available, 1))
    if rng is None or num_available < k:
        return np.array([int((num_available - 1) / (k - 1) * j) for j in range(k)], dtype=np.int64)
    return np.sort(rng.choice(num_available, size=k, replace=False))


def max_image_pixels() -> Optional[int]:
    """The largest image or mask the project decodes, in pixels (None: no limit): PIL's
    ``Image.MAX_IMAGE_PIXELS`` (a guard against decompression bombs, about 89 million), which
    the environment variable ``REGIONVLM_MAX_IMAGE_PIXELS`` sets (``0``: no limit) so that
    PIL's own guard agrees with the project's."""
    from PIL import Image

    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if raw:
        try:
            value = int(raw)
        except ValueError:
            value = -1
        if value < 0:
            raise ConfigError(f"{MAX_PIXELS_ENV}={raw!r} must be a whole number of pixels (0 means no limit).")
        Image.MAX_IMAGE_PIXELS = value or None
    return Image.MAX_IMAGE_PIXELS


def check_pixel_count(width: int, height: int, what: str) -> None:
    """Refuse 0-pixel images and images or masks above :func:`max_image_pixels`, before any
    memory is allocated for them."""
    if width <= 0 or height <= 0:
        raise InputError(f"{what} is {width}x{height} pixels; an image needs at least one pixel.")
    limit = max_image_pixels()
    if limit is not None and width * height > limit:
        raise InputError(
            f"{what} is {width}x{height} = {width * height:,} pixels, more than the {limit:,} allowed (a guard "
            "against decompression bombs: small files that expand to gigabytes). Downscale the image, or, if "
            f"you trust it, raise the limit with the environment variable {MAX_PIXELS_ENV}=N (0: no limit)."
        )


def check_num_points(k: Any, limit: int = MAX_NUM_POINTS) -> int:
    """``k`` (points per region) as an int in ``1..limit``, or InputError."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= limit:
        raise InputError(f"number of points must be a positive whole number (at most {limit}), got {k!r}.")
    return int(k)


def check_seed(seed: Any, what: str = "seed") -> int:
    """A seed as a non-negative whole number (numpy's seeding refuses negative ones deep
    inside a later call), or InputError naming the argument."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"{what} must be a non-negative whole number, got {seed!r}.")
    return int(seed)


def _as_points(values: ArrayLike, image_size: Optional[Tuple[int, int]], what: str) -> np.ndarray:
    try:
        pts = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{what}: expected numbers, got {values!r}.") from None
    if pts.ndim == 1 and pts.size == 2:
        pts = pts[None, :]
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] == 0:
        raise InputError(f"{what}: expected a non-empty list of (x, y) pairs, got shape {pts.shape}.")
    return _normalize(pts, image_size, what)


def _normalize(pts: np.ndarray, image_size: Optional[Tuple[int, int]], what: str) -> np.ndarray:
    if not np.all(np.isfinite(pts)):
        raise InputError(f"{what}: coordinates contain NaN or infinity: {pts.tolist()}.")
    if image_size is not None:
        width, height = _check_size(image_size)
        if np.any(pts < 0) or np.any(pts[..., 0] > width) or np.any(pts[..., 1] > height):
            raise InputError(
                f"{what}: pixel coordinates must lie inside the {width}x{height} image, got {pts.tolist()}."
            )
        pts = pts / np.array([width, height], dtype=np.float64)
    elif np.any(pts < 0) or np.any(pts > 1):
        raise InputError(
            f"{what}: normalized coordinates must be in [0, 1], got {pts.tolist()}. "
            "Pass image_size=(width, height) if these are pixel coordinates."
        )
    return pts


def _check_size(image_size: Tuple[int, int]) -> Tuple[int, int]:
    """``(width, height)`` as positive whole numbers of pixels (``10.7`` is refused, not cut)."""
    try:
        width, height = image_size
        exact = [float(v) for v in (width, height)]
    except (TypeError, ValueError):
        raise InputError(f"image_size must be (width, height) in pixels, got {image_size!r}.") from None
    if isinstance(image_size, (str, bytes)) or not all(np.isfinite(v) and v == int(v) for v in exact):
        raise InputError(f"image_size must be (width, height) in whole pixels, got {image_size!r}.")
    width, height = int(exact[0]), int(exact[1])
    if width <= 0 or height <= 0:
        raise InputError(f"image_size must be positive, got {image_size!r}.")
    return width, height


def _counts_from_string(counts: bytes) -> np.ndarray:
    """The run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``):
    each number is 5-bit groups (chars ``'0' + group``, bit 0x20 = more groups follow, the
    last group's bit 0x10 = negative); from the fourth number on, each one is a difference
    to the number two places before it. ValueError if the string is not such a sequence."""
    c = np.frombuffer(counts, dtype=np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return np.zeros(0, dtype=np.int64)
    if c.min() < 0 or c.max() > 63:
        raise ValueError("it holds characters outside the COCO RLE alphabet ('0'..'o')")
    more = (c & 0x20) != 0
    if more[-1]:
        raise ValueError("it ends in the middle of a number")
    ends = np.flatnonzero(~more)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > 7:
        raise ValueError("it holds a number longer than 32 bits")
    number = np.repeat(np.arange(ends.size), lengths)
    shift = 5 * (np.arange(c.size) - starts[number])
    values = np.zeros(ends.size, dtype=np.int64)
    np.add.at(values, number, (c & 0x1F) << shift)
    negative = (c[ends] & 0x10) != 0
    values[negative] -= np.int64(1) << (5 * lengths[negative])
    runs = values.copy()
    runs[1::2] = np.cumsum(values[1::2])
    runs[2::2] = np.cumsum(values[2::2])
    return runs


def whole_number(value: Any, strings: bool = False) -> Optional[int]:
    """``value`` as an int if it is a whole number (not a bool; with ``strings``, also a string
    of digits such as a JSON object key), else None: how the readers accept ids and sizes."""
    if strings and isinstance(value, str):  # ASCII digits only: str.isdigit() also takes "²"
        return int(value) if re.fullmatch(r"\s*-?[0-9]+\s*", value) else None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    if not np.isfinite(value) or value != int(value):
        return None
    return int(value)


def validate_rle(rle: Any, what: str = "RLE", size: Optional[Tuple[int, int]] = None) -> Dict[str, Any]:
    """A checked COCO RLE ``{"size": [h, w], "counts": bytes}`` (compressed), ready for
    pycocotools. ``counts`` may be a list of run lengths (uncompressed RLE) or the compressed
    string; either must describe exactly ``h * w`` pixels with non-negative runs (pycocotools
    decodes a short or corrupt RLE into garbage pixels without a word). ``size=(h, w)``
    also checks the size; a size above the decompression-bomb limit is refused before any
    memory is allocated."""
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        keys = sorted(map(str, rle)) if isinstance(rle, Mapping) else type(rle).__name__
        raise InputError(f"{what}: a COCO RLE is a dict with 'size' [height, width] and 'counts', got {keys}.")
    raw_size = rle["size"]
    dims = [whole_number(v) for v in raw_size] if isinstance(raw_size, (list, tuple)) else []
    if len(dims) != 2 or any(d is None or d <= 0 for d in dims):
        raise InputError(f"{what}: RLE 'size' must be [height, width] (positive whole numbers), got {raw_size!r}.")
    height, width = dims
    if size is not None and (height, width) != tuple(size):
        raise InputError(f"{what}: RLE size {[height, width]} differs from the image size {list(size)}.")
    check_pixel_count(width, height, f"{what} (RLE size)")
    counts = rle["counts"]
    if isinstance(counts, (list, tuple)):
        runs = [whole_number(v) for v in counts]
        if any(r is None or r < 0 for r in runs):
            raise InputError(
                f"{what}: uncompressed RLE 'counts' must be non-negative whole numbers, "
                f"got {list(counts)[:8]}{' ...' if len(counts) > 8 else ''}."
            )
        total = sum(runs)
    elif isinstance(counts, (str, bytes)):
        try:
            data = counts.encode("ascii") if isinstance(counts, str) else counts
            runs_array = _counts_from_string(data)
        except (UnicodeEncodeError, ValueError) as exc:
            reason = "it holds non-ASCII characters" if isinstance(exc, UnicodeEncodeError) else str(exc)
            raise InputError(f"{what}: the compressed RLE 'counts' is corrupt ({reason}).") from None
        if runs_array.size and runs_array.min() < 0:
            raise InputError(f"{what}: the compressed RLE 'counts' is corrupt (it decodes to a negative run).")
        total = int(runs_array.sum())
    else:
        raise InputError(
            f"{what}: RLE 'counts' must be a list of run lengths or a compressed string, got {type(counts).__name__}."
        )
    if total != height * width:
        raise InputError(
            f"{what}: the RLE runs cover {total} pixels, but its size {height}x{width} has "
            f"{height * width}; the RLE is truncated or belongs to another image size."
        )
    if isinstance(counts, (list, tuple)):
        from pycocotools import mask as mask_utils

        return mask_utils.frPyObjects({"size": [height, width], "counts": [int(r) for r in runs]}, height, width)
    return {"size": [height, width], "counts": data}


def mask_from_rle(rle: Mapping[str, Any], what: str = "mask") -> np.ndarray:
    """Decode a COCO RLE (``{"size": [h, w], "counts": ...}``) into a bool array (checked
    by :func:`validate_rle`)."""
    from pycocotools import mask as mask_utils

    return np.asarray(mask_utils.decode(validate_rle(rle, what)), dtype=bool)


def binary_mask(mask: Any, what: str = "mask") -> np.ndarray:
    """A 2-D bool mask from a bool array or a numeric one holding 0 (outside) and a single
    positive value (inside: 1, 255, ...). Several values (probabilities, logits, a label
    map) are refused instead of guessing a threshold."""
    try:
        arr = np.asarray(mask)
    except (TypeError, ValueError, RuntimeError):
        raise InputError(f"{what}: expected a 2-D (H, W) array, got {type(mask).__name__}.") from None
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2 or arr.dtype == object:
        got = f"shape {arr.shape}" if arr.dtype != object and arr.ndim else type(mask).__name__
        raise InputError(f"{what}: expected a 2-D (H, W) array or a COCO RLE dict, got {got}.")
    if arr.dtype == bool:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InputError(f"{what}: expected bool or numbers, got dtype {arr.dtype}.")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise InputError(f"{what}: contains NaN or infinity.")
    inside = arr != 0
    values = arr[inside]
    if values.size and (values.min() < 0 or values.min() != values.max()):
        shown = np.unique(values)
        raise InputError(
            f"{what}: a mask holds 0 (outside) and one positive value (inside, e.g. 1 or 255); this one holds "
            f"the non-zero values {', '.join(f'{v:g}' for v in shown[:4])}{', ...' if shown.size > 4 else ''}. "
            "Threshold it first, e.g. `probabilities > 0.5` or `logits > 0`."
        )
    return inside


@dataclass(frozen=True)
class Region:
    """One region of an image; ``data`` holds normalized points, a box or a bool mask."""

    kind: str
    data: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        """Regions built directly (not by a ``from_*`` constructor) are checked too."""
        if self.kind not in KINDS:
            raise InputError(f"region kind must be one of {KINDS}, got {self.kind!r}.")
        data = self.data
        if self.kind == "global":
            ok = data is None
        elif not isinstance(data, np.ndarray):
            ok = False
        elif self.kind == "mask":
            ok = data.ndim == 2 and data.dtype == bool and bool(data.any())
        else:
            shape_ok = (
                data.shape == (4,)
                if self.kind == "box"
                else (data.ndim == 2 and data.shape[1] == 2 and data.shape[0] > 0)
            )
            ok = (
                shape_ok
                and np.issubdtype(data.dtype, np.floating)
                and bool(np.all(np.isfinite(data)))
                and data.min() >= 0
                and data.max() <= 1
            )
        if not ok:
            raise InputError(f"a {self.kind} region needs {_DATA_LAYOUT[self.kind]}; build it with Region.from_*.")

    # -- constructors -------------------------------------------------------
    @classmethod
    def from_points(cls, points: ArrayLike, image_size: Optional[Tuple[int, int]] = None) -> "Region":
        """Clicked points (unordered). ``image_size=(w, h)`` means pixel coordinates."""
        return cls("points", _as_points(points, image_size, "points"))

    @classmethod
    def from_trace(
        cls, points: ArrayLike, image_size: Optional[Tuple[int, int]] = None, clip: bool = False
    ) -> "Region":
        """An ordered path (scribble, mouse trace). ``clip=True`` clamps points that stray
        slightly outside the image, as Localized Narratives traces do."""
        if clip:
            try:
                pts = np.asarray(points, dtype=np.float64)
            except (TypeError, ValueError):
                raise InputError(f"trace: expected numbers, got {points!r}.") from None
            if image_size is not None:
                w, h = _check_size(image_size)
                pts = pts / np.array([w, h], dtype=np.float64)
            return cls("trace", _as_points(np.clip(pts, 0.0, 1.0), None, "trace"))
        return cls("trace", _as_points(points, image_size, "trace"))

    @classmethod
    def from_box(cls, box: Sequence[float], image_size: Optional[Tuple[int, int]] = None) -> "Region":
        """A box ``(x0, y0, x1, y1)``."""
        try:
            arr = np.asarray(box, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"box: expected 4 numbers (x0, y0, x1, y1), got {box!r}.") from None
        if arr.shape != (4,):
            raise InputError(f"box: expected 4 numbers (x0, y0, x1, y1), got shape {arr.shape}.")
        corners = _normalize(arr.reshape(2, 2), image_size, "box")
        if np.any(corners[1] <= corners[0]):
            raise InputError(f"box: need x0 < x1 and y0 < y1, got {list(box)}.")
        return cls("box", corners.reshape(4))

    @classmethod
    def from_mask(cls, mask: Union[np.ndarray, Mapping[str, Any]]) -> "Region":
        """A binary mask (H x W bool array, or numbers 0 and one positive value such as
        0/1 or 0/255) or a COCO RLE dict."""
        arr = mask_from_rle(mask) if isinstance(mask, Mapping) else binary_mask(mask)
        if not arr.any():
            raise InputError("mask: the mask is empty (no foreground pixel); nothing to point at.")
        return cls("mask", arr)

    @classmethod
    def whole_image(cls) -> "Region":
        """No region: the model gets empty region text (global captioning / VQA)."""
        return cls("global", None)

    # -- sampling -----------------------------------------------------------
    def sample_points(self, k: int = DEFAULT_NUM_POINTS, rng: Optional[np.random.Generator] = None) -> np.ndarray:
        """K normalized (x, y) points by the official rule for this kind of region.

        ``rng=None`` is allowed only for points/traces and gives the official
        deterministic evaluation rule (evenly spaced)."""
        check_num_points(k, MAX_SAMPLED_POINTS)
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise InputError(
                f"rng must be a numpy Generator (np.random.default_rng(seed)) or None, got {type(rng).__name__}."
            )
        if self.kind == "global":
            return np.zeros((0, 2), dtype=np.float64)
        if self.kind in ("points", "trace"):
            return self.data[select_in_order(len(self.data), k, rng)]
        if rng is None:
            raise InputError(f"sampling a {self.kind} region needs rng=np.random.default_rng(seed).")
        if self.kind == "box":
            x0, y0, x1, y1 = self.data
            return np.stack([rng.uniform(x0, x1, k), rng.uniform(y0, y1, k)], axis=1)
        return sample_mask_points(self.data, k, rng)

    def to_text(self, k: int = DEFAULT_NUM_POINTS, rng: Optional[np.random.Generator] = None) -> str:
        """The region prompt text (empty for the whole image)."""
        check_num_points(k)
        return format_points(self.sample_points(k, rng))


class MaskPointSampler:
    """Draws K distinct foreground pixels of one mask, uniformly at random (all of them if
    fewer than K), as float32 ``(col / W, row / H)`` exactly as the official RIS code computes
    them. The foreground is listed once, so R draws cost one scan of the mask, not R."""

    def __init__(self, mask: np.ndarray):
        mask = binary_mask(mask)
        self.height, self.width = mask.shape
        self.flat = np.flatnonzero(np.ascontiguousarray(mask))
        if self.flat.size == 0:
            raise InputError("mask: the mask is empty (no foreground pixel); nothing to point at.")

    def sample(self, k: int, rng: np.random.Generator) -> np.ndarray:
        take = rng.choice(self.flat.size, size=min(k, self.flat.size), replace=False)
        rows, cols = np.divmod(self.flat[take], self.width)
        pts = np.stack([cols, rows], axis=1).astype(np.float32)
        pts[:, 0] /= np.float32(self.width)
        pts[:, 1] /= np.float32(self.height)
        return pts


def sample_mask_points(mask: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """K random foreground pixels of ``mask`` (see :class:`MaskPointSampler`)."""
    return MaskPointSampler(mask).sample(k, rng)
