"""Procedural scenes: a grey noisy canvas with a few coloured shapes, and their masks.

The embedded default world of this project: small enough to train a tiny RegionVLM on a
laptop, structured enough that only a model that reads the region prompt can tell which
shape a sentence refers to (colours are distinct within a scene).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Mapping, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 220, 40),
    "purple": (150, 60, 200),
    "orange": (250, 140, 20),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
SIZES = {"small": (5.0, 7.0), "large": (9.0, 12.0)}
BACKGROUND_CAPTION = "the background"


@dataclass
class SceneObject:
    shape: str
    colour: str
    size: str
    centre: Tuple[float, float]
    radius: float
    mask: np.ndarray  # bool (H, W)

    @property
    def caption(self) -> str:
        return f"a {self.size} {self.colour} {self.shape}"


@dataclass
class Scene:
    image: np.ndarray  # uint8 (H, W, 3)
    objects: List[SceneObject]

    @property
    def background_mask(self) -> np.ndarray:
        occupied = np.zeros(self.image.shape[:2], dtype=bool)
        for obj in self.objects:
            occupied |= obj.mask
        return ~occupied

    @property
    def global_caption(self) -> str:
        """Region captions joined by " and ", left to right."""
        ordered = sorted(self.objects, key=lambda o: o.centre[0])
        return " and ".join(o.caption for o in ordered)


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> List[Tuple[float, float]]:
    if shape == "square":
        corners = [
            (math.cos(angle + k * math.pi / 2 + math.pi / 4), math.sin(angle + k * math.pi / 2 + math.pi / 4))
            for k in range(4)
        ]
        return [(cx + r * x, cy + r * y) for x, y in corners]
    if shape == "triangle":
        return [
            (cx + r * math.cos(angle + k * 2 * math.pi / 3), cy + r * math.sin(angle + k * 2 * math.pi / 3))
            for k in range(3)
        ]
    if shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.45
            a = angle + k * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        return pts
    raise ValueError(shape)


def _draw(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, angle: float, fill) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon(_polygon(shape, cx, cy, r, angle), fill=fill)


def render_scene(
    rng: np.random.Generator,
    size: int = 64,
    min_objects: int = 2,
    max_objects: int = 4,
    max_tries: int = 200,
    colours: Optional[Mapping[str, Tuple[int, int, int]]] = None,
) -> Scene:
    """One scene with 2-4 non-overlapping shapes, colours distinct within the scene.

    ``colours`` (name -> RGB) replaces the palette :data:`COLOURS` (a world variant with a
    colour word the default world never shows); the default palette draws the same scenes
    as always."""
    palette = COLOURS if colours is None else dict(colours)
    noise = rng.normal(0.0, 12.0, size=(size, size, 1))
    canvas = np.clip(128 + noise + rng.normal(0, 6, size=(1, 1, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(np.repeat(canvas, 3, axis=2) if canvas.shape[2] == 1 else canvas)
    draw = ImageDraw.Draw(image)
    count = int(rng.integers(min_objects, max_objects + 1))
    chosen = rng.permutation(list(palette))[:count]
    occupied = np.zeros((size, size), dtype=bool)
    objects: List[SceneObject] = []
    for colour in chosen:
        for _ in range(max_tries):
            shape = str(rng.choice(SHAPES))
            size_name = str(rng.choice(list(SIZES)))
            radius = float(rng.uniform(*SIZES[size_name]))
            margin = radius + 2
            cx, cy = (float(v) for v in rng.uniform(margin, size - margin, size=2))
            angle = float(rng.uniform(0, 2 * math.pi))
            mask_img = Image.new("L", (size, size), 0)
            _draw(ImageDraw.Draw(mask_img), shape, cx, cy, radius, angle, 255)
            mask = np.asarray(mask_img) > 127
            grown = _dilate(mask, 2)
            if mask.sum() < 12 or (grown & occupied).any():
                continue
            _draw(draw, shape, cx, cy, radius, angle, palette[str(colour)])
            occupied |= grown
            objects.append(SceneObject(shape, str(colour), size_name, (cx, cy), radius, mask))
            break
    if len(objects) < min_objects:
        return render_scene(rng, size, min_objects, max_objects, max_tries, colours)
    return Scene(np.asarray(image).copy(), objects)


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(steps):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


def random_walk_in_mask(mask: np.ndarray, rng: np.random.Generator, steps: int, step_std: float = 1.5) -> np.ndarray:
    """A mouse-trace-like path inside ``mask``: pixel (col, row) positions, in order."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise ValueError("empty mask")
    k = int(rng.integers(rows.size))
    pos = np.array([cols[k], rows[k]], dtype=np.float64)
    path = [pos.copy()]
    h, w = mask.shape
    for _ in range(steps - 1):
        for _ in range(8):
            cand = pos + rng.normal(0, step_std, size=2)
            c, r = round(cand[0]), round(cand[1])
            if 0 <= c < w and 0 <= r < h and mask[r, c]:
                pos = cand
                break
        path.append(pos.copy())
    return np.stack(path)


def distractor_masks(scene: Scene, rng: np.random.Generator, count: int) -> List[np.ndarray]:
    """Background blobs that look like proposals but hold no object (RIS distractors)."""
    size = scene.image.shape[0]
    free = scene.background_mask & ~_dilate(~scene.background_mask, 2)
    out: List[np.ndarray] = []
    for _ in range(200):
        if len(out) >= count:
            break
        r = float(rng.uniform(5, 10))
        cx, cy = (float(v) for v in rng.uniform(r + 1, size - r - 1, size=2))
        img = Image.new("L", (size, size), 0)
        ImageDraw.Draw(img).ellipse([cx - r, cy - r * 0.8, cx + r, cy + r * 0.8], fill=255)
        mask = np.asarray(img) > 127
        if (mask & ~free).sum() == 0 and mask.sum() >= 20:
            out.append(mask)
            free = free & ~_dilate(mask, 1)
    return out
