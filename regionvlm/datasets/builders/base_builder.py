"""The one builder base, in LAVIS's manner: a builder is registered by name, reads its
``datasets: <name>:`` section and returns ``{split: dataset}`` from ``build_datasets()``.

- ``DEFAULTS`` lists every key the section accepts with its default (processors included);
  builders with LAVIS ``type:`` variants (VQA) give one defaults mapping per type in
  ``TYPES``. Unknown keys and values of the wrong kind stop at config time
  (:meth:`BaseDatasetBuilder.check_config`), naming the key and what is allowed.
- The model's image size and the run's seed are passed explicitly (``image_size=``,
  ``seed=``), never looked up from a global: a processor whose ``image_size`` is null takes
  the model's, and one that differs from the model's is refused.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import Any, Dict, Mapping, Optional, Tuple

from omegaconf import DictConfig, OmegaConf

from regionvlm.common.errors import ConfigError
from regionvlm.common.settings import check_keys, to_plain

EVAL_PROCESSORS = {
    "vis_processor": {"eval": {"name": "blip_image_eval", "image_size": None}},
    "text_processor": {"eval": {"name": "blip_caption"}},
}
TRAIN_PROCESSORS = {
    "vis_processor": {"train": {"name": "region_image_train", "image_size": None}},
    "text_processor": {"train": {"name": "blip_caption", "max_words": 50}},
}


class BaseDatasetBuilder(ABC):
    NAME = ""
    DEFAULTS: Dict[str, Any] = {}
    TYPES: Optional[Dict[str, Dict[str, Any]]] = None  # type name -> defaults (LAVIS ``type:``)
    DEFAULT_SEED = 42

    def __init__(
        self, cfg: Optional[Mapping[str, Any]] = None, *, image_size: Optional[int] = None, seed: Optional[int] = None
    ) -> None:
        user = to_plain(cfg) or {}
        self.check_config(user)
        self.type = str(user.get("type") or "default")
        merged = OmegaConf.merge(OmegaConf.create(copy.deepcopy(self.defaults(self.type))), OmegaConf.create(user))
        self.config: DictConfig = self.merge_user_sections(merged, user)
        self.image_size = None if image_size is None else int(image_size)
        self.run_seed = self.DEFAULT_SEED if seed is None else int(seed)

    # -- schema ---------------------------------------------------------------------
    @classmethod
    def defaults(cls, type: str = "default") -> Dict[str, Any]:
        if cls.TYPES is None:
            return cls.DEFAULTS
        if type not in cls.TYPES:
            raise ConfigError(f"`datasets.{cls.NAME}.type` '{type}' is unknown; available: {sorted(cls.TYPES)}.")
        return cls.TYPES[type]

    @classmethod
    def default_config_path(cls, type: str = "default") -> None:
        """No preset YAML: the defaults are data in the class (``DEFAULTS``/``TYPES``)."""
        return None

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """Reject unknown keys and values whose kind differs from the default's."""
        user = to_plain(cfg) or {}
        section = f"datasets.{cls.NAME}"
        defaults = cls.defaults(str(user.get("type") or "default")) if isinstance(user, Mapping) else {}
        check_keys(user, set(defaults) | {"type"}, section)
        for key, value in user.items():
            if key in defaults:
                _check_kind(value, defaults[key], f"{section}.{key}")

    def merge_user_sections(self, merged: DictConfig, user: Mapping[str, Any]) -> DictConfig:
        """Hook: how user sections combine with defaults (default: a deep merge)."""
        return merged

    # -- helpers --------------------------------------------------------------------
    def setting(self, *keys: str) -> str:
        return ".".join(("datasets", self.NAME) + keys)

    def seed(self) -> int:
        """The section's ``seed`` if set, else the run's."""
        seed = self.config.get("seed", None)
        seed = self.run_seed if seed is None else int(seed)
        if seed < 0:
            raise ConfigError(f"`{self.setting('seed')}` must be non-negative, got {seed}.")
        return seed

    def build_processors(self, split: str) -> Tuple[Any, Any]:
        """``(vis_processor, text_processor)`` of ``split`` ("train"/"eval") from the section."""
        from regionvlm.processors import load_processor

        out = []
        for key in ("vis_processor", "text_processor"):
            spec = to_plain(OmegaConf.select(self.config, f"{key}.{split}", default=None))
            if not isinstance(spec, Mapping) or "name" not in spec:
                raise ConfigError(f"`{self.setting(key, split)}` must be {{name: ..., ...}}, got {spec!r}.")
            spec = dict(spec)
            if key == "vis_processor":
                spec["image_size"] = self.checked_image_size(spec.get("image_size"), self.setting(key, split))
            out.append(load_processor(spec))
        return out[0], out[1]

    def checked_image_size(self, size: Any, setting: str) -> int:
        """A processor's image size: null -> the model's; one that differs from the model's is refused."""
        if size is None:
            if self.image_size is None:
                raise ConfigError(f"`{setting}.image_size` is not set and no model image size was given.")
            return self.image_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"`{setting}.image_size` must be a positive integer, got {size!r}.")
        if self.image_size is not None and size != self.image_size:
            raise ConfigError(
                f"`{setting}.image_size` is {size} but the model takes {self.image_size}x"
                f"{self.image_size} images; set it to {self.image_size} or null."
            )
        return size

    @abstractmethod
    def build_datasets(self) -> Dict[str, Any]:
        """``{split: dataset}`` for this builder's section."""


def _check_kind(value: Any, default: Any, key: str) -> None:
    """A user value must be of the default's kind (null always allowed where the default is null)."""
    if value is None or default is None:
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
        kind = "true or false"
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
        kind = "an integer"
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok and isinstance(value, str):
            try:
                float(value)
                ok = True
            except ValueError:
                ok = False
        kind = "a number"
    elif isinstance(default, str):
        ok = isinstance(value, (str, list)) or (isinstance(value, (int, float)) and not isinstance(value, bool))
        kind = "a string"
    elif isinstance(default, Mapping):
        ok = isinstance(value, Mapping)
        kind = "a mapping"
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple, str))
        kind = "a list"
    else:
        ok, kind = True, ""
    if not ok:
        raise ConfigError(f"`{key}` must be {kind}, got {value!r} ({type(value).__name__}).")
