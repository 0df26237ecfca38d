"""Training and evaluation runs under bad settings and faults: each ends in one clear error
(the command line: exit 2, one line, no traceback), leaves earlier outputs intact and no
temporary file, and never continues silently with something other than what was asked."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
from tiny_training import train_options

import train
from regionvlm.common.checkpoints import load_training_checkpoint
from regionvlm.common.cli import run
from regionvlm.common.errors import CheckpointError, ConfigError, MissingFileError, OutputError, TrainingError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def world(train_world):
    return train_world


def options(world: Path, out: Path, *extra: str):
    return train_options(world, out, "datasets.regionvlm_mix.epoch_length=4", "run.max_epoch=1", *extra)


@pytest.fixture(scope="module")
def finished(train_world, tmp_path_factory):
    """A finished one-epoch run (2 updates) whose checkpoint the fault cases resume from."""
    out = tmp_path_factory.mktemp("finished")
    train.main(options(train_world, out, "run.max_epoch=1"))
    return out


@pytest.mark.slow
def test_resume_of_another_model_is_refused(world, finished, tmp_path):
    with pytest.raises(CheckpointError, match=r"does not match this model's trainable parameters"):
        train.main(
            options(world, finished, "run.max_epoch=2", "run.resume_ckpt_path=latest", "model.num_query_token=4")
        )


@pytest.mark.slow
def test_resume_with_other_settings_is_refused(world, finished):
    with pytest.raises(ConfigError, match=r"written with other settings \(batch_size_train: 2 -> 1"):
        train.main(options(world, finished, "run.max_epoch=2", "run.resume_ckpt_path=latest", "run.batch_size_train=1"))


@pytest.mark.slow
def test_resume_from_a_weights_only_file_is_refused(world, finished, tmp_path):
    weights = tmp_path / "weights.pth"
    torch.save({"model": load_training_checkpoint(finished / "checkpoint_latest.pth")["model"]}, weights)
    with pytest.raises(CheckpointError, match="holds weights only.*set `model.checkpoint` instead"):
        train.main(options(world, tmp_path / "x", f"run.resume_ckpt_path={weights}"))


def test_resume_from_a_damaged_or_missing_file(world, tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match="cannot read the checkpoint"):
        train.main(options(world, tmp_path / "x", f"run.resume_ckpt_path={bad}"))
    with pytest.raises(MissingFileError, match="resume checkpoint .* does not exist"):
        train.main(options(world, tmp_path / "x", f"run.resume_ckpt_path={tmp_path / 'none.pth'}"))


def test_impossible_batching_and_devices(world, tmp_path):
    with pytest.raises(ConfigError, match=r"an epoch has 1 batches, fewer than run.accum_grad_iters=2"):
        train.main(options(world, tmp_path / "x", "run.accum_grad_iters=2", "run.batch_size_train=4"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no GPU is visible"):
            train.main(options(world, tmp_path / "x", "run.device=cuda"))
    with pytest.raises(ConfigError, match="is not a device"):
        train.main(options(world, tmp_path / "x", "run.device=gpu0"))


@pytest.mark.slow
def test_a_diverging_loss_stops_with_the_last_checkpoint_kept(world, tmp_path, monkeypatch):
    from regionvlm.tasks.captioning import RegionCaptioningTask

    calls = {"n": 0}
    real = RegionCaptioningTask.train_step

    def diverging(self, model, samples):
        calls["n"] += 1
        loss = real(self, model, samples)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(RegionCaptioningTask, "train_step", diverging)
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match="the training loss became nan at epoch 1, iteration 0"):
        train.main(options(world, out, "run.max_epoch=2", "run.save_every_steps=1"))
    assert load_training_checkpoint(out / "checkpoint_latest.pth")["step"] == 2


def test_unwritable_output_is_one_line_and_keeps_nothing_half_written(world, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("previous run\n")
    from regionvlm.common import io

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(io.tempfile, "mkstemp", read_only)
    with pytest.raises(SystemExit) as exc:
        run(train.main, options(world, out))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: cannot write") and "read-only" in err[-1] and "Traceback" not in "".join(err)
    assert (out / "config.yaml").read_text() == "previous run\n"
    assert not list(out.glob(".*.tmp"))


def test_output_dir_that_is_a_file(world, tmp_path):
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(OutputError, match="a file of that name exists"):
        train.main(options(world, tmp_path / "taken"))
