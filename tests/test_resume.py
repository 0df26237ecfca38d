"""Killed runs resume exactly: real processes are killed with SIGKILL mid-run and started again.

Training under the paper's settings — dropout on (Q-Former and T5), two data-loader workers,
gradient accumulation — ends with weights bit-identical to an uninterrupted run, killed once
in the middle of an accumulation and once at an epoch boundary region. Every run uses the
same thread count (one), as float reductions differ between thread counts."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest
import torch

from regionvlm.common.checkpoints import load_training_checkpoint
from regionvlm.data.localized_narratives import preprocess_localized_narratives
from regionvlm.synthetic.world import write_world

REPO = Path(__file__).resolve().parents[1]
CFG = REPO / "configs" / "synthetic" / "train_tiny.yaml"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    write_world(root, num_train=12, num_val=0, num_test=0, seed=0)
    preprocess_localized_narratives(
        [root / "localized_narratives" / "synthetic_train_localized_narratives.jsonl"],
        root / "annotations" / "ln_synthetic_train.json", image_root=root / "images",
        patterns={"synthetic": ["{image_id}.png"]}, progress=False)
    return root


def train_args(world: Path, out: Path, *extra: str) -> List[str]:
    """The tiny recipe with the paper's stochastic settings switched on."""
    return [sys.executable, str(REPO / "train.py"), "--cfg-path", str(CFG), "--options",
            f"datasets.regionvlm_mix.region_ann={world}/annotations/ln_synthetic_train.json",
            f"datasets.regionvlm_mix.coco_ann={world}/captions/coco_karpathy_train.json",
            f"datasets.regionvlm_mix.coco_image_root={world}/images",
            "datasets.regionvlm_mix.epoch_length=16", "datasets.regionvlm_mix.region_prob_by_epoch={0: 1.0, 1: 0.6}",
            "model.qformer.hidden_dropout_prob=0.1", "model.qformer.attention_probs_dropout_prob=0.1",
            "model.t5.dropout_rate=0.1",
            "run.batch_size_train=2", "run.accum_grad_iters=2", "run.num_workers=2", "run.max_epoch=2",
            "run.warmup_steps=2", "run.save_every_steps=1", "run.device=cpu", f"run.output_dir={out}", *extra]


def run_to_end(args: List[str]) -> None:
    proc = subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def kill_after(args: List[str], log: Path, iterations: int) -> None:
    """Start a run and SIGKILL it once ``iterations`` rows are in its log."""
    proc = subprocess.Popen(args, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            if log.is_file() and len(log.read_text().splitlines()) >= iterations:
                break
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("the run never reached the kill point")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the data-loader workers go too
        proc.wait()


def weights(out: Path):
    return load_training_checkpoint(out / "checkpoint_latest.pth")["model"]


def test_killed_training_with_dropout_workers_and_accumulation_resumes_bit_identical(world, tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    run_to_end(train_args(world, full))
    kill_after(train_args(world, killed), killed / "log.jsonl", iterations=5)  # inside an accumulation
    assert load_training_checkpoint(killed / "checkpoint_latest.pth")["step"] < 8
    kill_after(train_args(world, killed, "run.resume_ckpt_path=latest"), killed / "log.jsonl", iterations=11)
    run_to_end(train_args(world, killed, "run.resume_ckpt_path=latest"))
    a, b = weights(full), weights(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the resumed log holds each iteration once, with the same losses as the uninterrupted run
    rows = [json.loads(line) for line in (killed / "log.jsonl").read_text().splitlines()]
    reference = [json.loads(line) for line in (full / "log.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["iter"], r["loss"], r["lr"]) for r in rows] == \
        [(r["epoch"], r["iter"], r["loss"], r["lr"]) for r in reference]
    assert not list(killed.glob(".*.tmp"))  # no temporary file of a killed checkpoint write survives
