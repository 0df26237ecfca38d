"""Killed runs resume exactly: real processes are killed with SIGKILL mid-run and started again.

Every evaluation task (RIS, VQA, VCR, COCO captioning), killed once its progress log has a
row, ends with a results file byte-identical to an uninterrupted run's.

Training under the paper's settings — dropout on (Q-Former and T5), two data-loader workers,
gradient accumulation — ends with weights bit-identical to an uninterrupted run, killed once
in the middle of an accumulation and once at an epoch boundary region. Every run uses the
same thread count (one), as float reductions differ between thread counts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_training import train_options

from regionvlm.common.checkpoints import load_training_checkpoint
from regionvlm.synthetic.world import write_world

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


@pytest.fixture
def world(train_world):
    return train_world


def train_args(world: Path, out: Path, *extra: str) -> List[str]:
    """The tiny recipe with the paper's stochastic settings switched on."""
    return [
        sys.executable,
        str(REPO / "train.py"),
        *train_options(
            world,
            out,
            "datasets.regionvlm_mix.epoch_length=16",
            "model.qformer.hidden_dropout_prob=0.1",
            "model.qformer.attention_probs_dropout_prob=0.1",
            "model.t5.dropout_rate=0.1",
            "run.accum_grad_iters=2",
            "run.num_workers=2",
            "run.max_epoch=2",
            "run.warmup_steps=2",
            "run.save_every_steps=1",
            *extra,
        ),
    ]


def run_to_end(args: List[str], env: Dict[str, str] = ENV) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def run_in_process(args: List[str]) -> None:
    """The uninterrupted reference run, in this process with the subprocesses' one thread
    (the same float reductions; no interpreter start-up)."""
    import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train.main(args[2:])
    finally:
        torch.set_num_threads(threads)


def kill_once_logged(args: List[str], out: Path, env: Dict[str, str] = ENV) -> None:
    """Start an evaluation and SIGKILL it (with any children) once its first unit is logged."""
    proc = subprocess.Popen(
        args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not any(p.stat().st_size for p in out.glob("*.partial.rank0.jsonl")):
            assert proc.poll() is None, "the evaluation ended before it could be killed"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def kill_after(args: List[str], log: Path, iterations: int) -> None:
    """Start a run and SIGKILL it once ``iterations`` rows are in its log."""
    proc = subprocess.Popen(
        args, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
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
    run_in_process(train_args(world, full))
    kill_after(train_args(world, killed), killed / "log.jsonl", iterations=5)  # inside an accumulation
    assert load_training_checkpoint(killed / "checkpoint_latest.pth")["step"] < 8
    kill_after(train_args(world, killed, "run.resume_ckpt_path=latest"), killed / "log.jsonl", iterations=11)
    run_to_end(train_args(world, killed, "run.resume_ckpt_path=latest"))
    a, b = weights(full), weights(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the resumed log holds each iteration once, with the same losses as the uninterrupted run
    rows = [json.loads(line) for line in (killed / "log.jsonl").read_text().splitlines()]
    reference = [json.loads(line) for line in (full / "log.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["iter"], r["loss"], r["lr"]) for r in rows] == [
        (r["epoch"], r["iter"], r["loss"], r["lr"]) for r in reference
    ]
    assert not list(killed.glob(".*.tmp"))  # no temporary file of a killed checkpoint write survives


# ------------------------------------------------------------------ evaluation tasks
@pytest.fixture(scope="module")
def eval_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_world")
    write_world(root, num_train=0, num_val=0, num_test=16, seed=1)
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """Trained weights (the bundled tiny checkpoint), so every task's outputs are meaningful."""
    from regionvlm.quickstart import bundled_checkpoint

    return bundled_checkpoint()


def eval_config(task: str, world: Path, checkpoint: Path, tmp_path: Path) -> Path:
    """One YAML per task; each reads the synthetic world (RIS, VQA), a VCR fixture or a
    Karpathy-layout fixture (captioning)."""
    model = f"model: {{arch: regionvlm_t5, model_type: tiny, checkpoint: '{checkpoint}'}}\n"
    run = "run: {{task: {task}, evaluate: true, device: cpu, output_dir: OUT, seed: 3{extra}}}\n"
    if task == "ris":
        datasets = f"datasets: {{ris_synthetic: {{world: '{world}', split: test}}}}\n"
        text = run.format(task="ris", extra=", small_threshold: 0.0, prefetch: 0")
    elif task == "vqa":
        datasets = (
            "datasets: {coco_vqa: {build_info: {annotations: {test: {storage: ["
            f"'{world}/vqa/synthetic_vqa_test.json']}}}}, images: {{storage: '{world}/images'}}}}}}}}\n"
        )
        text = run.format(task="vqa", extra=", batch_size_eval: 2, num_workers: 0")
    elif task == "vcr":
        from test_vcr import _items, write_vcr

        items = [dict(item, annot_id=f"val-{k}-{item['annot_id']}") for k in range(3) for item in _items()]
        root = write_vcr(tmp_path / "vcr", items)
        datasets = f"datasets: {{vcr: {{data_root: '{root}'}}}}\n"
        text = run.format(task="vcr", extra=", batch_size_eval: 1, num_workers: 0, max_len: 4")
    else:
        from test_coco_captioning import IDS

        data = tmp_path / "data"
        rng = np.random.default_rng(0)
        (data / "val2014").mkdir(parents=True)
        split, gt = [], {"images": [], "annotations": []}
        for n, image_id in enumerate(IDS + (7, 8, 9, 10, 11)):
            name = f"val2014/COCO_val2014_{image_id:012d}.jpg"
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(data / name)
            split.append({"image": name, "caption": [f"caption {n}"]})
            gt["images"].append({"id": image_id})
            gt["annotations"].append({"image_id": image_id, "caption": f"caption {n}", "id": image_id})
        (data / "split.json").write_text(json.dumps(split))
        (data / "gt.json").write_text(json.dumps(gt))
        datasets = (
            f"datasets: {{coco_caption: {{build_info: {{annotations: {{test: {{storage: '{data}/split.json', "
            f"gt: '{data}/gt.json'}}}}, images: {{storage: '{data}'}}}}}}}}\n"
        )
        text = run.format(
            task="captioning", extra=", batch_size_eval: 1, num_workers: 0, max_len: 6, skip_metrics: [METEOR, SPICE]"
        )
    path = tmp_path / f"{task}.yaml"
    path.write_text(model + datasets + text)
    return path


RESULTS = {
    "ris": "ris_synthetic_unc_test.json",
    "vqa": "vqa_coco_vqa_test.json",
    "vcr": "vcr_vcr_val.json",
    "captioning": "captioning_coco_caption_test.json",
}


@pytest.mark.parametrize("task", list(RESULTS))
def test_killed_evaluation_resumes_to_identical_results(task, eval_world, checkpoint, tmp_path):
    if task == "captioning" and shutil.which("java") is None:
        pytest.skip("the caption metrics need Java")
    cfg = eval_config(task, eval_world, checkpoint, tmp_path)

    def args(out: Path) -> List[str]:
        return [sys.executable, str(REPO / "train.py"), "--cfg-path", str(cfg), "--options", f"run.output_dir={out}"]

    run_in_process(args(tmp_path / "full"))
    killed = tmp_path / "killed"
    kill_once_logged(args(killed), killed)
    assert not (killed / RESULTS[task]).exists()
    run_to_end(args(killed))
    assert (killed / RESULTS[task]).read_bytes() == (tmp_path / "full" / RESULTS[task]).read_bytes()
    assert not list(killed.glob("*.partial.*")) and not list(killed.glob(".*.tmp"))
