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


def world_config(
    world: Path, checkpoint: Path, out: Path, device: str, task: str, dataset: Dict[str, Any], **run: Any
) -> Dict[str, Any]:
    """One evaluation of the held-out world, as a config a user would write."""
    return {
        "model": {"arch": "regionvlm_t5", "model_type": "tiny", "checkpoint": str(checkpoint)},
        "datasets": dataset,
        "run": {"task": task, "evaluate": True, "output_dir": str(out), "seed": 42, "device": device, **run},
    }


def ris_config(world: Path, checkpoint: Path, out: Path, region_prompt: str, device: str) -> Dict[str, Any]:
    # synthetic shapes cover 2-7% of a 64 px scene: keep them (official small_threshold 0.04 is for COCO)
    dataset = {"ris_synthetic": {"world": str(world), "split": "test", "splitBy": "unc"}}
    return world_config(
        world, checkpoint, out, device, "ris", dataset, small_threshold=0.0, region_prompt=region_prompt
    )


def caption_config(world: Path, checkpoint: Path, out: Path, region_prompt: str, device: str) -> Dict[str, Any]:
    """Every held-out object captioned from K points of its mask, greedily (the tiny model's
    captions are short), scored with CIDEr and METEOR (SPICE needs models it cannot download)."""
    dataset = {"synthetic_captions": {"world": str(world), "split": "test", "region": "mask"}}
    return world_config(
        world,
        checkpoint,
        out,
        device,
        "captioning",
        dataset,
        region_prompt=region_prompt,
        num_beams=1,
        max_len=10,
        min_len=1,
        batch_size_eval=32,
        num_workers=0,
        skip_metrics=["SPICE"],
    )


def rec_config(world: Path, checkpoint: Path, out: Path, region_prompt: str, device: str) -> Dict[str, Any]:
    """REC with the scenes' ground-truth objects as the candidate boxes (points in each object's mask)."""
    dataset = {"rec_synthetic": {"world": str(world), "split": "test", "splitBy": "unc"}}
    return world_config(world, checkpoint, out, device, "rec", dataset, region_prompt=region_prompt)


def run_evaluation(config: Dict[str, Any], model: Optional[torch.nn.Module] = None) -> Dict[str, Any]:
    """A registered task through the runner, exactly as ``train.py`` runs it (``model``: an
    already built model of this config, so several evaluations share one build); returns the
    split's results file (the evaluation loop's ``<task>[-variant]_<dataset>_<split>.json``)."""
    from regionvlm.common.config import Config
    from regionvlm.tasks.evaluation import result_prefix

    cfg = Config.from_dict(config)
    task = cfg.task_class().setup_task(cfg)
    datasets = task.build_datasets(cfg)
    model = model if model is not None else task.build_model(cfg)
    runner = cfg.runner_class()(cfg, task, model, datasets)
    with contextlib.redirect_stdout(io.StringIO()):  # the runner prints its metrics; the table below says them
        runner.evaluate()
    [(split, dataset)] = [item for splits in datasets.values() for item in splits.items()]
    prefix = result_prefix(task.NAME, dataset.eval_name, split, task.dataset_variant(task.settings, dataset))
    return json.loads((Path(cfg.run_settings.output_dir) / f"{prefix}.json").read_text())


def run_ris(
    world: Path, checkpoint: Path, out: Path, region_prompt: str, device: str, model: Optional[torch.nn.Module] = None
) -> Dict[str, Any]:
    """Zero-shot RIS on the held-out world: selection accuracy next to chance."""
    result = run_evaluation(ris_config(world, checkpoint, out, region_prompt, device), model)
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


def run_rec(
    world: Path, checkpoint: Path, out: Path, region_prompt: str, device: str, model: Optional[torch.nn.Module] = None
) -> Dict[str, Any]:
    """Zero-shot REC on the held-out world: Acc@0.5 next to chance."""
    metrics = run_evaluation(rec_config(world, checkpoint, out, region_prompt, device), model)["metrics"]
    return {"accuracy": metrics["acc@0.5"], "chance": metrics["chance@0.5"], "expressions": metrics["num_expressions"]}


def run_captions(
    world: Path, checkpoint: Path, out: Path, region_prompt: str, device: str, model: Optional[torch.nn.Module] = None
) -> Dict[str, Any]:
    """Region captions of the held-out objects through the ``captioning`` task: CIDEr and
    METEOR (or why they could not be computed), and how often colour, size and shape are right."""
    result = run_evaluation(caption_config(world, checkpoint, out, region_prompt, device), model)
    rows = [
        {
            "id": c["id"],
            "region_text": c["region_text"],
            "reference": c["references"][0],
            "prediction": c["caption"].strip(),
        }
        for c in result["captions"]
    ]
    metrics = result["metrics"]
    return {
        "rows": rows,
        **caption_scores(rows),
        "CIDEr": metrics.get("CIDEr"),
        "METEOR": metrics.get("METEOR"),
        "not_computed": {k: v for k, v in result["skipped_metrics"].items() if k != "SPICE"},
    }


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

    by_sentence = {r["id"]: r for r in captions}
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
        cap = by_sentence.get(record["sent_id"])  # the caption of the same object and sentence
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
    results = {}
    for prompt in ("points", "empty"):  # every benchmark with the region text, then EMPTY (the ablation)
        tag = "" if prompt == "points" else "_empty_prompt"
        results[f"ris{tag}"] = run_ris(world, checkpoint, out / f"ris{tag}", prompt, args.device, model)
        results[f"rec{tag}"] = run_rec(world, checkpoint, out / f"rec{tag}", prompt, args.device, model)
        results[f"captions{tag}"] = run_captions(world, checkpoint, out / f"captions{tag}", prompt, args.device, model)
    ris, captions = results["ris"], results["captions"]
    refer = load_refer(world / "refer", "synthetic", "unc", "test")
    figure(world, refer, captions["rows"], ris, out / "quickstart.png")
    summary = summarize(args, checkpoint, results, time.time() - start)
    atomic_write_json(out / "summary.json", summary)
    atomic_write_json(out / "captions.json", captions["rows"])
    print(table(summary, out))
    return summary


def _round(value: Optional[float], digits: int = 1) -> Optional[float]:
    return None if value is None else round(float(value), digits)


def summarize(
    args: argparse.Namespace, checkpoint: Path, r: Dict[str, Dict[str, Any]], seconds: float
) -> Dict[str, Any]:
    """The main job's numbers, flat (``summary.json``)."""
    cap, empty = r["captions"], r["captions_empty_prompt"]
    return {
        "checkpoint": str(checkpoint),
        "held_out_scenes": args.num_test,
        "ris_queries": r["ris"]["queries"],
        "ris_accuracy": _round(r["ris"]["accuracy"]),
        "ris_mIoU": _round(r["ris"]["mIoU"]),
        "ris_oIoU": _round(r["ris"]["oIoU"]),
        "ris_chance": _round(r["ris"]["chance"]),
        "ris_empty_prompt_accuracy": _round(r["ris_empty_prompt"]["accuracy"]),
        "rec_expressions": r["rec"]["expressions"],
        "rec_accuracy": _round(r["rec"]["accuracy"]),
        "rec_chance": _round(r["rec"]["chance"]),
        "rec_empty_prompt_accuracy": _round(r["rec_empty_prompt"]["accuracy"]),
        "caption_CIDEr": _round(cap["CIDEr"] and 100 * cap["CIDEr"]),
        "caption_METEOR": _round(cap["METEOR"] and 100 * cap["METEOR"]),
        "caption_empty_prompt_CIDEr": _round(empty["CIDEr"] and 100 * empty["CIDEr"]),
        "caption_empty_prompt_METEOR": _round(empty["METEOR"] and 100 * empty["METEOR"]),
        "caption_metrics_not_computed": cap["not_computed"],
        "caption_exact_match": _round(cap["exact"]),
        "caption_colour": _round(cap["colour"]),
        "caption_size": _round(cap["size"]),
        "caption_shape": _round(cap["shape"]),
        "caption_empty_prompt_exact_match": _round(empty["exact"]),
        "seconds": round(seconds, 1),
    }


def table(s: Dict[str, Any], out: Path) -> str:
    """The printed table: each benchmark next to chance and to its EMPTY-region ablation."""

    def pair(a: Optional[float], b: Optional[float]) -> str:
        return "n/a" if a is None else f"{a:5.1f} / {b:.1f}"

    if s["caption_CIDEr"] is None:
        reason = "; ".join(s["caption_metrics_not_computed"].values()) or "no references"
        cider = f"not computed: {reason[:150]}"
    else:
        cider = (
            f"{pair(s['caption_CIDEr'], s['caption_METEOR'])}   "
            f"(EMPTY: {pair(s['caption_empty_prompt_CIDEr'], s['caption_empty_prompt_METEOR'])})"
        )
    rows = [
        ("zero-shot RIS selection accuracy", s["ris_accuracy"], s["ris_empty_prompt_accuracy"], s["ris_chance"]),
        ("zero-shot REC Acc@0.5 (GT boxes)", s["rec_accuracy"], s["rec_empty_prompt_accuracy"], s["rec_chance"]),
        ("region captions, exact match", s["caption_exact_match"], s["caption_empty_prompt_exact_match"], None),
    ]
    lines = [
        f"\nRegionVLM (tiny) on the synthetic world: {s['held_out_scenes']} held-out scenes, "
        f"{s['ris_queries']} referring queries",
        f"  {'':36} region text   EMPTY region text   chance",
    ]
    for name, value, empty, chance in rows:
        lines.append(
            f"  {name:36} {value:6.1f} %      {empty:6.1f} %" + (f"          {chance:.1f} %" if chance else "")
        )
    lines += [
        f"  {'RIS mIoU / oIoU':36} {s['ris_mIoU']:6.1f} / {s['ris_oIoU']:.1f}",
        f"  {'region captions CIDEr / METEOR':36} {cider}",
        f"    {'colour / size / shape correct':34} {s['caption_colour']:.1f} / {s['caption_size']:.1f} / "
        f"{s['caption_shape']:.1f} %",
        f"  figure: {out / 'quickstart.png'}   details: {out / 'summary.json'}   time: {s['seconds']} s",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from regionvlm.common.cli import run

    run(main)
