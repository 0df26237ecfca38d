"""Zero-shot referring image segmentation with RegionVLM (docs/ris.md).

A thin command line over the registered ``ris`` task: it reads a YAML (default
``configs/blip2/eval/ris_refcoco_val.yaml``), applies the flags below and ``--options``,
and runs exactly what ``python train.py --cfg-path <yaml>`` runs with ``run.evaluate: true``
(task.build_model -> task.build_datasets -> task.evaluate).

Examples::

    python eval_RIS.py --dataset_name refcoco --splitBy unc --split val \\
        --data-root data/refer --image-root data/coco/train2014 --proposals data/sam_proposals
    python eval_RIS.py --dataset_name refcocog --splitBy umd --split test --protocol official
    python eval_RIS.py --dataset_name synthetic --world WORLD_DIR --model-type tiny --checkpoint ckpt.pth
    torchrun --nproc_per_node 8 eval_RIS.py ...      # images sharded over GPUs, results gathered

Flags left out keep the YAML's values (whose defaults are the official ones: threshold 0.7,
small_threshold 0.04, seed 42, 20 masks, 10 points, 5 repeats).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from regionvlm.refer_cli import ReferCommand, parse, run_command
from regionvlm.refer_cli import build_user_config as _build

DEFAULT_CFG = Path(__file__).resolve().parent / "configs" / "blip2" / "eval" / "ris_refcoco_val.yaml"
COMMAND = ReferCommand(
    task="ris",
    builders={"refcoco": "refcoco", "refcoco+": "refcoco+", "refcocog": "refcocog", "synthetic": "ris_synthetic"},
    dataset_flags=("proposals",),
    run_flags=(
        ("threshold", "threshold"),
        ("small_threshold", "small_threshold"),
        ("max_masks", "max_masks"),
        ("visualize", "visualize"),
    ),
    paths=("data_root", "image_root", "proposals", "world"),
    headline=("/oIoU", "/mIoU"),
    default_out="output/ris",
)


def _own_flags(p: argparse.ArgumentParser) -> None:
    official = p.add_argument_group("official flags (with --dataset_name, --splitBy, --split)")
    official.add_argument("--threshold", type=float, default=None, help="border test (official 0.7)")
    official.add_argument("--small_threshold", type=float, default=None, help="min mask area (official 0.04)")
    p.add_argument("--proposals", default=None, help="SAM proposal folder (python -m regionvlm.proposals)")
    p.add_argument("--max-masks", type=int, default=None, help="official 20")
    p.add_argument("--visualize", type=int, default=None, help="write N PNG overlays")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return parse(argv, COMMAND, "Zero-shot RIS evaluation (RefCOCO/+/g, synthetic).", str(DEFAULT_CFG), _own_flags)


def build_user_config(args: argparse.Namespace) -> Dict[str, Any]:
    """The YAML as a plain dict with the flags applied (one dataset, task ris, evaluate)."""
    return _build(args, COMMAND, "eval_RIS.py")


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    return run_command(args, build_user_config(args), COMMAND)


if __name__ == "__main__":
    from regionvlm.common.cli import run

    run(main)
