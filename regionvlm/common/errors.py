"""Error types whose messages are meant for the user, not for a debugger."""
from __future__ import annotations

from pathlib import Path
from typing import Optional


class RegionVLMError(Exception):
    """Base class: anything raised with this type carries a message that says what to do."""


class ConfigError(RegionVLMError, ValueError):
    """A configuration value or command-line option is wrong."""


class InputError(RegionVLMError, ValueError):
    """A user-supplied input (region, image, text) is malformed."""


class MissingFileError(RegionVLMError, FileNotFoundError):
    """A required local file is absent; the message names it, its source and the setting."""


class CheckpointError(RegionVLMError, RuntimeError):
    """A checkpoint does not match the model (unknown keys, wrong shapes, missing groups)."""


def require_file(path: Optional[str], what: str, setting: str, published: str = "") -> Path:
    """Return ``path`` as a Path if it exists, else raise a MissingFileError that helps."""
    where = f" It is published at {published}." if published else ""
    if not path:
        raise MissingFileError(
            f"{what}: no path configured. Set `{setting}` to the local file.{where}"
        )
    p = Path(str(path)).expanduser()
    if not p.exists():
        raise MissingFileError(
            f"{what} not found at '{p}'. Put the file there or point `{setting}` to it.{where}"
        )
    return p
