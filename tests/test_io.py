"""Files that survive faults: atomic writes under a full disk or a read-only folder leave the
previous output intact and no temporary file; progress logs recover from torn rows anywhere."""

from __future__ import annotations

import errno
import json
import os
import re
import stat

import pytest
import torch

from regionvlm.common import io
from regionvlm.common.errors import InputError, MissingFileError, OutputError


def test_atomic_write_replaces_whole_files_and_cleans_stale_temporaries(tmp_path):
    target = tmp_path / "out" / "result.json"
    stale = target.parent / f".{target.name}.abc123.tmp"
    target.parent.mkdir()
    stale.write_text("half of a killed write")
    io.atomic_write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1} and not stale.exists()
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_full_disk_keeps_the_previous_output_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    io.atomic_write_json(target, {"old": True})

    class FullDisk:
        """A file whose disk fills up after the first bytes."""

        def __init__(self, *args, **kwargs):
            self._f = open(*args, **kwargs)  # noqa: SIM115 (a wrapper that owns the file)

        def write(self, data):
            self._f.write(data[:10])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

    monkeypatch.setattr(io, "open", FullDisk, raising=False)  # what atomic_open calls
    with pytest.raises(OutputError, match=r"cannot write '.*metrics.json': the disk is full"):
        io.atomic_write_json(target, {"new": True, "pad": "x" * 100_000})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_full_disk_during_a_checkpoint_save(tmp_path, monkeypatch):
    target = tmp_path / "checkpoint.pth"
    real_save = torch.save

    def full(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OutputError, match="the disk is full"):
        io.atomic_torch_save({"x": torch.zeros(2)}, target)
    monkeypatch.setattr(torch, "save", real_save)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_a_clear_error(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="permission denied"):
            io.atomic_write_text(folder / "x.txt", "x")
    finally:
        folder.chmod(0o755)


def test_read_only_folder_is_a_clear_error_even_for_root(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(io.tempfile, "mkstemp", denied)
    with pytest.raises(OutputError, match=r"cannot write '.*x.txt': the file system is read-only"):
        io.atomic_write_text(tmp_path / "x.txt", "x")


def test_output_folder_that_is_a_file(tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(OutputError, match="a file of that name exists"):
        io.atomic_write_text(tmp_path / "out" / "x.txt", "x")


def test_progress_log_recovers_from_a_torn_row_anywhere(tmp_path):
    log = tmp_path / "progress.jsonl"
    with io.JsonlAppender(log) as a:
        a.write({"key": "1", "result": 1})
    with open(log, "a") as f:
        f.write('{"key": "2", "res')  # a killed write
    with io.JsonlAppender(log) as a:  # the next run appends after it
        a.write({"key": "3", "result": 3})
    with open(log, "a") as f:
        f.write("\x00\x00garbage\n")
    rows, torn = io.read_jsonl_rows(log)
    assert rows == [{"key": "1", "result": 1}, {"key": "3", "result": 3}] and torn == 2
    from regionvlm.tasks.evaluation import finished_items

    (tmp_path / "x.partial.rank0.jsonl").write_text(log.read_text())
    assert finished_items(tmp_path, "x") == {"1": 1, "3": 3}


def test_read_json_names_the_file_and_the_problem(tmp_path):
    with pytest.raises(MissingFileError, match=r"annotation file not found at '.*nope.json' \(set by `datasets.x`\)"):
        io.read_json(tmp_path / "nope.json", "annotation file", "datasets.x")
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": ')
    with pytest.raises(InputError, match=r"is not valid JSON \(Expecting value at line 1, column 7\)"):
        io.read_json(bad, "annotation file")
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InputError, match="is not UTF-8|is not valid JSON"):
        io.read_json(bad, "annotation file")


# ---------------------------------------------------------------- a real full disk (tmpfs)
def test_real_full_disk_every_writer_keeps_the_previous_file(small_disk):
    """JSON, torch.save (RuntimeError from its C++ writer) and safetensors (its own error type)
    on a real full file system: OutputError naming the file and its folder, the previous
    version intact, no temporary file."""
    from full_disk import fill_disk
    from safetensors.torch import save_file

    from regionvlm.common.checkpoints import load_training_checkpoint, save_training_checkpoint

    disk = small_disk("1m")
    io.atomic_write_json(disk / "metrics.json", {"old": True})
    state = {"model": {"w": torch.zeros(4)}, "optimizer": {}, "step": 1, "rng": {}}
    save_training_checkpoint(state, disk / "ckpt.pth", "pth")
    save_training_checkpoint(state, disk / "ckpt.safetensors", "safetensors")
    fill_disk(disk, leave=8192)
    big = {"model": {"w": torch.zeros(100_000)}, "optimizer": {}, "step": 2, "rng": {}}
    folder = re.escape(str(disk))
    with pytest.raises(
        OutputError, match=rf"cannot write '.*metrics.json': the disk is full \(free some space in '{folder}'"
    ):
        io.atomic_write_json(disk / "metrics.json", {"new": "x" * 100_000})
    with pytest.raises(OutputError, match=r"ckpt.pth': the disk is full"):
        save_training_checkpoint(big, disk / "ckpt.pth", "pth")
    with pytest.raises(OutputError, match=r"ckpt.safetensors': the disk is full"):
        save_training_checkpoint(big, disk / "ckpt.safetensors", "safetensors")
    # the library's own error type, translated
    with pytest.raises(OutputError, match="the disk is full"), io.atomic_path(disk / "raw.safetensors") as tmp:
        save_file({"w": torch.zeros(100_000)}, str(tmp))
    assert json.loads((disk / "metrics.json").read_text()) == {"old": True}
    assert load_training_checkpoint(disk / "ckpt.pth")["step"] == 1
    assert load_training_checkpoint(disk / "ckpt.safetensors")["step"] == 1
    assert sorted(p.name for p in disk.iterdir() if not p.name.startswith("filler")) == [
        "ckpt.pth",
        "ckpt.safetensors",
        "metrics.json",
    ]


def test_real_full_disk_progress_log_keeps_whole_rows_only(small_disk):
    from full_disk import fill_disk

    disk = small_disk("1m")
    log = disk / "log.jsonl"
    with io.JsonlAppender(log) as appender:
        appender.write({"step": 1})
        before = log.read_bytes()
        fill_disk(disk)
        with pytest.raises(OutputError, match=r"log.jsonl': the disk is full"):
            appender.write({"step": 2, "pad": "x" * 20_000})  # more than the page the last row left
    assert log.read_bytes() == before
    assert io.read_jsonl_rows(log) == ([{"step": 1}], 0)


def test_real_full_disk_directory_output(small_disk):
    from full_disk import fill_disk

    disk = small_disk("1m")
    with io.atomic_directory(disk / "export") as tmp:
        (tmp / "a.txt").write_text("previous")
    fill_disk(disk, leave=4096)
    with (
        pytest.raises(OutputError, match=r"cannot write '.*export': the disk is full"),
        io.atomic_directory(disk / "export") as tmp,
    ):
        (tmp / "a.txt").write_text("x" * 200_000)
    assert (disk / "export" / "a.txt").read_text() == "previous"
    assert sorted(p.name for p in disk.iterdir() if not p.name.startswith("filler")) == ["export"]


def test_library_errors_are_translated_by_their_errno():
    """What each writing library raises for ENOSPC/EROFS/EDQUOT, as seen on real disks."""
    torch_error = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    torch_error.__context__ = OSError(errno.ENOSPC, "No space left on device")
    rust = Exception("Error while serializing: I/O error: Read-only file system (os error 30)")
    quota = ValueError("I/O error: Disk quota exceeded (os error 122)")
    assert io.environment_cause(torch_error).errno == errno.ENOSPC
    assert io.environment_cause(rust).errno == errno.EROFS
    assert io.environment_cause(quota).errno == errno.EDQUOT
    assert io.environment_cause(RuntimeError("a bug")) is None
    assert io.environment_cause(OSError(errno.EIO, "I/O error")) is None
