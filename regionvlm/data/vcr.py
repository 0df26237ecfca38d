"""Visual Commonsense Reasoning (VCR) files: the official ``{train,val,test}.jsonl`` and the
per-image metadata JSON (docs/evaluation.md).

One JSONL line is one item::

    {"annot_id": "val-0", "objects": ["person", "person", "car"],
     "question": ["Why", "is", [0], "smiling", "?"],
     "answer_choices": [[[0], "is", "happy", "."], ...4 choices],
     "rationale_choices": [[...], ...4 choices],
     "answer_label": 1, "rationale_label": 3,
     "img_fn": "lsmdc_.../x@0.jpg", "metadata_fn": "lsmdc_.../x@0.json", ...}

A token is a word or an *object reference*: a list of indices into ``objects``. The
metadata JSON next to the image holds ``boxes`` ([x1, y1, x2, y2, score] per object),
``segms`` (per object a list of polygons, each a list of [x, y] points), ``width``, ``height``.

Object references are rendered the way the authors' evaluation renders them: it joins the
tokens with ``" ".join(str(token))``, so a reference is Python's ``str`` of the index list,
``[2]`` or ``[0, 3]`` — 0-based indices exactly as stored in the file (the authors index
the mask list with the printed number directly, so the printed number *is* the 0-based
index). Referenced objects are read here from the token lists themselves. The authors
instead re-parse the rendered prompt and take every *digit character* inside brackets as
one object, so ``[12]`` becomes objects 1 and 2 and object 12 is never shown to the
model; this loader handles indices >= 10 correctly (it never parses text).

Masks come from the polygons via pycocotools at the metadata's ``width x height``;
polygons with fewer than three points are ignored (pycocotools would read a 4-number list
as a box). An object whose polygons cover no pixel falls back to its box, and the sample
says so (``mask_fallbacks``) so the evaluation can count it.

Bad input stops with ``file:line``, the item id and what was expected. With
``skip_missing=True`` a bad item (malformed line, missing image or metadata, object index
outside the object list, unreadable metadata) is skipped instead; every skipped item is
listed with its reason, never dropped silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import numpy as np

from regionvlm.common.errors import InputError, MissingFileError, RegionVLMError
from regionvlm.common.io import check_regular_file
from regionvlm.region import check_pixel_count

NUM_CHOICES = 4
REQUIRED_FIELDS = ("objects", "question", "answer_choices", "rationale_choices", "img_fn", "metadata_fn")
TEXT_FIELDS = ("question", "answer_choices", "rationale_choices")

Reference = Tuple[int, ...]
Token = Union[str, Reference]
Tokens = Tuple[Token, ...]


# ----------------------------------------------------------------- rendering
def render_tokens(tokens: Iterable[Token]) -> str:
    """Tokens joined by single spaces; a reference prints as ``str(list)``: ``[2]``, ``[0, 3]``."""
    return " ".join(tok if isinstance(tok, str) else "[" + ", ".join(str(i) for i in tok) + "]" for tok in tokens)


def object_references(*token_lists: Iterable[Token]) -> List[int]:
    """Every referenced object index in reading order (repeats kept), across the lists."""
    return [i for tokens in token_lists for tok in tokens if not isinstance(tok, str) for i in tok]


# ---------------------------------------------------------------------- items
@dataclass(frozen=True)
class VCRItem:
    """One question with its four answers and four rationales (labels are 0-based, None on test)."""

    key: str
    where: str
    objects: Tuple[str, ...]
    question: Tokens
    answer_choices: Tuple[Tokens, ...]
    rationale_choices: Tuple[Tokens, ...]
    answer_label: Optional[int]
    rationale_label: Optional[int]
    img_fn: str
    metadata_fn: str

    def referenced_objects(self) -> List[int]:
        """Sorted distinct objects referenced anywhere in the item (what any prompt can need)."""
        return sorted(set(object_references(self.question, *self.answer_choices, *self.rationale_choices)))


@dataclass
class Skipped:
    """An item left out under ``skip_missing``: its id (or file:line) and why."""

    key: str
    where: str
    reason: str

    def to_dict(self) -> Dict[str, str]:
        return {"key": self.key, "where": self.where, "reason": self.reason}


def _parse_tokens(value: Any, what: str, num_objects: int, where: str) -> Tokens:
    if not isinstance(value, list) or not value:
        raise InputError(f"{where}: {what} must be a non-empty list of tokens, got {value!r}.")
    out: List[Token] = []
    for pos, tok in enumerate(value):
        if isinstance(tok, str):
            out.append(tok)
            continue
        if not isinstance(tok, list) or not tok or not all(isinstance(i, int) and not isinstance(i, bool) for i in tok):
            raise InputError(
                f"{where}: token {pos} of {what} is {tok!r}; expected a word or a non-empty list of object indices."
            )
        bad = [i for i in tok if not 0 <= i < num_objects]
        if bad:
            raise InputError(
                f"{where}: {what} refers to object {bad[0]}, but the item lists {num_objects} "
                f"objects (valid indices 0..{num_objects - 1})."
            )
        out.append(tuple(tok))
    return tuple(out)


def _parse_choices(value: Any, what: str, num_objects: int, where: str) -> Tuple[Tokens, ...]:
    if not isinstance(value, list) or len(value) != NUM_CHOICES:
        got = len(value) if isinstance(value, list) else type(value).__name__
        raise InputError(f"{where}: {what} must be a list of {NUM_CHOICES} choices, got {got}.")
    return tuple(_parse_tokens(c, f"{what}[{j}]", num_objects, where) for j, c in enumerate(value))


def _parse_label(row: Mapping[str, Any], name: str, where: str) -> Optional[int]:
    if name not in row or row[name] is None:
        return None
    label = row[name]
    if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < NUM_CHOICES:
        raise InputError(f"{where}: {name} must be an integer 0..{NUM_CHOICES - 1}, got {label!r}.")
    return label


def parse_item(row: Any, where: str, default_key: str) -> VCRItem:
    """Validate one decoded JSONL row; errors name ``where`` (``file:line``) and the item id."""
    if not isinstance(row, dict):
        raise InputError(f"{where}: expected a JSON object per line, got {type(row).__name__}.")
    key = str(row.get("annot_id", default_key))
    where = f"{where} ({key})"
    missing = [f for f in REQUIRED_FIELDS if f not in row]
    if missing:
        raise InputError(f"{where}: missing field(s) {missing}; a VCR line needs {list(REQUIRED_FIELDS)}.")
    objects = row["objects"]
    if not isinstance(objects, list) or not all(isinstance(o, str) for o in objects):
        raise InputError(f"{where}: 'objects' must be a list of object names, got {objects!r}.")
    for name in ("img_fn", "metadata_fn"):
        if not isinstance(row[name], str) or not row[name]:
            raise InputError(f"{where}: '{name}' must be a relative file path, got {row[name]!r}.")
    n = len(objects)
    return VCRItem(
        key=key,
        where=where,
        objects=tuple(objects),
        question=_parse_tokens(row["question"], "question", n, where),
        answer_choices=_parse_choices(row["answer_choices"], "answer_choices", n, where),
        rationale_choices=_parse_choices(row["rationale_choices"], "rationale_choices", n, where),
        answer_label=_parse_label(row, "answer_label", where),
        rationale_label=_parse_label(row, "rationale_label", where),
        img_fn=row["img_fn"],
        metadata_fn=row["metadata_fn"],
    )


def read_vcr_jsonl(
    path: Union[str, Path],
    image_root: Union[str, Path],
    metadata_root: Optional[Union[str, Path]] = None,
    skip_missing: bool = False,
    check_files: bool = True,
) -> Tuple[List[VCRItem], List[Skipped]]:
    """Read and validate a VCR JSONL file.

    ``check_files`` verifies that every image and metadata file exists (relative to
    ``image_root`` / ``metadata_root``, default ``image_root``) so a run fails at the start,
    not hours in. Returns the items and, under ``skip_missing``, the skipped ones."""
    path = Path(path)
    check_regular_file(path, "VCR annotation file")
    if not path.is_file():
        raise MissingFileError(
            f"VCR annotation file '{path}' not found. Download the VCR annotations "
            "(https://visualcommonsense.com) and set datasets.vcr.data_root "
            "(folder with train/val/test.jsonl) or datasets.vcr.annotation."
        )
    image_root = Path(image_root)
    metadata_root = Path(metadata_root) if metadata_root is not None else image_root
    items: List[VCRItem] = []
    skipped: List[Skipped] = []
    seen: Dict[str, str] = {}
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed by the with below)
    except OSError as exc:
        raise InputError(f"cannot read the VCR annotation file '{path}': {exc.strerror or exc}.") from None
    with f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            key = f"{path.stem}-line{lineno}"
            try:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}).") from None
                except UnicodeDecodeError:
                    raise InputError(f"{where}: not UTF-8 text.") from None
                except RecursionError:
                    raise InputError(f"{where}: JSON nested too deeply.") from None
                item = parse_item(row, where, key)
                key = item.key
                if item.key in seen:
                    raise InputError(
                        f"{item.where}: annot_id '{item.key}' already used at {seen[item.key]}; "
                        "item ids must be unique."
                    )
                if check_files:
                    _require(image_root / item.img_fn, "image", item.where, "datasets.vcr.image_root")
                    _require(metadata_root / item.metadata_fn, "metadata", item.where, "datasets.vcr.metadata_root")
            except RegionVLMError as exc:
                if not skip_missing:
                    raise
                skipped.append(Skipped(key, where, str(exc)))
                continue
            seen[item.key] = where
            items.append(item)
    if not items and not skipped:
        raise InputError(f"{path}: the file holds no VCR items.")
    return items, skipped


def _require(path: Path, what: str, where: str, setting: str) -> None:
    if not path.is_file():
        raise MissingFileError(
            f"{where}: {what} file '{path}' not found; put the VCR images "
            f"(vcr1images) there or point `{setting}` to the right folder."
        )


# ------------------------------------------------------------------- metadata
def load_metadata(path: Union[str, Path], num_objects: int, where: str) -> Dict[str, Any]:
    """Read one image's metadata JSON and check it covers the item's objects."""
    path = Path(path)
    check_regular_file(path, f"{where}: metadata file")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MissingFileError(f"{where}: metadata file '{path}' not found.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{where}: metadata '{path}' is not valid JSON ({exc}).") from None
    if not isinstance(meta, dict):
        raise InputError(f"{where}: metadata '{path}' must hold a JSON object.")
    missing = [k for k in ("boxes", "segms", "width", "height") if k not in meta]
    if missing:
        raise InputError(f"{where}: metadata '{path}' lacks {missing} (needs boxes, segms, width, height).")
    width, height = meta["width"], meta["height"]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (width, height)):
        raise InputError(f"{where}: metadata '{path}' has invalid width/height {width!r}x{height!r}.")
    check_pixel_count(width, height, f"{where}: metadata '{path}'")
    for name in ("boxes", "segms"):
        if not isinstance(meta[name], list) or len(meta[name]) < num_objects:
            got = len(meta[name]) if isinstance(meta[name], list) else type(meta[name]).__name__
            raise InputError(f"{where}: metadata '{path}' has {got} {name} for {num_objects} objects.")
    return meta


def object_mask(meta: Mapping[str, Any], index: int, where: str) -> Tuple[np.ndarray, bool]:
    """Bool mask (height, width) of object ``index`` from its polygons; ``(mask, True)`` when
    the polygons are empty and the box was used instead."""
    from pycocotools import mask as mask_utils

    height, width = int(meta["height"]), int(meta["width"])
    polygons = []
    segm = meta["segms"][index]
    if not isinstance(segm, list):
        raise InputError(f"{where}: segms[{index}] must be a list of polygons, got {type(segm).__name__}.")
    for poly in segm:
        try:
            points = np.asarray(poly, dtype=np.float64)
        except (TypeError, ValueError):
            points = np.zeros((1, 3))  # not numbers: reported below
        if points.size and (points.ndim != 2 or points.shape[1] != 2):
            raise InputError(
                f"{where}: segms[{index}] holds a polygon that is not a list of [x, y] points: {str(poly)[:80]}."
            )
        flat = points.reshape(-1)
        if not np.all(np.isfinite(flat)):
            raise InputError(f"{where}: segms[{index}] holds a polygon with a non-finite coordinate.")
        if flat.size >= 6:
            polygons.append(flat.tolist())
    if polygons:
        mask = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))).astype(bool)
        if mask.any():
            return mask, False
    return _box_mask(meta["boxes"][index], height, width, index, where), True


def _box_mask(box: Any, height: int, width: int, index: int, where: str) -> np.ndarray:
    try:
        x1, y1, x2, y2 = (float(v) for v in list(box)[:4])
    except (TypeError, ValueError):
        raise InputError(f"{where}: boxes[{index}] must start with x1, y1, x2, y2, got {box!r}.") from None
    if not all(np.isfinite(v) for v in (x1, y1, x2, y2)):
        raise InputError(f"{where}: boxes[{index}] has a non-finite coordinate: {box!r}.")
    c0, r0 = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
    c1, r1 = min(width, int(np.ceil(x2))), min(height, int(np.ceil(y2)))
    mask = np.zeros((height, width), dtype=bool)
    mask[r0:r1, c0:c1] = True
    if not mask.any():
        raise InputError(
            f"{where}: object {index} has neither a polygon nor a box with any pixel "
            f"(box {box!r}, image {width}x{height})."
        )
    return mask
