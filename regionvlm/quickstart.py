"""The main job: a tiny RegionVLM on the synthetic world, end to end, on a laptop CPU.

    python -m regionvlm.quickstart                 # bundled tiny checkpoint (~1-2 min)
    python -m regionvlm.quickstart --retrain       # train it first with train.py, then evaluate that
                                                   # (writes output/quickstart/train/tiny_synthetic.pth,
                                                   #  the file bundled in regionvlm/checkpoints/)

1. writes the held-out synthetic world (300 scenes) in the real file formats;
2. (``--retrain``) writes the training world, preprocesses its Localized Narratives and trains
   the tiny model with ``train.py --cfg-path configs/synthetic/train_tiny.yaml``;
3. captions every held-out object from K=10 random points of its mask;
4. runs zero-shot RIS (the registered ``ris`` task, loss ranking over candidate masks), and the
   same with EMPTY region text (the ablation: it must fall to chance);
5. prints a table and writes ``quickstart.png`` (scenes, prompt points, captions, chosen masks)
   and ``summary.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

BUNDLED = "checkpoints/tiny_synthetic.pth"
REPO_CFG = Path(__file__).resolve().parents[1] / "configs" / "synthetic" / "train_tiny.yaml"


def bundled_checkpoint() -> Path:
    return Path(str(resources.files("regionvlm") / BUNDLED))


def train_tiny(world: Path, out: Path, cfg_path: Path, extra: Sequence[str] = ()) -> Path:
    """Preprocess the world's narratives and train with the one trainer; returns the checkpoint."""
    from regionvlm import train as train_script
    from regionvlm.data.localized_narratives import preprocess_localized_narratives

    ann = world / "annotations" / "ln_synthetic_train.json"
    preprocess_localized_narratives(
        [world / "localized_narratives" / "synthetic_train_localized_narratives.jsonl"],
        ann,
        image_root=world / "images",
        patterns={"synthetic": ["{image_id}.png"]},
        progress=False,
    )
    train_script.main(
        [
            "--cfg-path",
            str(cfg_path),
            "--options",
            f"datasets.regionvlm_mix.region_ann={ann}",
            f"datasets.regionvlm_mix.coco_ann={world}/captions/coco_karpathy_train.json",
            f"datasets.regionvlm_mix.coco_image_root={world}/images",
            f"run.output_dir={out}",
            "run.overwrite=true",  # the quickstart owns this folder: a rerun replaces its training run
            *extra,
        ]
    )
    return out / "checkpoint_latest.pth"


def export_weights(checkpoint: Path, out: Path) -> Path:
    """The trained weights alone, in fp16 (what ``regionvlm/checkpoints/`` ships)."""
    from regionvlm.common.checkpoints import load_training_checkpoint
    from regionvlm.common.io import atomic_torch_save

    state = load_training_checkpoint(checkpoint)
    weights = {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()}
    atomic_torch_save({"model": weights, "step": state.get("step")}, out)
    return out


def ris_config(world: Path, checkpoint: Path, out: Path, region_prompt: str, device: str) -> Dict[str, Any]:
    return {
        "model": {"arch": "regionvlm_t5", "model_type": "tiny", "checkpoint": str(checkpoint)},
        "datasets": {"ris_synthetic": {"world": str(world), "split": "test", "splitBy": "unc"}},
        "run": {
            "task": "ris",
            "evaluate": True,
            "output_dir": str(out),
            "seed": 42,
            "device": device,
            # synthetic shapes cover 2-7% of a 64 px scene: keep them (official 0.04 is for COCO)
            "small_threshold": 0.0,
            "region_prompt": region_prompt,
        },
    }


def run_ris(
    world: Path, checkpoint: Path, out: Path, region_prompt: str, device: str, model: Optional[torch.nn.Module] = None
) -> Dict[str, Any]:
    """The registered RIS task through the runner, exactly as ``train.py`` runs it (``model``:
    an already built model of this config, so several evaluations share one build)."""
    from regionvlm.common.config import Config

    cfg = Config.from_dict(ris_config(world, checkpoint, out, region_prompt, device))
    task = cfg.task_class().setup_task(cfg)
    datasets = task.build_datasets(cfg)
    model = model if model is not None else task.build_model(cfg)
    runner = cfg.runner_class()(cfg, task, model, datasets)
    with contextlib.redirect_stdout(io.StringIO()):  # the runner prints its metrics; the table below says them
        runner.evaluate()
    variant = "" if region_prompt == "points" else f"-{region_prompt}"
    result = json.loads((out / f"ris{variant}_synthetic_unc_test.json").read_text())
    queries = result["queries"]
    hits = [q["iou"] >= 0.999 for q in queries]
    chance = float(np.mean([1.0 / max(1, len(q["candidates"])) for q in queries]))
    return {
        "accuracy": 100.0 * float(np.mean(hits)),
        "chance": 100.0 * chance,
        "mIoU": result["metrics"]["mIoU"],
        "oIoU": result["metrics"]["oIoU"],
        "queries": len(queries),
        "records": queries,
    }


def caption_regions(model, world: Path, refer, seed: int, limit: Optional[int] = None) -> List[Dict[str, Any]]:
    """Greedy captions of every held-out object, from K random points of its mask."""
    from regionvlm.data.images import open_image
    from regionvlm.models import load_preprocess
    from regionvlm.region import Region
    from regionvlm.tasks.evaluation import item_rng

    vis = load_preprocess({"vis_processor": {"eval": {"name": "blip_image_eval", "image_size": model.image_size}}})[0][
        "eval"
    ]
    rows: List[Dict[str, Any]] = []
    for image_id, queries in refer.queries_by_image()[:limit]:
        image = vis(open_image(world / "images" / refer.images[image_id].file_name)).unsqueeze(0)
        texts = [
            Region.from_mask(refer.gt_mask(q.ann_id)).to_text(model.num_points, item_rng(seed, str(q.ref_id)))
            for q in queries
        ]
        preds = model.generate(
            {"image": image, "image_index": [0] * len(texts), "text_input": texts}, num_beams=1, max_length=10
        )
        for q, text, pred in zip(queries, texts, preds):
            rows.append(
                {
                    "image_id": image_id,
                    "ann_id": q.ann_id,
                    "region_text": text,
                    "reference": q.sentence,
                    "prediction": pred.strip(),
                }
            )
    return rows


def caption_scores(rows: Sequence[Dict[str, Any]]) -> Dict[str, float]:
    def words(s: str) -> List[str]:
        return s.split()

    out = {"exact": 100.0 * float(np.mean([r["prediction"] == r["reference"] for r in rows]))}
    for name, pos in (("size", 1), ("colour", 2), ("shape", 3)):
        out[name] = 100.0 * float(
            np.mean(
                [
                    len(words(r["prediction"])) > pos and words(r["prediction"])[pos] == words(r["reference"])[pos]
                    for r in rows
                ]
            )
        )
    return out


def figure(
    world: Path,
    refer,
    captions: Sequence[Dict[str, Any]],
    ris: Dict[str, Any],
    path: Path,
    scenes: int = 6,
    scale: int = 4,
) -> None:
    """Scenes with the prompt points of one object, its generated caption and the chosen mask."""
    from PIL import Image, ImageDraw

    from regionvlm.data.images import open_image
    from regionvlm.data.proposals import load_image_proposals

    by_ann = {r["ann_id"]: r for r in captions}
    panels = []
    for record in ris["records"][: scenes * 3 : 3]:
        info = refer.images[record["image_id"]]
        img = open_image(world / "images" / info.file_name)
        size = img.width * scale
        canvas = Image.new("RGB", (size, size + 46), "white")
        canvas.paste(img.resize((size, size), Image.NEAREST), (0, 0))
        draw = ImageDraw.Draw(canvas)
        masks, _ = load_image_proposals(world / "proposals", info.file_name)
        if record.get("chosen") is not None:
            chosen = masks[record["chosen"]]
            ys, xs = np.nonzero(chosen ^ np.pad(chosen, 1)[2:, 1:-1])
            for x, y in zip(xs, ys):
                draw.rectangle([x * scale, y * scale, x * scale + scale - 1, y * scale + scale - 1], outline="#00e5ff")
        cap = by_ann.get(refer.queries[record["index"]].ann_id) if "index" in record else None
        cap = cap or next((c for c in captions if c["image_id"] == record["image_id"]), None)
        if cap:
            for token in cap["region_text"].strip("[]").split("] ["):
                x, y = (int(v) for v in token.split())
                cx, cy = x / 100 * size, y / 100 * size
                draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill="#ff2bd6", outline="black")
            draw.text((4, size + 2), f'points -> "{cap["prediction"]}"', fill="black")
        draw.text((4, size + 16), f'RIS "{record["sentence"]}"', fill="black")
        draw.text((4, size + 30), f"IoU {record['iou']:.2f} (cyan = chosen)", fill="black")
        panels.append(canvas)
    if not panels:
        return
    w, h = panels[0].size
    sheet = Image.new("RGB", (w * len(panels) + 4 * (len(panels) - 1), h), "white")
    for i, p in enumerate(panels):
        sheet.paste(p, (i * (w + 4), 0))
    sheet.save(path)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="output/quickstart", help="output folder")
    parser.add_argument("--retrain", action="store_true", help="train the tiny model instead of the bundled one")
    parser.add_argument("--checkpoint", default=None, help="a tiny checkpoint to evaluate (default: bundled)")
    parser.add_argument("--cfg-path", default=str(REPO_CFG), help="training config for --retrain")
    parser.add_argument("--train-options", nargs="*", default=[], help="--options for training (--retrain)")
    parser.add_argument("--num-train", type=int, default=8000, help="training scenes (--retrain)")
    parser.add_argument("--num-test", type=int, default=300, help="held-out scenes")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from regionvlm.common.dist_utils import resolve_device
    from regionvlm.common.errors import ConfigError, MissingFileError
    from regionvlm.common.io import atomic_write_json
    from regionvlm.synthetic.world import check_world_settings, write_world

    check_world_settings(args.num_train if args.retrain else 0, 0, args.num_test, args.seed, 64)
    if args.num_test < 1:
        raise ConfigError(f"--num-test must be at least 1 (the held-out scenes), got {args.num_test}.")
    try:
        resolve_device(args.device)
    except ConfigError as exc:
        raise ConfigError(f"--device: {exc}") from None
    out = Path(args.out)
    world = out / "world"
    start = time.time()
    write_world(
        world, num_train=args.num_train if args.retrain else 0, num_val=0, num_test=args.num_test, seed=args.seed
    )
    if args.retrain:
        trained = train_tiny(world, out / "train", Path(args.cfg_path), args.train_options)
        checkpoint = export_weights(trained, out / "train" / "tiny_synthetic.pth")
    else:
        checkpoint = Path(args.checkpoint) if args.checkpoint else bundled_checkpoint()
        if not checkpoint.is_file():
            raise MissingFileError(f"tiny checkpoint '{checkpoint}' not found; run with --retrain to train one.")
    from regionvlm import load_model
    from regionvlm.data.refer import load_refer

    model = load_model("regionvlm_t5", "tiny", is_eval=True, checkpoint=str(checkpoint))  # built once
    ris = run_ris(world, checkpoint, out / "ris", "points", args.device, model)
    ablation = run_ris(world, checkpoint, out / "ris_empty_prompt", "empty", args.device, model)
    refer = load_refer(world / "refer", "synthetic", "unc", "test")
    with torch.inference_mode():
        captions = caption_regions(model, world, refer, args.seed)
    scores = caption_scores(captions)
    figure(world, refer, captions, ris, out / "quickstart.png")
    summary = {
        "checkpoint": str(checkpoint),
        "held_out_scenes": args.num_test,
        "ris_queries": ris["queries"],
        "ris_accuracy": round(ris["accuracy"], 1),
        "ris_mIoU": round(ris["mIoU"], 1),
        "ris_oIoU": round(ris["oIoU"], 1),
        "ris_chance": round(ris["chance"], 1),
        "ris_empty_prompt_accuracy": round(ablation["accuracy"], 1),
        "caption_exact_match": round(scores["exact"], 1),
        "caption_colour": round(scores["colour"], 1),
        "caption_size": round(scores["size"], 1),
        "caption_shape": round(scores["shape"], 1),
        "seconds": round(time.time() - start, 1),
    }
    atomic_write_json(out / "summary.json", summary)
    atomic_write_json(out / "captions.json", captions)
    print(f"""
RegionVLM (tiny) on the synthetic world: {args.num_test} held-out scenes, {ris["queries"]} referring queries
  zero-shot RIS selection accuracy   {summary["ris_accuracy"]:5.1f} %   (chance {summary["ris_chance"]:.1f} %)
  RIS mIoU / oIoU                    {summary["ris_mIoU"]:5.1f} / {summary["ris_oIoU"]:.1f}
  RIS with EMPTY region text         {summary["ris_empty_prompt_accuracy"]:5.1f} %   (ablation: should be ~chance)
  region captions, exact match       {summary["caption_exact_match"]:5.1f} %
    colour / size / shape correct    {summary["caption_colour"]:.1f} / {summary["caption_size"]:.1f} / \
{summary["caption_shape"]:.1f} %
  figure: {out / "quickstart.png"}   details: {out / "summary.json"}   time: {summary["seconds"]} s
""")
    return summary


if __name__ == "__main__":
    from regionvlm.common.cli import run

    run(main)
