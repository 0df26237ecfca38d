"""Validation during training, as LAVIS's ``valid_splits``: the runner calls the task's own
evaluation on the held-out splits and keeps the best checkpoint by one metric.

``run:`` keys (read by the runner)::

    valid_splits: [val]          # splits of the configured datasets evaluated during training
    valid_every_steps: 0         # also every N optimizer updates (0: at the end of each epoch only)
    best_metric: agg_metrics     # the metric that picks checkpoint_best: a name (CIDEr) or a full key
                                 # (region_captions_val/CIDEr); a name averages over the valid splits
    best_mode: max               # max (CIDEr, accuracy) or min (a loss)

Each validation evaluates the splits with the task's ``evaluate`` (its settings, e.g. the
region-captioning decoding, with ``test_splits`` set to ``valid_splits``), writes the task's
result files to ``<output_dir>/valid/step_<N>/``, appends one line to ``valid.jsonl`` and a
scalar to tensorboard, and, when the metric improves, writes ``checkpoint_best`` (the same
training state as ``checkpoint_latest``, so a run can resume from it) and ``best.json``.
Validation draws no random number the training uses (the global RNG states are restored after
it) and the best value so far is part of every checkpoint: a killed and resumed run validates
at the same steps and picks the same best checkpoint as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from regionvlm.common import dist_utils
from regionvlm.common.cli import echo
from regionvlm.common.errors import ConfigError
from regionvlm.common.io import JsonlAppender, atomic_write_json, read_jsonl, write_jsonl

VALID_LOG = "valid.jsonl"
BEST_FILE = "best.json"


class Validator:
    """Evaluates ``valid_splits`` on demand and tracks the best value of ``best_metric``."""

    def __init__(self, task: Any, datasets: Dict[str, Dict[str, Any]], settings: Any, output_dir: Path) -> None:
        self.task = task
        self.splits: List[str] = list(settings.valid_splits)
        self.every = int(settings.valid_every_steps)
        self.metric = settings.best_metric
        self.mode = settings.best_mode
        self.output_dir = Path(output_dir)
        self.datasets = {
            name: {split: ds for split, ds in by_split.items() if split in self.splits}
            for name, by_split in datasets.items()
        }
        self.datasets = {name: splits for name, splits in self.datasets.items() if splits}
        self.best: Optional[Dict[str, Any]] = None
        self.last_step: Optional[int] = None
        if not self.splits:
            if self.every:
                raise ConfigError("run.valid_every_steps needs run.valid_splits (the splits to validate on).")
            return
        if not self.datasets:
            have = {n: sorted(s) for n, s in datasets.items()}
            raise ConfigError(f"run.valid_splits={self.splits} but the datasets have the splits {have}.")
        task_settings = getattr(task, "settings", None)
        if task_settings is None or not hasattr(task_settings, "test_splits"):
            raise ConfigError(
                f"run.valid_splits is set but the task '{type(task).__name__}' has no evaluation to validate with."
            )
        self.task_settings = dataclasses.replace(task_settings, test_splits=list(self.splits))

    @property
    def enabled(self) -> bool:
        return bool(self.splits)

    def due(self, step: int, epoch_end: bool) -> bool:
        """Whether to validate now: every ``valid_every_steps`` updates and at each epoch end
        (once per step)."""
        if not self.enabled or step == self.last_step:
            return False
        return epoch_end or (self.every > 0 and step > 0 and step % self.every == 0)

    # ------------------------------------------------------------------ state
    def state(self) -> Dict[str, Any]:
        return {"best": self.best, "last_step": self.last_step}

    def load_state(self, state: Optional[Dict[str, Any]], step: int) -> None:
        """The best value so far from a checkpoint; ``valid.jsonl`` rows after ``step`` (the
        resumed run validates there again) are dropped."""
        if state:
            self.best = state.get("best")
            self.last_step = state.get("last_step")
        path = self.output_dir / VALID_LOG
        if dist_utils.is_main_process() and path.is_file():
            write_jsonl(path, [r for r in read_jsonl(path) if r.get("step", -1) <= step])

    # ----------------------------------------------------------------- running
    def value(self, metrics: Dict[str, Any]) -> float:
        """``best_metric`` of an evaluation: the key itself, or the mean of ``<split>/<name>``."""
        if self.metric in metrics:
            found = [metrics[self.metric]]
        else:
            found = [v for k, v in metrics.items() if k.endswith(f"/{self.metric}")]
        numbers = [float(v) for v in found if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if not numbers or any(not math.isfinite(v) for v in numbers):
            names = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
            raise ConfigError(
                f"run.best_metric '{self.metric}' is not a number of the validation's metrics; choose one of {names} "
                "(or a name after the '/', e.g. CIDEr)."
            )
        return sum(numbers) / len(numbers)

    def run(self, model: Any, epoch: int, step: int, writer: Any, save_best: Callable[[], None]) -> Dict[str, Any]:
        """Evaluate the splits (every rank), log, and call ``save_best`` on the main process
        when the metric improved; returns the metrics. (The caller keeps the RNG states.)"""
        start = time.time()
        metrics = self.task.evaluate(
            model, self.datasets, self.task_settings, self.output_dir / "valid" / f"step_{step}"
        )
        value = self.value(metrics)
        better = self.best is None or (value > self.best["value"] if self.mode == "max" else value < self.best["value"])
        self.last_step = step
        if better:
            self.best = {"metric": self.metric, "value": value, "epoch": epoch, "step": step}
        if dist_utils.is_main_process():
            row = {
                "epoch": epoch,
                "step": step,
                "best_metric": self.metric,
                "value": value,
                "is_best": better,
                "seconds": round(time.time() - start, 1),
                "metrics": metrics,
            }
            with JsonlAppender(self.output_dir / VALID_LOG) as log:
                log.write(row)
            writer.add_scalar(f"valid/{self.metric}", value, step)
            if better:
                save_best()
                atomic_write_json(self.output_dir / BEST_FILE, self.best)
            shown = f"{self.metric} {value:.4g}" + (" (best so far: checkpoint_best)" if better else "")
            echo(f"[valid] epoch {epoch}, step {step}: {shown}")
        dist_utils.barrier()
        return metrics
