"""Mask proposals for zero-shot RIS: Segment Anything's automatic mask generator, cached
once per image as COCO RLE (SPEC section 4; DESIGN: compact caches, not PNG folders).

Generate (resumable: images whose file exists are skipped; each file is written atomically)::

    python -m regionvlm.proposals --images train2014/ --sam-checkpoint sam_vit_h_4b8939.pth \\
        --model-type vit_h --out proposals/ [--device cuda] [--points-per-side 32 ...]
    python -m regionvlm.proposals --images val_images.txt --image-root train2014/ ...   # a list of names
    torchrun --nproc_per_node 8 -m regionvlm.proposals ...   # each process takes every N-th image

Import the authors' layout (``<dir>/<image_stem>/<any>.png``, one 0/255 PNG per mask)::

    python -m regionvlm.proposals --import-png-dir SAM_proposals/ --out proposals/

File format: ``<out>/<image name without its image extension>.json`` holding
``{"format": "regionvlm-proposals", "version": 1, "image", "height", "width", "source",
"masks": [{"segmentation": COCO RLE, "score", "area", "bbox": [x, y, w, h], ...}]}`` in
proposal order. ``score`` is SAM's predicted IoU (``null`` for imported PNG masks). The
order is the generator's output order (highest predicted IoU first after its NMS); imported
PNG masks are ordered by file name, numbers compared by value (``2.png`` before
``10.png``), ties by the plain name — the authors' script used ``os.listdir`` order,
which no file system guarantees.

Generator defaults are segment-anything's own (the authors did not publish theirs):
points_per_side 32, points_per_batch 64, pred_iou_thresh 0.88, stability_score_thresh
0.95, stability_score_offset 1.0, box_nms_thresh 0.7, crop_n_layers 0, crop_nms_thresh
0.7, crop_overlap_ratio 512/1500, crop_n_points_downscale_factor 1, min_mask_region_area 0
(> 0 needs opencv). Each can be set by flag or in a YAML given with ``--config``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from regionvlm.common.errors import (CheckpointError, ConfigError, InputError, MissingFileError,
                                     RegionVLMError, require_file)
from regionvlm.common.io import atomic_write_text

FORMAT = "regionvlm-proposals"
VERSION = 1
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SAM_PUBLISHED = "https://github.com/facebookresearch/segment-anything#model-checkpoints"

GENERATOR_DEFAULTS: Dict[str, Any] = {
    "points_per_side": 32,
    "points_per_batch": 64,
    "pred_iou_thresh": 0.88,
    "stability_score_thresh": 0.95,
    "stability_score_offset": 1.0,
    "box_nms_thresh": 0.7,
    "crop_n_layers": 0,
    "crop_nms_thresh": 0.7,
    "crop_overlap_ratio": 512 / 1500,
    "crop_n_points_downscale_factor": 1,
    "min_mask_region_area": 0,
}

# SAM architectures (segment-anything's build_sam values); "tiny" is a small random-init
# architecture for tests and smoke runs, not a released model.
_SAM_COMMON = dict(image_size=1024, patch_size=16, prompt_embed_dim=256, window_size=14,
                   mask_in_chans=16, decoder_depth=2, decoder_mlp_dim=2048, decoder_heads=8,
                   iou_head_hidden_dim=256)
SAM_ARCHS: Dict[str, Dict[str, Any]] = {
    "vit_h": dict(_SAM_COMMON, embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
    "vit_l": dict(_SAM_COMMON, embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "vit_b": dict(_SAM_COMMON, embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
    "tiny": dict(image_size=64, patch_size=16, prompt_embed_dim=32, window_size=2, mask_in_chans=4,
                 decoder_depth=1, decoder_mlp_dim=64, decoder_heads=2, iou_head_hidden_dim=32,
                 embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,)),
}


# --------------------------------------------------------------------------- file format
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


def encode_mask(mask: np.ndarray) -> Dict[str, Any]:
    """Bool (H, W) -> JSON-ready COCO RLE record with area and XYWH box."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
            "area": int(mask_utils.area(rle)), "bbox": [float(v) for v in mask_utils.toBbox(rle)]}


def write_proposal_file(path: Path, image_name: str, height: int, width: int,
                        records: Sequence[Mapping[str, Any]], source: Mapping[str, Any]) -> Path:
    """Write one image's records atomically (a killed run never leaves half a file)."""
    for i, rec in enumerate(records):
        size = list(rec["segmentation"]["size"])
        if size != [height, width]:
            raise InputError(f"{image_name}: mask {i} has size {size}, the image is {[height, width]}.")
    doc = {"format": FORMAT, "version": VERSION, "image": str(image_name), "height": int(height),
           "width": int(width), "source": dict(source), "masks": [dict(r) for r in records]}
    atomic_write_text(path, json.dumps(doc, separators=(",", ":")) + "\n")
    return path


def save_image_proposals(out_dir: str | Path, image_name: str, masks: Sequence[np.ndarray],
                         scores: Sequence[Optional[float]],
                         image_size: Optional[Tuple[int, int]] = None,
                         source: Optional[Mapping[str, Any]] = None) -> Path:
    """Store ``masks`` (bool H x W, in proposal order) and their ``scores`` for one image.

    ``image_size=(height, width)`` is needed only when ``masks`` is empty. Returns the file."""
    if len(masks) != len(scores):
        raise InputError(f"{image_name}: {len(masks)} masks but {len(scores)} scores.")
    arrays = [np.asarray(m) for m in masks]
    if arrays:
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1 or arrays[0].ndim != 2:
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
        rec = encode_mask(a > 0 if a.dtype != bool else a)
        rec["score"] = None if score is None else float(score)
        records.append(rec)
    return write_proposal_file(proposal_path(out_dir, image_name), image_name, height, width, records,
                               source or {"writer": "save_image_proposals"})


class ProposalSet:
    """One image's proposals; masks are decoded on first use (C-ordered bool arrays), areas
    come straight from the RLE, so filtering by area decodes nothing."""

    def __init__(self, rles: List[Dict[str, Any]], scores: List[Optional[float]], height: int, width: int,
                 path: Optional[Path] = None, masks: Optional[List[np.ndarray]] = None):
        self.rles, self.scores = rles, scores
        self.height, self.width, self.path = int(height), int(width), path
        self._masks: Dict[int, np.ndarray] = dict(enumerate(masks)) if masks is not None else {}
        if masks is not None:
            self.areas = np.array([int(m.sum()) for m in masks], dtype=np.int64)
        else:
            from pycocotools import mask as mask_utils

            self.areas = np.asarray(mask_utils.area(rles), dtype=np.int64).reshape(-1) if rles else np.zeros(0, np.int64)

    @classmethod
    def from_masks(cls, masks: Sequence[np.ndarray], scores: Optional[Sequence[Optional[float]]] = None
                   ) -> "ProposalSet":
        """In-memory proposals (tests, interactive use)."""
        arrays = [np.ascontiguousarray(np.asarray(m) > 0) for m in masks]
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
    if int(doc.get("version", 0)) > VERSION:
        raise InputError(f"'{path}' has format version {doc.get('version')}; this code reads <= {VERSION}.")
    height, width = int(doc["height"]), int(doc["width"])
    rles, scores = [], []
    for i, rec in enumerate(doc["masks"]):
        seg = rec.get("segmentation") if isinstance(rec, Mapping) else None
        if not isinstance(seg, Mapping) or "counts" not in seg or list(seg.get("size", [])) != [height, width]:
            raise InputError(f"'{path}': mask {i} needs a COCO RLE of size {[height, width]}.")
        counts = seg["counts"]
        rles.append({"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts})
        scores.append(rec.get("score"))
    return ProposalSet(rles, scores, height, width, path)


def load_image_proposals(out_dir: str | Path, image_name: str) -> Tuple[List[np.ndarray], List[Optional[float]]]:
    """``(masks, scores)`` of one image, masks as bool arrays in proposal order."""
    props = read_proposals(proposal_path(out_dir, image_name), image_name)
    return [props.mask(i) for i in range(len(props))], list(props.scores)


# --------------------------------------------------------------------------- SAM
def build_sam(model_type: str, checkpoint: Optional[str] = None, device: str = "cpu"):
    """A segment-anything ``Sam`` of a named architecture, weights from ``checkpoint``."""
    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    if model_type not in SAM_ARCHS:
        raise ConfigError(f"unknown SAM --model-type '{model_type}'; choose from {sorted(SAM_ARCHS)}.")
    a = SAM_ARCHS[model_type]
    grid = a["image_size"] // a["patch_size"]
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=a["depth"], embed_dim=a["embed_dim"], img_size=a["image_size"], mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=a["num_heads"],
            patch_size=a["patch_size"], qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=tuple(a["global_attn_indexes"]), window_size=a["window_size"],
            out_chans=a["prompt_embed_dim"]),
        prompt_encoder=PromptEncoder(
            embed_dim=a["prompt_embed_dim"], image_embedding_size=(grid, grid),
            input_image_size=(a["image_size"], a["image_size"]), mask_in_chans=a["mask_in_chans"]),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=a["decoder_depth"], embedding_dim=a["prompt_embed_dim"],
                                          mlp_dim=a["decoder_mlp_dim"], num_heads=a["decoder_heads"]),
            transformer_dim=a["prompt_embed_dim"], iou_head_depth=3, iou_head_hidden_dim=a["iou_head_hidden_dim"]),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    if checkpoint is not None:
        path = require_file(checkpoint, f"SAM {model_type} checkpoint", "--sam-checkpoint", SAM_PUBLISHED)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"cannot read the SAM checkpoint '{path}': {exc}") from None
        if not isinstance(state, Mapping):
            raise CheckpointError(f"'{path}' does not hold a state dict (got {type(state).__name__}).")
        expected = sam.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
        if missing or unexpected or wrong:
            raise CheckpointError(
                f"'{path}' does not match SAM '{model_type}': {len(missing)} missing keys {missing[:3]}, "
                f"{len(unexpected)} unexpected {unexpected[:3]}, {len(wrong)} with other shapes {wrong[:3]}. "
                f"Pick the --model-type the checkpoint was released for ({sorted(SAM_ARCHS)})."
            )
        sam.load_state_dict(state)
    return sam.to(device).eval()


def list_images(images: str | Path, image_root: Optional[str | Path] = None) -> List[Tuple[str, Path]]:
    """``(image name, path)`` pairs: every image under a folder (names relative to it, sorted),
    or the names listed one per line in a text file (relative to ``image_root``, default the
    list's folder)."""
    src = Path(images).expanduser()
    if src.is_dir():
        files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        return [(p.relative_to(src).as_posix(), p) for p in files]
    if not src.is_file():
        raise MissingFileError(f"--images '{src}' is neither a folder of images nor a list file.")
    root = Path(image_root).expanduser() if image_root else src.parent
    names = [ln.strip() for ln in src.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return [(n, root / n) for n in names]


def read_rgb(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise MissingFileError(f"image not found at '{path}' (check --images / --image-root).")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"cannot read the image '{path}': {exc}") from None


def _shard(items: List[Any]) -> List[Any]:
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    return items[rank::world]


def generate(images: Sequence[Tuple[str, Path]], out_dir: str | Path, model_type: str,
             checkpoint: Optional[str], device: str = "cpu",
             settings: Optional[Mapping[str, Any]] = None, progress: bool = True) -> Dict[str, int]:
    """Run SAM's automatic mask generator over ``images``; skip those already written."""
    from segment_anything import SamAutomaticMaskGenerator
    from tqdm import tqdm

    settings = {**GENERATOR_DEFAULTS, **dict(settings or {})}
    unknown = sorted(set(settings) - set(GENERATOR_DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown generator setting(s) {unknown}; known: {sorted(GENERATOR_DEFAULTS)}.")
    if settings["min_mask_region_area"] > 0:
        try:
            import cv2  # noqa: F401
        except ImportError:
            raise ConfigError("min_mask_region_area > 0 needs opencv (pip install opencv-python-headless).") from None
    todo = [(n, p) for n, p in _shard(list(images)) if not proposal_path(out_dir, n).exists()]
    counts = {"images": len(images), "done_before": 0, "written": 0, "masks": 0}
    counts["done_before"] = len(_shard(list(images))) - len(todo)
    if not todo:
        return counts
    sam = build_sam(model_type, checkpoint, device)
    generator = SamAutomaticMaskGenerator(sam, output_mode="coco_rle", **settings)
    source = {"generator": "segment_anything.SamAutomaticMaskGenerator", "model_type": model_type,
              "checkpoint": Path(checkpoint).name if checkpoint else None, "settings": settings}
    for name, path in tqdm(todo, desc="SAM proposals", disable=not progress, dynamic_ncols=True):
        rgb = read_rgb(path)
        anns = generator.generate(rgb)
        records = [{"segmentation": a["segmentation"], "score": float(a["predicted_iou"]),
                    "stability_score": float(a["stability_score"]), "area": int(a["area"]),
                    "bbox": [float(v) for v in a["bbox"]]} for a in anns]
        write_proposal_file(proposal_path(out_dir, name), name, rgb.shape[0], rgb.shape[1], records, source)
        counts["written"] += 1
        counts["masks"] += len(records)
    return counts


# --------------------------------------------------------------------------- PNG import
def natural_key(name: str) -> Tuple:
    """Sort key comparing digit runs by value: ``2.png`` < ``10.png``; ties by the plain name."""
    parts = tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t)
    return parts + ((2, 0, name),)


def read_binary_png(path: Path) -> np.ndarray:
    """A mask PNG (0/255, or 0/1) -> bool; other values stop with the file name."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("L") if im.mode not in ("L", "1", "P", "I;16", "I") else im)
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"cannot read the mask PNG '{path}': {exc}") from None
    if arr.dtype == bool:
        return np.ascontiguousarray(arr)
    values = set(np.unique(arr).tolist())
    if not (values <= {0, 255} or values <= {0, 1}):
        raise InputError(f"'{path}' is not a binary mask: values {sorted(values)[:6]} (expected 0/255 or 0/1).")
    return np.ascontiguousarray(arr > 0)


def import_png_dir(png_dir: str | Path, out_dir: str | Path, progress: bool = True) -> Dict[str, int]:
    """Convert ``<png_dir>/<image_stem>/*.png`` into proposal files (resumable)."""
    from tqdm import tqdm

    src = Path(png_dir).expanduser()
    if not src.is_dir():
        raise MissingFileError(f"--import-png-dir '{src}' is not a folder (expected <dir>/<image_stem>/<mask>.png).")
    folders = sorted(p for p in src.iterdir() if p.is_dir())
    counts = {"folders": len(folders), "done_before": 0, "written": 0, "empty": 0, "masks": 0}
    for folder in tqdm(folders, desc="import PNG masks", disable=not progress, dynamic_ncols=True):
        target = proposal_path(out_dir, folder.name)
        if target.exists():
            counts["done_before"] += 1
            continue
        files = sorted((p for p in folder.iterdir() if p.suffix.lower() == ".png"), key=lambda p: natural_key(p.name))
        if not files:
            counts["empty"] += 1
            continue
        masks = [read_binary_png(p) for p in files]
        if len({m.shape for m in masks}) != 1:
            raise InputError(f"'{folder}': mask PNGs have different sizes {sorted({m.shape for m in masks})}.")
        records = []
        for m in masks:
            rec = encode_mask(m)
            rec["score"] = None
            records.append(rec)
        write_proposal_file(target, folder.name, masks[0].shape[0], masks[0].shape[1], records,
                            {"import": "png", "files": [p.name for p in files]})
        counts["written"] += 1
        counts["masks"] += len(masks)
    if counts["empty"]:
        print(f"warning: {counts['empty']} folder(s) under '{src}' hold no PNG mask; no proposal file was "
              "written for them, so RIS will report their images as missing proposals.")
    return counts


# --------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m regionvlm.proposals",
        description="Compute (or import) Segment Anything mask proposals, one COCO-RLE JSON per image.")
    p.add_argument("--images", help="a folder of images (recursive) or a text file of image names")
    p.add_argument("--image-root", help="folder the names in an --images list are relative to")
    p.add_argument("--sam-checkpoint", help="SAM weights, e.g. sam_vit_h_4b8939.pth")
    p.add_argument("--model-type", default="vit_h", choices=sorted(SAM_ARCHS))
    p.add_argument("--out", required=True, help="output folder of proposal files")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    p.add_argument("--config", help="YAML with generator settings (flags win)")
    p.add_argument("--import-png-dir", help="convert <dir>/<image_stem>/*.png instead of running SAM")
    p.add_argument("--no-progress", action="store_true")
    for key, value in GENERATOR_DEFAULTS.items():
        p.add_argument("--" + key.replace("_", "-"), type=type(value), default=None,
                       help=f"generator setting (default {value:.4g})" if isinstance(value, float)
                       else f"generator setting (default {value})")
    return p


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, int]:
    args = _parser().parse_args(argv)
    if args.import_png_dir:
        counts = import_png_dir(args.import_png_dir, args.out, progress=not args.no_progress)
        print(f"imported {counts['written']} image(s), {counts['masks']} masks; "
              f"{counts['done_before']} already present -> {args.out}")
        return counts
    if not args.images:
        raise ConfigError("give --images (folder or list file), or --import-png-dir.")
    if not args.sam_checkpoint:
        raise ConfigError(f"--sam-checkpoint is required (SAM weights are published at {SAM_PUBLISHED}).")
    settings: Dict[str, Any] = {}
    if args.config:
        from regionvlm.common.config import load_yaml
        from omegaconf import OmegaConf

        settings.update(OmegaConf.to_container(load_yaml(args.config), resolve=True))
    settings.update({k: getattr(args, k) for k in GENERATOR_DEFAULTS if getattr(args, k) is not None})
    device = args.device
    if device is None:
        import torch

        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
    images = list_images(args.images, args.image_root)
    counts = generate(images, args.out, args.model_type, args.sam_checkpoint, device, settings,
                      progress=not args.no_progress)
    print(f"wrote {counts['written']} proposal file(s) ({counts['masks']} masks); "
          f"{counts['done_before']} already present -> {args.out}")
    return counts


if __name__ == "__main__":
    try:
        main()
    except RegionVLMError as exc:
        raise SystemExit(f"error: {exc}")
