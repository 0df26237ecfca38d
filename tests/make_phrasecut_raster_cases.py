"""Write ``tests/data/phrasecut_pillow61_cases.json``: polygons and the digest of the mask
PhraseCut's own code makes of them under Pillow 6.1.0, the version PhraseCut pins (its
``polygons_to_mask``: vertices truncated with ``int``, one canvas per polygon drawn with
``ImageDraw.polygon(..., outline=1, fill=1)``, summed, > 0; polygons of < 2 vertices skipped).
``tests/test_phrasecut.py`` checks ``regionvlm.data.phrasecut.polygons_to_mask`` against it.

Run with Python 3.7 (Pillow 6.1.0 has no wheels for later versions)::

    python3.7 -m venv /tmp/pil61 && /tmp/pil61/bin/pip install pillow==6.1.0 "numpy<1.22"
    /tmp/pil61/bin/python tests/make_phrasecut_raster_cases.py
"""

import hashlib
import json
import math
import random
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parent / "data" / "phrasecut_pillow61_cases.json"
KINDS = ("random", "star", "star", "box", "line", "repeated", "far", "halves", "short")


def polygon(kind, height, width):
    n = random.randint(2, 14)
    if kind == "random":  # self-intersecting, partly outside the image
        return [[round(random.uniform(-8, width + 8), 1), round(random.uniform(-8, height + 8), 1)] for _ in range(n)]
    if kind == "star":  # a simple polygon around a centre, like an object outline
        cx, cy, r = random.uniform(0, width), random.uniform(0, height), random.uniform(2, max(width, height))
        angles = sorted(random.uniform(0, 2 * math.pi) for _ in range(n))
        points = []
        for a in angles:
            rx = r * random.uniform(0.3, 1)
            ry = r * random.uniform(0.3, 1)
            points.append([round(cx + rx * math.cos(a), 1), round(cy + ry * math.sin(a), 1)])
        return points
    if kind == "box":
        x0, x1 = sorted(round(random.uniform(-4, width + 4), 1) for _ in range(2))
        y0, y1 = sorted(round(random.uniform(-4, height + 4), 1) for _ in range(2))
        return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
    if kind == "line":  # two vertices
        return [[round(random.uniform(-2, width + 2), 1), round(random.uniform(-2, height + 2), 1)] for _ in range(2)]
    if kind == "repeated":  # repeated and collinear vertices
        x, y = random.randint(0, width), random.randint(0, height)
        return [[x, y], [x, y], [x + random.randint(-4, 4), y], [x, y + random.randint(-4, 4)], [x, y]]
    if kind == "far":  # far outside on some sides
        return [[round(random.uniform(-1e4, 1e4), 1), round(random.uniform(-1e4, 1e4), 1)] for _ in range(min(n, 5))]
    if kind == "halves":  # negative fractions truncate toward zero
        return [
            [random.randint(-2, width + 1) + random.choice((0.5, -0.5, 0.9)), random.randint(-2, height + 1) - 0.5]
            for _ in range(n)
        ]
    return [[random.randint(0, width), random.randint(0, height)]]  # one vertex: skipped


def phrasecut_mask(polygons, width, height):
    total = np.zeros((height, width))
    for points in polygons:
        if len(points) < 2:
            continue
        canvas = Image.new("L", (width, height), 0)
        ImageDraw.Draw(canvas).polygon([(int(x), int(y)) for x, y in points], outline=1, fill=1)
        total += np.array(canvas)
    return total > 0


def digest(mask):
    return hashlib.sha256(np.packbits(mask.astype(bool)).tobytes()).hexdigest()[:16]


def main():
    random.seed(20240612)
    cases = []
    for i in range(240):
        height, width = (random.randint(1, 48), random.randint(1, 48)) if i % 4 else (random.randint(100, 400),) * 2
        polygons = [polygon(random.choice(KINDS), height, width) for _ in range(random.randint(1, 3))]
        cases.append(
            {
                "height": height,
                "width": width,
                "polygons": polygons,
                "sha256_16": digest(phrasecut_mask(polygons, width, height)),
            }
        )
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps({"pillow": PIL.__version__, "cases": cases}, separators=(",", ":")) + "\n")
    print(f"{len(cases)} cases under Pillow {PIL.__version__} -> {OUT}")


if __name__ == "__main__":
    main()
