"""Localized Narratives and Visual Genome preprocessing on hand-written official-format lines."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
from PIL import Image

from regionvlm.common.cli import run
from regionvlm.common.errors import ConfigError, MissingFileError
from regionvlm.data import localized_narratives as ln
from regionvlm.data import visual_genome as vg

# The authors' split expression, kept here verbatim as the reference for the chunking rule.
OFFICIAL_SPLIT = "\\. |\\.| and |\\,|\\, |, and"


def _even(n: int, k: int = 20) -> List[int]:
    return [int((n - 1) / (k - 1) * j) for j in range(k)]


def word_narrative(
    caption: str, image_id: str = "42", dataset_id: str = "mscoco_train2017", skip_words: tuple = ()
) -> Dict:
    """A narrative whose utterances are the caption's words (joined by spaces = the caption);
    word i is spoken during [i, i + 0.9] and the mouse is at x = i / 100 at time i + 0.5
    (no point during the words in ``skip_words``)."""
    words = caption.split(" ")
    timed = [{"utterance": w, "start_time": float(i), "end_time": i + 0.9} for i, w in enumerate(words)]
    trace = [{"x": i / 100, "y": 0.5, "t": i + 0.5} for i in range(len(words)) if i not in skip_words]
    return {
        "dataset_id": dataset_id,
        "image_id": image_id,
        "annotator_id": 7,
        "caption": caption,
        "timed_caption": timed,
        "traces": [trace[:3], trace[3:]],
    }


def _image(path: Path, size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(path)


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    _image(root / "coco/images/train2014/COCO_train2014_000000000042.jpg")
    _image(root / "coco/images/val2014/COCO_val2014_000000000043.jpg")
    _image(root / "flickr30k/images/1000092795.jpg")
    return root


# --------------------------------------------------------------------------- chunking
def test_split_chunks_follows_the_official_separators():
    caption = "A man is riding a bike. There is a dog and a cat, and a tree."
    assert ln.split_chunks(caption) == [
        ("A man is riding a bike", 0, 22),
        ("There is a dog", 24, 38),
        ("a cat", 43, 48),
        ("a tree", 54, 60),
    ]
    assert [c for c, _, _ in ln.split_chunks("red.blue. green and yellow,pink")] == [
        "red",
        "blue",
        "green",
        "yellow",
        "pink",
    ]
    assert [c for c, _, _ in ln.split_chunks("a band plays near sand and sea")] == ["a band plays near sand", "sea"]
    assert ln.split_chunks("") == [] and ln.split_chunks(" . , and ") == []


def test_split_chunks_equals_official_re_split_on_random_captions():
    rng = np.random.default_rng(0)
    pieces = ["a", "dog", "and", " and ", ". ", ".", ",", ", ", ", and", " ", "band", "sand", "x"]
    for _ in range(300):
        caption = "".join(rng.choice(pieces, size=int(rng.integers(1, 15))))
        official = [s.strip() for s in re.split(OFFICIAL_SPLIT, caption) if s.strip()]
        mine = ln.split_chunks(caption)
        assert [t for t, _, _ in mine] == official, caption
        for text, s, e in mine:
            assert caption[s:e].strip() == text


def test_points_per_utterance_uses_inclusive_times_and_keeps_trace_order():
    times = np.array([0.5, 2.0, 1.0, 3.5, 1.0])
    idx = ln.points_per_utterance(times, np.array([0.0, 1.0, 5.0]), np.array([1.0, 2.0, 6.0]))
    assert idx[0].tolist() == [0, 2, 4]  # t = 1.0 is on the shared boundary: both utterances
    assert idx[1].tolist() == [1, 2, 4]
    assert idx[2].tolist() == []  # an utterance outside every trace time


def test_narrative_chunks_maps_words_to_chunks_and_resamples_to_20():
    caption = "A man is riding a bike. There is a dog and a cat, and a tree."
    n = ln.parse_narrative(word_narrative(caption))
    stats = ln.ChunkStats()
    chunks = ln.narrative_chunks(n, 20, stats)
    # word indices per chunk: the separators' words ("and") fall in no chunk
    expected_words = {
        "A man is riding a bike": [0, 1, 2, 3, 4, 5],
        "There is a dog": [6, 7, 8, 9],
        "a cat": [11, 12],
        "a tree": [14, 15],
    }
    assert list(chunks) == list(expected_words)
    for text, words in expected_words.items():
        xs = [words[i] / 100 for i in _even(len(words))]
        assert chunks[text] == [[x, 0.5] for x in xs]
    assert stats.kept == 4 and stats.no_points == 0 and stats.utterances_without_points == 0


def test_chunks_without_points_are_dropped_and_counted():
    caption = "a red car. a blue sky. a dog."
    n = ln.parse_narrative(word_narrative(caption, skip_words=(3, 4, 5)))  # nobody points at "a blue sky."
    stats = ln.ChunkStats()
    chunks = ln.narrative_chunks(n, 20, stats)
    assert list(chunks) == ["a red car", "a dog"]
    assert stats.no_points == 1 and stats.utterances_without_points == 3


def test_repeated_chunk_text_keeps_the_last_occurrence_like_the_official_dict():
    n = ln.parse_narrative(word_narrative("a dog. a cat. a dog.", skip_words=(4, 5)))
    stats = ln.ChunkStats()
    chunks = ln.narrative_chunks(n, 20, stats)
    assert list(chunks) == ["a cat"]  # the last "a dog" has no points: the key goes
    assert stats.duplicate_text == 1 and stats.no_points == 1
    n = ln.parse_narrative(word_narrative("a dog. a cat. a dog."))
    chunks = ln.narrative_chunks(n, 20)
    assert chunks["a dog"][0][0] == pytest.approx(0.04)  # points of the second "a dog"


def test_fewer_resampled_points_option():
    n = ln.parse_narrative(word_narrative("one two three four five six seven"))
    pts = ln.narrative_chunks(n, 3)["one two three four five six seven"]
    assert [p[0] for p in pts] == [0.0, 0.03, 0.06]


# --------------------------------------------------------------------------- the whole file
def _write_lines(path: Path, lines: List[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _official_lines() -> List[str]:
    good = word_narrative("A man is riding a bike. There is a dog and a cat, and a tree.")
    val_image = word_narrative("a red car. a blue sky.", image_id="43", dataset_id="mscoco_val2017")
    flickr = word_narrative("people on a street", image_id="1000092795", dataset_id="flickr30k_train")
    outside = word_narrative("a cat sleeps", image_id="42")
    for u in outside["timed_caption"]:
        u["start_time"] += 100.0
        u["end_time"] += 100.0
    empty_traces = dict(word_narrative("a cat sleeps"), traces=[])
    no_traces = {k: v for k, v in good.items() if k != "traces"}
    bad_utt = json.loads(json.dumps(good))
    del bad_utt["timed_caption"][2]["end_time"]
    bad_point = json.loads(json.dumps(good))
    bad_point["traces"][1][0]["x"] = "left"
    reversed_time = json.loads(json.dumps(good))
    reversed_time["timed_caption"][0]["end_time"] = -1.0
    missing_image = word_narrative("a tree", image_id="0000b86e2fd18333", dataset_id="open_images_train_v6")
    return [
        json.dumps(good),  # 1 ok, 4 chunks
        '{"dataset_id": "mscoco_train2017", ',  # 2 bad JSON
        json.dumps(no_traces),  # 3 missing field
        json.dumps(outside),  # 4 utterances outside the trace times -> no chunk
        "",  # 5 blank
        json.dumps(empty_traces),  # 6 empty traces -> no chunk
        json.dumps(bad_utt),  # 7 utterance without end_time
        json.dumps([1, 2, 3]),  # 8 not an object
        json.dumps(bad_point),  # 9 non-numeric trace coordinate
        json.dumps(val_image),  # 10 ok (val2014 file), 2 chunks
        json.dumps(reversed_time),  # 11 utterance ends before it starts
        json.dumps(missing_image),  # 12 image file absent
        json.dumps(flickr),
    ]  # 13 ok, 1 chunk


def test_preprocess_file_reports_every_drop_and_malformed_line(tmp_path, image_root):
    src = _write_lines(tmp_path / "ln.jsonl", _official_lines())
    out = tmp_path / "out" / "ann.json"
    report = ln.preprocess_localized_narratives([src], out, image_root=image_root, progress=False)
    data = json.loads(out.read_text())
    assert [d["image_id"] for d in data] == ["42", "43", "1000092795"]
    assert data[0]["image_path"] == str(image_root / "coco/images/train2014/COCO_train2014_000000000042.jpg")
    assert data[1]["image_path"] == str(image_root / "coco/images/val2014/COCO_val2014_000000000043.jpg")
    assert data[0]["dataset_id"] == "mscoco_train2017" and data[0]["annotator_id"] == 7
    assert all(len(p) == 20 for d in data for p in d["sent_to_points"].values())
    assert list(data[1]["sent_to_points"]) == ["a red car", "a blue sky"]

    assert report.lines == 13 and report.blank_lines == 1 and report.narratives == 6
    assert report.images_written == 3
    assert report.images_dropped == {"no_chunks": 2, "missing_image": 1}
    assert report.chunks.kept == 4 + 2 + 1
    assert report.chunks.no_points == 2 and report.chunks.image_missing == 1
    reasons = {int(m.split(":")[1]): m for m in report.malformed}
    assert sorted(reasons) == [2, 3, 7, 8, 9, 11]
    assert "invalid JSON" in reasons[2] and "missing field(s) ['traces']" in reasons[3]
    assert "timed_caption[2]" in reasons[7] and "JSON object" in reasons[8]
    assert "trace point #3" in reasons[9] and "before it starts" in reasons[11]
    assert "0000b86e2fd18333" in report.missing_images[0] and ":12:" in report.missing_images[0]
    saved = json.loads(ln.report_path(out).read_text())
    assert saved["malformed_count"] == 6 and saved["chunks_kept"] == 7
    assert not list(out.parent.glob(".*.tmp"))


def test_parallel_files_give_the_same_output_in_input_order(tmp_path, image_root):
    lines = _official_lines()
    a = _write_lines(tmp_path / "a.jsonl", lines[:7])
    b = _write_lines(tmp_path / "b.jsonl", lines[7:])
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    r1 = ln.preprocess_localized_narratives([a, b], one, image_root=image_root, progress=False)
    r2 = ln.preprocess_localized_narratives([a, b], two, image_root=image_root, progress=False, workers=2)
    assert one.read_text() == two.read_text()
    assert r1.as_dict() == r2.as_dict()
    assert [d["image_id"] for d in json.loads(one.read_text())] == ["42", "43", "1000092795"]
    assert r1.malformed[-1].startswith(f"{b}:4:")  # line numbers are per file
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cli_prints_report_and_accepts_patterns(tmp_path, image_root, capsys):
    src = _write_lines(tmp_path / "ln.jsonl", [json.dumps(word_narrative("a dog", image_id="5", dataset_id="toy"))])
    _image(image_root / "toy" / "img5.png")
    out = tmp_path / "ann.json"
    report = ln.main(
        [
            "--input",
            str(src),
            "--out",
            str(out),
            "--image-root",
            str(image_root),
            "--quiet",
            "--image-pattern",
            "toy=missing/{image_id}.jpg",
            "--image-pattern",
            "toy=toy/img{image_id}.png",
            "--relative-paths",
        ]
    )
    assert report.images_written == 1
    assert json.loads(out.read_text())[0]["image_path"] == "toy/img5.png"
    printed = capsys.readouterr().out
    assert "images written: 1" in printed and "chunks kept: 1" in printed


def test_unknown_dataset_stops_without_leaving_a_partial_file(tmp_path, image_root, capsys):
    src = _write_lines(tmp_path / "ln.jsonl", [json.dumps(word_narrative("a", dataset_id="mystery"))])
    out = tmp_path / "ann.json"
    with pytest.raises(SystemExit) as exit_info:
        run(ln.main, ["--input", str(src), "--out", str(out), "--image-root", str(image_root), "--quiet"])
    assert exit_info.value.code == 2 and "--image-pattern mystery=PATTERN" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(MissingFileError, match="nowhere.jsonl"):
        ln.preprocess_localized_narratives([tmp_path / "nowhere.jsonl"], out, image_root=image_root)
    with pytest.raises(ConfigError, match="KEY=PATTERN"):
        ln.parse_patterns(["no-equals-sign"])


def test_no_check_images_writes_the_first_pattern(tmp_path):
    src = _write_lines(
        tmp_path / "ln.jsonl",
        [json.dumps(word_narrative("a tree", image_id="0a1b", dataset_id="open_images_train_v6"))],
    )
    out = tmp_path / "ann.json"
    ln.preprocess_localized_narratives([src], out, image_root="/nonexistent/root", check_images=False, progress=False)
    assert json.loads(out.read_text())[0]["image_path"] == "/nonexistent/root/open_images/images/train_0/0a1b.jpg"


# --------------------------------------------------------------------------- dataset_id spellings
# Spellings of the released files (Google's loader: 'Flic' / 'ADE' in dataset_id) and variants
# of them: every one must land in its family, whatever the case or separators.
SPELLINGS = {
    "coco": ["mscoco_train2017", "mscoco_val2017", "coco", "COCO", "MSCOCO_val2017", "coco_train"],
    "open_images": [
        "open_images",
        "open_images_train_v6",
        "open_images_validation",
        "openimages",
        "OpenImages",
        "Open Images",
        "open-images_test",
    ],
    "flickr30k": ["Flick30k", "flick30k", "Flickr30k", "flickr30k", "FLICKR30K", "flickr30k_train"],
    "ade20k": ["ADE20k", "ade20k", "ADE20K", "ade20k_train", "ADE"],
}


def test_every_released_dataset_id_spelling_finds_its_family(tmp_path):
    resolver = ln.ImagePathResolver(tmp_path, check_exists=False)
    for family, spellings in SPELLINGS.items():
        for spelling in spellings:
            assert resolver.family(spelling) == family, spelling
    for unknown in ("visual_genome", "mystery", "cityscapes"):
        with pytest.raises(ConfigError, match=f"--image-pattern {unknown}=PATTERN"):
            resolver.family(unknown)
    exact = ln.ImagePathResolver(tmp_path, {"Flick30k": ["f/{image_id}.jpg"]}, check_exists=False)
    assert exact.family("Flick30k") == "Flick30k" and exact.family("flickr30k") == "flickr30k"


def test_preprocessing_resolves_images_of_every_spelling(tmp_path):
    root = tmp_path / "images"
    ids = {"coco": "42", "open_images": "0a1b2c3d4e5f6a7b", "flickr30k": "1000092795", "ade20k": "ADE_train_00000001"}
    files = {
        "coco": "coco/images/train2014/COCO_train2014_000000000042.jpg",
        "open_images": "open_images/images/train_0/0a1b2c3d4e5f6a7b.jpg",
        "flickr30k": "flickr30k/images/1000092795.jpg",
        "ade20k": "ade20k/images/training/ADE_train_00000001.jpg",
    }
    for rel in files.values():
        _image(root / rel)
    lines = [
        json.dumps(word_narrative("a dog", image_id=ids[fam], dataset_id=spelling))
        for fam, spellings in SPELLINGS.items()
        for spelling in spellings
    ]
    src = _write_lines(tmp_path / "ln.jsonl", lines)
    out = tmp_path / "ann.json"
    report = ln.preprocess_localized_narratives([src], out, image_root=root, progress=False, relative_paths=True)
    data = json.loads(out.read_text())
    assert report.images_written == len(lines) and not report.missing_images
    expected = [files[fam] for fam, spellings in SPELLINGS.items() for _ in spellings]
    assert [d["image_path"] for d in data] == expected
    assert [d["dataset_id"] for d in data] == [s for spellings in SPELLINGS.values() for s in spellings]


# --------------------------------------------------------------------------- Visual Genome
def _vg_files(tmp_path: Path):
    root = tmp_path / "vg"
    _image(root / "VG_100K" / "1.jpg", (100, 50))
    _image(root / "VG_100K_2" / "2.jpg", (200, 100))
    regions = [
        {
            "id": 1,
            "regions": [
                {"region_id": 11, "image_id": 1, "phrase": "a white clock", "x": 10, "y": 5, "width": 20, "height": 10},
                {"region_id": 12, "image_id": 1, "phrase": "the whole wall", "x": 0, "y": 0, "width": 90, "height": 45},
                {"region_id": 13, "image_id": 1, "phrase": "a lamp", "x": 90, "y": 40, "width": 20, "height": 20},
                {"region_id": 14, "image_id": 1, "phrase": " ", "x": 1, "y": 1, "width": 2, "height": 2},
            ],
        },
        {
            "id": 2,
            "regions": [
                {"region_id": 21, "image_id": 2, "phrase": "a red car", "x": 50, "y": 50, "width": 40, "height": 20}
            ],
        },
        {
            "id": 3,
            "regions": [{"region_id": 31, "image_id": 3, "phrase": "a ghost", "x": 5, "y": 5, "width": 4, "height": 4}],
        },
    ]
    image_data = [
        {"image_id": 1, "width": 100, "height": 50, "url": "https://x/VG_100K/1.jpg"},
        {"image_id": 2, "width": 200, "height": 100, "url": "https://x/VG_100K_2/2.jpg"},
        {"image_id": 3, "width": 10, "height": 10, "url": "https://x/VG_100K/3.jpg"},
    ]
    (tmp_path / "regions.json").write_text(json.dumps(regions))
    (tmp_path / "image_data.json").write_text(json.dumps(image_data))
    return root, tmp_path / "regions.json", tmp_path / "image_data.json"


def test_visual_genome_boxes_to_points(tmp_path):
    root, regions, image_data = _vg_files(tmp_path)
    out = tmp_path / "vg.json"
    report = vg.preprocess_visual_genome(
        regions, out, image_root=root, image_data_file=image_data, seed=3, progress=False
    )
    data = json.loads(out.read_text())
    assert [d["image_id"] for d in data] == ["1", "2"]
    assert data[1]["image_path"] == str(root / "VG_100K_2" / "2.jpg")
    first = data[0]["sent_to_points"]
    assert set(first) == {"a white clock", "a lamp"}  # the wall covers 81% of the image: skipped
    clock = np.array(first["a white clock"])
    assert clock.shape == (20, 2)
    assert np.all((clock[:, 0] >= 0.1) & (clock[:, 0] <= 0.3) & (clock[:, 1] >= 0.1) & (clock[:, 1] <= 0.3))
    assert np.all(np.round(clock, 4) == clock)
    lamp = np.array(first["a lamp"])  # box runs off the image: clipped
    assert lamp[:, 0].max() <= 1.0 and lamp[:, 1].max() <= 1.0 and lamp[:, 0].min() >= 0.9
    assert report.skipped["too_large"] == 1 and report.skipped["empty_phrase"] == 1
    assert report.clipped == 1 and report.images_dropped["missing_image"] == 1
    again = tmp_path / "vg2.json"
    vg.preprocess_visual_genome(regions, again, image_root=root, image_data_file=image_data, seed=3, progress=False)
    assert json.loads(again.read_text()) == data  # seeded per (seed, image_id)
    other = tmp_path / "vg3.json"
    vg.preprocess_visual_genome(regions, other, image_root=root, image_data_file=image_data, seed=4, progress=False)
    assert json.loads(other.read_text()) != data


def test_visual_genome_coco_style_input_and_sizes_from_files(tmp_path):
    root = tmp_path / "vg"
    _image(root / "VG_100K" / "7.jpg", (100, 100))
    coco_style = {
        "images": [{"id": 7}],
        "annotations": [
            {"image_id": 7, "bbox": [0, 0, 50, 50], "caption": "a cat"},
            {"image_id": 7, "bbox": [0, 0, 80, 80], "caption": "a big thing"},
            {"image_id": 99, "bbox": [0, 0, 1, 1], "caption": "orphan"},
        ],
    }
    src = tmp_path / "train.json"
    src.write_text(json.dumps(coco_style))
    out = tmp_path / "vg.json"
    report = vg.preprocess_visual_genome(src, out, image_root=root, progress=False)
    data = json.loads(out.read_text())
    assert list(data[0]["sent_to_points"]) == ["a cat"]
    assert np.array(data[0]["sent_to_points"]["a cat"]).max() <= 0.5
    assert report.skipped["too_large"] == 1 and report.skipped["malformed"] == 1
