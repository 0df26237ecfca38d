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

REPO = Path(__file__).resolve().parent
DEFAULT_CFG = REPO / "configs" / "blip2" / "eval" / "rec_refcoco_val.yaml"
BUILDER_FOR = {
    "refcoco": "rec_refcoco",
    "refcoco+": "rec_refcoco+",
    "refcocog": "rec_refcocog",
    "synthetic": "rec_synthetic",
}
DATASET_OF = {v: k for k, v in BUILDER_FOR.items()}
PATH_KEYS = ("data_root", "image_root", "world")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Zero-shot REC evaluation, Acc@0.5 (RefCOCO/+/g, synthetic).")
    p.add_argument("--dataset_name", choices=sorted(BUILDER_FOR), default=None)
    p.add_argument("--splitBy", default=None, help="unc (refcoco, refcoco+), umd (refcocog)")
    p.add_argument("--split", default=None, help="val, testA, testB, test (comma-separated for several)")
    p.add_argument("--cfg-path", default=str(DEFAULT_CFG), help="base YAML (default: %(default)s)")
    p.add_argument("--model-type", default=None, help="model preset: flant5xl (paper) or tiny")
    p.add_argument("--checkpoint", default=None, help="RegionVLM checkpoint (model.checkpoint)")
    p.add_argument("--data-root", default=None, help="folder with <dataset>/refs(<splitBy>).p + instances.json")
    p.add_argument("--image-root", default=None, help="image folder (COCO train2014)")
    p.add_argument("--world", default=None, help="synthetic world folder (refer/, images/)")
    p.add_argument(
        "--candidates",
        choices=("gt", "detections"),
        default=None,
        help="gt: every COCO annotation of the image; detections: the boxes of --detections",
    )
    p.add_argument("--detections", default=None, help="detections JSON (refer toolkit or ReCLIP *_dets_dict.json)")
    p.add_argument("--seed", type=int, default=None, help="default 42")
    p.add_argument("--points", type=int, default=None, help="points per draw (default: the model's K)")
    p.add_argument("--repeats", type=int, default=None, help="draws per candidate (default 5)")
    p.add_argument("--protocol", choices=("fast", "official"), default=None)
    p.add_argument("--draws", choices=("image", "sentence"), default=None, help="share draws per image or per sentence")
    p.add_argument(
        "--region-prompt",
        choices=("points", "empty", "box", "crop", "blur", "circle"),
        default=None,
        help="how the candidate reaches the model (docs/rec.md)",
    )
    p.add_argument(
        "--on-no-candidate",
        choices=("empty", "error", "image"),
        default=None,
        help="an image without candidates: wrong (empty), stop (error) or the whole image (image, ReCLIP)",
    )
    p.add_argument("--skip-missing", action="store_true", help="skip and list expressions whose image is missing")
    p.add_argument("--out", default=None, help="output folder (run.output_dir)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: the local GPU if any)")
    p.add_argument("--options", nargs="+", default=[], help="more overrides, e.g. run.decoder_batch=512")
    return p.parse_args(argv)


def build_user_config(args: argparse.Namespace) -> Dict[str, Any]:
    """The YAML as a plain dict with the flags applied (one dataset, task rec, evaluate)."""
    from omegaconf import OmegaConf

    from regionvlm.common.config import load_yaml
    from regionvlm.common.errors import ConfigError

    data = OmegaConf.to_container(load_yaml(args.cfg_path), resolve=False)
    datasets = data.get("datasets") or {}
    if len(datasets) > 1:
        raise ConfigError(f"eval_REC.py needs a config with one dataset; '{args.cfg_path}' has {sorted(datasets)}.")
    old_builder, ds_cfg = next(iter(datasets.items())) if datasets else ("rec_refcoco", {})
    ds_cfg = dict(ds_cfg or {})
    if old_builder not in DATASET_OF:
        raise ConfigError(f"'{args.cfg_path}' lists dataset '{old_builder}', not a REC dataset {sorted(DATASET_OF)}.")
    name = args.dataset_name or ds_cfg.get("dataset_name") or DATASET_OF[old_builder]
    if name != DATASET_OF[old_builder]:
        ds_cfg.pop("splitBy", None)  # the YAML's splitBy belongs to the other dataset
        ds_cfg.pop("detections", None)  # and so do its detections
        ds_cfg.pop("candidates", None)
        if name == "synthetic" or DATASET_OF[old_builder] == "synthetic":
            for key in PATH_KEYS:
                ds_cfg.pop(key, None)
    ds_cfg["dataset_name"] = name
    if args.world is not None:
        if name != "synthetic":
            raise ConfigError("--world applies to --dataset_name synthetic only.")
        ds_cfg["world"] = args.world
    for flag in ("splitBy", "data_root", "image_root", "candidates", "detections"):
        if getattr(args, flag) is not None:
            ds_cfg[flag] = getattr(args, flag)
    if args.detections is not None and args.candidates is None:
        ds_cfg["candidates"] = "detections"  # a detections file means scoring its boxes
    if args.candidates == "gt" and args.detections is None:
        ds_cfg["detections"] = None  # the YAML's detections file is not scored then
    if args.split is not None:
        splits = [s for s in args.split.split(",") if s]
        ds_cfg["split"] = splits[0] if len(splits) == 1 else splits
    if args.skip_missing:
        ds_cfg["skip_missing"] = True
    data["datasets"] = {BUILDER_FOR[name]: ds_cfg}

    run = dict(data.get("run") or {})
    run.update({"task": "rec", "evaluate": True})
    for flag, key in (
        ("seed", "seed"),
        ("points", "num_points"),
        ("repeats", "repeats"),
        ("protocol", "protocol"),
        ("draws", "draws"),
        ("region_prompt", "region_prompt"),
        ("on_no_candidate", "on_no_candidate"),
        ("out", "output_dir"),
        ("device", "device"),
    ):
        if getattr(args, flag) is not None:
            run[key] = getattr(args, flag)
    run.setdefault("output_dir", "output/rec")
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
        if key.endswith(("/acc@0.5", "/mIoU")):
            echo(f"{key}: {'n/a' if value is None else round(value, 4)}")
    return metrics


if __name__ == "__main__":
    from regionvlm.common.cli import run

    run(main)
