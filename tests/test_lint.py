"""The tree passes the project's ruff configuration (lint and format), as CI checks it.

ruff is run by the interpreter running the tests (``python -m ruff``), so the result is the
same whether or not its virtual environment is activated (``ruff`` need not be on PATH)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"])
def test_ruff(command):
    assert importlib.util.find_spec("ruff"), f"ruff is a test dependency of {sys.executable} (pip install -e '.[test]')"
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", *command], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
