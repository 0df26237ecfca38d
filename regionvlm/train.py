"""Train or evaluate any RegionVLM task from one YAML file.

    python train.py --cfg-path configs/synthetic/train_tiny.yaml
    python train.py --cfg-path configs/blip2/eval/vqav2_zeroshot_flant5xl_eval.yaml --options run.batch_size_eval=8
    torchrun --nproc_per_node=8 train.py --cfg-path configs/blip2/train/LN_ft.yaml

With ``run.evaluate: true`` the same command only evaluates. Every key of the YAML and of
``--options`` is checked before anything is built.
"""

from __future__ import annotations

import argparse
from typing import Any, Dict, List, Optional, Sequence

from regionvlm.common.cli import run


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg-path", required=True, help="path to the run's YAML config")
    parser.add_argument(
        "--options", nargs="+", default=[], help="override config entries, e.g. run.init_lr=1e-5 model.model_type=tiny"
    )
    return parser.parse_args(argv)


def run_config(cfg: Any) -> Dict[str, Any]:
    """Build task, datasets, model and runner from a checked :class:`Config`; train or evaluate."""
    from regionvlm.common import dist_utils
    from regionvlm.common.cli import echo
    from regionvlm.models import random_weights_notice
    from regionvlm.runners.runner_base import set_seed

    run = cfg.run_settings
    notice = random_weights_notice(cfg.model_cfg, training=not run.evaluate)
    if notice:
        echo(notice)  # the first line of the run's output
    task = cfg.task_class().setup_task(cfg)
    set_seed(run.seed)  # random-init parts of the model are seeded too
    datasets = task.build_datasets(cfg)
    dist_utils.init_distributed_mode()  # this rank's GPU is known before the model is built
    model = task.build_model(cfg, device=dist_utils.resolve_device(run.device), is_eval=run.evaluate)
    runner = cfg.runner_class()(cfg, task, model, datasets)
    return runner.evaluate() if run.evaluate else runner.train()


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    from regionvlm.common.config import Config

    args = parse_args(argv)
    return run_config(Config(args.cfg_path, args.options))


if __name__ == "__main__":
    run(main)
