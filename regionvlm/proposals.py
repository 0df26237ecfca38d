"""Mask proposals for zero-shot RIS: Segment Anything's automatic mask generator, cached
once per image as COCO RLE (docs/ris.md; compact caches, not PNG folders).

Generate (resumable: images whose file exists are skipped; each file is written atomically)::

    python -m regionvlm.proposals --images train2014/ --sam-checkpoint sam_vit_h_4b8939.pth \\
        --model-type vit_h --out proposals/ [--device cuda] [--points-per-side 32 ...]
    python -m regionvlm.proposals --images val_images.txt --image-root train2014/ ...   # a list of names
    # the lists: python -m regionvlm.data.refer ... --out val_images.txt (RefCOCO family),
    #            python -m regionvlm.data.phrasecut --data-root VGPhraseCut_v0 --split test --out test_images.txt
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
import os
import re
from functools import partial
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from regionvlm.common.errors import CheckpointError, ConfigError, InputError, MissingFileError, require_file
from regionvlm.data.proposals import (
    IMAGE_EXTENSIONS,
    check_distinct_files,
    encode_mask,
    proposal_path,
    write_proposal_file,
)

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

_SETTING_RANGES: Dict[str, Tuple[float, float]] = {
    "points_per_side": (1, 1024),
    "points_per_batch": (1, 1 << 20),
    "pred_iou_thresh": (0.0, 1.0),
    "stability_score_thresh": (0.0, 1.0),
    "stability_score_offset": (0.0, 255.0),
    "box_nms_thresh": (0.0, 1.0),
    "crop_n_layers": (0, 8),
    "crop_nms_thresh": (0.0, 1.0),
    "crop_overlap_ratio": (0.0, 0.99),
    "crop_n_points_downscale_factor": (1, 1024),
    "min_mask_region_area": (0, 1 << 40),
}

SAM_TYPES = ("vit_h", "vit_l", "vit_b", "tiny")
# "tiny" is a small random-init architecture for tests and smoke runs, not a released model;
# the real architectures come from segment-anything's own ``sam_model_registry``.
TINY_SAM = dict(
    image_size=64,
    patch_size=16,
    prompt_embed_dim=32,
    window_size=2,
    mask_in_chans=4,
    decoder_depth=1,
    decoder_mlp_dim=64,
    decoder_heads=2,
    iou_head_hidden_dim=32,
    embed_dim=32,
    depth=2,
    num_heads=2,
    global_attn_indexes=(1,),
)


# --------------------------------------------------------------------------- SAM
def _tiny_sam():
    """The tiny test architecture, built from segment-anything's modules."""
    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    a = TINY_SAM
    grid = a["image_size"] // a["patch_size"]
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=a["depth"],
            embed_dim=a["embed_dim"],
            img_size=a["image_size"],
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=a["num_heads"],
            patch_size=a["patch_size"],
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=tuple(a["global_attn_indexes"]),
            window_size=a["window_size"],
            out_chans=a["prompt_embed_dim"],
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=a["prompt_embed_dim"],
            image_embedding_size=(grid, grid),
            input_image_size=(a["image_size"], a["image_size"]),
            mask_in_chans=a["mask_in_chans"],
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=a["decoder_depth"],
                embedding_dim=a["prompt_embed_dim"],
                mlp_dim=a["decoder_mlp_dim"],
                num_heads=a["decoder_heads"],
            ),
            transformer_dim=a["prompt_embed_dim"],
            iou_head_depth=3,
            iou_head_hidden_dim=a["iou_head_hidden_dim"],
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


def build_sam(model_type: str, checkpoint: Optional[str] = None, device: str = "cpu"):
    """A segment-anything ``Sam`` of a named architecture, weights from ``checkpoint``.

    The checkpoint is read with ``weights_only=True`` (segment-anything's own loader would
    unpickle anything) and checked key by key against the architecture."""
    import torch

    if model_type not in SAM_TYPES:
        raise ConfigError(f"unknown SAM --model-type '{model_type}'; choose from {list(SAM_TYPES)}.")
    if model_type == "tiny":
        sam = _tiny_sam()
    else:
        from segment_anything import sam_model_registry

        sam = sam_model_registry[model_type](checkpoint=None)
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
                f"Pick the --model-type the checkpoint was released for ({list(SAM_TYPES)})."
            )
        sam.load_state_dict(state)
    return sam.to(device).eval()


def list_images(images: str | Path, image_root: Optional[str | Path] = None) -> List[Tuple[str, Path]]:
    """``(image name, path)`` pairs: every image under a folder (names relative to it, sorted),
    or the names listed one per line in a UTF-8 text file (relative to ``image_root``, default
    the list's folder). An empty result is an error: it would "succeed" writing nothing."""
    src = Path(images).expanduser()
    if src.is_dir():
        files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise InputError(
                f"--images folder '{src}' holds no image ({', '.join(IMAGE_EXTENSIONS)}), in it or below it."
            )
        names = [(p.relative_to(src).as_posix(), p) for p in files]
        check_distinct_files(".", [n for n, _ in names])
        return names
    if not src.is_file():
        raise MissingFileError(f"--images '{src}' is neither a folder of images nor a list file.")
    root = Path(image_root).expanduser() if image_root else src.parent
    try:
        text = src.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"--images list '{src}' is not UTF-8 text ({exc.reason} at byte {exc.start}); it should "
            "hold one image file name per line (e.g. from `python -m regionvlm.data.refer --out` or "
            "`python -m regionvlm.data.phrasecut --out`)."
        ) from None
    except OSError as exc:
        raise InputError(f"cannot read the --images list '{src}': {exc.strerror or exc}.") from None
    names = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not names:
        raise InputError(f"--images list '{src}' names no image; it should hold one image file name per line.")
    for name in names:
        proposal_path(".", name)  # absolute names and '..' are refused, naming the line
    check_distinct_files(".", names)
    return [(n, root / n) for n in names]


def read_rgb(path: Path) -> np.ndarray:
    """The RGB pixels SAM reads (every PIL mode handled by ``regionvlm.data.images``)."""
    from regionvlm.data.images import open_image

    try:
        return np.asarray(open_image(path, "image"))
    except MissingFileError:
        raise MissingFileError(f"image not found at '{path}' (check --images / --image-root).") from None


def check_generator_settings(settings: Mapping[str, Any]) -> Dict[str, Any]:
    """SAM generator settings with their types and ranges checked (a threshold above 1 would
    silently keep no mask; a string would fail deep inside segment-anything)."""
    unknown = sorted(set(settings) - set(GENERATOR_DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown generator setting(s) {unknown}; known: {sorted(GENERATOR_DEFAULTS)}.")
    out = {**GENERATOR_DEFAULTS, **dict(settings)}
    for key, value in out.items():
        integer = isinstance(GENERATOR_DEFAULTS[key], int)
        ok_type = not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
        low, high = _SETTING_RANGES[key]
        if not ok_type or not (low <= value <= high) or value != value:
            kind = "a whole number" if integer else "a number"
            raise ConfigError(f"generator setting {key} must be {kind} in [{low}, {high}], got {value!r}.")
    return out


def _shard(items: List[Any]) -> List[Any]:
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    return items[rank::world]


def generate(
    images: Sequence[Tuple[str, Path]],
    out_dir: str | Path,
    model_type: str,
    checkpoint: Optional[str],
    device: str = "cpu",
    settings: Optional[Mapping[str, Any]] = None,
    progress: bool = True,
) -> Dict[str, int]:
    """Run SAM's automatic mask generator over ``images``; skip those already written."""
    check_distinct_files(out_dir, [n for n, _ in images])  # a.jpg and a.png would share a.json
    from segment_anything import SamAutomaticMaskGenerator
    from tqdm import tqdm

    settings = check_generator_settings(settings or {})
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
    source = {
        "generator": "segment_anything.SamAutomaticMaskGenerator",
        "model_type": model_type,
        "checkpoint": Path(checkpoint).name if checkpoint else None,
        "settings": settings,
    }
    for name, path in tqdm(todo, desc="SAM proposals", disable=not progress, dynamic_ncols=True):
        rgb = read_rgb(path)
        anns = generator.generate(rgb)
        records = [
            {
                "segmentation": a["segmentation"],
                "score": float(a["predicted_iou"]),
                "stability_score": float(a["stability_score"]),
                "area": int(a["area"]),
                "bbox": [float(v) for v in a["bbox"]],
            }
            for a in anns
        ]
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
    """A mask PNG (0/255, or 0/1) -> bool; other values stop with the file name. One value per
    pixel as ``regionvlm.data.images.read_mask_image`` reads it (palette images by
    index, RGB by the largest channel; modes with alpha are refused)."""
    from regionvlm.data.images import read_mask_image

    arr = read_mask_image(path, "mask PNG")
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
    check_distinct_files(out_dir, [p.name for p in folders])
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
        write_proposal_file(
            target,
            folder.name,
            masks[0].shape[0],
            masks[0].shape[1],
            records,
            {"import": "png", "files": [p.name for p in files]},
        )
        counts["written"] += 1
        counts["masks"] += len(masks)
    if counts["empty"]:
        print(
            f"warning: {counts['empty']} folder(s) under '{src}' hold no PNG mask; no proposal file was "
            "written for them, so RIS will report their images as missing proposals."
        )
    return counts


# --------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m regionvlm.proposals",
        description="Compute (or import) Segment Anything mask proposals, one COCO-RLE JSON per image.",
    )
    p.add_argument("--images", help="a folder of images (recursive) or a text file of image names")
    p.add_argument("--image-root", help="folder the names in an --images list are relative to")
    p.add_argument("--sam-checkpoint", help="SAM weights, e.g. sam_vit_h_4b8939.pth")
    p.add_argument("--model-type", default="vit_h", choices=SAM_TYPES)
    p.add_argument("--out", required=True, help="output folder of proposal files")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    p.add_argument("--config", help="YAML with generator settings (flags win)")
    p.add_argument("--import-png-dir", help="convert <dir>/<image_stem>/*.png instead of running SAM")
    p.add_argument("--no-progress", action="store_true")
    for key, value in GENERATOR_DEFAULTS.items():
        p.add_argument(
            "--" + key.replace("_", "-"),
            type=type(value),
            default=None,
            help=f"generator setting (default {value:.4g})"
            if isinstance(value, float)
            else f"generator setting (default {value})",
        )
    return p


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, int]:
    args = _parser().parse_args(argv)
    if args.import_png_dir:
        counts = import_png_dir(args.import_png_dir, args.out, progress=not args.no_progress)
        print(
            f"imported {counts['written']} image(s), {counts['masks']} masks; "
            f"{counts['done_before']} already present -> {args.out}"
        )
        return counts
    if not args.images:
        raise ConfigError("give --images (folder or list file), or --import-png-dir.")
    if not args.sam_checkpoint:
        raise ConfigError(f"--sam-checkpoint is required (SAM weights are published at {SAM_PUBLISHED}).")
    settings: Dict[str, Any] = {}
    if args.config:
        from omegaconf import OmegaConf

        from regionvlm.common.config import load_yaml

        loaded = OmegaConf.to_container(load_yaml(args.config), resolve=True)
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"--config '{args.config}' must hold a mapping of generator settings "
                f"(e.g. `points_per_side: 32`), got {type(loaded).__name__}."
            )
        settings.update(loaded)
    settings.update({k: getattr(args, k) for k in GENERATOR_DEFAULTS if getattr(args, k) is not None})
    check_generator_settings(settings)  # before listing images or loading SAM
    from regionvlm.common.dist_utils import resolve_device

    try:
        device = str(resolve_device(args.device or "auto"))  # auto: this rank's GPU if any, else the CPU
    except ConfigError as exc:
        raise ConfigError(f"--device: {exc}") from None
    images = list_images(args.images, args.image_root)
    counts = generate(
        images, args.out, args.model_type, args.sam_checkpoint, device, settings, progress=not args.no_progress
    )
    print(
        f"wrote {counts['written']} proposal file(s) ({counts['masks']} masks); "
        f"{counts['done_before']} already present -> {args.out}"
    )
    return counts


if __name__ == "__main__":
    from regionvlm.common.cli import run

    run(main)
