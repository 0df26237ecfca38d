"""Region classification files: Osprey's LVIS and PACO evaluation layout (docs/region_classification.md).

One JSON list, one object per image::

    [{"file_name": "000000397133.jpg", "height": 427, "width": 640,
      "categories": ["baseball_bat", "person"],               # one class name per region
      "annotations": [{"segmentation": [[x, y, x, y, ...]]},  # COCO polygons ...
                      {"segmentation": {"size": [427, 640], "counts": "..."}}]},  # ... or an RLE
     ...]

``categories[i]`` names the region ``annotations[i]``; a region is identified by the image's
``file_name`` and ``i``. Other keys of an image or an annotation (LVIS's ``id``, ``bbox``,
``area``, ``category_id`` ...) are carried by the published files and ignored here.

Everything is checked when the file is read, before any image is touched: the fields and their
types, one class name per annotation, class names with at least one word, polygons (>= 3
finite points) and RLEs (their runs must cover exactly ``height x width`` pixels), regions that
cover no pixel, and file names that occur twice. Each failure is one
:class:`~regionvlm.common.errors.InputError` naming the file, the entry and the fix.

A region's mask is the union of its parts (pycocotools ``frPyObjects`` + ``merge``, as
Osprey's evaluation decodes it), at the image's resolution. A polygon region too thin to
cover a pixel centre (it happens to slivers of LVIS and PACO parts) keeps its polygon
vertices: the task then draws its points from them.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from regionvlm.common.errors import InputError
from regionvlm.common.io import read_json
from regionvlm.data.refer import decode_segmentation, segmentation_rles
from regionvlm.region import whole_number

LAYOUT = (
    'a JSON list with one object per image: {"file_name": ..., "height": H, "width": W, '
    '"categories": [class name per region], "annotations": [{"segmentation": polygons or RLE}, ...]} '
    "(Osprey's lvis_val_1k_category.json / paco_val_1k_category.json layout)"
)
IMAGE_KEYS = ("file_name", "height", "width", "categories", "annotations")


def class_name(category: str) -> str:
    """The class name as Osprey's evaluation compares it: ``'_'`` then ``':'`` become spaces."""
    return category.replace("_", " ").replace(":", " ")


@dataclass(frozen=True)
class ClassRegion:
    """One region: its position in the image's ``annotations``, its class and its segmentation."""

    index: int
    category: str  # as written in the file
    segmentation: Any  # polygons or RLE, checked
    empty: bool = False  # True: the polygons cover no pixel (points come from the vertices)

    @property
    def class_name(self) -> str:
        return class_name(self.category)


@dataclass(frozen=True)
class ClassImage:
    """One image of the file with its regions (``entry``: its position in the file)."""

    entry: int
    file_name: str
    height: int
    width: int
    regions: Tuple[ClassRegion, ...]

    def mask(self, index: int, what: str = "region") -> np.ndarray:
        """Region ``index``'s mask (bool, height x width): the union of its parts."""
        region = self.regions[index]
        return decode_segmentation(region.segmentation, self.height, self.width, "union", what)

    def vertices(self, index: int) -> np.ndarray:
        """The (N, 2) pixel (x, y) polygon vertices of region ``index``, clipped to the image."""
        segm = self.regions[index].segmentation
        points = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in segm])
        return np.clip(points, 0.0, [float(self.width), float(self.height)])


@dataclass
class RegionClassFile:
    """Every image and region of one file."""

    path: Path
    images: List[ClassImage]

    @property
    def num_regions(self) -> int:
        return sum(len(im.regions) for im in self.images)

    def by_file_name(self) -> Dict[str, ClassImage]:
        return {im.file_name: im for im in self.images}


def _missing_key(entry: Mapping[str, Any], key: str, where: str) -> InputError:
    close = difflib.get_close_matches(key, [str(k) for k in entry], n=1, cutoff=0.75)
    hint = f" (it has '{close[0]}': a misspelling?)" if close else ""
    return InputError(f"{where} has no '{key}'{hint}; each image needs {list(IMAGE_KEYS)}. Expected layout: {LAYOUT}.")


def _check_image(k: int, entry: Any, path: Path) -> ClassImage:
    where = f"'{path}' entry [{k}]"
    if not isinstance(entry, Mapping):
        raise InputError(
            f"{where} must be an object (one image), got {type(entry).__name__}. Expected layout: {LAYOUT}."
        )
    name = entry.get("file_name")
    if isinstance(name, str) and name.strip():
        where = f"'{path}' entry [{k}] ('{name}')"
    for key in IMAGE_KEYS:
        if key not in entry:
            raise _missing_key(entry, key, where)
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"{where}: 'file_name' must be a non-empty string, got {name!r}.")
    height, width = whole_number(entry["height"]), whole_number(entry["width"])
    if height is None or width is None or height <= 0 or width <= 0:
        raise InputError(
            f"{where}: 'height' and 'width' must be positive whole numbers of pixels, "
            f"got {entry['height']!r} and {entry['width']!r}."
        )
    categories, annotations = entry["categories"], entry["annotations"]
    if not isinstance(categories, list) or not isinstance(annotations, list):
        raise InputError(f"{where}: 'categories' and 'annotations' must be lists (one item per region).")
    if len(categories) != len(annotations):
        raise InputError(
            f"{where} has {len(categories)} categories but {len(annotations)} annotations; "
            "categories[i] is the class of annotations[i], so the two lists must have the same length."
        )
    regions = []
    for i, (category, ann) in enumerate(zip(categories, annotations)):
        what = f"{where} region {i}"
        if not isinstance(category, str) or not class_name(category).split():
            raise InputError(f"{what}: the class name must be a string with at least one word, got {category!r}.")
        if not isinstance(ann, Mapping) or "segmentation" not in ann:
            raise InputError(f"{what}: an annotation must be an object with a 'segmentation' (polygons or an RLE).")
        regions.append(_check_region(i, category, ann["segmentation"], height, width, what))
    return ClassImage(k, name, height, width, tuple(regions))


def _check_region(index: int, category: str, segm: Any, height: int, width: int, what: str) -> ClassRegion:
    from pycocotools import mask as mask_utils

    rles = segmentation_rles(segm, height, width, what)
    covered = int(mask_utils.area(mask_utils.merge(rles)))
    polygons = isinstance(segm, list) and all(isinstance(p, (list, tuple)) for p in segm)
    if covered == 0 and not polygons:
        raise InputError(f"{what}: the RLE covers no pixel; there is no region to classify. Fix or remove it.")
    return ClassRegion(index, category, segm, empty=covered == 0)


def load_region_classes(path: str | Path, setting: str = "ann_path") -> RegionClassFile:
    """Read and check a region classification file (module docstring)."""
    p = Path(str(path)).expanduser()
    data = read_json(p, "region classification file", setting, LAYOUT)
    if not isinstance(data, list):
        raise InputError(
            f"'{p}' must hold a JSON list of images, got {type(data).__name__}. Expected layout: {LAYOUT}."
        )
    images: List[ClassImage] = []
    first: Dict[str, int] = {}
    for k, entry in enumerate(data):
        image = _check_image(k, entry, p)
        if image.file_name in first:
            raise InputError(
                f"'{p}': '{image.file_name}' is entry [{first[image.file_name]}] and entry [{k}]; a region is "
                "named by its image's file_name and index, so each image must appear once (merge the two)."
            )
        first[image.file_name] = k
        images.append(image)
    result = RegionClassFile(p, images)
    if result.num_regions == 0:
        raise InputError(f"'{p}' has no region to classify ({len(images)} image(s), every one without annotations).")
    return result


def find_image(roots: Sequence[Path], file_name: str) -> Optional[Path]:
    """The first ``<root>/<file_name>`` that exists (LVIS and PACO mix COCO's train and val images)."""
    for root in roots:
        candidate = root / file_name
        if candidate.is_file():
            return candidate
    return None
