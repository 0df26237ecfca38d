"""The prepared GPU check (``benchmarks/gpu_check.sh``) run at its ``--smoke`` size on CPU: every
stage runs, every number lands in ``gpu_check.json`` and ``summary.txt``; a stage that times out
or cannot run is reported and the next one still runs."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from benchmark_scripts import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def gpu_check(*args: str, out: Path, timeout: int = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}  # this interpreter, venv active or not
    env.pop("OUT", None)
    return subprocess.run(
        ["bash", str(SCRIPT), *args, "--out", str(out)],
        cwd=ROOT,
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_smoke_run_writes_every_stage_and_number(tmp_path):
    proc = gpu_check("--smoke", out=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_check.json", "gpu_check.log", "summary.txt"]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["mode"] == "smoke" and report["device"] == "cpu"
    assert report["command"] == f"bash benchmarks/gpu_check.sh --smoke --out {tmp_path}"
    stages = report["stages"]
    assert list(stages) == ["env", "ris", "train", "generation", "profile"]
    assert {name: s["status"] for name, s in stages.items()} == dict.fromkeys(stages, "ok")
    assert all(0 <= s["seconds"] <= s["limit_s"] for s in stages.values())

    env = stages["env"]["result"]
    assert env["torch"] == torch.__version__ and env["cuda_available"] is False and env["missing_packages"] == {}

    ris = stages["ris"]["result"]
    assert sorted(ris) == ["bf16", "official"]
    for policy, result in ris.items():
        points = result["modes"]["points"]
        assert result["precision"] == policy and result["masks"] == 3 and result["repeats"] == 1
        assert points["same_argmin"] == "2/2" and points["max_abs_score_diff"] < 1e-2
        assert points["fast_s_per_sentence"] > 0 and points["official_s_per_sentence"] > 0
        assert points["meets_goal_55x"] == (points["ratio"] >= 55)

    train = stages["train"]["result"]
    settings = (train["precision"], train["grad_scaler"], train["grad_checkpoint"], train["batch"])
    assert settings == ("official", True, True, 2)
    assert train["samples_per_s"] > 0 and train["peak_memory_gib"] > 0 and train["losses_finite"]
    assert train["trainable_parameters"] < train["parameters"]  # ViT and T5 frozen, as in LN_ft

    generation = stages["generation"]["result"]
    [batch] = generation["batches"]
    assert batch["batch"] == 1 and batch["encode_s"] > 0
    assert batch["caption"]["median_s"] > 0 and 1 <= max(batch["caption"]["output_tokens"]) <= 5 + 2
    assert batch["vqa"]["median_s"] > 0 and max(batch["vqa"]["output_tokens"]) <= 3 + 2

    profile = stages["profile"]["result"]
    assert set(profile["train"]["stages_median"]) == {
        "vit_forward",
        "qformer_t5_forward",
        "backward",
        "optimizer_scaler",
    }
    assert list(profile["train"]["batch_scaling"]) == ["4"] and profile["train"]["profile"]["top_self_cpu"]
    for policy in ("official", "fp32"):  # on CPU both policies agree with the authors' protocol
        assert profile["ris"][policy]["same_argmin"] == "3/3" and profile["ris"][policy]["max_rel_score_diff"] < 1e-4

    summary = (tmp_path / "summary.txt").read_text()
    assert summary.splitlines() == report["summary"]
    for line in (
        "[env] ok",
        "[ris] ok",
        "[train] ok",
        "[generation] ok",
        "[profile] ok",
        "kernel launches/step",
        "official points:",
        "bf16     points:",
        "samples/s",
        "goals do not apply",
    ):
        assert line in summary, line
    assert summary in proc.stdout
    log = (tmp_path / "gpu_check.log").read_text()
    assert "=== train (limit 60 s)" in log and "precision policy: bf16" in log


@pytest.mark.slow
def test_a_stage_past_its_limit_is_reported_and_the_next_runs(tmp_path):
    proc = gpu_check("--smoke", "--only", "train,env", "--limit", "train=1", out=tmp_path)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    stages = json.loads((tmp_path / "gpu_check.json").read_text())["stages"]
    assert list(stages) == ["train", "env"]
    assert stages["train"]["status"] == "timeout" and stages["train"]["limit_s"] == 1
    assert stages["train"]["result"] is None and "stopped at its limit of 1 s" in stages["train"]["reason"]
    assert stages["env"]["status"] == "ok" and stages["env"]["result"]["torch"] == torch.__version__
    assert "[train] timeout" in (tmp_path / "summary.txt").read_text()


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the GPU-less machine")
def test_without_a_gpu_the_gpu_stages_are_skipped_with_the_reason(tmp_path):
    proc = gpu_check("--only", "env,train,generation", out=tmp_path)
    assert proc.returncode == 1
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["mode"] == "full" and report["device"] == "cuda"
    stages = report["stages"]
    assert stages["env"]["status"] == "ok"
    for name in ("train", "generation"):
        assert stages[name]["status"] == "skipped" and "no CUDA device is visible" in stages[name]["reason"]
    assert "no GPU" in (tmp_path / "summary.txt").read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--limit", "warp=3"], "--limit wants STAGE=SECONDS"),
        (["--limit", "train=soon"], "--limit wants STAGE=SECONDS"),
        (["--only", "env,fly"], "unknown stage 'fly'"),
        (["--device", "tpu"], "--device must be cuda or cpu"),
        (["--budget", "-1"], "--budget wants whole seconds"),
        (["--frobnicate"], "unknown option '--frobnicate'"),
    ],
)
def test_bad_options_stop_with_a_message(tmp_path, args, message):
    proc = gpu_check(*args, out=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr
    assert not (tmp_path / "gpu_check.json").exists()


def test_help_lists_the_stages_and_options(tmp_path):
    proc = gpu_check("--help", out=tmp_path)
    assert proc.returncode == 0
    for word in ("--smoke", "--with-quickstart", "--limit STAGE=SEC", "gpu_check.json", "samples/s"):
        assert word in proc.stdout, word


def test_dry_run_prints_the_gpu_commands_and_each_parses(tmp_path, monkeypatch):
    """The one-shot GPU run cannot afford a typo: its commands are checked by the scripts' parsers."""
    proc = gpu_check("--dry-run", "--with-quickstart", out=tmp_path / "untouched")
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "untouched").exists()
    commands = {}
    for line in proc.stdout.splitlines():
        stage, command = line.split(":", 1)
        commands[stage] = shlex.split(command)
    assert list(commands) == ["env", "ris", "train", "generation", "profile", "quickstart"]
    assert commands["env"][2] == "quickstart"  # the quickstart's packages are checked too

    train = load_benchmark("bench_train_step").parse_args(commands["train"][2:])
    assert (train.preset, train.device, train.batch, train.precision, train.grad_checkpoint) == (
        "flant5xl-random",
        "cuda",
        8,
        "official",
        True,
    )
    generation = load_benchmark("bench_gpu_generation").parse_args(commands["generation"][2:])
    assert (generation.preset, generation.device, generation.precision, generation.batches) == (
        "flant5xl-random",
        "cuda",
        "official",
        [1, 8],
    )
    assert (generation.beams, generation.caption_tokens, generation.vqa_tokens) == (5, 30, 10)

    ris = commands["ris"]
    assert ris[4] == "official,bf16"
    bench_ris = load_benchmark("bench_ris")
    monkeypatch.setattr(bench_ris, "run", vars)  # parse only
    parsed = bench_ris.main(ris[5:])
    assert (parsed["preset"], parsed["device"], parsed["modes"], parsed["masks"], parsed["repeats"]) == (
        "flant5xl-random",
        "cuda",
        ["points"],
        20,
        5,
    )
    assert commands["quickstart"][3:6] == ["--retrain", "--device", "cuda"]
    profile = load_benchmark("profile_gpu").parse_args(commands["profile"][2:])
    assert (profile.preset, profile.device, profile.batch, profile.masks, profile.sentences) == (
        "flant5xl-random",
        "cuda",
        8,
        20,
        7,
    )
