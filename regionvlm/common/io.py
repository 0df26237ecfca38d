"""Files that survive crashes and full disks: atomic writes, friendly JSON reads, and
append-only JSONL progress logs that recover from torn rows.

Every output of the project goes through :func:`atomic_open`: the bytes are written to a
temporary file beside the target and renamed over it only when complete, so a reader (or a
resumed run) never sees half a file, the previous version stays intact when writing fails,
and no temporary file is left behind — including ones a killed earlier writer of the same
target left. Write failures that are the environment's fault (full disk, read-only folder,
no permission) become :class:`~regionvlm.common.errors.OutputError` with the path and the
reason; anything else keeps its traceback.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import IO, Any, Dict, Iterator, List, Optional, Tuple

from regionvlm.common.errors import InputError, MissingFileError, OutputError, RegionVLMError

_TMP_SUFFIX = ".tmp"
_ENV_ERRNOS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EISDIR: "a folder of that name exists",
    errno.ENOTDIR: "a file stands where a folder is expected",
}


_ERRNO_IN_TEXT = (
    re.compile(r"os error (\d+)"),  # Rust's std::io::Error (safetensors, tokenizers)
    re.compile(r"\[Errno (\d+)\]"),  # Python's OSError text, wrapped by another library
)
_REASON_IN_TEXT = {
    "No space left on device": errno.ENOSPC,
    "Disk quota exceeded": errno.EDQUOT,
    "Read-only file system": errno.EROFS,
}
_NEARLY_FULL_BYTES = 1 << 20


def output_error(exc: OSError, path: str | Path, action: str = "write") -> Exception:
    """The user-facing error for an OSError raised while writing ``path`` (or ``exc`` itself
    when it is not an environment problem). The message names the file and its folder."""
    reason = _ENV_ERRNOS.get(exc.errno or -1)
    if reason is None:
        return exc
    path = Path(path)
    hint = (
        f"free some space in '{path.parent}' or choose an output folder on another disk"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT)
        else "choose an output folder you can write to"
    )
    return OutputError(f"cannot {action} '{path}': {reason} ({hint}).")


def environment_cause(exc: BaseException, folder: Optional[str | Path] = None) -> Optional[OSError]:
    """The environment fault (full disk, quota, read-only or forbidden folder) behind an
    exception raised while writing, whatever type the writing library gave it: an OSError
    anywhere in the exception's chain (``torch.save`` raises RuntimeError from its C++
    writer, with the OSError of the failed ``write`` as its context), an errno in the text
    (safetensors and tokenizers raise their own types carrying Rust's "(os error 28)"), or,
    last, a ``folder`` whose file system has no space left after the failure."""
    seen = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _ENV_ERRNOS:
            return current
        text = str(current)
        for pattern in _ERRNO_IN_TEXT:
            match = pattern.search(text)
            if match and int(match.group(1)) in _ENV_ERRNOS:
                code = int(match.group(1))
                return OSError(code, os.strerror(code))
        for words, code in _REASON_IN_TEXT.items():
            if words in text:
                return OSError(code, os.strerror(code))
        current = current.__cause__ or current.__context__
    if folder is not None and not isinstance(exc, (KeyboardInterrupt, SystemExit)):
        try:
            stats = os.statvfs(folder)
        except OSError:
            return None
        if stats.f_bavail * stats.f_frsize < _NEARLY_FULL_BYTES:
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return None


def _fail(exc: BaseException, path: Path) -> BaseException:
    """What a failed write of ``path`` raises: OutputError for an environment fault, else ``exc``."""
    if isinstance(exc, RegionVLMError):
        return exc
    cause = environment_cause(exc, path.parent)
    return output_error(cause, path) if cause is not None else exc


def require_output_file(path: str | Path) -> None:
    """An ``--out`` that names a folder is refused at once, before any slow work."""
    if Path(path).is_dir():
        raise OutputError(f"cannot write '{path}': it is a folder; give a file name for --out.")


def write_or_print(text: str, out: Optional[str | Path], done: str) -> None:
    """A command's text output: written atomically to ``out`` (then ``done`` is printed with
    the path), or printed when no ``out`` is given."""
    if out:
        atomic_write_text(out, text)
        print(f"{done} -> {out}")
    else:
        print(text, end="")


def ensure_dir(path: str | Path) -> Path:
    """``mkdir -p`` with a clear error when the folder cannot be created."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"cannot create the folder '{path}': a file of that name exists.") from None
    except OSError as exc:
        raise output_error(exc, path, "create the folder") from None
    return path


def _remove_stale_temporaries(path: Path) -> None:
    """Temporary files and folders of an earlier writer of ``path`` that was killed (one
    writer per target)."""
    for stale in path.parent.glob(f".{path.name}.*{_TMP_SUFFIX}"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                stale.unlink()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path``; it replaces ``path`` when the block succeeds and is
    removed when it fails. For writers that need a file name (``safetensors.save_file``)."""
    path = Path(path)
    ensure_dir(path.parent)
    _remove_stale_temporaries(path)
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TMP_SUFFIX)
    except OSError as exc:
        raise output_error(exc, path) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; results are meant to be read by others
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        error = _fail(exc, path)  # before the temporary file is removed: a full disk is still full
        with contextlib.suppress(OSError):
            tmp.unlink()
        if error is exc:
            raise
        raise error from None


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """A temporary folder beside ``path`` to fill; when the block succeeds it replaces
    ``path`` (a folder, or nothing) in one rename, and a previous ``path`` is removed only
    after that. When the block fails the temporary folder is removed and ``path`` is left
    as it was; a full disk or an unwritable folder becomes OutputError naming ``path``,
    whatever library raised it. For outputs that are folders (the Hugging Face export)."""
    path = Path(path)
    ensure_dir(path.parent)
    _remove_stale_temporaries(path)
    try:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TMP_SUFFIX))
    except OSError as exc:
        raise output_error(exc, path) from None
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700 folders; an output is meant to be read by others
        _swap_directory(tmp, path)
    except BaseException as exc:
        error = _fail(exc, path)
        shutil.rmtree(tmp, ignore_errors=True)
        if error is exc:
            raise
        raise error from None


def _swap_directory(tmp: Path, path: Path) -> None:
    """Put the finished folder ``tmp`` at ``path``; readers never see half of either."""
    old = None
    if path.exists() or path.is_symlink():
        old = path.with_name(f".{path.name}.old-{os.getpid()}{_TMP_SUFFIX}")
        os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        if old is not None:
            os.replace(old, path)
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                old.unlink()


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: Optional[str] = "utf-8") -> Iterator[IO[Any]]:
    """``open(path, mode)`` that writes all or nothing (see the module docstring)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files ('w' or 'wb'), not mode {mode!r}.")
    with atomic_path(path) as tmp:
        try:
            f = open(tmp, mode, encoding=encoding if mode == "w" else None)  # noqa: SIM115 (closed below)
        except OSError as exc:
            raise output_error(exc, path) from None
        with f:
            yield f
            f.flush()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_json(path: str | Path, obj: Any, indent: Optional[int] = 1) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def write_jsonl(path: str | Path, rows: Any) -> None:
    with atomic_open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def check_regular_file(path: str | Path, what: str) -> None:
    """Refuse a named pipe, socket or device given where an input file is expected: reading
    one waits for a writer (or never ends). Missing paths and folders are left to the caller,
    which names them in its own words."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return
    kinds = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"))
    kind = next((name for test, name in kinds if test(mode)), "a device" if stat.S_ISBLK(mode) else "not a file")
    raise InputError(f"{what} '{path}' is {kind}; give a regular file (reading it could wait forever).")


def read_json(path: str | Path, what: str, setting: Optional[str] = None, layout: Optional[str] = None) -> Any:
    """Parse a JSON file; a missing, unreadable or malformed file stops with its path, what
    it should be (``what``/``layout``) and the setting that points to it."""
    path = Path(path).expanduser()
    via = f" (set by `{setting}`)" if setting else ""
    expected = f" It should be {layout}." if layout else ""
    if path.is_dir():
        raise InputError(f"{what} '{path}'{via} is a folder; give the file.{expected}")
    check_regular_file(path, what)
    if not path.is_file():
        raise MissingFileError(f"{what} not found at '{path}'{via}.{expected}")
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{what} '{path}'{via} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}).{expected}"
        ) from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} '{path}'{via} is not UTF-8 text ({exc.reason}).{expected}") from None
    except RecursionError:
        raise InputError(f"{what} '{path}'{via} is nested too deeply to be a real annotation file.") from None
    except OSError as exc:
        raise InputError(f"cannot read {what} '{path}'{via}: {exc.strerror or exc}.") from None


# ----------------------------------------------------------------- progress logs
class JsonlAppender:
    """Append one JSON object per line and flush it to disk (a resumable progress log).

    A process killed mid-write leaves a torn last row; opening the log again ends that row
    with a newline, so later rows never merge into it and :func:`read_jsonl` skips it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        ensure_dir(self.path.parent)
        try:
            self._f = open(self.path, "ab")  # noqa: SIM115 (open for the log's life)
            if self._f.tell() > 0 and not _ends_with_newline(self.path):
                self._f.write(b"\n")
        except OSError as exc:
            raise output_error(exc, self.path) from None

    def write(self, obj: Dict[str, Any]) -> None:
        """Append one row; a row that cannot be written whole (full disk) is cut off again,
        so the log holds only whole rows."""
        row = json.dumps(obj).encode("utf-8") + b"\n"
        start: Optional[int] = None
        try:
            start = self._f.tell()
            self._f.write(row)
            self._f.flush()
            os.fsync(self._f.fileno())
        except OSError as exc:
            self._cut(start)
            raise output_error(exc, self.path) from None

    def _cut(self, size: Optional[int]) -> None:
        """Drop what a failed write left after ``size`` bytes (the buffer too: reopen the file)."""
        with contextlib.suppress(OSError):
            self._f.close()
        with contextlib.suppress(OSError):
            if size is not None:
                os.truncate(self.path, size)
        with contextlib.suppress(OSError):
            self._f = open(self.path, "ab")  # noqa: SIM115 (open for the log's life)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._f.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def read_jsonl_rows(path: str | Path) -> Tuple[List[Dict[str, Any]], int]:
    """``(rows, torn)``: the complete JSON-object rows of a log and how many rows were torn
    or otherwise unreadable (skipped; the work they recorded is simply done again)."""
    path = Path(path)
    if not path.exists():
        return [], 0
    rows: List[Dict[str, Any]] = []
    torn = 0
    with open(path, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                torn += 1
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                torn += 1
    return rows, torn


def read_jsonl(path: str | Path) -> List[Dict[str, Any]]:
    """The readable rows of a JSONL log (torn rows of killed writers are skipped)."""
    return read_jsonl_rows(path)[0]
