"""PhraseCut (VGPhraseCut v0) in its release layout, for zero-shot RIS (docs/phrasecut.md).

Layout read here (what the dataset's own downloader writes)::

    <data_root>/refer_<split>.json      a list of tasks: task_id, image_id (Visual Genome), phrase,
                                        phrase_structure, instance_boxes, Polygons, ...
    <data_root>/image_data_split.json   a list of images: image_id, width, height, split, coco_id, ...
    <image_root>/<image_id>.jpg         the images (default image_root: <data_root>/images)

Splits: ``train``, ``val``, ``test``, ``miniv`` (100 validation images kept out of
``refer_val.json``); names joined by ``_`` read several files as one split, as PhraseCut's
loader does (``val_miniv`` is the whole validation set).

Every task is one query: its text is the ``phrase``, its ground truth the union of its
instances' polygons rasterized at the image's size (``width``/``height`` from
``image_data_split.json``) by PhraseCut's rule (:func:`polygons_to_mask`).

Checks (each names the file and the entry): missing files; a task whose image is not in
``image_data_split.json`` or belongs to another split; repeated task ids; sizes that are
not positive whole numbers; ``Polygons`` that are not lists of polygons of ``[x, y]``
pairs of finite numbers; an empty phrase (skipped and listed under ``skip_missing``, like
a task with an unknown image). That an image file has the size the dataset states is
checked when the image is read (``regionvlm.data.images.check_image_size``).

Command line (list the images of a split, e.g. to compute only their proposals)::

    python -m regionvlm.data.phrasecut --data-root data/VGPhraseCut_v0 --split test --out phrasecut_test.txt
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from regionvlm.common.errors import ConfigError, InputError, MissingFileError
from regionvlm.common.io import require_output_file, write_or_print
from regionvlm.region import check_pixel_count, whole_number

SPLITS = ("train", "val", "test", "miniv")
IMAGE_INFO = "image_data_split.json"
GT_RULE = "phrasecut-polygons"  # the ground-truth rule's name in result identities
DOWNLOAD_HINT = (
    "Download it with PhraseCut's own script (github.com/ChenyunWu/PhraseCutDataset, "
    "`python download_dataset.py -s <split>`) and point `data_root` (--data-root) to its VGPhraseCut_v0 folder."
)
_COORD_LIMIT = 2**31 - 1  # Pillow draws with C ints

# PhraseCut's diagnostic subsets that follow from a task and its image alone, in the order its
# evaluator reports them (the category, attribute-vocabulary and stuff subsets need its word
# lists and are left out).
SUBSETS = (
    "all",
    "i_single",
    "i_multi",
    "i_many",
    "p_name",
    "p_att",
    "p_att+",
    "p_rel",
    "p_rel+",
    "p_verbose",
    "p_attm",
    "p_relm",
    "s_small",
    "s_mid",
    "s_large",
    "p_att_rel",
    "d_cocotv",
    "d_notcocotv",
)


@dataclass(frozen=True)
class PhraseCutImage:
    image_id: int
    height: int
    width: int
    split: str
    coco_id: Optional[Any] = None

    @property
    def file_name(self) -> str:
        """The image's file under the image root (the release names images by their id)."""
        return f"{self.image_id}.jpg"


@dataclass(frozen=True)
class PhraseCutTask:
    """One phrase-region pair; ``index`` is its position in the split (file order)."""

    index: int
    task_id: str
    image_id: int
    sentence: str
    polygons: List[List[List[Tuple[float, float]]]] = field(repr=False)  # instance -> polygon -> (x, y)
    num_instances: int = 0
    phrase_structure: Optional[Mapping[str, Any]] = field(default=None, repr=False)


def polygons_to_mask(polygons: Iterable[Sequence[Sequence[float]]], height: int, width: int) -> np.ndarray:
    """PhraseCut's polygon -> mask rule (bool, ``height`` x ``width``): every vertex truncated to
    an integer (``int(x)``, toward zero), each polygon scan-converted the way Pillow 6.1.0 (the
    version PhraseCut pins) fills ``ImageDraw.polygon(..., outline=1, fill=1)``, the union of
    all; a polygon of fewer than 2 vertices adds nothing (PhraseCut skips it) and whatever lies
    outside the image is clipped. Pillow's own filler has changed since (every release from
    9.2 to 12.3 draws some edge pixels otherwise), so the rule is implemented here, not
    delegated to the installed Pillow (:func:`fill_polygon`; docs/phrasecut.md)."""
    check_pixel_count(width, height, "a PhraseCut ground truth")
    height, width = int(height), int(width)
    runs: List[np.ndarray] = []  # (row, first column, last column), clipped
    for polygon in polygons:
        if len(polygon) < 2:
            continue
        xs = np.array([int(x) for x, _ in polygon], dtype=np.int64)
        ys = np.array([int(y) for _, y in polygon], dtype=np.int64)
        runs.append(fill_polygon(xs, ys, height, width))
    mask = np.zeros((height, width), dtype=bool)
    if runs:
        rows, first, last = np.concatenate(runs, axis=1)
        lengths = last - first + 1
        # the flat index of every pixel of every run, without a loop over runs
        offsets = np.repeat(rows * width + first - (np.cumsum(lengths) - lengths), lengths)
        mask.reshape(-1)[offsets + np.arange(offsets.size)] = True
    return mask


def _round_up(f: np.ndarray) -> np.ndarray:
    """Pillow's ROUND_UP (half away from zero): float32 arithmetic for f >= 0, double below."""
    f = f.astype(np.float32)
    return np.where(f >= 0, np.floor(f + np.float32(0.5)), -np.floor(np.abs(f.astype(np.float64)) + 0.5))


def _round_down(f: np.ndarray) -> np.ndarray:
    """Pillow's ROUND_DOWN (half toward zero), with the same precision rules."""
    f = f.astype(np.float32)
    return np.where(f >= 0, np.ceil(f - np.float32(0.5)), -np.ceil(np.abs(f.astype(np.float64)) - 0.5))


def _clip_runs(rows: np.ndarray, a: np.ndarray, b: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pillow's horizontal line: ends swapped if reversed, clipped to the image; (3, n) runs."""
    a, b = np.minimum(a, b), np.maximum(a, b)
    keep = (rows >= 0) & (rows < height) & (a < width) & (b >= 0)
    a, b = np.clip(a[keep], 0, None), np.clip(b[keep], None, width - 1)
    return np.stack([rows[keep], a, b]).astype(np.int64)


def fill_polygon(xs: np.ndarray, ys: np.ndarray, height: int, width: int) -> np.ndarray:
    """The pixels Pillow 6.1.0's scan-line filler sets for one polygon of integer vertices, as
    (3, n) runs (row, first column, last column), vectorized over scan lines and edges:

    - edges join consecutive vertices, plus the last to the first unless they coincide;
    - a horizontal edge is drawn as a line from its smaller to its larger x;
    - every other edge stores its first vertex and dx = (x1 - x0) / (y1 - y0) in float32;
      scan lines run from the smallest edge top (at most height - 1, at least 0) to the
      largest edge bottom (at least 0, at most height); on each, an edge spanning it (ends
      included) gives x = (y - y0) * dx + x0 (float32), given twice where the line is the
      edge's bottom and not the last line; the sorted values pair up (1st-2nd, 3rd-4th ...;
      an odd last one is dropped) and each pair fills from ROUND_UP(left) to ROUND_DOWN(right),
      swapped if reversed (so a pair never fills nothing)."""
    closing = xs[-1] != xs[0] or ys[-1] != ys[0]
    x0 = np.concatenate([xs[:-1], xs[-1:]]) if closing else xs[:-1]
    y0 = np.concatenate([ys[:-1], ys[-1:]]) if closing else ys[:-1]
    x1 = np.concatenate([xs[1:], xs[:1]]) if closing else xs[1:]
    y1 = np.concatenate([ys[1:], ys[:1]]) if closing else ys[1:]
    flat = y0 == y1
    runs = [_clip_runs(y0[flat], x0[flat], x1[flat], height, width)]
    x0, y0, x1, y1 = x0[~flat], y0[~flat], x1[~flat], y1[~flat]
    if x0.size:
        top, bottom = np.minimum(y0, y1), np.maximum(y0, y1)
        dx = (x1 - x0).astype(np.float32) / (y1 - y0).astype(np.float32)
        first = max(min(height - 1, int(top.min())), 0)
        last = min(max(0, int(bottom.max())), height)
        lines = np.arange(first, last + 1, dtype=np.int64)[:, None]
        x = (lines - y0).astype(np.float32) * dx + x0.astype(np.float32)
        spans = (lines >= top) & (lines <= bottom)
        twice = (lines == bottom) & (lines < last)
        values = np.sort(np.concatenate([np.where(spans, x, np.inf), np.where(twice, x, np.inf)], axis=1), axis=1)
        pairs = (spans.sum(axis=1) + twice.sum(axis=1)) // 2
        left, right = values[:, 0::2], values[:, 1::2]
        valid = np.arange(left.shape[1])[None, :] < pairs[:, None]
        row = np.broadcast_to(lines, left.shape)[valid]
        start, end = _round_up(left[valid]).astype(np.int64), _round_down(right[valid]).astype(np.int64)
        runs.append(_clip_runs(row, start, end, height, width))
    return np.concatenate(runs, axis=1)


@dataclass
class PhraseCutSplit:
    """The tasks of one split (or of several joined by ``_``) with their images."""

    data_root: Path
    split: str
    refer_paths: List[Path]
    image_info_path: Path
    tasks: List[PhraseCutTask]
    images: Dict[int, PhraseCutImage]
    skipped: List[Dict[str, Any]] = field(default_factory=list)

    def gt_mask(self, task: PhraseCutTask) -> np.ndarray:
        """The union of the task's instance polygons at its image's size."""
        image = self.images[task.image_id]
        return polygons_to_mask((p for instance in task.polygons for p in instance), image.height, image.width)

    def tasks_by_image(self) -> List[Tuple[int, List[PhraseCutTask]]]:
        """Tasks grouped by image, images in order of first appearance."""
        groups: Dict[int, List[PhraseCutTask]] = {}
        for t in self.tasks:
            groups.setdefault(t.image_id, []).append(t)
        return list(groups.items())

    def subsets(self, task: PhraseCutTask, gt: np.ndarray) -> List[str]:
        """The task's subsets among :data:`SUBSETS`, decided as PhraseCut's ``get_subset`` does
        (instances = the task's instance boxes; size = ground-truth pixels / image pixels;
        phrase type and parts from ``phrase_structure``; d_cocotv: the image has a COCO id)."""
        image = self.images[task.image_id]
        found = {"all"}
        n = task.num_instances
        if n == 1:
            found.add("i_single")
        elif 1 < n < 5:
            found.add("i_multi")
        elif n >= 5:
            found.add("i_many")
        size = float(gt.sum()) / (image.width * image.height)
        found.add("s_small" if size < 0.02 else "s_large" if size > 0.2 else "s_mid")
        ps = task.phrase_structure
        if ps:
            atts, rels = ps.get("attributes") or [], ps.get("relation_descriptions") or []
            found.update(
                name
                for name, yes in (
                    ("p_att", len(atts) > 0),
                    ("p_attm", len(atts) > 1),
                    ("p_rel", len(rels) > 0),
                    ("p_relm", len(rels) > 1),
                    ("p_att_rel", len(atts) > 0 and len(rels) > 0),
                )
                if yes
            )
            kind = {"name": "p_name", "attribute": "p_att+", "relation": "p_rel+", "verbose": "p_verbose"}
            if ps.get("type") in kind:
                found.add(kind[ps["type"]])
        found.add("d_cocotv" if image.coco_id else "d_notcocotv")
        return [s for s in SUBSETS if s in found]


# ----------------------------------------------------------------------------- reading
def parse_split(split: str) -> List[str]:
    """``test`` -> ["test"]; ``val_miniv`` -> ["val", "miniv"] (PhraseCut's loader joins with ``_``)."""
    parts = str(split).split("_")
    bad = [p for p in parts if p not in SPLITS]
    if not split or bad or len(set(parts)) != len(parts):
        raise ConfigError(
            f"PhraseCut split '{split}' is not one of {list(SPLITS)} or several of them joined by '_' (e.g. val_miniv)."
        )
    return parts


def read_image_info(path: Path, splits: Sequence[str]) -> Tuple[Dict[int, PhraseCutImage], Dict[int, str]]:
    """(the images of ``splits``, every listed image's split) from ``image_data_split.json``."""
    from regionvlm.common.io import read_json

    data = read_json(path, "PhraseCut image list", "data_root", "a JSON list of {image_id, width, height, split}")
    if not isinstance(data, list):
        raise InputError(f"'{path}' must hold a list of images, got {type(data).__name__}.")
    images: Dict[int, PhraseCutImage] = {}
    split_of: Dict[int, str] = {}
    for i, entry in enumerate(data):
        fields = [
            whole_number(entry.get(k), strings=True) if isinstance(entry, Mapping) else None
            for k in ("image_id", "width", "height")
        ]
        split = entry.get("split") if isinstance(entry, Mapping) else None
        if any(f is None for f in fields) or not isinstance(split, str):
            raise InputError(
                f"'{path}': entry {i} needs a whole-number image_id, width and height and a split name, "
                f"got {str(entry)[:120]}."
            )
        image_id, width, height = fields
        if width <= 0 or height <= 0:
            raise InputError(f"'{path}': image {image_id} has the size {width}x{height}; sizes must be positive.")
        if image_id in split_of:
            raise InputError(f"'{path}': image {image_id} is listed twice (entries of one image must be unique).")
        split_of[image_id] = split
        if split in splits:
            images[image_id] = PhraseCutImage(image_id, height, width, split, entry.get("coco_id"))
    return images, split_of


def check_polygons(value: Any, where: str) -> List[List[List[Tuple[float, float]]]]:
    """``Polygons`` as instance -> polygon -> (x, y) floats; anything else stops naming ``where``."""

    def bad(detail: str) -> InputError:
        return InputError(
            f"{where}: 'Polygons' {detail}; it must be a list (one per instance) of lists of polygons, "
            "each a list of [x, y] points with finite coordinates."
        )

    if not isinstance(value, list):
        raise bad(f"is a {type(value).__name__}")
    out = []
    for i, instance in enumerate(value):
        if not isinstance(instance, list):
            raise bad(f"instance {i} is a {type(instance).__name__}, not a list of polygons")
        polygons = []
        for j, polygon in enumerate(instance):
            if not isinstance(polygon, list):
                raise bad(f"instance {i} polygon {j} is {str(polygon)[:60]}, not a list of points")
            points = []
            for k, point in enumerate(polygon):
                ok = (
                    isinstance(point, (list, tuple))
                    and len(point) == 2
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in point)
                    and all(math.isfinite(v) and abs(v) < _COORD_LIMIT for v in point)
                )
                if not ok:
                    raise bad(f"instance {i} polygon {j} point {k} is {str(point)[:60]}")
                points.append((float(point[0]), float(point[1])))
            polygons.append(points)
        out.append(polygons)
    return out


def _phrase_structure(value: Any, where: str) -> Optional[Mapping[str, Any]]:
    if value is None or (isinstance(value, Mapping) and not value):
        return None  # PhraseCut's subsets test `if phrase_structure:`
    lists_ok = isinstance(value, Mapping) and all(
        isinstance(value.get(k), (list, type(None))) for k in ("attributes", "relation_descriptions")
    )
    if not lists_ok or not isinstance(value.get("type"), (str, type(None))):
        raise InputError(
            f"{where}: 'phrase_structure' must be null or a mapping whose 'attributes' and "
            f"'relation_descriptions' are lists and whose 'type' is a string, got {str(value)[:100]}."
        )
    return {k: value.get(k) for k in ("name", "attributes", "relation_descriptions", "type")}


def load_phrasecut(data_root: str | Path, split: str, skip_missing: bool = False) -> PhraseCutSplit:
    """Read one split. Missing files stop with their path; a task whose image is unknown, or
    whose phrase is empty, stops too unless ``skip_missing`` (then it is listed in
    ``PhraseCutSplit.skipped``). Malformed entries always stop."""
    from regionvlm.common.io import read_json

    parts = parse_split(split)
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise MissingFileError(f"the PhraseCut folder '{root}' does not exist. {DOWNLOAD_HINT}")
    info_path = root / IMAGE_INFO
    refer_paths = [root / f"refer_{p}.json" for p in parts]
    for path in [info_path, *refer_paths]:
        if not path.is_file():
            raise MissingFileError(f"PhraseCut file '{path.name}' not found in '{root}'. {DOWNLOAD_HINT}")
    images, split_of = read_image_info(info_path, parts)

    tasks: List[PhraseCutTask] = []
    skipped: List[Dict[str, Any]] = []
    seen: Dict[str, Path] = {}
    for path in refer_paths:
        data = read_json(path, "PhraseCut task file", "data_root", "a JSON list of tasks")
        if not isinstance(data, list):
            raise InputError(f"'{path}' must hold a list of tasks, got {type(data).__name__}.")
        for i, task in enumerate(data):
            where = f"'{path}' task #{i}"
            if not isinstance(task, Mapping) or any(k not in task for k in ("task_id", "image_id", "phrase")):
                raise InputError(f"{where} must be a mapping with task_id, image_id, phrase and Polygons.")
            task_id, image_id = task["task_id"], whole_number(task["image_id"], strings=True)
            if isinstance(task_id, bool) or not isinstance(task_id, (str, int)) or str(task_id) == "":
                raise InputError(f"{where}: 'task_id' must be a non-empty string, got {task_id!r}.")
            task_id = str(task_id)
            where = f"'{path}' task {task_id}"
            if image_id is None:
                raise InputError(f"{where}: 'image_id' must be a whole number, got {task['image_id']!r}.")
            if task_id in seen:
                raise InputError(f"{where} appears twice (also in '{seen[task_id]}'); task ids must be unique.")
            seen[task_id] = path
            if "Polygons" not in task:
                raise InputError(
                    f"{where} has no 'Polygons' (the ground truth); use refer_<split>.json, not "
                    "refer_input_<split>.json."
                )
            polygons = check_polygons(task["Polygons"], where)
            boxes = task.get("instance_boxes")
            if boxes is not None and not isinstance(boxes, list):
                raise InputError(f"{where}: 'instance_boxes' must be a list of boxes, got {type(boxes).__name__}.")
            structure = _phrase_structure(task.get("phrase_structure"), where)
            phrase = task["phrase"]
            if not isinstance(phrase, str):
                raise InputError(f"{where}: 'phrase' must be a string, got {phrase!r}.")
            problem = None
            if image_id not in images:
                other = split_of.get(image_id)
                problem = (
                    f"image {image_id} is not in '{info_path}'"
                    if other is None
                    else f"image {image_id} belongs to split '{other}' in '{info_path}', not to '{split}'"
                )
            elif not phrase.strip():
                problem = f"task {task_id} has an empty phrase"
            if problem:
                if not skip_missing:
                    raise InputError(
                        f"{where}: {problem}. Use the files of one PhraseCut release, or set skip_missing to "
                        "skip (and list) such tasks."
                    )
                skipped.append({"task_id": task_id, "image_id": image_id, "reason": problem, "path": str(path)})
                continue
            count = len(boxes) if boxes is not None else len(polygons)
            tasks.append(PhraseCutTask(len(tasks), task_id, image_id, phrase, polygons, count, structure))
    if not tasks and not skipped:
        raise InputError(f"{', '.join(map(str, refer_paths))} hold(s) no task.")
    used = sorted({t.image_id for t in tasks})
    return PhraseCutSplit(root, split, refer_paths, info_path, tasks, {i: images[i] for i in used}, skipped)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="List the image file names of one PhraseCut split.")
    parser.add_argument("--data-root", required=True, help="the VGPhraseCut_v0 folder")
    parser.add_argument("--split", default="test", help="train, val, test, miniv, or joined: val_miniv")
    parser.add_argument("--out", default=None, help="write the list here (default: print)")
    args = parser.parse_args(argv)
    if args.out:
        require_output_file(args.out)
    split = load_phrasecut(args.data_root, args.split)
    names = [split.images[i].file_name for i in sorted(split.images)]
    write_or_print("".join(n + "\n" for n in names), args.out, f"{len(names)} images of PhraseCut {args.split}")


if __name__ == "__main__":
    from regionvlm.common.cli import run

    run(main)
