"""The proposal-file format of zero-shot RIS: one JSON file per image holding its candidate
masks as COCO RLE, in proposal order (written by ``python -m regionvlm.proposals``).

``<dir>/<image name without its image extension>.json`` holds
``{"format": "regionvlm-proposals", "version": 1, "image", "height", "width", "source",
"masks": [{"segmentation": COCO RLE, "score", "area", "bbox": [x, y, w, h], ...}]}``.
``score`` is SAM's predicted IoU (``null`` for imported PNG masks). Reading validates the
header (format, version, positive height and width) and every record (an RLE of the image's
size whose runs cover exactly its pixels, a finite or null score) and names the file and the
mask when something is wrong; writing refuses masks that are not binary and scores that are
not finite (JSON has no NaN). Image names that differ only by their extension would share a
file: the file records its image (``"image"``), and reading or writing it for the other image
is refused, as is generating proposals for a list holding both (:func:`check_distinct_files`).
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from regionvlm.common.errors import InputError, MissingFileError
from regionvlm.common.io import atomic_write_text, check_regular_file
from regionvlm.region import binary_mask, validate_rle

FORMAT = "regionvlm-proposals"
VERSION = 1
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def proposal_path(out_dir: str | Path, image_name: str) -> Path:
    """Where the proposals of ``image_name`` (an image file name relative to the image root,
    e.g. ``COCO_train2014_000000000009.jpg``, or its stem) live: the name with an image
    extension removed, plus ``.json``; sub-folders are kept."""
    name = PurePosixPath(str(image_name).replace("\\", "/"))
    if not name.parts or name.is_absolute() or ".." in name.parts:
        raise InputError(f"image name '{image_name}' must be a relative path inside the image root.")
    if name.suffix.lower() in IMAGE_EXTENSIONS:
        name = name.with_suffix("")
    return Path(out_dir).joinpath(*name.parts[:-1], name.name + ".json")


def same_image(recorded: str, wanted: str) -> bool:
    """Whether a proposal file written for image ``recorded`` belongs to image ``wanted``.
    Names that differ only by their extension (``a.jpg``, ``a.png``) map to one file, so the
    file records its image and the extensions must agree; a name without an image extension
    (the authors' PNG folders are named by stem) matches either."""
    rec, want = PurePosixPath(str(recorded).replace("\\", "/")), PurePosixPath(str(wanted).replace("\\", "/"))
    both = rec.suffix.lower() in IMAGE_EXTENSIONS and want.suffix.lower() in IMAGE_EXTENSIONS
    return not both or rec.suffix.lower() == want.suffix.lower()


def check_distinct_files(out_dir: str | Path, image_names: Sequence[str]) -> None:
    """Refuse image names that would share one proposal file (they differ only by extension)."""
    seen: Dict[Path, str] = {}
    for name in image_names:
        path = proposal_path(out_dir, name)
        if path in seen and seen[path] != name:
            raise InputError(
                f"images '{seen[path]}' and '{name}' differ only by their extension, so their proposals would "
                f"share '{path}'; rename one of them (or write their proposals to separate folders)."
            )
        seen[path] = name


def _refuse_other_image(path: Path, recorded: Any, image_name: str) -> None:
    if isinstance(recorded, str) and not same_image(recorded, image_name):
        raise InputError(
            f"'{path}' holds the proposals of image '{recorded}', not of '{image_name}': image names that differ "
            "only by their extension share one proposal file. Rename one of the images (or keep their "
            "proposals in separate folders) and regenerate."
        )


def encode_mask(mask: np.ndarray) -> Dict[str, Any]:
    """Binary (H, W) mask -> JSON-ready COCO RLE record with area and XYWH box."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(binary_mask(mask, "proposal mask").astype(np.uint8)))
    return {
        "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
        "area": int(mask_utils.area(rle)),
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
    }


def write_proposal_file(
    path: Path,
    image_name: str,
    height: int,
    width: int,
    records: Sequence[Mapping[str, Any]],
    source: Mapping[str, Any],
) -> Path:
    """Write one image's records atomically (a killed run never leaves half a file); a file
    there that holds another image's proposals (same name, other extension) is refused."""
    if path.is_file():
        try:
            recorded = json.loads(path.read_text(encoding="utf-8")).get("image")
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            recorded = None  # a damaged file is simply replaced
        _refuse_other_image(path, recorded, image_name)
    for i, rec in enumerate(records):
        size = list(rec["segmentation"]["size"])
        if size != [height, width]:
            raise InputError(f"{image_name}: mask {i} has size {size}, the image is {[height, width]}.")
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "image": str(image_name),
        "height": int(height),
        "width": int(width),
        "source": dict(source),
        "masks": [dict(r) for r in records],
    }
    atomic_write_text(path, json.dumps(doc, separators=(",", ":")) + "\n")
    return path


def save_image_proposals(
    out_dir: str | Path,
    image_name: str,
    masks: Sequence[np.ndarray],
    scores: Sequence[Optional[float]],
    image_size: Optional[Tuple[int, int]] = None,
    source: Optional[Mapping[str, Any]] = None,
) -> Path:
    """Store ``masks`` (bool H x W, in proposal order) and their ``scores`` for one image.

    ``image_size=(height, width)`` is needed only when ``masks`` is empty. Returns the file."""
    if len(masks) != len(scores):
        raise InputError(f"{image_name}: {len(masks)} masks but {len(scores)} scores.")
    arrays = [binary_mask(m, f"{image_name}: mask {i}") for i, m in enumerate(masks)]
    bad = [s for s in scores if s is not None and not _finite_number(s)]
    if bad:
        raise InputError(f"{image_name}: scores must be finite numbers or None, got {bad[:3]}.")
    if arrays:
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise InputError(f"{image_name}: masks must be 2-D and of one size, got shapes {sorted(shapes)}.")
        height, width = arrays[0].shape
        if image_size is not None and tuple(image_size) != (height, width):
            raise InputError(f"{image_name}: masks are {height}x{width} but image_size is {tuple(image_size)}.")
    elif image_size is None:
        raise InputError(f"{image_name}: no masks; pass image_size=(height, width) to record an empty set.")
    else:
        height, width = (int(v) for v in image_size)
    records = []
    for a, score in zip(arrays, scores):
        rec = encode_mask(a)
        rec["score"] = None if score is None else float(score)
        records.append(rec)
    return write_proposal_file(
        proposal_path(out_dir, image_name),
        image_name,
        height,
        width,
        records,
        source or {"writer": "save_image_proposals"},
    )


class ProposalSet:
    """One image's proposals; masks are decoded on first use (C-ordered bool arrays), areas
    come straight from the RLE, so filtering by area decodes nothing."""

    def __init__(
        self,
        rles: List[Dict[str, Any]],
        scores: List[Optional[float]],
        height: int,
        width: int,
        path: Optional[Path] = None,
        masks: Optional[List[np.ndarray]] = None,
    ):
        self.rles, self.scores = rles, scores
        self.height, self.width, self.path = int(height), int(width), path
        self._masks: Dict[int, np.ndarray] = dict(enumerate(masks)) if masks is not None else {}
        if masks is not None:
            self.areas = np.array([int(m.sum()) for m in masks], dtype=np.int64)
        else:
            from pycocotools import mask as mask_utils

            self.areas = (
                np.asarray(mask_utils.area(rles), dtype=np.int64).reshape(-1) if rles else np.zeros(0, np.int64)
            )

    @classmethod
    def from_masks(
        cls, masks: Sequence[np.ndarray], scores: Optional[Sequence[Optional[float]]] = None
    ) -> "ProposalSet":
        """In-memory proposals (tests, interactive use)."""
        arrays = [np.ascontiguousarray(binary_mask(m, f"proposal mask {i}")) for i, m in enumerate(masks)]
        if not arrays:
            raise InputError("from_masks needs at least one mask (use the file format for empty sets).")
        h, w = arrays[0].shape
        if any(a.shape != (h, w) for a in arrays):
            raise InputError("all proposal masks must have the same size.")
        return cls([], list(scores) if scores is not None else [None] * len(arrays), h, w, masks=arrays)

    def __len__(self) -> int:
        return len(self.areas)

    def mask(self, i: int) -> np.ndarray:
        if i not in self._masks:
            from pycocotools import mask as mask_utils

            try:
                decoded = mask_utils.decode(self.rles[i])
            except Exception as exc:
                raise InputError(f"'{self.path}': mask {i} cannot be decoded ({exc}).") from None
            self._masks[i] = np.array(decoded, dtype=bool, order="C")
        return self._masks[i]


def read_proposals(path: str | Path, image_name: Optional[str] = None) -> ProposalSet:
    """Read one proposal file; a missing or malformed file stops with its path."""
    path = Path(path)
    check_regular_file(path, "proposal file")
    if not path.is_file():
        for_image = f" for image '{image_name}'" if image_name else ""
        raise MissingFileError(
            f"proposal file{for_image} not found at '{path}'. Expected SAM proposals as written by "
            "`python -m regionvlm.proposals --images ... --out DIR` (or converted with --import-png-dir); "
            "point the `proposals` setting (--proposals) to that DIR."
        )
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read the proposal file '{path}': {exc}. Delete it and regenerate.") from None
    if not isinstance(doc, Mapping) or doc.get("format") != FORMAT or "masks" not in doc:
        raise InputError(f"'{path}' is not a {FORMAT} file (see regionvlm/proposals.py).")
    if image_name is not None:
        _refuse_other_image(path, doc.get("image"), image_name)
    version = doc.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise InputError(f"'{path}': 'version' must be a whole number, got {version!r}. Delete it and regenerate.")
    if version > VERSION:
        raise InputError(f"'{path}' has format version {version}; this code reads <= {VERSION}.")
    height, width = doc.get("height"), doc.get("width")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (height, width)):
        raise InputError(
            f"'{path}': 'height' and 'width' must be positive whole numbers, got {height!r} and "
            f"{width!r}. Delete it and regenerate."
        )
    if not isinstance(doc["masks"], list):
        raise InputError(f"'{path}': 'masks' must be a list of records, got {type(doc['masks']).__name__}.")
    rles, scores = [], []
    for i, rec in enumerate(doc["masks"]):
        seg = rec.get("segmentation") if isinstance(rec, Mapping) else None
        rles.append(validate_rle(seg, f"'{path}': mask {i}", (height, width)))
        score = rec.get("score")
        if score is not None and not _finite_number(score):
            raise InputError(f"'{path}': mask {i} has the score {score!r}; a score is a finite number or null.")
        scores.append(score)
    return ProposalSet(rles, scores, height, width, path)


def _finite_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, bool)
        and bool(np.isfinite(value))
    )


def load_image_proposals(out_dir: str | Path, image_name: str) -> Tuple[List[np.ndarray], List[Optional[float]]]:
    """``(masks, scores)`` of one image, masks as bool arrays in proposal order."""
    props = read_proposals(proposal_path(out_dir, image_name), image_name)
    return [props.mask(i) for i in range(len(props))], list(props.scores)
