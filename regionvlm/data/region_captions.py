"""Region-captioning benchmark files: which box of which image to caption, and the captions
it is scored against, read the way the published evaluations read them
(docs/region_captioning.md).

Two published layouts, both COCO-style JSON (``images`` + ``annotations``, boxes
``[x, y, width, height]`` in pixels of the listed ``width`` x ``height``):

* GLaMM's (``mbzuai-oryx/groundingLMM``, ``eval/region_captioning``), for RefCOCOg val
  (MDETR's ``finetune_refcocog_val_captions.json``: one image entry per referring sentence,
  its id numbered like its annotation's) and Visual Genome (GLaMM's ``test_caption.json``,
  one region per image). An image entry is one scoring unit: its region is the box of the
  annotation whose *id* equals the entry's id (GLaMM's loader looks it up by that id), and
  its references are the ``caption`` of every annotation whose ``image_id`` is the entry's
  id (what the COCO caption evaluation reads): for MDETR's file, the one sentence. The
  caption of a result is stored under the entry's id, so the file itself is the ground truth.
* GRiT's (``JialianW/GRiT``, ``datasets/DATASETS.md``: ``vg/annotations/test.json``): every
  region of every test image, many per image. Each annotation is one scoring unit with its
  ``caption`` as the one reference, keyed by the annotation id; ``iscrowd`` annotations and
  images without regions are left out and images taken in id order, as GRiT's loader does.

A third source, :func:`regions_from_refer`, makes the same units from a refer-layout split
(the synthetic world): one unit per referring sentence, keyed by its ``sent_id``.

Checks (each an :class:`~regionvlm.common.errors.InputError` naming the file and entry):
missing keys, ids that are not integers or repeat, an annotation of an unknown image, empty
captions, zero-area boxes and boxes outside the image. A box may overshoot the image edge
by ``box_margin`` pixels (rounding in the published files); such boxes are clipped to the
image and counted in ``notes["boxes_clipped"]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from regionvlm.common.errors import InputError
from regionvlm.common.io import read_json
from regionvlm.data.coco_karpathy import check_caption_text, is_int, require_fields
from regionvlm.data.refer import ReferSplit

DEFAULT_BOX_MARGIN = 1.0
GLAMM = "glamm"
GRIT = "grit"
SYNTHETIC = "synthetic"
LAYOUTS: Dict[str, str] = {
    GLAMM: (
        "GLaMM's region-caption layout: {'images': [{'id', 'file_name', 'height', 'width'}], "
        "'annotations': [{'id' (= its image's id), 'image_id', 'bbox': [x, y, w, h], 'caption'}]} "
        "(MDETR's finetune_refcocog_val_captions.json or GLaMM's VG test_caption.json)"
    ),
    GRIT: (
        "GRiT's VG layout: {'images': [{'id', 'file_name', 'height', 'width'}], "
        "'annotations': [{'id', 'image_id', 'bbox': [x, y, w, h], 'caption'}]} (GRiT's vg test.json)"
    ),
}


@dataclass(frozen=True)
class CaptionedRegion:
    """One scoring unit: result id, image file (relative to the image root), the image size
    the box is given in, the box ``(x0, y0, x1, y1)`` in pixels, the reference captions and,
    where the file has one, the region's COCO segmentation."""

    id: int
    image: str
    width: int
    height: int
    box: Tuple[float, float, float, float]
    references: Tuple[str, ...]
    segmentation: Any = None


@dataclass
class RegionCaptionSet:
    """The units of one benchmark file, its COCO-format caption ground truth (image ids are
    the units' ids) and counts of what was clipped or left out (``notes``)."""

    path: str
    layout: str
    regions: List[CaptionedRegion]
    ground_truth: Dict[str, Any]
    notes: Dict[str, int] = field(default_factory=dict)

    @property
    def ground_truth_source(self) -> str:
        """The file the ground truth is (GLaMM's layout), or a description of the one built
        in memory (then it is no file: results write it beside the captions)."""
        return self.path if self.layout == GLAMM else f"<one reference per region of '{self.path}'>"


@dataclass(frozen=True)
class _Image:
    file_name: str
    width: int
    height: int


def _margin_key(section: Optional[str]) -> str:
    return f"`{section}.box_margin`" if section else "box_margin"


def pixel_box(
    bbox: Any, width: int, height: int, where: str, margin: float = DEFAULT_BOX_MARGIN, section: Optional[str] = None
) -> Tuple[Tuple[float, float, float, float], bool]:
    """A COCO ``[x, y, w, h]`` box as ``(x0, y0, x1, y1)`` inside the ``width`` x ``height``
    image, and whether it was clipped (it overshot the edge by at most ``margin`` pixels)."""
    values = bbox if isinstance(bbox, (list, tuple)) else None
    if (
        values is None
        or len(values) != 4
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        or not all(np.isfinite(v) for v in values)
    ):
        raise InputError(f"{where}: 'bbox' must be 4 finite numbers [x, y, width, height], got {bbox!r}.")
    x, y, w, h = (float(v) for v in values)
    if w <= 0 or h <= 0:
        raise InputError(f"{where}: the box {list(values)} has zero area (width and height must be positive).")
    x0, y0, x1, y1 = x, y, x + w, y + h
    overshoot = max(-x0, -y0, x1 - width, y1 - height)
    if overshoot > margin:
        raise InputError(
            f"{where}: the box {list(values)} (x0, y0, x1, y1 = {x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the "
            f"{width}x{height} image by {overshoot:g} px, more than the {margin:g} px allowed ({_margin_key(section)}; "
            "boxes within it are clipped to the image)."
        )
    clipped = (max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height)))
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        raise InputError(f"{where}: the box {list(values)} has no area inside the {width}x{height} image.")
    return clipped, clipped != (x0, y0, x1, y1)


def _load(path: str | Path, layout: str, setting: Optional[str]) -> Tuple[str, Mapping[str, Any]]:
    src = str(Path(path).expanduser())
    data = read_json(path, "region-caption file", setting, LAYOUTS[layout])
    if not isinstance(data, Mapping) or not isinstance(data.get("images"), list):
        raise InputError(
            f"'{src}' must hold a JSON object with lists 'images' and 'annotations'; expected {LAYOUTS[layout]}."
        )
    if not isinstance(data.get("annotations"), list):
        raise InputError(f"'{src}' has no list 'annotations'; expected {LAYOUTS[layout]}.")
    if not data["images"]:
        raise InputError(f"'{src}' lists no images; there is nothing to caption.")
    return src, data


def _int(entry: Mapping[str, Any], key: str, where: str) -> int:
    value = entry[key]
    if not is_int(value):
        raise InputError(f"{where}: '{key}' must be an integer, got {value!r}.")
    return int(value)


def _images(data: Mapping[str, Any], src: str) -> Dict[int, _Image]:
    """The image entries in file order; sizes positive integers, ids unique."""
    images: Dict[int, _Image] = {}
    for i, img in enumerate(data["images"]):
        where = f"'{src}' images[{i}]"
        require_fields(img, ("id", "file_name", "height", "width"), where)
        image_id = _int(img, "id", where)
        width, height = _int(img, "width", where), _int(img, "height", where)
        if width <= 0 or height <= 0:
            raise InputError(f"{where} (id {image_id}) has the size {width}x{height}; both must be positive.")
        if not isinstance(img["file_name"], str) or not img["file_name"].strip():
            raise InputError(f"{where} (id {image_id}): 'file_name' must be a non-empty string.")
        if image_id in images:
            raise InputError(f"{where}: image id {image_id} is listed twice.")
        images[image_id] = _Image(img["file_name"], width, height)
    return images


def _caption(ann: Mapping[str, Any], where: str) -> str:
    caption = ann["caption"]
    if not isinstance(caption, str):
        raise InputError(f"{where}: 'caption' must be a string, got {type(caption).__name__}.")
    if not caption.strip():
        raise InputError(f"{where}: the caption is empty; every region needs a reference caption to be scored.")
    check_caption_text(caption, where)
    return caption


def _annotations(
    data: Mapping[str, Any], src: str, images: Mapping[int, _Image], hint: str = ""
) -> List[Tuple[int, int, str, Mapping[str, Any]]]:
    """``(id, image_id, caption, entry)`` of every annotation, in file order, checked."""
    out: List[Tuple[int, int, str, Mapping[str, Any]]] = []
    seen = set()
    for i, ann in enumerate(data["annotations"]):
        where = f"'{src}' annotations[{i}]"
        require_fields(ann, ("id", "image_id", "caption"), where, hint)
        ann_id, image_id = _int(ann, "id", where), _int(ann, "image_id", where)
        where = f"{where} (id {ann_id})"
        if ann_id in seen:
            raise InputError(f"{where}: annotation id {ann_id} is used twice.")
        if image_id not in images:
            raise InputError(f"{where} refers to image {image_id}, which is not in 'images'.")
        seen.add(ann_id)
        out.append((ann_id, image_id, _caption(ann, where), ann))
    return out


def read_glamm_region_captions(
    path: str | Path,
    box_margin: float = DEFAULT_BOX_MARGIN,
    setting: Optional[str] = None,
    section: Optional[str] = None,
) -> RegionCaptionSet:
    """Read a file in GLaMM's layout (RefCOCOg val or VG test_caption): one unit per image
    entry, in file order (module docstring). ``setting``/``section`` name the configuration
    keys in messages."""
    src, data = _load(path, GLAMM, setting)
    images = _images(data, src)
    hint = ""
    first = data["images"][0]
    if isinstance(first, Mapping) and "caption" in first:
        hint = (
            " This looks like MDETR's finetune_refcocog_val.json, whose sentences sit on the image entries; the "
            "evaluation reads GLaMM's finetune_refcocog_val_captions.json, whose annotations carry them."
        )
    anns = _annotations(data, src, images, hint)
    by_id = {ann_id: (image_id, ann) for ann_id, image_id, _, ann in anns}
    references: Dict[int, List[str]] = {image_id: [] for image_id in images}
    for _, image_id, caption, _ in anns:
        references[image_id].append(caption)
    regions, clipped = [], 0
    for image_id, img in images.items():
        where = f"'{src}' image {image_id} ({img.file_name})"
        if image_id not in by_id:
            raise InputError(
                f"{where} has no annotation with id {image_id}. GLaMM's evaluation takes the region of image entry "
                "N from annotation N (MDETR's files number entries and annotations alike); expected "
                f"{LAYOUTS[GLAMM]}."
            )
        owner, ann = by_id[image_id]
        if owner != image_id:
            raise InputError(
                f"{where}: annotation {image_id}, which gives its region, belongs to image {owner}; the region and "
                "the references of one entry must be of the same image."
            )
        if "bbox" not in ann:
            raise InputError(f"{where}: its annotation {image_id} has no 'bbox'.")
        box, was_clipped = pixel_box(
            ann["bbox"], img.width, img.height, f"{where}, annotation {image_id}", box_margin, section
        )
        clipped += was_clipped
        regions.append(
            CaptionedRegion(
                image_id,
                img.file_name,
                img.width,
                img.height,
                box,
                tuple(references[image_id]),
                ann.get("segmentation"),
            )
        )
    gt = {
        "images": [{"id": image_id} for image_id in images],
        "annotations": [
            {"image_id": image_id, "caption": caption, "id": ann_id} for ann_id, image_id, caption, _ in anns
        ],
    }
    return RegionCaptionSet(src, GLAMM, regions, gt, {"boxes_clipped": clipped})


def read_grit_region_captions(
    path: str | Path,
    box_margin: float = DEFAULT_BOX_MARGIN,
    setting: Optional[str] = None,
    section: Optional[str] = None,
) -> RegionCaptionSet:
    """Read GRiT's VG ``test.json``: one unit per (non-crowd) annotation, images in id order,
    a unit's id its annotation id, its one reference its caption."""
    src, data = _load(path, GRIT, setting)
    images = _images(data, src)
    per_image: Dict[int, List[Tuple[int, str, Mapping[str, Any]]]] = {image_id: [] for image_id in images}
    crowd = 0
    for ann_id, image_id, caption, ann in _annotations(data, src, images):
        if ann.get("iscrowd", 0):
            crowd += 1
            continue
        per_image[image_id].append((ann_id, caption, ann))
    regions, clipped, empty = [], 0, 0
    for image_id in sorted(images):
        img = images[image_id]
        if not per_image[image_id]:
            empty += 1
            continue
        for ann_id, caption, ann in per_image[image_id]:
            where = f"'{src}' annotation {ann_id} (image {image_id}, {img.file_name})"
            if "bbox" not in ann:
                raise InputError(f"{where} has no 'bbox'.")
            box, was_clipped = pixel_box(ann["bbox"], img.width, img.height, where, box_margin, section)
            clipped += was_clipped
            regions.append(
                CaptionedRegion(ann_id, img.file_name, img.width, img.height, box, (caption,), ann.get("segmentation"))
            )
    if not regions:
        raise InputError(f"'{src}' has no region to caption (crowd annotations: {crowd}); expected {LAYOUTS[GRIT]}.")
    notes = {"boxes_clipped": clipped, "crowd_skipped": crowd, "images_without_regions": empty}
    return RegionCaptionSet(src, GRIT, regions, _one_reference_gt(regions), notes)


def regions_from_refer(
    split: ReferSplit, box_margin: float = DEFAULT_BOX_MARGIN, section: Optional[str] = None
) -> RegionCaptionSet:
    """One unit per referring sentence of a refer-layout split (the synthetic world): its
    annotation's box and segmentation, the sentence as the one reference, keyed by ``sent_id``."""
    regions, clipped = [], 0
    seen = set()
    for q in split.queries:
        where = f"'{split.refs_path}' ref {q.ref_id} sentence {q.sent_id}"
        if q.sent_id in seen:
            raise InputError(f"{where}: sent_id {q.sent_id} is used twice; it keys the caption results.")
        seen.add(q.sent_id)
        if not q.sentence.strip():
            raise InputError(f"{where}: the sentence is empty; every region needs a reference caption to be scored.")
        check_caption_text(q.sentence, where)
        ann, img = split.annotations[q.ann_id], split.images[q.image_id]
        if "bbox" not in ann:
            raise InputError(f"'{split.instances_path}' annotation {q.ann_id} has no 'bbox'.")
        box, was_clipped = pixel_box(
            ann["bbox"], img.width, img.height, f"{where}, annotation {q.ann_id}", box_margin, section
        )
        clipped += was_clipped
        regions.append(
            CaptionedRegion(q.sent_id, img.file_name, img.width, img.height, box, (q.sentence,), ann["segmentation"])
        )
    if not regions:
        raise InputError(f"'{split.refs_path}' has no sentence in split '{split.split}' to caption.")
    return RegionCaptionSet(
        str(split.refs_path), SYNTHETIC, regions, _one_reference_gt(regions), {"boxes_clipped": clipped}
    )


def _one_reference_gt(regions: List[CaptionedRegion]) -> Dict[str, Any]:
    """The COCO-format ground truth of one-reference units keyed by their own id (one
    "image" and one annotation per unit, both numbered with the unit's id)."""
    return {
        "images": [{"id": r.id} for r in regions],
        "annotations": [{"image_id": r.id, "caption": r.references[0], "id": r.id} for r in regions],
    }
