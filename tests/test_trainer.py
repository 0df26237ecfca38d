"""The shared trainer: a run on the synthetic world through the real pipeline, stop-and-resume
equality, bad settings (DDP and real kills: test_training_semantics.py, test_resume.py)."""

import json
import sys
from pathlib import Path

import pytest
import torch
from tiny_training import train_options

import train
from regionvlm.common.errors import ConfigError, MissingFileError

REPO = Path(__file__).resolve().parents[1]
CFG = REPO / "configs" / "synthetic" / "train_tiny.yaml"


@pytest.fixture
def world(train_world):
    return train_world


def options(world: Path, out: Path, *extra: str):
    return train_options(
        world,
        out,
        "datasets.regionvlm_mix.epoch_length=8",
        "run.max_epoch=2",
        "run.warmup_steps=2",
        "run.save_every_steps=2",
        *extra,
    )


def final_weights(out: Path):
    return torch.load(out / "checkpoint_latest.pth", weights_only=False)["model"]


@pytest.mark.slow
def test_train_writes_logs_config_and_trainable_checkpoint(world, tmp_path):
    summary = train.main(options(world, tmp_path / "run"))
    out = tmp_path / "run"
    assert summary["steps"] == 8  # 2 epochs x (8 items / batch 2)
    logs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(logs) == 8 and all(r["loss"] > 0 for r in logs)
    assert logs[0]["lr"] < logs[2]["lr"]  # warm-up
    assert (out / "config.yaml").is_file() and list((out / "tb").iterdir())
    state = torch.load(out / "checkpoint_latest.pth", weights_only=False)
    assert {"model", "optimizer", "scaler", "epoch", "step", "rng", "invariants", "config"} <= set(state)
    assert state["step"] == 8 and state["epoch"] == 2


@pytest.mark.slow
def test_killed_and_resumed_run_ends_with_the_same_weights(world, tmp_path):
    train.main(options(world, tmp_path / "full"))
    stopped = train.main(options(world, tmp_path / "killed", "run.stop_after_steps=5"))
    assert stopped == {"stopped_at_step": 5}
    train.main(options(world, tmp_path / "killed", "run.resume_ckpt_path=latest"))
    full, resumed = final_weights(tmp_path / "full"), final_weights(tmp_path / "killed")
    assert full.keys() == resumed.keys()
    assert all(torch.equal(full[k], resumed[k]) for k in full)


@pytest.mark.slow
def test_bad_config_stops_with_a_message(world, tmp_path, capsys):
    from regionvlm.common.cli import run

    with pytest.raises(SystemExit) as exc:
        run(train.main, options(world, tmp_path / "x", "datasets.regionvlm_mix.region_ann=/nonexistent/ann.json"))
    assert exc.value.code == 2
    assert "/nonexistent/ann.json" in capsys.readouterr().err
    with pytest.raises(MissingFileError, match="latest"):
        train.main(options(world, tmp_path / "x", "run.resume_ckpt_path=latest"))
    with pytest.raises(ConfigError, match="key=value"):
        train.main(["--cfg-path", str(CFG), "--options", "run.max_epoch"])
    with pytest.raises(ConfigError, match=r"`run.max_epochs` \(did you mean `max_epoch`\?\)"):
        train.main(options(world, tmp_path / "x", "run.max_epochs=3"))


def test_host_memory_thresholds_apply_on_glibc_and_are_harmless_elsewhere():

    from regionvlm.common import host_memory

    applied = host_memory.retain_freed_memory()
    assert applied == (host_memory._libc() is not None)
    if sys.platform.startswith("linux") and host_memory._libc() is not None:
        assert host_memory.release_freed_memory() and host_memory.retain_freed_memory()
