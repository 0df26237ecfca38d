"""The authors' training semantics: LAVIS's per-epoch cosine schedule (exactly), the learning
rate of every logged iteration, seed + rank, T5 dropout in training, safetensors training
checkpoints, and DDP equal to the single-process computation it stands for."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tiny_training import train_options

import train
from regionvlm.common.checkpoints import load_training_checkpoint
from regionvlm.common.optims import LinearWarmupCosineLR, LinearWarmupStepCosineLR

REPO = Path(__file__).resolve().parents[1]


def lavis_reference(
    epoch: int, step: int, max_epoch: int, init_lr: float, min_lr: float, warmup_start_lr: float, warmup_steps: int
) -> float:
    """LAVIS's LinearWarmupCosineLRScheduler.step(cur_epoch, cur_step), typed from its source."""
    if epoch == 0:
        return min(init_lr, warmup_start_lr + (init_lr - warmup_start_lr) * step / max(warmup_steps, 1))
    return (init_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * epoch / max_epoch)) + min_lr


def optimizer():
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


def test_lavis_schedule_exactly():
    sched = LinearWarmupCosineLR(optimizer(), max_epoch=10, init_lr=5e-6, min_lr=0.0, warmup_lr=5e-9, warmup_steps=1000)
    for epoch, it in [(0, 0), (0, 1), (0, 500), (0, 999), (0, 1000), (0, 4321), (1, 0), (1, 777), (5, 3), (9, 0)]:
        assert sched.lr_at(epoch, it, update=12345) == lavis_reference(epoch, it, 10, 5e-6, 0.0, 5e-9, 1000)
    assert sched.lr_at(0, 0, 0) == 5e-9 and sched.lr_at(0, 2000, 0) == 5e-6  # flat after warm-up in epoch 0
    assert sched.lr_at(3, 0, 0) == sched.lr_at(3, 10_000, 0)  # one value per epoch
    assert sched.lr_at(9, 0, 0) == pytest.approx(5e-6 * 0.5 * (1 + math.cos(math.pi * 0.9)))  # ~1.2e-7, never 0
    assert sched.lr_at(9, 0, 0) > 0
    no_warmup = LinearWarmupCosineLR(optimizer(), max_epoch=2, init_lr=1e-4)  # warmup_lr unset = LAVIS's -1
    assert no_warmup.lr_at(0, 0, 0) == 1e-4
    opt = optimizer()
    assert (
        LinearWarmupCosineLR(opt, max_epoch=10, init_lr=5e-6, warmup_lr=5e-9, warmup_steps=1000).apply(0, 3, 0)
        == opt.param_groups[0]["lr"]
    )


def test_no_weight_decay_on_biases_norms_and_1d_parameters():
    """LAVIS's two groups: biases, norm layers (LayerNorm, T5's layer_norm, ln_vision) and every
    1-D parameter without weight decay, the rest with it; frozen parameters in neither. One
    AdamW step with zero gradients shows the split reaches the optimizer: only decayed
    parameters shrink."""
    from types import SimpleNamespace

    from regionvlm.common.optims import build_optimizer, param_groups
    from regionvlm.models.regionvlm_t5 import RegionVLMT5

    cfg = OmegaConf.load(REPO / "regionvlm" / "configs" / "models" / "regionvlm_t5" / "tiny.yaml").model
    model = RegionVLMT5.from_config(OmegaConf.merge(cfg, {"freeze_vit": True}))
    decay, no_decay = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in no_decay["params"]}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert (
        decayed | kept == trainable
        and not decayed & kept
        and not any(n.startswith("visual_encoder.") for n in trainable)
    )
    for name in (
        "ln_vision.weight",
        "ln_vision.bias",
        "t5_proj.bias",
        "Qformer.bert.embeddings.LayerNorm.weight",
        "t5_model.encoder.final_layer_norm.weight",
        "t5_model.decoder.block.0.layer.0.layer_norm.weight",
        "Qformer.bert.encoder.layer.0.attention.self.query.bias",
    ):
        assert name in kept, name
    for name in (
        "t5_proj.weight",
        "query_tokens",
        "Qformer.bert.encoder.layer.0.attention.self.query.weight",
        "t5_model.shared.weight",
        "t5_model.lm_head.weight",
    ):
        assert name in decayed, name
    assert all(model.get_parameter(n).ndim >= 2 for n in decayed)
    assert all(model.get_parameter(n).ndim < 2 or "norm" in n.lower() or "bias" in n for n in kept)

    optimizer = build_optimizer(model, SimpleNamespace(weight_decay=0.5, init_lr=0.1, betas=(0.9, 0.999)))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    for p in model.parameters():
        p.grad = torch.zeros_like(p) if p.requires_grad else None
    optimizer.step()
    for name, value in before.items():
        now = model.get_parameter(name)
        if name in kept:
            assert torch.equal(now, value), name
        else:
            torch.testing.assert_close(now, value * (1 - 0.1 * 0.5))


def test_step_cosine_variant():
    sched = LinearWarmupStepCosineLR(
        optimizer(), max_epoch=2, init_lr=1.0, min_lr=0.1, warmup_lr=0.0, warmup_steps=2, updates_per_epoch=5
    )
    assert [round(sched.lr_at(0, 0, u), 6) for u in (0, 1, 2)] == [0.0, 0.5, 1.0]
    assert sched.lr_at(1, 0, 10) == pytest.approx(0.1)


@pytest.fixture
def world(train_world):
    return train_world


def options(world: Path, out: Path, *extra: str):
    return train_options(world, out, "datasets.regionvlm_mix.epoch_length=8", "run.max_epoch=3", *extra)


@pytest.mark.slow
def test_logged_lr_is_the_lavis_schedule_of_every_iteration(world, tmp_path):
    out = tmp_path / "run"
    train.main(
        options(
            world,
            out,
            "run.lr_sched=linear_warmup_cosine_lr",
            "run.init_lr=1e-3",
            "run.warmup_lr=1e-5",
            "run.warmup_steps=3",
            "run.min_lr=1e-4",
            "run.accum_grad_iters=2",
        )
    )
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["iter"]) for r in rows] == [(e, i) for e in range(3) for i in range(4)]
    for r in rows:
        assert r["lr"] == lavis_reference(r["epoch"], r["iter"], 3, 1e-3, 1e-4, 1e-5, 3)
    assert rows[-1]["step"] == 6  # 3 epochs x 4 iterations / accumulation 2


@pytest.mark.slow
def test_t5_dropout_is_active_in_training_unless_turned_off(world, tmp_path):
    """The paper's T5 is frozen but not in eval mode: its dropout changes the loss."""
    base = (
        "model.freeze_t5=true",
        "model.t5.dropout_rate=0.5",
        "run.max_epoch=1",
        "run.init_lr=0.0",
        "run.min_lr=0.0",
        "run.iters_per_epoch=2",
    )
    on = train.main(options(world, tmp_path / "on", *base))
    off = train.main(options(world, tmp_path / "off", *base, "model.frozen_t5_dropout=false"))
    none = train.main(options(world, tmp_path / "none", *base[:1], "model.t5.dropout_rate=0.0", *base[2:]))
    assert on["last_loss"] != off["last_loss"]  # the frozen T5's dropout is active by default
    assert off["last_loss"] == none["last_loss"]  # turned off: exactly as if T5 had no dropout


@pytest.mark.slow
def test_safetensors_training_checkpoints_load_and_resume_like_pth(world, tmp_path):
    from safetensors import safe_open

    from regionvlm.models.regionvlm_t5 import RegionVLMT5

    train.main(options(world, tmp_path / "pth", "run.max_epoch=2"))
    train.main(
        options(world, tmp_path / "st", "run.max_epoch=2", "run.save_format=safetensors", "run.stop_after_steps=5")
    )
    train.main(
        options(world, tmp_path / "st", "run.max_epoch=2", "run.save_format=safetensors", "run.resume_ckpt_path=latest")
    )
    path = tmp_path / "st" / "checkpoint_latest.safetensors"
    assert not (tmp_path / "st" / "checkpoint_latest.pth").exists()
    a = load_training_checkpoint(tmp_path / "pth" / "checkpoint_latest.pth")
    b = load_training_checkpoint(path)
    assert a["step"] == b["step"] == 8 and a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    with safe_open(str(path), framework="pt") as f:  # any safetensors reader sees the weights by name
        assert "query_tokens" in set(f.keys())
    model = RegionVLMT5.from_pretrained("tiny")
    loaded = model.load_checkpoint(str(path))
    assert set(loaded) == set(a["model"])


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_two_processes_equal_the_single_process_computation(world, tmp_path):
    """Two gloo ranks with gradient accumulation (``no_sync`` between updates) end with the
    weights of one process that averages both ranks' gradients over the same batches."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    opts = options(
        world,
        tmp_path / "ddp",
        "run.max_epoch=1",
        "run.accum_grad_iters=2",
        "run.init_lr=1e-3",
        "run.warmup_steps=0",
        "run.min_lr=1e-3",
        "run.lr_sched=linear_warmup_cosine_lr",
        "datasets.regionvlm_mix.samples_per_image=1",
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(REPO / "train.py"),
        *opts,
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = load_training_checkpoint(tmp_path / "ddp" / "checkpoint_latest.pth")
    assert ddp["step"] == 1  # 8 items / 2 ranks / batch 2 = 2 iterations = 1 update
    logs = (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()
    assert len(logs) == 2  # only rank 0 logs

    # the same update by hand in this process: rank r's batches come from its DistributedSampler
    from torch.utils.data import BatchSampler, DistributedSampler

    from regionvlm.common.config import Config
    from regionvlm.common.optims import build_optimizer
    from regionvlm.models import place_model
    from regionvlm.runners.runner_base import RunnerSettings, set_seed

    torch.set_num_threads(1)
    cfg = Config(opts[1], opts[3:])
    task = cfg.task_class().setup_task(cfg)
    set_seed(42)
    dataset = task.build_datasets(cfg)["regionvlm_mix"]["train"]
    model = place_model(task.build_model(cfg), is_eval=False, device="cpu")
    settings = RunnerSettings.parse(cfg.run_cfg, also_known=task.Settings.keys())
    opt = build_optimizer(model, settings)
    dataset.set_epoch(0)
    total = {n: torch.zeros_like(p) for n, p in model.named_parameters() if p.requires_grad}
    for rank in (0, 1):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=42, drop_last=True)
        sampler.set_epoch(0)
        for batch in list(BatchSampler(sampler, 2, drop_last=True)):
            model.zero_grad(set_to_none=True)
            samples = dataset.collater([dataset[i] for i in batch])
            (task.train_step(model, samples) / 2).backward()
            for n, p in model.named_parameters():
                if p.requires_grad and p.grad is not None:
                    total[n] += p.grad / 2  # DDP averages the ranks' gradients
    for n, p in model.named_parameters():
        if p.requires_grad:
            p.grad = total[n]
    torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
    opt.step()
    expected = model.trainable_state_dict()
    for key, value in ddp["model"].items():
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6, msg=key)
