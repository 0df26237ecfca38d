"""Visual Genome region descriptions -> region-caption annotations (docs/method.md, "Training").

Usage::

    python -m regionvlm.data.visual_genome --regions region_descriptions.json \\
        [--image-data image_data.json] --image-root /data/vg --out vg_regions.json \\
        [--points 20] [--seed 0] [--max-area 0.5]

Each region box becomes ``--points`` (20) points drawn uniformly inside it (rounded to 4
decimals, as the authors' script), from a generator seeded by ``(seed, image_id)`` so the
output does not depend on file order. Boxes covering more than ``--max-area`` (half) of the
image are skipped, as officially. Output has the shape of the Localized Narratives
annotations (``regionvlm.data.localized_narratives``)::

    [{"image_path": ..., "image_id": "1", "dataset_id": "visual_genome",
      "sent_to_points": {"a white clock on the wall": [[x, y], ... 20 points]}}]

Accepted inputs (detected from the file):

* the official ``region_descriptions.json`` (a list of ``{"id", "regions": [{"image_id",
  "phrase", "x", "y", "width", "height"}]}``); image sizes come from ``--image-data``
  (the official ``image_data.json``, whose ``url`` also says ``VG_100K`` or
  ``VG_100K_2``), or else from the image files' headers;
* a COCO-style file as the authors used (``{"images": [{"id", "width", "height"}],
  "annotations": [{"image_id", "bbox": [x, y, w, h], "caption"}]}``).

Image paths: ``<image root>/<folder of image_data url>/<id>.jpg`` when known, else the
first existing of ``VG_100K/{image_id}.jpg``, ``VG_100K_2/{image_id}.jpg``,
``images/{image_id}.jpg`` (``--image-pattern`` replaces that list).

Deviations (reported as counts, never silent): boxes are clipped to the image (the
authors' points could fall outside it), degenerate boxes and empty or blank phrases are
skipped, images whose file is not the size the annotation gives are dropped (header read,
EXIF orientation ignored: the boxes are in stored pixels),
images left without any region are dropped (the authors wrote them with an empty dict,
which their loader cannot sample), and a repeated phrase keeps the last box. A run that
keeps no image at all stops with an error (the report is still written, the output is not).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from regionvlm.common.errors import ConfigError, InputError
from regionvlm.data.localized_narratives import ImagePathResolver
from regionvlm.data.preprocessing import (
    Parser,
    add_output_arguments,
    finish,
    listed,
    parse_patterns,
    write_records,
)

DEFAULT_NUM_POINTS = 20
DEFAULT_MAX_AREA = 0.5
DATASET_ID = "visual_genome"
DEFAULT_VG_PATTERNS = {DATASET_ID: ["VG_100K/{image_id}.jpg", "VG_100K_2/{image_id}.jpg", "images/{image_id}.jpg"]}


@dataclass
class VGImage:
    image_id: str
    width: Optional[float]
    height: Optional[float]
    folder: Optional[str]
    regions: List[Tuple[str, float, float, float, float]]  # phrase, x, y, w, h in pixels


@dataclass
class VGReport:
    images: int = 0
    images_written: int = 0
    regions: int = 0
    regions_kept: int = 0
    skipped: Dict[str, int] = field(
        default_factory=lambda: {
            "too_large": 0,
            "degenerate": 0,
            "empty_phrase": 0,
            "duplicate_phrase": 0,
            "malformed": 0,
        }
    )
    clipped: int = 0
    images_dropped: Dict[str, int] = field(
        default_factory=lambda: {"no_regions": 0, "missing_image": 0, "no_size": 0, "size_mismatch": 0}
    )
    problems: List[str] = field(default_factory=list)

    def as_dict(self) -> Dict[str, Any]:
        return {
            "images": self.images,
            "images_written": self.images_written,
            "regions": self.regions,
            "regions_kept": self.regions_kept,
            "regions_skipped": dict(self.skipped),
            "boxes_clipped": self.clipped,
            "images_dropped": dict(self.images_dropped),
            "problems": list(self.problems),
        }

    def summary(self) -> str:
        lines = [
            f"images: {self.images}, written: {self.images_written}, dropped: {self.images_dropped}",
            f"regions: {self.regions}, kept: {self.regions_kept}, skipped: {self.skipped}, "
            f"boxes clipped to the image: {self.clipped}",
        ]
        return "\n".join(lines + listed([("problems", self.problems, len(self.problems))]))


def box_points(box_xyxy: Sequence[float], num_points: int, rng: np.random.Generator) -> List[List[float]]:
    """``num_points`` uniform points in a normalized box, rounded to 4 decimals."""
    x0, y0, x1, y1 = box_xyxy
    pts = rng.uniform([x0, y0], [x1, y1], size=(num_points, 2))
    return np.round(pts, 4).tolist()


def image_rng(seed: int, image_id: str) -> np.random.Generator:
    """Per-image generator: numeric ids seed directly, other ids through their UTF-8 bytes."""
    key = [int(image_id)] if image_id.isdigit() else list(image_id.encode("utf-8"))
    return np.random.default_rng([int(seed), *key])


def _load_json(path: str | Path, what: str) -> Any:
    from regionvlm.common.io import read_json

    p = Path(path).expanduser()
    if p.is_dir():
        raise InputError(f"{what} '{p}' is a folder; give the JSON file.")
    return read_json(
        p,
        what,
        layout="the Visual Genome region descriptions (region_descriptions.json + "
        "image_data.json from https://homes.cs.washington.edu/~ranjay/visualgenome/api.html) "
        "or a COCO-style file with images/annotations",
    )


def _image_data(path: Optional[str | Path]) -> Dict[str, Dict[str, Any]]:
    if path is None:
        return {}
    data = _load_json(path, "VG image data")
    if not isinstance(data, list):
        raise InputError(f"VG image data '{path}' must be a list of {{image_id, width, height, url}}.")
    out = {}
    for item in data:
        if isinstance(item, dict) and ("image_id" in item or "id" in item):
            url = str(item.get("url") or "")
            parts = url.rstrip("/").split("/")
            out[str(item.get("image_id", item.get("id")))] = {
                "width": _size(item.get("width")),
                "height": _size(item.get("height")),
                "folder": parts[-2] if len(parts) >= 2 and parts[-2].startswith("VG_100K") else None,
            }
    return out


def iter_vg_images(
    data: Any, regions_file: str | Path, image_data_file: Optional[str | Path], report: VGReport
) -> Iterator[VGImage]:
    """Either input format (``data``, decoded from ``regions_file``) as :class:`VGImage` records."""
    if isinstance(data, dict) and "annotations" in data and "images" in data:
        if not isinstance(data["images"], list) or not isinstance(data["annotations"], list):
            raise InputError(f"VG regions file '{regions_file}': 'images' and 'annotations' must be lists.")
        by_image: Dict[str, VGImage] = {}
        for k, img in enumerate(data["images"]):
            if not isinstance(img, dict) or "id" not in img:
                report.skipped["malformed"] += 1
                report.problems.append(f"{regions_file}: images[{k}] needs an 'id'")
                continue
            iid = str(img["id"])
            by_image[iid] = VGImage(iid, _size(img.get("width")), _size(img.get("height")), None, [])
        for k, ann in enumerate(data["annotations"]):
            try:
                x, y, w, h = (float(v) for v in ann["bbox"])
                if not all(np.isfinite(v) for v in (x, y, w, h)):
                    raise ValueError
                by_image[str(ann["image_id"])].regions.append((str(ann["caption"]), x, y, w, h))
            except (KeyError, TypeError, ValueError):
                report.skipped["malformed"] += 1
                report.problems.append(
                    f"{regions_file}: annotations[{k}] needs image_id (of a listed image), "
                    f"a finite bbox [x, y, w, h] and caption"
                )
        yield from by_image.values()
        return
    if not isinstance(data, list):
        raise InputError(
            f"VG regions file '{regions_file}' is neither region_descriptions.json (a list) nor a "
            f"COCO-style dict with 'images' and 'annotations'."
        )
    meta = _image_data(image_data_file)
    for k, entry in enumerate(data):
        regions = entry.get("regions") if isinstance(entry, dict) else None
        if not isinstance(regions, list):
            report.skipped["malformed"] += 1
            report.problems.append(f"{regions_file}: entry [{k}] has no 'regions' list")
            continue
        first = regions[0] if regions and isinstance(regions[0], dict) else {}
        iid = str(entry.get("id", entry.get("image_id", first.get("image_id", ""))))
        info = meta.get(iid, {})
        img = VGImage(iid, info.get("width"), info.get("height"), info.get("folder"), [])
        for j, r in enumerate(regions):
            try:
                box = tuple(float(r[key]) for key in ("x", "y", "width", "height"))
                if not all(np.isfinite(v) for v in box):
                    raise ValueError
                img.regions.append((str(r["phrase"]), *box))
            except (KeyError, TypeError, ValueError):
                report.skipped["malformed"] += 1
                report.problems.append(
                    f"{regions_file}: entry [{k}] region [{j}] needs phrase and finite x, y, width, height"
                )
        yield img


def image_sent_to_points(
    img: VGImage, width: float, height: float, num_points: int, seed: int, max_area: float, report: VGReport
) -> Dict[str, List[List[float]]]:
    rng = image_rng(seed, img.image_id)
    out: Dict[str, List[List[float]]] = {}
    for phrase, x, y, w, h in img.regions:
        report.regions += 1
        phrase = phrase.strip()
        if not phrase:
            report.skipped["empty_phrase"] += 1
            continue
        box = np.array([x / width, y / height, (x + w) / width, (y + h) / height])
        if (w / width) * (h / height) > max_area:
            report.skipped["too_large"] += 1
            continue
        clipped = np.clip(box, 0.0, 1.0)
        if not np.array_equal(clipped, box):
            report.clipped += 1
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            report.skipped["degenerate"] += 1
            continue
        if phrase in out:
            report.skipped["duplicate_phrase"] += 1
        out[phrase] = box_points(clipped.tolist(), num_points, rng)
    report.regions_kept += len(out)
    return out


def _size(value: Any) -> Optional[float]:
    """A width/height from a file: a positive finite number, else None (read from the image)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
        return None
    return float(value)


def _size_from_file(path: Path) -> Optional[Tuple[int, int]]:
    from regionvlm.common.errors import RegionVLMError
    from regionvlm.data.images import read_image_size

    try:
        return read_image_size(path, "VG image")
    except RegionVLMError:
        return None


def _size_mismatch(path: Path, width: float, height: float, source: str | Path, image_id: str) -> Optional[str]:
    """Why the image file does not have the size the annotation gives it (None when it has,
    or when its header cannot be read: the training reader reports that file)."""
    from regionvlm.data.images import check_image_size

    size = _size_from_file(path)
    if size is None:
        return None
    try:
        check_image_size(size, (width, height), f"image {image_id} '{path}'", f"'{source}'")
    except InputError as exc:
        return str(exc)
    return None


def preprocess_visual_genome(
    regions_file: str | Path,
    out: str | Path,
    image_root: str | Path = ".",
    image_data_file: Optional[str | Path] = None,
    num_points: int = DEFAULT_NUM_POINTS,
    seed: int = 0,
    max_area: float = DEFAULT_MAX_AREA,
    patterns: Optional[Dict[str, List[str]]] = None,
    check_images: bool = True,
    relative_paths: bool = False,
    progress: bool = True,
    write_report: bool = True,
    allow_empty: bool = False,
) -> VGReport:
    """Convert VG region descriptions into the region-caption annotation file ``out``. No
    image kept at all is an InputError unless ``allow_empty`` (then ``out`` is an empty list)."""
    if num_points < 1:
        raise ConfigError(f"--points must be at least 1, got {num_points}.")
    if seed < 0:
        raise ConfigError(f"--seed must be a non-negative whole number, got {seed}.")
    if not 0.0 < max_area <= 1.0:
        raise ConfigError(f"--max-area must be in (0, 1], got {max_area}.")
    pats = {DATASET_ID: list((patterns or {}).get(DATASET_ID, DEFAULT_VG_PATTERNS[DATASET_ID]))}
    resolver = ImagePathResolver(image_root, pats, check_exists=check_images, relative=relative_paths, defaults={})
    report = VGReport()
    data = _load_json(regions_file, "VG regions file")
    if not isinstance(data, (list, dict)):
        raise InputError(
            f"VG regions file '{regions_file}' is neither region_descriptions.json (a list) nor a "
            f"COCO-style dict with 'images' and 'annotations'."
        )
    images = iter_vg_images(data, regions_file, image_data_file, report)
    total = len(data) if isinstance(data, list) else len(data.get("images", [])) if isinstance(data, dict) else None

    def records() -> Iterator[Dict[str, Any]]:
        for img in tqdm(images, total=total, desc="visual genome", disable=not progress, dynamic_ncols=True):
            report.images += 1
            if not img.regions:
                report.images_dropped["no_regions"] += 1
                continue
            path = None
            if img.folder is not None:
                rel = f"{img.folder}/{img.image_id}.jpg"
                if not check_images or (resolver.root / rel).is_file():
                    path = rel if relative_paths else str(resolver.root / rel)
            path = path or resolver.resolve(DATASET_ID, img.image_id)
            if path is None:
                report.images_dropped["missing_image"] += 1
                report.problems.append(
                    f"image {img.image_id}: no file among "
                    f"{resolver.candidates(DATASET_ID, img.image_id)} under {resolver.root}"
                )
                continue
            width, height = img.width, img.height
            full = Path(path) if Path(path).is_absolute() else resolver.root / path
            if width and height and check_images:  # the annotation's size must be the image's
                mismatch = _size_mismatch(full, width, height, image_data_file or regions_file, img.image_id)
                if mismatch:
                    report.images_dropped["size_mismatch"] += 1
                    report.problems.append(mismatch)
                    continue
            if not width or not height:
                size = _size_from_file(full)
                if size is None:
                    report.images_dropped["no_size"] += 1
                    report.problems.append(
                        f"image {img.image_id}: size unknown (pass --image-data) and '{full}' is not readable"
                    )
                    continue
                width, height = size
            sent = image_sent_to_points(img, float(width), float(height), num_points, seed, max_area, report)
            if not sent:
                report.images_dropped["no_regions"] += 1
                continue
            report.images_written += 1
            yield {"image_path": path, "image_id": img.image_id, "dataset_id": DATASET_ID, "sent_to_points": sent}

    write_records(
        out,
        records(),
        report,
        write_report=write_report,
        allow_empty=allow_empty,
        empty=(
            "image region",
            [regions_file],
            lambda: f"{report.images} images: {report.images_dropped}, regions skipped {report.skipped}",
        ),
    )
    return report


def main(argv: Optional[Sequence[str]] = None) -> VGReport:
    parser = Parser(
        prog="python -m regionvlm.data.visual_genome",
        description="VG region descriptions -> {phrase: 20 points} annotations.",
    )
    parser.add_argument(
        "--regions", required=True, help="region_descriptions.json (official) or a COCO-style images/annotations file"
    )
    parser.add_argument("--image-data", default=None, help="official image_data.json (sizes and folders)")
    parser.add_argument("--image-root", default=".", help="folder holding VG_100K/ and VG_100K_2/")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-area",
        type=float,
        default=DEFAULT_MAX_AREA,
        help="skip boxes covering more than this fraction of the image (0.5)",
    )
    parser.add_argument(
        "--image-pattern",
        action="append",
        default=[],
        metavar=f"{DATASET_ID}=PATTERN",
        help="image path pattern(s) relative to --image-root, with {image_id}",
    )
    add_output_arguments(parser, DEFAULT_NUM_POINTS, "--image-root")
    args = parser.parse_args(argv)
    patterns = parse_patterns(args.image_pattern)
    unknown = set(patterns) - {DATASET_ID}
    if unknown:
        raise ConfigError(f"--image-pattern keys must be '{DATASET_ID}', got {sorted(unknown)}.")
    report = preprocess_visual_genome(
        args.regions,
        args.out,
        image_root=args.image_root,
        image_data_file=args.image_data,
        num_points=args.points,
        seed=args.seed,
        max_area=args.max_area,
        patterns=patterns,
        check_images=not args.no_check_images,
        relative_paths=args.relative_paths,
        progress=not args.quiet,
    )
    return finish(report, args.out)


if __name__ == "__main__":
    from regionvlm.common.cli import run

    run(main)
