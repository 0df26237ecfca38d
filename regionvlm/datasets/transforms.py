"""Training-time transforms that know where the region is (docs/method.md, "Training").

Image augmentations that move pixels (flips, random-resized crops) would silently break
the region prompt, whose coordinates refer to the image. The only augmentation RegionVLM
uses is a crop that removes up to 10% of each side while keeping every region point
inside, after which the points are re-normalized to the crop. This module holds that
crop and the K-of-20 point selection, both driven by an explicit
``numpy.random.Generator`` so a (seed, epoch, index) triple reproduces a sample.

Official behaviour reproduced (the authors' ``LNDataset.data_augmentation``):

* points are clipped to ``[0, 1]`` first (Localized Narratives traces stray slightly
  outside the image);
* the fraction removed on each side is ``uniform(0, min(0.1, room))`` where ``room`` is
  the distance from the extreme point to that border, drawn in the order left, right,
  top, bottom;
* points are re-normalized with those *fractions*; the pixel crop truncates
  ``fraction * size`` to an integer, so the image may keep up to one pixel more than the
  fractions say (a sub-pixel shift, as in the official code).

The only addition: re-normalized points are clipped to ``[0, 1]`` to absorb float
rounding (values like ``1.0000000000000002``); it never changes ``int(100 * v)`` except
for such round-off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np
from PIL import Image

from regionvlm.common.errors import InputError
from regionvlm.region import format_points, select_in_order

DEFAULT_CROP_FRACTION = 0.1


def _as_points(points: np.ndarray, what: str = "points") -> np.ndarray:
    try:
        pts = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{what}: expected an (N, 2) array of numbers, got {str(points)[:80]}.") from None
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] == 0:
        raise InputError(f"{what}: expected a non-empty (N, 2) array of (x, y), got shape {pts.shape}.")
    if not np.all(np.isfinite(pts)):
        raise InputError(f"{what}: coordinates contain NaN or infinity.")
    return pts


@dataclass(frozen=True)
class CropFractions:
    """Fractions of the width/height removed on each side (left, right, top, bottom)."""

    left: float
    right: float
    top: float
    bottom: float

    def apply_points(self, points: np.ndarray) -> np.ndarray:
        """Re-normalize points (clipped to [0, 1] first, as the official code) to the crop."""
        pts = np.clip(_as_points(points), 0.0, 1.0)
        out = np.empty_like(pts)
        out[:, 0] = (pts[:, 0] - self.left) / (1.0 - self.left - self.right)
        out[:, 1] = (pts[:, 1] - self.top) / (1.0 - self.top - self.bottom)
        return np.clip(out, 0.0, 1.0)

    def pixel_box(self, width: int, height: int) -> Tuple[int, int, int, int]:
        """The crop in pixels ``(x0, y0, x1, y1)``: each removed margin is ``int(f * size)``."""
        x0, x1 = int(self.left * width), width - int(self.right * width)
        y0, y1 = int(self.top * height), height - int(self.bottom * height)
        return x0, y0, x1, y1

    def apply_image(self, image: Image.Image) -> Image.Image:
        if (self.left, self.right, self.top, self.bottom) == (0.0, 0.0, 0.0, 0.0):
            return image
        return image.crop(self.pixel_box(*image.size))


def sample_crop(
    points: np.ndarray, rng: np.random.Generator, max_fraction: float = DEFAULT_CROP_FRACTION
) -> CropFractions:
    """Draw the region-preserving crop for ``points`` (all regions that must stay inside).

    ``max_fraction=0`` disables the augmentation (no random numbers are drawn then)."""
    if isinstance(max_fraction, bool) or not isinstance(max_fraction, (int, float)) or not 0.0 <= max_fraction < 0.5:
        raise InputError(f"crop max_fraction must be a number in [0, 0.5), got {max_fraction!r}.")
    pts = np.clip(_as_points(points, "crop points"), 0.0, 1.0)
    if max_fraction == 0.0:
        return CropFractions(0.0, 0.0, 0.0, 0.0)
    room = (
        min(max_fraction, float(pts[:, 0].min())),
        min(max_fraction, 1.0 - float(pts[:, 0].max())),
        min(max_fraction, float(pts[:, 1].min())),
        min(max_fraction, 1.0 - float(pts[:, 1].max())),
    )
    left, right, top, bottom = (float(rng.uniform(0.0, r)) for r in room)
    return CropFractions(left, right, top, bottom)


def region_preserving_crop(
    image: Image.Image, points: np.ndarray, rng: np.random.Generator, max_fraction: float = DEFAULT_CROP_FRACTION
) -> Tuple[Image.Image, np.ndarray]:
    """Crop up to ``max_fraction`` of each side keeping every point inside; return the
    cropped image and the points re-normalized to it (the official augmentation)."""
    crop = sample_crop(points, rng, max_fraction)
    return crop.apply_image(image), crop.apply_points(points)


def select_points(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """K of a chunk's (usually 20) ordered points by the official training rule: K distinct
    indices uniformly at random kept in order; with fewer than K points, K evenly spaced
    indices (repeats)."""
    pts = _as_points(points)
    if k <= 0:
        raise InputError(f"number of points must be positive, got {k}.")
    return pts[select_in_order(len(pts), k, rng)]


def region_text(points: np.ndarray, k: int, rng: np.random.Generator) -> str:
    """The region prompt ``[x y] [x y] ...`` of K points selected from ``points``."""
    return format_points(select_points(points, k, rng))
