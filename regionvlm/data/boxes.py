"""Boxes as COCO, the refer toolkit and detector files write them: ``[x, y, w, h]`` in pixels
of the image's original frame, ``(x, y)`` the top-left corner (docs/rec.md).

- :func:`parse_xywh` checks one box from a file (a list ``[x, y, w, h]`` or a mapping with
  keys ``x``, ``y``, ``w``, ``h``): four finite numbers, width and height not negative. A
  zero width or height is a valid box (detectors emit them); it covers no area.
- :func:`box_iou` is the IoU of ReCLIP's evaluation (continuous coordinates: intersection
  area over union area, no "+1" pixel convention); two boxes of zero area have IoU 0.
- :func:`box_mask` and :func:`sampling_box` turn a box into something a region prompt can
  use when the box has no mask: the pixels it covers, and the part of it inside the image.
  Both keep at least one pixel, so a zero-area box still points somewhere.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Tuple

import numpy as np

from regionvlm.common.errors import InputError

Box = Tuple[float, float, float, float]  # (x, y, w, h)
XYXY = Tuple[float, float, float, float]  # (x0, y0, x1, y1)
_KEYS = ("x", "y", "w", "h")


def parse_xywh(value: Any, what: str) -> Box:
    """``value`` as a checked ``(x, y, w, h)``; InputError naming ``what`` otherwise."""
    if isinstance(value, Mapping):
        if any(k not in value for k in _KEYS):
            raise InputError(f"{what}: a box mapping needs the keys x, y, w, h, got {sorted(map(str, value))}.")
        raw = [value[k] for k in _KEYS]
    elif isinstance(value, (list, tuple)) and len(value) == 4:
        raw = list(value)
    else:
        raise InputError(f"{what}: a box is [x, y, w, h] or {{x, y, w, h}} in pixels, got {str(value)[:80]}.")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in raw):
        raise InputError(f"{what}: box coordinates must be numbers, got {str(value)[:80]}.")
    x, y, w, h = (float(v) for v in raw)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise InputError(f"{what}: box coordinates must be finite numbers, got {str(value)[:80]}.")
    if w < 0 or h < 0:
        raise InputError(f"{what}: box width and height must not be negative, got [x, y, w, h] = {[x, y, w, h]}.")
    return (x, y, w, h)


def check_in_image(box: Box, width: int, height: int, what: str) -> None:
    """A box must reach into the ``width`` x ``height`` image (touching its edge is enough);
    one wholly outside belongs to another image or another frame."""
    x, y, w, h = box
    if x > width or y > height or x + w < 0 or y + h < 0:
        raise InputError(
            f"{what}: the box [x, y, w, h] = {list(box)} lies outside the {width}x{height} image; "
            "the boxes must be in the pixel frame of the image they belong to."
        )


def to_xyxy(box: Box) -> XYXY:
    x, y, w, h = box
    return (x, y, x + w, y + h)


def box_iou(a: Box, b: Box) -> float:
    """IoU of two ``(x, y, w, h)`` boxes (ReCLIP's rule); 0 when the union has no area."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _pixel_span(lo: float, hi: float, size: int) -> Tuple[int, int]:
    """Whole-pixel cells ``[start, end)`` that ``[lo, hi]`` covers inside ``[0, size)``, at least one."""
    start = min(max(math.floor(lo), 0), size - 1)
    end = max(min(math.ceil(hi), size), start + 1)
    return start, end


def box_mask(box: Box, height: int, width: int) -> np.ndarray:
    """The pixels (bool, ``height`` x ``width``) whose cells the box overlaps, clipped to the
    image; a zero-area box gives the one pixel at its position."""
    x0, y0, x1, y1 = to_xyxy(box)
    c0, c1 = _pixel_span(x0, x1, width)
    r0, r1 = _pixel_span(y0, y1, height)
    mask = np.zeros((height, width), dtype=bool)
    mask[r0:r1, c0:c1] = True
    return mask


def sampling_box(box: XYXY, height: int, width: int) -> XYXY:
    """``(x0, y0, x1, y1)`` clipped to the image; a side left with no length becomes the
    one-pixel cell at its position, so points can be drawn in any box."""
    x0, x1 = (min(max(v, 0.0), float(width)) for v in (box[0], box[2]))
    y0, y1 = (min(max(v, 0.0), float(height)) for v in (box[1], box[3]))
    if x1 <= x0:
        x0, x1 = (float(v) for v in _pixel_span(x0, x0, width))
    if y1 <= y0:
        y0, y1 = (float(v) for v in _pixel_span(y0, y0, height))
    return (x0, y0, x1, y1)
