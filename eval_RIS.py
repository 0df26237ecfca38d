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

REPO = Path(__file__).resolve().parent
DEFAULT_CFG = REPO / "configs" / "blip2" / "eval" / "ris_refcoco_val.yaml"
BUILDER_FOR = {"refcoco": "refcoco", "refcoco+": "refcoco+", "refcocog": "refcocog", "synthetic": "ris_synthetic"}
DATASET_OF = {v: k for k, v in BUILDER_FOR.items()}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Zero-shot RIS evaluation (RefCOCO/+/g, synthetic).")
    official = p.add_argument_group("official flags")
    official.add_argument("--dataset_name", choices=sorted(BUILDER_FOR), default=None)
    official.add_argument("--splitBy", default=None, help="unc (refcoco, refcoco+), umd or google (refcocog)")
    official.add_argument("--split", default=None, help="val, testA, testB, test (comma-separated for several)")
    official.add_argument("--threshold", type=float, default=None, help="border test (official 0.7)")
    official.add_argument("--small_threshold", type=float, default=None, help="min mask area (official 0.04)")
    p.add_argument("--cfg-path", default=str(DEFAULT_CFG), help="base YAML (default: %(default)s)")
    p.add_argument("--model-type", default=None, help="model preset: flant5xl (paper) or tiny")
    p.add_argument("--checkpoint", default=None, help="RegionVLM checkpoint (model.checkpoint)")
    p.add_argument("--data-root", default=None, help="folder with <dataset>/refs(<splitBy>).p + instances.json")
    p.add_argument("--image-root", default=None, help="image folder (COCO train2014)")
    p.add_argument("--proposals", default=None, help="SAM proposal folder (python -m regionvlm.proposals)")
    p.add_argument("--world", default=None, help="synthetic world folder (refer/, images/, proposals/)")
    p.add_argument("--seed", type=int, default=None, help="official 42")
    p.add_argument("--max-masks", type=int, default=None, help="official 20")
    p.add_argument("--points", type=int, default=None, help="points per draw (official 10)")
    p.add_argument("--repeats", type=int, default=None, help="draws per mask (official 5)")
    p.add_argument("--protocol", choices=("fast", "official"), default=None)
    p.add_argument(
        "--draws",
        choices=("image", "sentence"),
        default=None,
        help="share a mask's draws across an image's sentences (image) or draw per sentence",
    )
    p.add_argument(
        "--region-prompt",
        choices=("points", "empty", "box", "crop", "blur", "circle"),
        default=None,
        help="how the region reaches the model: points (RegionVLM), empty (ablation), box, or a "
        "visual prompt of BLIP-2 (crop, blur, circle); see docs/ris.md",
    )
    p.add_argument("--skip-missing", action="store_true", help="skip and list queries with missing files")
    p.add_argument("--out", default=None, help="output folder (run.output_dir)")
    p.add_argument("--visualize", type=int, default=None, help="write N PNG overlays")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: the local GPU if any)")
    p.add_argument("--options", nargs="+", default=[], help="more overrides, e.g. run.decoder_batch=512")
    return p.parse_args(argv)


def build_user_config(args: argparse.Namespace) -> Dict[str, Any]:
    """The YAML as a plain dict with the flags applied (one dataset, task ris, evaluate)."""
    from omegaconf import OmegaConf

    from regionvlm.common.config import load_yaml
    from regionvlm.common.errors import ConfigError

    data = OmegaConf.to_container(load_yaml(args.cfg_path), resolve=False)
    datasets = data.get("datasets") or {}
    if len(datasets) > 1:
        raise ConfigError(f"eval_RIS.py needs a config with one dataset; '{args.cfg_path}' has {sorted(datasets)}.")
    old_builder, ds_cfg = next(iter(datasets.items())) if datasets else ("refcoco", {})
    ds_cfg = dict(ds_cfg or {})
    if old_builder not in DATASET_OF:
        raise ConfigError(f"'{args.cfg_path}' lists dataset '{old_builder}', not a RIS dataset {sorted(DATASET_OF)}.")
    name = args.dataset_name or ds_cfg.get("dataset_name") or DATASET_OF[old_builder]
    if name != DATASET_OF[old_builder]:
        ds_cfg.pop("splitBy", None)  # the YAML's splitBy belongs to the other dataset
        if name == "synthetic" or DATASET_OF[old_builder] == "synthetic":
            for key in ("data_root", "image_root", "proposals", "world"):
                ds_cfg.pop(key, None)
    ds_cfg["dataset_name"] = name
    if args.world is not None:
        if name != "synthetic":
            raise ConfigError("--world applies to --dataset_name synthetic only.")
        ds_cfg["world"] = args.world
    for flag, key in (
        ("splitBy", "splitBy"),
        ("data_root", "data_root"),
        ("image_root", "image_root"),
        ("proposals", "proposals"),
    ):
        if getattr(args, flag) is not None:
            ds_cfg[key] = getattr(args, flag)
    if args.split is not None:
        splits = [s for s in args.split.split(",") if s]
        ds_cfg["split"] = splits[0] if len(splits) == 1 else splits
    if args.skip_missing:
        ds_cfg["skip_missing"] = True
    data["datasets"] = {BUILDER_FOR[name]: ds_cfg}

    run = dict(data.get("run") or {})
    run.update({"task": "ris", "evaluate": True})
    for flag, key in (
        ("threshold", "threshold"),
        ("small_threshold", "small_threshold"),
        ("seed", "seed"),
        ("max_masks", "max_masks"),
        ("points", "num_points"),
        ("repeats", "repeats"),
        ("protocol", "protocol"),
        ("draws", "draws"),
        ("out", "output_dir"),
        ("visualize", "visualize"),
        ("device", "device"),
        ("region_prompt", "region_prompt"),
    ):
        if getattr(args, flag) is not None:
            run[key] = getattr(args, flag)
    run.setdefault("output_dir", "output/ris")
    data["run"] = run

    model = dict(data.get("model") or {"arch": "regionvlm_t5"})
    if args.model_type is not None:
        model["model_type"] = args.model_type
    if args.checkpoint is not None:
        model["checkpoint"] = args.checkpoint
    data["model"] = model
    return data


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    from omegaconf import OmegaConf

    from regionvlm.common.cli import echo
    from regionvlm.common.config import Config
    from regionvlm.train import run_config

    args = parse_args(argv)
    cfg = Config(args.cfg_path, args.options, user_config=OmegaConf.create(build_user_config(args)))
    metrics = run_config(cfg)
    for key, value in metrics.items():
        if key.endswith(("/oIoU", "/mIoU")):
            echo(f"{key}: {'n/a' if value is None else round(value, 4)}")
    return metrics


if __name__ == "__main__":
    from regionvlm.common.cli import run

    run(main)
