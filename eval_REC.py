"""Zero-shot referring expression comprehension (Acc@0.5) with RegionVLM (docs/rec.md).

A thin command line over the registered ``rec`` task: it reads a YAML (default
``configs/blip2/eval/rec_refcoco_val.yaml``), applies the flags below and ``--options``,
and runs exactly what ``python train.py --cfg-path <yaml>`` runs with ``run.evaluate: true``
(task.build_model -> task.build_datasets -> task.evaluate).

Examples::

    python eval_REC.py --dataset_name refcoco --splitBy unc --split val \\
        --data-root data/refer --image-root data/coco/train2014 --out output/rec
    python eval_REC.py --dataset_name refcoco+ --split testA \\
        --candidates detections --detections reclip_data/refcoco+_dets_dict.json
    python eval_REC.py --dataset_name synthetic --world WORLD_DIR --split test --model-type tiny --checkpoint ckpt.pth
    torchrun --nproc_per_node 8 eval_REC.py ...      # images sharded over GPUs, results gathered

Flags left out keep the YAML's values (ground-truth candidates, seed 42, the model's K
points, 5 repeats, the fast protocol).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from regionvlm.refer_cli import ReferCommand, parse, run_command
from regionvlm.refer_cli import build_user_config as _build

DEFAULT_CFG = Path(__file__).resolve().parent / "configs" / "blip2" / "eval" / "rec_refcoco_val.yaml"
COMMAND = ReferCommand(
    task="rec",
    builders={
        "refcoco": "rec_refcoco",
        "refcoco+": "rec_refcoco+",
        "refcocog": "rec_refcocog",
        "synthetic": "rec_synthetic",
    },
    dataset_flags=("candidates", "detections"),
    run_flags=(("on_no_candidate", "on_no_candidate"),),
    paths=("data_root", "image_root", "world"),
    dropped_with_dataset=("splitBy", "detections", "candidates"),  # the YAML's detections are another dataset's
    headline=("/acc@0.5", "/mIoU"),
    default_out="output/rec",
)


def _own_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--candidates",
        choices=("gt", "detections"),
        default=None,
        help="gt: every COCO annotation of the image; detections: the boxes of --detections",
    )
    p.add_argument("--detections", default=None, help="detections JSON (refer toolkit or ReCLIP *_dets_dict.json)")
    p.add_argument(
        "--on-no-candidate",
        choices=("empty", "error", "image"),
        default=None,
        help="an image without candidates: wrong (empty), stop (error) or the whole image (image, ReCLIP)",
    )


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return parse(
        argv, COMMAND, "Zero-shot REC evaluation, Acc@0.5 (RefCOCO/+/g, synthetic).", str(DEFAULT_CFG), _own_flags
    )


def build_user_config(args: argparse.Namespace) -> Dict[str, Any]:
    """The YAML as a plain dict with the flags applied (one dataset, task rec, evaluate)."""
    data = _build(args, COMMAND, "eval_REC.py")
    ds_cfg = next(iter(data["datasets"].values()))
    if args.detections is not None and args.candidates is None:
        ds_cfg["candidates"] = "detections"  # a detections file means scoring its boxes
    if args.candidates == "gt" and args.detections is None:
        ds_cfg["detections"] = None  # the YAML's detections file is not scored then
    return data


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    return run_command(args, build_user_config(args), COMMAND)


if __name__ == "__main__":
    from regionvlm.common.cli import run

    run(main)
