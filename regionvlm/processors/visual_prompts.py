"""Visual prompts: mark a region by changing the image instead of describing it in text.

The zero-shot RIS baselines that prompt BLIP-2 visually (``region_prompt`` ``crop``,
``blur``, ``circle``) apply one of these to the image at its original resolution, before the
model's image processor, once per candidate mask. Each is a pure function
``(PIL image, bool mask of the same size) -> new PIL image``; the input is never modified.

Parameters are the ones the authors' release sets for these transforms:

- the box of a mask is the bounding box of its largest 8-connected piece (by pixel count),
  ``(x0, y0, x1, y1)`` with ``x1``/``y1`` one past the last column/row — what an
  outer-contour bounding rectangle gives; for a one-piece mask it is the mask's bounding box;
- ``crop``: the image cut to that box, no padding;
- ``blur``: Gaussian blur of radius (standard deviation) 10 px outside the mask, the mask's
  pixels untouched — as fine-grained visual prompting (Yang et al. 2023) blurs the background;
- ``circle``: a red ``(255, 0, 0)`` ellipse outline 10 px wide inscribed in the box given as
  above (so its right/bottom edge lies one pixel past the mask), drawn inwards, no margin,
  nothing else changed — the red-circle prompt of Shtedritski et al. (2023).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from regionvlm.common.errors import InputError

CROP_PADDING = 0
BLUR_RADIUS = 10.0
ELLIPSE_COLOUR = (255, 0, 0)
ELLIPSE_WIDTH = 10

Box = Tuple[int, int, int, int]


def _check(image: Image.Image, mask: np.ndarray) -> np.ndarray:
    if not isinstance(image, Image.Image):
        raise InputError(f"a visual prompt needs a PIL image, got {type(image).__name__}.")
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.shape != (image.height, image.width):
        raise InputError(
            f"the mask is {mask.shape} (rows, cols) but the image is {image.height}x{image.width}; "
            "a visual prompt needs the mask at the image's own resolution."
        )
    mask = mask.astype(bool, copy=False)
    if not mask.any():
        raise InputError("the mask is empty (no foreground pixel); there is no region to mark.")
    return mask


def mask_box(mask: np.ndarray) -> Box:
    """``(x0, y0, x1, y1)`` of the largest 8-connected piece of ``mask``, ``x1``/``y1``
    exclusive (ties: the piece whose first pixel comes first in row-major order)."""
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise InputError("the mask is empty (no foreground pixel); it has no box.")
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))  # labelled in row-major order
    if count > 1:
        mask = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def crop_to_mask(image: Image.Image, mask: np.ndarray, padding: int = CROP_PADDING) -> Image.Image:
    """The image cut to the mask's box, grown by ``padding`` pixels per side inside the image."""
    mask = _check(image, mask)
    x0, y0, x1, y1 = mask_box(mask)
    box = (max(0, x0 - padding), max(0, y0 - padding), min(image.width, x1 + padding), min(image.height, y1 + padding))
    return image.crop(box)


def blur_outside_mask(
    image: Image.Image, mask: np.ndarray, radius: float = BLUR_RADIUS, blurred: Image.Image | None = None
) -> Image.Image:
    """The mask's pixels as they are, every other pixel from the Gaussian-blurred image.
    ``blurred`` lets one blur of the whole image serve all its masks."""
    mask = _check(image, mask)
    if blurred is None:
        blurred = image.filter(ImageFilter.GaussianBlur(radius))
    elif blurred.size != image.size or blurred.mode != image.mode:
        raise InputError(f"the blurred image is {blurred.size} {blurred.mode}, the image {image.size} {image.mode}.")
    return Image.composite(image, blurred, Image.fromarray(mask.astype(np.uint8) * 255, mode="L"))


def draw_ellipse_around_mask(
    image: Image.Image, mask: np.ndarray, colour: Tuple[int, int, int] = ELLIPSE_COLOUR, width: int = ELLIPSE_WIDTH
) -> Image.Image:
    """A copy of the image with an ellipse outline inscribed in the mask's box."""
    mask = _check(image, mask)
    out = image.copy()
    ImageDraw.Draw(out).ellipse(mask_box(mask), fill=None, outline=colour, width=width)
    return out


VISUAL_PROMPTS: Dict[str, Callable[[Image.Image, np.ndarray], Image.Image]] = {
    "crop": crop_to_mask,
    "blur": blur_outside_mask,
    "circle": draw_ellipse_around_mask,
}


def apply_visual_prompt(mode: str, image: Image.Image, masks: Sequence[np.ndarray]) -> List[Image.Image]:
    """One prompted image per mask (``mode`` in :data:`VISUAL_PROMPTS`); ``blur`` blurs the
    image once for all masks."""
    if mode not in VISUAL_PROMPTS:
        raise InputError(f"unknown visual prompt '{mode}'; choose one of {sorted(VISUAL_PROMPTS)}.")
    image = image.convert("RGB")
    if mode == "blur":
        blurred = image.filter(ImageFilter.GaussianBlur(BLUR_RADIUS))
        return [blur_outside_mask(image, m, blurred=blurred) for m in masks]
    return [VISUAL_PROMPTS[mode](image, m) for m in masks]
