"""``benchmarks/make_fullsize_weights.py`` as a module for the weight tests: it writes the
released files (real or smoke size) and knows their names (``RELEASE_FILES``,
``release_paths``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "make_fullsize_weights.py"


def _load():
    if "make_fullsize_weights" in sys.modules:
        return sys.modules["make_fullsize_weights"]
    spec = importlib.util.spec_from_file_location("make_fullsize_weights", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


gen = _load()
