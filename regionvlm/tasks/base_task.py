"""Tasks in LAVIS's sense: what a run builds (model, datasets) and how it trains/evaluates.

One runner (``regionvlm.runners.runner_base``) drives every task. Training tasks implement
``train_step``; evaluation tasks derive from :class:`regionvlm.tasks.evaluation.EvalTask`.
A task declares the ``run:`` keys it reads as its ``Settings`` class (checked when the
config is loaded, together with the runner's).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict

import torch

from regionvlm.common.errors import ConfigError
from regionvlm.common.registry import registry
from regionvlm.common.settings import Settings


@dataclass(frozen=True)
class NoSettings(Settings):
    """A task that reads no ``run:`` key of its own."""


def parse_run_settings(settings_cls: Any, run_cfg: Any) -> Any:
    """A task's settings from a whole ``run:`` section, whose other keys belong to the runner
    it names (default ``runner_base``)."""
    runner = registry.get_runner_class(str((run_cfg or {}).get("runner", "runner_base")))
    return settings_cls.parse(run_cfg, "run", also_known=runner.Settings.keys())


class BaseTask:
    Settings = NoSettings

    def __init__(self, cfg: Any = None):
        self.cfg = cfg

    @classmethod
    def setup_task(cls, cfg: Any) -> "BaseTask":
        """LAVIS's constructor; checks the task's ``run:`` settings before anything is built."""
        task = cls(cfg)
        if cfg is not None:
            task.parse_settings(cfg.run_cfg)
        return task

    def parse_settings(self, run_cfg: Any) -> Any:
        """This task's settings from ``run:`` (the runner's keys are known there too)."""
        return parse_run_settings(self.Settings, run_cfg)

    def build_model(self, cfg: Any) -> torch.nn.Module:
        model_cfg = cfg.model_cfg
        return registry.get_model_class(model_cfg.arch).from_config(model_cfg)

    def build_datasets(self, cfg: Any) -> Dict[str, Dict[str, Any]]:
        """``{dataset_name: {split: dataset}}`` from every entry of ``datasets:``; builders get
        the model's image size and the run's seed explicitly."""
        image_size = cfg.model_cfg.get("image_size", None)
        seed = int((cfg.run_cfg or {}).get("seed", 42))
        datasets: Dict[str, Dict[str, Any]] = {}
        for name, ds_cfg in (cfg.datasets_cfg or {}).items():
            builder = registry.get_builder_class(name)(ds_cfg, image_size=image_size, seed=seed)
            datasets[name] = builder.build_datasets()
        if not datasets:
            raise ConfigError("the config lists no datasets under `datasets:`.")
        return datasets

    def train_step(self, model: torch.nn.Module, samples: Dict[str, Any]) -> torch.Tensor:
        return model(samples)["loss"]

    def evaluate(
        self, model: torch.nn.Module, datasets: Dict[str, Dict[str, Any]], run_cfg: Any, output_dir: Path
    ) -> Dict[str, Any]:
        raise ConfigError(f"task {type(self).__name__} has no evaluation; set run.evaluate: false.")
