"""The one builder base, in LAVIS's manner: a builder is registered by name, reads its
``datasets: <name>:`` section and returns ``{split: dataset}`` from ``build_datasets()``.

- A builder declares the keys its section accepts as a typed settings class (a frozen
  dataclass, :class:`DatasetSettings`), like every other section of the config; builders
  with LAVIS ``type:`` variants (VQA) give one class per type in ``TYPES``. The config parses
  each section once (:meth:`BaseDatasetBuilder.parse`): unknown keys, wrong types and bad
  values stop before any work, naming the key. Mapping-valued keys (the processors,
  ``build_info``) merge the user's entries over the defaults.
- What comes from the model and the run is passed in explicitly: ``image_size`` (a
  processor whose ``image_size`` is null takes the model's; one that differs is refused),
  ``num_points`` (the model's K, for builders that draw region points) and ``seed``.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Tuple, Type

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from regionvlm.common.errors import ConfigError
from regionvlm.common.settings import Settings, setting, to_plain

EVAL_VIS = {"eval": {"name": "blip_image_eval", "image_size": None}}
EVAL_TEXT = {"eval": {"name": "blip_caption"}}
TRAIN_VIS = {"train": {"name": "region_image_train", "image_size": None}}
TRAIN_TEXT = {"train": {"name": "blip_caption", "max_words": 50}}
DEFAULT_SEED = 42


@dataclass(frozen=True)
class DatasetSettings(Settings):
    """Keys every ``datasets: <name>:`` section accepts (subclasses add theirs)."""

    type: str = setting("default", help="LAVIS's variant of a dataset entry")
    vis_processor: Dict[str, Any] = setting(EVAL_VIS, help="{split: {name: ..., ...}}; image_size null: the model's")
    text_processor: Dict[str, Any] = setting(EVAL_TEXT, help="{split: {name: ..., ...}}")

    # Mapping-valued keys whose entries the user's section replaces instead of merging into.
    REPLACED_ENTRIES: ClassVar[Tuple[str, ...]] = ()

    @classmethod
    def parse(cls, values: Optional[Mapping[str, Any]], section: str = "datasets", also_known=()) -> Any:
        """Mapping-valued keys merge the user's entries over the defaults (a processor section
        giving only ``image_size`` keeps its ``name``), then every key is checked."""
        user = to_plain(values) or {}
        if not isinstance(user, Mapping):
            raise ConfigError(f"`{section}` must be a mapping of settings, got {user!r}.")
        defaults = cls()
        merged = dict(user)
        for f in fields(cls):
            default = getattr(defaults, f.name)
            if isinstance(default, dict):
                given = user.get(f.name)
                merged[f.name] = (
                    _merge(default, given, f.name, cls.REPLACED_ENTRIES)
                    if isinstance(given, Mapping)
                    else (default if given is None else given)
                )
        try:  # ${oc.env:...} in defaults and user values, resolved now (not at import)
            merged = OmegaConf.to_container(OmegaConf.create(merged), resolve=True)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"cannot resolve `{section}`: {exc}") from None
        return super().parse(merged, section, also_known)


def _merge(default: Mapping[str, Any], user: Mapping[str, Any], path: str, replaced: Tuple[str, ...]) -> Dict[str, Any]:
    out = copy.deepcopy(dict(default))
    for key, value in user.items():
        where = f"{path}.{key}"
        if where not in replaced and isinstance(out.get(key), Mapping) and isinstance(value, Mapping):
            out[key] = _merge(out[key], value, where, replaced)
        else:
            out[key] = copy.deepcopy(to_plain(value))
    return out


class BaseDatasetBuilder(ABC):
    NAME = ""
    Settings: Type[DatasetSettings] = DatasetSettings
    TYPES: Optional[Dict[str, Type[DatasetSettings]]] = None  # type name -> settings class (LAVIS ``type:``)

    def __init__(
        self,
        cfg: Optional[Any] = None,
        *,
        image_size: Optional[int] = None,
        seed: Optional[int] = None,
        num_points: Optional[int] = None,
    ) -> None:
        self.settings = cfg if isinstance(cfg, DatasetSettings) else self.parse(cfg)
        self.type = self.settings.type
        self.image_size = None if image_size is None else int(image_size)
        self.run_seed = DEFAULT_SEED if seed is None else int(seed)
        self.num_points = None if num_points is None else int(num_points)

    # -- schema ---------------------------------------------------------------------
    @classmethod
    def settings_class(cls, type: str = "default") -> Type[DatasetSettings]:
        if cls.TYPES is None:
            return cls.Settings
        if type not in cls.TYPES:
            raise ConfigError(f"`datasets.{cls.NAME}.type` '{type}' is unknown; available: {sorted(cls.TYPES)}.")
        return cls.TYPES[type]

    @classmethod
    def parse(cls, cfg: Any) -> DatasetSettings:
        """The section as this builder's typed settings (every key checked)."""
        user = to_plain(cfg) or {}
        kind = str(user.get("type") or "default") if isinstance(user, Mapping) else "default"
        return cls.settings_class(kind).parse(user, f"datasets.{cls.NAME}")

    @classmethod
    def default_config_path(cls, type: str = "default") -> None:
        """No preset YAML: the defaults are the settings class's."""
        return None

    # -- helpers --------------------------------------------------------------------
    def setting(self, *keys: str) -> str:
        return ".".join(("datasets", self.NAME) + keys)

    def required(self, what: Mapping[str, str]) -> Dict[str, str]:
        """The path settings ``what`` names (key -> what it must point to), each one set."""
        values = {key: getattr(self.settings, key) for key in what}
        for key, value in values.items():
            if not value:
                raise ConfigError(f"`{self.setting(key)}` is not set; it must point to {what[key]}.")
        return values

    def splits(self) -> List[str]:
        """The section's ``split``: one name or a list of names."""
        split = self.settings.split
        splits = [split] if isinstance(split, str) else list(split)
        if not splits:
            raise ConfigError(f"`{self.setting('split')}` must be a split name or a list, got {split!r}.")
        return splits

    def fill_from_world(self, **relative: str) -> None:
        """A synthetic world's builder: ``world: DIR`` sets every unset key of ``relative``
        to ``DIR/<its relative path>``."""
        world = getattr(self.settings, "world", None)
        if world:
            base = Path(world).expanduser()
            filled = {k: str(base / v) for k, v in relative.items() if not getattr(self.settings, k)}
            self.settings = self.settings.replace(**filled)

    def seed(self) -> int:
        """The section's ``seed`` if it has one and it is set, else the run's."""
        seed = getattr(self.settings, "seed", None)
        return self.run_seed if seed is None else int(seed)

    def points(self) -> int:
        """Region points per sample: the section's ``num_points`` if set, else the model's K
        (given by the task; a builder made by hand gets the model class's default)."""
        own = getattr(self.settings, "num_points", None)
        if own is not None:
            return int(own)
        if self.num_points is None:
            from regionvlm.models import model_setting

            return int(model_setting({"arch": "regionvlm_t5"}, "num_points"))
        return self.num_points

    def build_processors(self, split: str) -> Tuple[Any, Any]:
        """``(vis_processor, text_processor)`` of ``split`` ("train"/"eval") from the section."""
        from regionvlm.processors import load_processor

        out = []
        for key in ("vis_processor", "text_processor"):
            spec = getattr(self.settings, key).get(split)
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
