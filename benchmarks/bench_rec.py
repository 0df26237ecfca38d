"""REC scoring cost: the per-candidate loop (``protocol: official``) against the fast path.

In one process and on the same model, both scorers of ``regionvlm.tasks.ris`` — the ones
the ``rec`` task calls — score the same synthetic images, once per kind of candidate:

- ``gt``: ``--candidates`` objects with masks and their boxes (COCO ground-truth candidates:
  points drawn in the masks);
- ``detections``: ``--candidates`` boxes only (points drawn among the boxes' pixels).

``--sentences`` expressions per image (RefCOCO val: about 7.2 per image). One line per kind:
seconds per expression of each protocol, their ratio (wall and process CPU time), the time
to build one image's prompts (masks and image processor, which the evaluator overlaps with
the model on threads), and how well the two agree (max |score difference|, same choice).

    python benchmarks/bench_rec.py                               # tiny preset, CPU
    python benchmarks/bench_rec.py --preset flant5xl-random      # full architecture, random weights, GPU
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ris import SENTENCES, _timed, build_model, synthetic_image

from regionvlm.data.boxes import box_mask, to_xyxy
from regionvlm.processors import BlipCaptionProcessor, BlipImageEvalProcessor
from regionvlm.tasks.rec import RECSettings
from regionvlm.tasks.ris import DrawGroup, build_prompts, score_image_fast, score_image_official

KINDS = ("gt", "detections")


def mask_xywh(mask: np.ndarray) -> Tuple[float, float, float, float]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]), float(rows[-1] + 1 - rows[0])


def scene_prompts(kind: str, image: Any, masks: List[np.ndarray], vis, mode: str):
    """The prompts the ``rec`` evaluator builds for one image's candidates of ``kind``."""
    boxes = [mask_xywh(m) for m in masks]
    if kind == "detections":
        masks = [box_mask(b, image.height, image.width) for b in boxes]
    return build_prompts(mode, image, masks, vis, boxes=[to_xyxy(b) for b in boxes])


def bench_kind(kind: str, model, device, scenes, settings: RECSettings, vis, txt) -> Dict[str, Any]:
    t = time.perf_counter()
    prompts = [scene_prompts(kind, image, masks, vis, settings.region_prompt).to(device) for image, masks, _ in scenes]
    prepare_s = (time.perf_counter() - t) / len(scenes)

    def score(fn, idx: int, sentences: List[str]) -> np.ndarray:
        return fn(model, prompts[idx], sentences, [DrawGroup(f"{idx}", list(range(len(sentences))))], settings, txt)

    score(score_image_fast, 0, scenes[0][2][:2])  # warm-up (kernels, allocator, tokenizer caches)
    score(score_image_official, 0, scenes[0][2][:1])
    n = sum(len(s) for _, _, s in scenes)
    fast, fast_s, fast_cpu, fast_mem = _timed(
        device, lambda: [score(score_image_fast, i, s[2]) for i, s in enumerate(scenes)]
    )
    official, off_s, off_cpu, _ = _timed(
        device, lambda: [score(score_image_official, i, s[2]) for i, s in enumerate(scenes)]
    )
    diff = max(float(np.abs(f - o).max()) for f, o in zip(fast, official))
    same = sum(int((f.argmin(1) == o.argmin(1)).sum()) for f, o in zip(fast, official))
    return {
        "kind": kind,
        "official_s_per_expression": off_s / n,
        "fast_s_per_expression": fast_s / n,
        "ratio": off_s / fast_s,
        "ratio_cpu_time": off_cpu / fast_cpu,
        "fast_peak_mem_gib": fast_mem / 2**30,
        "prepare_s_per_image": prepare_s,
        "expressions": n,
        "max_abs_score_diff": diff,
        "same_choice": f"{same}/{n}",
    }


def run(args: argparse.Namespace) -> Dict[str, Any]:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.set_num_threads(max(1, args.threads or torch.get_num_threads()))
    model = build_model(args.preset, device, args.init or ("meta" if args.preset == "flant5xl-random" else "preset"))
    settings = RECSettings(
        num_points=args.points,
        repeats=args.repeats,
        region_prompt=args.region_prompt,
        decoder_batch=args.decoder_batch,
        encoder_batch=args.encoder_batch,
    ).resolved(device)
    vis, txt = BlipImageEvalProcessor(image_size=model.image_size), BlipCaptionProcessor()
    rng = np.random.default_rng(0)
    scenes = []
    for i in range(args.images):
        image, masks = synthetic_image(rng, args.height, args.width, args.candidates)
        sentences = [txt(SENTENCES[(i * args.sentences + j) % len(SENTENCES)]) for j in range(args.sentences)]
        scenes.append((image, masks, sentences))
    result = {
        "preset": args.preset,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU x{torch.get_num_threads()}",
        "images": args.images,
        "image_size": [args.width, args.height],
        "candidates": args.candidates,
        "sentences_per_image": args.sentences,
        "repeats": args.repeats,
        "points": args.points,
        "region_prompt": args.region_prompt,
        "decoder_batch": settings.decoder_batch,
        "kinds": {},
    }
    print(
        f"{args.preset} on {result['device_name']}: {args.images} images of {args.width}x{args.height}, "
        f"{args.candidates} candidates x {args.repeats} draws of {args.points} points ({args.region_prompt}), "
        f"{args.sentences} expressions/image"
    )
    print(
        f"{'candidates':<11} {'official s/expr':>15} {'fast s/expr':>11} {'ratio':>6} {'ratio CPU':>9} "
        f"{'prompts s/image':>15} {'max|diff|':>9} {'same choice':>11}"
    )
    for kind in args.kinds:
        m = bench_kind(kind, model, device, scenes, settings, vis, txt)
        result["kinds"][kind] = m
        print(
            f"{kind:<11} {m['official_s_per_expression']:>15.4f} {m['fast_s_per_expression']:>11.4f} "
            f"{m['ratio']:>5.1f}x {m['ratio_cpu_time']:>8.1f}x {m['prepare_s_per_image']:>15.3f} "
            f"{m['max_abs_score_diff']:>9.1e} {m['same_choice']:>11}",
            flush=True,
        )
    return result


def _kinds(text: str) -> List[str]:
    kinds = [k for k in text.split(",") if k]
    if not kinds or any(k not in KINDS for k in kinds):
        raise argparse.ArgumentTypeError(f"kinds must be among {','.join(KINDS)}, got {text!r}")
    return kinds


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=("tiny", "flant5xl-random"), default="tiny")
    p.add_argument("--device", default=None)
    p.add_argument("--init", choices=("preset", "meta"), default=None, help="see bench_ris.py")
    p.add_argument("--kinds", type=_kinds, default=list(KINDS), help="gt,detections")
    p.add_argument("--region-prompt", default="points", choices=("points", "box", "empty", "crop", "blur", "circle"))
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--sentences", type=int, default=7, help="expressions per image (RefCOCO val: ~7.2)")
    p.add_argument("--candidates", type=int, default=10, help="candidate boxes per image")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--points", type=int, default=10)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--decoder-batch", type=int, default=0, help="0 = auto (1024 on GPU, 64 on CPU)")
    p.add_argument("--encoder-batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=None, help="CPU threads")
    p.add_argument("--json", default=None, help="also write the result here")
    args = p.parse_args(argv)
    result = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
