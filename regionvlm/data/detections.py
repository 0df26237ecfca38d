"""Detector boxes for referring expression comprehension, read from either published layout
(docs/rec.md, "Candidates"):

- the refer toolkit / MAttNet layout: ``{"dets": [entry, ...]}`` or a bare list of entries,
  each ``{"image_id": ..., "box": [x, y, w, h] or {"x", "y", "w", "h"}, "score": ..., ...}``
  (other keys such as ``det_id``, ``category_id`` are ignored);
- ReCLIP's ``<dataset>_dets_dict.json``: ``{"<image_id>": [[x, y, w, h], ...], ...}``.

Boxes are in pixels of the image's original frame. An image's boxes keep the file's order
(their index is the candidate's id in the results); images the file does not mention have
no candidate. Every box is checked (:func:`regionvlm.data.boxes.parse_xywh`), and an image id
that is not in the dataset's ``instances.json`` stops the run: such a file belongs to
another dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Dict, List, Mapping, Optional

from regionvlm.common.errors import InputError
from regionvlm.common.io import read_json
from regionvlm.data.boxes import Box, parse_xywh
from regionvlm.region import whole_number

LAYOUT = (
    'detections JSON: {"dets": [{"image_id", "box": [x, y, w, h]}, ...]} (refer toolkit), a list of such '
    'entries, or {"<image_id>": [[x, y, w, h], ...]} (ReCLIP\'s *_dets_dict.json)'
)


@dataclass
class Detections:
    """Boxes per image id, in file order, and which layout the file had."""

    path: Path
    layout: str  # "refer" | "reclip"
    boxes: Dict[int, List[Box]] = field(default_factory=dict)

    def for_image(self, image_id: int) -> List[Box]:
        return self.boxes.get(image_id, [])


def read_detections(
    path: str | Path, known_image_ids: Optional[Collection[int]] = None, setting: str = "detections"
) -> Detections:
    """Read a detections file (either layout); ``known_image_ids``: the ids of the dataset's
    ``instances.json`` (a detection of any other image is an error); ``setting`` names the
    key that points to the file, for messages."""
    path = Path(path).expanduser()
    data = read_json(path, "detections file", setting, LAYOUT)
    if isinstance(data, Mapping) and "dets" in data:
        out = _read_entries(path, data["dets"], "dets")
    elif isinstance(data, list):
        out = _read_entries(path, data, "")
    elif isinstance(data, Mapping):
        out = _read_dict(path, data)
    else:
        raise InputError(f"'{path}' is not a detections file; expected {LAYOUT}.")
    if known_image_ids is not None:
        known = set(known_image_ids)
        unknown = sorted(i for i in out.boxes if i not in known)
        if unknown:
            shown = ", ".join(map(str, unknown[:5])) + (" ..." if len(unknown) > 5 else "")
            raise InputError(
                f"'{path}' has detections for {len(unknown)} image(s) that are not in the dataset's "
                f"instances.json (image id {shown}); it belongs to another dataset — use that dataset's "
                "detections file."
            )
    return out


def _read_entries(path: Path, entries: Any, key: str) -> Detections:
    where = f"{key}[{{}}]" if key else "entry {}"
    if not isinstance(entries, list):
        raise InputError(f"'{path}': 'dets' must be a list of detections, got {type(entries).__name__}.")
    out = Detections(path, "refer")
    for i, entry in enumerate(entries):
        what = f"'{path}' {where.format(i)}"
        if not isinstance(entry, Mapping) or "image_id" not in entry or "box" not in entry:
            raise InputError(f"{what}: a detection is a mapping with 'image_id' and 'box', got {str(entry)[:80]}.")
        image_id = whole_number(entry["image_id"], strings=True)
        if image_id is None:
            raise InputError(f"{what}: 'image_id' must be an integer, got {entry['image_id']!r}.")
        out.boxes.setdefault(image_id, []).append(parse_xywh(entry["box"], f"{what} (image {image_id})"))
    return out


def _read_dict(path: Path, data: Mapping[str, Any]) -> Detections:
    out = Detections(path, "reclip")
    for key, boxes in data.items():
        image_id = whole_number(key, strings=True)
        if image_id is None:
            raise InputError(f"'{path}': the key {key!r} is not an image id; expected {LAYOUT}.")
        if not isinstance(boxes, list):
            got = str(boxes)[:80]
            raise InputError(f"'{path}' image {image_id}: expected a list of [x, y, w, h] boxes, got {got}.")
        out.boxes[image_id] = [parse_xywh(b, f"'{path}' image {image_id} box {j}") for j, b in enumerate(boxes)]
    return out
