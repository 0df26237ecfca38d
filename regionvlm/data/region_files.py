"""Region files: a user's regions of their own images, one per line (docs/predict.md).

Two layouts, told apart by their content:

* JSONL, one region per line::

      {"image": "shop/0001.jpg", "region": {"box": [x, y, w, h]}, "question": "...", "id": "a1"}

  ``image`` (required): the path, relative to the image root. ``region`` (optional; absent
  or null: the whole image) holds exactly one of ``box`` ``[x, y, w, h]``, ``points``
  ``[[x, y], ...]``, ``polygon`` ``[[x1, y1, x2, y2, ...], ...]`` (COCO polygon lists; the
  parts are united) or ``rle`` (a COCO RLE, compressed or not), all in pixels of the stored
  image (origin top-left, EXIF orientation not applied, as in COCO). ``question``,
  ``caption`` (a string each) and ``id`` (an integer or a non-empty string, unique; default
  the line number) are optional; every other field is the user's and is carried through.
* COCO instances JSON (``images``, ``annotations``): every annotation is a region, its
  ``segmentation`` (polygons or RLE) or, without one or with ``coco_region="bbox"``, its
  ``bbox``; the id is the annotation id, the image its ``file_name``; an annotation's
  ``caption`` and ``question`` fields are read as in the JSONL layout.

Reading never stops at the first problem: :func:`read_region_file` returns every valid
record and every :class:`Problem` with its line number (or annotation index), and
:func:`check_images` adds the problems only the image files can show (a missing or
unreadable image, a region outside it). A file-level fault (no such file, a COCO file
without ``images``) raises at once.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from regionvlm.common.errors import InputError, MissingFileError, RegionVLMError
from regionvlm.region import Region, validate_rle, whole_number

GEOMETRIES = ("box", "points", "polygon", "rle")
KINDS = GEOMETRIES + ("whole",)  # "whole": no region, the whole image
COCO_REGIONS = ("auto", "bbox", "segmentation")
REGION_MARK = re.compile(r"\[(\d+)\]")
_SURROGATE = re.compile("[\ud800-\udfff]")
LAYOUT = (
    'JSONL with one object per line: {"image": "<path>", "region": {"box": [x, y, w, h]} | {"points": '
    '[[x, y], ...]} | {"polygon": [[x1, y1, ...], ...]} | {"rle": {"size": [h, w], "counts": ...}} (optional), '
    '"question": "...", "caption": "...", "id": ... (optional)}, or COCO instances JSON (docs/predict.md)'
)

Id = Union[int, str]


@dataclass(frozen=True)
class Problem:
    """One bad line: where (``line 12`` or ``annotations[3] (id 57)``) and what is wrong."""

    where: str
    message: str
    line: Optional[int] = None
    id: Optional[Id] = None

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"

    def as_row(self) -> Dict[str, Any]:
        return {"line": self.line, "where": self.where, "id": self.id, "error": self.message}


@dataclass(frozen=True)
class RegionRecord:
    """One region of the file, checked for shape and types (not yet against its image)."""

    index: int  # position among the file's regions (0-based)
    where: str
    line: Optional[int]  # JSONL line (1-based); None for COCO annotations
    id: Id
    image: str
    kind: str  # one of KINDS
    geometry: Any  # box [x, y, w, h]; points [[x, y], ...]; polygon [[...], ...]; rle dict; None (whole)
    question: Optional[str]
    caption: Optional[str]
    fields: Dict[str, Any]  # the input's own fields, carried to the output
    declared_size: Optional[Tuple[int, int]] = None  # (width, height) a COCO file states

    @property
    def key(self) -> str:
        """The id as the text that keys progress logs and seeds the region's points."""
        return str(self.id)

    def problem(self, message: str) -> Problem:
        return Problem(self.where, message, self.line, self.id)


@dataclass
class RegionFile:
    """Every valid record of a region file and every problem found, in file order."""

    path: Path
    layout: str  # "jsonl" or "coco"
    records: List[RegionRecord]
    problems: List[Problem] = field(default_factory=list)
    blank_lines: int = 0

    def summary(
        self, missing_images: Iterable[str] = (), records: Optional[Sequence[RegionRecord]] = None
    ) -> Dict[str, Any]:
        """Counts for a report: regions per kind, questions, captions, images (and missing
        ones) of ``records`` (default: every record read)."""
        records = self.records if records is None else records
        kinds = Counter(r.kind for r in records)
        captions = [r.caption for r in records if r.caption is not None]
        missing = sorted(set(missing_images))
        return {
            "file": str(self.path),
            "layout": self.layout,
            "regions": len(records),
            "kinds": {k: kinds.get(k, 0) for k in KINDS},
            "questions": sum(r.question is not None for r in records),
            "captions": sum(bool(c.strip()) for c in captions),
            "blank_captions": sum(not c.strip() for c in captions),
            "images": len({r.image for r in records}),
            "images_missing": len(missing),
            "missing_images": missing[:20],
            "problems": len(self.problems),
        }


# ------------------------------------------------------------------ values
def _finite_numbers(values: Any, what: str) -> List[float]:
    """``values`` as a list of finite numbers (bools refused), or InputError."""
    if not isinstance(values, (list, tuple)):
        raise InputError(f"{what} must be a list of numbers, got {_show(values)}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InputError(f"{what} must hold numbers, got {_show(v)} in {_show(values)}")
        if not math.isfinite(v):
            raise InputError(f"{what} holds {v} (NaN or infinity) in {_show(values)}")
        out.append(float(v))
    return out


def _show(value: Any, limit: int = 80) -> str:
    text = json.dumps(value) if _jsonable(value) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        return False
    return True


def check_geometry(kind: str, value: Any) -> Any:
    """A region's geometry in a normal form, checked for shape, types and finiteness (not
    against the image): box ``[x, y, w, h]`` with w, h > 0; points ``[[x, y], ...]``;
    polygon ``[[x1, y1, ...], ...]`` (each >= 3 points); rle a checked COCO RLE dict."""
    if kind == "box":
        box = _finite_numbers(value, "region.box")
        if len(box) != 4:
            raise InputError(f"region.box must be [x, y, w, h] (4 numbers), got {_show(value)}")
        if box[2] <= 0 or box[3] <= 0:
            raise InputError(f"region.box [x, y, w, h] needs a positive width and height, got {_show(value)}")
        return box
    if kind == "points":
        if not isinstance(value, list) or not value:
            raise InputError(f"region.points must be a non-empty list of [x, y] pairs, got {_show(value)}")
        points = []
        for p in value:
            pair = _finite_numbers(p, "region.points")
            if len(pair) != 2:
                raise InputError(f"region.points must hold [x, y] pairs, got {_show(p)}")
            points.append(pair)
        return points
    if kind == "polygon":
        if not isinstance(value, list) or not value:
            raise InputError(
                f"region.polygon must be a non-empty list of [x1, y1, x2, y2, ...] lists, got {_show(value)}"
            )
        parts = []
        for part in value:
            coords = _finite_numbers(part, "region.polygon")
            if len(coords) < 6 or len(coords) % 2:
                raise InputError(
                    f"region.polygon parts need an even number (>= 6) of coordinates x1, y1, x2, y2, ..., "
                    f"got {len(coords)} in {_show(part)}"
                )
            parts.append(coords)
        return parts
    if kind == "rle":
        validate_rle(value, "region.rle")
        counts = value["counts"]
        return {"size": list(value["size"]), "counts": counts}
    raise InputError(f"unknown region kind {kind!r}")


def _region_of(value: Any) -> Tuple[str, Any]:
    if value is None:
        return "whole", None
    if not isinstance(value, Mapping):
        raise InputError(f"'region' must be an object such as {{\"box\": [x, y, w, h]}} or null, got {_show(value)}")
    keys = [k for k in value if k in GEOMETRIES]
    other = sorted(set(value) - set(GEOMETRIES))
    if other or len(keys) != 1:
        raise InputError(
            f"'region' must hold exactly one of {list(GEOMETRIES)}, got the key(s) {sorted(map(str, value))}"
        )
    return keys[0], check_geometry(keys[0], value[keys[0]])


def _text_field(entry: Mapping[str, Any], key: str) -> Optional[str]:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"'{key}' must be a string, got {_show(value)}")
    bad = _SURROGATE.search(value)
    if bad:
        raise InputError(f"'{key}' is not valid Unicode (a lone surrogate at character {bad.start()})")
    return value


def _question(entry: Mapping[str, Any], need_question: bool) -> Optional[str]:
    question = _text_field(entry, "question")
    if question is None:
        if need_question:
            raise InputError("missing key 'question' (answering needs a question on every line)")
        return None
    if not question.strip():
        raise InputError("'question' is empty")
    others = sorted({int(m) for m in REGION_MARK.findall(question)} - {1})
    if others:
        raise InputError(f"'question' mentions {', '.join(f'[{i}]' for i in others)}, but a line has one region, [1]")
    return question


def _record_id(value: Any, default: int) -> Id:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InputError(f"'id' must be an integer or a string, got {_show(value)}")
    if isinstance(value, str) and not value.strip():
        raise InputError("'id' is an empty string")
    return value


# ------------------------------------------------------------------ reading
def read_region_file(
    path: Union[str, Path], need_question: bool = False, coco_region: str = "auto", what: str = "region file"
) -> RegionFile:
    """Every record and problem of a JSONL or COCO region file (module docstring).
    ``need_question``: a line without a question is a problem (answering)."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise InputError(f"{what} '{p}' is a folder; give the file.")
    if not p.is_file():
        raise MissingFileError(f"{what} '{p}' not found.")
    if coco_region not in COCO_REGIONS:
        raise InputError(f"the COCO region must be one of {list(COCO_REGIONS)}, got {coco_region!r}.")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} '{p}' is not UTF-8 text ({exc.reason} at byte {exc.start}).") from None
    except OSError as exc:
        raise InputError(f"cannot read {what} '{p}': {exc.strerror or exc}.") from None
    whole = _whole_json(text)
    if isinstance(whole, Mapping) and ("annotations" in whole or "images" in whole):
        return _read_coco(p, whole, need_question, coco_region)
    return _read_jsonl(p, text, need_question)


def _whole_json(text: str) -> Any:
    stripped = text.lstrip()
    if not stripped.startswith("{"):
        return None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None


def _read_jsonl(path: Path, text: str, need_question: bool) -> RegionFile:
    records: List[RegionRecord] = []
    problems: List[Problem] = []
    seen: Dict[str, str] = {}
    blank = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        where = f"line {number}"
        if not raw.strip():
            blank += 1
            continue
        try:
            entry = json.loads(raw)
        except json.JSONDecodeError as exc:
            problems.append(Problem(where, f"not valid JSON ({exc.msg} at column {exc.colno})", number))
            continue
        except RecursionError:
            problems.append(Problem(where, "nested too deeply to be a region", number))
            continue
        if not isinstance(entry, dict):
            problems.append(Problem(where, f"expected a JSON object, got {_show(entry)}", number))
            continue
        record_id: Optional[Id] = None
        try:
            record_id = _record_id(entry.get("id"), number)
            image = entry.get("image")
            if image is None:
                raise InputError("missing key 'image' (the image's path)")
            if not isinstance(image, str) or not image.strip():
                raise InputError(f"'image' must be a non-empty path string, got {_show(image)}")
            kind, geometry = _region_of(entry.get("region"))
            question = _question(entry, need_question)
            caption = _text_field(entry, "caption")
        except RegionVLMError as exc:
            problems.append(Problem(where, _plain(exc), number, record_id))
            continue
        key = str(record_id)
        if key in seen:
            problems.append(
                Problem(
                    where, f"id {record_id!r} repeats the id of {seen[key]} (ids must be unique)", number, record_id
                )
            )
            continue
        seen[key] = where
        fields = {k: v for k, v in entry.items() if k != "id"}
        records.append(
            RegionRecord(len(records), where, number, record_id, image, kind, geometry, question, caption, fields)
        )
    return RegionFile(path, "jsonl", records, problems, blank)


def _read_coco(path: Path, data: Mapping[str, Any], need_question: bool, coco_region: str) -> RegionFile:
    images_list, anns = data.get("images"), data.get("annotations")
    if not isinstance(images_list, list) or not isinstance(anns, list):
        raise InputError(f"'{path}' looks like COCO instances JSON but lacks the lists 'images' and 'annotations'.")
    problems: List[Problem] = []
    images: Dict[Any, Tuple[str, Optional[Tuple[int, int]]]] = {}
    for i, img in enumerate(images_list):
        image_id = whole_number(img.get("id")) if isinstance(img, Mapping) else None
        if image_id is None or not isinstance(img.get("file_name"), str) or not img["file_name"].strip():
            problems.append(Problem(f"images[{i}]", f"needs an integer 'id' and a 'file_name', got {_show(img)}"))
            continue
        width, height = whole_number(img.get("width")), whole_number(img.get("height"))
        images[image_id] = (img["file_name"], None if width is None or height is None else (width, height))
    records: List[RegionRecord] = []
    seen: Dict[str, str] = {}
    for i, ann in enumerate(anns):
        raw_id = ann.get("id") if isinstance(ann, Mapping) else None
        record_id = whole_number(raw_id)
        where = f"annotations[{i}]" + (f" (id {raw_id})" if record_id is not None else "")
        try:
            if not isinstance(ann, Mapping):
                raise InputError(f"expected an object, got {_show(ann)}")
            if record_id is None:
                raise InputError(f"needs an integer 'id', got {_show(raw_id)}")
            image_id = whole_number(ann.get("image_id"))
            if image_id not in images:
                raise InputError(f"'image_id' {_show(ann.get('image_id'))} is not an id of the file's 'images'")
            file_name, size = images[image_id]
            kind, geometry = _coco_region(ann, coco_region, size)
            question = _question(ann, need_question)
            caption = _text_field(ann, "caption")
        except RegionVLMError as exc:
            problems.append(Problem(where, _plain(exc), None, raw_id if record_id is not None else None))
            continue
        key = str(record_id)
        if key in seen:
            problems.append(
                Problem(where, f"id {record_id} repeats the id of {seen[key]} (ids must be unique)", None, record_id)
            )
            continue
        seen[key] = where
        fields = {"image": file_name, **{k: v for k, v in ann.items() if k not in ("id", "segmentation")}}
        records.append(
            RegionRecord(
                len(records), where, None, record_id, file_name, kind, geometry, question, caption, fields, size
            )
        )
    return RegionFile(path, "coco", records, problems)


def _coco_region(ann: Mapping[str, Any], coco_region: str, size: Optional[Tuple[int, int]]) -> Tuple[str, Any]:
    segm = ann.get("segmentation")
    use_box = coco_region == "bbox" or (coco_region == "auto" and not segm)
    if use_box:
        if ann.get("bbox") is None:
            raise InputError("has neither a 'segmentation' nor a 'bbox'")
        return "box", check_geometry("box", ann["bbox"])
    if not segm:
        raise InputError("has no 'segmentation' (use the bbox: coco_region 'auto' or 'bbox')")
    if isinstance(segm, Mapping):
        rle = dict(segm)
        if isinstance(rle.get("counts"), list) and size is not None and "size" not in rle:
            rle["size"] = [size[1], size[0]]
        return "rle", check_geometry("rle", rle)
    if isinstance(segm, list) and segm and all(isinstance(p, Mapping) for p in segm):
        if len(segm) != 1:
            raise InputError(f"holds {len(segm)} RLEs; give one RLE or polygons")
        return "rle", check_geometry("rle", segm[0])
    return "polygon", check_geometry("polygon", segm)


def _plain(exc: BaseException) -> str:
    return str(exc).rstrip(".")


# ------------------------------------------------------------------ against the images
def image_path(record: RegionRecord, image_root: Optional[Path]) -> Path:
    """Where the record's image is: its path under ``image_root`` unless absolute."""
    p = Path(record.image).expanduser()
    return p if p.is_absolute() or image_root is None else Path(image_root) / p


def check_images(
    records: Sequence[RegionRecord], image_root: Optional[Path]
) -> Tuple[Dict[str, Tuple[int, int]], List[Problem], List[str]]:
    """Read every image's size from its header (no pixels decoded); return the sizes by image
    path string, a problem for every record whose image is missing or unreadable or whose
    region does not lie inside its image, and the missing images."""
    from regionvlm.data.images import read_image_size

    sizes: Dict[str, Tuple[int, int]] = {}
    failures: Dict[str, str] = {}
    missing: List[str] = []
    for record in records:
        if record.image in sizes or record.image in failures:
            continue
        path = image_path(record, image_root)
        try:
            sizes[record.image] = read_image_size(path, f"image '{path}'")
        except MissingFileError:
            failures[record.image] = f"image '{record.image}' not found at '{path}' (check the image root)"
            missing.append(record.image)
        except RegionVLMError as exc:
            failures[record.image] = _plain(exc)
    problems: List[Problem] = []
    for record in records:
        if record.image in failures:
            problems.append(record.problem(failures[record.image]))
            continue
        message = fits_image(record, sizes[record.image])
        if message:
            problems.append(record.problem(message))
    return sizes, problems, missing


def fits_image(record: RegionRecord, size: Tuple[int, int]) -> Optional[str]:
    """Why the record's region does not lie inside a ``(width, height)`` image, or None."""
    width, height = size
    if record.declared_size is not None and tuple(record.declared_size) != (width, height):
        w, h = record.declared_size
        return f"the file gives image '{record.image}' the size {w}x{h}, but it is {width}x{height}"
    kind, g = record.kind, record.geometry
    if kind == "box":
        x, y, w, h = g
        if x < 0 or y < 0 or x + w > width or y + h > height:
            return f"box [x, y, w, h] = {_show(g)} reaches outside the {width}x{height} image"
    elif kind in ("points", "polygon"):
        flat = np.asarray([c for part in g for c in part], dtype=np.float64).reshape(-1, 2)
        outside = (flat[:, 0] < 0) | (flat[:, 0] > width) | (flat[:, 1] < 0) | (flat[:, 1] > height)
        if outside.any():
            return f"{kind} point {flat[outside][0].tolist()} lies outside the {width}x{height} image"
    elif kind == "rle" and list(g["size"]) != [height, width]:
        return f"rle size [h, w] = {g['size']} differs from the image's [{height}, {width}]"
    return None


def build_region(record: RegionRecord, size: Tuple[int, int]) -> Region:
    """The record's :class:`Region` on its ``(width, height)`` image (coordinates normalized);
    InputError naming the record if it cannot be one (e.g. a polygon that covers no pixel)."""
    width, height = size
    try:
        if record.kind == "whole":
            return Region.whole_image()
        if record.kind == "box":
            x, y, w, h = record.geometry
            return Region.from_box((x, y, x + w, y + h), image_size=size)
        if record.kind == "points":
            return Region.from_points(record.geometry, image_size=size)
        from regionvlm.data.refer import decode_segmentation

        segm = record.geometry if record.kind == "polygon" else dict(record.geometry)
        mask = decode_segmentation(segm, height, width, rule="union", what=f"region.{record.kind}")
        if not mask.any():
            raise InputError(f"the {record.kind} covers no pixel of the image")
        return Region("mask", mask)
    except RegionVLMError as exc:
        raise InputError(f"{record.where}: {_plain(exc)}.") from None
