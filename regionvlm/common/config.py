"""YAML configuration in LAVIS's schema: ``model:``, ``datasets:``, ``run:`` sections.

A run file names a model (``arch`` + ``model_type``) and datasets; each is merged on top of
the preset its registered class declares, and ``--options key=value`` overrides come last.
Every key is then checked against the component that reads it — the model class, each
dataset builder, the runner and the task (which share ``run:``) — so a misspelt or
mistyped setting stops the run before any work, with the key and what is allowed. The
resolved config is what gets saved next to a run's logs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from regionvlm.common.errors import ConfigError, MissingFileError
from regionvlm.common.io import check_regular_file
from regionvlm.common.registry import registry

SECTIONS = ("model", "datasets", "run")
DEFAULT_TASK = "region_captioning"
DEFAULT_RUNNER = "runner_base"


def load_yaml(path: str | Path) -> DictConfig:
    """Load one YAML file with errors that name the file."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise ConfigError(f"config '{p}' is a folder; give the YAML file (check --cfg-path).")
    check_regular_file(p, "config file")
    if not p.is_file():
        raise MissingFileError(f"config file '{p}' does not exist (check --cfg-path).")
    try:
        cfg = OmegaConf.load(p)
    except (OmegaConfBaseException, Exception) as exc:  # yaml.YAMLError is not exported by omegaconf
        raise ConfigError(f"cannot parse YAML '{p}': {exc}") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"'{p}' must hold a mapping at top level, got {type(cfg).__name__}.")
    return cfg


def parse_options(options: Optional[Sequence[str]]) -> DictConfig:
    """Turn ``["run.lr=1e-4", "model.arch=x"]`` into a config; reject malformed items."""
    options = list(options or [])
    bad = [o for o in options if "=" not in o or o.startswith("=")]
    if bad:
        raise ConfigError(f"--options expects key=value items (e.g. run.max_epoch=2); got {bad}.")
    try:
        return OmegaConf.from_dotlist(options)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"cannot parse --options {options}: {exc}") from None


def resolve(cfg: DictConfig, where: str) -> DictConfig:
    """Resolve ``${oc.env:...}`` interpolations now, with an error that names the section."""
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"cannot resolve {where}: {exc}") from None
    return cfg


def _model_config(user: DictConfig) -> DictConfig:
    model = user.get("model")
    if model is None:
        raise ConfigError("the config has no `model:` section (it needs at least `arch`).")
    if not isinstance(model, DictConfig):
        raise ConfigError(f"`model:` must be a mapping, got {model!r}.")
    arch = model.get("arch")
    if arch is None:
        raise ConfigError("`model.arch` is missing (e.g. `arch: regionvlm_t5`).")
    model_cls = registry.get_model_class(str(arch))
    model_type = model.get("model_type", None) or getattr(model_cls, "DEFAULT_MODEL_TYPE", None)
    base = OmegaConf.create()
    if model_type is not None:
        base = load_yaml(model_cls.default_config_path(str(model_type))).get("model", OmegaConf.create())
    merged = resolve(OmegaConf.merge(base, model), "`model:`")
    model_cls.check_config(merged)
    return merged


def _datasets_config(user: DictConfig) -> Tuple[DictConfig, Dict[str, Any]]:
    """The user's ``datasets:`` sections (resolved) and each parsed by its builder."""
    datasets = user.get("datasets") or OmegaConf.create()
    if not isinstance(datasets, DictConfig):
        raise ConfigError(f"`datasets:` must be a mapping of builder name -> settings, got {datasets!r}.")
    merged = OmegaConf.create()
    parsed: Dict[str, Any] = {}
    for name, ds_cfg in datasets.items():
        builder_cls = registry.get_builder_class(str(name))
        ds_cfg = ds_cfg or OmegaConf.create()
        if not isinstance(ds_cfg, DictConfig):
            raise ConfigError(f"`datasets.{name}` must be a mapping of settings, got {ds_cfg!r}.")
        merged[name] = resolve(ds_cfg, f"`datasets.{name}`")
        parsed[str(name)] = builder_cls.parse(merged[name])
    return merged, parsed


def _run_config(user: DictConfig) -> Tuple[DictConfig, Any, Any]:
    """The ``run:`` section (resolved) and its two readers' settings: the runner's, the task's."""
    run = user.get("run") or OmegaConf.create()
    if not isinstance(run, DictConfig):
        raise ConfigError(f"`run:` must be a mapping of settings, got {run!r}.")
    run = resolve(run, "`run:`")
    task_cls = registry.get_task_class(str(run.get("task", DEFAULT_TASK)))
    runner_cls = registry.get_runner_class(str(run.get("runner", DEFAULT_RUNNER)))
    runner = runner_cls.Settings.parse(run, "run", also_known=task_cls.Settings.keys())
    task = task_cls.Settings.parse(run, "run", also_known=runner_cls.Settings.keys())
    return run, runner, task


class Config:
    """The resolved, checked configuration of one run (``config.run_cfg`` etc. as in LAVIS),
    parsed once into typed settings: ``run_settings`` (the runner's), ``task_settings`` (the
    task's part of ``run:``) and ``dataset_settings`` (each builder's section)."""

    def __init__(
        self,
        cfg_path: Optional[str | Path],
        options: Optional[Iterable[str]] = None,
        user_config: Optional[DictConfig] = None,
    ) -> None:
        if user_config is None and cfg_path is None:
            raise ConfigError("give a config file (--cfg-path) or a config mapping.")
        user = user_config if user_config is not None else load_yaml(cfg_path)
        user = OmegaConf.merge(user, parse_options(list(options or [])))
        unknown = [k for k in user if k not in SECTIONS]
        if unknown:
            raise ConfigError(f"unknown top-level section(s) {unknown}; allowed: {list(SECTIONS)}.")
        self.cfg_path = str(cfg_path) if cfg_path else None
        model = _model_config(user)
        datasets, self.dataset_settings = _datasets_config(user)
        run, self.run_settings, self.task_settings = _run_config(user)
        self.config = OmegaConf.create({"model": model, "datasets": datasets, "run": run})

    @classmethod
    def from_dict(cls, data: dict, options: Optional[Iterable[str]] = None) -> "Config":
        return cls(None, options, user_config=OmegaConf.create(data))

    @property
    def run_cfg(self) -> DictConfig:
        return self.config.run

    @property
    def model_cfg(self) -> DictConfig:
        return self.config.model

    @property
    def datasets_cfg(self) -> DictConfig:
        return self.config.datasets

    def task_class(self) -> Any:
        return registry.get_task_class(str(self.run_cfg.get("task", DEFAULT_TASK)))

    def runner_class(self) -> Any:
        return registry.get_runner_class(str(self.run_cfg.get("runner", DEFAULT_RUNNER)))

    def to_yaml(self) -> str:
        return OmegaConf.to_yaml(self.config)

    def pretty_print(self) -> None:
        print(self.to_yaml())
