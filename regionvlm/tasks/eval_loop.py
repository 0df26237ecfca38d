"""The evaluation loop every task shares: sharded over ranks, resumable, seeded per item.

Each finished item is appended to ``<out_dir>/<name>.partial.rank<r>.jsonl`` and flushed;
a killed run started again skips what any rank already finished (the logs live on the
run's output folder). Randomness comes from :func:`item_rng`, keyed by the run seed and
the item's key, so results do not depend on sharding, batch order or resumption.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, TypeVar

import numpy as np
from tqdm import tqdm

from regionvlm.common import dist_utils
from regionvlm.common.io import JsonlAppender, read_jsonl

T = TypeVar("T")


def item_rng(seed: int, key: str) -> np.random.Generator:
    """A generator that depends only on (seed, key): stable across processes and runs."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def finished_items(out_dir: Path, name: str) -> Dict[str, Any]:
    """Results already logged by any rank of an earlier (possibly killed) run."""
    done: Dict[str, Any] = {}
    for log in sorted(Path(out_dir).glob(f"{name}.partial.rank*.jsonl")):
        for row in read_jsonl(log):
            done[row["key"]] = row["result"]
    return done


def run_resumable(items: Sequence[T], key: Callable[[T], str], process: Callable[[T], Any],
                  out_dir: str | Path, name: str, desc: str = "eval") -> List[Any]:
    """Process ``items`` (each rank a strided shard), logging each result as it finishes;
    return every item's result in ``items`` order, on every rank."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = [key(item) for item in items]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{name}: item keys must be unique.")
    rank, world = dist_utils.get_rank(), dist_utils.get_world_size()
    done = finished_items(out_dir, name)
    mine = {k: done[k] for k in keys[rank::world] if k in done}
    todo = [(k, item) for k, item in list(zip(keys, items))[rank::world] if k not in done]
    if done and dist_utils.is_main_process():
        print(f"[{name}] resuming: {len(done)} of {len(items)} items already done")
    with JsonlAppender(out_dir / f"{name}.partial.rank{rank}.jsonl") as log:
        for k, item in tqdm(todo, desc=desc, disable=not dist_utils.is_main_process(), dynamic_ncols=True):
            result = process(item)
            log.write({"key": k, "result": result})
            mine[k] = result
    merged: Dict[str, Any] = {}
    for part in dist_utils.all_gather_objects(mine):
        merged.update(part)
    return [merged[k] for k in keys]


def clear_partials(out_dir: str | Path, name: str) -> None:
    """Remove progress logs once the final results file is written (main process only)."""
    dist_utils.barrier()
    if dist_utils.is_main_process():
        for log in Path(out_dir).glob(f"{name}.partial.rank*.jsonl"):
            log.unlink()
