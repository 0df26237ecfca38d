"""Real full disks for the fault tests: a small tmpfs mounted for one test (the tests run as
root in CI; elsewhere they are skipped with the reason), and a filler that leaves a chosen
number of bytes free. Writers then meet the errors the kernel really gives (ENOSPC), raised
through whatever library does the writing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def mount_tmpfs(point: Path, size: str) -> Path:
    """Mount a tmpfs of ``size`` (``"2m"``, ``"512k"``) at ``point``; skip the test if not permitted."""
    point.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no `mount` command: cannot make a small real disk to fill")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(point)], capture_output=True, text=True
    )
    if proc.returncode:
        pytest.skip(f"mounting a tmpfs is not permitted here ({proc.stderr.strip()}); run as root to fill a disk")
    return point


def unmount(point: Path) -> None:
    subprocess.run(["umount", "-l", str(point)], check=False, capture_output=True)


def free_bytes(folder: Path) -> int:
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


def fill_disk(folder: Path, leave: int = 0) -> Path:
    """Fill the file system of ``folder`` with one more filler file until about ``leave``
    bytes are free; returns the filler."""
    filler = folder / f"filler{len(list(folder.glob('filler*')))}"
    todo = max(0, free_bytes(folder) - leave)
    chunk = b"\0" * (1 << 20)
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while todo > 0:
            todo -= os.write(fd, chunk[: min(len(chunk), todo)])
    except OSError:  # full already
        pass
    finally:
        os.close(fd)
    return filler
