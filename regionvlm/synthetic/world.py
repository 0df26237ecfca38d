"""Write the synthetic world in the real dataset file formats.

``python -m regionvlm.synthetic --out DIR`` produces::

    DIR/images/scene_<split>_<n>.png
    DIR/localized_narratives/synthetic_<split>_localized_narratives.jsonl   (official LN JSONL)
    DIR/captions/coco_karpathy_<split>.json                                  (global captions)
    DIR/refer/synthetic/refs(unc).p + instances.json                        (refer toolkit layout)
    DIR/proposals/                                                           (RIS candidate masks)
    DIR/vqa/synthetic_vqa_<split>.json                                       (VQA questions)
    DIR/region_classes/synthetic_<split>_category.json                       (region classes, Osprey's layout)
    DIR/regions/synthetic_<split>.jsonl                                      (region file with captions)
    DIR/world.json                                                           (what was generated)

so that the tiny model is trained and evaluated through exactly the same preprocessing,
builders, trainer and evaluation code as the real datasets.

Narratives: each object (and, in a third of the scenes, the background) is one sentence
``"a large red circle."``; every word is a timed utterance and the mouse trace scribbles
inside the object while its words are spoken, moving between objects in the pauses.
RIS candidates per scene: every object's mask plus 1-2 background blobs (distractors).
Region files (the format of ``python -m regionvlm.predict`` and the ``region_captions``
builder, docs/predict.md): one line per object, its mask as a COCO RLE and its caption.

A world variant (``extra_colours``, ``--extra-colour pink=255,110,190``) adds colours to the
palette: scenes then show colour words the default world never does (the fine-tuning example
of docs/finetuning.md). Without it every file is the default world's.
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from tqdm import tqdm

from regionvlm.common.errors import ConfigError, InputError
from regionvlm.common.io import atomic_write_json, atomic_write_text
from regionvlm.synthetic.scenes import (
    BACKGROUND_CAPTION,
    COLOURS,
    Scene,
    distractor_masks,
    random_walk_in_mask,
    render_scene,
)

SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}
# image/annotation/ref ids start at a fixed base per split, so a split's ids (and the seeded
# region draws keyed by them) do not depend on how many scenes the other splits hold
SPLIT_ID_BASE = {"train": 0, "val": 10_000_000, "test": 20_000_000}
WORD_SECONDS = 0.25
PAUSE_SECONDS = 0.4
TRACE_DT = 0.05


def _rle(mask: np.ndarray) -> Dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def narrative(scene: Scene, image_id: str, rng: np.random.Generator, with_background: bool) -> Dict[str, Any]:
    """One Localized-Narratives record for the scene (objects in random order)."""
    h, w = scene.image.shape[:2]
    regions: List[Tuple[str, np.ndarray]] = [(o.caption, o.mask) for o in scene.objects]
    if with_background:
        regions.append((BACKGROUND_CAPTION, scene.background_mask))
    order = rng.permutation(len(regions))
    timed, trace, sentences = [], [], []
    t = 0.5
    last = None
    for idx in order:
        caption, mask = regions[idx]
        words = caption.split(" ")
        start = t
        for k, word in enumerate(words):  # the sentence's period rides on its last word, as in real LN
            utterance = word + "." if k == len(words) - 1 else word
            timed.append({"utterance": utterance, "start_time": round(t, 3), "end_time": round(t + WORD_SECONDS, 3)})
            t += WORD_SECONDS
        steps = round((t - start) / TRACE_DT)
        radius = max(2.0, float(np.sqrt(mask.sum() / np.pi)))
        path = random_walk_in_mask(mask, rng, steps, step_std=radius)  # a scribble over the whole object
        if last is not None:  # the hand moves to the next object during the pause
            for k in range(1, 6):
                p = last + (path[0] - last) * k / 6
                trace.append(
                    {
                        "x": round(float(p[0] / w), 4),
                        "y": round(float(p[1] / h), 4),
                        "t": round(start - PAUSE_SECONDS + k * PAUSE_SECONDS / 7, 3),
                    }
                )
        for k, p in enumerate(path):
            trace.append(
                {
                    "x": round(float((p[0] + 0.5) / w), 4),
                    "y": round(float((p[1] + 0.5) / h), 4),
                    "t": round(start + (k + 0.5) * TRACE_DT, 3),
                }
            )
        last = path[-1]
        sentences.append(caption + ".")
        t += PAUSE_SECONDS
    return {
        "dataset_id": "synthetic",
        "image_id": image_id,
        "annotator_id": 0,
        "caption": " ".join(sentences),
        "timed_caption": timed,
        "traces": [trace],
    }


def write_world(
    out_dir: str | Path,
    num_train: int = 8000,
    num_val: int = 100,
    num_test: int = 300,
    seed: int = 0,
    image_size: int = 64,
    extra_colours: Optional[Mapping[str, Tuple[int, int, int]]] = None,
) -> Dict[str, Any]:
    """Generate every split deterministically from ``seed``; returns the summary.
    ``extra_colours`` (name -> RGB) widens the palette (a world variant)."""
    from regionvlm.data.proposals import save_image_proposals

    palette = None
    if extra_colours:
        clash = sorted(set(extra_colours) & set(COLOURS))
        if clash:
            raise InputError(f"extra colours {clash} are already in the palette {sorted(COLOURS)}.")
        palette = {**COLOURS, **{str(k): tuple(int(c) for c in v) for k, v in extra_colours.items()}}
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    counts = {"train": num_train, "val": num_val, "test": num_test}
    images, annotations, refs = [], [], []
    categories = [{"id": 1, "name": "shape", "supercategory": "shape"}]
    vqa: Dict[str, List[Dict[str, Any]]] = {}
    for split, n in counts.items():
        if n <= 0:
            continue
        rng = np.random.default_rng([seed, SPLIT_SEEDS[split]])
        ln_lines, karpathy, questions, classes, region_lines = [], [], [], [], []
        base, first_ann = SPLIT_ID_BASE[split], len(annotations)
        for k in tqdm(range(n), desc=f"synthetic {split}", dynamic_ncols=True):
            scene = render_scene(rng, image_size, colours=palette)
            image_id = base + k + 1
            file_name = f"scene_{split}_{k:06d}.png"
            Image.fromarray(scene.image).save(out / "images" / file_name)
            image = {"id": image_id, "file_name": file_name, "height": image_size, "width": image_size}
            images.append(image)
            ln_lines.append(json.dumps(narrative(scene, Path(file_name).stem, rng, bool(rng.random() < 1 / 3))))
            karpathy.append({"image": file_name, "caption": scene.global_caption, "image_id": str(image_id)})
            classes.append({**image, "categories": [o.shape for o in scene.objects], "annotations": []})
            for obj in scene.objects:
                ann_id = base + len(annotations) - first_ann + 1
                ys, xs = np.nonzero(obj.mask)
                bbox = [
                    float(xs.min()),
                    float(ys.min()),
                    float(xs.max() - xs.min() + 1),
                    float(ys.max() - ys.min() + 1),
                ]
                rle = _rle(obj.mask)
                annotations.append(
                    {
                        "id": ann_id,
                        "image_id": image_id,
                        "category_id": 1,
                        "iscrowd": 0,
                        "segmentation": rle,
                        "area": float(obj.mask.sum()),
                        "bbox": bbox,
                    }
                )
                classes[-1]["annotations"].append(annotations[-1])
                region_lines.append(
                    json.dumps({"id": ann_id, "image": file_name, "region": {"rle": rle}, "caption": obj.caption})
                )
                ref_id = ann_id
                refs.append(
                    {
                        "ref_id": ref_id,
                        "ann_id": ann_id,
                        "image_id": image_id,
                        "split": split,
                        "category_id": 1,
                        "file_name": file_name,
                        "sent_ids": [ref_id],
                        "sentences": [
                            {"raw": obj.caption, "sent": obj.caption, "tokens": obj.caption.split(), "sent_id": ref_id}
                        ],
                    }
                )
            if split != "train":
                masks = [o.mask for o in scene.objects] + distractor_masks(scene, rng, int(rng.integers(1, 3)))
                order = rng.permutation(len(masks))
                save_image_proposals(out / "proposals", file_name, [masks[i] for i in order], [1.0] * len(masks))
                for obj in scene.objects:
                    qid = image_id * 10 + len(questions) % 10
                    questions.append(
                        {
                            "question_id": int(qid),
                            "image": file_name,
                            "question": f"what colour is the {obj.size} {obj.shape}?",
                            "answer": [obj.colour] * 10,
                        }
                    )
        (out / "localized_narratives").mkdir(exist_ok=True)
        atomic_write_text(
            out / "localized_narratives" / f"synthetic_{split}_localized_narratives.jsonl", "\n".join(ln_lines) + "\n"
        )
        atomic_write_json(out / "captions" / f"coco_karpathy_{split}.json", karpathy, indent=None)
        atomic_write_json(out / "region_classes" / f"synthetic_{split}_category.json", classes, indent=None)
        atomic_write_text(out / "regions" / f"synthetic_{split}.jsonl", "".join(f"{line}\n" for line in region_lines))
        if questions:
            vqa[split] = questions
            atomic_write_json(out / "vqa" / f"synthetic_vqa_{split}.json", questions, indent=None)
    refer_dir = out / "refer" / "synthetic"
    refer_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        refer_dir / "instances.json",
        {"images": images, "annotations": annotations, "categories": categories},
        indent=None,
    )
    tmp = refer_dir / ".refs(unc).p.tmp"
    with open(tmp, "wb") as f:
        pickle.dump(refs, f, protocol=2)
    tmp.replace(refer_dir / "refs(unc).p")
    summary = {
        "seed": seed,
        "image_size": image_size,
        "splits": counts,
        "images": len(images),
        "objects": len(annotations),
    }
    if palette is not None:
        summary["extra_colours"] = {k: list(palette[k]) for k in extra_colours}
    atomic_write_json(out / "world.json", summary)
    return summary


MAX_SCENES = 10**6  # per split: a world of this size is already tens of gigabytes
IMAGE_SIZES = (32, 1024)  # smaller scenes cannot hold their 2-4 shapes apart


def check_world_settings(num_train: int, num_val: int, num_test: int, seed: int, image_size: int) -> None:
    """The command's numbers in range before anything is written (ConfigError naming the flag)."""
    for flag, value in (("--num-train", num_train), ("--num-val", num_val), ("--num-test", num_test)):
        if not 0 <= value <= MAX_SCENES:
            raise ConfigError(f"{flag} must be a number of scenes in 0..{MAX_SCENES:,}, got {value}.")
    if num_train + num_val + num_test == 0:
        raise ConfigError("--num-train, --num-val and --num-test are all 0: the world would hold no scene.")
    if seed < 0:
        raise ConfigError(f"--seed must be a non-negative whole number, got {seed}.")
    low, high = IMAGE_SIZES
    if not low <= image_size <= high:
        raise ConfigError(f"--image-size must be in {low}..{high} pixels, got {image_size}.")


def main(argv: List[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the synthetic world in the real dataset formats.")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--num-train", type=int, default=8000)
    parser.add_argument("--num-val", type=int, default=100)
    parser.add_argument("--num-test", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument(
        "--extra-colour",
        action="append",
        default=[],
        metavar="NAME=R,G,B",
        help="add a colour to the palette (a world variant), e.g. pink=255,110,190; repeatable",
    )
    args = parser.parse_args(argv)
    check_world_settings(args.num_train, args.num_val, args.num_test, args.seed, args.image_size)
    extra = dict(parse_colour(spec) for spec in args.extra_colour)
    summary = write_world(args.out, args.num_train, args.num_val, args.num_test, args.seed, args.image_size, extra)
    print(json.dumps(summary))


def parse_colour(spec: str) -> Tuple[str, Tuple[int, int, int]]:
    """``"pink=255,110,190"`` -> ``("pink", (255, 110, 190))``."""
    name, _, rgb = spec.partition("=")
    try:
        values = tuple(int(v) for v in rgb.split(","))
    except ValueError:
        values = ()
    if not name.strip() or len(values) != 3 or not all(0 <= v <= 255 for v in values):
        raise InputError(f"--extra-colour expects NAME=R,G,B with values 0..255, got {spec!r}.")
    if name.strip() in COLOURS:
        raise InputError(f"--extra-colour: '{name.strip()}' is already in the palette {sorted(COLOURS)}.")
    return name.strip(), values
