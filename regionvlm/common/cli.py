"""The one shape of every command line: ``run(main)``.

- logging is configured (INFO on rank 0, WARNING on other ranks under torchrun), so the
  weight-loading report and other ``logging`` output is visible;
- a :class:`~regionvlm.common.errors.RegionVLMError` (a user mistake or an environment
  problem) prints as one line ``error: ...`` on stderr and exits with code 2;
- Ctrl-C exits with code 130 and a one-line note;
- anything else is a bug and keeps its traceback.

Entry points keep a ``main(argv) -> result`` that raises normally (tests call it directly)
and end with ``if __name__ == "__main__": run(main)``.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Callable, Optional, Sequence

from regionvlm.common.errors import RegionVLMError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def rank() -> int:
    """This process's rank under torchrun (0 without a launcher)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def configure_logging(level: Optional[int] = None) -> None:
    """INFO on rank 0 and WARNING elsewhere (``REGIONVLM_LOG_LEVEL`` overrides), to stderr."""
    if level is None:
        name = os.environ.get("REGIONVLM_LOG_LEVEL", "INFO" if rank() == 0 else "WARNING").upper()
        level = getattr(logging, name, logging.INFO)
    logging.basicConfig(level=level, format=LOG_FORMAT, datefmt="%H:%M:%S", stream=sys.stderr)
    logging.getLogger("regionvlm").setLevel(level)


def echo(*args: Any) -> None:
    """``print`` on rank 0 only (progress lines and summaries are not repeated per GPU)."""
    if rank() == 0:
        print(*args, flush=True)


def report_error(exc: BaseException) -> None:
    """The one-line message of a user-facing error (prefixed with the rank under torchrun)."""
    where = f"[rank {rank()}] " if "WORLD_SIZE" in os.environ and os.environ.get("WORLD_SIZE") != "1" else ""
    print(f"{where}error: {exc}", file=sys.stderr)


def run(main: Callable[[Optional[Sequence[str]]], Any], argv: Optional[Sequence[str]] = None) -> Any:
    """Run an entry point's ``main`` with the project's logging and error handling."""
    configure_logging()
    try:
        return main(argv)
    except RegionVLMError as exc:
        report_error(exc)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
