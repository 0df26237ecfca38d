"""Batch prediction (``python -m regionvlm.predict``) against the naive way: one
``model.generate`` per region, in one process, on the same model and the same region file.

The file is the synthetic world's regions (``--scenes`` scenes, 2-4 objects each) as a mix of
region kinds (RLE masks, boxes, points, polygons, whole images). The naive loop does what a
first script does: for each line, open and preprocess its image, draw the region's points
(the same ``item_rng(seed, id)`` draws) and call ``model.generate`` with that one region.
``predict`` groups the regions of an image (one encoding), batches ``--batch-size`` regions
per model call and loads images on threads. Both use ``model.generate``'s decoding (beam 5,
up to 30 new tokens); the outputs are compared line by line (``same_outputs``), and the
naive loop's and ``predict``'s regions per second are reported with their ratio, both timed
end to end (image files to captions).

    python benchmarks/bench_predict.py                                   # tiny preset, CPU
    python benchmarks/bench_predict.py --preset flant5xl-random --device cuda --scenes 60

``flant5xl-random`` builds the paper's architecture with random weights directly on the
device (as ``benchmarks/bench_ris.py``): no weight file is needed; its captions are noise,
still compared line by line (bf16 batches may break ties differently: reported, and only a
mismatch on the tiny preset fails the run). ``--naive-limit`` times the naive loop on the
first N regions only (it is the slow side) and compares those.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from timing import timed  # noqa: E402


def write_region_file(world: Path, out: Path) -> Path:
    """The world's objects as a mix of region kinds, one line each (ids kept)."""
    from regionvlm.region import mask_from_rle

    lines = []
    for i, line in enumerate((world / "regions" / "synthetic_test.jsonl").read_text().splitlines()):
        obj = json.loads(line)
        mask = mask_from_rle(obj["region"]["rle"])
        ys, xs = np.nonzero(mask)
        x0, y0, w, h = float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)
        region = [
            {"rle": obj["region"]["rle"]},
            {"box": [x0, y0, w, h]},
            {"points": [[float(x) + 0.5, float(y) + 0.5] for x, y in zip(xs[::5], ys[::5])]},
            {"polygon": [[x0, y0, x0 + w, y0, x0 + w, y0 + h, x0, y0 + h]]},
            None,
        ][i % 5]
        entry = {"id": obj["id"], "image": obj["image"]}
        if region is not None:
            entry["region"] = region
        lines.append(json.dumps(entry))
    out.write_text("\n".join(lines) + "\n")
    return out


def build(preset: str, device: torch.device) -> torch.nn.Module:
    if preset == "tiny":
        from regionvlm import load_model
        from regionvlm.quickstart import bundled_checkpoint

        return load_model("regionvlm_t5", "tiny", is_eval=True, device=device, checkpoint=str(bundled_checkpoint()))
    from bench_ris import build_model

    return build_model("flant5xl-random", device, "meta")


def naive(model: Any, regions: Any, settings: Any, limit: Optional[int]) -> Dict[str, str]:
    """One ``model.generate`` per region, its image opened and preprocessed each time."""
    from regionvlm.data.images import open_image
    from regionvlm.data.region_files import build_region, image_path
    from regionvlm.processors import BlipCaptionProcessor, BlipImageEvalProcessor
    from regionvlm.tasks.evaluation import item_rng

    vis, txt = BlipImageEvalProcessor(image_size=model.image_size), BlipCaptionProcessor()
    out = {}
    with torch.inference_mode():
        for record in regions.records[:limit]:
            image = open_image(image_path(record, regions.image_root))
            region = build_region(record, image.size)
            text = txt(region.to_text(model.num_points, item_rng(settings.seed, record.key)))
            pixels = vis(image).unsqueeze(0).to(model.device)
            out[record.key] = model.generate({"image": pixels, "text_input": [text]})[0].strip()
    return out


def run(args: argparse.Namespace) -> Dict[str, Any]:
    from regionvlm.datasets.region_files import RegionFileSet
    from regionvlm.predict import PredictSettings
    from regionvlm.prediction import predict
    from regionvlm.synthetic.world import write_world

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_world(tmp / "world", num_train=0, num_val=0, num_test=args.scenes, seed=args.seed)
        path = write_region_file(tmp / "world", tmp / "world" / "regions.jsonl")
        regions = RegionFileSet(path, tmp / "world" / "images")
        model = build(args.preset, device)
        settings = PredictSettings.for_task("caption", batch_size=args.batch_size, num_workers=args.workers)
        n = len(regions)
        limit = min(n, args.naive_limit) if args.naive_limit else n

        naive(model, regions, settings, 2)  # warm-up (kernels, allocator)
        reference, naive_s, _ = timed(device, naive, model, regions, settings, limit)
        predict(model, regions, settings, tmp / "warm.jsonl")  # warm-up
        _, predict_s, _ = timed(device, predict, model, regions, settings, tmp / "preds.jsonl")
        rows = [json.loads(x) for x in (tmp / "preds.jsonl").read_text().splitlines()]
    got = {str(r["id"]): r["prediction"] for r in rows}
    same = sum(got[k] == v for k, v in reference.items())
    naive_rate, predict_rate = limit / naive_s, n / predict_s
    result = {
        "preset": args.preset,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "regions": n,
        "images": args.scenes,
        "batch_size": args.batch_size,
        "naive_regions": limit,
        "naive_regions_per_s": round(naive_rate, 2),
        "predict_regions_per_s": round(predict_rate, 2),
        "ratio": round(predict_rate / naive_rate, 2),
        "same_outputs": f"{same}/{limit}",
    }
    print(
        f"{args.preset} on {result['device']}: {n} regions of {args.scenes} images, batch {args.batch_size}\n"
        f"  naive loop (one generate per region): {naive_rate:8.2f} regions/s  ({limit} regions)\n"
        f"  predict                              : {predict_rate:8.2f} regions/s\n"
        f"  ratio {result['ratio']}x   same outputs {result['same_outputs']}"
    )
    return result


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=("tiny", "flant5xl-random"), default="tiny")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--scenes", type=int, default=60, help="images (2-4 regions each)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2, help="image-loading threads of predict")
    p.add_argument("--naive-limit", type=int, default=None, help="time the naive loop on the first N regions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="CPU threads")
    p.add_argument("--json", default=None, help="also write the result here")
    args = p.parse_args(argv)
    result = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    same, total = (int(v) for v in result["same_outputs"].split("/"))
    if args.preset == "tiny" and same != total:
        raise SystemExit(f"batched predictions differ from one-at-a-time generation: {result['same_outputs']}")
    return result


if __name__ == "__main__":
    main()
