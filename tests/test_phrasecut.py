"""PhraseCut on the RIS task: the release-layout reader, PhraseCut's polygon -> mask rule, its
evaluator's mIoU / cumulative IoU (and subsets), the builder and YAML through ``train.py``,
resume, and bad files.

``write_phrasecut_fixture`` writes a small dataset in the release layout (refer_<split>.json,
image_data_split.json, images/<image_id>.jpg) plus proposal files."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
from PIL import Image
from test_refer import rect
from test_ris import FakeModel

from regionvlm.common.cli import run
from regionvlm.common.errors import ConfigError, InputError, MissingFileError
from regionvlm.common.registry import registry
from regionvlm.data.phrasecut import SUBSETS, load_phrasecut, main, polygons_to_mask
from regionvlm.data.proposals import save_image_proposals
from regionvlm.datasets.phrasecut_datasets import PhraseCutDataset
from regionvlm.tasks.ris import RISEvaluator, RISTask

REPO = Path(__file__).resolve().parents[1]
YAML = REPO / "configs" / "blip2" / "eval" / "ris_phrasecut_test.yaml"

# image id -> (height, width, split, coco_id)
IMAGES = {11: (48, 64, "test", 391895), 12: (40, 56, "test", None), 13: (30, 30, "miniv", 7), 99: (20, 20, "train", 5)}


def box(x0: float, y0: float, x1: float, y1: float) -> List[List[float]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def fixture_tasks() -> Dict[str, List[Dict[str, Any]]]:
    """Tasks per split. 11__1: two instances; 11__2: a polygon past the right border (x = 64 on
    a 64-wide image); 12__3: one instance of two overlapping polygons plus a one-point polygon
    (PhraseCut skips it); 12__5: five one-pixel-wide instances no proposal touches."""
    return {
        "test": [
            {
                "task_id": "11__1",
                "image_id": 11,
                "ann_ids": [1, 2],
                "phrase": "Left block.",
                "phrase_structure": {
                    "name": "block",
                    "attributes": ["left"],
                    "relation_descriptions": [],
                    "type": "attribute",
                },
                "instance_boxes": [[4, 8, 16, 32], [24, 10, 6, 6]],
                "Polygons": [[box(4, 8, 19, 39)], [box(24.6, 10.2, 29.9, 15.7)]],
            },
            {
                "task_id": "11__2",
                "image_id": 11,
                "ann_ids": [3],
                "phrase": "right block",
                "phrase_structure": {
                    "name": "block",
                    "attributes": [],
                    "relation_descriptions": [["next to", "block"]],
                    "type": "relation",
                },
                "instance_boxes": [[44, 8, 21, 32]],
                "Polygons": [[box(44, 8, 64, 39)]],
            },
            {
                "task_id": "12__3",
                "image_id": 12,
                "ann_ids": [4],
                "phrase": "the big middle thing on the ground",
                "phrase_structure": {
                    "name": "thing",
                    "attributes": ["big", "middle"],
                    "relation_descriptions": [["on", "ground"]],
                    "type": "verbose",
                },
                "instance_boxes": [[10, 5, 31, 31]],
                "Polygons": [[box(10, 5, 30, 25), box(20, 15, 40, 35), [[3, 3]]]],
            },
            {
                "task_id": "12__5",
                "image_id": 12,
                "ann_ids": [5, 6, 7, 8, 9],
                "phrase": "left posts",
                "phrase_structure": {"name": "post", "attributes": [], "relation_descriptions": [], "type": "name"},
                "instance_boxes": [[45 + i, 30, 1, 9] for i in range(5)],
                "Polygons": [[box(45 + 2 * i, 30, 45 + 2 * i, 35)] for i in range(5)],  # 1 x 6 px lines
            },
        ],
        "miniv": [
            {
                "task_id": "13__1",
                "image_id": 13,
                "phrase": "square",
                "phrase_structure": None,
                "Polygons": [[box(5, 5, 24, 24)]],
            }
        ],
        "val": [],
        "train": [],
    }


def fixture_proposals() -> Dict[int, List[np.ndarray]]:
    return {
        11: [
            rect(48, 64, 8, 39, 4, 19),  # 0: instance 1 of 11__1 exactly
            rect(48, 64, 8, 29, 44, 63),  # 1: on the right border, 22 rows: 44 px in the last 2 columns, kept
            rect(48, 64, 0, 3, 0, 3),  # 2: 16 px < 4 %: dropped
            rect(48, 64, 10, 30, 24, 40),  # 3: middle
        ],
        12: [rect(40, 56, 5, 25, 10, 30), rect(40, 56, 15, 35, 20, 40)],
        13: [rect(30, 30, 5, 24, 5, 24)],
    }


def write_phrasecut_fixture(data: Path, proposals: Path, *, tasks=None, images=None) -> Path:
    """``data/VGPhraseCut_v0`` (release layout) and ``proposals``; returns the VGPhraseCut_v0 folder."""
    root = data / "VGPhraseCut_v0"
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = IMAGES if images is None else images
    info = [
        {
            "image_id": i,
            "width": w,
            "height": h,
            "split": s,
            "coco_id": c,
            "flickr_id": None,
            "url": f"http://x/{i}.jpg",
        }
        for i, (h, w, s, c) in images.items()
    ]
    (root / "image_data_split.json").write_text(json.dumps(info))
    for split, split_tasks in (tasks or fixture_tasks()).items():
        (root / f"refer_{split}.json").write_text(json.dumps(split_tasks))
    for image_id, (h, w, _, _) in images.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "images" / f"{image_id}.jpg")
    for image_id, masks in fixture_proposals().items():
        save_image_proposals(proposals, f"{image_id}.jpg", masks, [0.9] * len(masks))
    return root


@pytest.fixture
def dataset_root(tmp_path) -> Path:
    return write_phrasecut_fixture(tmp_path / "data", tmp_path / "data" / "sam_proposals" / "phrasecut")


def _datasets(root: Path, image_size: int = FakeModel.image_size, **extra) -> Dict[str, Dict[str, Any]]:
    cfg = {"data_root": str(root), "proposals": str(root.parent / "sam_proposals" / "phrasecut"), **extra}
    return {"phrasecut": registry.get_builder_class("phrasecut")(cfg, image_size=image_size).build_datasets()}


def _evaluate(model, root: Path, out: Path, run_cfg: Dict[str, Any] | None = None, **extra) -> Dict[str, Any]:
    metrics = RISTask().evaluate(model, _datasets(root, model.image_size, **extra), dict(run_cfg or {}), out)
    split = extra.get("split", "test")
    path = out / f"ris_phrasecut_{split}.json"
    return {"metrics": metrics, "results": json.loads(path.read_text()), "bytes": path.read_bytes()}


# --------------------------------------------------------------------------- polygon -> mask
# Hand-computed cases of the rule (Pillow 6.1.0's scan-line filler, see fill_polygon).
def test_rectangle_covers_its_border_pixels_and_vertices_are_truncated():
    want = rect(5, 7, 1, 3, 1, 4)  # columns 1..4 and rows 1..3 inclusive: 12 pixels
    np.testing.assert_array_equal(polygons_to_mask([box(1, 1, 4, 3)], 5, 7), want)
    # 1.9 -> 1, 4.99 -> 4, 3.5 -> 3: truncation, not rounding
    np.testing.assert_array_equal(polygons_to_mask([[[1.9, 1.2], [4.7, 1.0], [4.99, 3.5], [1.5, 3.9]]], 5, 7), want)


def test_triangles_by_hand():
    got = polygons_to_mask([[[0, 0], [5, 0], [0, 5]]], 7, 7)
    rows, cols = np.indices((7, 7))
    np.testing.assert_array_equal(got, rows + cols <= 5)  # 21 pixels, the hypotenuse included
    # the edge (0,0)-(2,4) crosses line y at x = y / 2; a line fills up to ROUND_DOWN(x), halves
    # rounded toward zero: widths 1, 1 (0.5 -> 0), 2, 2 (1.5 -> 1), 3
    steep = polygons_to_mask([[[0, 0], [2, 4], [0, 4]]], 6, 5)
    assert steep.sum(axis=1).tolist() == [1, 1, 2, 2, 3, 0] and steep[:, 0][:5].all()


def test_border_is_clipped_degenerate_polygons_follow_phrasecut():
    past_right = polygons_to_mask([box(5, 1, 9, 4)], 5, 7)  # x up to 9 on a 7-wide image
    np.testing.assert_array_equal(past_right, rect(5, 7, 1, 4, 5, 6))
    negative = polygons_to_mask([box(-3.5, -2.0, 1.7, 2.2)], 5, 7)  # -3.5 -> -3: clipped at 0
    np.testing.assert_array_equal(negative, rect(5, 7, 0, 2, 0, 1))
    assert not polygons_to_mask([[[2, 2]], []], 5, 7).any()  # fewer than 2 vertices: nothing
    # 2 vertices: two coinciding edges; lines 1, 2, 3 meet them at x = 1, 3, 5 (one pixel each)
    line = polygons_to_mask([[[1, 1], [5, 3]]], 5, 7)
    assert sorted(zip(*np.nonzero(line))) == [(1, 1), (2, 3), (3, 5)]


def test_overlapping_polygons_are_a_union_not_an_exclusive_or():
    a, b = box(10, 5, 30, 25), box(20, 15, 40, 35)
    got = polygons_to_mask([a, b], 40, 56)
    assert got.sum() == 21 * 21 * 2 - 11 * 11  # 761: the overlap counted once
    np.testing.assert_array_equal(got, rect(40, 56, 5, 25, 10, 30) | rect(40, 56, 15, 35, 20, 40))


def test_equals_phrasecuts_code_under_the_pillow_it_pins():
    """240 polygon sets (self-intersecting, outlines, boxes, lines, repeated vertices, far
    outside, negative fractions; images of 1 to 400 px) and the digests of the masks PhraseCut's
    own code made of them under Pillow 6.1.0 (tests/make_phrasecut_raster_cases.py)."""
    import hashlib

    data = json.loads((Path(__file__).parent / "data" / "phrasecut_pillow61_cases.json").read_text())
    assert data["pillow"] == "6.1.0" and len(data["cases"]) == 240
    wrong = []
    for i, case in enumerate(data["cases"]):
        mask = polygons_to_mask(case["polygons"], case["height"], case["width"])
        assert mask.shape == (case["height"], case["width"])
        if hashlib.sha256(np.packbits(mask).tobytes()).hexdigest()[:16] != case["sha256_16"]:
            wrong.append(i)
    assert wrong == []


# --------------------------------------------------------------------------- reader
def test_reader_on_the_release_layout(dataset_root):
    split = load_phrasecut(dataset_root, "test")
    assert [t.task_id for t in split.tasks] == ["11__1", "11__2", "12__3", "12__5"]
    assert [t.index for t in split.tasks] == [0, 1, 2, 3]
    assert [(i, [t.task_id for t in ts]) for i, ts in split.tasks_by_image()] == [
        (11, ["11__1", "11__2"]),
        (12, ["12__3", "12__5"]),
    ]
    assert sorted(split.images) == [11, 12] and split.images[11].file_name == "11.jpg"
    assert (split.images[11].height, split.images[11].width) == (48, 64)
    assert split.tasks[0].sentence == "Left block." and split.tasks[0].num_instances == 2
    gt = [split.gt_mask(t) for t in split.tasks]
    instance_b = rect(48, 64, 10, 15, 24, 29)  # 24.6..29.9 x 10.2..15.7 truncated to 24..29 x 10..15
    np.testing.assert_array_equal(gt[0], rect(48, 64, 8, 39, 4, 19) | instance_b)  # both instances
    np.testing.assert_array_equal(gt[1], rect(48, 64, 8, 39, 44, 63))  # x = 64 clipped to the last column
    assert gt[2].sum() == 761 and gt[3].sum() == 5 * 6
    both = load_phrasecut(dataset_root, "test_miniv")  # PhraseCut's joined split names
    assert [t.task_id for t in both.tasks][-1] == "13__1" and sorted(both.images) == [11, 12, 13]


def test_subsets_follow_phrasecuts_rules(dataset_root):
    split = load_phrasecut(dataset_root, "test_miniv")
    got = {t.task_id: split.subsets(t, split.gt_mask(t)) for t in split.tasks}
    assert got == {
        # 2 instances; 548 px of 3072 = 17.8 %; one attribute; COCO image
        "11__1": ["all", "i_multi", "p_att", "p_att+", "s_mid", "d_cocotv"],
        "11__2": ["all", "i_single", "p_rel", "p_rel+", "s_large", "d_cocotv"],  # 640 / 3072 = 20.8 %
        # two attributes and a relation; 761 / 2240 = 34 %
        "12__3": ["all", "i_single", "p_att", "p_rel", "p_verbose", "p_attm", "s_large", "p_att_rel", "d_notcocotv"],
        "12__5": ["all", "i_many", "p_name", "s_small", "d_notcocotv"],  # 5 instances; 30 / 2240 = 1.3 %
        "13__1": ["all", "i_single", "s_large", "d_cocotv"],  # no phrase structure: no p_* subset
    }
    assert {s for v in got.values() for s in v} <= set(SUBSETS)


def test_image_list_for_the_proposal_generator(dataset_root, tmp_path, capsys):
    from regionvlm.proposals import list_images

    out = tmp_path / "test_images.txt"
    main(["--data-root", str(dataset_root), "--split", "test", "--out", str(out)])
    assert out.read_text() == "11.jpg\n12.jpg\n"
    assert "2 images of PhraseCut test" in capsys.readouterr().out
    listed = list_images(out, dataset_root / "images")
    assert [(n, p.is_file()) for n, p in listed] == [("11.jpg", True), ("12.jpg", True)]


# --------------------------------------------------------------------------- the evaluator's numbers
def phrasecut_reference_stats(ious_i_u: List[tuple]) -> Dict[str, float]:
    """PhraseCut's evaluator: per task iou = 0 if i == 0 else i / u; mean_mask_iou = mean(iou);
    cum_mask_iou = sum(i) / sum(u); pred_mask_acc[t] = share of iou > t."""
    ious = [0.0 if i == 0 else i / u for i, u in ious_i_u]
    return {
        "mean": float(np.mean(ious)),
        "cum": sum(i for i, _ in ious_i_u) / sum(u for _, u in ious_i_u),
        "acc0.5": float(np.mean(np.array(ious) > 0.5)),
    }


def test_metrics_equal_phrasecuts_evaluator_on_the_fixture(dataset_root, tmp_path):
    out = _evaluate(FakeModel(), dataset_root, tmp_path / "out")
    res, m = out["results"], out["metrics"]
    q = res["queries"]
    assert [(r["task_id"], r["image_id"]) for r in q] == [("11__1", 11), ("11__2", 11), ("12__3", 12), ("12__5", 12)]
    assert q[0]["candidates"] == [0, 1, 3]  # the 16 px proposal dropped, the right-border one kept
    # FakeModel: "left" picks the leftmost candidate, anything else the rightmost
    assert [r["chosen"] for r in q] == [0, 1, 1, 0]
    # the chosen masks against the ground truths by PhraseCut's rule, computed here independently
    props = fixture_proposals()
    gts = [  # the fixture's polygons as masks, by hand
        rect(48, 64, 8, 39, 4, 19) | rect(48, 64, 10, 15, 24, 29),
        rect(48, 64, 8, 39, 44, 63),
        rect(40, 56, 5, 25, 10, 30) | rect(40, 56, 15, 35, 20, 40),
        np.logical_or.reduce([rect(40, 56, 30, 35, 45 + 2 * i, 45 + 2 * i) for i in range(5)]),
    ]
    pairs = []
    for r, gt in zip(q, gts):
        pred = props[r["image_id"]][r["chosen"]]
        pairs.append((int((gt & pred).sum()), int((gt | pred).sum())))
        assert (r["intersection"], r["union"]) == pairs[-1]
    assert pairs == [(512, 548), (440, 640), (441, 761), (0, 441 + 30)]  # the last: no overlap, IoU 0
    ref = phrasecut_reference_stats(pairs)
    assert m["phrasecut_test/mIoU"] == pytest.approx(100 * ref["mean"])
    assert m["phrasecut_test/oIoU"] == pytest.approx(100 * ref["cum"])
    assert m["agg_metrics"] == m["phrasecut_test/oIoU"] and m["phrasecut_test/num_queries"] == 4
    subsets = res["subsets"]
    assert list(subsets) == list(SUBSETS)
    assert subsets["all"]["mIoU"] == pytest.approx(100 * ref["mean"])
    assert subsets["all"]["accuracy"]["0.5"] == pytest.approx(100 * ref["acc0.5"])  # IoU > 0.5: 3 of 4
    single = phrasecut_reference_stats(pairs[1:3])  # 11__2 and 12__3
    assert subsets["i_single"]["num_queries"] == 2
    assert subsets["i_single"]["oIoU"] == pytest.approx(100 * single["cum"])
    assert subsets["d_notcocotv"]["mIoU"] == pytest.approx(100 * phrasecut_reference_stats(pairs[2:])["mean"])
    assert subsets["p_rel+"] == {
        "oIoU": pytest.approx(100 * 440 / 640),
        "mIoU": pytest.approx(100 * 440 / 640),
        "num_queries": 1,
        "accuracy": {"0.5": 100.0, "0.6": 100.0, "0.7": 0.0, "0.8": 0.0, "0.9": 0.0},
    }
    assert subsets["p_relm"] == {"num_queries": 0}
    assert [r["subsets"] for r in q][3] == ["all", "i_many", "p_name", "s_small", "d_notcocotv"]
    assert res["data"]["dataset_name"] == "phrasecut" and res["data"]["gt_mask"] == "phrasecut-polygons"


# --------------------------------------------------------------------------- the YAML through train.py
def _train_options(tmp_path: Path, out: Path) -> List[str]:
    from regionvlm.quickstart import bundled_checkpoint

    return [
        "model.model_type=tiny",
        f"model.checkpoint={bundled_checkpoint()}",
        "run.device=cpu",
        f"run.output_dir={out}",
        "run.prefetch=0",
        "run.repeats=2",
    ]


@pytest.mark.slow
def test_yaml_through_train_py_and_kill_and_resume_byte_identical(dataset_root, tmp_path, monkeypatch):
    import train

    monkeypatch.setenv("REGIONVLM_DATA", str(dataset_root.parent))  # the shipped YAML's default paths
    full = tmp_path / "full"
    metrics = train.main(["--cfg-path", str(YAML), "--options", *_train_options(tmp_path, full)])
    result = full / "ris_phrasecut_test.json"
    res = json.loads(result.read_text())
    assert res["metrics"]["num_queries"] == 4 and res["settings"]["threshold"] == 0.7
    assert metrics["phrasecut_test/oIoU"] == pytest.approx(res["metrics"]["oIoU"])
    records = res["queries"]
    assert res["metrics"]["oIoU"] == pytest.approx(
        100 * sum(r["intersection"] for r in records) / sum(r["union"] for r in records)
    )
    assert res["data"]["proposals"] == str(dataset_root.parent / "sam_proposals" / "phrasecut")
    assert (full / "ris_phrasecut_test_metrics.json").is_file()

    original, calls = RISEvaluator.process, []

    def killed_after_one(self, key, inputs):
        if calls:
            raise KeyboardInterrupt("simulated kill")
        calls.append(key)
        return original(self, key, inputs)

    monkeypatch.setattr(RISEvaluator, "process", killed_after_one)
    resumed = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        train.main(["--cfg-path", str(YAML), "--options", *_train_options(tmp_path, resumed)])
    assert not (resumed / "ris_phrasecut_test.json").exists()
    assert len(list(resumed.glob("ris_phrasecut_test.*.partial.rank0.jsonl"))) == 1
    done: List[str] = []

    def counting(self, key, inputs):
        done.append(key)
        return original(self, key, inputs)

    monkeypatch.setattr(RISEvaluator, "process", counting)
    train.main(["--cfg-path", str(YAML), "--options", *_train_options(tmp_path, resumed)])
    assert done == ["12"]  # only the image not finished before the kill
    # the output folder is part of nothing in the file: the two runs are byte-identical
    assert (resumed / "ris_phrasecut_test.json").read_bytes() == result.read_bytes()
    assert not list(resumed.glob("*.partial.*"))


def test_tiny_model_runs_and_same_seed_is_byte_identical(dataset_root, tmp_path, tiny_model):
    a = _evaluate(tiny_model, dataset_root, tmp_path / "a", {"repeats": 2})
    b = _evaluate(tiny_model, dataset_root, tmp_path / "b", {"repeats": 2})
    assert a["bytes"] == b["bytes"] and a["metrics"]["phrasecut_test/num_queries"] == 4
    assert all(math.isfinite(s) for r in a["results"]["queries"] for s in r["scores"])


# --------------------------------------------------------------------------- bad files
def _error_line(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run(main, argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def _rewrite(root: Path, split: str, edit) -> None:
    path = root / f"refer_{split}.json"
    tasks = json.loads(path.read_text())
    edit(tasks)
    path.write_text(json.dumps(tasks))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t[0].update(image_id=777), r"task 11__1: image 777 is not in '.*image_data_split\.json'"),
        (lambda t: t[0].update(image_id=99), r"image 99 belongs to split 'train' .*, not to 'test'"),
        (lambda t: t[1].update(task_id="11__1"), r"task 11__1 appears twice"),
        (lambda t: t[0].update(phrase="  "), r"task 11__1 has an empty phrase"),
        (lambda t: t[0].pop("Polygons"), r"no 'Polygons' .*not refer_input_<split>\.json"),
        (lambda t: t[0].update(Polygons=[[[[1, 2, 3], [4, 5]]]]), r"instance 0 polygon 0 point 0 is \[1, 2, 3\]"),
        (lambda t: t[0].update(Polygons=[[[[1, float("nan")]]]]), r"point 0 is \[1, nan\]"),
        (lambda t: t[0].update(Polygons=[[[["a", 2]]]]), r"point 0 is \['a', 2\]"),
        (lambda t: t[0].update(Polygons=[[1, 2]]), r"instance 0 polygon 0 is 1, not a list of points"),
        (lambda t: t[0].update(Polygons="abc"), r"'Polygons' is a str"),
        (lambda t: t[0].update(phrase_structure={"attributes": "red"}), r"'phrase_structure' must be null or"),
        (lambda t: t[0].update(image_id="eleven"), r"'image_id' must be a whole number"),
        (lambda t: t.append(5), r"task #4 must be a mapping"),
    ],
)
def test_malformed_tasks_end_in_one_clear_error(dataset_root, capsys, edit, message):
    _rewrite(dataset_root, "test", edit)
    err = _error_line(["--data-root", str(dataset_root), "--split", "test"], capsys)
    assert re.search(message, err), err
    assert "refer_test.json" in err


def test_unknown_images_and_empty_phrases_are_skipped_and_listed_under_skip_missing(dataset_root, tmp_path):
    _rewrite(dataset_root, "test", lambda t: (t[0].update(image_id=777), t[2].update(phrase="")))
    out = _evaluate(FakeModel(), dataset_root, tmp_path / "o", skip_missing=True)
    assert [r["task_id"] for r in out["results"]["queries"]] == ["11__2", "12__5"]
    skipped = out["results"]["skipped"]
    assert [(s["task_id"], s["image_id"]) for s in skipped] == [("11__1", 777), ("12__3", 12)]
    assert "image 777 is not in" in skipped[0]["reason"] and "empty phrase" in skipped[1]["reason"]
    assert out["metrics"]["phrasecut_test/num_skipped"] == 2


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda r: (r / "refer_test.json").unlink(), r"'refer_test\.json' not found in .*download_dataset\.py"),
        (lambda r: (r / "image_data_split.json").unlink(), r"'image_data_split\.json' not found"),
        (lambda r: (r / "refer_test.json").write_text("[{"), r"refer_test\.json' .* is not valid JSON"),
        (lambda r: (r / "refer_test.json").write_text("{}"), r"must hold a list of tasks"),
        (
            lambda r: (r / "image_data_split.json").write_text(
                json.dumps([{"image_id": 11, "width": -64, "height": 48, "split": "test"}])
            ),
            r"image 11 has the size -64x48; sizes must be positive",
        ),
        (
            lambda r: (r / "image_data_split.json").write_text(json.dumps([{"image_id": 11, "width": 64}])),
            r"entry 0 needs a whole-number image_id, width and height and a split name",
        ),
        (
            lambda r: (r / "image_data_split.json").write_text(
                json.dumps([{"image_id": 11, "width": 6, "height": 4, "split": "test"}] * 2)
            ),
            r"image 11 is listed twice",
        ),
    ],
)
def test_bad_release_files_end_in_one_clear_error(dataset_root, capsys, setup, message):
    setup(dataset_root)
    err = _error_line(["--data-root", str(dataset_root), "--split", "test"], capsys)
    assert re.search(message, err), err


def test_bad_settings(dataset_root, tmp_path, capsys):
    assert "not one of ['train', 'val', 'test', 'miniv']" in _error_line(
        ["--data-root", str(dataset_root), "--split", "testA"], capsys
    )
    assert "does not exist" in _error_line(["--data-root", str(tmp_path / "nowhere")], capsys)
    with pytest.raises(ConfigError, match=r"`datasets.phrasecut.split`: PhraseCut split 'val_val'"):
        _datasets(dataset_root, split="val_val")
    with pytest.raises(ConfigError, match=r"`datasets.phrasecut.proposals` is not set"):
        registry.get_builder_class("phrasecut")({"data_root": str(dataset_root)}, image_size=32).build_datasets()
    with pytest.raises(ConfigError, match=r"`datasets.phrasecut.spilt` \(did you mean `split`\?\)"):
        _datasets(dataset_root, spilt="test")
    built = _datasets(dataset_root, split=["test", "miniv"])["phrasecut"]
    assert sorted(built) == ["miniv", "test"] and isinstance(built["test"], PhraseCutDataset)
    assert built["test"].image_root == dataset_root / "images"  # image_root defaults to <data_root>/images


def test_an_image_of_another_size_than_listed_stops_or_is_skipped(dataset_root, tmp_path):
    Image.new("RGB", (50, 48)).save(dataset_root / "images" / "11.jpg")  # listed as 64 x 48
    with pytest.raises(
        InputError, match=r"'.*11\.jpg' is 50x48 pixels but '.*image_data_split\.json' \(image 11\) says 64x48"
    ):
        _evaluate(FakeModel(), dataset_root, tmp_path / "a")
    out = _evaluate(FakeModel(), dataset_root, tmp_path / "b", skip_missing=True)
    assert [r["task_id"] for r in out["results"]["queries"]] == ["12__3", "12__5"]
    assert [s["task_id"] for s in out["results"]["skipped"]] == ["11__1", "11__2"]


def test_missing_images_and_proposals_name_the_files(dataset_root, tmp_path):
    (dataset_root / "images" / "12.jpg").unlink()
    (dataset_root.parent / "sam_proposals" / "phrasecut" / "11.json").unlink()
    with pytest.raises(MissingFileError, match=r"(?s)2 file\(s\).*proposals: .*11\.json.*image: .*12\.jpg"):
        _evaluate(FakeModel(), dataset_root, tmp_path / "a")
    out = _evaluate(FakeModel(), dataset_root, tmp_path / "b", skip_missing=True)
    assert out["metrics"]["phrasecut_test/num_queries"] == 0
    assert [s["task_id"] for s in out["results"]["skipped"]] == ["11__1", "11__2", "12__3", "12__5"]


def test_a_dataset_of_another_kind_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"PhraseCutDataset datasets \(builder phrasecut\)"):
        RISTask().evaluate(FakeModel(), {"vqa": {"val": [1, 2]}}, {}, tmp_path)


def test_benchmark_reports_the_ratio_and_equal_masks(tmp_path, capsys):
    from benchmark_scripts import load_benchmark

    bench = load_benchmark("bench_phrasecut_gt")
    result = bench.main(["--tasks", "4", "--json", str(tmp_path / "b.json")])
    assert result["naive_equal"] is True and result["speedup_vs_naive"] > 0
    assert set(result["ms_per_task"]) == {"vectorized", "naive", "pillow"}
    assert json.loads((tmp_path / "b.json").read_text())["tasks"] == 4
    assert "x the naive port; masks equal: True" in capsys.readouterr().out
