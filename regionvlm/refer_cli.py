"""What ``eval_RIS.py`` and ``eval_REC.py`` share: the command line of an evaluation on a
refer-layout split (RefCOCO, RefCOCO+, RefCOCOg, the synthetic world), turned into the YAML
config ``train.py`` runs (one dataset, the task's ``run:`` keys, the model flags). Flags left
out keep the YAML's values; ``--options`` come last and win.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

REGION_PROMPTS = ("points", "empty", "box", "crop", "blur", "circle")


SHARED_RUN_FLAGS = (  # (flag, run key) of every refer-split evaluation
    ("seed", "seed"),
    ("points", "num_points"),
    ("repeats", "repeats"),
    ("protocol", "protocol"),
    ("draws", "draws"),
    ("region_prompt", "region_prompt"),
    ("out", "output_dir"),
    ("device", "device"),
)


@dataclass(frozen=True)
class ReferCommand:
    """One task's command line: its name, builders (dataset -> builder), the dataset keys and
    the ``run:`` keys its own flags set, and what a change of dataset must forget."""

    task: str
    builders: Mapping[str, str]
    dataset_flags: Tuple[str, ...]  # flags copied to the dataset section under the same name
    run_flags: Tuple[Tuple[str, str], ...]  # (flag, run key) besides the shared ones
    paths: Tuple[str, ...]  # path keys a switch to or from the synthetic world drops
    dropped_with_dataset: Tuple[str, ...] = ("splitBy",)
    headline: Tuple[str, ...] = ()
    default_out: str = ""

    @property
    def datasets(self) -> Dict[str, str]:
        """builder -> dataset."""
        return {builder: dataset for dataset, builder in self.builders.items()}


def add_common_arguments(p: argparse.ArgumentParser, command: ReferCommand, default_cfg: str) -> None:
    """The flags every refer-split evaluation takes (the task adds its own)."""
    p.add_argument("--dataset_name", choices=sorted(command.builders), default=None)
    p.add_argument("--splitBy", default=None, help="unc (refcoco, refcoco+), umd or google (refcocog)")
    p.add_argument("--split", default=None, help="val, testA, testB, test (comma-separated for several)")
    p.add_argument("--cfg-path", default=default_cfg, help="base YAML (default: %(default)s)")
    p.add_argument("--model-type", default=None, help="model preset: flant5xl (paper) or tiny")
    p.add_argument("--checkpoint", default=None, help="RegionVLM checkpoint (model.checkpoint)")
    p.add_argument("--data-root", default=None, help="folder with <dataset>/refs(<splitBy>).p + instances.json")
    p.add_argument("--image-root", default=None, help="image folder (COCO train2014)")
    p.add_argument("--world", default=None, help="synthetic world folder (python -m regionvlm.synthetic)")
    p.add_argument("--seed", type=int, default=None, help="official 42")
    p.add_argument("--points", type=int, default=None, help="points per draw (default: the model's K, 10)")
    p.add_argument("--repeats", type=int, default=None, help="draws per candidate (official 5)")
    p.add_argument("--protocol", choices=("fast", "official"), default=None)
    p.add_argument(
        "--draws",
        choices=("image", "sentence"),
        default=None,
        help="share a candidate's draws across an image's sentences (image) or draw per sentence",
    )
    p.add_argument(
        "--region-prompt",
        choices=REGION_PROMPTS,
        default=None,
        help="how a candidate reaches the model: points (RegionVLM), empty (ablation), box, or a "
        "visual prompt of BLIP-2 (crop, blur, circle)",
    )
    p.add_argument("--skip-missing", action="store_true", help="skip and list queries with missing files")
    p.add_argument("--out", default=None, help="output folder (run.output_dir)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: the local GPU if any)")
    p.add_argument("--options", nargs="+", default=[], help="more overrides, e.g. run.decoder_batch=512")


def build_user_config(args: argparse.Namespace, command: ReferCommand, script: str) -> Dict[str, Any]:
    """The YAML as a plain dict with the flags applied (one dataset, the task, evaluate)."""
    from omegaconf import OmegaConf

    from regionvlm.common.config import load_yaml
    from regionvlm.common.errors import ConfigError

    data = OmegaConf.to_container(load_yaml(args.cfg_path), resolve=False)
    datasets = data.get("datasets") or {}
    if len(datasets) > 1:
        raise ConfigError(f"{script} needs a config with one dataset; '{args.cfg_path}' has {sorted(datasets)}.")
    of = command.datasets
    old_builder, ds_cfg = next(iter(datasets.items())) if datasets else (command.builders["refcoco"], {})
    ds_cfg = dict(ds_cfg or {})
    if old_builder not in of:
        raise ConfigError(
            f"'{args.cfg_path}' lists dataset '{old_builder}', not a {command.task.upper()} dataset {sorted(of)}."
        )
    name = args.dataset_name or ds_cfg.get("dataset_name") or of[old_builder]
    if name != of[old_builder]:
        for key in command.dropped_with_dataset:  # they belong to the YAML's other dataset
            ds_cfg.pop(key, None)
        if "synthetic" in (name, of[old_builder]):
            for key in command.paths:
                ds_cfg.pop(key, None)
    ds_cfg["dataset_name"] = name
    if args.world is not None:
        if name != "synthetic":
            raise ConfigError("--world applies to --dataset_name synthetic only.")
        ds_cfg["world"] = args.world
    for flag in ("splitBy", "data_root", "image_root", *command.dataset_flags):
        if getattr(args, flag) is not None:
            ds_cfg[flag] = getattr(args, flag)
    if args.split is not None:
        splits = [s for s in args.split.split(",") if s]
        ds_cfg["split"] = splits[0] if len(splits) == 1 else splits
    if args.skip_missing:
        ds_cfg["skip_missing"] = True
    data["datasets"] = {command.builders[name]: ds_cfg}

    run = dict(data.get("run") or {})
    run.update({"task": command.task, "evaluate": True})
    for flag, key in (*SHARED_RUN_FLAGS, *command.run_flags):
        if getattr(args, flag) is not None:
            run[key] = getattr(args, flag)
    run.setdefault("output_dir", command.default_out)
    data["run"] = run

    model = dict(data.get("model") or {"arch": "regionvlm_t5"})
    if args.model_type is not None:
        model["model_type"] = args.model_type
    if args.checkpoint is not None:
        model["checkpoint"] = args.checkpoint
    data["model"] = model
    return data


def run_command(args: argparse.Namespace, data: Dict[str, Any], command: ReferCommand) -> Dict[str, Any]:
    """``train.py``'s code path on the built config; prints the headline metrics."""
    from omegaconf import OmegaConf

    from regionvlm.common.cli import echo
    from regionvlm.common.config import Config
    from regionvlm.train import run_config

    cfg = Config(args.cfg_path, args.options, user_config=OmegaConf.create(data))
    metrics = run_config(cfg)
    for key, value in metrics.items():
        if key.endswith(command.headline):
            echo(f"{key}: {'n/a' if value is None else round(value, 4)}")
    return metrics


def parse(
    argv: Optional[Sequence[str]], command: ReferCommand, description: str, default_cfg: str, add_own
) -> argparse.Namespace:
    """The common flags, then the task's own (``add_own(parser)``), parsed."""
    p = argparse.ArgumentParser(description=description)
    add_common_arguments(p, command, default_cfg)
    add_own(p)
    return p.parse_args(argv)
