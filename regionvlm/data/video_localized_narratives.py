"""Video Localized Narratives JSONL -> region-caption annotations (the authors' video records).

Usage::

    python -m regionvlm.data.video_localized_narratives --root LN_ROOT --out ln_video.json \\
        [--sources ovis uvo oops kinetics] [--input SOURCE=FILE ...] \\
        [--uvo-image-dir DIR ...] [--ovis-image-dir DIR ...] [--oops-image-dir DIR ...] \\
        [--kinetics-image-dir DIR ...] [--frame-names authors|number|keyframe] \\
        [--fix time-origin|final-word-once|last-point|all ...] [--points 20] \\
        [--relative-paths] [--no-check-images] [--quiet]

Reads Google's Video Localized Narratives files (one video per line: ``video_id``,
``keyframe_names``, ``actor_narratives`` with ``caption``, ``noun_segments``,
``time_alignment`` and ``traces`` of ``{x, y, time_ms_since_epoch, kf_idx}``) and writes,
per narrated actor and keyframe, the record the authors' release trained on::

    {"caption": C, "sent_to_points": {C: [[x, y], ... 20 points]}, "chunk_to_points": null,
     "image_path": ".../<video_id>/<frame>.png", "image_id": "<video_id>/<keyframe name>",
     "video_id": ..., "keyframe_name": ..., "source": "oops"}

(the first four keys are the authors'; the rest are for reports and the dataset's item ids).
``RegionAnnotations`` reads the file as it is, beside the image Localized Narratives files.

Rules (the authors' logic; docs/video_localized_narratives.md explains each with examples):

1. the last narrative of every video is not used (in the released files it is the
   "background" narrative; the report counts the videos where it is not);
2. the subject is ``caption[noun_segments[0]]``; a subject ``group`` / ``Group`` is skipped;
3. if the caption contains ``" is "`` the words are the time-alignment entries from the
   first up to the first ``referenced_word == "is"``, else up to the first word equal to the
   subject's last word; when that word is absent every word is used;
4. every trace point whose ``time_ms_since_epoch`` lies in ``[origin + start_ms,
   origin + end_ms]`` of a chosen word (ends included) is taken, word by word; the origin
   is the time of the first trace point;
5. points are pooled per keyframe (``kf_idx``, in order of first appearance); each keyframe
   with points and an existing frame image gives one record: the whole caption with 20
   points picked as ``int((n - 1) / 19 * j)``.

Quirks reproduced by default, each with a ``--fix`` (``--fix all`` applies every one):

* ``final-word-once``: the word that ends the selection is counted twice by the authors
  (its points appear twice before resampling); the fix counts it once;
* ``last-point``: the float index formula can miss the last point (``n = 55``: the 20th
  index is 53, not 54); the fix uses exact integer arithmetic ``(n - 1) * j // 19``;
* ``time-origin``: Google defines ``start_ms``/``end_ms`` relative to the start of the
  audio recording (``recording_start_time_ms_since_epoch``), the authors measure them from
  the first trace point (in the released samples 1-9 s later); the fix uses the recording
  start.

Frame images (relative to ``--root`` unless a ``--<source>-image-dir`` is given)::

    ovis, uvo  UVO_sparse/uvo_frames_sparese_recheck/<video_id>/<keyframe>.png, then
               OVIS/train/<video_id>/<keyframe>.jpg    (both sources try both folders)
    oops       oops/oops_dataset/oops_frames/<video_id>/<n>.png, then
               oops/oops_dataset/oops_frames_val/<video_id>/<n>.png
    kinetics   kinetics/kinetics_frames/<video_id>/<n>.png  (a video without a folder there
               is skipped whole)

where ``<n>`` renumbers the keyframe name (``000025`` -> ``25``) with the authors' string
rule, which also mangles names that do not start with ``0`` (``--frame-names number``
renumbers them correctly; ``--frame-names keyframe`` keeps the listed names, the layout
Google recommends). Default input files, in the authors' order: ``OVIS/OVIS_train.jsonl``,
``UVO_sparse/UVO_sparse_{train,val}.jsonl``, ``oops/oops_{val,train}.jsonl``,
``kinetics/kinetics_train.jsonl``.

Nothing is dropped silently: malformed lines are listed as ``file:line: reason``, every
skipped narrative and keyframe is counted by reason, missing frame images are listed, and
the report is printed and written next to the output as ``<out stem>.report.json``. A run
that yields no record at all stops with an error (the report is still written, the output
is not).
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from regionvlm.common.errors import ConfigError, InputError, MissingFileError
from regionvlm.common.io import check_regular_file
from regionvlm.data.preprocessing import (
    MalformedRecord,
    Parser,
    ReportBase,
    add_output_arguments,
    capped_append,
    check_readable,
    finish,
    iter_records,
    listed,
    write_records,
)
from regionvlm.region import select_in_order

DEFAULT_NUM_POINTS = 20
SOURCES = ("ovis", "uvo", "oops", "kinetics")  # the authors' processing order
DEFAULT_INPUTS: Dict[str, Tuple[str, ...]] = {
    "ovis": ("OVIS/OVIS_train.jsonl",),
    "uvo": ("UVO_sparse/UVO_sparse_train.jsonl", "UVO_sparse/UVO_sparse_val.jsonl"),
    "oops": ("oops/oops_val.jsonl", "oops/oops_train.jsonl"),
    "kinetics": ("kinetics/kinetics_train.jsonl",),
}
DEFAULT_IMAGE_DIRS: Dict[str, Tuple[str, ...]] = {
    "uvo": ("UVO_sparse/uvo_frames_sparese_recheck",),
    "ovis": ("OVIS/train",),
    "oops": ("oops/oops_dataset/oops_frames", "oops/oops_dataset/oops_frames_val"),
    "kinetics": ("kinetics/kinetics_frames",),
}
FIXES = ("time-origin", "final-word-once", "last-point")
FRAME_NAME_STYLES = ("authors", "number", "keyframe")
SKIPPED_SUBJECTS = ("group", "Group")
MAX_LISTED_IN_REPORT = 1000
DOWNLOAD_HINT = "https://google.github.io/video-localized-narratives/"


# --------------------------------------------------------------------------- parsing
@dataclass
class ActorNarrative:
    """One used narrative, validated; arrays are in trace order (segments concatenated)."""

    caption: str
    subject: Optional[str]  # caption[noun_segments[0]]; None without noun segments
    words: List[str]  # referenced_word of each time-alignment entry
    starts: np.ndarray  # start_ms
    ends: np.ndarray  # end_ms
    xy: np.ndarray  # (P, 2)
    times: np.ndarray  # (P,) time_ms_since_epoch
    kf_idx: np.ndarray  # (P,) int64
    first_time: Optional[float]  # time of traces[0][0] (the authors' origin)
    recording_start: Optional[float]  # recording_start_time_ms_since_epoch


@dataclass
class Video:
    """A validated line: the narratives the logic reads (all but the last)."""

    video_id: str
    keyframe_names: List[str]
    narratives: List[ActorNarrative]
    num_narratives: int
    last_actor_name: Optional[str]


def _is_number(v: Any) -> bool:
    return type(v) in (int, float)


def _first_bad(items: Sequence[Any], ok) -> int:
    return next(i for i, item in enumerate(items) if not ok(item))


def _parse_alignment(items: Any, where: str) -> Tuple[List[str], np.ndarray, np.ndarray]:
    if not isinstance(items, list):
        raise MalformedRecord(f"{where}.time_alignment must be a list")
    try:
        rows = [(t["referenced_word"], t["start_ms"], t["end_ms"]) for t in items]
    except (KeyError, TypeError):
        i = _first_bad(
            items, lambda t: isinstance(t, dict) and all(k in t for k in ("referenced_word", "start_ms", "end_ms"))
        )
        raise MalformedRecord(f"{where}.time_alignment[{i}] needs referenced_word, start_ms and end_ms") from None
    for i, (word, s, e) in enumerate(rows):
        if (
            not isinstance(word, str)
            or not _is_number(s)
            or not _is_number(e)
            or not (math.isfinite(s) and math.isfinite(e))
        ):
            raise MalformedRecord(
                f"{where}.time_alignment[{i}] needs a string referenced_word and "
                f"finite numbers start_ms, end_ms (got {word!r}, {s!r}, {e!r})"
            )
    starts = np.array([r[1] for r in rows], dtype=np.float64)
    ends = np.array([r[2] for r in rows], dtype=np.float64)
    return [r[0] for r in rows], starts, ends


def _parse_traces(traces: Any, where: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Optional[float]]:
    if not isinstance(traces, list) or not all(isinstance(seg, list) for seg in traces):
        raise MalformedRecord(f"{where}.traces must be a list of lists of {{x, y, time_ms_since_epoch, kf_idx}}")
    flat = [p for seg in traces for p in seg]
    keys = ("x", "y", "time_ms_since_epoch", "kf_idx")
    try:
        rows = [(p["x"], p["y"], p["time_ms_since_epoch"], p["kf_idx"]) for p in flat]
    except (KeyError, TypeError):
        j = _first_bad(flat, lambda p: isinstance(p, dict) and all(k in p for k in keys))
        raise MalformedRecord(
            f"{where}.traces point #{j} (segments concatenated) needs x, y, time_ms_since_epoch and kf_idx"
        ) from None
    cols = list(zip(*rows)) or [(), (), (), ()]  # columns at C speed: millions of points per file
    if set().union(*(map(type, c) for c in cols[:3])) - {int, float}:
        j = _first_bad(rows, lambda r: all(_is_number(v) for v in r[:3]))
        raise MalformedRecord(f"{where}.traces point #{j} needs numeric x, y, time_ms_since_epoch, got {rows[j][:3]}")
    if set(map(type, cols[3])) - {int}:
        j = _first_bad(rows, lambda r: type(r[3]) is int)
        raise MalformedRecord(f"{where}.traces point #{j}: kf_idx must be an integer, got {rows[j][3]!r}")
    xyt = np.array(cols[:3], dtype=np.float64).reshape(3, -1).T
    if not np.all(np.isfinite(xyt)):
        raise MalformedRecord(f"{where}.traces contain NaN or infinity")
    kf = np.array(cols[3], dtype=np.int64)
    first_time = float(traces[0][0]["time_ms_since_epoch"]) if traces and traces[0] else None
    return xyt[:, :2], xyt[:, 2], kf, first_time


def parse_actor_narrative(obj: Any, where: str, need_recording_start: bool = False) -> ActorNarrative:
    """Validate the fields the logic reads; raise :class:`MalformedRecord` naming the problem."""
    if not isinstance(obj, dict):
        raise MalformedRecord(f"{where} must be a JSON object")
    missing = [k for k in ("caption", "noun_segments", "time_alignment", "traces") if k not in obj]
    if missing:
        raise MalformedRecord(f"{where} is missing field(s) {missing}")
    caption = obj["caption"]
    if not isinstance(caption, str):
        raise MalformedRecord(f"{where}.caption must be a string")
    segments = obj["noun_segments"]
    if not isinstance(segments, list):
        raise MalformedRecord(f"{where}.noun_segments must be a list of [start, end] character offsets")
    subject = None
    if segments:
        first = segments[0]
        if not isinstance(first, list) or len(first) != 2 or not all(type(v) is int for v in first):
            raise MalformedRecord(f"{where}.noun_segments[0] must be [start, end] integers, got {first!r}")
        subject = caption[first[0] : first[1]]
    words, starts, ends = _parse_alignment(obj["time_alignment"], where)
    xy, times, kf, first_time = _parse_traces(obj["traces"], where)
    start = obj.get("recording_start_time_ms_since_epoch")
    recording_start = float(start) if _is_number(start) and math.isfinite(start) else None
    if need_recording_start and recording_start is None:
        raise MalformedRecord(
            f"{where}.recording_start_time_ms_since_epoch must be a number (read by --fix time-origin), got {start!r}"
        )
    return ActorNarrative(caption, subject, words, starts, ends, xy, times, kf, first_time, recording_start)


def parse_video(obj: Any, need_recording_start: bool = False) -> Video:
    """Validate one decoded line (the last narrative is not read: only its presence counts)."""
    if not isinstance(obj, dict):
        raise MalformedRecord(f"expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in ("video_id", "keyframe_names", "actor_narratives") if k not in obj]
    if missing:
        raise MalformedRecord(f"missing field(s) {missing}")
    video_id, names, actors = obj["video_id"], obj["keyframe_names"], obj["actor_narratives"]
    if not isinstance(video_id, str) or not video_id:
        raise MalformedRecord(f"video_id must be a non-empty string, got {video_id!r}")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise MalformedRecord("keyframe_names must be a list of strings")
    if not isinstance(actors, list):
        raise MalformedRecord("actor_narratives must be a list")
    used = [parse_actor_narrative(a, f"actor_narratives[{i}]", need_recording_start) for i, a in enumerate(actors[:-1])]
    last = actors[-1] if actors else None
    last_name = last.get("actor_name") if isinstance(last, dict) and isinstance(last.get("actor_name"), str) else None
    return Video(video_id, names, used, len(actors), last_name)


# --------------------------------------------------------------------------- the logic
def selected_words(
    words: Sequence[str], caption: str, subject: str, final_word_once: bool = False
) -> Tuple[List[int], str, bool]:
    """``(alignment indices, branch, stop word found)``: the words whose trace is the region.

    Branch ``"is"`` (the caption contains ``" is "``) stops at the first word ``is``, branch
    ``"subject"`` at the first word equal to the subject's last word; the stop word is listed
    twice (the authors' quirk) unless ``final_word_once``. Without a stop word: every word."""
    branch = "is" if " is " in caption else "subject"
    stop = "is" if branch == "is" else subject.split(" ")[-1]
    for i, word in enumerate(words):
        if word == stop:
            chosen = list(range(i + 1))
            if not final_word_once:
                chosen.append(i)
            return chosen, branch, True
    return list(range(len(words))), branch, False


def points_in_windows(
    times: np.ndarray, starts: np.ndarray, ends: np.ndarray, chosen: Sequence[int], origin: float
) -> np.ndarray:
    """Indices of the points inside each chosen word's ``[origin + start, origin + end]``,
    word after word (a point in two windows, or in a word listed twice, appears twice)."""
    parts = [np.flatnonzero((times >= starts[w] + origin) & (times <= ends[w] + origin)) for w in chosen]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def pool_by_keyframe(indices: np.ndarray, kf_idx: np.ndarray) -> List[Tuple[int, np.ndarray]]:
    """``[(kf_idx, point indices)]`` in order of each keyframe's first point."""
    if indices.size == 0:
        return []
    kfs = kf_idx[indices]
    uniq, first = np.unique(kfs, return_index=True)
    return [(int(k), indices[kfs == k]) for k in uniq[np.argsort(first, kind="stable")]]


def pick_indices(n: int, k: int, exact: bool = False) -> np.ndarray:
    """K evenly spaced indices into ``n`` points: the authors' ``int((n - 1) / (k - 1) * j)``
    (shared with the image preprocessing), or with ``exact`` ``(n - 1) * j // (k - 1)``,
    which always ends on the last point."""
    if not exact or k == 1:
        return select_in_order(n, k, None)
    return (np.arange(k, dtype=np.int64) * (n - 1)) // (k - 1)


# --------------------------------------------------------------------------- frame files
def authors_frame_name(video_id: str, keyframe: str) -> str:
    """The authors' renumbering of ``<video_id>/<keyframe>.png``: the text before the first
    ``"/0"``, then ``/``, then the keyframe's number without leading zeros.

    ``("v", "000025")`` -> ``"v/25.png"``; a name not starting with ``0`` keeps the whole
    path before the number (``("v", "25")`` -> ``"v/25.png/25.png"``, a file that never
    exists). Raises ValueError when the name is not a number (the authors' script stopped)."""
    path = f"{video_id}/{keyframe}.png"
    number = int(path.split("/")[-1].split(".png")[0])
    return f"{path.split('/0')[0]}/{number}.png"


def frame_relpath(source: str, video_id: str, keyframe: str, style: str) -> str:
    """Path of a keyframe image below its source's frame folder (ValueError: not a number)."""
    if source in ("uvo", "ovis") or style == "keyframe":
        return f"{video_id}/{keyframe}"  # the extension comes with the folder
    if style == "number":
        return f"{video_id}/{int(keyframe)}"
    return authors_frame_name(video_id, keyframe)[: -len(".png")]


class FrameLocator:
    """Finds keyframe images: per source, folders tried in order (each with its extension)."""

    def __init__(
        self,
        root: str | Path,
        image_dirs: Optional[Mapping[str, Sequence[str]]] = None,
        frame_names: str = "authors",
        check_exists: bool = True,
        relative: bool = False,
    ):
        if frame_names not in FRAME_NAME_STYLES:
            raise ConfigError(f"--frame-names must be one of {list(FRAME_NAME_STYLES)}, got '{frame_names}'.")
        self.root = os.path.expanduser(str(root))
        self.style = frame_names
        self.check_exists = check_exists
        self.relative = relative
        dirs: Dict[str, List[str]] = {k: [os.path.join(self.root, d) for d in v] for k, v in DEFAULT_IMAGE_DIRS.items()}
        for key, value in (image_dirs or {}).items():
            if key not in DEFAULT_IMAGE_DIRS:
                raise ConfigError(f"unknown image folder key '{key}'; known: {sorted(DEFAULT_IMAGE_DIRS)}.")
            if value:
                dirs[key] = [os.path.expanduser(str(v)) for v in value]
        self.dirs = dirs
        self.written = {key: [self._written_dir(d, key) for d in v] for key, v in dirs.items()}

    def _written_dir(self, folder: str, key: str) -> str:
        if not self.relative:
            return folder
        root = os.path.abspath(self.root)
        full = os.path.abspath(folder)
        if os.path.commonpath([root, full]) != root:
            raise ConfigError(
                f"--{key}-image-dir '{folder}' is not inside --root '{self.root}'; with "
                f"--relative-paths every frame folder must lie under the root."
            )
        return os.path.relpath(full, root)

    def folders(self, source: str) -> List[Tuple[str, str, str]]:
        """``(folder, folder as written, extension)`` in the order they are tried."""
        if source in ("uvo", "ovis"):
            keys = (("uvo", ".png"), ("ovis", ".jpg"))
        else:
            keys = ((source, ".png"),)
        return [(d, w, ext) for key, ext in keys for d, w in zip(self.dirs[key], self.written[key])]

    def has_video_folder(self, source: str, video_id: str) -> bool:
        """Kinetics only: the authors skip a video whose frame folder does not exist."""
        if source != "kinetics" or not self.check_exists:
            return True
        return any(os.path.exists(os.path.join(d, video_id)) for d in self.dirs["kinetics"])

    def candidates(self, source: str, video_id: str, keyframe: str) -> List[str]:
        rel = frame_relpath(source, video_id, keyframe, self.style)
        return [os.path.join(d, rel + ext) for d, _, ext in self.folders(source)]

    def resolve(self, source: str, video_id: str, keyframe: str) -> Optional[str]:
        """The image path to write (None when checking and no candidate exists); raises
        ValueError when the keyframe name cannot be renumbered."""
        rel = frame_relpath(source, video_id, keyframe, self.style)
        for folder, written, ext in self.folders(source):
            if not self.check_exists or os.path.exists(os.path.join(folder, rel + ext)):
                return os.path.join(written, rel + ext)
        return None


# --------------------------------------------------------------------------- report
@dataclass
class VideoReport(ReportBase):
    """What happened to every line, narrative and keyframe (problem lists capped in the report)."""

    LIST_CAP = MAX_LISTED_IN_REPORT

    files: List[str] = field(default_factory=list)
    videos: int = 0
    videos_without_frame_folder: int = 0
    narratives: int = 0
    narratives_skipped: Dict[str, int] = field(
        default_factory=lambda: {
            "last_of_video": 0,
            "no_time_origin": 0,
            "no_noun_segments": 0,
            "subject_group": 0,
            "no_points": 0,
        }
    )
    last_not_background: int = 0
    branch: Dict[str, int] = field(default_factory=lambda: {"is": 0, "subject": 0})
    stop_word_not_found: Dict[str, int] = field(default_factory=lambda: {"is": 0, "subject": 0})
    records: int = 0
    records_by_source: Dict[str, int] = field(default_factory=lambda: dict.fromkeys(SOURCES, 0))
    keyframes_dropped: Dict[str, int] = field(
        default_factory=lambda: {"missing_image": 0, "kf_idx_out_of_range": 0, "frame_name_not_a_number": 0}
    )
    videos_skipped: List[str] = field(default_factory=list)
    fixes: List[str] = field(default_factory=list)
    frame_names: str = "authors"

    def as_dict(self) -> Dict[str, Any]:
        return {
            "files": list(self.files),
            "fixes": list(self.fixes),
            "frame_names": self.frame_names,
            "lines": self.lines,
            "blank_lines": self.blank_lines,
            "videos": self.videos,
            "videos_without_frame_folder": self.videos_without_frame_folder,
            "narratives": self.narratives,
            "narratives_skipped": dict(self.narratives_skipped),
            "last_narrative_not_background": self.last_not_background,
            "branch": dict(self.branch),
            "stop_word_not_found": dict(self.stop_word_not_found),
            "records": self.records,
            "records_by_source": dict(self.records_by_source),
            "keyframes_dropped": dict(self.keyframes_dropped),
            "malformed_count": self.malformed_count,
            "malformed": list(self.malformed),
            "missing_images": list(self.missing_images),
            "videos_skipped": list(self.videos_skipped),
            "lists_capped_at": MAX_LISTED_IN_REPORT,
        }

    def summary(self) -> str:
        s, k = self.narratives_skipped, self.keyframes_dropped
        fixes = ", ".join(self.fixes) or "none (the authors' behaviour)"
        out = [
            f"lines read: {self.lines} ({self.blank_lines} blank), videos parsed: {self.videos}, "
            f"malformed: {self.malformed_count}; videos skipped without a frame folder (kinetics): "
            f"{self.videos_without_frame_folder}",
            f"narratives: {self.narratives}; skipped: {s['last_of_video']} last of their video "
            f"({self.last_not_background} of them not 'background'), {s['subject_group']} subject 'group', "
            f"{s['no_noun_segments']} without noun segments, {s['no_time_origin']} without a first trace point, "
            f"{s['no_points']} without trace points in the chosen words",
            f"word selection: {self.branch['is']} up to 'is' ({self.stop_word_not_found['is']} without that "
            f"word: all words), {self.branch['subject']} up to the subject ({self.stop_word_not_found['subject']} "
            f"without it: all words)",
            f"records written: {self.records} ({', '.join(f'{n} {c}' for n, c in self.records_by_source.items())}); "
            f"keyframes dropped: {k['missing_image']} without an image file, {k['kf_idx_out_of_range']} with "
            f"kf_idx outside keyframe_names, {k['frame_name_not_a_number']} with a frame name that is not a number",
            f"fixes: {fixes}; frame names: {self.frame_names}",
        ]
        out += listed(
            [
                ("malformed lines", self.malformed, self.malformed_count),
                ("missing images", self.missing_images, k["missing_image"]),
                ("videos without a frame folder", self.videos_skipped, self.videos_without_frame_folder),
            ]
        )
        return "\n".join(out)


# --------------------------------------------------------------------------- the job
def video_records(
    video: Video,
    source: str,
    locator: FrameLocator,
    report: VideoReport,
    fixes: Iterable[str] = (),
    num_points: int = DEFAULT_NUM_POINTS,
    where: str = "",
) -> Iterator[Dict[str, Any]]:
    """The records of one video (counting every skip in ``report``)."""
    fixes = set(fixes)
    report.narratives += video.num_narratives
    if video.num_narratives:
        report.narratives_skipped["last_of_video"] += 1
        if (video.last_actor_name or "").strip().lower() != "background":
            report.last_not_background += 1
    for n in video.narratives:
        origin = n.recording_start if "time-origin" in fixes else n.first_time
        if origin is None:
            report.narratives_skipped["no_time_origin"] += 1
            continue
        if n.subject is None:
            report.narratives_skipped["no_noun_segments"] += 1
            continue
        if n.subject in SKIPPED_SUBJECTS:
            report.narratives_skipped["subject_group"] += 1
            continue
        chosen, branch, found = selected_words(n.words, n.caption, n.subject, "final-word-once" in fixes)
        report.branch[branch] += 1
        report.stop_word_not_found[branch] += not found
        per_kf = pool_by_keyframe(points_in_windows(n.times, n.starts, n.ends, chosen, origin), n.kf_idx)
        if not per_kf:
            report.narratives_skipped["no_points"] += 1
            continue
        for kf, idx in per_kf:
            if not 0 <= kf < len(video.keyframe_names):
                report.keyframes_dropped["kf_idx_out_of_range"] += 1
                continue
            name = video.keyframe_names[kf]
            try:
                path = locator.resolve(source, video.video_id, name)
            except ValueError:
                report.keyframes_dropped["frame_name_not_a_number"] += 1
                continue
            if path is None:
                report.keyframes_dropped["missing_image"] += 1
                tried = ", ".join(locator.candidates(source, video.video_id, name))
                capped_append(
                    report.missing_images, f"{where}: {video.video_id} keyframe {name} (tried {tried})", report.LIST_CAP
                )
                continue
            pts = n.xy[idx[pick_indices(len(idx), num_points, "last-point" in fixes)]].tolist()
            report.records += 1
            report.records_by_source[source] += 1
            yield {
                "caption": n.caption,
                "sent_to_points": {n.caption: pts},
                "chunk_to_points": None,
                "image_path": path,
                "image_id": f"{video.video_id}/{name}",
                "video_id": video.video_id,
                "keyframe_name": name,
                "source": source,
            }


def parse_inputs(items: Iterable[str]) -> Dict[str, List[str]]:
    """``["oops=a.jsonl", "oops=b.jsonl"]`` -> ``{"oops": ["a.jsonl", "b.jsonl"]}``."""
    out: Dict[str, List[str]] = {}
    for item in items:
        key, sep, path = item.partition("=")
        key = key.strip()
        if not sep or not path.strip() or key not in SOURCES:
            raise ConfigError(
                f"--input expects SOURCE=FILE with SOURCE one of {list(SOURCES)} "
                f"(e.g. oops=vidlns/oops_train.jsonl), got '{item}'."
            )
        out.setdefault(key, []).append(path.strip())
    return out


def input_files(
    root: str | Path, sources: Sequence[str], inputs: Optional[Mapping[str, Sequence[str]]] = None
) -> List[Tuple[str, Path]]:
    """``(source, file)`` in the authors' order; every file must exist."""
    unknown = [s for s in list(sources) + list(inputs or {}) if s not in SOURCES]
    if unknown:
        raise ConfigError(f"unknown source(s) {unknown}; known: {list(SOURCES)}.")
    if not sources:
        raise ConfigError(f"no source selected; pass --sources with some of {list(SOURCES)}.")
    files = []
    for source in SOURCES:
        if source not in sources:
            continue
        given = (inputs or {}).get(source)
        paths = (
            [Path(p).expanduser() for p in given]
            if given
            else [Path(root).expanduser() / p for p in DEFAULT_INPUTS[source]]
        )
        for p in paths:
            if p.is_dir():
                raise InputError(f"Video Localized Narratives file '{p}' ({source}) is a folder; give the JSONL file.")
            check_regular_file(p, f"Video Localized Narratives file ({source})")
            if not p.is_file():
                how = f"point to it with --input {source}=FILE" if not given else "fix the --input path"
                raise MissingFileError(
                    f"Video Localized Narratives file '{p}' ({source}) not found. Download it from "
                    f"{DOWNLOAD_HINT} to that place, {how}, or leave the source out with "
                    f"--sources {' '.join(s for s in SOURCES if s in sources and s != source) or '...'}."
                )
            files.append((source, p))
    return files


def preprocess_video_localized_narratives(
    root: str | Path,
    out: str | Path,
    sources: Sequence[str] = SOURCES,
    inputs: Optional[Mapping[str, Sequence[str]]] = None,
    image_dirs: Optional[Mapping[str, Sequence[str]]] = None,
    frame_names: str = "authors",
    fixes: Iterable[str] = (),
    num_points: int = DEFAULT_NUM_POINTS,
    relative_paths: bool = False,
    check_images: bool = True,
    progress: bool = True,
    write_report: bool = True,
    allow_empty: bool = False,
) -> VideoReport:
    """Stream the sources' JSONL files into the annotation file ``out`` (see the module doc).
    No record at all is an InputError unless ``allow_empty`` (then ``out`` is an empty list)."""
    fixes = list(dict.fromkeys(FIXES if "all" in fixes else fixes))
    bad = [f for f in fixes if f not in FIXES]
    if bad:
        raise ConfigError(f"unknown --fix {bad}; choose from {list(FIXES)} or 'all'.")
    if num_points < 1:
        raise ConfigError(f"--points must be at least 1, got {num_points}.")
    files = input_files(root, list(sources), inputs)
    for _, path in files:
        check_readable(path, "the Video Localized Narratives file")
    locator = FrameLocator(root, image_dirs, frame_names, check_exists=check_images, relative=relative_paths)
    report = VideoReport(files=[f"{s}: {p}" for s, p in files], fixes=fixes, frame_names=frame_names)
    need_start = "time-origin" in fixes

    def records() -> Iterator[Dict[str, Any]]:
        for source, path in files:
            for where, video in iter_records(path, progress, report, lambda obj: parse_video(obj, need_start)):
                report.videos += 1
                if not locator.has_video_folder(source, video.video_id):
                    report.videos_without_frame_folder += 1
                    capped_append(report.videos_skipped, f"{where}: {video.video_id}", report.LIST_CAP)
                    continue
                yield from video_records(video, source, locator, report, fixes, num_points, where)

    write_records(
        out,
        records(),
        report,
        write_report=write_report,
        allow_empty=allow_empty,
        empty=(
            "record",
            [p for _, p in files],
            lambda: (
                f"{report.lines} lines: {report.malformed_count} malformed, {report.videos} videos, "
                f"{report.videos_without_frame_folder} without a frame folder"
            ),
        ),
    )
    return report


def main(argv: Optional[Sequence[str]] = None) -> VideoReport:
    parser = Parser(
        prog="python -m regionvlm.data.video_localized_narratives",
        description="Video Localized Narratives JSONL -> {caption: 20 points} region-caption records "
        "per narrated keyframe (the authors' video training file).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Default files and folders (relative to --root):\n"
        + "\n".join(
            [f"  {s} input: {' | '.join(DEFAULT_INPUTS[s])}" for s in SOURCES]
            + [f"  {k} frames: {' | '.join(v)}" for k, v in DEFAULT_IMAGE_DIRS.items()]
        )
        + "\nSee docs/video_localized_narratives.md for every rule and quirk.",
    )
    parser.add_argument("--root", required=True, help="the authors' LN folder (inputs and frames below it)")
    add_output_arguments(parser, DEFAULT_NUM_POINTS, "--root")
    parser.add_argument(
        "--sources",
        nargs="+",
        default=list(SOURCES),
        choices=SOURCES,
        help="sources to read (always processed in the authors' order)",
    )
    parser.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="SOURCE=FILE",
        help="JSONL file of a source instead of its default files; repeat for several",
    )
    for key in DEFAULT_IMAGE_DIRS:
        parser.add_argument(
            f"--{key}-image-dir",
            nargs="+",
            default=None,
            metavar="DIR",
            help=f"{key} frame folder(s), tried in order (default: {', '.join(DEFAULT_IMAGE_DIRS[key])} under --root)",
        )
    parser.add_argument(
        "--frame-names",
        choices=FRAME_NAME_STYLES,
        default="authors",
        help="oops/kinetics frame file names: the authors' renumbering (default), "
        "'number' (renumbered correctly) or 'keyframe' (as listed, Google's layout)",
    )
    parser.add_argument(
        "--fix",
        action="append",
        default=[],
        choices=FIXES + ("all",),
        help="correct one of the authors' quirks (repeatable; see the docs)",
    )
    args = parser.parse_args(argv)
    dirs = {k: getattr(args, f"{k}_image_dir") for k in DEFAULT_IMAGE_DIRS if getattr(args, f"{k}_image_dir")}
    report = preprocess_video_localized_narratives(
        args.root,
        args.out,
        sources=args.sources,
        inputs=parse_inputs(args.input),
        image_dirs=dirs,
        frame_names=args.frame_names,
        fixes=args.fix,
        num_points=args.points,
        relative_paths=args.relative_paths,
        check_images=not args.no_check_images,
        progress=not args.quiet,
    )
    return finish(report, args.out)


if __name__ == "__main__":
    from regionvlm.common.cli import run

    run(main)
