"""The one runner: trains any task's model on its datasets, or only evaluates.

Single process on CPU or one GPU, or under ``torchrun`` (DDP; NCCL on GPUs, gloo on CPU).
Checkpoints hold only the trainable parameters plus optimizer, scheduler, step, epoch and
RNG states, written atomically; ``run.resume_ckpt_path`` (a path or ``latest``) continues a
run so that a killed-and-resumed run ends with the same weights as an uninterrupted one.
Logs go to ``run.output_dir``: ``log.jsonl``, tensorboard scalars in ``tb/``, the resolved
``config.yaml``, checkpoints and evaluation results.
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, RandomSampler

from regionvlm.common import dist_utils, host_memory
from regionvlm.common.errors import ConfigError, MissingFileError
from regionvlm.common.io import JsonlAppender, atomic_torch_save, atomic_write_json, atomic_write_text
from regionvlm.common.optims import build_optimizer
from regionvlm.common.registry import registry

LATEST = "checkpoint_latest.pth"


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> Dict[str, Any]:
    """All RNG states in plain types and tensors, so checkpoints load with ``weights_only=True``."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@registry.register_runner("runner_base")
class RunnerBase:
    def __init__(self, cfg: Any, task: Any, model: torch.nn.Module, datasets: Dict[str, Dict[str, Any]]):
        self.config = cfg
        self.run_cfg = cfg.run_cfg
        self.task = task
        self.datasets = datasets
        self.output_dir = Path(self.run_cfg.get("output_dir", "output/run"))
        self.distributed = dist_utils.init_distributed_mode()
        self.device = self._device()
        if self.device.type == "cpu" and self.run_cfg.get("retain_freed_host_memory", True):
            host_memory.retain_freed_memory()  # CPU steps stop page-faulting their logits back in
        from regionvlm.models import place_model

        self.model = place_model(model, is_eval=bool(self.run_cfg.get("evaluate", False)), device=self.device)
        self._ddp: Optional[torch.nn.Module] = None

    # ------------------------------------------------------------------ setup
    def _device(self) -> torch.device:
        wanted = str(self.run_cfg.get("device", "auto"))
        if wanted == "auto":
            return dist_utils.local_device()
        if wanted.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError("run.device is cuda but no GPU is visible; use run.device=cpu or auto.")
        if wanted == "cuda":
            return dist_utils.local_device()
        return torch.device(wanted)

    @property
    def train_model(self) -> torch.nn.Module:
        if self.distributed and self._ddp is None:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self._ddp = DistributedDataParallel(self.model, device_ids=ids,
                                                find_unused_parameters=bool(self.run_cfg.get("find_unused_parameters", False)))
        return self._ddp if self.distributed else self.model

    def _train_dataset(self) -> Dataset:
        splits = self.run_cfg.get("train_splits", ["train"])
        found: List[Dataset] = []
        for name, by_split in self.datasets.items():
            for split in splits:
                if split in by_split:
                    found.append(by_split[split])
        if not found:
            raise ConfigError(f"no dataset has the train split(s) {list(splits)}; check `datasets:`.")
        if len(found) > 1:
            raise ConfigError("several training datasets: combine them with a mixing builder (regionvlm_mix).")
        return found[0]

    def _batches(self, dataset: Dataset, epoch: int, skip: int) -> Iterator[Dict[str, Any]]:
        """The epoch's batches in a seed-determined order, starting after ``skip`` batches."""
        seed = int(self.run_cfg.get("seed", 42))
        batch_size = int(self.run_cfg.batch_size_train)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        if self.distributed:
            sampler = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=True)
            sampler.set_epoch(epoch)
        else:
            sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        batches = list(BatchSampler(sampler, batch_size, drop_last=True))
        iters = self.run_cfg.get("iters_per_epoch", None)
        if iters is not None:
            while len(batches) < int(iters):  # small datasets: keep drawing, still seeded
                batches += batches[: int(iters) - len(batches)]
            batches = batches[: int(iters)]
        loader = DataLoader(dataset, batch_sampler=batches[skip:], num_workers=int(self.run_cfg.get("num_workers", 0)),
                            collate_fn=getattr(dataset, "collater", None), pin_memory=self.device.type == "cuda")
        self._epoch_len = len(batches)
        return iter(loader)

    def _epoch_length(self, dataset: Dataset) -> int:
        iters = self.run_cfg.get("iters_per_epoch", None)
        if iters is not None:
            return int(iters)
        per_rank = len(dataset) // dist_utils.get_world_size()
        return per_rank // int(self.run_cfg.batch_size_train)

    def _to_device(self, samples: Dict[str, Any]) -> Dict[str, Any]:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in samples.items()}

    # ------------------------------------------------------------- checkpoints
    def _checkpoint_path(self) -> Optional[Path]:
        path = self.run_cfg.get("resume_ckpt_path", None)
        if not path:
            return None
        p = self.output_dir / LATEST if str(path) == "latest" else Path(str(path))
        if not p.is_file():
            raise MissingFileError(f"resume checkpoint '{p}' does not exist (run.resume_ckpt_path).")
        return p

    def save_checkpoint(self, optimizer, scheduler, epoch: int, step: int, step_in_epoch: int,
                        name: str = LATEST) -> Path:
        state = {
            "model": self.model.trainable_state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": None,  # bf16 autocast needs no loss scaling
            "epoch": epoch, "step": step, "step_in_epoch": step_in_epoch,
            "rng": rng_state(),
            "config": self.config.to_yaml(),
        }
        path = self.output_dir / name
        atomic_torch_save(state, path)
        return path

    # ------------------------------------------------------------------ train
    def train(self) -> Dict[str, Any]:
        cfg = self.run_cfg
        seed = int(cfg.get("seed", 42)) + dist_utils.get_rank()
        set_seed(seed)
        dataset = self._train_dataset()
        epochs = int(cfg.max_epoch)
        steps_per_epoch = self._epoch_length(dataset)
        accum = int(cfg.get("accum_grad_iters", 1))
        if steps_per_epoch < accum:
            raise ConfigError(f"an epoch has {steps_per_epoch} batches, fewer than accum_grad_iters={accum}.")
        updates_per_epoch = steps_per_epoch // accum
        optimizer = build_optimizer(self.model, cfg)
        sched_cls = registry.get_class_or_raise("lr_scheduler", cfg.get("lr_sched", "linear_warmup_cosine_lr"))
        scheduler = sched_cls.from_config(optimizer, cfg, total_steps=epochs * updates_per_epoch)
        start_epoch, step, skip = 0, 0, 0
        resume = self._checkpoint_path()
        if resume is not None:
            state = torch.load(resume, map_location="cpu", weights_only=True)
            self.model.load_state_dict(state["model"], strict=False)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            set_rng_state(state["rng"])
            start_epoch, step, skip = state["epoch"], state["step"], state["step_in_epoch"]
            if skip >= steps_per_epoch:
                start_epoch, skip = start_epoch + 1, 0
            self._log_main(f"resumed from {resume} at epoch {start_epoch}, step {step}")
        self._write_run_files()
        writer, log = self._loggers()
        max_norm = cfg.get("max_grad_norm", None)
        save_every = int(cfg.get("save_every_steps", 0) or 0)
        stop_after = cfg.get("stop_after_steps", None)  # for tests: simulate a killed run
        model = self.train_model
        model.train()
        last_loss = float("nan")
        t0 = time.time()
        try:
            from tqdm import tqdm

            for epoch in range(start_epoch, epochs):
                bar = tqdm(self._batches(dataset, epoch, skip), total=steps_per_epoch, initial=skip,
                           desc=f"epoch {epoch}", disable=not dist_utils.is_main_process(), dynamic_ncols=True)
                for i, samples in enumerate(bar, start=skip):
                    loss = self.task.train_step(model, self._to_device(samples))
                    (loss / accum).backward()
                    if (i + 1) % accum == 0:
                        if max_norm:
                            torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(max_norm))
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)
                        scheduler.step()
                        step += 1
                    last_loss = float(loss.detach())
                    bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
                    if dist_utils.is_main_process():
                        log.write({"epoch": epoch, "iter": i, "step": step, "loss": last_loss,
                                   "lr": scheduler.get_last_lr()[0], "time": round(time.time() - t0, 3)})
                        writer.add_scalar("train/loss", last_loss, step)
                        writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
                    done_in_epoch = i + 1
                    if save_every and step and done_in_epoch % (save_every * accum) == 0 and dist_utils.is_main_process():
                        self.save_checkpoint(optimizer, scheduler, epoch, step, done_in_epoch)
                    if stop_after is not None and step >= int(stop_after):
                        if dist_utils.is_main_process():
                            self.save_checkpoint(optimizer, scheduler, epoch, step, done_in_epoch)
                        return {"stopped_at_step": step}
                skip = 0
                if dist_utils.is_main_process():
                    self.save_checkpoint(optimizer, scheduler, epoch + 1, step, 0)
                    if cfg.get("keep_epoch_checkpoints", False):
                        self.save_checkpoint(optimizer, scheduler, epoch + 1, step, 0, f"checkpoint_{epoch}.pth")
                dist_utils.barrier()
        finally:
            writer.close()
            log.close()
        summary = {"steps": step, "last_loss": last_loss, "train_seconds": round(time.time() - t0, 1)}
        if dist_utils.is_main_process():
            atomic_write_json(self.output_dir / "train_summary.json", summary)
        return summary

    # --------------------------------------------------------------- evaluate
    def evaluate(self) -> Dict[str, Any]:
        self.model.eval()
        metrics = self.task.evaluate(self.model, self.datasets, self.run_cfg, self.output_dir)
        if dist_utils.is_main_process():
            atomic_write_json(self.output_dir / "metrics.json", metrics)
            print(json.dumps(metrics, indent=1))
        return metrics

    # ------------------------------------------------------------------ misc
    def _write_run_files(self) -> None:
        if dist_utils.is_main_process():
            self.output_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.output_dir / "config.yaml", self.config.to_yaml())

    def _loggers(self):
        from torch.utils.tensorboard import SummaryWriter

        if dist_utils.is_main_process():
            return SummaryWriter(str(self.output_dir / "tb")), JsonlAppender(self.output_dir / "log.jsonl")
        return _NullWriter(), _NullWriter()

    def _log_main(self, msg: str) -> None:
        if dist_utils.is_main_process():
            print(msg)


class _NullWriter:
    def add_scalar(self, *args, **kwargs) -> None:
        pass

    def write(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass
