"""Training and evaluation runs under bad settings and faults: each ends in one clear error
(the command line: exit 2, one line, no traceback), leaves earlier outputs intact and no
temporary file, and never continues silently with something other than what was asked."""

from __future__ import annotations

import errno
import json
import re
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


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_a_real_full_disk_during_a_checkpoint_keeps_the_previous_one(world, small_disk, monkeypatch, fmt, capsys):
    """The disk fills up (a real tmpfs) after the first checkpoint: the second one fails with
    one line naming the folder; the first checkpoint is intact, no temporary file is left and
    log.jsonl holds whole rows only."""
    from full_disk import fill_disk, free_bytes

    from regionvlm.runners.runner_base import RunnerBase

    out = small_disk("96m") / "run"
    real_save = RunnerBase.save_checkpoint

    def save_then_fill(self, *args, **kwargs):
        path = real_save(self, *args, **kwargs)
        if not list(out.parent.glob("filler*")):
            fill_disk(out.parent, leave=min(free_bytes(out.parent), path.stat().st_size // 2))
        return path

    monkeypatch.setattr(RunnerBase, "save_checkpoint", save_then_fill)
    with pytest.raises(SystemExit) as exc:
        run(train.main, options(world, out, "run.save_every_steps=1", f"run.save_format={fmt}"))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err), err
    assert err[-1].startswith(f"error: cannot write '{out}/checkpoint_latest.{fmt}': the disk is full")
    assert f"free some space in '{out}'" in err[-1]
    assert load_training_checkpoint(out / f"checkpoint_latest.{fmt}")["step"] == 1
    assert not list(out.glob(".*.tmp"))
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in rows] == [0, 1]


@pytest.mark.parametrize(
    "leave, where",
    [(0, r"\.\w+\.partial\.rank0\.jsonl"), (4096, r"\.json")],
    ids=["at-the-progress-log", "at-the-results"],
)
def test_a_real_full_disk_during_an_evaluation(tmp_path, small_disk, leave, where):
    """An evaluation whose output folder fills up (a real tmpfs) stops with OutputError naming
    the folder, whether the progress log or the results meet the full disk; no temporary file
    is left and, with space freed, the same command finishes with the results of a normal run."""
    from full_disk import fill_disk
    from test_refer import write_refer_fixture
    from test_ris import FakeModel, _evaluate

    roots = write_refer_fixture(tmp_path / "refer")
    expected = _evaluate(FakeModel(), roots, tmp_path / "normal")["bytes"]
    out = small_disk("1m") / "eval"
    filler = fill_disk(out.parent, leave=leave)
    with pytest.raises(OutputError, match=rf"cannot write '{out}/ris_refcoco_unc_val{where}': the disk is full"):
        _evaluate(FakeModel(), roots, out)
    assert not list(out.glob(".*.tmp")) and not list(out.glob("ris_refcoco_unc_val*.json"))
    filler.unlink()
    assert _evaluate(FakeModel(), roots, out)["bytes"] == expected


@pytest.mark.parametrize("size, previous", [("1m", False), ("40m", True)], ids=["tokenizer-files", "weights"])
def test_a_real_full_disk_during_the_hugging_face_export(small_disk, capsys, size, previous):
    """The export command on a disk that fills up while the tokenizer files (1 MiB disk) or
    the weights (an earlier export takes most of 40 MiB) are written: one line naming the
    folder, exit 2, no half export, an earlier export intact."""
    from regionvlm import export
    from regionvlm.quickstart import bundled_checkpoint

    out = small_disk(size) / "hf"
    argv = ["hf", "--checkpoint", str(bundled_checkpoint()), "--model-type", "tiny", "--out", str(out)]
    if previous:
        export.main(argv)
        before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(SystemExit) as exc:
        run(export.main, argv + ["--overwrite"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith(f"error: cannot write '{out}': the disk is full (free some space")
    assert sorted(p.name for p in out.parent.iterdir()) == (["hf"] if previous else [])
    if previous:
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_a_real_full_disk_while_writing_proposals_and_annotations(tmp_path, small_disk, capsys):
    """The proposal command (PNG import) and the annotation preprocessors (Localized
    Narratives: its per-file parts and its output; Visual Genome) on a full disk: exit 2 with
    one line naming the folder, nothing half-written left, earlier files intact."""
    import numpy as np
    from full_disk import fill_disk
    from PIL import Image

    from regionvlm import proposals
    from regionvlm.data import localized_narratives as ln
    from regionvlm.data import visual_genome as vg

    def one_line_error(main, argv):
        with pytest.raises(SystemExit) as exc:
            run(main, argv)
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
        assert exc.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err
        return lines[0]

    disk = small_disk("2m")
    pngs = tmp_path / "pngs"
    for image in ("a", "b"):
        (pngs / image).mkdir(parents=True)
        mask = np.zeros((300, 400), dtype=np.uint8)
        mask[:150, :200] = 255
        Image.fromarray(mask).save(pngs / image / "0.png")
    lines = tmp_path / "ln.jsonl"
    narrative = {
        "dataset_id": "coco",
        "image_id": "1",
        "annotator_id": 1,
        "caption": "a dog.",
        "timed_caption": [{"utterance": "a dog.", "start_time": 0.0, "end_time": 1.0}],
        "traces": [[{"x": 0.1, "y": 0.2, "t": 0.5}]],
    }
    lines.write_text("\n".join(json.dumps(narrative) for _ in range(2000)) + "\n")
    regions = tmp_path / "vg.json"
    regions.write_text(
        json.dumps(
            [
                {"id": i, "regions": [{"image_id": i, "phrase": "a dog", "x": 1, "y": 1, "width": 5, "height": 5}]}
                for i in range(2000)
            ]
        )
    )
    (disk / "keep.json").write_text("earlier output\n")
    fill_disk(disk, leave=0)
    folder = f"free some space in '{disk}'"
    message = one_line_error(
        proposals.main, ["--import-png-dir", str(pngs), "--out", str(disk / "props"), "--no-progress"]
    )
    assert (
        message.startswith(f"error: cannot write '{disk}/props/a.json': the disk is full")
        and folder.replace(str(disk), str(disk / "props")) in message
    )
    message = one_line_error(
        ln.main, ["--input", str(lines), "--out", str(disk / "ln.json"), "--no-check-images", "--quiet"]
    )
    assert message.startswith(f"error: cannot write '{disk}/ln.json': the disk is full") and folder in message
    message = one_line_error(
        vg.main, ["--regions", str(regions), "--out", str(disk / "vg.json"), "--no-check-images", "--quiet"]
    )
    assert (
        re.match(rf"error: cannot write '{disk}/vg(\.report)?\.json': the disk is full", message) and folder in message
    )
    assert sorted(p.name for p in disk.iterdir() if not p.name.startswith("filler")) == ["keep.json", "props"]
    assert (disk / "keep.json").read_text() == "earlier output\n" and not list((disk / "props").iterdir())


@pytest.mark.slow
@pytest.mark.parametrize(
    "change, listed",
    [
        ("datasets.regionvlm_mix.epoch_length=8", r"items_per_epoch \(items per epoch: .*\): 4 -> 8"),
        ("datasets.regionvlm_mix.epoch_length=8", r"steps_per_epoch \(iterations per epoch\): 2 -> 4"),
        (
            "datasets.regionvlm_mix.samples_per_image=1",
            r"samples_per_image \(datasets.<name>.samples_per_image\): 2 -> 1",
        ),
        (
            "run.lr_sched=linear_warmup_cosine_lr",
            r"lr_sched: 'linear_warmup_step_cosine_lr' -> 'linear_warmup_cosine_lr'",
        ),
        ("run.train_splits=[train,val]", r"train_splits: \['train'\] -> \['train', 'val'\]"),
    ],
)
def test_a_resume_that_would_change_the_plan_is_refused(world, finished, change, listed):
    """Not only the run: settings: whatever sets the steps per epoch or the schedule (the data's
    length, samples per image) is recorded in the checkpoint and must stay."""
    with pytest.raises(ConfigError, match=rf"written with other settings \(.*{listed}"):
        train.main(options(world, finished, "run.resume_ckpt_path=latest", change))


@pytest.mark.slow
def test_a_new_run_into_another_runs_folder_is_refused_unless_overwrite(world, finished, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("checkpoint_latest.pth", "log.jsonl"):
        (out / name).write_bytes((finished / name).read_bytes())
    (out / "checkpoint_7.pth").write_bytes(b"an epoch checkpoint of the longer earlier run")
    (out / "notes.txt").write_text("the user's own file")
    listed = r"holds another training run \(checkpoint_7.pth, checkpoint_latest.pth, log.jsonl\)"
    with pytest.raises(ConfigError, match=listed + r".*run.resume_ckpt_path=latest.*run.overwrite=true"):
        train.main(options(world, out))
    assert (out / "checkpoint_7.pth").exists() and len((out / "log.jsonl").read_text().splitlines()) == 2
    train.main(options(world, out, "run.overwrite=true"))
    assert not (out / "checkpoint_7.pth").exists() and (out / "notes.txt").read_text() == "the user's own file"
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in rows] == [0, 1]  # the new run's rows only
    assert "removed the previous run's 3 file(s)" in capsys.readouterr().out


@pytest.mark.slow
def test_several_evaluations_into_one_output_folder_keep_every_result(tmp_path):
    """Each evaluation's files are named by task, variant, dataset and split, and the runner
    appends one evaluate.jsonl row per evaluation: nothing written earlier is overwritten."""
    from test_refer import write_refer_fixture

    world = tmp_path / "world"
    write_refer_fixture(
        world / "refer", dataset="synthetic", image_dir=world / "images", proposal_dir=world / "proposals"
    )
    out = tmp_path / "out"
    yaml = tmp_path / "ris.yaml"
    yaml.write_text(
        "model: {arch: regionvlm_t5, model_type: tiny}\n"
        f"datasets: {{ris_synthetic: {{world: '{world}', split: val}}}}\n"
        f"run: {{task: ris, evaluate: true, device: cpu, output_dir: '{out}', prefetch: 0}}\n"
    )
    first = train.main(["--cfg-path", str(yaml)])
    second = train.main(["--cfg-path", str(yaml), "--options", "run.region_prompt=box"])
    third = train.main(["--cfg-path", str(yaml), "--options", "run.seed=7"])  # same files: the newest result
    assert sorted(p.name for p in out.glob("*_metrics.json")) == [
        "ris-box_synthetic_unc_val_metrics.json",
        "ris_synthetic_unc_val_metrics.json",
    ]
    rows = [json.loads(line) for line in (out / "evaluate.jsonl").read_text().splitlines()]
    assert [r["metrics"] for r in rows] == [first, second, third] and all(r["task"] == "ris" for r in rows)
    assert (
        json.loads((out / "ris-box_synthetic_unc_val_metrics.json").read_text())["settings"]["region_prompt"] == "box"
    )
