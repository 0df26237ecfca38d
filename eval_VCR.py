"""Zero-shot Visual Commonsense Reasoning (Q->A, QA->R, Q->AR), docs/evaluation.md.

A thin command line over the ``vcr`` task: the flags become ``--options`` of the YAML config
and the run goes through ``train.py``'s code path (Config -> task -> datasets -> model ->
runner.evaluate), so ``python train.py --cfg-path configs/blip2/eval/vcr_val.yaml`` computes
the same numbers.

    python eval_VCR.py --data-root /data/vcr --split val --out output/vcr_val
    torchrun --nproc_per_node=8 eval_VCR.py --data-root /data/vcr --batch-size 16
    python eval_VCR.py --data-root /data/vcr --mode ranking      # addition, not the paper's protocol

Writes ``<out>/vcr[-ranking]_vcr_<split>.json`` (accuracies, fallback counts, per-item
predictions) and its ``_metrics.json``; a killed run started again resumes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, List, Optional

DEFAULT_CFG = str(Path(__file__).resolve().parent / "configs" / "blip2" / "eval" / "vcr_val.yaml")

# flag -> config key it sets (only when the flag is given)
FLAG_TO_OPTION = {
    "split": "datasets.vcr.split",
    "data_root": "datasets.vcr.data_root",
    "annotation": "datasets.vcr.annotation",
    "image_root": "datasets.vcr.image_root",
    "metadata_root": "datasets.vcr.metadata_root",
    "model_type": "model.model_type",
    "checkpoint": "model.checkpoint",
    "mode": "run.mode",
    "ranking_target": "run.ranking_target",
    "seed": "run.seed",
    "batch_size": "run.batch_size_eval",
    "num_workers": "run.num_workers",
    "out": "run.output_dir",
    "device": "run.device",
}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg-path", default=DEFAULT_CFG, help="run YAML (default: %(default)s)")
    p.add_argument("--split", choices=("train", "val", "test"), help="VCR split (config default: val)")
    p.add_argument("--data-root", help="folder with train/val/test.jsonl (and, by default, vcr1images/)")
    p.add_argument("--annotation", help="explicit JSONL file (overrides <data-root>/<split>.jsonl)")
    p.add_argument("--image-root", help="the vcr1images folder (default <data-root>/vcr1images)")
    p.add_argument("--metadata-root", help="folder of the metadata JSON files (default: image root)")
    p.add_argument("--model-type", help="model preset: flant5xl (RegionVLM), pretrain_flant5xl, tiny")
    p.add_argument("--checkpoint", help="RegionVLM checkpoint (.pth) loaded on top of the preset")
    p.add_argument(
        "--mode",
        choices=("generate", "ranking"),
        help="generate = official protocol (default); ranking = likelihood of each choice",
    )
    p.add_argument(
        "--ranking-target",
        choices=("text", "number"),
        help="ranking mode: score the choice text (default) or its number",
    )
    p.add_argument("--seed", type=int, help="seed of the region points (default 42)")
    p.add_argument("--batch-size", type=int, help="items per model call (default 8)")
    p.add_argument("--num-workers", type=int, help="image-loading threads (default 0)")
    p.add_argument("--out", help="output folder (results, metrics, resumable progress logs)")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1 ...")
    p.add_argument(
        "--skip-missing",
        action="store_true",
        help="skip items with missing files or malformed annotations (counted and listed)",
    )
    p.add_argument("--options", nargs="+", default=[], help="more config overrides, key=value")
    return p.parse_args(argv)


def to_options(args: argparse.Namespace) -> List[str]:
    """The flags as config overrides; ``--options`` come last and win."""
    opts = ["run.task=vcr", "run.evaluate=true"]
    values: Dict[str, object] = vars(args)
    opts += [f"{key}={values[flag]}" for flag, key in FLAG_TO_OPTION.items() if values.get(flag) is not None]
    if args.skip_missing:
        opts.append("datasets.vcr.skip_missing=true")
    return opts + list(args.options)


def main(argv: Optional[List[str]] = None) -> dict:
    from regionvlm.train import main as train_main  # the trainer's entry point: one code path

    args = parse_args(argv)
    return train_main(["--cfg-path", args.cfg_path, "--options", *to_options(args)])


if __name__ == "__main__":
    from regionvlm.common.cli import run

    run(main)
