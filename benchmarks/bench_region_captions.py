"""Region-captioning throughput: the caption task's batched units against one
``model.generate`` call per region, on the same regions, in one process.

Regions: the held-out objects of a synthetic world (``--scenes`` scenes of 2-4 objects), one
unit per referring sentence (the ``synthetic_captions`` dataset, from the object's box), K
points drawn by the task. Batched: the evaluator's units (at most ``--batch-size`` regions,
an image's regions together, each image encoded once) through ``CaptionEvaluator.process``.
Naive: for every region, ``model.generate`` on its image alone with the same region text.
Inputs (decoded, preprocessed images and the region geometry) are prepared before timing for
both, so the figures are model work; the captions of both ways are asserted equal.

    python benchmarks/bench_region_captions.py                      # bundled tiny checkpoint, CPU
    python benchmarks/bench_region_captions.py --checkpoint none    # random tiny weights (full-length outputs)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from regionvlm import load_model
from regionvlm.datasets.builders.region_caption_builder import SyntheticCaptionBuilder
from regionvlm.quickstart import bundled_checkpoint
from regionvlm.synthetic.world import write_world
from regionvlm.tasks.captioning import CaptionEvaluator, CaptioningSettings
from regionvlm.tasks.evaluation import evaluating


def naive_captions(
    model: Any, evaluator: CaptionEvaluator, batches: List[Any], generation: Dict[str, int]
) -> List[str]:
    """One ``model.generate`` call per region: its image alone, its region text."""
    out = []
    for batch in batches:
        for j, (region, rid) in enumerate(zip(batch.regions, batch.ids)):
            image = batch.images[batch.image_index[j]].unsqueeze(0).to(model.device)
            text = evaluator.region_text(region, rid)
            out += model.generate({"image": image, "text_input": [text]}, **generation)
    return out


def run(args: argparse.Namespace) -> Dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint = None if args.checkpoint == "none" else (args.checkpoint or str(bundled_checkpoint()))
    model = load_model("regionvlm_t5", "tiny", is_eval=True, checkpoint=checkpoint, device=args.device)
    with tempfile.TemporaryDirectory() as tmp:
        world = Path(tmp) / "world"
        write_world(world, num_train=0, num_val=0, num_test=args.scenes, seed=args.seed)
        builder = SyntheticCaptionBuilder({"world": str(world), "region": "box"}, image_size=model.image_size)
        dataset = builder.build_datasets()["test"]
        settings = CaptioningSettings(
            batch_size_eval=args.batch_size,
            num_workers=0,
            num_beams=args.beams,
            max_len=args.max_len,
            min_len=args.min_len,
            num_points=int(model.num_points),
        )
        evaluator = CaptionEvaluator(model, dataset, settings, Path(tmp) / "out")
        units = evaluator.units()
        batches = [evaluator.load(spec) for _, spec in units]
    generation = {"num_beams": args.beams, "max_length": args.max_len, "min_length": args.min_len}
    with evaluating(model) as module:
        evaluator.model = module
        evaluator.process(units[0][1], batches[0])  # warm-up, both ways
        naive_captions(module, evaluator, batches[:1], generation)
        start = time.perf_counter()
        batched = [row["caption"] for (_, spec), batch in zip(units, batches) for row in evaluator.process(spec, batch)]
        batched_s = time.perf_counter() - start
        start = time.perf_counter()
        naive = naive_captions(module, evaluator, batches, generation)
        naive_s = time.perf_counter() - start
    if batched != naive:
        diff = [i for i, (a, b) in enumerate(zip(batched, naive)) if a != b]
        raise AssertionError(f"batched and one-by-one captions differ at regions {diff[:10]}")
    regions = len(batched)
    return {
        "device": str(model.device),
        "checkpoint": checkpoint or "random tiny weights",
        "regions": regions,
        "images": len({r.image for r in dataset.items}),
        "units": len(units),
        "batch_size": args.batch_size,
        "decoding": generation,
        "batched_s": round(batched_s, 4),
        "naive_s": round(naive_s, 4),
        "batched_regions_per_s": round(regions / batched_s, 2),
        "naive_regions_per_s": round(regions / naive_s, 2),
        "ratio": round(naive_s / batched_s, 2),
        "same_captions": True,
    }


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenes", type=int, default=16, help="synthetic scenes (2-4 regions each)")
    p.add_argument("--batch-size", type=int, default=32, help="regions per unit (run.batch_size_eval)")
    p.add_argument("--beams", type=int, default=3)
    p.add_argument("--max-len", type=int, default=20)
    p.add_argument("--min-len", type=int, default=5)
    p.add_argument("--checkpoint", default=None, help="tiny checkpoint (default: bundled; 'none': random weights)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="CPU threads")
    p.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = p.parse_args(argv)
    if args.scenes < 1 or args.batch_size < 1:
        p.error("--scenes and --batch-size must be positive")
    return args


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    result = run(args)
    print(
        f"{result['regions']} regions of {result['images']} images, {result['units']} units: "
        f"batched {result['batched_regions_per_s']} regions/s, one generate per region "
        f"{result['naive_regions_per_s']} regions/s, ratio {result['ratio']}x (same captions)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
