"""YAML configuration in LAVIS's schema: ``model:``, ``datasets:``, ``run:`` sections.

A run file names a model (``arch`` + ``model_type``) and datasets; each is merged on top of
the preset YAML its registered class declares, and ``--options key=value`` overrides come
last. The resolved config is what gets saved next to a run's logs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from regionvlm.common.errors import ConfigError, MissingFileError
from regionvlm.common.registry import registry

SECTIONS = ("model", "datasets", "run")


def load_yaml(path: str | Path) -> DictConfig:
    """Load one YAML file with errors that name the file."""
    p = Path(path).expanduser()
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


def _model_config(user: DictConfig) -> DictConfig:
    model = user.get("model")
    if model is None:
        raise ConfigError("the config has no `model:` section (it needs at least `arch`).")
    arch = model.get("arch")
    if arch is None:
        raise ConfigError("`model.arch` is missing (e.g. `arch: regionvlm_t5`).")
    model_cls = registry.get_class_or_raise("model", arch)
    model_type = model.get("model_type", None) or getattr(model_cls, "DEFAULT_MODEL_TYPE", None)
    base = OmegaConf.create()
    if model_type is not None:
        base = OmegaConf.load(model_cls.default_config_path(model_type)).get("model", OmegaConf.create())
    return OmegaConf.create({"model": OmegaConf.merge(base, model)})


def _datasets_config(user: DictConfig) -> DictConfig:
    datasets = user.get("datasets") or OmegaConf.create()
    merged = OmegaConf.create()
    for name, ds_cfg in datasets.items():
        builder_cls = registry.get_class_or_raise("builder", name)
        ds_cfg = ds_cfg or OmegaConf.create()
        base_path = builder_cls.default_config_path(ds_cfg.get("type", "default"))
        base = OmegaConf.load(base_path).datasets[name] if base_path else OmegaConf.create()
        merged[name] = OmegaConf.merge(base, ds_cfg)
    return OmegaConf.create({"datasets": merged})


class Config:
    """The resolved configuration of one run (``config.run_cfg`` etc. as in LAVIS)."""

    def __init__(self, cfg_path: str | Path, options: Optional[Iterable[str]] = None,
                 user_config: Optional[DictConfig] = None) -> None:
        import regionvlm.registration  # noqa: F401  (fills the registry)

        user = user_config if user_config is not None else load_yaml(cfg_path)
        user = OmegaConf.merge(user, parse_options(list(options or [])))
        unknown = [k for k in user.keys() if k not in SECTIONS]
        if unknown:
            raise ConfigError(f"unknown top-level section(s) {unknown}; allowed: {list(SECTIONS)}.")
        self.cfg_path = str(cfg_path) if cfg_path else None
        self.config = OmegaConf.merge(
            OmegaConf.create({"run": user.get("run") or {}}),
            _model_config(user),
            _datasets_config(user),
        )
        registry.register("configuration", self)

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

    def to_yaml(self) -> str:
        return OmegaConf.to_yaml(self.config)

    def pretty_print(self) -> None:
        print(self.to_yaml())
