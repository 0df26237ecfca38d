"""Distributed helpers that also work in a single process (CPU or one GPU, no launcher)."""

from __future__ import annotations

import os
from typing import Any, List

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def init_distributed_mode() -> bool:
    """Join the process group when started by torchrun (``RANK``/``WORLD_SIZE`` set).

    NCCL on GPUs, gloo on CPU. Returns True when running distributed."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) < 2:
        return False
    if is_dist():
        return True
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend)
    return True


def local_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_gather_objects(obj: Any) -> List[Any]:
    """Every rank's ``obj`` in rank order (a one-element list without distribution)."""
    if not is_dist():
        return [obj]
    out: List[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def resolve_device(wanted: str = "auto") -> torch.device:
    """``run.device`` as a device: ``auto`` (this rank's GPU if any, else the CPU), ``cpu``,
    ``cuda`` (this rank's GPU), ``cuda:N``; what cannot run here is a configuration error.
    Decided once per run, before any weight is read."""
    from regionvlm.common.errors import ConfigError

    if wanted == "auto":
        return local_device()
    if wanted.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"the device is '{wanted}' but no GPU is visible; use cpu or auto.")
    if wanted == "cuda":
        return local_device()
    try:
        device = torch.device(wanted)
    except RuntimeError:
        raise ConfigError(f"'{wanted}' is not a device (use auto, cpu, cuda or cuda:N).") from None
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device '{wanted}': only {torch.cuda.device_count()} GPU(s) are visible.")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device '{wanted}' is not supported (use auto, cpu, cuda or cuda:N).")
    return device
