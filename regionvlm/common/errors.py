"""Error types whose messages are meant for the user, not for a debugger.

Anything raised with a :class:`RegionVLMError` type is a user mistake or an environment
problem (a bad setting, a missing or malformed file, a full disk): the command lines print
its message as one line and exit with code 2. Every other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional


class RegionVLMError(Exception):
    """Base class: anything raised with this type carries a message that says what to do."""


class ConfigError(RegionVLMError, ValueError):
    """A configuration value or command-line option is wrong."""


class InputError(RegionVLMError, ValueError):
    """A user-supplied input (region, image, text, annotation file) is malformed."""


class MissingFileError(RegionVLMError, FileNotFoundError):
    """A required local file is absent; the message names it, its source and the setting."""


class CheckpointError(RegionVLMError, RuntimeError):
    """A checkpoint does not match the model (unknown keys, wrong shapes, missing groups)."""


class TrainingError(RegionVLMError, RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the last checkpoint is kept."""


class OutputError(RegionVLMError, OSError):
    """An output cannot be written (read-only folder, permission, full disk)."""


def require_file(path: Optional[str], what: str, setting: str, published: str = "") -> Path:
    """Return ``path`` as a Path if it exists, else raise a MissingFileError that helps.

    An empty string counts as "not configured" (never as the current directory)."""
    where = f" It is published at {published}." if published else ""
    if path is None or not str(path).strip():
        raise MissingFileError(f"{what}: no path configured. Set `{setting}` to the local file.{where}")
    p = Path(str(path)).expanduser()
    if not p.exists():
        raise MissingFileError(f"{what} not found at '{p}'. Put the file there or point `{setting}` to it.{where}")
    return p
