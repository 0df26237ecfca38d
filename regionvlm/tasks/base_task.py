"""Tasks in LAVIS's sense: what a run builds (model, datasets) and how it trains/evaluates.

One runner (``regionvlm.runners.runner_base``) drives every task. Training tasks implement
``train_step``; evaluation tasks implement ``evaluate`` (usually through
``regionvlm.tasks.eval_loop.run_resumable``) and return a flat dict of metrics.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import torch

from regionvlm.common.errors import ConfigError
from regionvlm.common.registry import registry


class BaseTask:
    def __init__(self, cfg: Any = None):
        self.cfg = cfg

    @classmethod
    def setup_task(cls, cfg: Any) -> "BaseTask":
        return cls(cfg)

    def build_model(self, cfg: Any) -> torch.nn.Module:
        model_cfg = cfg.model_cfg
        return registry.get_class_or_raise("model", model_cfg.arch).from_config(model_cfg)

    def build_datasets(self, cfg: Any) -> Dict[str, Dict[str, Any]]:
        """``{dataset_name: {split: dataset}}`` from every entry of ``datasets:``."""
        datasets: Dict[str, Dict[str, Any]] = {}
        for name, ds_cfg in (cfg.datasets_cfg or {}).items():
            builder = registry.get_class_or_raise("builder", name)(ds_cfg)
            datasets[name] = builder.build_datasets()
        if not datasets:
            raise ConfigError("the config lists no datasets under `datasets:`.")
        return datasets

    def train_step(self, model: torch.nn.Module, samples: Dict[str, Any]) -> torch.Tensor:
        return model(samples)["loss"]

    def evaluate(self, model: torch.nn.Module, datasets: Dict[str, Dict[str, Any]],
                 run_cfg: Any, output_dir: Path) -> Dict[str, float]:
        raise ConfigError(f"task {type(self).__name__} has no evaluation; set run.evaluate: false.")
