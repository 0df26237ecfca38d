"""Video Localized Narratives preprocessing on fixture lines in Google's JSONL format and
keyframe folders in the authors' layout (one test per rule, quirk and fix)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pytest
from PIL import Image

from regionvlm.common.cli import run as run_cli
from regionvlm.common.errors import ConfigError, MissingFileError
from regionvlm.data import localized_narratives as ln
from regionvlm.data import video_localized_narratives as vln
from regionvlm.datasets.region_annotations import RegionAnnotations

REC = 1_658_296_967_411  # recording_start_time_ms_since_epoch of every fixture narrative
LAG = 1000  # the first trace point comes LAG ms after the recording start (1-9 s in the released files)
W0, WORD_MS = 2000, 200  # word i is spoken during [W0 + 200 i, W0 + 200 (i + 1)] ms after REC


def authors_mid(i: int) -> int:
    """Time (ms after REC) in the middle of word i as the authors see it (origin = first point)."""
    return LAG + W0 + WORD_MS * i + WORD_MS // 2


def true_mid(i: int) -> int:
    """Time (ms after REC) in the middle of word i as Google defines it (origin = recording start)."""
    return W0 + WORD_MS * i + WORD_MS // 2


def words_of(caption: str) -> List[Tuple[str, int, int]]:
    return [(m.group(), m.start(), m.end()) for m in re.finditer(r"[\w'-]+", caption)]


def narrative(
    caption: str,
    points: Sequence[Tuple[float, float, int, int]],
    subject: Optional[str] = None,
    actor: str = "Man",
    words: Optional[List[str]] = None,
    nouns: Optional[list] = None,
    first_point: bool = True,
) -> Dict:
    """One actor narrative in Google's format. ``points`` are ``(x, y, ms after REC, kf_idx)``;
    a first trace point at REC + LAG (x = y = 0, kf 0) is the authors' time origin. The
    time alignment has one entry per caption word (``words`` overrides the referenced words)."""
    tokens = words_of(caption)
    ta = [
        {
            "referenced_word": (words[i] if words else w),
            "referenced_word_start_idx": s,
            "referenced_word_end_idx": e,
            "start_ms": W0 + WORD_MS * i,
            "end_ms": W0 + WORD_MS * (i + 1),
        }
        for i, (w, s, e) in enumerate(tokens)
    ]
    if nouns is None:
        start = caption.index(subject) if subject else tokens[1][1]
        nouns = [[start, start + len(subject or tokens[1][0])]]
    trace = [{"x": x, "y": y, "time_ms_since_epoch": REC + t, "kf_idx": kf} for x, y, t, kf in points]
    head = [{"x": 0.0, "y": 0.0, "time_ms_since_epoch": REC + LAG, "kf_idx": 0}] if first_point else []
    return {
        "actor_name": actor,
        "keyframe_selection_indices": [0],
        "recording_start_time_ms_since_epoch": REC,
        "traces_start_time_ms_since_epoch": REC - 400,
        "caption": caption,
        "noun_segments": nouns,
        "time_alignment": ta,
        "traces": [head + trace[:2], trace[2:]] if trace else [head],
        "recording_filename": "recordings/x/0_0.webm",
    }


BACKGROUND = narrative("In the background there is a dog.", [(0.5, 0.5, authors_mid(1), 0)], actor="background")


def video(
    video_id: str,
    keyframes: List[str],
    narratives: List[Dict],
    background: Optional[Dict] = BACKGROUND,
    dataset_id: str = "OVIS_train",
) -> Dict:
    return {
        "vidln_id": 0,
        "dataset_id": dataset_id,
        "video_id": video_id,
        "annotator_id": 7,
        "keyframe_names": keyframes,
        "actor_narratives": narratives + ([background] if background is not None else []),
    }


def image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), (40, 80, 120)).save(path)


def write_jsonl(path: Path, items: List) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in items), encoding="utf-8")
    return path


def run(root: Path, sources=("ovis",), **kwargs) -> Tuple[List[Dict], vln.VideoReport]:
    out = root.parent / "out" / "ln_video.json"
    report = vln.preprocess_video_localized_narratives(
        root, out, sources=sources, progress=False, allow_empty=True, **kwargs
    )
    return json.loads(out.read_text()), report


def even(n: int, k: int = 20) -> List[int]:
    return [int((n - 1) / (k - 1) * j) for j in range(k)]


OVIS_KF = ["img_0000005", "img_0000012", "img_0000019"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "LN"
    for kf in OVIS_KF:
        image(r / "OVIS/train/vid1" / f"{kf}.jpg")
    return r


# --------------------------------------------------------------------------- word selection
def test_selected_words_branches():
    words = ["A", "man", "wearing", "a", "hat", "is", "walking", "is"]
    cap = "A man wearing a hat is walking is"
    assert vln.selected_words(words, cap, "man") == ([0, 1, 2, 3, 4, 5, 5], "is", True)
    assert vln.selected_words(words, cap, "man", final_word_once=True) == ([0, 1, 2, 3, 4, 5], "is", True)
    # no " is " in the caption: up to the subject's last word ("clown costume" -> "costume")
    words = ["A", "man", "in", "a", "clown", "costume", "walks"]
    cap = "A man in a clown costume walks"
    assert vln.selected_words(words, cap, "clown costume") == ([0, 1, 2, 3, 4, 5, 5], "subject", True)
    assert vln.selected_words(words, cap, "man") == ([0, 1, 1], "subject", True)
    # stop word absent: every word, nothing doubled
    assert vln.selected_words(words, cap, "hats") == ([0, 1, 2, 3, 4, 5, 6], "subject", False)
    assert vln.selected_words(["The", "cat", "IS", "here"], "The cat is here", "cat") == ([0, 1, 2, 3], "is", False)
    # the branch needs " is " with both spaces: "This is a dog" -> "is"; "A man is." -> subject
    assert vln.selected_words(["This", "is", "a", "dog"], "This is a dog", "dog")[0] == [0, 1, 1]
    assert vln.selected_words(["A", "man", "is"], "A man is.", "man") == ([0, 1, 1], "subject", True)
    assert vln.selected_words(["His", "cat", "sits"], "His cat sits", "cat") == ([0, 1, 1], "subject", True)


def test_is_branch_record_end_to_end(root):
    cap = "A man wearing a hat is walking to the left."
    pts = [(i / 10, 0.5, authors_mid(i), 0) for i in range(9)]  # one point per word on keyframe 0
    write_jsonl(root / "OVIS/OVIS_train.jsonl", [video("vid1", OVIS_KF, [narrative(cap, pts, subject="man")])])
    data, report = run(root)
    assert len(data) == 1
    rec = data[0]
    assert rec["caption"] == cap and list(rec["sent_to_points"]) == [cap] and rec["chunk_to_points"] is None
    assert rec["image_path"] == str(root / "OVIS/train/vid1/img_0000005.jpg")
    assert rec["image_id"] == "vid1/img_0000005" and rec["video_id"] == "vid1" and rec["source"] == "ovis"
    pooled = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.5]  # words A..is, "is" twice
    assert rec["sent_to_points"][cap] == [[pooled[i], 0.5] for i in even(len(pooled))]
    assert report.branch == {"is": 1, "subject": 0} and report.records == 1


def test_subject_branch_stops_at_the_subject_noun(root):
    cap = "Another boy wearing a black hoodie, standing on the right side."
    pts = [(i / 10, 0.25, authors_mid(i), 1) for i in range(10)]
    write_jsonl(
        root / "OVIS/OVIS_train.jsonl", [video("vid1", OVIS_KF, [narrative(cap, pts, nouns=[[8, 11], [28, 34]])])]
    )
    data, report = run(root)
    assert [r["image_path"] for r in data] == [str(root / "OVIS/train/vid1/img_0000012.jpg")]
    pooled = [0.0, 0.1, 0.1]  # "Another boy" + "boy" again
    assert data[0]["sent_to_points"][cap] == [[pooled[i], 0.25] for i in even(3)]
    assert report.branch == {"is": 0, "subject": 1} and report.stop_word_not_found["subject"] == 0


def test_group_subject_is_skipped_only_when_spelled_group_or_Group(root):
    pts = [(0.3, 0.3, authors_mid(i), 0) for i in range(4)]
    narratives = [
        narrative("A group of people is cycling", pts, subject="group"),
        narrative("Group of horses is running", pts, nouns=[[0, 5]]),
        narrative("A GROUP of cars is parked", pts, subject="GROUP"),
        narrative("Some groups of kids are playing", pts, subject="groups"),
    ]
    write_jsonl(root / "OVIS/OVIS_train.jsonl", [video("vid1", OVIS_KF, narratives)])
    data, report = run(root)
    assert [r["caption"] for r in data] == ["A GROUP of cars is parked", "Some groups of kids are playing"]
    assert report.narratives_skipped["subject_group"] == 2


def test_last_narrative_of_each_video_is_not_used(root):
    pts = [(0.3, 0.3, authors_mid(i), 0) for i in range(3)]
    man = narrative("A man is walking", pts)
    dog = narrative("A dog is running", pts, actor="Dog")
    write_jsonl(
        root / "OVIS/OVIS_train.jsonl",
        [
            video("vid1", OVIS_KF, [man]),  # + background
            video("vid1", OVIS_KF, [man, dog], background=None),
        ],
    )
    data, report = run(root)
    assert [r["caption"] for r in data] == ["A man is walking", "A man is walking"]  # no background, no dog
    assert report.narratives == 4 and report.narratives_skipped["last_of_video"] == 2
    assert report.last_not_background == 1


def test_points_pooled_per_keyframe_in_first_appearance_order(root):
    cap = "A man is walking"
    pts = [
        (0.1, 0.1, authors_mid(0), 2),
        (0.2, 0.2, authors_mid(0) + 10, 0),
        (0.3, 0.3, authors_mid(1), 2),
        (0.9, 0.9, authors_mid(3), 1),
    ]  # "walking" is after "is": keyframe 1 gets nothing
    write_jsonl(root / "OVIS/OVIS_train.jsonl", [video("vid1", OVIS_KF, [narrative(cap, pts)])])
    data, report = run(root)
    assert [r["keyframe_name"] for r in data] == ["img_0000019", "img_0000005"]
    assert data[0]["sent_to_points"][cap] == [[[0.1, 0.1], [0.3, 0.3]][i] for i in even(2)]
    assert data[1]["sent_to_points"][cap] == [[0.2, 0.2]] * 20
    # a narrative whose words have no points at all gives nothing and is counted
    write_jsonl(root / "OVIS/OVIS_train.jsonl", [video("vid1", OVIS_KF, [narrative(cap, [(0.9, 0.9, 99, 0)])])])
    data, report = run(root)
    assert data == [] and report.narratives_skipped["no_points"] == 1


def test_window_ends_are_included(root):
    cap = "A man is walking"
    start, end = LAG + W0, LAG + W0 + 3 * WORD_MS  # "A" starts; "is" ends where "walking" starts
    pts = [
        (0.1, 0.0, start - 1, 0),
        (0.2, 0.0, start, 0),
        (0.25, 0.0, start + WORD_MS, 0),
        (0.3, 0.0, end, 0),
        (0.4, 0.0, end + 1, 0),
    ]
    write_jsonl(root / "OVIS/OVIS_train.jsonl", [video("vid1", OVIS_KF, [narrative(cap, pts)])])
    data, _ = run(root, num_points=5)
    # "A" -> 0.2, 0.25 (the A/man boundary); "man" -> 0.25; "is" twice -> 0.3, 0.3; 0.1 and 0.4 outside
    assert [p[0] for p in data[0]["sent_to_points"][cap]] == [0.2, 0.25, 0.25, 0.3, 0.3]


def test_missing_keyframe_image_is_dropped_and_listed(root):
    cap = "A man is walking"
    pts = [(0.1, 0.1, authors_mid(0), 0), (0.2, 0.2, authors_mid(0), 1)]
    (root / "OVIS/train/vid1/img_0000012.jpg").unlink()
    write_jsonl(root / "OVIS/OVIS_train.jsonl", [video("vid1", OVIS_KF, [narrative(cap, pts)])])
    data, report = run(root)
    assert [r["keyframe_name"] for r in data] == ["img_0000005"]
    assert report.keyframes_dropped["missing_image"] == 1
    assert "vid1 keyframe img_0000012" in report.missing_images[0]
    assert "OVIS/train/vid1/img_0000012.jpg" in report.missing_images[0]
    assert "OVIS_train.jsonl:1" in report.missing_images[0]


def test_kf_idx_outside_keyframe_names_is_counted(root):
    pts = [(0.1, 0.1, authors_mid(0), 7), (0.2, 0.2, authors_mid(0), 0)]
    write_jsonl(root / "OVIS/OVIS_train.jsonl", [video("vid1", OVIS_KF, [narrative("A man is here", pts)])])
    data, report = run(root)
    assert len(data) == 1 and report.keyframes_dropped["kf_idx_out_of_range"] == 1


# --------------------------------------------------------------------------- sources and folders
def _one_point_video(
    video_id: str, keyframes: List[str], kfs: Sequence[int], cap: str = "A man is walking", t: int = authors_mid(0)
) -> Dict:
    return video(video_id, keyframes, [narrative(cap, [(0.5, 0.5, t, k) for k in kfs])])


def test_uvo_and_ovis_try_the_uvo_png_folder_then_the_ovis_jpg_folder(tmp_path):
    r = tmp_path / "LN"
    uvo_dir, ovis_dir = r / "UVO_sparse/uvo_frames_sparese_recheck", r / "OVIS/train"
    image(uvo_dir / "u1/12.png")
    image(ovis_dir / "u1/13.jpg")  # a UVO video found in the OVIS folder
    image(ovis_dir / "o1/img_0000005.jpg")
    image(uvo_dir / "o1/img_0000009.png")  # an OVIS video found in the UVO folder
    image(uvo_dir / "o1/img_0000007.png")
    image(ovis_dir / "o1/img_0000007.jpg")  # both: the UVO png wins
    write_jsonl(
        r / "OVIS/OVIS_train.jsonl", [_one_point_video("o1", ["img_0000005", "img_0000009", "img_0000007"], [0, 1, 2])]
    )
    write_jsonl(r / "UVO_sparse/UVO_sparse_train.jsonl", [_one_point_video("u1", ["12", "13", "14"], [0, 1, 2])])
    write_jsonl(r / "UVO_sparse/UVO_sparse_val.jsonl", [])
    data, report = run(r, sources=("uvo", "ovis"), relative_paths=True)
    assert [d["image_path"] for d in data] == [
        "OVIS/train/o1/img_0000005.jpg",
        "UVO_sparse/uvo_frames_sparese_recheck/o1/img_0000009.png",
        "UVO_sparse/uvo_frames_sparese_recheck/o1/img_0000007.png",
        "UVO_sparse/uvo_frames_sparese_recheck/u1/12.png",
        "OVIS/train/u1/13.jpg",
    ]
    assert report.records_by_source == {"ovis": 3, "uvo": 2, "oops": 0, "kinetics": 0}
    assert report.keyframes_dropped["missing_image"] == 1  # u1/14


def test_oops_renumbers_frames_and_tries_train_then_val_folder(tmp_path):
    r = tmp_path / "LN"
    vid = "Carnival of Excess (March 2019) _ FailArmy34"
    image(r / f"oops/oops_dataset/oops_frames/{vid}/25.png")
    image(r / f"oops/oops_dataset/oops_frames_val/{vid}/76.png")
    image(r / f"oops/oops_dataset/oops_frames_val/{vid}/25.png")  # train folder wins
    image(r / f"oops/oops_dataset/oops_frames/{vid}/0.png")
    write_jsonl(r / "oops/oops_val.jsonl", [_one_point_video(vid, ["000025", "000076", "000000"], [0, 1, 2])])
    write_jsonl(r / "oops/oops_train.jsonl", [])
    data, _report = run(r, sources=("oops",), relative_paths=True)
    assert [d["image_path"] for d in data] == [
        f"oops/oops_dataset/oops_frames/{vid}/25.png",
        f"oops/oops_dataset/oops_frames_val/{vid}/76.png",
        f"oops/oops_dataset/oops_frames/{vid}/0.png",
    ]
    assert [d["keyframe_name"] for d in data] == ["000025", "000076", "000000"]


def test_frame_name_rule_quirk_and_its_options(tmp_path):
    r = tmp_path / "LN"
    frames = r / "oops/oops_dataset/oops_frames/v1"
    for name in ("25.png", "7.png", "000025.png", "000007.png"):
        image(frames / name)
    # "000025" is renumbered; "7" (no leading zero) hits the authors' string rule; "x7" is no number
    write_jsonl(r / "oops/oops_val.jsonl", [_one_point_video("v1", ["000025", "7", "x7"], [0, 1, 2])])
    write_jsonl(r / "oops/oops_train.jsonl", [])
    assert vln.authors_frame_name("v1", "7") == "v1/7.png/7.png"
    data, report = run(r, sources=("oops",), relative_paths=True)
    assert [d["image_path"].rsplit("/", 2)[1:] for d in data] == [["v1", "25.png"]]
    assert report.keyframes_dropped == {"missing_image": 1, "kf_idx_out_of_range": 0, "frame_name_not_a_number": 1}
    assert "v1/7.png/7.png" in report.missing_images[0]
    data, report = run(r, sources=("oops",), relative_paths=True, frame_names="number")
    assert [d["image_path"].rsplit("/", 2)[1:] for d in data] == [["v1", "25.png"], ["v1", "7.png"]]
    data, report = run(r, sources=("oops",), relative_paths=True, frame_names="keyframe")
    assert [d["image_path"].rsplit("/", 1)[1] for d in data] == ["000025.png", "7.png"]  # names as listed
    assert report.keyframes_dropped["missing_image"] == 1 and "x7.png" in report.missing_images[0]


def test_kinetics_renumbers_and_skips_videos_without_a_frame_folder(tmp_path):
    r = tmp_path / "LN"
    image(r / "kinetics/kinetics_frames/k1_000010_000020/40.png")
    write_jsonl(
        r / "kinetics/kinetics_train.jsonl",
        [
            _one_point_video("k1_000010_000020", ["000040", "000080"], [0, 1]),
            _one_point_video("k2_000000_000010", ["000040"], [0]),
        ],
    )
    data, report = run(r, sources=("kinetics",))
    assert [d["image_path"] for d in data] == [str(r / "kinetics/kinetics_frames/k1_000010_000020/40.png")]
    assert report.videos_without_frame_folder == 1 and "k2_000000_000010" in report.videos_skipped[0]
    assert report.keyframes_dropped["missing_image"] == 1  # 80.png of k1
    data, report = run(r, sources=("kinetics",), check_images=False)  # nothing looked up
    assert len(data) == 3 and report.videos_without_frame_folder == 0
    assert data[2]["image_path"] == str(r / "kinetics/kinetics_frames/k2_000000_000010/40.png")


def test_sources_and_files_follow_the_authors_order(tmp_path):
    r = tmp_path / "LN"
    layout = {
        "OVIS/OVIS_train.jsonl": ("ovis", "o"),
        "UVO_sparse/UVO_sparse_train.jsonl": ("uvo", "ut"),
        "UVO_sparse/UVO_sparse_val.jsonl": ("uvo", "uv"),
        "oops/oops_val.jsonl": ("oops", "pv"),
        "oops/oops_train.jsonl": ("oops", "pt"),
        "kinetics/kinetics_train.jsonl": ("kinetics", "k"),
    }
    for rel, (_source, vid) in layout.items():
        write_jsonl(r / rel, [_one_point_video(vid, ["000001"], [0])])
    data, report = run(r, sources=("kinetics", "oops", "uvo", "ovis"), check_images=False)
    assert [d["video_id"] for d in data] == ["o", "ut", "uv", "pv", "pt", "k"]
    assert [f.split(":")[0] for f in report.files] == ["ovis", "uvo", "uvo", "oops", "oops", "kinetics"]


# --------------------------------------------------------------------------- quirks and their fixes
def test_final_word_window_counted_twice_unless_fixed(root):
    cap = "A man is walking"
    pts = [(0.1, 0.0, authors_mid(0), 0), (0.2, 0.0, authors_mid(0) + 20, 0), (0.7, 0.0, authors_mid(2), 0)]
    write_jsonl(root / "OVIS/OVIS_train.jsonl", [video("vid1", OVIS_KF, [narrative(cap, pts)])])
    data, _ = run(root, num_points=4)
    assert [p[0] for p in data[0]["sent_to_points"][cap]] == [0.1, 0.2, 0.7, 0.7]  # "is" twice: n = 4
    data, report = run(root, num_points=4, fixes=["final-word-once"])
    assert [p[0] for p in data[0]["sent_to_points"][cap]] == [0.1, 0.1, 0.2, 0.7]  # n = 3
    assert report.fixes == ["final-word-once"]


def test_index_formula_misses_the_last_point_unless_fixed(root):
    n = 54  # int(53 / 19 * 19) == 52
    assert int((n - 1) / 19 * 19) == n - 2
    cap = "A man is walking"
    pts = [(i / 100, 0.0, authors_mid(0) - 90 + 3 * i, 0) for i in range(n)]  # all inside word "A"
    write_jsonl(root / "OVIS/OVIS_train.jsonl", [video("vid1", OVIS_KF, [narrative(cap, pts)])])
    data, _ = run(root)
    xs = [p[0] for p in data[0]["sent_to_points"][cap]]
    assert xs == [pts[i][0] for i in even(n)] and xs[-1] == 0.52
    data, _ = run(root, fixes=["last-point"])
    xs = [p[0] for p in data[0]["sent_to_points"][cap]]
    assert xs == [pts[(n - 1) * j // 19][0] for j in range(20)] and xs[-1] == 0.53 and xs[0] == 0.0
    assert vln.pick_indices(n, 20, exact=True)[-1] == n - 1 and vln.pick_indices(n, 20)[-1] == n - 2
    assert vln.pick_indices(3, 1, exact=True).tolist() == [0]


def test_time_origin_is_the_first_trace_point_unless_fixed(root):
    cap = "A man is walking"
    pts = [(0.1, 0.1, true_mid(0), 0), (0.9, 0.9, authors_mid(0), 0)]  # spoken-word time vs shifted time
    write_jsonl(root / "OVIS/OVIS_train.jsonl", [video("vid1", OVIS_KF, [narrative(cap, pts)])])
    data, _ = run(root, num_points=2)
    assert data[0]["sent_to_points"][cap] == [[0.9, 0.9], [0.9, 0.9]]
    data, report = run(root, num_points=2, fixes=["time-origin"])
    assert data[0]["sent_to_points"][cap] == [[0.1, 0.1], [0.1, 0.1]]
    data, report = run(root, num_points=2, fixes=["all"])
    assert report.fixes == list(vln.FIXES)


def test_narratives_the_authors_could_not_read_are_counted(root):
    pts = [(0.3, 0.3, authors_mid(0), 0)]
    no_nouns = narrative("A man is walking", pts, nouns=[])
    no_origin = narrative("A cat is sitting", [(0.3, 0.3, true_mid(0), 0)], first_point=False)
    no_origin["traces"] = [[]] + no_origin["traces"]  # first segment empty: no first trace point
    write_jsonl(root / "OVIS/OVIS_train.jsonl", [video("vid1", OVIS_KF, [no_nouns, no_origin])])
    data, report = run(root)
    assert data == []
    assert report.narratives_skipped["no_noun_segments"] == 1 and report.narratives_skipped["no_time_origin"] == 1
    data, report = run(root, fixes=["time-origin"])  # the recording start is always there
    assert [d["caption"] for d in data] == ["A cat is sitting"]


def test_malformed_lines_are_listed_with_their_reason(root):
    good = video("vid1", OVIS_KF, [narrative("A man is walking", [(0.3, 0.3, authors_mid(0), 0)])])

    def broken(edit) -> Dict:
        v = json.loads(json.dumps(good))
        edit(v)
        return v

    def set_point(key, value):
        return lambda v: v["actor_narratives"][0]["traces"][1].append(
            {"x": 0.1, "y": 0.1, "time_ms_since_epoch": REC, "kf_idx": 0, key: value}
        )

    lines = [
        good,  # 1
        '{"video_id": "vid1", ',  # 2 bad JSON
        [1, 2],  # 3 not an object
        broken(lambda v: v.pop("keyframe_names")),  # 4 missing field
        broken(lambda v: v["actor_narratives"][0]["traces"][0][0].pop("kf_idx")),  # 5
        broken(set_point("kf_idx", 1.5)),  # 6 non-integer kf
        broken(set_point("x", "left")),  # 7 non-numeric x
        broken(lambda v: v["actor_narratives"][0]["time_alignment"][1].pop("end_ms")),  # 8
        broken(lambda v: v["actor_narratives"][0].update(caption=None)),  # 9
        broken(lambda v: v["actor_narratives"][0].update(noun_segments=[[1]])),  # 10
        "",  # 11 blank
        broken(lambda v: v["actor_narratives"][-1].update(traces="not read")),  # 12 last: not read
        broken(lambda v: v.update(video_id=17)),
    ]  # 13
    write_jsonl(root / "OVIS/OVIS_train.jsonl", lines)
    data, report = run(root)
    assert len(data) == 2 and report.videos == 2 and report.lines == 13 and report.blank_lines == 1
    reasons = {int(m.split(":")[1]): m.split(": ", 1)[1] for m in report.malformed}
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7, 8, 9, 10, 13] and report.malformed_count == 10
    assert reasons[2].startswith("invalid JSON") and "JSON object" in reasons[3]
    assert "missing field(s) ['keyframe_names']" in reasons[4]
    assert "traces point #0" in reasons[5] and "kf_idx must be an integer" in reasons[6]
    assert "numeric x, y" in reasons[7] and "time_alignment[1]" in reasons[8]
    assert "caption must be a string" in reasons[9] and "noun_segments[0]" in reasons[10]
    assert "video_id" in reasons[13]
    saved = json.loads(ln.report_path(root.parent / "out/ln_video.json").read_text())
    assert saved["malformed_count"] == 10 and saved["records"] == 2
    # --fix time-origin reads recording_start_time_ms_since_epoch: a line without it is malformed
    no_start = broken(lambda v: v["actor_narratives"][0].pop("recording_start_time_ms_since_epoch"))
    write_jsonl(root / "OVIS/OVIS_train.jsonl", [no_start])
    assert len(run(root)[0]) == 1
    data, report = run(root, fixes=["time-origin"])
    assert data == [] and "recording_start_time_ms_since_epoch" in report.malformed[0]


# --------------------------------------------------------------------------- training side and CLI
def test_output_loads_through_region_annotations_beside_an_image_ln_file(root, tmp_path):
    cap = "A man wearing a hat is walking to the left."
    pts = [(0.1 + i / 20, 0.5, authors_mid(i), i % 2) for i in range(8)]
    write_jsonl(root / "OVIS/OVIS_train.jsonl", [video("vid1", OVIS_KF, [narrative(cap, pts)])])
    video_file = tmp_path / "out" / "ln_video.json"
    vln.preprocess_video_localized_narratives(root, video_file, sources=("ovis",), relative_paths=True, progress=True)
    image(tmp_path / "img" / "coco/images/train2014/COCO_train2014_000000000042.jpg")
    words = ["a", "red", "car"]
    line = {
        "dataset_id": "mscoco_train2017",
        "image_id": "42",
        "annotator_id": 1,
        "caption": "a red car",
        "timed_caption": [{"utterance": w, "start_time": float(i), "end_time": i + 0.9} for i, w in enumerate(words)],
        "traces": [[{"x": 0.2 + i / 10, "y": 0.4, "t": i + 0.5} for i in range(3)]],
    }
    image_file = tmp_path / "out" / "ln_coco.json"
    ln.preprocess_localized_narratives(
        [write_jsonl(tmp_path / "coco.jsonl", [line])],
        image_file,
        image_root=tmp_path / "img",
        relative_paths=True,
        progress=False,
    )
    ann = RegionAnnotations([image_file, video_file], image_root=root)
    assert ann.num_images == 3 and ann.num_chunks == 3
    assert [ann.chunk_text(c) for c in range(3)] == ["a red car", cap, cap]
    assert ann.chunk_points(1).shape == (20, 2) and ann.source(2) == str(video_file)
    assert ann.image_path(1) == root / "OVIS/train/vid1/img_0000005.jpg" and ann.image_path(1).is_file()
    assert ann.image_ids[2] == "vid1/img_0000012"
    records = json.loads(video_file.read_text())
    np.testing.assert_array_equal(ann.chunk_points(2), np.array(records[1]["sent_to_points"][cap]))


def _layout(r: Path) -> None:
    write_jsonl(r / "OVIS/OVIS_train.jsonl", [_one_point_video("vid1", OVIS_KF, [0, 1])])
    for kf in OVIS_KF[:1]:
        image(r / "OVIS/train/vid1" / f"{kf}.jpg")


def test_cli_writes_output_report_and_summary(tmp_path, capsys):
    r = tmp_path / "LN"
    _layout(r)
    out = tmp_path / "ln_video.json"
    assert (
        vln.main(["--root", str(r), "--out", str(out), "--sources", "ovis", "--quiet", "--relative-paths"]).records == 1
    )
    printed = capsys.readouterr().out
    assert "records written: 1 (ovis 1" in printed and "1 without an image file" in printed
    assert json.loads(out.read_text())[0]["image_path"] == "OVIS/train/vid1/img_0000005.jpg"
    assert json.loads(ln.report_path(out).read_text())["keyframes_dropped"]["missing_image"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cli_overrides_for_googles_layout(tmp_path, capsys):
    data = tmp_path / "data"
    write_jsonl(data / "vidlns/oops_train.jsonl", [_one_point_video("v1", ["000025", "000076"], [0, 1], t=true_mid(0))])
    write_jsonl(data / "vidlns/oops_val.jsonl", [_one_point_video("v2", ["000003"], [0], t=true_mid(0))])
    image(data / "frames/oops_train/v1/000025.png")
    image(data / "frames/oops_val/v2/000003.png")
    image(data / "frames/oops_val/v1/000076.png")
    out = tmp_path / "ln_video.json"
    rc = vln.main(
        [
            "--root",
            str(data),
            "--out",
            str(out),
            "--sources",
            "oops",
            "--quiet",
            "--input",
            f"oops={data / 'vidlns/oops_train.jsonl'}",
            "--input",
            f"oops={data / 'vidlns/oops_val.jsonl'}",
            "--oops-image-dir",
            str(data / "frames/oops_train"),
            str(data / "frames/oops_val"),
            "--frame-names",
            "keyframe",
            "--relative-paths",
            "--fix",
            "all",
        ]
    )
    assert rc.records == 3
    assert [d["image_path"] for d in json.loads(out.read_text())] == [
        "frames/oops_train/v1/000025.png",
        "frames/oops_val/v1/000076.png",
        "frames/oops_val/v2/000003.png",
    ]
    assert "fixes: time-origin, final-word-once, last-point" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--sources", "ovis", "uvo"], "UVO_sparse_train.jsonl' (uvo) not found"),
        (["--input", "youtube=x.jsonl"], "--input expects SOURCE=FILE"),
        (["--input", "ovis=nowhere.jsonl"], "nowhere.jsonl' (ovis) not found"),
        (["--fix", "everything"], "invalid choice: 'everything'"),
        (["--points", "0"], "--points must be at least 1"),
        (["--relative-paths", "--ovis-image-dir", "/elsewhere"], "is not inside --root"),
    ],
)
def test_cli_user_errors_are_one_line_and_exit_2(tmp_path, capsys, args, message):
    r = tmp_path / "LN"
    _layout(r)
    out = tmp_path / "ln_video.json"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(
            vln.main,
            ["--root", str(r), "--out", str(out), "--quiet"]
            + (args if "--sources" in args else ["--sources", "ovis"] + args),
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_failure_mid_run_leaves_no_partial_output(root, tmp_path, monkeypatch):
    write_jsonl(
        root / "OVIS/OVIS_train.jsonl", [_one_point_video("vid1", OVIS_KF, [0]), _one_point_video("vid1", OVIS_KF, [1])]
    )
    out = tmp_path / "out" / "ln_video.json"
    real = vln.video_records
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk unplugged")
        return real(*args, **kwargs)

    monkeypatch.setattr(vln, "video_records", flaky)
    with pytest.raises(RuntimeError):
        vln.preprocess_video_localized_narratives(root, out, sources=("ovis",), progress=False)
    assert not out.exists() and not list(out.parent.glob(".*"))
    with pytest.raises(MissingFileError, match="UVO_sparse_train.jsonl"):
        vln.preprocess_video_localized_narratives(root, out, sources=("uvo",), progress=False)
    with pytest.raises(ConfigError, match="--frame-names"):
        vln.preprocess_video_localized_narratives(root, out, sources=("ovis",), frame_names="padded")
