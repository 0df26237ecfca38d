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
        self.settings: Any = None

    @classmethod
    def setup_task(cls, cfg: Any) -> "BaseTask":
        """LAVIS's constructor; keeps the task's ``run:`` settings, parsed once by the config."""
        task = cls(cfg)
        if cfg is not None:
            settings = getattr(cfg, "task_settings", None)
            task.settings = settings if isinstance(settings, cls.Settings) else task.parse_settings(cfg.run_cfg)
        return task

    def parse_settings(self, run_cfg: Any) -> Any:
        """This task's settings: ``run_cfg`` as given when it is already this task's typed
        settings, else parsed from a ``run:`` mapping (the runner's keys are known there too)."""
        if isinstance(run_cfg, self.Settings):
            return run_cfg
        return parse_run_settings(self.Settings, run_cfg)

    def build_model(self, cfg: Any, device: str | torch.device = "cpu", is_eval: bool = True) -> torch.nn.Module:
        """The config's model, its weights read straight into the dtypes of the precision policy
        on ``device`` and placed there (see :func:`regionvlm.models.create_model`)."""
        from regionvlm.models import create_model

        return create_model(cfg.model_cfg, device=device, is_eval=is_eval)

    def build_datasets(self, cfg: Any) -> Dict[str, Dict[str, Any]]:
        """``{dataset_name: {split: dataset}}`` from every entry of ``datasets:``; builders get
        the model's image size and number of region points and the run's seed explicitly."""
        from regionvlm.models import model_setting

        model_cfg = cfg.model_cfg
        run = getattr(cfg, "run_settings", None)
        seed = run.seed if run is not None else int((cfg.run_cfg or {}).get("seed", 42))
        parsed = getattr(cfg, "dataset_settings", None) or {}
        datasets: Dict[str, Dict[str, Any]] = {}
        for name, ds_cfg in (cfg.datasets_cfg or {}).items():
            builder = registry.get_builder_class(name)(
                parsed.get(name, ds_cfg),
                image_size=model_setting(model_cfg, "image_size"),
                num_points=model_setting(model_cfg, "num_points"),
                seed=seed,
            )
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
