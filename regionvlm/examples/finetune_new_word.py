"""Fine-tuning on your own regions, end to end and measured (docs/finetuning.md).

    python -m regionvlm.examples.finetune_new_word --out output/finetune_new_word      # ~10 min on CPU

1. writes a variant of the synthetic world whose palette has a colour the bundled tiny
   checkpoint never saw (``pink``), with region files of the ``predict`` format (``caption`` per
   line): a few hundred training regions and a held-out file;
2. scores the bundled checkpoint on the held-out regions (``train.py`` with ``run.evaluate``:
   CIDEr, METEOR, BLEU-4, exact match) and counts the held-out pink objects it calls pink;
3. fine-tunes it with ``configs/blip2/train/finetune_regions.yaml`` (validation on the held-out
   file at every epoch end, ``checkpoint_best.pth`` by CIDEr) on the CPU;
4. writes the fine-tuned weights as one file (the bundled weights with the trained ones on
   top: the tiny model has no released files to hold its frozen towers) and scores it the same
   way;
5. runs the quickstart (held-out RIS and region captions of the original world) with the
   bundled and with the new weights, to show what fine-tuning kept.

The tiny T5 was trained from scratch on the default world's twenty words, so it cannot emit a
word outside them while frozen: the example trains it (``--freeze-t5`` runs the authors'
recipe as the config has it, T5 frozen, to show that; with Flan-T5-XL, which knows the word,
the config's recipe is the one to use).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "blip2" / "train" / "finetune_regions.yaml"
NEW_COLOUR = {"pink": (255, 110, 190)}
RESULT = "region_captioning_region_captions_val.json"
QUICKSTART_KEYS = (
    "ris_accuracy",
    "ris_mIoU",
    "ris_chance",
    "rec_accuracy",
    "rec_chance",
    "caption_CIDEr",
    "caption_METEOR",
    "caption_exact_match",
    "caption_colour",
    "caption_size",
    "caption_shape",
)


def tiny_options(world: Path, checkpoint: Path, out: Path, freeze_t5: bool, device: str) -> List[str]:
    """``--options`` that point the fine-tuning config at the tiny model and the variant world."""
    return [
        "model.model_type=tiny",
        f"model.checkpoint={checkpoint}",
        f"model.freeze_t5={str(freeze_t5).lower()}",
        f"datasets.region_captions.ann_paths={world / 'regions' / 'synthetic_train.jsonl'}",
        f"datasets.region_captions.val_ann_paths={world / 'regions' / 'synthetic_val.jsonl'}",
        f"datasets.region_captions.image_root={world / 'images'}",
        f"run.device={device}",
        "run.num_workers=0",
        "run.batch_size_eval=64",
        f"run.output_dir={out}",
    ]


def score(world: Path, checkpoint: Path, out: Path, device: str, word: str) -> Dict[str, Any]:
    """Region-captioning metrics of ``checkpoint`` on the held-out file, and the share of the
    held-out objects of the new colour whose caption names it."""
    from regionvlm import train

    train.main(
        [
            "--cfg-path",
            str(CONFIG),
            "--options",
            *tiny_options(world, checkpoint, out, True, device),
            "run.evaluate=true",
        ]
    )
    result = json.loads((out / RESULT).read_text())
    rows = result["captions"]
    new = [r for r in rows if word in r["references"][0].split()]
    metrics = result["metrics"]
    return {
        "CIDEr": round(metrics.get("CIDEr", float("nan")), 3),
        "METEOR": round(metrics.get("METEOR", float("nan")), 3),
        "Bleu_4": round(metrics.get("Bleu_4", float("nan")), 3),
        "exact_match": metrics["exact_match"],
        f"{word}_named": f"{sum(word in r['caption'].split() for r in new)}/{len(new)}",
        f"{word}_exact": f"{sum(r['caption'] == r['references'][0] for r in new)}/{len(new)}",
        "regions": len(rows),
    }


def merge_weights(base: Path, trained: Path, out: Path) -> Path:
    """One weights file: ``base``'s tensors with ``trained``'s (a training checkpoint's
    trainable weights) on top, in ``base``'s layout ``{"model": ..., "step": ...}``."""
    import torch

    from regionvlm.common.checkpoints import load_training_checkpoint
    from regionvlm.common.io import atomic_torch_save

    weights = dict(torch.load(base, map_location="cpu", weights_only=True)["model"])
    state = load_training_checkpoint(trained)
    weights.update({k: v.float() for k, v in state["model"].items()})
    atomic_torch_save({"model": weights, "step": state.get("step")}, out)
    return out


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="output/finetune_new_word")
    parser.add_argument("--train-scenes", type=int, default=150, help="training scenes (~3 regions each)")
    parser.add_argument("--val-scenes", type=int, default=40, help="held-out scenes")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (the tiny model's scale)")
    parser.add_argument("--freeze-t5", action="store_true", help="the config's recipe as is: T5 frozen")
    parser.add_argument("--quickstart-scenes", type=int, default=300, help="held-out scenes of the original world")
    parser.add_argument("--skip-quickstart", action="store_true")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    from regionvlm import quickstart, train
    from regionvlm.common.io import atomic_write_json
    from regionvlm.synthetic.world import write_world

    out = Path(args.out)
    start = time.time()
    word = next(iter(NEW_COLOUR))
    world = out / "world_variant"
    write_world(
        world, num_train=args.train_scenes, num_val=args.val_scenes, num_test=0, seed=1, extra_colours=NEW_COLOUR
    )
    bundled = quickstart.bundled_checkpoint()
    before = score(world, bundled, out / "eval_before", args.device, word)

    run_dir = out / "finetune"
    t0 = time.time()
    summary = train.main(
        [
            "--cfg-path",
            str(CONFIG),
            "--options",
            *tiny_options(world, bundled, run_dir, args.freeze_t5, args.device),
            f"run.batch_size_train={args.batch_size}",
            f"run.max_epoch={args.epochs}",
            f"run.init_lr={args.lr}",
            "run.warmup_steps=20",
            "run.warmup_lr=0.0",
        ]
    )
    train_seconds = round(time.time() - t0, 1)
    new = merge_weights(bundled, run_dir / "checkpoint_best.pth", out / "tiny_finetuned.pth")
    after = score(world, new, out / "eval_after", args.device, word)

    kept: Dict[str, Any] = {}
    if not args.skip_quickstart:
        for name, ckpt in (("bundled", bundled), ("finetuned", new)):
            q = quickstart.main(
                [
                    "--checkpoint",
                    str(ckpt),
                    "--out",
                    str(out / f"quickstart_{name}"),
                    "--num-test",
                    str(args.quickstart_scenes),
                    "--device",
                    args.device,
                ]
            )
            kept[name] = {k: q.get(k) for k in QUICKSTART_KEYS}
    train_file = world / "regions" / "synthetic_train.jsonl"
    report = {
        "train_regions": sum(1 for _ in train_file.open()),
        "train_regions_with_new_word": sum(word in line for line in train_file.open()),
        "freeze_t5": args.freeze_t5,
        "epochs": args.epochs,
        "train_seconds": train_seconds,
        "best": summary.get("best"),
        "held_out_before": before,
        "held_out_after": after,
        "original_world": kept,
        "checkpoint": str(new),
        "seconds": round(time.time() - start, 1),
    }
    atomic_write_json(out / "summary.json", report)
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    from regionvlm.common.cli import run

    run(main)
