"""PhraseCut ground truth: the cost of rasterizing a task's polygons (every query of a split,
on the evaluator's prefetch threads).

Three ways, on the same synthetic tasks (Visual Genome-sized images, 1-5 instances of
object-like outlines of 8-40 vertices each; ``--tasks`` of them):

- ``vectorized``: ``regionvlm.data.phrasecut.polygons_to_mask``, the project's path: Pillow
  6.1.0's scan-line rule evaluated for all scan lines and edges of a polygon at once, every
  polygon's runs written through one difference array;
- ``naive``: the same rule written as the C code runs it, one scan line and one edge at a time
  in Python (what a direct port would cost); its masks must equal the vectorized ones;
- ``pillow``: PhraseCut's code on the installed Pillow (a canvas per polygon, summed). Fast,
  but Pillow's filler has changed since the 6.1.0 PhraseCut pins, so its masks are reported
  as "differ" (share of tasks with at least one other pixel) rather than used.

    python benchmarks/bench_phrasecut_gt.py [--tasks 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from regionvlm.data.phrasecut import polygons_to_mask


def synthetic_tasks(n: int, seed: int = 0) -> List[Dict[str, Any]]:
    rng = np.random.default_rng(seed)
    tasks = []
    for _ in range(n):
        height, width = int(rng.integers(300, 500)), int(rng.integers(400, 640))
        polygons = []
        for _ in range(int(rng.integers(1, 6))):
            cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(10, 200)
            angles = np.sort(rng.uniform(0, 2 * math.pi, size=int(rng.integers(8, 41))))
            radii = r * rng.uniform(0.4, 1.0, size=angles.size)
            polygons.append(
                np.round(np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1), 1).tolist()
            )
        tasks.append({"height": height, "width": width, "polygons": polygons})
    return tasks


def _round_half_away(f: float) -> int:
    """ROUND_UP of the C code: float32 addition for f >= 0, double below."""
    f32 = np.float32(f)
    return math.floor(np.float32(f32 + np.float32(0.5))) if f32 >= 0 else -math.floor(abs(float(f32)) + 0.5)


def _round_half_toward(f: float) -> int:
    """ROUND_DOWN of the C code."""
    f32 = np.float32(f)
    return math.ceil(np.float32(f32 - np.float32(0.5))) if f32 >= 0 else -math.ceil(abs(float(f32)) - 0.5)


def naive_mask(polygons: Sequence[Sequence[Sequence[float]]], height: int, width: int) -> np.ndarray:
    """The rule one scan line and one edge at a time (float32 like the C code)."""
    mask = np.zeros((height, width), dtype=bool)

    def hline(y: int, a: int, b: int) -> None:
        a, b = min(a, b), max(a, b)
        if 0 <= y < height and a < width and b >= 0:
            mask[y, max(a, 0) : min(b, width - 1) + 1] = True

    for polygon in polygons:
        if len(polygon) < 2:
            continue
        pts = [(int(x), int(y)) for x, y in polygon]
        edges = list(itertools.pairwise(pts))
        if pts[-1] != pts[0]:
            edges.append((pts[-1], pts[0]))
        table = []
        for (x0, y0), (x1, y1) in edges:
            if y0 == y1:
                hline(y0, x0, x1)
            else:
                table.append((x0, y0, min(y0, y1), max(y0, y1), np.float32(x1 - x0) / np.float32(y1 - y0)))
        if not table:
            continue
        first = max(min(height - 1, min(e[2] for e in table)), 0)
        last = min(max(0, max(e[3] for e in table)), height)
        for y in range(first, last + 1):
            xs = []
            for x0, y0, top, bottom, dx in table:
                if top <= y <= bottom:
                    xs.append(np.float32(np.float32(y - y0) * dx) + np.float32(x0))
                if y == bottom and y < last:
                    xs.append(xs[-1])
            xs.sort()
            for i in range(1, len(xs), 2):
                hline(y, _round_half_away(xs[i - 1]), _round_half_toward(xs[i]))
    return mask


def pillow_mask(polygons: Sequence[Sequence[Sequence[float]]], height: int, width: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    total = np.zeros((height, width))
    for polygon in polygons:
        if len(polygon) < 2:
            continue
        canvas = Image.new("L", (width, height), 0)
        ImageDraw.Draw(canvas).polygon([(int(x), int(y)) for x, y in polygon], outline=1, fill=1)
        total += np.array(canvas)
    return total > 0


def timed(fn, tasks: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    start = time.perf_counter()
    masks = [fn(t["polygons"], t["height"], t["width"]) for t in tasks]
    return {"seconds": time.perf_counter() - start, "masks": masks}


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the numbers here")
    args = p.parse_args(argv)
    if args.tasks < 1:
        p.error("--tasks must be >= 1")
    tasks = synthetic_tasks(args.tasks, args.seed)
    polygons = sum(len(t["polygons"]) for t in tasks)
    runs = {name: timed(fn, tasks) for name, fn in (("vectorized", polygons_to_mask), ("naive", naive_mask))}
    runs["pillow"] = timed(pillow_mask, tasks)
    same = all(np.array_equal(a, b) for a, b in zip(runs["vectorized"]["masks"], runs["naive"]["masks"]))
    differ = sum(not np.array_equal(a, b) for a, b in zip(runs["vectorized"]["masks"], runs["pillow"]["masks"]))
    result = {
        "tasks": args.tasks,
        "polygons": polygons,
        "ms_per_task": {k: 1000 * v["seconds"] / args.tasks for k, v in runs.items()},
        "speedup_vs_naive": runs["naive"]["seconds"] / runs["vectorized"]["seconds"],
        "naive_equal": same,
        "installed_pillow_differs_on": f"{differ}/{args.tasks}",
    }
    print(f"{args.tasks} tasks, {polygons} polygons (VG-sized images)")
    for name in ("vectorized", "naive", "pillow"):
        print(f"  {name:10s} {result['ms_per_task'][name]:8.2f} ms/task")
    print(f"  vectorized is {result['speedup_vs_naive']:.1f}x the naive port; masks equal: {same}")
    print(f"  installed Pillow's polygon() gives other pixels on {differ}/{args.tasks} tasks")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    if not same:
        raise SystemExit("the vectorized and the naive rasterizations differ")
    return result


if __name__ == "__main__":
    main()
