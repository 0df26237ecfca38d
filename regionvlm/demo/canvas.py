"""What the web demo draws: the image, enlarged for clicking, with every region, the points
sent to the model for it and the clicks of the region being drawn. Pure PIL (no gradio),
so it is testable on its own."""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

COLOURS = [
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
]
DISPLAY_SIDE = 512  # small images are enlarged to this longer side, so clicks are precise


def display_scale(size: Tuple[int, int], side: int = DISPLAY_SIDE) -> float:
    """Factor from image pixels to canvas pixels (1 for images already at least ``side``)."""
    return max(1.0, side / max(size))


def to_image_pixels(index: Sequence[float], scale: float, size: Tuple[int, int]) -> Tuple[float, float]:
    """A click on the canvas (its pixel ``index``) in image pixels, clamped inside the image."""
    width, height = size
    x = min(max((float(index[0]) + 0.5) / scale, 0.0), float(width))
    y = min(max((float(index[1]) + 0.5) / scale, 0.0), float(height))
    return x, y


def colour(region_id: int) -> Tuple[int, int, int]:
    return COLOURS[(region_id - 1) % len(COLOURS)]


def render(
    image: Image.Image, regions: Sequence, pending: Sequence[Tuple[float, float]] = (), pending_kind: str = "box"
) -> Image.Image:
    """The canvas: ``regions`` are ``RegionEntry`` objects (in id order), ``pending`` the
    clicks (image pixels) of the region being drawn."""
    scale = display_scale(image.size)
    width, height = image.size
    size = (round(width * scale), round(height * scale))
    resample = Image.NEAREST if scale >= 2 else Image.BICUBIC
    canvas = image.convert("RGB").resize(size, resample)
    wh = np.array(size, dtype=np.float64)
    for region_id, entry in enumerate(regions, 1):
        canvas = _draw_region(canvas, entry.region, colour(region_id), wh)
    draw = ImageDraw.Draw(canvas)
    for region_id, entry in enumerate(regions, 1):
        rgb = colour(region_id)
        pts = np.asarray(entry.points, dtype=np.float64) * wh
        for x, y in pts:  # the points as sent: an x per point
            for w, fill in ((4, (255, 255, 255)), (2, rgb)):
                draw.line([(x - 5, y - 5), (x + 5, y + 5)], fill=fill, width=w)
                draw.line([(x - 5, y + 5), (x + 5, y - 5)], fill=fill, width=w)
        anchor = _label_anchor(entry.region, pts, wh)
        if anchor is not None:
            _label(draw, anchor, f"[{region_id}]", rgb)
    clicks = [(x * scale, y * scale) for x, y in pending]
    if pending_kind == "scribble" and len(clicks) > 1:
        draw.line(clicks, fill=(255, 255, 255), width=2)
    for x, y in clicks:
        draw.ellipse([x - 5, y - 5, x + 5, y + 5], outline=(0, 0, 0), fill=(255, 255, 255), width=2)
    return canvas


def _draw_region(canvas: Image.Image, region, rgb, wh: np.ndarray) -> Image.Image:
    if region.kind == "mask":
        alpha = Image.fromarray((region.data * 110).astype(np.uint8)).resize(canvas.size, Image.NEAREST)
        layer = Image.new("RGB", canvas.size, rgb)
        return Image.composite(layer, canvas, alpha)
    draw = ImageDraw.Draw(canvas)
    if region.kind == "box":
        x0, y0, x1, y1 = (region.data.reshape(2, 2) * wh).reshape(4)
        draw.rectangle([x0, y0, x1, y1], outline=rgb, width=3)
    elif region.kind == "trace":
        line = [tuple(p) for p in region.data * wh]
        if len(line) > 1:
            draw.line(line, fill=rgb, width=3)
    elif region.kind == "points":
        for x, y in region.data * wh:
            draw.ellipse([x - 6, y - 6, x + 6, y + 6], outline=rgb, width=3)
    return canvas


def _label_anchor(region, sent_points: np.ndarray, wh: np.ndarray):
    if region.kind == "box":
        return region.data[:2] * wh
    if region.kind in ("points", "trace"):
        return region.data[0] * wh
    if len(sent_points):
        return sent_points[0]
    return np.array([4.0, 4.0])  # whole image: top-left corner


def _label(draw: ImageDraw.ImageDraw, anchor, text: str, rgb) -> None:
    x, y = float(anchor[0]) + 3, max(float(anchor[1]) - 16, 0.0)
    left, top, right, bottom = draw.textbbox((x, y), text)
    draw.rectangle([left - 2, top - 2, right + 2, bottom + 2], fill=rgb)
    draw.text((x, y), text, fill=(255, 255, 255))
