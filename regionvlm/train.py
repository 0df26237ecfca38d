"""Train or evaluate any RegionVLM task from one YAML file.

    python train.py --cfg-path configs/synthetic/train_tiny.yaml
    python train.py --cfg-path configs/blip2/eval/vqav2_zeroshot_flant5xl_eval.yaml --options run.batch_size_eval=8
    torchrun --nproc_per_node=8 train.py --cfg-path configs/blip2/train/LN_ft.yaml

With ``run.evaluate: true`` the same command only evaluates.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg-path", required=True, help="path to the run's YAML config")
    parser.add_argument("--options", nargs="+", default=[],
                        help="override config entries, e.g. run.init_lr=1e-5 model.model_type=tiny")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> dict:
    from regionvlm.common.config import Config
    from regionvlm.common.errors import RegionVLMError
    from regionvlm.common.registry import registry
    from regionvlm.runners.runner_base import set_seed

    args = parse_args(argv)
    try:
        cfg = Config(args.cfg_path, args.options)
        task = registry.get_class_or_raise("task", cfg.run_cfg.get("task", "region_captioning")).setup_task(cfg)
        set_seed(int(cfg.run_cfg.get("seed", 42)))  # random-init parts of the model are seeded too
        datasets = task.build_datasets(cfg)
        model = task.build_model(cfg)
        runner_cls = registry.get_class_or_raise("runner", cfg.run_cfg.get("runner", "runner_base"))
        runner = runner_cls(cfg, task, model, datasets)
        return runner.evaluate() if cfg.run_cfg.get("evaluate", False) else runner.train()
    except (RegionVLMError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {msg}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
