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


# Dropout in the Q-Former and T5 (the tiny preset has none): the global RNG then shapes every
# step, so only a resume that restores it ends where the uninterrupted run ends.
DROPOUT = ("model.t5.dropout_rate=0.1", "model.qformer.hidden_dropout_prob=0.1")


@pytest.mark.slow
def test_killed_and_resumed_run_ends_with_the_same_weights(world, tmp_path, monkeypatch):
    train.main(options(world, tmp_path / "full", *DROPOUT))
    stopped = train.main(options(world, tmp_path / "killed", *DROPOUT, "run.stop_after_steps=5"))
    assert stopped == {"stopped_at_step": 5}
    (tmp_path / "unrestored").mkdir()
    for name in ("checkpoint_latest.pth", "log.jsonl"):
        (tmp_path / "unrestored" / name).write_bytes((tmp_path / "killed" / name).read_bytes())
    train.main(options(world, tmp_path / "killed", *DROPOUT, "run.resume_ckpt_path=latest"))
    full, resumed = final_weights(tmp_path / "full"), final_weights(tmp_path / "killed")
    assert full.keys() == resumed.keys()
    assert all(torch.equal(full[k], resumed[k]) for k in full)

    from regionvlm.runners import runner_base

    monkeypatch.setattr(runner_base, "set_rng_state", lambda state: None)  # a resume that forgets the RNG
    train.main(options(world, tmp_path / "unrestored", *DROPOUT, "run.resume_ckpt_path=latest"))
    unrestored = final_weights(tmp_path / "unrestored")
    assert not all(torch.equal(full[k], unrestored[k]) for k in full)  # the test can tell


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


def test_data_loader_workers_start_by_the_method_chosen_for_them():
    """Workers start by fork wherever it exists (the annotation arrays are shared copy-on-write),
    whatever the Python version's default, and Python >= 3.12's warning about forking a
    process with threads does not escape (warnings are errors here)."""
    import multiprocessing
    import warnings
    from types import SimpleNamespace

    from regionvlm.runners.runner_base import RunnerBase, worker_start_method

    runner = SimpleNamespace(
        settings=SimpleNamespace(seed=0, batch_size_train=2, iters_per_epoch=None, num_workers=2),
        distributed=False,
        device=torch.device("cpu"),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batches = RunnerBase._batches(runner, list(range(8)), epoch=0, skip=1)
        got = [b.tolist() for b in batches]
    expected = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    assert worker_start_method() == expected
    assert {type(w).__name__ for w in batches._workers} == {f"{expected.capitalize()}Process"}
    items = [i for batch in got for i in batch]
    assert len(got) == 3 and len(items) == len(set(items)) == 6  # the epoch's batches after the first, once each
