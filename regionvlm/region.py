"""Regions and their text prompts (SPEC section 2).

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

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from regionvlm.common.errors import InputError

DEFAULT_NUM_POINTS = 10
KINDS = ("points", "box", "trace", "mask", "global")

ArrayLike = Union[np.ndarray, Sequence[Sequence[float]], Sequence[float]]


def format_points(points: np.ndarray) -> str:
    """Render normalized points as the official region text ``[x y] [x y] ...``."""
    pts = np.asarray(points)
    if pts.size == 0:
        return ""
    if not np.issubdtype(pts.dtype, np.floating):
        pts = pts.astype(np.float64)
    scaled = (pts * pts.dtype.type(100)).astype(np.int64)
    return " ".join(f"[{x} {y}]" for x, y in scaled.tolist())


def select_in_order(num_available: int, k: int, rng: Optional[np.random.Generator]) -> np.ndarray:
    """Indices of K points of an ordered trace: K distinct random ones kept in trace order;
    with fewer than K points (or ``rng=None``, the official evaluation rule) K evenly spaced
    indices ``int((n - 1) / (k - 1) * j)``, repeating points when ``n < K``."""
    if num_available <= 0:
        raise InputError("cannot select points from an empty trace.")
    if k == 1:
        return np.zeros(1, dtype=np.int64) if rng is None else np.sort(rng.choice(num_available, 1))
    if rng is None or num_available < k:
        return np.array([int((num_available - 1) / (k - 1) * j) for j in range(k)], dtype=np.int64)
    return np.sort(rng.choice(num_available, size=k, replace=False))


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
    try:
        width, height = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise InputError(f"image_size must be (width, height), got {image_size!r}.") from None
    if width <= 0 or height <= 0:
        raise InputError(f"image_size must be positive, got {image_size!r}.")
    return width, height


def mask_from_rle(rle: Mapping[str, Any]) -> np.ndarray:
    """Decode a COCO RLE (``{"size": [h, w], "counts": ...}``) into a bool array."""
    from pycocotools import mask as mask_utils

    if "size" not in rle or "counts" not in rle:
        raise InputError(f"a COCO RLE needs 'size' and 'counts', got keys {sorted(rle)}.")
    rle = dict(rle)
    if isinstance(rle["counts"], list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(rle, *rle["size"])
    elif isinstance(rle["counts"], str):
        rle["counts"] = rle["counts"].encode("ascii")
    return mask_utils.decode(rle).astype(bool)


@dataclass(frozen=True)
class Region:
    """One region of an image; ``data`` holds normalized points, a box or a bool mask."""

    kind: str
    data: Optional[np.ndarray] = None

    # -- constructors -------------------------------------------------------
    @classmethod
    def from_points(cls, points: ArrayLike, image_size: Optional[Tuple[int, int]] = None) -> "Region":
        """Clicked points (unordered). ``image_size=(w, h)`` means pixel coordinates."""
        return cls("points", _as_points(points, image_size, "points"))

    @classmethod
    def from_trace(cls, points: ArrayLike, image_size: Optional[Tuple[int, int]] = None,
                   clip: bool = False) -> "Region":
        """An ordered path (scribble, mouse trace). ``clip=True`` clamps points that stray
        slightly outside the image, as Localized Narratives traces do."""
        if clip:
            pts = np.asarray(points, dtype=np.float64)
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
        """A binary mask (H x W array of bool/0-1) or a COCO RLE dict."""
        if isinstance(mask, Mapping):
            arr = mask_from_rle(mask)
        else:
            arr = np.asarray(mask)
            if arr.ndim == 3 and arr.shape[-1] == 1:
                arr = arr[..., 0]
            if arr.ndim != 2:
                raise InputError(f"mask: expected a 2-D (H, W) array, got shape {arr.shape}.")
            if arr.dtype != bool:
                if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
                    raise InputError("mask: contains NaN or infinity.")
                arr = arr > 0
        if not arr.any():
            raise InputError("mask: the mask is empty (no foreground pixel); nothing to point at.")
        return cls("mask", arr)

    @classmethod
    def whole_image(cls) -> "Region":
        """No region: the model gets empty region text (global captioning / VQA)."""
        return cls("global", None)

    # -- sampling -----------------------------------------------------------
    def sample_points(self, k: int = DEFAULT_NUM_POINTS,
                      rng: Optional[np.random.Generator] = None) -> np.ndarray:
        """K normalized (x, y) points by the official rule for this kind of region.

        ``rng=None`` is allowed only for points/traces and gives the official
        deterministic evaluation rule (evenly spaced)."""
        if k <= 0:
            raise InputError(f"number of points must be positive, got {k}.")
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
        return format_points(self.sample_points(k, rng))


class MaskPointSampler:
    """Draws K distinct foreground pixels of one mask, uniformly at random (all of them if
    fewer than K), as float32 ``(col / W, row / H)`` exactly as the official RIS code computes
    them. The foreground is listed once, so R draws cost one scan of the mask, not R."""

    def __init__(self, mask: np.ndarray):
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
