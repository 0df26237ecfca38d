"""What the annotation preprocessors share (Localized Narratives, Video Localized Narratives,
Visual Genome): reading JSON lines with a progress bar, a report of what happened to every
input, a streaming writer of the output list, and the command-line skeleton.

Each preprocessor turns raw annotations into the project's region-caption annotation JSON
(a list of images with their sentences' points) and writes ``<out stem>.report.json`` beside
it; a run that would write nothing usable is an error that points to that report. A bad line
never stops a run: it is counted and listed (:class:`MalformedRecord`), the rest is kept.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from tqdm import tqdm

from regionvlm.common.errors import ConfigError, InputError
from regionvlm.common.io import atomic_open, atomic_write_json, require_output_file

MAX_LISTED = 20  # items of each problem list printed in the summary (the report file has more)


class MalformedRecord(ValueError):
    """A line whose content cannot be used: counted and listed in the report, never fatal."""


def iter_lines(path: Path, progress: bool) -> Iterator[Tuple[int, bytes]]:
    """``(line number, raw bytes)`` of a JSON-lines file, with a progress bar in bytes."""
    with (
        open(path, "rb") as f,
        tqdm(
            total=path.stat().st_size,
            unit="B",
            unit_scale=True,
            desc=path.name,
            disable=not progress,
            dynamic_ncols=True,
        ) as bar,
    ):
        for lineno, line in enumerate(f, start=1):
            bar.update(len(line))
            yield lineno, line


def decode_line(raw: bytes) -> Any:
    """The JSON value of one line; what cannot be decoded is a :class:`MalformedRecord`."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise MalformedRecord(f"invalid JSON ({exc.msg} at column {exc.colno})") from None
    except UnicodeDecodeError:
        raise MalformedRecord("not UTF-8 text") from None
    except RecursionError:
        raise MalformedRecord("JSON nested too deeply") from None


def iter_records(
    path: Path, progress: bool, report: "ReportBase", parse: Callable[[Any], Any]
) -> Iterator[Tuple[str, Any]]:
    """``(where, parse(JSON value))`` of every usable line of a JSON-lines file; blank lines
    and lines that cannot be decoded or parsed are counted (and listed) in ``report``."""
    for lineno, raw in iter_lines(path, progress):
        report.lines += 1
        if not raw.strip():
            report.blank_lines += 1
            continue
        where = f"{path}:{lineno}"
        try:
            record = parse(decode_line(raw))
        except MalformedRecord as exc:
            report.add_malformed(f"{where}: {exc}")
            continue
        yield where, record


@dataclass
class ReportBase:
    """Counts every preprocessor keeps: lines read, blank lines, malformed lines (counted in
    full, listed up to ``LIST_CAP``) and images without a file."""

    LIST_CAP = 1_000_000  # a subclass caps its lists for huge inputs

    lines: int = 0
    blank_lines: int = 0
    malformed_count: int = 0
    malformed: List[str] = field(default_factory=list)
    missing_images: List[str] = field(default_factory=list)

    def add_malformed(self, message: str) -> None:
        self.malformed_count += 1
        capped_append(self.malformed, message, self.LIST_CAP)


def listed(sections: Sequence[Tuple[str, Sequence[str], int]]) -> List[str]:
    """Summary lines of problem lists ``(title, items, total)``: the first few of each."""
    out: List[str] = []
    for title, items, total in sections:
        if items:
            more = f" (first {MAX_LISTED} of {total}; the report file lists them)" if total > MAX_LISTED else ""
            out.append(f"{title}{more}:")
            out.extend(f"  {m}" for m in items[:MAX_LISTED])
    return out


def capped_append(items: List[str], item: str, cap: int) -> None:
    if len(items) < cap:
        items.append(item)


def report_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".report.json")


def check_readable(path: Path, what: str) -> None:
    """Stop early, naming the file, when an input exists but cannot be opened."""
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise InputError(f"cannot read {what} '{path}': {exc.strerror or exc}.") from None


def nothing_usable(what: str, inputs: Sequence[Any], details: str, out: Path) -> InputError:
    """The error for a run that would write an empty annotation file (nothing to train on)."""
    names = ", ".join(f"'{p}'" for p in list(inputs)[:3]) + (" ..." if len(inputs) > 3 else "")
    return InputError(
        f"{names} gave no usable {what} ({details}); nothing was written to '{out}'. "
        f"The report '{report_path(out)}' lists every problem."
    )


class JsonListWriter:
    """Writes a JSON list item by item through :func:`~regionvlm.common.io.atomic_open`
    (readers never see a partial file; a failure leaves no output and no temporary file; a
    read-only or full disk is an :class:`~regionvlm.common.errors.OutputError` naming it)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.count = 0

    def __enter__(self) -> "JsonListWriter":
        require_output_file(self.path)
        with contextlib.ExitStack() as stack:
            self._f = stack.enter_context(atomic_open(self.path, "w"))
            self._f.write("[")
            self._stack = stack.pop_all()
        return self

    def write(self, item: Mapping[str, Any]) -> None:
        self.write_raw(json.dumps(item, separators=(",", ":")))

    def write_raw(self, encoded_item: str) -> None:
        """Append an item that is already JSON text."""
        self._f.write(("\n" if self.count == 0 else ",\n") + encoded_item)
        self.count += 1

    def __exit__(self, exc_type, exc, tb) -> Optional[bool]:
        if exc_type is not None:
            return self._stack.__exit__(exc_type, exc, tb)
        with self._stack:  # a failing last write is handled by atomic_open like any other
            self._f.write("\n]\n")
        return None


def write_records(
    out: str | Path,
    records: Iterable[Mapping[str, Any]],
    report: Any,
    *,
    write_report: bool,
    allow_empty: bool,
    empty: Tuple[str, Sequence[Any], Any],
) -> None:
    """Stream ``records`` into the annotation file ``out``, write ``report`` beside it, and
    refuse (leaving no output) a run that wrote nothing unless ``allow_empty``. ``empty`` is
    ``(what, inputs, details)`` for that error; ``details`` may be a callable of the report
    (the counts are final only after the stream)."""
    with JsonListWriter(out) as writer:
        for record in records:
            writer.write(record)
        if write_report:
            atomic_write_json(report_path(out), report.as_dict())
        if writer.count == 0 and not allow_empty:  # inside the writer: the empty output is discarded
            what, inputs, details = empty
            raise nothing_usable(what, inputs, details() if callable(details) else details, Path(out))


class Parser(argparse.ArgumentParser):
    """The preprocessors' argument parser: a usage error is one ``error:`` line (exit 2), as
    every user error of the project."""

    def error(self, message: str) -> None:
        raise ConfigError(f"{message} (see --help)")


def add_output_arguments(parser: argparse.ArgumentParser, points: int, root: str) -> None:
    """The flags every preprocessor has: output, points per sentence, image checks, paths, progress."""
    parser.add_argument("--out", required=True, help="output annotation JSON")
    parser.add_argument("--points", type=int, default=points, help=f"points per sentence ({points})")
    parser.add_argument(
        "--no-check-images", action="store_true", help="do not look for image files: write the first candidate path"
    )
    parser.add_argument(
        "--relative-paths",
        action="store_true",
        help=f"write image paths relative to {root} (set the dataset's image_root)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def finish(report: Any, out: str | Path) -> Any:
    """Print a run's summary and where its files are; return the report."""
    print(report.summary())
    print(f"wrote {out} and {report_path(out)}")
    return report


def parse_patterns(items: Iterable[str]) -> Dict[str, List[str]]:
    """``["coco=a/{image_id}.jpg", "coco=b/{image_id}.jpg"]`` -> ``{"coco": [a, b]}``."""
    out: Dict[str, List[str]] = {}
    for item in items:
        key, sep, pattern = item.partition("=")
        if not sep or not key.strip() or not pattern.strip():
            raise ConfigError(
                f"--image-pattern expects KEY=PATTERN (e.g. "
                f"coco=coco/images/train2014/COCO_train2014_{{image_id:0>12}}.jpg), got '{item}'."
            )
        out.setdefault(key.strip(), []).append(pattern.strip())
    return out
