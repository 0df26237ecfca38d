"""Localized Narratives JSONL -> region-caption annotations (the authors' image preprocessing).

Usage::

    python -m regionvlm.data.localized_narratives \\
        --input coco_train_localized_narratives-0000{0..3}-of-00004.jsonl \\
        --image-root /data --out ln_coco_train.json [--points 20] \\
        [--image-pattern coco=coco/images/train2014/COCO_train2014_{image_id:0>12}.jpg ...] \\
        [--no-check-images] [--relative-paths]

Each input line is one official narrative: ``dataset_id, image_id, annotator_id, caption,
timed_caption [{utterance, start_time, end_time}], traces [[{x, y, t}]]``. Per narrative:

1. the caption is split into chunks at ``". "``, ``"."``, ``" and "``, ``","`` (the
   official regular expression ``\\. |\\.| and |\\,|\\, |, and``; its ``", "`` and
   ``", and"`` alternatives never win over ``","``, so ``", and x"`` yields the chunk
   ``"x"``);
2. every trace point whose time ``t`` lies in an utterance's ``[start_time, end_time]``
   (inclusive; a point on a shared boundary belongs to both) goes to that utterance;
3. utterance ``i`` starts at character ``sum(len(u_j) + 1 for j < i)`` (the utterances
   joined by single spaces, as the official script assumes); a chunk spanning characters
   ``[s, s + len(chunk)]`` gets, in order, the points of every utterance starting inside
   that (inclusive) span;
4. each chunk's points are resampled to ``--points`` (20) evenly spaced ones, index
   ``int((n - 1) / 19 * j)``; chunks without points are dropped; an image without any
   chunk is dropped.

Output (atomically written): a JSON list, one entry per narrative (an image described
by two annotators appears twice, as in the official file)::

    {"image_path": ".../COCO_train2014_000000391895.jpg", "image_id": "391895",
     "dataset_id": "mscoco_train2017", "annotator_id": 93,
     "sent_to_points": {"a man riding a bike": [[x, y], ... 20 points]}}

Points are the raw normalized trace coordinates (they can stray slightly outside
``[0, 1]``; the training crop clips them, as the official code does).

Differences from the authors' script, all deliberate: chunk keys are whitespace-stripped
(the caption text processor strips them anyway), whitespace-only chunks are skipped, a
chunk's character span comes from the split itself (the official ``str.find`` gives the
same span except when the chunk's text also occurs inside an earlier separator), an image
whose file is missing is dropped and reported (the official script silently reused the
previous image's path), and a repeated chunk text keeps the last occurrence (as the
official dict does) but is counted.

Image paths: ``dataset_id`` picks a family by a loose name match, as loose as Google's own
loader (which tells Flickr30k by ``'Flic'`` and ADE20k by ``'ADE'``, because the released files
do not spell ``dataset_id`` uniformly): case-insensitive, separators ignored, the first of
``open_images`` (``openimages``: open_images, OpenImages, open_images_train_v6), ``coco``
(``coco``: mscoco_train2017, mscoco_val2017, COCO), ``flickr30k`` (``flic``: Flick30k,
flickr30k) and ``ade20k`` (``ade``: ADE20k, ade20k); a ``dataset_id`` given
exactly in ``--image-pattern`` wins. The family's patterns, relative to
``--image-root``, are tried in order; the first existing file
is used (``--no-check-images``: the first pattern, unchecked). Patterns are Python format
strings with ``{image_id}`` (a string; ``{image_id:0>12}`` zero-pads, ``{image_id[0]}``
is its first character). Defaults (:data:`DEFAULT_IMAGE_PATTERNS`)::

    coco         coco/images/train2014/COCO_train2014_{image_id:0>12}.jpg
                 coco/images/val2014/COCO_val2014_{image_id:0>12}.jpg
    open_images  open_images/images/train_{image_id[0]}/{image_id}.jpg
                 open_images/images/validation/{image_id}.jpg
                 open_images/images/test/{image_id}.jpg
    flickr30k    flickr30k/images/{image_id}.jpg
    ade20k       ade20k/images/training/{image_id}.jpg
                 ade20k/images/validation/{image_id}.jpg

Nothing is dropped silently: malformed lines (bad JSON, missing or mistyped fields,
non-finite numbers, an utterance ending before it starts) are counted and listed as
``file:line: reason``; every dropped chunk or image is counted by reason. The report is
printed and written next to the output as ``<out stem>.report.json``. A run that yields no
usable narrative at all stops with an error (the report is still written, the output is not).
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from regionvlm.common.errors import ConfigError, MissingFileError
from regionvlm.common.io import atomic_write_json, check_regular_file, ensure_dir, output_error, require_output_file
from regionvlm.data.preprocessing import (
    JsonListWriter,
    MalformedRecord,
    Parser,
    ReportBase,
    add_output_arguments,
    check_readable,
    finish,
    iter_records,
    listed,
    nothing_usable,
    parse_patterns,
    report_path,
)
from regionvlm.region import select_in_order

DEFAULT_NUM_POINTS = 20
CHUNK_PATTERN = re.compile(r"\. |\.| and |\,|\, |, and")
REQUIRED_FIELDS = ("dataset_id", "image_id", "caption", "timed_caption", "traces")

DEFAULT_IMAGE_PATTERNS: Dict[str, List[str]] = {
    "coco": [
        "coco/images/train2014/COCO_train2014_{image_id:0>12}.jpg",
        "coco/images/val2014/COCO_val2014_{image_id:0>12}.jpg",
    ],
    "open_images": [
        "open_images/images/train_{image_id[0]}/{image_id}.jpg",
        "open_images/images/validation/{image_id}.jpg",
        "open_images/images/test/{image_id}.jpg",
    ],
    "flickr30k": ["flickr30k/images/{image_id}.jpg"],
    "ade20k": ["ade20k/images/training/{image_id}.jpg", "ade20k/images/validation/{image_id}.jpg"],
}
# Family by a loose name match. The released files spell COCO mscoco_train2017 / mscoco_val2017
# and Open Images open_images; Google's own loader tells Flickr30k by 'Flic' and ADE20k by 'ADE'
# in dataset_id, so match at least that loosely: case-insensitive, separators ignored
# ("Open Images" == "open_images"), first family whose needle occurs.
_FAMILIES = (("open_images", ("openimages",)), ("coco", ("coco",)), ("flickr30k", ("flic",)), ("ade20k", ("ade",)))


def _squashed(name: str) -> str:
    """Lower case, letters and digits only: the form family needles are matched in."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def split_chunks(caption: str, keep_blank: bool = False) -> List[Tuple[str, int, int]]:
    """``(text, start, end)`` of every non-blank chunk of ``caption`` (raw character span;
    ``text`` is stripped); ``keep_blank`` keeps the blank ones too (as ``""``)."""
    chunks: List[Tuple[str, int, int]] = []
    start = 0
    for sep in CHUNK_PATTERN.finditer(caption):
        chunks.append((caption[start : sep.start()], start, sep.start()))
        start = sep.end()
    chunks.append((caption[start:], start, len(caption)))
    return [(text.strip(), s, e) for text, s, e in chunks if keep_blank or text.strip()]


def utterance_starts(utterances: Sequence[str]) -> List[int]:
    """Character offset of each utterance when the utterances are joined by single spaces."""
    starts, pos = [], 0
    for text in utterances:
        starts.append(pos)
        pos += len(text) + 1
    return starts


def points_per_utterance(times: np.ndarray, start_times: np.ndarray, end_times: np.ndarray) -> List[np.ndarray]:
    """Indices (in trace order) of the points with ``start <= t <= end``, per utterance."""
    order = np.argsort(times, kind="stable")
    sorted_t = times[order]
    lo = np.searchsorted(sorted_t, start_times, side="left")
    hi = np.searchsorted(sorted_t, end_times, side="right")
    return [np.sort(order[a:b]) for a, b in zip(lo.tolist(), hi.tolist())]


# --------------------------------------------------------------------------- one narrative
@dataclass
class Narrative:
    """A validated narrative line."""

    dataset_id: str
    image_id: str
    annotator_id: Any
    caption: str
    utterances: List[str]
    start_times: np.ndarray
    end_times: np.ndarray
    points: np.ndarray  # (P, 2) x, y in trace order (traces concatenated)
    times: np.ndarray  # (P,)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MalformedRecord(f"{where} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise MalformedRecord(f"{where} is not finite ({value!r})")
    return float(value)


def parse_narrative(obj: Any) -> Narrative:
    """Validate one decoded JSON line; raise :class:`MalformedRecord` naming the problem."""
    if not isinstance(obj, dict):
        raise MalformedRecord(f"expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in REQUIRED_FIELDS if k not in obj]
    if missing:
        raise MalformedRecord(f"missing field(s) {missing}")
    for key in ("dataset_id", "image_id"):
        if not isinstance(obj[key], (str, int)) or isinstance(obj[key], bool) or str(obj[key]) == "":
            raise MalformedRecord(f"{key} must be a non-empty string, got {obj[key]!r}")
    if not isinstance(obj["caption"], str):
        raise MalformedRecord(f"caption must be a string, got {type(obj['caption']).__name__}")
    timed = obj["timed_caption"]
    if not isinstance(timed, list):
        raise MalformedRecord("timed_caption must be a list")
    utterances, starts, ends = [], [], []
    for i, item in enumerate(timed):
        if not isinstance(item, dict) or not isinstance(item.get("utterance"), str):
            raise MalformedRecord(f"timed_caption[{i}] needs a string 'utterance'")
        if "start_time" not in item or "end_time" not in item:
            raise MalformedRecord(f"timed_caption[{i}] needs 'start_time' and 'end_time'")
        s = _number(item["start_time"], f"timed_caption[{i}].start_time")
        e = _number(item["end_time"], f"timed_caption[{i}].end_time")
        if e < s:
            raise MalformedRecord(f"timed_caption[{i}] ends ({e}) before it starts ({s})")
        utterances.append(item["utterance"])
        starts.append(s)
        ends.append(e)
    traces = obj["traces"]
    if not isinstance(traces, list) or not all(isinstance(t, list) for t in traces):
        raise MalformedRecord("traces must be a list of lists of {x, y, t}")
    flat = [p for trace in traces for p in trace]
    try:
        xyt = np.array([(p["x"], p["y"], p["t"]) for p in flat], dtype=np.float64).reshape(-1, 3)
    except (KeyError, TypeError, ValueError):
        bad = next(
            (
                j
                for j, p in enumerate(flat)
                if not isinstance(p, dict) or not all(isinstance(p.get(k), (int, float)) for k in "xyt")
            ),
            None,
        )
        raise MalformedRecord(f"trace point #{bad} (traces concatenated) needs numeric x, y, t") from None
    if not np.all(np.isfinite(xyt)):
        raise MalformedRecord("trace points contain NaN or infinity")
    return Narrative(
        str(obj["dataset_id"]),
        str(obj["image_id"]),
        obj.get("annotator_id"),
        obj["caption"],
        utterances,
        np.asarray(starts, dtype=np.float64),
        np.asarray(ends, dtype=np.float64),
        xyt[:, :2],
        xyt[:, 2],
    )


@dataclass
class ChunkStats:
    kept: int = 0
    no_points: int = 0
    duplicate_text: int = 0
    image_missing: int = 0
    utterances_without_points: int = 0
    blank_text: int = 0  # chunks with trace points but no words: never a training target


def narrative_chunks(
    n: Narrative, num_points: int = DEFAULT_NUM_POINTS, stats: Optional[ChunkStats] = None
) -> Dict[str, List[List[float]]]:
    """``{chunk text: num_points [x, y]}`` for one narrative (may be empty)."""
    stats = stats if stats is not None else ChunkStats()
    per_utt = points_per_utterance(n.times, n.start_times, n.end_times)
    stats.utterances_without_points += sum(1 for idx in per_utt if idx.size == 0)
    u_starts = utterance_starts(n.utterances)
    result: Dict[str, Optional[np.ndarray]] = {}
    for text, c0, c1 in split_chunks(n.caption, keep_blank=True):
        first, last = bisect.bisect_left(u_starts, c0), bisect.bisect_right(u_starts, c1)
        parts = [per_utt[i] for i in range(first, last) if per_utt[i].size]
        idx = np.concatenate(parts) if parts else None
        if not text:
            stats.blank_text += idx is not None  # a traced region whose caption text is blank: skipped, counted
            continue
        if text in result:
            stats.duplicate_text += 1
        result[text] = idx
    out: Dict[str, List[List[float]]] = {}
    for text, idx in result.items():
        if idx is None:
            stats.no_points += 1
            continue
        chosen = idx[select_in_order(len(idx), num_points, None)]
        out[text] = n.points[chosen].tolist()
    stats.kept += len(out)
    return out


# --------------------------------------------------------------------------- image paths
class ImagePathResolver:
    """Maps ``(dataset_id, image_id)`` to an image file under ``image_root``.

    ``patterns`` replaces the default pattern list of the keys it names; a key matches a
    ``dataset_id`` exactly or, for the four Localized Narratives families, by name."""

    def __init__(
        self,
        image_root: str | Path,
        patterns: Optional[Mapping[str, Sequence[str]]] = None,
        check_exists: bool = True,
        relative: bool = False,
        defaults: Optional[Mapping[str, Sequence[str]]] = None,
    ):
        self.root = Path(image_root).expanduser()
        self.patterns = {k: list(v) for k, v in (DEFAULT_IMAGE_PATTERNS if defaults is None else defaults).items()}
        self.patterns.update({k: list(v) for k, v in (patterns or {}).items()})
        self.check_exists = check_exists
        self.relative = relative
        if check_exists and not self.root.is_dir():
            raise MissingFileError(
                f"image root '{self.root}' is not a directory (set --image-root, "
                f"or pass --no-check-images to write paths without checking)."
            )

    def family(self, dataset_id: str) -> str:
        """The pattern key of ``dataset_id``: itself when given exactly, else the first family
        whose needle occurs in its squashed name (``coco``; ``openimages``; ``flic``: Flick30k,
        flickr30k; ``ade``: ADE20k, ade20k)."""
        if dataset_id in self.patterns:
            return dataset_id
        low = _squashed(dataset_id)
        for fam, needles in _FAMILIES:
            if any(n in low for n in needles) and fam in self.patterns:
                return fam
        raise ConfigError(
            f"no image path pattern for dataset_id '{dataset_id}'. Pass --image-pattern "
            f"{dataset_id}=PATTERN (relative to the image root, e.g. '{dataset_id}/{{image_id}}.jpg'); "
            f"known keys: {sorted(self.patterns)}."
        )

    def candidates(self, dataset_id: str, image_id: str) -> List[str]:
        out = []
        for pattern in self.patterns[self.family(dataset_id)]:
            try:
                out.append(pattern.format(image_id=image_id))
            except (KeyError, IndexError, ValueError, AttributeError) as exc:
                raise ConfigError(
                    f"image pattern '{pattern}' cannot be formatted with "
                    f"image_id='{image_id}' ({exc}); only {{image_id}} is available."
                ) from None
        return out

    def resolve(self, dataset_id: str, image_id: str) -> Optional[str]:
        """The image path (None when checking and no candidate exists)."""
        for rel in self.candidates(dataset_id, image_id):
            if not self.check_exists or (self.root / rel).is_file():
                return rel if self.relative else str(self.root / rel)
        return None


# --------------------------------------------------------------------------- the job
@dataclass
class PreprocessReport(ReportBase):
    """What happened to every line, chunk and image."""

    narratives: int = 0
    images_written: int = 0
    images_dropped: Dict[str, int] = field(default_factory=lambda: {"no_chunks": 0, "missing_image": 0})
    chunks: ChunkStats = field(default_factory=ChunkStats)
    caption_mismatch: int = 0

    @classmethod
    def merge(cls, reports: Sequence["PreprocessReport"]) -> "PreprocessReport":
        """Sum of per-file reports (lists concatenated in file order)."""
        total = cls()
        for r in reports:
            for name in ("lines", "blank_lines", "malformed_count", "narratives", "images_written", "caption_mismatch"):
                setattr(total, name, getattr(total, name) + getattr(r, name))
            for key, value in r.images_dropped.items():
                total.images_dropped[key] = total.images_dropped.get(key, 0) + value
            for name in vars(total.chunks):
                setattr(total.chunks, name, getattr(total.chunks, name) + getattr(r.chunks, name))
            total.malformed.extend(r.malformed)
            total.missing_images.extend(r.missing_images)
        return total

    def as_dict(self) -> Dict[str, Any]:
        c = self.chunks
        return {
            "lines": self.lines,
            "blank_lines": self.blank_lines,
            "narratives": self.narratives,
            "images_written": self.images_written,
            "images_dropped": dict(self.images_dropped),
            "chunks_kept": c.kept,
            "chunks_dropped": {
                "no_points": c.no_points,
                "duplicate_text": c.duplicate_text,
                "image_missing": c.image_missing,
                "blank_text": c.blank_text,
            },
            "utterances_without_points": c.utterances_without_points,
            "caption_mismatch": self.caption_mismatch,
            "malformed_count": self.malformed_count,
            "malformed": list(self.malformed),
            "missing_images": list(self.missing_images),
        }

    def summary(self) -> str:
        c = self.chunks
        return "\n".join(
            [
                f"lines read: {self.lines} ({self.blank_lines} blank), narratives parsed: {self.narratives}, "
                f"malformed: {self.malformed_count}",
                f"images written: {self.images_written}; dropped: {self.images_dropped['no_chunks']} without any "
                f"chunk with points, {self.images_dropped['missing_image']} with no image file",
                f"chunks kept: {c.kept}; dropped: {c.no_points} without trace points, {c.duplicate_text} repeated "
                f"text (last occurrence kept), {c.image_missing} of images without a file, {c.blank_text} traced "
                "but blank (no words); "
                f"utterances without points: {c.utterances_without_points}",
                f"narratives whose utterances do not join to the caption (offsets may shift): {self.caption_mismatch}",
                *listed(
                    [
                        ("malformed lines", self.malformed, self.malformed_count),
                        ("missing images", self.missing_images, len(self.missing_images)),
                    ]
                ),
            ]
        )


def _process_file(
    path: Path, part: Path, resolver: ImagePathResolver, num_points: int, progress: bool
) -> PreprocessReport:
    """One JSONL file -> ``part`` (one output item per line) and its report."""
    report = PreprocessReport()
    with open(part, "w", encoding="utf-8") as sink:
        for where, narrative in iter_records(path, progress, report, parse_narrative):
            report.narratives += 1
            if " ".join(narrative.utterances) != narrative.caption:
                report.caption_mismatch += 1
            chunks = narrative_chunks(narrative, num_points, report.chunks)
            if not chunks:
                report.images_dropped["no_chunks"] += 1
                continue
            image_path = resolver.resolve(narrative.dataset_id, narrative.image_id)
            if image_path is None:
                report.images_dropped["missing_image"] += 1
                report.chunks.kept -= len(chunks)
                report.chunks.image_missing += len(chunks)
                tried = ", ".join(resolver.candidates(narrative.dataset_id, narrative.image_id))
                report.missing_images.append(
                    f"{where}: {narrative.dataset_id}/{narrative.image_id} (tried {tried} under {resolver.root})"
                )
                continue
            sink.write(
                json.dumps(
                    {
                        "image_path": image_path,
                        "image_id": narrative.image_id,
                        "dataset_id": narrative.dataset_id,
                        "annotator_id": narrative.annotator_id,
                        "sent_to_points": chunks,
                    },
                    separators=(",", ":"),
                )
                + "\n"
            )
            report.images_written += 1
    return report


def _process_file_star(args: Tuple[Any, ...]) -> PreprocessReport:
    return _process_file(*args)


def preprocess_localized_narratives(
    inputs: Sequence[str | Path],
    out: str | Path,
    image_root: str | Path = ".",
    num_points: int = DEFAULT_NUM_POINTS,
    patterns: Optional[Mapping[str, Sequence[str]]] = None,
    check_images: bool = True,
    relative_paths: bool = False,
    progress: bool = True,
    write_report: bool = True,
    workers: int = 1,
    allow_empty: bool = False,
) -> PreprocessReport:
    """Stream the JSONL ``inputs`` into the annotation file ``out`` (see the module doc). No
    usable narrative at all is an InputError unless ``allow_empty`` (then ``out`` is ``[]``).

    ``workers > 1`` processes several input files at once (JSON decoding dominates the
    cost); the output keeps the input order either way."""
    if num_points < 1:
        raise ConfigError(f"--points must be at least 1, got {num_points}.")
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}.")
    paths = [Path(p).expanduser() for p in inputs]
    if not paths:
        raise ConfigError("no Localized Narratives file given (--input).")
    for p in paths:
        check_regular_file(p, "Localized Narratives file")
        if not p.is_file():
            raise MissingFileError(
                f"Localized Narratives file '{p}' not found. Expected the official JSONL "
                f"(one narrative per line, e.g. coco_train_localized_narratives-00000-of-00004.jsonl "
                f"from https://google.github.io/localized-narratives/)."
            )
        check_readable(p, "the Localized Narratives file")
    resolver = ImagePathResolver(image_root, patterns, check_exists=check_images, relative=relative_paths)
    out = Path(out)
    require_output_file(out)
    ensure_dir(out.parent)
    try:
        parts_dir = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.parts."))
    except OSError as exc:
        raise output_error(exc, out) from None
    try:
        jobs = [
            (p, parts_dir / f"{i:05d}.jsonl", resolver, num_points, progress and workers <= 1)
            for i, p in enumerate(paths)
        ]
        if workers > 1 and len(jobs) > 1:
            import multiprocessing

            with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
                reports = list(
                    tqdm(
                        pool.imap(_process_file_star, jobs),
                        total=len(jobs),
                        desc="files",
                        disable=not progress,
                        dynamic_ncols=True,
                    )
                )
        else:
            reports = [_process_file(*job) for job in jobs]
        report = PreprocessReport.merge(reports)
        if report.images_written == 0 and not allow_empty:
            if write_report:
                atomic_write_json(report_path(out), report.as_dict())
            raise nothing_usable(
                "narrative",
                paths,
                f"{report.lines} lines: {report.malformed_count} malformed, "
                f"{report.images_dropped['no_chunks']} without a chunk with trace points, "
                f"{report.images_dropped['missing_image']} without an image file",
                out,
            )
        with JsonListWriter(out) as writer:
            for _, part, *_ in jobs:
                with open(part, encoding="utf-8") as f:
                    for line in f:
                        writer.write_raw(line.rstrip("\n"))
    except OSError as exc:  # the per-file parts beside the output meet the same full disk
        error = output_error(exc, out)
        if error is exc:
            raise
        raise error from None
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)
    if write_report:
        atomic_write_json(report_path(out), report.as_dict())
    return report


def main(argv: Optional[Sequence[str]] = None) -> PreprocessReport:
    parser = Parser(
        prog="python -m regionvlm.data.localized_narratives",
        description="Localized Narratives JSONL -> {chunk: 20 points} region-caption annotations.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Default image patterns (relative to --image-root):\n"
        + "\n".join(f"  {k}: {' | '.join(v)}" for k, v in DEFAULT_IMAGE_PATTERNS.items()),
    )
    parser.add_argument("--input", nargs="+", required=True, help="official LN JSONL file(s)")
    parser.add_argument("--image-root", default=".", help="folder the image patterns are relative to")
    parser.add_argument(
        "--image-pattern",
        action="append",
        default=[],
        metavar="KEY=PATTERN",
        help="image path pattern for a dataset family or exact dataset_id; repeat for "
        "fallbacks (replaces that key's defaults)",
    )
    parser.add_argument("--workers", type=int, default=1, help="input files processed in parallel")
    add_output_arguments(parser, DEFAULT_NUM_POINTS, "--image-root")
    args = parser.parse_args(argv)
    report = preprocess_localized_narratives(
        args.input,
        args.out,
        image_root=args.image_root,
        num_points=args.points,
        patterns=parse_patterns(args.image_pattern),
        check_images=not args.no_check_images,
        relative_paths=args.relative_paths,
        progress=not args.quiet,
        workers=args.workers,
    )
    return finish(report, args.out)


if __name__ == "__main__":
    from regionvlm.common.cli import run

    run(main)
