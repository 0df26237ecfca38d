"""Typed configuration sections: the one way every ``run:``/``datasets:``/``model:`` key is read.

A section is declared as a frozen dataclass whose fields are the keys it accepts (with their
types, defaults and allowed ranges in the field metadata). :meth:`Settings.parse` turns a
mapping from YAML or ``--options`` into an instance, before any work starts:

- an unknown key stops with the list of known ones (and the closest match: a misspelt
  ``run.thresold`` is never silently ignored);
- every value is coerced to its field's type or refused with the key, the value and what is
  allowed (YAML reads ``5e-6`` as a string: numeric strings are accepted for numbers);
- ``choices``/``min``/``max`` in the field metadata are checked; :meth:`Settings.validate`
  adds checks that involve several fields.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import math
import typing
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Type, TypeVar

from regionvlm.common.errors import ConfigError

S = TypeVar("S", bound="Settings")
_MISSING = dataclasses.MISSING


def setting(
    default: Any = _MISSING,
    *,
    choices: Optional[Sequence[Any]] = None,
    min: Optional[float] = None,
    max: Optional[float] = None,
    help: str = "",
) -> Any:
    """A dataclass field with the checks :meth:`Settings.parse` applies."""
    metadata = {"choices": tuple(choices) if choices is not None else None, "min": min, "max": max, "help": help}
    if isinstance(default, (dict, list)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def to_plain(values: Any) -> Any:
    """OmegaConf containers -> plain Python (interpolations resolved); other values as they are."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return values
    if isinstance(values, (DictConfig, ListConfig)):
        return OmegaConf.to_container(values, resolve=True)
    return values


def unknown_keys_error(unknown: Iterable[str], known: Iterable[str], section: str) -> ConfigError:
    """The message for keys nobody reads: each with its closest known key, then the full list."""
    known = sorted(set(known))
    parts = []
    for key in sorted(unknown):
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
        parts.append(f"`{section}.{key}`" + (f" (did you mean `{close[0]}`?)" if close else ""))
    return ConfigError(f"unknown setting(s) {', '.join(parts)}; `{section}` accepts: {', '.join(known)}.")


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """``value`` converted to ``annotation`` (int, float, bool, str, Optional, List, Tuple,
    Dict, Any) or a ConfigError naming ``key``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin is typing.Union:
        options = [a for a in args if a is not type(None)]
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"`{key}` must be set (got null).")
        errors = []
        for option in options:
            try:
                return coerce(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(
            errors[0]
            if len(errors) == 1
            else f"`{key}`: {_describe(value)} matches none of {[getattr(o, '__name__', str(o)) for o in options]}."
        )
    if value is None:
        raise ConfigError(f"`{key}` must be set (got null).")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise ConfigError(f"`{key}` must be true or false, got {_describe(value)}.")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"`{key}` must be an integer, got {_describe(value)}.")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip(), 10)
            except ValueError:
                try:
                    as_float = float(value)
                except ValueError:
                    as_float = math.nan
                if math.isfinite(as_float) and as_float.is_integer():
                    return int(as_float)
        raise ConfigError(f"`{key}` must be an integer, got {_describe(value)}.")
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"`{key}` must be a number, got {_describe(value)}.")
        if isinstance(value, (int, float)):
            result = float(value)
        elif isinstance(value, str):
            try:
                result = float(value)
            except ValueError:
                raise ConfigError(f"`{key}` must be a number, got {_describe(value)}.") from None
        else:
            raise ConfigError(f"`{key}` must be a number, got {_describe(value)}.")
        if not math.isfinite(result):
            raise ConfigError(f"`{key}` must be a finite number, got {value!r}.")
        return result
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. --options run.output_dir=2024 arrives as an int
        raise ConfigError(f"`{key}` must be a string, got {_describe(value)}.")
    if origin in (list, tuple, collections.abc.Sequence):
        if isinstance(value, str) and origin in (list, collections.abc.Sequence):
            value = [value]  # `test_splits: test` means [test]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"`{key}` must be a list, got {_describe(value)}.")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"`{key}` must have {len(args)} entries, got {list(value)!r}.")
            return tuple(coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"`{key}` must be a mapping, got {_describe(value)}.")
        key_type, value_type = args if args else (Any, Any)
        return {coerce(k, key_type, f"{key} key"): coerce(v, value_type, f"{key}.{k}") for k, v in value.items()}
    if isinstance(annotation, type):
        if isinstance(value, annotation):
            return value
        raise ConfigError(f"`{key}` must be a {annotation.__name__}, got {_describe(value)}.")
    raise TypeError(f"unsupported settings annotation {annotation!r} for {key}")  # a bug in a Settings class


@dataclasses.dataclass(frozen=True)
class Settings:
    """Base of every typed section; subclasses are frozen dataclasses of their keys."""

    @classmethod
    def keys(cls) -> Tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def parse(
        cls: Type[S], values: Optional[Mapping[str, Any]], section: str = "run", also_known: Iterable[str] = ()
    ) -> S:
        """Read ``values`` (a ``run:`` section, say). Keys in ``also_known`` belong to another
        reader of the same section (the runner and the task share ``run:``) and are skipped."""
        values = to_plain(values) or {}
        if not isinstance(values, Mapping):
            raise ConfigError(f"`{section}` must be a mapping of settings, got {_describe(values)}.")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        also_known = set(also_known)
        unknown = [k for k in values if k not in fields and k not in also_known]
        if unknown:
            raise unknown_keys_error(unknown, set(fields) | also_known, section)
        hints = typing.get_type_hints(cls)
        parsed: Dict[str, Any] = {}
        for name, value in values.items():
            if name not in fields:
                continue
            key = f"{section}.{name}"
            result = coerce(value, hints[name], key)
            meta = fields[name].metadata
            if result is not None:
                check_range(result, meta, key)
            parsed[name] = result
        instance = cls(**parsed)
        instance.validate(section)
        return instance

    def validate(self, section: str) -> None:
        """Checks across fields (override); single-field ranges live in the field metadata."""

    def as_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self: S, **changes: Any) -> S:
        return dataclasses.replace(self, **changes)


def check_range(value: Any, meta: Mapping[str, Any], key: str) -> None:
    """``choices``/``min``/``max`` of ``meta`` (a field's metadata, or a model's ``RANGES`` entry)."""
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"`{key}` must be one of {list(choices)}, got {value!r}.")
    low, high = meta.get("min"), meta.get("max")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if low is not None and value < low:
            raise ConfigError(f"`{key}` must be >= {low}, got {value!r}.")
        if high is not None and value > high:
            raise ConfigError(f"`{key}` must be <= {high}, got {value!r}.")


def check_keys(values: Optional[Mapping[str, Any]], known: Iterable[str], section: str) -> None:
    """Reject keys of a free-form section (e.g. a builder's) that nobody reads."""
    values = to_plain(values) or {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"`{section}` must be a mapping, got {_describe(values)}.")
    known = set(known)
    unknown = [k for k in values if k not in known]
    if unknown:
        raise unknown_keys_error(unknown, known, section)
