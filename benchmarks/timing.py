"""What every benchmark script times with: the device drained before and after, so a GPU
measurement counts the work and not just its launch."""

from __future__ import annotations

import time
from typing import Any, Callable, Tuple

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (nothing to wait for on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[..., Any], *args: Any) -> Tuple[Any, float, float]:
    """``(result, wall seconds, process CPU seconds)`` of ``fn(*args)``."""
    sync(device)
    t, c = time.perf_counter(), time.process_time()
    out = fn(*args)
    sync(device)
    return out, time.perf_counter() - t, time.process_time() - c
