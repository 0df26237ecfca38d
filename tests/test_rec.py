"""Zero-shot REC: box IoU and Acc@0.5 by ReCLIP's rule computed by hand, both detection
layouts, ground-truth candidates, the shared RIS scorers (fast == official), no-candidate
handling, resume, bad files, the YAML through train.py and eval_REC.py."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
from PIL import Image
from test_ris import FakeModel

import regionvlm.datasets.builders.rec_builder  # noqa: F401  (registers the builders)
from regionvlm.common.errors import ConfigError, InputError, MissingFileError
from regionvlm.common.registry import registry
from regionvlm.data.boxes import box_iou, box_mask, parse_xywh, sampling_box
from regionvlm.data.detections import read_detections
from regionvlm.region import sample_mask_points
from regionvlm.tasks.evaluation import item_rng
from regionvlm.tasks.rec import RECEvaluator, RECSettings, RECTask, summarize
from regionvlm.tasks.ris import REGION_PROMPTS, BoxPointSampler

REPO = Path(__file__).resolve().parents[1]

# image id -> (file name, height, width)
IMAGES = {
    1: ("COCO_train2014_000000000001.jpg", 40, 60),
    2: ("COCO_train2014_000000000002.jpg", 48, 64),
    3: ("COCO_train2014_000000000003.jpg", 32, 32),
}
# annotation id -> (image id, COCO bbox [x, y, w, h]); each segmentation is its box's rectangle
ANNOTATIONS = {
    201: (1, [2, 5, 16, 20]),  # left block (ref 10)
    202: (1, [40, 5, 16, 20]),  # right block (ref 11)
    203: (1, [20, 5, 16, 20]),  # middle block: a candidate nobody refers to
    204: (2, [10, 10, 30, 20]),  # the only object of image 2 (ref 12)
    205: (3, [4, 4, 20, 20]),  # testA (ref 13)
}
# Detections, with the cases ReCLIP's rule must get right (hand-computed IoU with the ground truth):
DETECTIONS = {
    1: [
        [2, 5, 16, 10],  # 0: half of 201: I = 160, U = 320 + 160 - 160 -> IoU exactly 0.5 (counts)
        [18, 5, 16, 20],  # 1: touches 201 at x = 18: IoU 0
        [40, 5, 16, 20],  # 2: == 202: IoU 1
        [30, 30, 0, 5],  # 3: zero area: IoU 0 with anything, still scored
    ],
    2: [[40, 10, 20, 20]],  # the image's one candidate touches 204 at x = 40: IoU 0
    3: [[4, 4, 20, 20]],
}


def _polygon(box: List[float]) -> List[List[float]]:
    x, y, w, h = box
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def write_rec_fixture(root: Path, dataset: str = "refcoco", image_dir: Path | None = None) -> Dict[str, Path]:
    """Refs + instances (with COCO bbox) + images + detections in both layouts."""
    folder = root / dataset
    folder.mkdir(parents=True, exist_ok=True)
    image_dir = image_dir or root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, h, w in IMAGES.values():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(image_dir / name, quality=95)
    instances = {
        "images": [{"id": i, "file_name": n, "height": h, "width": w} for i, (n, h, w) in IMAGES.items()],
        "annotations": [
            {"id": a, "image_id": i, "category_id": 1, "iscrowd": 0, "bbox": b, "segmentation": _polygon(b)}
            for a, (i, b) in ANNOTATIONS.items()
        ],
        "categories": [{"id": 1, "name": "block"}],
    }
    (folder / "instances.json").write_text(json.dumps(instances))
    texts = {100: "The LEFT block.", 101: "left thing", 110: "the right block", 120: "right side", 130: "the square"}

    def ref(ref_id: int, ann_id: int, split: str, sent_ids: List[int]) -> Dict[str, Any]:
        image_id = ANNOTATIONS[ann_id][0]
        sents = [{"raw": texts[s], "sent": texts[s].lower(), "sent_id": s} for s in sent_ids]
        return {"ref_id": ref_id, "ann_id": ann_id, "image_id": image_id, "split": split, "sentences": sents}

    refs = [ref(10, 201, "val", [100, 101]), ref(11, 202, "val", [110]), ref(12, 204, "val", [120])]
    refs.append(ref(13, 205, "testA", [130]))
    for r in refs:
        r["sent_ids"] = [s["sent_id"] for s in r["sentences"]]
    with open(folder / "refs(unc).p", "wb") as f:
        pickle.dump(refs, f, protocol=2)
    dets = root / "dets"
    dets.mkdir(exist_ok=True)
    entries = []
    for image_id, boxes in DETECTIONS.items():
        for k, b in enumerate(boxes):  # the refer layout allows a box as a list or as {x, y, w, h}
            box = dict(zip("xywh", b)) if k % 2 else b
            entries.append({"det_id": len(entries), "image_id": image_id, "box": box, "score": 0.9, "category_id": 1})
    (dets / "refer_dets.json").write_text(json.dumps({"dets": entries}))
    (dets / "bare_list.json").write_text(json.dumps(entries))
    (dets / "reclip_dets_dict.json").write_text(json.dumps({str(i): b for i, b in DETECTIONS.items()}))
    return {"data_root": root, "image_root": image_dir, "instances": folder / "instances.json", "dets": dets}


class RECFakeModel(FakeModel):
    """test_ris's model whose choice is known ('left': the candidate whose points lie leftmost;
    'right': rightmost), with the model's K."""

    num_points = 10


@pytest.fixture
def roots(tmp_path) -> Dict[str, Path]:
    return write_rec_fixture(tmp_path / "refer")


def _datasets(roots, image_size: int = FakeModel.image_size, split: str = "val", **extra) -> Dict[str, Any]:
    cfg = {"data_root": str(roots["data_root"]), "image_root": str(roots["image_root"]), "split": split, **extra}
    return {"rec_refcoco": registry.get_builder_class("rec_refcoco")(cfg, image_size=image_size).build_datasets()}


def _evaluate(model, roots, out: Path, run: Dict[str, Any] | None = None, **ds_extra) -> Dict[str, Any]:
    run = dict(run or {})
    metrics = RECTask().evaluate(model, _datasets(roots, model.image_size, **ds_extra), run, out)
    [path] = list(out.glob("rec*_refcoco_unc_val.json"))
    return {"metrics": metrics, "results": json.loads(path.read_text()), "bytes": path.read_bytes(), "name": path.name}


def _dets(roots, layout: str = "refer_dets.json") -> Dict[str, str]:
    return {"candidates": "detections", "detections": str(roots["dets"] / layout)}


# --------------------------------------------------------------------------- boxes by hand
def test_box_iou_follows_reclip_rule_on_edge_cases():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 5)) == 0.5  # exactly one half
    assert box_iou((0, 0, 10, 10), (5, 5, 10, 10)) == pytest.approx(25 / 175)
    assert box_iou((0, 0, 10, 10), (10, 0, 10, 10)) == 0.0  # touching edges share no area
    assert box_iou((0, 0, 10, 10), (10, 10, 5, 5)) == 0.0  # touching corners
    assert box_iou((0, 0, 10, 10), (3, 3, 0, 4)) == 0.0  # zero-area box inside: I = 0
    assert box_iou((3, 3, 0, 0), (3, 3, 0, 0)) == 0.0  # no union at all: 0, not a division by zero
    assert box_iou((0.5, 0.5, 2.0, 2.0), (1.5, 0.5, 2.0, 2.0)) == pytest.approx(2 / 6)  # continuous, no "+1"
    records = [
        {"iou": 0.5, "ious": [0.5, 0.1], "correct": True},
        {"iou": 0.49, "ious": [0.49, 0.8, 0.9, 0.0], "correct": False},
        {"iou": 0.0, "ious": [], "correct": False},  # no candidate
    ]
    got = summarize(records)
    assert got["acc@0.5"] == pytest.approx(100 / 3) and got["num_correct"] == 1 and got["num_expressions"] == 3
    assert got["mIoU"] == pytest.approx(100 * 0.99 / 3) and got["upper_bound@0.5"] == pytest.approx(200 / 3)
    assert got["chance@0.5"] == pytest.approx(100 * (1 / 2 + 2 / 4 + 0) / 3)
    assert summarize([])["acc@0.5"] is None


def test_box_parsing_masks_and_sampling_boxes():
    assert parse_xywh([1, 2, 3, 4], "b") == (1.0, 2.0, 3.0, 4.0)
    assert parse_xywh({"x": 1, "y": 2, "w": 0, "h": 4.5}, "b") == (1.0, 2.0, 0.0, 4.5)
    for bad, message in (
        ([1, 2, 3], r"a box is \[x, y, w, h\]"),
        ([1, 2, -3, 4], "must not be negative"),
        ([1, 2, float("nan"), 4], "finite"),
        ([1, "2", 3, 4], "must be numbers"),
        ([True, 2, 3, 4], "must be numbers"),
        ({"x": 1, "y": 2, "w": 3}, "needs the keys x, y, w, h"),
    ):
        with pytest.raises(InputError, match=message):
            parse_xywh(bad, "box 7")
    mask = box_mask((2.5, 1, 3, 2), 6, 8)  # covers columns 2..5 (x 2.5..5.5) and rows 1..2
    assert mask.sum() == 8 and mask[1:3, 2:6].all()
    zero = box_mask((4, 3, 0, 0), 6, 8)  # zero area: the one pixel at its position
    assert zero.sum() == 1 and zero[3, 4]
    edge = box_mask((8, 6, 0, 0), 6, 8)  # on the far corner: still a pixel inside the image
    assert edge.sum() == 1 and edge[5, 7]
    assert sampling_box((2.5, 1, 5.5, 3), 6, 8) == (2.5, 1, 5.5, 3)
    assert sampling_box((4, 3, 4, 7), 6, 8) == (4, 3, 5, 6)  # zero width -> one pixel; clipped to the image
    pts = BoxPointSampler((30, 30, 30, 35), 40, 60).sample(50, np.random.default_rng(0))
    assert (pts[:, 0] * 60 >= 30).all() and (pts[:, 0] * 60 <= 31).all()  # a zero-width box is drawn in


def test_both_detection_layouts_read_the_same_boxes(roots):
    known = {1, 2, 3}
    refer = read_detections(roots["dets"] / "refer_dets.json", known)
    reclip = read_detections(roots["dets"] / "reclip_dets_dict.json", known)
    bare = read_detections(roots["dets"] / "bare_list.json", known)
    assert (refer.layout, reclip.layout, bare.layout) == ("refer", "reclip", "refer")
    want = {i: [tuple(float(v) for v in b) for b in boxes] for i, boxes in DETECTIONS.items()}
    assert refer.boxes == reclip.boxes == bare.boxes == want
    assert refer.for_image(99) == []


# --------------------------------------------------------------------------- the protocol, by hand
@pytest.mark.parametrize("protocol", ["fast", "official"])
def test_gt_candidates_are_every_annotation_of_the_image(roots, tmp_path, protocol):
    out = _evaluate(RECFakeModel(), roots, tmp_path / protocol, {"protocol": protocol})
    res = out["results"]
    e = res["expressions"]
    assert out["name"] == "rec_refcoco_unc_val.json"
    assert [(r["ref_id"], r["sent_id"]) for r in e] == [(10, 100), (10, 101), (11, 110), (12, 120)]
    assert e[0]["candidates"] == [201, 202, 203] and e[3]["candidates"] == [204]  # the unreferred 203 too
    assert e[0]["boxes"] == [[2.0, 5.0, 16.0, 20.0], [40.0, 5.0, 16.0, 20.0], [20.0, 5.0, 16.0, 20.0]]
    assert [r["chosen"] for r in e] == [201, 201, 202, 204]  # left, left, right, the only one
    gt_boxes = [[2.0, 5.0, 16.0, 20.0]] * 2 + [[40.0, 5.0, 16.0, 20.0], [10.0, 10.0, 30.0, 20.0]]
    assert [r["gt_box"] for r in e] == gt_boxes
    assert all(r["iou"] == 1.0 and r["correct"] for r in e)
    assert res["data"]["candidates"] == "gt" and res["settings"]["num_points"] == 10  # K from the model
    m = out["metrics"]
    assert m["refcoco_unc_val/acc@0.5"] == 100.0 and m["agg_metrics"] == 100.0
    assert m["refcoco_unc_val/num_expressions"] == 4 and m["refcoco_unc_val/num_images"] == 2


@pytest.mark.parametrize("layout", ["refer_dets.json", "reclip_dets_dict.json", "bare_list.json"])
def test_detections_acc_iou_and_scores_by_hand(roots, tmp_path, layout):
    model = RECFakeModel()
    out = _evaluate(model, roots, tmp_path / "d", **_dets(roots, layout))
    e = out["results"]["expressions"]
    assert out["name"] == "rec-dets_refcoco_unc_val.json"  # another experiment: its own file
    assert e[0]["candidates"] == [0, 1, 2, 3] and e[0]["boxes"] == [[float(v) for v in b] for b in DETECTIONS[1]]
    assert [r["chosen"] for r in e] == [0, 0, 2, 0]
    assert [r["iou"] for r in e] == [0.5, 0.5, 1.0, 0.0]  # exactly 0.5 ...
    assert e[0]["ious"] == [0.5, 0.0, 0.0, 0.0] and e[2]["ious"] == [0.0, 0.0, 1.0, 0.0] and e[3]["ious"] == [0.0]
    assert [r["correct"] for r in e] == [True, True, True, False]  # ... counts; touching boxes do not
    assert [r["chosen_box"] for r in e][3] == [40.0, 10.0, 20.0, 20.0]
    # scores: lowest over 5 draws (shared by the image's sentences) of +-mean x of points drawn
    # among the pixels of each box (the zero-area box: its one pixel)
    rng = item_rng(42, "1")
    draws = [[sample_mask_points(box_mask(tuple(b), 40, 60), 10, rng) for _ in range(5)] for b in DETECTIONS[1]]
    mean_x = [[(p[:, 0] * np.float32(100)).astype(int).mean() / 100 for p in d] for d in draws]
    np.testing.assert_allclose(e[0]["scores"], [min(v) for v in mean_x], rtol=1e-6)
    np.testing.assert_allclose(e[2]["scores"], [min(-x for x in v) for v in mean_x], rtol=1e-6)
    assert e[0]["scores"][3] == pytest.approx(min(mean_x[3])) and min(mean_x[3]) == 0.5  # x = 30 of 60
    m = out["metrics"]
    assert m["refcoco_unc_val/acc@0.5"] == 75.0  # 3 of 4
    assert m["refcoco_unc_val/mIoU"] == pytest.approx(100 * (0.5 + 0.5 + 1 + 0) / 4)
    assert m["refcoco_unc_val/upper_bound@0.5"] == 75.0  # image 2's one box cannot be right
    assert m["refcoco_unc_val/chance@0.5"] == pytest.approx(100 * (1 / 4 + 1 / 4 + 1 / 4 + 0) / 4)
    assert m["refcoco_unc_val/num_no_candidate"] == 0 and m["refcoco_unc_val/mean_candidates"] == 3.25
    assert model.calls["images_encoded"] == 2  # each image once


def test_draws_per_sentence_option(roots, tmp_path):
    shared = _evaluate(RECFakeModel(), roots, tmp_path / "a")["results"]["expressions"]
    fresh = _evaluate(RECFakeModel(), roots, tmp_path / "b", {"draws": "sentence"})["results"]
    assert shared[0]["scores"] == shared[1]["scores"]  # the image's draws serve both 'left' sentences
    assert fresh["expressions"][0]["scores"] != fresh["expressions"][1]["scores"]  # new draws per sentence
    assert [r["chosen"] for r in fresh["expressions"]] == [201, 201, 202, 204]
    assert fresh["settings"]["draws"] == "sentence"


def test_box_prompt_draws_in_the_annotated_box(roots, tmp_path):
    out = _evaluate(RECFakeModel(), roots, tmp_path / "b", {"region_prompt": "box"})
    e = out["results"]["expressions"]
    assert out["name"] == "rec-box_refcoco_unc_val.json" and [r["chosen"] for r in e] == [201, 201, 202, 204]
    rng = item_rng(42, "1")
    boxes = [ANNOTATIONS[a][1] for a in (201, 202, 203)]
    samplers = [BoxPointSampler((x, y, x + w, y + h), 40, 60) for x, y, w, h in boxes]
    mean_x = [[(s.sample(10, rng)[:, 0] * 100).astype(int).mean() / 100 for _ in range(5)] for s in samplers]
    np.testing.assert_allclose(e[0]["scores"], [min(v) for v in mean_x], rtol=1e-6)
    dets = _evaluate(RECFakeModel(), roots, tmp_path / "db", {"region_prompt": "box"}, **_dets(roots))
    assert dets["name"] == "rec-dets-box_refcoco_unc_val.json"


def test_image_without_candidates_is_wrong_whole_image_or_error(roots, tmp_path):
    path = roots["dets"] / "no_image2.json"
    path.write_text(json.dumps({"1": DETECTIONS[1], "3": DETECTIONS[3]}))
    ds = {"candidates": "detections", "detections": str(path)}
    out = _evaluate(RECFakeModel(), roots, tmp_path / "a", **ds)
    last = out["results"]["expressions"][3]
    assert last["candidates"] == [] and last["chosen"] is None and last["iou"] == 0.0 and not last["correct"]
    assert out["results"]["no_candidate"] == [{"ref_id": 12, "sent_id": 120, "image_id": 2}]
    assert out["metrics"]["refcoco_unc_val/acc@0.5"] == 75.0  # still counted, as wrong
    assert out["metrics"]["refcoco_unc_val/num_no_candidate"] == 1
    whole = _evaluate(RECFakeModel(), roots, tmp_path / "b", {"on_no_candidate": "image"}, **ds)
    last = whole["results"]["expressions"][3]
    assert last["candidates"] == [-1] and last["boxes"] == [[0.0, 0.0, 64.0, 48.0]] and last["whole_image"]
    assert last["iou"] == pytest.approx(600 / 3072)  # the 30x20 object inside the 64x48 image
    assert whole["results"]["no_candidate"] == [{"ref_id": 12, "sent_id": 120, "image_id": 2}]
    with pytest.raises(InputError, match=r"image 2 has no candidate box in '.*no_image2\.json'"):
        _evaluate(RECFakeModel(), roots, tmp_path / "c", {"on_no_candidate": "error"}, **ds)


# --------------------------------------------------------------------------- the tiny model
@pytest.mark.parametrize(
    "mode, candidates", [("points", "gt"), ("box", "gt"), ("circle", "gt")] + [(m, "dets") for m in REGION_PROMPTS]
)
def test_fast_equals_official_on_tiny_model(mode, candidates, tiny_model, roots, tmp_path):
    extra = _dets(roots) if candidates == "dets" else {}
    run = {"region_prompt": mode, "decoder_batch": 5, "encoder_batch": 3}
    fast = _evaluate(tiny_model, roots, tmp_path / "fast", run, **extra)["results"]
    official = _evaluate(tiny_model, roots, tmp_path / "off", {**run, "protocol": "official"}, **extra)["results"]
    for f, o in zip(fast["expressions"], official["expressions"]):
        assert f["candidates"] == o["candidates"]
        np.testing.assert_allclose(f["scores"], o["scores"], rtol=1e-5, atol=1e-5)
        assert f["chosen"] == o["chosen"] and f["iou"] == o["iou"]
    assert fast["metrics"] == official["metrics"]
    if mode != "empty":  # the region reaches the model: candidates score differently
        assert np.ptp(fast["expressions"][0]["scores"]) > 1e-5


def test_same_seed_byte_identical_and_resume_after_kill(tiny_model, roots, tmp_path, monkeypatch):
    reference = _evaluate(tiny_model, roots, tmp_path / "ref")["bytes"]
    assert _evaluate(tiny_model, roots, tmp_path / "again")["bytes"] == reference
    original = RECEvaluator.process
    calls: List[str] = []

    def killed_after_one(self, key, inputs):
        if calls:
            raise KeyboardInterrupt("simulated kill")
        calls.append(key)
        return original(self, key, inputs)

    monkeypatch.setattr(RECEvaluator, "process", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        _evaluate(tiny_model, roots, tmp_path / "run")
    logs = list((tmp_path / "run").glob("rec_refcoco_unc_val.*.partial.rank0.jsonl"))
    assert len(logs) == 1 and len(logs[0].read_text().splitlines()) == 1
    assert not (tmp_path / "run" / "rec_refcoco_unc_val.json").exists()
    done: List[str] = []

    def counting(self, key, inputs):
        done.append(key)
        return original(self, key, inputs)

    monkeypatch.setattr(RECEvaluator, "process", counting)
    resumed = _evaluate(tiny_model, roots, tmp_path / "run")
    assert done == ["2"] and resumed["bytes"] == reference
    assert not list((tmp_path / "run").glob("*.partial.*"))


def test_synthetic_world_candidates_are_its_objects(tmp_path):
    from regionvlm import load_model
    from regionvlm.quickstart import bundled_checkpoint
    from regionvlm.synthetic.world import write_world

    write_world(tmp_path / "w", num_train=0, num_val=0, num_test=6, seed=3)
    model = load_model("regionvlm_t5", "tiny", is_eval=True, checkpoint=str(bundled_checkpoint()))
    cfg = {"world": str(tmp_path / "w"), "split": "test"}
    builder = registry.get_builder_class("rec_synthetic")(cfg, image_size=64)
    metrics = RECTask().evaluate(model, {"rec_synthetic": builder.build_datasets()}, {"prefetch": 0}, tmp_path / "o")
    res = json.loads((tmp_path / "o" / "rec_synthetic_unc_test.json").read_text())
    anns = json.loads((tmp_path / "w" / "refer" / "synthetic" / "instances.json").read_text())["annotations"]
    for r in res["expressions"]:
        objects = [a for a in anns if a["image_id"] == r["image_id"]]
        assert r["candidates"] == [a["id"] for a in objects] and r["boxes"] == [a["bbox"] for a in objects]
        assert r["gt_box"] == next(a["bbox"] for a in objects if a["id"] == r["ann_id"])
    assert metrics["synthetic_unc_test/num_expressions"] == len(res["expressions"]) > 6
    assert metrics["synthetic_unc_test/acc@0.5"] >= 80  # the trained checkpoint points at the named shape


# --------------------------------------------------------------------------- bad files and settings
def _build(roots, **extra):
    return _datasets(roots, **extra)


def test_bad_detection_files_end_in_one_clear_error(roots):
    d = roots["dets"]
    with pytest.raises(MissingFileError, match=r"detections file not found at '.*nope\.json' \(set by `datasets"):
        _build(roots, candidates="detections", detections=str(d / "nope.json"))
    cases = {
        "unknown.json": ({"1": [[1, 1, 2, 2]], "99": [[0, 0, 1, 1]]}, r"1 image\(s\) that are not in .* 99"),
        "short.json": ({"dets": [{"image_id": 1, "box": [1, 2, 3]}]}, r"dets\[0\] \(image 1\): a box is \[x, y"),
        "negative.json": ({"1": [[1, 2, 3, 4], [1, 2, -3, 4]]}, r"image 1 box 1: .*must not be negative"),
        "text.json": ([{"image_id": 1, "box": {"x": "a", "y": 0, "w": 1, "h": 1}}], "must be numbers"),
        "no_id.json": ({"dets": [{"box": [1, 2, 3, 4]}]}, r"dets\[0\]: a detection is a mapping with 'image_id'"),
        "bad_id.json": ({"dets": [{"image_id": "one", "box": [1, 2, 3, 4]}]}, "'image_id' must be an integer"),
        "not_boxes.json": ({"1": {"box": 1}}, r"image 1: expected a list of \[x, y, w, h\] boxes"),
        "other.json": ({"images": []}, r"the key 'images' is not an image id"),
        "outside.json": ({"1": [[70, 5, 10, 10]]}, r"image 1 box 0: the box .* lies outside the 60x40 image"),
    }
    for name, (content, message) in cases.items():
        (d / name).write_text(json.dumps(content))
        with pytest.raises(InputError, match=message):
            _build(roots, candidates="detections", detections=str(d / name))
    (d / "nan.json").write_text('{"1": [[1, 2, NaN, 4]]}')  # Python's JSON reader accepts NaN
    with pytest.raises(InputError, match=r"nan\.json' image 1 box 0: box coordinates must be finite"):
        _build(roots, candidates="detections", detections=str(d / "nan.json"))
    (d / "torn.json").write_text('{"dets": [')
    with pytest.raises(InputError, match=r"torn\.json' .* is not valid JSON"):
        _build(roots, candidates="detections", detections=str(d / "torn.json"))


def test_bad_annotations_and_settings(roots, tmp_path):
    instances = json.loads(roots["instances"].read_text())
    del instances["annotations"][2]["bbox"]  # annotation 203: a candidate of image 1
    roots["instances"].write_text(json.dumps(instances))
    with pytest.raises(InputError, match=r"instances\.json' annotation 203 has no 'bbox'"):
        _build(roots)
    _build(roots, **_dets(roots))  # detected candidates need only the referred annotations' boxes
    with pytest.raises(ConfigError, match=r"`datasets.rec_refcoco.candidates` is 'detections' but .* not set"):
        _build(roots, candidates="detections")
    with pytest.raises(ConfigError, match=r"`datasets.rec_refcoco.detections` is set but .* is 'gt'"):
        _build(roots, detections="x.json")
    with pytest.raises(ConfigError, match=r"`datasets.rec_refcoco.candidates` must be one of \['gt', 'detections'\]"):
        _build(roots, candidates="sam")
    with pytest.raises(ConfigError, match=r"`run.on_no_candidate` must be one of \['empty', 'error', 'image'\]"):
        RECSettings.from_run_cfg({"on_no_candidate": "skip"})
    with pytest.raises(ConfigError, match=r"`run.repeat` \(did you mean `repeats`\?\)"):
        RECSettings.from_run_cfg({"repeat": 3})
    with pytest.raises(ConfigError, match="scores RECDataset datasets"):
        RECTask().evaluate(RECFakeModel(), {"refcoco": {"val": [1]}}, {}, tmp_path)


def test_missing_image_stops_or_is_skipped(roots, tmp_path):
    (roots["image_root"] / IMAGES[2][0]).unlink()
    with pytest.raises(MissingFileError, match=r"(?s)1 file\(s\) needed .*000000000002\.jpg.*skip_missing"):
        _evaluate(RECFakeModel(), roots, tmp_path / "a")
    out = _evaluate(RECFakeModel(), roots, tmp_path / "b", skip_missing=True)
    assert [(s["ref_id"], s["sent_id"]) for s in out["results"]["skipped"]] == [(12, 120)]
    assert out["metrics"]["refcoco_unc_val/num_expressions"] == 3 and out["metrics"]["refcoco_unc_val/num_skipped"] == 1


def test_a_bad_file_is_one_error_line_before_the_model_is_built(roots, tmp_path, capsys, monkeypatch):
    import eval_REC
    from regionvlm.common.cli import run
    from regionvlm.tasks.base_task import BaseTask

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not be built before the data is checked")

    monkeypatch.setattr(BaseTask, "build_model", no_model)
    (roots["dets"] / "bad.json").write_text('{"1": [[1, 2, 3, Infinity]]}')
    argv = ["--data-root", str(roots["data_root"]), "--image-root", str(roots["image_root"]), "--model-type", "tiny"]
    with pytest.raises(SystemExit) as stop:
        run(eval_REC.main, argv + ["--detections", str(roots["dets"] / "bad.json"), "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1
    assert err[0].startswith("error: ") and "bad.json' image 1 box 0: box coordinates must be finite" in err[0]


# --------------------------------------------------------------------------- command lines
def test_eval_rec_flags_build_the_config(tmp_path):
    import eval_REC

    args = ["--dataset_name", "refcocog", "--split", "test", "--points", "8", "--seed", "3", "--region-prompt", "box"]
    data = eval_REC.build_user_config(eval_REC.parse_args(args + ["--detections", "d.json"]))
    assert list(data["datasets"]) == ["rec_refcocog"]
    ds = data["datasets"]["rec_refcocog"]
    assert ds["dataset_name"] == "refcocog" and ds["split"] == "test" and "splitBy" not in ds
    assert ds["candidates"] == "detections" and ds["detections"] == "d.json"  # a file means its boxes are scored
    assert ds["data_root"].endswith("/refer")  # paths kept from the YAML
    run = data["run"]
    assert (run["task"], run["num_points"], run["seed"], run["region_prompt"]) == ("rec", 8, 3, "box")
    syn = eval_REC.build_user_config(eval_REC.parse_args(["--dataset_name", "synthetic", "--world", "W"]))
    assert syn["datasets"] == {
        "rec_synthetic": {"dataset_name": "synthetic", "world": "W", "split": "val", "skip_missing": False}
    }
    with pytest.raises(ConfigError, match="--world applies to --dataset_name synthetic"):
        eval_REC.build_user_config(eval_REC.parse_args(["--world", "W"]))
    dets_yaml = tmp_path / "dets.yaml"
    dets_yaml.write_text("datasets: {rec_refcoco: {candidates: detections, detections: d.json}}\n")
    flags = ["--cfg-path", str(dets_yaml), "--candidates", "gt"]
    ds = eval_REC.build_user_config(eval_REC.parse_args(flags))["datasets"]["rec_refcoco"]
    assert ds["candidates"] == "gt" and ds["detections"] is None  # the YAML's file is dropped with it


def test_shipped_yaml_through_train_py_and_eval_rec_give_the_same_file(roots, tmp_path):
    import eval_REC
    import train
    from regionvlm.quickstart import bundled_checkpoint

    ckpt = str(bundled_checkpoint())
    data = [f"datasets.rec_refcoco.{k}={roots[k]}" for k in ("data_root", "image_root")]
    model = ["model.model_type=tiny", f"model.checkpoint={ckpt}"]
    run = ["run.device=cpu", "run.prefetch=0"]
    cfg = str(REPO / "configs" / "blip2" / "eval" / "rec_refcoco_val.yaml")
    metrics = train.main(["--cfg-path", cfg, "--options", *data, *model, *run, f"run.output_dir={tmp_path / 't'}"])
    assert metrics["refcoco_unc_val/num_expressions"] == 4 and "agg_metrics" in metrics
    results = json.loads((tmp_path / "t" / "rec_refcoco_unc_val.json").read_text())
    assert results["settings"]["num_points"] == 10 and results["data"]["candidates"] == "gt"
    flags = ["--data-root", str(roots["data_root"]), "--image-root", str(roots["image_root"])]
    flags += ["--model-type", "tiny", "--checkpoint", ckpt, "--device", "cpu", "--out", str(tmp_path / "e")]
    eval_REC.main(flags + ["--options", "run.prefetch=0"])
    assert (tmp_path / "e" / "rec_refcoco_unc_val.json").read_bytes() == (
        tmp_path / "t" / "rec_refcoco_unc_val.json"
    ).read_bytes()


# --------------------------------------------------------------------------- benchmark
@pytest.mark.slow
def test_benchmark_reports_both_candidate_kinds_and_the_protocols_agree(tmp_path, capsys):
    from benchmark_scripts import load_benchmark

    bench = load_benchmark("bench_rec")
    argv = ["--images", "1", "--sentences", "2", "--candidates", "4", "--height", "60", "--width", "80"]
    result = bench.main(argv + ["--threads", "1", "--json", str(tmp_path / "b.json")])
    assert set(result["kinds"]) == {"gt", "detections"}
    for kind in result["kinds"].values():
        assert kind["same_choice"] == "2/2" and kind["max_abs_score_diff"] < 1e-5 and kind["ratio"] > 0
    assert json.loads((tmp_path / "b.json").read_text())["kinds"].keys() == {"gt", "detections"}
    assert "ratio" in capsys.readouterr().out
