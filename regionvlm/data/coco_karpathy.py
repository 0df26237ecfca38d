"""COCO captions in the Karpathy split, in the layout LAVIS (and the authors' release) uses.

Files (paths relative to a cache root, as LAVIS stores them)::

    coco/annotations/coco_karpathy_{train,val,test}.json  a JSON list of entries
        {"image": "val2014/COCO_val2014_000000391895.jpg", "caption": [5 captions]}
        (val/test: one entry per image, a list of captions; train: one entry per caption,
        a string, plus an "image_id" such as "coco_391895" that evaluation never reads)
    coco/images/<image>                                   the COCO 2014 images
    coco_gt/coco_karpathy_{val,test}_gt.json              COCO-format ground truth for the
        caption metrics: {"images": [{"id": 391895}, ...],
                          "annotations": [{"image_id": 391895, "caption": "...", "id": 770337}, ...]}

Image id rule. Evaluation takes the id of an image from its file name, with exactly this
expression of the LAVIS evaluation dataset followed by ``int()``::

    image.split("/")[-1].strip(".jpg").split("_")[-1]

so ``val2014/COCO_val2014_000000391895.jpg`` -> ``391895``. Quirks, reproduced on purpose
because they decide which prediction is matched with which ground truth:

* ``str.strip(".jpg")`` removes any of the CHARACTERS ``.``, ``j``, ``p``, ``g`` from both
  ends, not the suffix ``.jpg``: ``x_12g.jpg`` -> ``12`` and ``12.jpeg`` -> ``12.jpe``
  (not a number; so ``.jpeg``/``.png`` names are refused).
* Only ``/`` separates folders; the id is whatever follows the LAST underscore of the name,
  or the whole stripped name if it has none (``391895.jpg`` -> ``391895``).
* ``int()`` accepts leading zeros, surrounding spaces and a sign: ``COCO_x_-5.jpg`` -> -5.

Different names can therefore give the same id; an evaluation split that does is refused
(every image must be scored exactly once). The official files contain only
``COCO_val2014_<12 digits>.jpg`` names, for which the rule is simply "the number".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from regionvlm.common.errors import InputError
from regionvlm.common.io import read_json

ANNOTATION_FILES: Dict[str, str] = {split: f"coco_karpathy_{split}.json" for split in ("train", "val", "test")}
GT_FILES: Dict[str, str] = {split: f"coco_karpathy_{split}_gt.json" for split in ("val", "test")}
PUBLISHED_AT = "https://storage.googleapis.com/sfr-vision-language-research/datasets/"
# Characters the PTB tokenizer of the caption metrics treats as a new line (the metrics
# package replaces only "\n"): a caption holding one would shift every later caption onto
# the wrong image, so such captions are refused.
LINE_BREAKS: Tuple[str, ...] = ("\r", "\x0b", "\x0c", "\u2028", "\u2029")


@dataclass(frozen=True)
class KarpathyImage:
    """One image of an evaluation split: its path relative to the image root, its id
    (the file-name rule above) and the captions listed with it."""

    image: str
    image_id: int
    captions: Tuple[str, ...]


@dataclass(frozen=True)
class CaptionGroundTruth:
    """A validated COCO-format caption ground truth: ``image_ids`` in file order, the
    reference captions of each image, and ``dataset`` (the JSON object, for pycocotools)."""

    path: str
    image_ids: Tuple[int, ...]
    captions: Dict[int, Tuple[str, ...]]
    dataset: Dict[str, Any]


def default_paths(cache_root: str | Path, split: str) -> Dict[str, Path]:
    """Where LAVIS keeps the annotation list, the images and the ground truth of ``split``."""
    if split not in GT_FILES:
        raise InputError(f"Karpathy split '{split}' has no caption ground truth; use one of {sorted(GT_FILES)}.")
    root = Path(cache_root).expanduser()
    return {
        "annotation": root / "coco" / "annotations" / ANNOTATION_FILES[split],
        "images": root / "coco" / "images",
        "gt": root / "coco_gt" / GT_FILES[split],
    }


def load_json(path: str | Path, what: str) -> Any:
    """Parse a JSON file (:func:`regionvlm.common.io.read_json`), naming where the official
    file of that name is published when it is missing."""
    p = Path(path).expanduser()
    published = (
        f"the official {p.name} is published at {PUBLISHED_AT}{p.name}"
        if p.name in ANNOTATION_FILES.values() or p.name in GT_FILES.values()
        else None
    )
    return read_json(p, what, layout=published)


def image_id_from_filename(image: str) -> int:
    """The LAVIS rule (module docstring): last ``_`` field of the name stripped of the
    characters ``.jpg``, as an integer. Raises InputError if that is not a number."""
    field = image.split("/")[-1].strip(".jpg").split("_")[-1]
    try:
        return int(field)
    except ValueError:
        raise InputError(
            f"cannot derive an image id from '{image}': evaluation takes the text after the last '_' of the "
            f"file name stripped of the characters '.jpg' (here '{field}') as the integer id; name the file like "
            "COCO_val2014_000000391895.jpg."
        ) from None


def is_int(value: Any) -> bool:
    """JSON integers only (``True`` is not an id)."""
    return isinstance(value, int) and not isinstance(value, bool)


def require_fields(entry: Any, fields: Sequence[str], where: str, hint: str = "") -> None:
    """One message for a JSON entry that is not an object or lacks a field (then ``hint``), in
    every caption file."""
    names = ", ".join(f"'{f}'" for f in fields[:-1]) + f" and '{fields[-1]}'"
    if not isinstance(entry, Mapping):
        raise InputError(f"{where} must be an object with {names}, got {type(entry).__name__}.")
    for key in fields:
        if key not in entry:
            raise InputError(f"{where} has no '{key}' (keys: {sorted(entry)}).{hint}")


def check_caption_text(text: str, where: str) -> None:
    """Refuse captions with a character the metrics' tokenizer reads as a line break."""
    for ch in LINE_BREAKS:
        if ch in text:
            raise InputError(
                f"{where}: the caption {text!r} contains {ch!r}, which the metrics' PTB tokenizer reads as a new "
                "line (it would pair every later caption with the wrong image). Replace it with a space."
            )


def read_karpathy_split(path: str | Path) -> List[KarpathyImage]:
    """Read ``coco_karpathy_{val,test}.json``: one entry per image, in file order."""
    src = str(path)
    data = load_json(path, "Karpathy annotation file")
    if not isinstance(data, list):
        raise InputError(
            f'\'{src}\' must hold a JSON list of {{"image", "caption"}} entries, got {type(data).__name__}.'
        )
    out: List[KarpathyImage] = []
    seen: Dict[int, Tuple[int, str]] = {}
    for i, entry in enumerate(data):
        where = f"'{src}' entry {i}"
        require_fields(entry, ("image", "caption"), where)
        image, caption = entry["image"], entry["caption"]
        if not isinstance(image, str) or not image:
            raise InputError(f"{where}: 'image' must be a non-empty path string, got {image!r}.")
        captions = (caption,) if isinstance(caption, str) else caption
        if not isinstance(captions, (list, tuple)) or not captions or not all(isinstance(c, str) for c in captions):
            raise InputError(f"{where} ({image}): 'caption' must be a string or a non-empty list of strings.")
        try:
            image_id = image_id_from_filename(image)
        except InputError as e:
            raise InputError(f"{where}: {e}") from None
        if image_id in seen:
            j, other = seen[image_id]
            raise InputError(
                f"{where} ({image}) has image id {image_id}, already used by entry {j} ({other}); an evaluation "
                "split lists each image once (the train file, one entry per caption, cannot be read as one)."
            )
        seen[image_id] = (i, image)
        out.append(KarpathyImage(image=image, image_id=image_id, captions=tuple(captions)))
    return out


def _gt_from_dataset(data: Any, src: str) -> CaptionGroundTruth:
    if not isinstance(data, Mapping):
        raise InputError(f"'{src}' must hold a JSON object with 'images' and 'annotations', got {type(data).__name__}.")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise InputError(f"'{src}' needs a list '{key}' (COCO caption format), got {type(data.get(key)).__name__}.")
    if not data["images"]:
        raise InputError(f"'{src}' lists no images; there is nothing to evaluate.")
    image_ids: List[int] = []
    captions: Dict[int, List[str]] = {}
    for i, img in enumerate(data["images"]):
        if not isinstance(img, Mapping) or not is_int(img.get("id")):
            raise InputError(f"'{src}' images[{i}] must be an object with an integer 'id', got {img!r}.")
        if img["id"] in captions:
            raise InputError(f"'{src}' images[{i}]: image id {img['id']} is listed twice.")
        image_ids.append(img["id"])
        captions[img["id"]] = []
    ann_ids = set()
    for i, ann in enumerate(data["annotations"]):
        where = f"'{src}' annotations[{i}]"
        require_fields(ann, ("image_id", "caption", "id"), where)
        if not is_int(ann["image_id"]) or not is_int(ann["id"]):
            raise InputError(
                f"{where}: 'image_id' and 'id' must be integers, got {ann['image_id']!r} and {ann['id']!r}."
            )
        if not isinstance(ann["caption"], str):
            raise InputError(
                f"{where} (id {ann['id']}): 'caption' must be a string, got {type(ann['caption']).__name__}."
            )
        if ann["image_id"] not in captions:
            raise InputError(f"{where} (id {ann['id']}) refers to image {ann['image_id']}, which is not in 'images'.")
        if ann["id"] in ann_ids:
            raise InputError(f"{where}: annotation id {ann['id']} is used twice.")
        check_caption_text(ann["caption"], f"{where} (image {ann['image_id']})")
        ann_ids.add(ann["id"])
        captions[ann["image_id"]].append(ann["caption"])
    empty = [i for i in image_ids if not captions[i]]
    if empty:
        raise InputError(
            f"'{src}': {len(empty)} image(s) have no reference caption (first: {empty[:5]}); "
            "every ground-truth image needs at least one."
        )
    return CaptionGroundTruth(
        path=src, image_ids=tuple(image_ids), captions={k: tuple(v) for k, v in captions.items()}, dataset=dict(data)
    )


def read_caption_gt(path: str | Path) -> CaptionGroundTruth:
    """Read and validate ``coco_karpathy_{val,test}_gt.json`` (COCO caption format)."""
    return _gt_from_dataset(load_json(path, "caption ground truth"), str(path))


def caption_gt_from_dataset(data: Mapping[str, Any], source: str = "<ground truth>") -> CaptionGroundTruth:
    """Validate an already-loaded COCO-format caption ground truth."""
    return _gt_from_dataset(data, source)


def build_caption_gt(images: Sequence[KarpathyImage]) -> Dict[str, Any]:
    """A COCO-format ground truth from split entries (annotation ids 1..N in order), for
    data that ships without one (e.g. synthetic captions). Published numbers use the
    official file."""
    anns = [{"image_id": im.image_id, "caption": c} for im in images for c in im.captions]
    return {
        "images": [{"id": im.image_id} for im in images],
        "annotations": [dict(a, id=k + 1) for k, a in enumerate(anns)],
    }


def check_split_matches_gt(images: Sequence[KarpathyImage], gt: CaptionGroundTruth, split_source: str) -> None:
    """Before captioning: the split must list exactly the ground truth's images, or the
    metrics will refuse the predictions afterwards."""
    ids = {im.image_id for im in images}
    missing = sorted(set(gt.image_ids) - ids)
    extra = sorted(ids - set(gt.image_ids))
    if missing or extra:
        raise InputError(
            f"'{split_source}' and '{gt.path}' do not list the same images: {len(missing)} ground-truth image(s) are "
            f"not in the split (first: {missing[:5]}), {len(extra)} split image(s) have no ground truth "
            f"(first: {extra[:5]}). Use the annotation and ground-truth files of the same split."
        )
