"""RefCOCO, RefCOCO+ and RefCOCOg in the ``refer`` toolkit layout (docs/ris.md).

Layout read here (the one every RIS paper uses)::

    <data_root>/<dataset>/refs(<splitBy>).p   pickled list of refs: ref_id, ann_id, image_id,
                                              split, sentences [{raw, sent, tokens, ...}], sent_ids
    <data_root>/<dataset>/instances.json      COCO instances: images (file_name, height, width)
                                              and annotations (segmentation: polygons or RLE)
    <image_root>/<file_name>                  the images (COCO train2014 for the real datasets)

Every sentence of every ref in the split is one query; its text is the sentence's ``raw``
string (what the official evaluation feeds the text processor), its ground truth the
mask of the ref's annotation at the image's original resolution.

Safety: the refs file is a pickle, and unpickling can run arbitrary code. It is read with
a restricted unpickler that admits only plain containers (dict, list, tuple, set,
frozenset), strings, bytes, numbers, booleans and None; a pickle that names any other
class or function stops with :class:`~regionvlm.common.errors.InputError` before anything
is constructed. The official files are exactly such plain data.

Ground-truth rule: the official ``refer`` toolkit sums the masks of an annotation's
polygons and the official RIS dataset keeps the pixels whose sum equals 1, so a pixel
covered by two polygons of the same object is background. ``gt_mask="official"`` (the
default) reproduces that; ``gt_mask="union"`` takes the plain union. The two differ only
for annotations with overlapping polygons.

Comprehension (docs/rec.md) reads boxes instead: the ground truth is the ref's annotation's
COCO ``bbox`` ``[x, y, w, h]`` (:meth:`ReferSplit.box`), and ``image_annotations=True``
keeps every annotation of the split's images, the "ground-truth proposals".

``dataset_name="synthetic"`` reads the same layout written by the synthetic world
(splits train/val/test, any splitBy).

Command line (list the images of a split, e.g. to compute only their proposals)::

    python -m regionvlm.data.refer --data-root DIR --dataset refcoco --splitBy unc --split val --out val_images.txt
"""

from __future__ import annotations

import argparse
import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from regionvlm.common.errors import ConfigError, InputError, MissingFileError
from regionvlm.common.io import check_regular_file, require_output_file, write_or_print
from regionvlm.data.boxes import Box, parse_xywh
from regionvlm.region import check_pixel_count, validate_rle

# (dataset, splitBy) -> splits defined by that partition.
KNOWN_SPLITS: Dict[Tuple[str, str], Tuple[str, ...]] = {
    ("refcoco", "unc"): ("train", "val", "testA", "testB"),
    ("refcoco", "google"): ("train", "val", "test"),
    ("refcoco+", "unc"): ("train", "val", "testA", "testB"),
    ("refcocog", "umd"): ("train", "val", "test"),
    ("refcocog", "google"): ("train", "val"),
}
SYNTHETIC = "synthetic"
SYNTHETIC_SPLITS = ("train", "val", "test")
DATASET_NAMES = ("refcoco", "refcoco+", "refcocog", SYNTHETIC)
DEFAULT_SPLIT_BY = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd", SYNTHETIC: "unc"}
GT_MASK_RULES = ("official", "union")

_SAFE_GLOBALS = {
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("__builtin__", "set"),
    ("__builtin__", "frozenset"),
}


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickler that refuses every class or function reference except set/frozenset."""

    def __init__(self, file: io.BufferedIOBase, source: Path):
        super().__init__(file, encoding="utf-8", errors="strict")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return set if name == "set" else frozenset
        raise InputError(
            f"'{self._source}' references the Python object '{module}.{name}'. Only plain containers, "
            "strings and numbers are accepted from refs pickles (loading anything else could run code). "
            "Use the official refs file or re-save it as plain lists and dicts."
        )

    def persistent_load(self, pid: Any) -> Any:
        raise InputError(f"'{self._source}' uses persistent ids; only plain data pickles are accepted.")


def load_plain_pickle(path: str | Path) -> Any:
    """Load a pickle that may hold only plain containers, strings and numbers (see module doc)."""
    path = Path(path)
    check_regular_file(path, "the refs pickle")
    try:
        with open(path, "rb") as f:
            return _PlainDataUnpickler(f, path).load()
    except InputError:
        raise
    except (pickle.UnpicklingError, EOFError, UnicodeDecodeError, ValueError, TypeError, IndexError) as exc:
        raise InputError(
            f"cannot read the pickle '{path}': {type(exc).__name__}: {exc}. "
            "Expected the refer toolkit's refs(<splitBy>).p file."
        ) from None


@dataclass(frozen=True)
class ReferImage:
    image_id: int
    file_name: str
    height: int
    width: int


@dataclass(frozen=True)
class ReferQuery:
    """One referring sentence; ``index`` is its position in the split (ref order, then sentence order)."""

    index: int
    ref_id: int
    sent_id: int
    ann_id: int
    image_id: int
    sentence: str


@dataclass
class ReferSplit:
    """The queries of one split with their images and ground-truth annotations."""

    dataset_name: str
    split_by: str
    split: str
    refs_path: Path
    instances_path: Path
    queries: List[ReferQuery]
    images: Dict[int, ReferImage]
    annotations: Dict[int, Mapping[str, Any]]
    gt_mask_rule: str = "official"
    skipped: List[Dict[str, Any]] = field(default_factory=list)
    # with ``image_annotations=True``: every annotation id of each image of the split (file order)
    image_annotations: Dict[int, List[int]] = field(default_factory=dict)
    known_image_ids: FrozenSet[int] = frozenset()  # every image id of instances.json

    def gt_mask(self, ann_id: int) -> np.ndarray:
        """The annotation's mask (bool, image height x width) under ``gt_mask_rule``."""
        return self.annotation_mask(ann_id, self.gt_mask_rule)

    def annotation_mask(self, ann_id: int, rule: str = "union") -> np.ndarray:
        """The annotation's mask (bool, image height x width) under ``rule``."""
        ann = self.annotations[ann_id]
        image = self.images[ann["image_id"]]
        return decode_segmentation(
            ann["segmentation"],
            image.height,
            image.width,
            rule,
            f"annotation {ann_id} in '{self.instances_path}'",
        )

    def box(self, ann_id: int) -> Box:
        """The annotation's COCO box ``bbox`` ``(x, y, w, h)`` (checked; COCO's own box, not one
        derived from the mask)."""
        ann = self.annotations[ann_id]
        what = f"'{self.instances_path}' annotation {ann_id}"
        if "bbox" not in ann:
            raise InputError(f"{what} has no 'bbox'; COCO annotations give their box as bbox [x, y, w, h].")
        return parse_xywh(ann["bbox"], what)

    def queries_by_image(self) -> List[Tuple[int, List[ReferQuery]]]:
        """Queries grouped by image, images in order of first appearance."""
        groups: Dict[int, List[ReferQuery]] = {}
        for q in self.queries:
            groups.setdefault(q.image_id, []).append(q)
        return list(groups.items())


def decode_segmentation(
    segm: Any, height: int, width: int, rule: str = "official", what: str = "segmentation"
) -> np.ndarray:
    """COCO polygons, uncompressed RLE or compressed RLE -> bool mask (height, width).

    ``rule="official"``: pixels covered by exactly one part (the official RIS ground truth);
    ``"union"``: pixels covered by any part. Polygons need >= 3 finite points; RLEs must
    cover exactly ``height * width`` pixels (:func:`regionvlm.region.validate_rle`)."""
    from pycocotools import mask as mask_utils

    if rule not in GT_MASK_RULES:
        raise ConfigError(f"gt_mask must be one of {GT_MASK_RULES}, got '{rule}'.")
    parts = mask_utils.decode(segmentation_rles(segm, height, width, what))  # (h, w, n) uint8
    count = parts.sum(axis=2, dtype=np.int32)
    return np.ascontiguousarray(count == 1 if rule == "official" else count >= 1)


def segmentation_rles(segm: Any, height: int, width: int, what: str = "segmentation") -> List[Dict[str, Any]]:
    """The checked COCO RLEs (one per part) of polygons, an uncompressed or a compressed RLE,
    or a list of RLEs, without decoding a pixel (see :func:`decode_segmentation`)."""
    from pycocotools import mask as mask_utils

    check_pixel_count(width, height, f"{what}: the image")
    if isinstance(segm, list):
        if not segm:
            raise InputError(f"{what} has an empty segmentation; it cannot be a ground truth.")
        if all(isinstance(p, (list, tuple)) for p in segm):
            bad = [i for i, p in enumerate(segm) if len(p) < 6 or len(p) % 2]
            if bad:
                raise InputError(f"{what}: polygon(s) {bad} need an even number (>= 6) of coordinates.")
            try:
                polygons = [np.asarray(p, dtype=np.float64) for p in segm]
            except (TypeError, ValueError):
                raise InputError(f"{what}: polygon coordinates must be numbers, got {str(segm)[:80]}.") from None
            if any(p.ndim != 1 or not np.all(np.isfinite(p)) for p in polygons):
                raise InputError(f"{what}: polygon coordinates must be finite numbers, got {str(segm)[:80]}.")
            rles = mask_utils.frPyObjects([p.tolist() for p in polygons], height, width)
        elif all(isinstance(p, Mapping) for p in segm):
            rles = [validate_rle(r, what, (height, width)) for r in segm]
        else:
            raise InputError(f"{what}: expected a list of polygons or RLE dicts, got {str(segm)[:80]}.")
    elif isinstance(segm, Mapping):
        rles = [validate_rle(segm, what, (height, width))]
    else:
        raise InputError(f"{what}: unsupported segmentation of type {type(segm).__name__}.")
    return list(rles)


def check_split(dataset_name: str, split_by: str, split: str) -> None:
    """Reject dataset/splitBy/split combinations that do not exist, listing the valid ones."""
    if dataset_name not in DATASET_NAMES:
        raise ConfigError(f"unknown dataset_name '{dataset_name}'; expected one of {list(DATASET_NAMES)}.")
    if dataset_name == SYNTHETIC:
        if split not in SYNTHETIC_SPLITS:
            raise ConfigError(f"the synthetic dataset has splits {list(SYNTHETIC_SPLITS)}, got '{split}'.")
        return
    splits = KNOWN_SPLITS.get((dataset_name, split_by))
    if splits is None:
        valid = sorted(sb for ds, sb in KNOWN_SPLITS if ds == dataset_name)
        raise ConfigError(f"{dataset_name} has no splitBy '{split_by}'; use one of {valid}.")
    if split not in splits:
        raise ConfigError(f"{dataset_name} ({split_by}) has splits {list(splits)}, got '{split}'.")


def _int_field(value: Any) -> Optional[int]:
    """A JSON/pickle id as int (whole numbers and digit strings, as the toolkit's files hold), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _read_instances(path: Path) -> Tuple[Dict[int, ReferImage], Dict[int, Mapping[str, Any]]]:
    from regionvlm.common.io import read_json

    data = read_json(path, "COCO instances file", "data_root", "COCO instances JSON with 'images' and 'annotations'")
    if (
        not isinstance(data, Mapping)
        or not isinstance(data.get("images"), list)
        or not isinstance(data.get("annotations"), list)
    ):
        raise InputError(f"'{path}' must be COCO instances JSON with lists 'images' and 'annotations'.")
    images: Dict[int, ReferImage] = {}
    for i, img in enumerate(data["images"]):
        fields = [_int_field(img.get(k)) if isinstance(img, Mapping) else None for k in ("id", "height", "width")]
        name = img.get("file_name") if isinstance(img, Mapping) else None
        if any(f is None for f in fields) or not isinstance(name, str) or not name:
            raise InputError(
                f"'{path}': images[{i}] needs an integer id, a file_name, and integer height and "
                f"width, got {str(img)[:120]}."
            )
        image_id, height, width = fields
        if height <= 0 or width <= 0:
            raise InputError(
                f"'{path}': images[{i}] (id {image_id}) has the size {width}x{height}; "
                "height and width must be positive."
            )
        images[image_id] = ReferImage(image_id, name, height, width)
    anns: Dict[int, Mapping[str, Any]] = {}
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, Mapping) or "id" not in ann or "segmentation" not in ann or "image_id" not in ann:
            raise InputError(f"'{path}': annotations[{i}] needs id, image_id and segmentation.")
        ann_id, image_id = _int_field(ann["id"]), _int_field(ann["image_id"])
        if ann_id is None or image_id is None:
            raise InputError(
                f"'{path}': annotations[{i}] needs integer id and image_id, got {ann['id']!r} and {ann['image_id']!r}."
            )
        anns[ann_id] = {**ann, "id": ann_id, "image_id": image_id}
    return images, anns


_REF_KEYS = ("ref_id", "ann_id", "image_id", "split", "sentences")


def load_refer(
    data_root: str | Path,
    dataset_name: str,
    split_by: str,
    split: str,
    gt_mask: str = "official",
    skip_missing: bool = False,
    image_annotations: bool = False,
) -> ReferSplit:
    """Read one split. Missing files stop with their path; a ref whose annotation or image
    is absent from ``instances.json``, or an empty sentence, stops too unless
    ``skip_missing`` (then it is listed in ``ReferSplit.skipped``). ``image_annotations``
    also keeps every annotation of the split's images (the candidates of comprehension),
    not only the referred ones."""
    check_split(dataset_name, split_by, split)
    if gt_mask not in GT_MASK_RULES:
        raise ConfigError(f"gt_mask must be one of {GT_MASK_RULES}, got '{gt_mask}'.")
    folder = Path(data_root).expanduser() / dataset_name
    refs_path = folder / f"refs({split_by}).p"
    instances_path = folder / "instances.json"
    for p, what in (
        (refs_path, f"the {dataset_name} refs file (refs({split_by}).p)"),
        (instances_path, f"the {dataset_name} COCO instances file"),
    ):
        check_regular_file(p, what)
        if not p.is_file():
            raise MissingFileError(
                f"{what} not found at '{p}'. Put the refer toolkit's '{dataset_name}' folder under "
                "the data root (setting `data_root`, flag --data-root)."
            )
    refs = load_plain_pickle(refs_path)
    if not isinstance(refs, list):
        raise InputError(f"'{refs_path}' must hold a list of refs, got {type(refs).__name__}.")
    images, anns = _read_instances(instances_path)

    queries: List[ReferQuery] = []
    skipped: List[Dict[str, Any]] = []
    needed_anns: Dict[int, Mapping[str, Any]] = {}
    splits_seen = set()
    for i, ref in enumerate(refs):
        if not isinstance(ref, Mapping) or any(k not in ref for k in _REF_KEYS):
            raise InputError(f"'{refs_path}': ref #{i} must be a dict with keys {list(_REF_KEYS)}.")
        splits_seen.add(str(ref["split"]))
        if ref["split"] != split:
            continue
        ref_id, ann_id, image_id = (_int_field(ref[k]) for k in ("ref_id", "ann_id", "image_id"))
        if ref_id is None or ann_id is None or image_id is None:
            raise InputError(
                f"'{refs_path}': ref #{i} needs integer ref_id, ann_id and image_id, got "
                f"{ref['ref_id']!r}, {ref['ann_id']!r} and {ref['image_id']!r}."
            )
        sentences = ref["sentences"]
        if not isinstance(sentences, list):
            raise InputError(f"'{refs_path}': ref {ref_id} 'sentences' must be a list.")
        sent_ids = ref.get("sent_ids") or [s.get("sent_id") if isinstance(s, Mapping) else None for s in sentences]
        sent_ids = [_int_field(s) for s in sent_ids] if isinstance(sent_ids, (list, tuple)) else [None]
        if len(sent_ids) != len(sentences) or any(s is None for s in sent_ids):
            raise InputError(f"'{refs_path}': ref {ref_id} needs sentences and one sent_id per sentence.")
        problem = None
        if ann_id not in anns:
            problem = f"annotation {ann_id} is not in '{instances_path}'"
        elif image_id not in images:
            problem = f"image {image_id} is not in '{instances_path}'"
        if problem:
            if not skip_missing:
                raise InputError(
                    f"ref {ref_id} of '{refs_path}': {problem}. Use the instances.json that "
                    "belongs to this refs file, or set skip_missing to skip such refs."
                )
            skipped.extend(
                {
                    "ref_id": ref_id,
                    "sent_id": int(s),
                    "image_id": image_id,
                    "reason": problem,
                    "path": str(instances_path),
                }
                for s in sent_ids
            )
            continue
        for sent, sent_id in zip(sentences, sent_ids):
            if not isinstance(sent, Mapping) or not isinstance(sent.get("raw"), str):
                raise InputError(f"'{refs_path}': ref {ref_id} sentence {sent_id} has no 'raw' text.")
            if not sent["raw"].strip():
                reason = f"sentence {sent_id} of ref {ref_id} is empty"
                if not skip_missing:
                    raise InputError(
                        f"'{refs_path}': {reason}; an empty expression cannot be scored. Fix the "
                        "file or set skip_missing to skip it."
                    )
                skipped.append(
                    {
                        "ref_id": ref_id,
                        "sent_id": int(sent_id),
                        "image_id": image_id,
                        "reason": reason,
                        "path": str(refs_path),
                    }
                )
                continue
            queries.append(ReferQuery(len(queries), ref_id, int(sent_id), ann_id, image_id, sent["raw"]))
        needed_anns[ann_id] = anns[ann_id]
    if not queries and not skipped:
        raise InputError(f"'{refs_path}' has no refs in split '{split}'; splits present: {sorted(splits_seen)}.")
    used_images = {q.image_id for q in queries}
    per_image: Dict[int, List[int]] = {}
    if image_annotations:
        for ann_id, ann in anns.items():
            if ann["image_id"] in used_images:
                per_image.setdefault(ann["image_id"], []).append(ann_id)
                needed_anns[ann_id] = ann
    return ReferSplit(
        dataset_name,
        split_by,
        split,
        refs_path,
        instances_path,
        queries,
        {i: images[i] for i in sorted(used_images)},
        needed_anns,
        gt_mask,
        skipped,
        per_image,
        frozenset(images),
    )


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="List the image file names of one refer split.")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--dataset", default="refcoco", choices=DATASET_NAMES)
    parser.add_argument("--splitBy", default=None, help="default: unc (refcoco, refcoco+), umd (refcocog)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--out", default=None, help="write the list here (default: print)")
    args = parser.parse_args(argv)
    if args.out:
        require_output_file(args.out)
    split = load_refer(args.data_root, args.dataset, args.splitBy or DEFAULT_SPLIT_BY[args.dataset], args.split)
    names = sorted({img.file_name for img in split.images.values()})
    write_or_print("".join(n + "\n" for n in names), args.out, f"{len(names)} images of {args.dataset} {args.split}")


if __name__ == "__main__":
    from regionvlm.common.cli import run

    run(main)
