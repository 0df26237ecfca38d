"""The one runner: trains any task's model on its datasets, or only evaluates.

Single process on CPU or one GPU, or under ``torchrun`` (DDP; NCCL on GPUs, gloo on CPU).

Training follows the authors' LAVIS runner: the whole model in train mode (a frozen ViT
pinned to eval; Flan-T5's dropout active unless ``model.frozen_t5_dropout: false``), seed
``run.seed + rank``, the learning rate set before every iteration by the schedule
(``linear_warmup_cosine_lr`` = LAVIS's), gradient accumulation (with DDP's ``no_sync`` on
the iterations that do not step), and the model's precision policy: under ``official``
every step runs in fp16 autocast with a GradScaler.

Checkpoints hold only the trainable parameters plus optimizer, scaler, step, epoch and RNG
states, written atomically (``run.save_format``: ``pth`` or ``safetensors``).
``run.resume_ckpt_path`` (a path or ``latest``) continues a killed run so that it ends
bit-identical to an uninterrupted one: every random draw of the data comes from per-item
generators or from generators seeded per epoch (never from the global RNG, which only
dropout uses and which the checkpoint restores). Logs go to ``run.output_dir``:
``log.jsonl`` (loss and learning rate of every iteration), tensorboard scalars in ``tb/``,
the resolved ``config.yaml``, checkpoints and evaluation results.
"""

from __future__ import annotations

import contextlib
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, RandomSampler

from regionvlm.common import checkpoints, dist_utils, host_memory
from regionvlm.common.cli import echo
from regionvlm.common.errors import CheckpointError, ConfigError, MissingFileError, TrainingError
from regionvlm.common.io import JsonlAppender, atomic_write_json, atomic_write_text, ensure_dir, read_jsonl, write_jsonl
from regionvlm.common.optims import build_optimizer, build_schedule
from regionvlm.common.registry import registry
from regionvlm.common.settings import Settings, setting
from regionvlm.runners.validation import Validator

LATEST = "checkpoint_latest"
# Settings that fix the data order and the optimization path: a resume must keep them.
RESUME_INVARIANTS = (
    "batch_size_train",
    "accum_grad_iters",
    "max_epoch",
    "iters_per_epoch",
    "seed",
    "lr_sched",
    "init_lr",
    "min_lr",
    "warmup_lr",
    "warmup_steps",
    "weight_decay",
    "betas",
    "max_grad_norm",
    "world_size",
    "train_splits",
)
# What the run's plan is made of besides those settings: a resume that would change any of
# them would not continue the run it resumes (other steps per epoch, another schedule).
PLAN_KEYS = {
    "items_per_epoch": "items per epoch: the training data's length (datasets.<name>.epoch_length, or the size "
    "of its annotation files)",
    "samples_per_image": "datasets.<name>.samples_per_image",
    "steps_per_epoch": "iterations per epoch",
    "updates_per_epoch": "optimizer updates per epoch",
}
# Files a training run writes into run.output_dir (another run's must not be mixed in).
RUN_FILES = (
    "log.jsonl",
    "train_summary.json",
    "checkpoint_*.pth",
    "checkpoint_*.safetensors",
    "tb/events.out.tfevents.*",
)


@dataclass(frozen=True)
class RunnerSettings(Settings):
    """The ``run:`` keys the runner reads (the task reads its own; both check the section)."""

    task: str = setting("region_captioning", help="registered task")
    runner: str = setting("runner_base", help="registered runner")
    evaluate: bool = setting(False, help="only evaluate (no training)")
    output_dir: str = setting("output/run", help="logs, checkpoints and results")
    device: str = setting("auto", help="auto (the local GPU if any), cpu, cuda, cuda:N")
    seed: int = setting(42, min=0, help="training uses seed + rank (the authors' rule)")
    num_workers: int = setting(0, min=0, help="data-loading workers")
    # optimization
    batch_size_train: int = setting(8, min=1)
    max_epoch: int = setting(10, min=1)
    iters_per_epoch: Optional[int] = setting(None, min=1, help="iterations per epoch (default: one pass)")
    accum_grad_iters: int = setting(1, min=1)
    lr_sched: str = setting("linear_warmup_cosine_lr", help="registered schedule")
    init_lr: float = setting(1e-5, min=0.0)
    min_lr: float = setting(0.0, min=0.0)
    warmup_lr: Optional[float] = setting(None, min=0.0, help="null: no warm-up (LAVIS's -1)")
    warmup_steps: int = setting(0, min=0)
    weight_decay: float = setting(0.05, min=0.0)
    betas: Tuple[float, float] = setting((0.9, 0.999))
    max_grad_norm: Optional[float] = setting(None, min=0.0)
    train_splits: List[str] = setting(["train"])
    find_unused_parameters: bool = setting(False)
    # checkpoints
    save_every_steps: int = setting(0, min=0, help="0: only at epoch ends")
    keep_epoch_checkpoints: bool = setting(False)
    save_format: str = setting("pth", choices=checkpoints.FORMATS)
    resume_ckpt_path: Optional[str] = setting(None, help="a training checkpoint, or 'latest'")
    stop_after_steps: Optional[int] = setting(None, min=1, help="stop (with a checkpoint) after N updates")
    # validation during training (regionvlm/runners/validation.py)
    valid_splits: List[str] = setting([], help="splits evaluated during training (LAVIS's valid_splits)")
    valid_every_steps: int = setting(0, min=0, help="also validate every N updates (0: at epoch ends only)")
    best_metric: str = setting("agg_metrics", help="picks checkpoint_best: a metric name (CIDEr) or a full key")
    best_mode: str = setting("max", choices=("max", "min"), help="whether a larger or a smaller value is better")
    overwrite: bool = setting(False, help="a new run may replace another run's checkpoints and log in output_dir")
    retain_freed_host_memory: bool = setting(True, help="CPU: keep freed memory for reuse (faster steps)")

    def validate(self, section: str) -> None:
        if self.resume_ckpt_path is not None and not self.resume_ckpt_path.strip():
            raise ConfigError(f"`{section}.resume_ckpt_path` is empty; give a checkpoint path, 'latest', or null.")
        for i, beta in enumerate(self.betas):
            if not 0.0 <= beta < 1.0:
                raise ConfigError(f"`{section}.betas[{i}]` must be in [0, 1), got {beta}.")


# Python >= 3.12 warns when a process with threads forks (see worker_start_method).
_FORK_WARNING = r".*is multi-threaded, use of fork\(\) may lead to deadlocks"


def worker_start_method() -> str:
    """How data-loading workers start, chosen here rather than left to the Python version
    (3.14 changes Linux's default from fork to forkserver): ``fork`` wherever it exists.

    The training annotations are flat arrays so that forked workers share them copy-on-write
    (``regionvlm.datasets.region_annotations``); ``forkserver``/``spawn`` would pickle a copy
    into every worker of every epoch (gigabytes for the full mix). A fork is safe here although
    the process has threads (TensorBoard's writer, OpenMP): workers run only the dataset's
    code, PyTorch's worker loop sets one intra-op thread, and logging re-creates its locks
    after a fork; so Python's warning about forking a multi-threaded process is silenced for
    exactly this call. ``spawn`` where there is no fork (Windows)."""
    import multiprocessing

    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> Dict[str, Any]:
    """All global RNG states in plain types and tensors (``weights_only`` / safetensors loadable)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    py = state["python"]
    if isinstance(py, dict):
        random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    else:  # checkpoints written before the dict layout
        random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


@registry.register_runner("runner_base")
class RunnerBase:
    Settings = RunnerSettings

    def __init__(self, cfg: Any, task: Any, model: torch.nn.Module, datasets: Dict[str, Dict[str, Any]]):
        self.config = cfg
        self.run_cfg = cfg.run_cfg
        settings = getattr(cfg, "run_settings", None)
        if not isinstance(settings, RunnerSettings):
            settings = RunnerSettings.parse(self.run_cfg, "run", also_known=type(task).Settings.keys())
        self.settings = settings
        self.task = task
        self.datasets = datasets
        self.output_dir = Path(self.settings.output_dir)
        self.distributed = dist_utils.init_distributed_mode()
        self.device = dist_utils.resolve_device(self.settings.device)
        if self.device.type == "cpu" and self.settings.retain_freed_host_memory:
            host_memory.retain_freed_memory()  # CPU steps stop page-faulting their logits back in
        from regionvlm.models import place_model

        self.model = place_model(model, is_eval=self.settings.evaluate, device=self.device)
        self._ddp: Optional[torch.nn.Module] = None
        self.validation: Optional[Validator] = None
        self._plan: Dict[str, Any] = {}

    # ------------------------------------------------------------------ setup
    @property
    def train_model(self) -> torch.nn.Module:
        if self.distributed and self._ddp is None:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self._ddp = DistributedDataParallel(
                self.model, device_ids=ids, find_unused_parameters=self.settings.find_unused_parameters
            )
        return self._ddp if self.distributed else self.model

    def _train_dataset(self) -> Dataset:
        found: List[Dataset] = []
        for by_split in self.datasets.values():
            for split in self.settings.train_splits:
                if split in by_split:
                    found.append(by_split[split])
        if not found:
            raise ConfigError(f"no dataset has the train split(s) {self.settings.train_splits}; check `datasets:`.")
        if len(found) > 1:
            raise ConfigError("several training datasets: combine them with a mixing builder (regionvlm_mix).")
        return found[0]

    def _batches(self, dataset: Dataset, epoch: int, skip: int) -> Iterator[Dict[str, Any]]:
        """The epoch's batches in a seed-determined order, starting after ``skip`` batches."""
        s = self.settings
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        if self.distributed:
            sampler = DistributedSampler(dataset, shuffle=True, seed=s.seed, drop_last=True)
            sampler.set_epoch(epoch)
        else:
            sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(s.seed * 1000 + epoch))
        batches = list(BatchSampler(sampler, s.batch_size_train, drop_last=True))
        if s.iters_per_epoch is not None:
            while len(batches) < s.iters_per_epoch:  # small datasets: keep drawing, still seeded
                batches += batches[: s.iters_per_epoch - len(batches)]
            batches = batches[: s.iters_per_epoch]
        # The loader's own generator seeds its workers: creating it must not draw from the
        # global RNG, which dropout uses and a resumed run restores.
        loader_seed = torch.Generator().manual_seed(s.seed * 1000 + epoch + 7919 * dist_utils.get_rank())
        loader = DataLoader(
            dataset,
            batch_sampler=batches[skip:],
            num_workers=s.num_workers,
            collate_fn=getattr(dataset, "collater", None),
            pin_memory=self.device.type == "cuda",
            generator=loader_seed,
            multiprocessing_context=worker_start_method() if s.num_workers else None,
        )
        with warnings.catch_warnings():  # the workers start here (see worker_start_method)
            warnings.filterwarnings("ignore", message=_FORK_WARNING, category=DeprecationWarning)
            return iter(loader)

    def _epoch_length(self, dataset: Dataset) -> int:
        s = self.settings
        if s.iters_per_epoch is not None:
            return s.iters_per_epoch
        per_rank = len(dataset) // dist_utils.get_world_size()
        return per_rank // s.batch_size_train

    def _to_device(self, samples: Dict[str, Any]) -> Dict[str, Any]:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in samples.items()}

    # ------------------------------------------------------------- checkpoints
    def _checkpoint_path(self, name: str = LATEST) -> Path:
        return self.output_dir / f"{name}{checkpoints.suffix(self.settings.save_format)}"

    def _resume_path(self) -> Optional[Path]:
        path = self.settings.resume_ckpt_path
        if path is None:
            return None
        if path == "latest":
            for fmt in checkpoints.FORMATS:
                candidate = self.output_dir / f"{LATEST}{checkpoints.suffix(fmt)}"
                if candidate.is_file():
                    return candidate
            raise MissingFileError(
                f"run.resume_ckpt_path=latest but '{self.output_dir}' holds no "
                f"{LATEST}.pth/.safetensors; check run.output_dir (or start without resuming)."
            )
        p = Path(path).expanduser()
        if not p.is_file():
            raise MissingFileError(f"resume checkpoint '{p}' does not exist (run.resume_ckpt_path).")
        return p

    def _invariants(self) -> Dict[str, Any]:
        """The settings and the derived plan a resumed run must keep (saved in every checkpoint)."""
        values = self.settings.as_dict()
        values["betas"] = list(values["betas"])
        values["train_splits"] = list(values["train_splits"])
        values["world_size"] = dist_utils.get_world_size()
        return {**{k: values[k] for k in RESUME_INVARIANTS}, **self._plan}

    def _other_run_files(self) -> List[Path]:
        """Files of another training run in ``run.output_dir`` (checkpoints, log, summary, events)."""
        return sorted(p for pattern in RUN_FILES for p in self.output_dir.glob(pattern) if p.is_file())

    def _claim_output_dir(self) -> None:
        """A new run never mixes its log and checkpoints with another run's: refused unless
        ``run.overwrite`` (then the other run's files are removed) or a resume."""
        found = self._other_run_files()
        if not found:
            return
        if not self.settings.overwrite:
            names = ", ".join(str(p.relative_to(self.output_dir)) for p in found[:4])
            more = f" and {len(found) - 4} more" if len(found) > 4 else ""
            raise ConfigError(
                f"run.output_dir '{self.output_dir}' holds another training run ({names}{more}); a new run would "
                "mix its log and checkpoints with them. Set run.resume_ckpt_path=latest to continue that run, "
                "run.overwrite=true to replace it, or choose another run.output_dir."
            )
        dist_utils.barrier()  # every rank has looked before the main process removes anything
        if dist_utils.is_main_process():
            for p in found:
                p.unlink(missing_ok=True)
            echo(f"run.overwrite: removed the previous run's {len(found)} file(s) from {self.output_dir}")

    def save_checkpoint(self, optimizer, scaler, epoch: int, step: int, step_in_epoch: int, name: str = LATEST) -> Path:
        state = {
            "model": self.model.trainable_state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "epoch": epoch,
            "step": step,
            "step_in_epoch": step_in_epoch,
            "rng": rng_state(),
            "invariants": self._invariants(),
            "config": self.config.to_yaml(),
        }
        if self.validation is not None and self.validation.enabled:
            state["validation"] = self.validation.state()
        return checkpoints.save_training_checkpoint(state, self._checkpoint_path(name), self.settings.save_format)

    def _resume(self, path: Path, optimizer, scaler) -> Tuple[int, int, int]:
        """Load a training checkpoint into the model, optimizer and scaler; check it belongs
        to this run; return ``(epoch, step, step_in_epoch)``."""
        state = checkpoints.load_training_checkpoint(path)
        expected = self.model.trainable_state_dict()
        weights = state["model"]
        missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
        wrong = [k for k in set(expected) & set(weights) if tuple(expected[k].shape) != tuple(weights[k].shape)]
        if missing or unexpected or wrong:
            raise CheckpointError(
                f"'{path}' does not match this model's trainable parameters: {len(missing)} missing "
                f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), {len(wrong)} with "
                "other shapes. Resume with the model configuration the run was started with."
            )
        saved = state.get("invariants")
        if saved is not None:
            now = self._invariants()
            changed = {k: (saved.get(k), now[k]) for k in now if k in saved and saved[k] != now[k]}
            if changed:
                listing = ", ".join(
                    f"{k}{f' ({PLAN_KEYS[k]})' if k in PLAN_KEYS else ''}: {a!r} -> {b!r}"
                    for k, (a, b) in sorted(changed.items(), key=lambda kv: (kv[0] in PLAN_KEYS, kv[0]))
                )
                raise ConfigError(
                    f"'{path}' was written with other settings ({listing}); a resumed run must keep "
                    "them to continue exactly. Restore them, or start a new run.output_dir."
                )
        self.model.load_state_dict(weights, strict=False)
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"'{path}': the optimizer state does not fit this model ({exc}).") from None
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        if self.validation is not None:
            self.validation.load_state(state.get("validation"), int(state["step"]))
        return int(state["epoch"]), int(state["step"]), int(state["step_in_epoch"])

    # ------------------------------------------------------------------ train
    def train(self) -> Dict[str, Any]:
        s = self.settings
        set_seed(s.seed + dist_utils.get_rank())
        dataset = self._train_dataset()
        steps_per_epoch = self._epoch_length(dataset)
        accum = s.accum_grad_iters
        if steps_per_epoch < accum:
            raise ConfigError(
                f"an epoch has {steps_per_epoch} batches, fewer than run.accum_grad_iters={accum} "
                f"(dataset of {len(dataset)} items, run.batch_size_train={s.batch_size_train})."
            )
        updates_per_epoch = steps_per_epoch // accum
        self._plan = {
            "items_per_epoch": len(dataset),
            "samples_per_image": int(getattr(dataset, "samples_per_image", 1)),
            "steps_per_epoch": steps_per_epoch,
            "updates_per_epoch": updates_per_epoch,
        }
        policy = self.model.precision
        optimizer = build_optimizer(self.model, s)
        schedule = build_schedule(optimizer, s, updates_per_epoch)
        scaler = policy.grad_scaler()
        self.validation = Validator(self.task, self.datasets, s, self.output_dir)
        start_epoch, step, skip = 0, 0, 0
        epoch_ended = False  # resumed right after an epoch's last update (run.stop_after_steps there)
        resume = self._resume_path()
        if resume is None:
            self._claim_output_dir()
        if resume is not None:
            start_epoch, step, skip = self._resume(resume, optimizer, scaler)
            if skip >= steps_per_epoch:
                start_epoch, skip, epoch_ended = start_epoch + 1, 0, True
            echo(f"resumed from {resume} at epoch {start_epoch}, update {step}")
            self._truncate_log(start_epoch, skip)
        self._write_run_files()
        writer, log = self._loggers()
        if epoch_ended and self.validation.due(step, epoch_end=True):  # the end-of-epoch validation it missed
            self._validate(optimizer, scaler, start_epoch, step, 0, writer)
        model = self.train_model
        model.train()
        last_loss = float("nan")
        t0 = time.time()
        try:
            from tqdm import tqdm

            for epoch in range(start_epoch, s.max_epoch):
                bar = tqdm(
                    self._batches(dataset, epoch, skip),
                    total=steps_per_epoch,
                    initial=skip,
                    desc=f"epoch {epoch}",
                    disable=not dist_utils.is_main_process(),
                    dynamic_ncols=True,
                )
                for i, samples in enumerate(bar, start=skip):
                    lr = schedule.apply(epoch, i, step)
                    steps_now = (i + 1) % accum == 0
                    sync = contextlib.nullcontext() if steps_now or not self.distributed else model.no_sync()
                    with sync:
                        with policy.train_autocast():
                            loss = self.task.train_step(model, self._to_device(samples))
                        scaled = loss / accum
                        (scaler.scale(scaled) if scaler is not None else scaled).backward()
                    if steps_now:
                        self._optimizer_step(optimizer, scaler)
                        step += 1
                    last_loss = float(loss.detach())
                    if not np.isfinite(last_loss) and scaler is None:
                        raise TrainingError(
                            f"the training loss became {last_loss} at epoch {epoch}, iteration {i} "
                            "(the last checkpoint is kept); lower run.init_lr or check the data."
                        )
                    bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}")
                    if dist_utils.is_main_process():
                        log.write(
                            {
                                "epoch": epoch,
                                "iter": i,
                                "step": step,
                                "loss": last_loss,
                                "lr": lr,
                                "time": round(time.time() - t0, 3),
                            }
                        )
                        writer.add_scalar("train/loss", last_loss, step)
                        writer.add_scalar("train/lr", lr, step)
                    done_in_epoch = i + 1
                    at_update = steps_now and step > 0
                    if at_update and self.validation.due(step, epoch_end=False):
                        self._validate(optimizer, scaler, epoch, step, done_in_epoch, writer)
                    if (
                        at_update
                        and s.save_every_steps
                        and step % s.save_every_steps == 0
                        and dist_utils.is_main_process()
                    ):
                        self.save_checkpoint(optimizer, scaler, epoch, step, done_in_epoch)
                    if at_update and s.stop_after_steps is not None and step >= s.stop_after_steps:
                        if dist_utils.is_main_process():
                            self.save_checkpoint(optimizer, scaler, epoch, step, done_in_epoch)
                        dist_utils.barrier()
                        return {"stopped_at_step": step}
                skip = 0
                optimizer.zero_grad(set_to_none=True)  # an unfinished accumulation does not leak into the next epoch
                if self.validation.due(step, epoch_end=True):
                    self._validate(optimizer, scaler, epoch + 1, step, 0, writer)
                if dist_utils.is_main_process():
                    self.save_checkpoint(optimizer, scaler, epoch + 1, step, 0)
                    if s.keep_epoch_checkpoints:
                        self.save_checkpoint(optimizer, scaler, epoch + 1, step, 0, f"checkpoint_{epoch}")
                dist_utils.barrier()
        finally:
            writer.close()
            log.close()
        summary = {"steps": step, "last_loss": last_loss, "train_seconds": round(time.time() - t0, 1)}
        if self.validation.best is not None:
            summary["best"] = self.validation.best
        if dist_utils.is_main_process():
            atomic_write_json(self.output_dir / "train_summary.json", summary)
        return summary

    def _validate(self, optimizer, scaler, epoch: int, step: int, step_in_epoch: int, writer: Any) -> None:
        """Evaluate the valid splits (``epoch``/``step_in_epoch``: where a run resumed from
        ``checkpoint_best`` continues); the global RNG states are the same afterwards."""
        saved = rng_state()
        try:
            self.validation.run(
                self.model,
                epoch,
                step,
                writer,
                lambda: self.save_checkpoint(optimizer, scaler, epoch, step, step_in_epoch, "checkpoint_best"),
            )
        finally:
            set_rng_state(saved)

    def _optimizer_step(self, optimizer: torch.optim.Optimizer, scaler: Optional[Any]) -> None:
        max_norm = self.settings.max_grad_norm
        if scaler is not None:
            if max_norm:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
            scaler.step(optimizer)
            scaler.update()
        else:
            if max_norm:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    # --------------------------------------------------------------- evaluate
    def evaluate(self) -> Dict[str, Any]:
        """Every split's files are the task's (``<task>_<dataset>_<split>*.json``); the runner
        appends one line per evaluation to ``evaluate.jsonl`` (as LAVIS's ``evaluate.txt``), so
        evaluations sharing an output folder keep every result."""
        settings = self.task.settings if self.task.settings is not None else self.run_cfg
        metrics = self.task.evaluate(self.model, self.datasets, settings, self.output_dir)
        if dist_utils.is_main_process():
            import json

            with JsonlAppender(self.output_dir / "evaluate.jsonl") as log:
                log.write({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "task": self.settings.task, "metrics": metrics})
            print(json.dumps(metrics, indent=1))
        return metrics

    # ------------------------------------------------------------------ misc
    def _write_run_files(self) -> None:
        if dist_utils.is_main_process():
            ensure_dir(self.output_dir)
            atomic_write_text(self.output_dir / "config.yaml", self.config.to_yaml())

    def _truncate_log(self, epoch: int, iteration: int) -> None:
        """Drop log rows of iterations the resumed run does again (they were after the checkpoint)."""
        path = self.output_dir / "log.jsonl"
        if not dist_utils.is_main_process() or not path.is_file():
            return
        rows = [r for r in read_jsonl(path) if (r.get("epoch", -1), r.get("iter", -1)) < (epoch, iteration)]
        write_jsonl(path, rows)

    def _loggers(self):
        if dist_utils.is_main_process():
            from torch.utils.tensorboard import SummaryWriter

            log = JsonlAppender(self.output_dir / "log.jsonl")
            return SummaryWriter(str(self.output_dir / "tb")), log
        return _NullWriter(), _NullWriter()


class _NullWriter:
    def add_scalar(self, *args, **kwargs) -> None:
        pass

    def write(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass
