"""Region-captioning benchmarks (RefCOCOg val and Visual Genome test in GLaMM's layout, VG in
GRiT's layout, the synthetic world's refer files): the readers on files written in the
published layouts (edge cases and bad files), the datasets' units, each shipped YAML end to
end through ``train.py`` with the tiny model, metric values equal to what the COCO caption
package gives on GLaMM's own construction of the same files, batched == one by one, and a
killed run resuming to byte-identical files.

Fixtures are made from a small synthetic world (64 px scenes, 2-4 shapes each), so the
bundled tiny checkpoint writes real captions and the metrics are not all zero."""

from __future__ import annotations

import copy
import itertools
import json
import pickle
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List

import pytest

import train
from regionvlm.common.config import Config
from regionvlm.common.errors import ConfigError, InputError, MissingFileError
from regionvlm.data.region_captions import (
    pixel_box,
    read_glamm_region_captions,
    read_grit_region_captions,
)
from regionvlm.datasets.builders.region_caption_builder import (
    RefcocogCaptionBuilder,
    SyntheticCaptionBuilder,
    VGGlammCaptionBuilder,
    VGGritCaptionBuilder,
)
from regionvlm.datasets.region_caption_datasets import RegionCaptionEvalDataset
from regionvlm.processors import BlipImageEvalProcessor
from regionvlm.quickstart import bundled_checkpoint

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "blip2" / "eval"
JAVA = shutil.which("java") is not None
SCORED = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")


# ----------------------------------------------------------------- fixtures in the published layouts
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from regionvlm.synthetic.world import write_world

    root = tmp_path_factory.mktemp("regcap") / "world"
    write_world(root, num_train=0, num_val=0, num_test=4, seed=3)
    return root


def objects(world: Path) -> List[Dict[str, Any]]:
    """Every object of the world: its image entry, annotation and sentence (refs order)."""
    inst = json.loads((world / "refer" / "synthetic" / "instances.json").read_text())
    with open(world / "refer" / "synthetic" / "refs(unc).p", "rb") as f:
        refs = pickle.load(f)
    images = {i["id"]: i for i in inst["images"]}
    anns = {a["id"]: a for a in inst["annotations"]}
    return [
        {"image": images[r["image_id"]], "ann": anns[r["ann_id"]], "sentence": s["raw"]}
        for r in refs
        for s in r["sentences"]
    ]


def refcocog_layout(world: Path) -> Dict[str, Any]:
    """MDETR's finetune_refcocog_val as GLaMM reads it (..._captions.json): one image entry per
    sentence, its annotation numbered alike, the sentence on both; entries of one image not
    adjacent (every other object first), as in the real file."""
    objs = objects(world)
    order = objs[::2] + objs[1::2]
    images, annotations = [], []
    for n, o in enumerate(order):
        img, ann = o["image"], o["ann"]
        images.append(
            {
                "file_name": img["file_name"],
                "height": img["height"],
                "width": img["width"],
                "id": n,
                "original_id": img["id"],
                "caption": o["sentence"],
                "dataset_name": "refcocog",
                "tokens_negative": [],
            }
        )
        annotations.append(
            {
                "area": ann["area"],
                "iscrowd": 0,
                "image_id": n,
                "category_id": 1,
                "id": n,
                "bbox": ann["bbox"],
                "original_id": ann["id"],
                "tokens_positive": [],
                "caption": o["sentence"],
            }
        )
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "shape"}]}


def vg_glamm_layout(world: Path) -> Dict[str, Any]:
    """GLaMM's VG test_caption.json: one region per image, keyed by the image id."""
    images, annotations, seen = [], [], set()
    for o in objects(world):
        img = o["image"]
        if img["id"] in seen:
            continue
        seen.add(img["id"])
        images.append({"id": img["id"], "file_name": img["file_name"], "height": img["height"], "width": img["width"]})
        annotations.append(
            {"id": img["id"], "image_id": img["id"], "bbox": o["ann"]["bbox"], "caption": o["sentence"], "area": 1.0}
        )
    return {"images": images, "annotations": annotations}


def grit_layout(world: Path) -> Dict[str, Any]:
    """GRiT's VG test.json: every region of every image (images listed in reverse id order,
    one crowd annotation and one image without regions, which GRiT's loader skips)."""
    objs = objects(world)
    images = {}
    for o in objs:
        img = o["image"]
        images[img["id"]] = {"id": img["id"], "file_name": img["file_name"], "height": 64, "width": 64}
    annotations = [
        {"id": 500 + k, "image_id": o["image"]["id"], "bbox": o["ann"]["bbox"], "caption": o["sentence"], "iscrowd": 0}
        for k, o in enumerate(objs)
    ]
    first = objs[0]["image"]["id"]
    annotations.append({"id": 999, "image_id": first, "bbox": [1, 1, 5, 5], "caption": "a crowd", "iscrowd": 1})
    listed = [images[i] for i in sorted(images, reverse=True)]
    listed.append({"id": 1, "file_name": "no_regions.jpg", "height": 10, "width": 10})
    return {"images": listed, "annotations": annotations, "categories": [{"id": 1, "name": "object"}]}


def write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


# ----------------------------------------------------------------- readers
def test_glamm_refcocog_reader_keeps_one_unit_per_sentence_in_file_order(world, tmp_path):
    data = refcocog_layout(world)
    got = read_glamm_region_captions(write(tmp_path / "finetune_refcocog_val_captions.json", data))
    assert [r.id for r in got.regions] == [im["id"] for im in data["images"]]
    for region, img, ann in zip(got.regions, data["images"], data["annotations"]):
        x, y, w, h = ann["bbox"]
        assert region.box == (x, y, x + w, y + h) and (region.width, region.height) == (64, 64)
        assert region.image == img["file_name"] and region.references == (ann["caption"],)
    assert got.ground_truth == {
        "images": [{"id": im["id"]} for im in data["images"]],
        "annotations": [
            {"image_id": a["image_id"], "caption": a["caption"], "id": a["id"]} for a in data["annotations"]
        ],
    }
    assert got.notes == {"boxes_clipped": 0}


def test_glamm_region_is_the_annotation_with_the_entry_id_and_references_all_of_its_annotations(world, tmp_path):
    data = refcocog_layout(world)
    extra_box = [0.0, 0.0, 3.0, 3.0]
    data["annotations"].insert(0, {"id": 1000, "image_id": 2, "bbox": extra_box, "caption": "another sentence"})
    got = read_glamm_region_captions(write(tmp_path / "a.json", data))
    entry = next(r for r in got.regions if r.id == 2)
    x, y, w, h = data["annotations"][3]["bbox"]  # annotation 2 (after the inserted one)
    assert entry.box == (x, y, x + w, y + h)
    assert entry.references == ("another sentence", data["annotations"][3]["caption"])
    assert len(got.regions) == len(data["images"])  # still one unit per entry


def test_vg_glamm_reader_one_region_per_image(world, tmp_path):
    data = vg_glamm_layout(world)
    got = read_glamm_region_captions(write(tmp_path / "test_caption.json", data))
    assert [r.id for r in got.regions] == [im["id"] for im in data["images"]]
    assert [r.references for r in got.regions] == [(a["caption"],) for a in data["annotations"]]


def test_grit_reader_every_region_images_in_id_order_crowd_and_empty_images_left_out(world, tmp_path):
    data = grit_layout(world)
    got = read_grit_region_captions(write(tmp_path / "test.json", data))
    objs = objects(world)
    expected = sorted(
        ((o["image"]["id"], 500 + k) for k, o in enumerate(objs)), key=lambda p: (p[0], p[1])
    )  # images by id, an image's regions in file order
    assert [r.id for r in got.regions] == [ann_id for _, ann_id in expected]
    assert 999 not in {r.id for r in got.regions}
    assert got.notes == {"boxes_clipped": 0, "crowd_skipped": 1, "images_without_regions": 1}
    assert got.ground_truth["images"] == [{"id": r.id} for r in got.regions]
    assert got.ground_truth["annotations"] == [
        {"image_id": r.id, "caption": r.references[0], "id": r.id} for r in got.regions
    ]


def test_boxes_overshooting_within_the_margin_are_clipped_and_counted(world, tmp_path):
    data = vg_glamm_layout(world)
    data["annotations"][0]["bbox"] = [-0.5, 10, 30, 54.75]  # 0.5 px left of the image, to y = 64.75
    got = read_glamm_region_captions(write(tmp_path / "a.json", data))
    assert got.regions[0].box == (0.0, 10.0, 29.5, 64.0) and got.notes["boxes_clipped"] == 1
    data["annotations"][0]["bbox"] = [10, 10, 60, 20]  # 6 px past the right edge
    with pytest.raises(InputError, match=r"outside the 64x64 image by 6 px, more than the 1 px allowed"):
        read_glamm_region_captions(write(tmp_path / "b.json", data))
    relaxed = read_glamm_region_captions(tmp_path / "b.json", box_margin=6)
    assert relaxed.regions[0].box == (10.0, 10.0, 64.0, 30.0)
    with pytest.raises(InputError, match=r"`datasets.vg_captions_glamm.box_margin`"):
        read_glamm_region_captions(tmp_path / "b.json", section="datasets.vg_captions_glamm")


def test_pixel_box_edge_cases():
    assert pixel_box([0, 0, 64, 64], 64, 64, "x") == ((0.0, 0.0, 64.0, 64.0), False)
    for bad, message in [
        ([1, 2, 0, 5], "zero area"),
        ([1, 2, 5, -1], "zero area"),
        ([1, 2, 5], "4 finite numbers"),
        ([1, 2, "5", 5], "4 finite numbers"),
        ([1, 2, float("nan"), 5], "4 finite numbers"),
        ([64.5, 2, 0.4, 5], "no area inside"),
    ]:
        with pytest.raises(InputError, match=message):
            pixel_box(bad, 64, 64, "entry 7")


def _glamm(world):
    return refcocog_layout(world)


BAD_GLAMM = [
    (lambda d: d["images"][1].pop("file_name"), r"images\[1\] has no 'file_name'"),
    (lambda d: d["images"][1].update(id=2.0), r"images\[1\]: 'id' must be an integer, got 2.0"),
    (lambda d: d["images"][1].update(width=0), r"images\[1\] \(id 1\) has the size 0x64"),
    (lambda d: d["images"][1].update(id=0), r"images\[1\]: image id 0 is listed twice"),
    (lambda d: d["annotations"][2].pop("bbox"), r"image 2 .*annotation 2 has no 'bbox'"),
    (lambda d: d["annotations"][2].update(bbox=[3, 3, 0, 4]), r"annotation 2: the box \[3, 3, 0, 4\] has zero area"),
    (lambda d: d["annotations"][2].update(bbox=[50, 3, 30, 4]), r"outside the 64x64 image by 16 px"),
    (
        lambda d: d["annotations"][2].update(image_id=777),
        r"annotations\[2\] \(id 2\) refers to image 777, which is not",
    ),
    (lambda d: d["annotations"][2].update(caption="  "), r"annotations\[2\] \(id 2\): the caption is empty"),
    (lambda d: d["annotations"][2].update(caption="two\rlines"), r"contains '\\r'"),
    (lambda d: d["annotations"][2].update(id=1), r"annotation id 1 is used twice"),
    (lambda d: d["annotations"][2].update(id=50), r"image 2 \(.*\) has no annotation with id 2\. GLaMM's evaluation"),
    (
        lambda d: (d["annotations"][2].update(id=50), d["annotations"][3].update(id=2)),
        r"annotation 2, which gives its region, belongs to image 3",
    ),
    (lambda d: [a.pop("caption") for a in d["annotations"]], r"has no 'caption'.*MDETR's finetune_refcocog_val.json"),
    (lambda d: d.update(images=[]), r"lists no images"),
    (lambda d: d.pop("annotations"), r"has no list 'annotations'"),
]


@pytest.mark.parametrize("mutate, message", BAD_GLAMM, ids=[m for _, m in BAD_GLAMM])
def test_bad_glamm_files_stop_with_the_entry_and_the_fix(world, tmp_path, mutate, message):
    data = copy.deepcopy(_glamm(world))
    mutate(data)
    with pytest.raises(InputError, match=message):
        read_glamm_region_captions(write(tmp_path / "bad.json", data))


def test_bad_grit_files_and_unreadable_files(world, tmp_path):
    data = grit_layout(world)
    for mutate, message in [
        (lambda d: d["annotations"][0].update(image_id=4242), r"refers to image 4242, which is not in 'images'"),
        (lambda d: d["annotations"][0].update(caption=""), r"the caption is empty"),
        (lambda d: d["annotations"][0].pop("bbox"), r"annotation 500 \(image \d+, .*\) has no 'bbox'"),
        (lambda d: d["annotations"][0].update(bbox=[0, 0, 0, 0]), r"zero area"),
        (lambda d: d["annotations"][0].pop("caption"), r"annotations\[0\] has no 'caption'"),
        (lambda d: d.update(annotations=[d["annotations"][-1]]), r"has no region to caption \(crowd annotations: 1\)"),
    ]:
        bad = copy.deepcopy(data)
        mutate(bad)
        with pytest.raises(InputError, match=message):
            read_grit_region_captions(write(tmp_path / "bad.json", bad))
    (tmp_path / "broken.json").write_text('{"images": [')
    with pytest.raises(InputError, match=r"is not valid JSON"):
        read_grit_region_captions(tmp_path / "broken.json")
    with pytest.raises(InputError, match=r"must hold a JSON object with lists 'images' and 'annotations'"):
        read_grit_region_captions(write(tmp_path / "list.json", [1, 2]))
    with pytest.raises(MissingFileError, match=r"not found at .*nothing.json' \(set by `datasets.x.annotation`\)"):
        read_grit_region_captions(tmp_path / "nothing.json", setting="datasets.x.annotation")


# ----------------------------------------------------------------- datasets and builders
def vis64():
    return BlipImageEvalProcessor(image_size=64)


def test_units_keep_an_image_together_and_decode_it_once(world, tmp_path, monkeypatch):
    import regionvlm.datasets.region_caption_datasets as mod

    captions = read_glamm_region_captions(write(tmp_path / "r.json", refcocog_layout(world)))
    dataset = RegionCaptionEvalDataset(captions, world / "images", vis64(), name="refcocog_captions", split="val")
    opened = []
    real = mod.open_image
    monkeypatch.setattr(mod, "open_image", lambda path, what: opened.append(Path(path).name) or real(path, what))
    units = dataset.caption_units(4)
    order = [dataset.items[i].image for _, unit in units for i in unit]
    runs = [order[0]] + [b for a, b in itertools.pairwise(order) if a != b]
    assert len(runs) == len(set(runs)) == 4  # the file interleaves images; units group them
    assert sorted(i for _, unit in units for i in unit) == list(range(len(dataset)))
    for _, unit in units:
        opened.clear()
        batch = dataset.load_captions(unit)
        assert len(opened) == len(set(opened)) == batch.images.shape[0]
        for region, rid, row in zip(batch.regions, batch.ids, batch.image_index):
            item = next(r for r in captions.regions if r.id == rid)
            assert region.kind == "box" and list(region.data) == [v / 64 for v in item.box]
            assert opened[row] == item.image
    assert dataset.caption_ground_truth().image_ids == tuple(r.id for r in captions.regions)


def test_image_whose_size_differs_from_the_file_stops(world, tmp_path):
    data = vg_glamm_layout(world)
    data["images"][0].update(width=128, height=96)
    captions = read_glamm_region_captions(write(tmp_path / "v.json", data))
    dataset = RegionCaptionEvalDataset(captions, world / "images", vis64())
    with pytest.raises(InputError, match=r"is 64x64 pixels but .* says 128x96"):
        dataset.load_captions([0])
    with pytest.raises(ConfigError, match=r"region 'mask' needs a segmentation per region"):
        RegionCaptionEvalDataset(captions, world / "images", vis64(), region="mask")
    builder = VGGlammCaptionBuilder(
        {"annotation": str(tmp_path / "v.json"), "image_root": str(world / "images")}, image_size=64
    )
    with pytest.raises(InputError, match=r"1 image\(s\) of vg_captions_glamm are not the size .*64x64, listed 128x96"):
        builder.build_datasets()  # before the model runs


def test_builders_check_images_before_the_model_and_search_several_folders(world, tmp_path):
    path = write(tmp_path / "t.json", grit_layout(world))
    with pytest.raises(
        MissingFileError, match=r"image\(s\) of vg_captions_grit are missing .*`datasets.vg_captions_grit.image_root`"
    ):
        VGGritCaptionBuilder({"annotation": str(path), "image_root": str(tmp_path)}, image_size=64).build_datasets()
    roots = [str(tmp_path / "empty"), str(world / "images")]
    built = VGGritCaptionBuilder({"annotation": str(path), "image_root": roots}, image_size=64).build_datasets()
    dataset = built["test"]
    assert (
        dataset.eval_name == "vg_captions_grit"
        and dataset.image_path(dataset.items[0].image).parent == world / "images"
    )
    with pytest.raises(ConfigError, match=r"`datasets.refcocog_captions.annotaton` \(did you mean `annotation`\?\)"):
        RefcocogCaptionBuilder({"annotaton": str(path)})
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) `datasets.synthetic_captions.annotation`"):
        SyntheticCaptionBuilder({"world": str(world), "annotation": str(path)})


def test_synthetic_builder_makes_one_unit_per_sentence_from_mask_or_box(world):
    masks = SyntheticCaptionBuilder({"world": str(world)}, image_size=64).build_datasets()["test"]
    boxes = SyntheticCaptionBuilder({"world": str(world), "region": "box"}, image_size=64).build_datasets()["test"]
    objs = objects(world)
    assert len(masks) == len(objs) and masks.eval_name == "synthetic_captions"
    assert boxes.eval_name == "synthetic_captions_box"  # its own result files
    unit = masks.caption_units(64)[0][1]
    batch, box_batch = masks.load_captions(unit), boxes.load_captions(unit)
    assert {r.kind for r in batch.regions} == {"mask"} and {r.kind for r in box_batch.regions} == {"box"}
    assert sorted(r[0] for r in batch.references) == sorted(o["sentence"] for o in objs)


# ----------------------------------------------------------------- end to end through train.py
BENCHMARKS = {
    "refcocog": ("caption_refcocog_val.yaml", "refcocog_captions", "val", refcocog_layout),
    "vg_glamm": ("caption_vg_glamm_test.yaml", "vg_captions_glamm", "test", vg_glamm_layout),
    "vg_grit": ("caption_vg_grit_test.yaml", "vg_captions_grit", "test", grit_layout),
}


def run_benchmark(world: Path, tmp: Path, name: str, out: Path, *extra: str) -> Dict[str, Any]:
    cfg, section, _, layout = BENCHMARKS[name]
    annotation = tmp / f"{name}.json"
    if not annotation.exists():
        write(annotation, layout(world))
    return train.main(
        [
            "--cfg-path",
            str(CONFIGS / cfg),
            "--options",
            "model.model_type=tiny",
            f"model.checkpoint={bundled_checkpoint()}",
            "run.device=cpu",
            f"run.output_dir={out}",
            "run.batch_size_eval=4",
            f"datasets.{section}.annotation={annotation}",
            f"datasets.{section}.image_root={world / 'images'}",
            f"datasets.{section}.vis_processor.eval.image_size=64",
            *extra,
        ]
    )


def points_of(text: str) -> List[List[int]]:
    return [[int(a), int(b)] for a, b in re.findall(r"\[(\d+) (\d+)\]", text)]


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_each_yaml_runs_end_to_end_with_the_papers_decoding(world, tmp_path, name, monkeypatch):
    from regionvlm.models.regionvlm_t5 import RegionVLMT5

    seen = []
    generate = RegionVLMT5.generate_from_embeds

    def spy(self, embeds, mask, generation=None):
        seen.append(generation)
        return generate(self, embeds, mask, generation)

    monkeypatch.setattr(RegionVLMT5, "generate_from_embeds", spy)
    _, section, split, _ = BENCHMARKS[name]
    out = tmp_path / "out"
    metrics = run_benchmark(world, tmp_path, name, out, "run.skip_metrics=[METEOR]")
    assert {(g.num_beams, g.max_len, g.min_len) for g in seen} == {(3, 20, 5)}
    expected = {r.id: r for r in _reader(name)(tmp_path / f"{name}.json").regions}
    prefix = out / f"captioning_{section}_{split}"
    written = json.loads(prefix.with_name(prefix.name + ".json").read_text())
    assert sorted(c["id"] for c in written["captions"]) == sorted(expected)
    for row in written["captions"]:
        region = expected[row["id"]]
        x0, y0, x1, y1 = region.box
        pts = points_of(row["region_text"])
        assert len(pts) == 10 and row["references"] == list(region.references)
        assert all(
            int(100 * x0 / 64) <= x <= int(100 * x1 / 64) and int(100 * y0 / 64) <= y <= int(100 * y1 / 64)
            for x, y in pts
        )
    results = json.loads(prefix.with_name(prefix.name + "_captions.json").read_text())
    assert sorted(r["image_id"] for r in results) == sorted(expected)
    references = prefix.with_name(prefix.name + "_references.json")
    if name == "vg_grit":  # built per region: written beside the captions, so the pair rescores offline
        assert json.loads(references.read_text()) == _reader(name)(tmp_path / f"{name}.json").ground_truth
    else:
        assert not references.exists()  # GLaMM's annotation file is itself the ground truth
    assert metrics[f"{section}_{split}/num_captions"] == len(expected)
    assert metrics[f"{section}_{split}/exact_match"] > 0  # the trained tiny model names shapes
    if JAVA:
        assert metrics[f"{section}_{split}/CIDEr"] > 0
        assert metrics["agg_metrics"] == pytest.approx(
            metrics[f"{section}_{split}/CIDEr"] + metrics[f"{section}_{split}/Bleu_4"]
        )


def _reader(name: str):
    return read_grit_region_captions if name == "vg_grit" else read_glamm_region_captions


class _NoSpice:
    """SPICE needs CoreNLP jars downloaded at first use (offline here); the rest of the
    package's evaluation runs unchanged."""

    def compute_score(self, gts, res):
        return 0.0, [0.0] * len(gts)

    def method(self):
        return "SPICE"


def glamm_scores(annotation_file: Path, results: List[Dict[str, Any]], results_dir: Path) -> Dict[str, float]:
    """GLaMM's eval/region_captioning/evaluate.py on its own inputs: per-rank result files
    merged, COCO(annotation file), loadRes, COCOEvalCap with the results' image ids."""
    from pycocoevalcap.eval import COCOEvalCap
    from pycocotools.coco import COCO

    results_dir.mkdir()
    half = len(results) // 2
    write(results_dir / "model_dataset_0.json", results[:half])
    write(results_dir / "model_dataset_1.json", results[half:])
    merged = []
    for name in sorted(p.name for p in results_dir.iterdir()):
        merged += json.loads((results_dir / name).read_text())
    write(results_dir / "merged.json", merged)
    coco = COCO(str(annotation_file))
    coco_result = coco.loadRes(str(results_dir / "merged.json"))
    coco_eval = COCOEvalCap(coco, coco_result)
    coco_eval.params["image_id"] = coco_result.getImgIds()
    coco_eval.evaluate()
    return {k: float(v) for k, v in coco_eval.eval.items()}


@pytest.mark.slow
@pytest.mark.skipif(not JAVA, reason="the caption metrics need Java")
@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_metrics_equal_the_packages_on_the_published_construction(world, tmp_path, name, monkeypatch):
    import pycocoevalcap.eval

    _, section, split, _ = BENCHMARKS[name]
    out = tmp_path / "out"
    metrics = run_benchmark(world, tmp_path, name, out)
    results = json.loads((out / f"captioning_{section}_{split}_captions.json").read_text())
    annotation = tmp_path / f"{name}.json"
    if name == "vg_grit":  # one unit per annotation, keyed by its id (as Osprey builds its RefCOCOg ground truth)
        data = json.loads(annotation.read_text())
        anns = [a for a in data["annotations"] if not a["iscrowd"]]
        annotation = write(
            tmp_path / "per_region_gt.json",
            {
                "images": [{"id": a["id"]} for a in anns],
                "annotations": [{"image_id": a["id"], "id": a["id"], "caption": a["caption"]} for a in anns],
            },
        )
    monkeypatch.setattr(pycocoevalcap.eval, "Spice", _NoSpice)
    theirs = glamm_scores(annotation, results, tmp_path / "glamm_results")
    ours = {k: metrics[f"{section}_{split}/{k}"] for k in SCORED}
    assert ours == {k: theirs[k] for k in SCORED}
    assert ours["METEOR"] > 0 and ours["CIDEr"] > 0


def test_batched_units_caption_like_one_generate_per_region(world):
    from regionvlm import load_model
    from regionvlm.tasks.captioning import CaptionEvaluator, CaptioningSettings
    from regionvlm.tasks.evaluation import evaluating

    model = load_model("regionvlm_t5", "tiny", is_eval=True, checkpoint=str(bundled_checkpoint()))
    dataset = SyntheticCaptionBuilder({"world": str(world), "region": "box"}, image_size=64).build_datasets()["test"]
    settings = CaptioningSettings(batch_size_eval=5, num_workers=0, num_points=10)
    evaluator = CaptionEvaluator(model, dataset, settings, Path("unused"))
    with evaluating(model) as module:
        evaluator.model = module
        batched, single = [], []
        for _, spec in evaluator.units():
            batch = evaluator.load(spec)
            batched += [row["caption"] for row in evaluator.process(spec, batch)]
            for j, (region, rid) in enumerate(zip(batch.regions, batch.ids)):
                image = batch.images[batch.image_index[j]].unsqueeze(0)
                text = evaluator.region_text(region, rid)
                single += module.generate(
                    {"image": image, "text_input": [text]}, num_beams=3, max_length=20, min_length=5
                )
    assert len(batched) == len(objects(world)) and batched == single
    assert len(set(batched)) > 1


def test_killed_run_resumes_to_byte_identical_files(world, tmp_path, monkeypatch):
    from regionvlm.models.regionvlm_t5 import RegionVLMT5

    generate, calls = RegionVLMT5.generate_from_embeds, {"n": 0}

    def dying(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(RegionVLMT5, "generate_from_embeds", dying)
    skip = "run.skip_metrics=[METEOR]"
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(world, tmp_path, "refcocog", tmp_path / "k", skip)
    assert len(list((tmp_path / "k").glob("*.partial.rank0.jsonl"))) == 1
    calls["n"] = -100
    run_benchmark(world, tmp_path, "refcocog", tmp_path / "k", skip)
    units = RegionCaptionEvalDataset(read_glamm_region_captions(tmp_path / "refcocog.json"), ".", None).caption_units(4)
    assert len(units) >= 3 and calls["n"] == -100 + len(units) - 1  # only the unfinished units ran again
    monkeypatch.setattr(RegionVLMT5, "generate_from_embeds", generate)
    run_benchmark(world, tmp_path, "refcocog", tmp_path / "full", skip)
    for suffix in ("", "_captions", "_metrics"):
        name = f"captioning_refcocog_captions_val{suffix}.json"
        assert (tmp_path / "k" / name).read_bytes() == (tmp_path / "full" / name).read_bytes()


def test_synthetic_captions_through_the_runner(world, tmp_path):
    cfg = tmp_path / "synthetic.yaml"
    cfg.write_text(
        json.dumps(
            {
                "model": {"arch": "regionvlm_t5", "model_type": "tiny", "checkpoint": str(bundled_checkpoint())},
                "datasets": {"synthetic_captions": {"world": str(world)}},
                "run": {
                    "task": "region_captioning",
                    "evaluate": True,
                    "device": "cpu",
                    "output_dir": str(tmp_path / "o"),
                },
            }
        )
    )
    metrics = train.main(["--cfg-path", str(cfg), "--options", "run.skip_metrics=[METEOR]"])
    assert metrics["synthetic_captions_test/num_captions"] == len(objects(world))
    assert metrics["agg_metrics"] == metrics["synthetic_captions_test/exact_match"] >= 50.0
    assert (tmp_path / "o" / "region_captioning_synthetic_captions_test_captions.json").is_file()


def test_configs_use_the_authors_caption_decoding():
    for cfg, section, split, _ in BENCHMARKS.values():
        config = Config(CONFIGS / cfg)
        run = config.run_cfg
        assert (run.task, run.num_beams, run.max_len, run.min_len) == ("captioning", 3, 20, 5)
        assert list(run.test_splits) == [split] and list(config.datasets_cfg) == [section]


def test_run_script_names_the_benchmarks():
    script = REPO / "run_scripts" / "blip2" / "eval" / "eval_region_captions.sh"
    for args, message in [([], "usage:"), (["coco"], "unknown benchmark 'coco'")]:
        proc = subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2 and message in proc.stderr
    text = script.read_text()
    for cfg, *_ in BENCHMARKS.values():
        assert cfg in text and (CONFIGS / cfg).is_file()


def test_benchmark_script_reports_the_ratio_with_equal_captions(tmp_path):
    from benchmark_scripts import load_benchmark

    bench = load_benchmark("bench_region_captions")
    result = bench.main(["--scenes", "3", "--batch-size", "4", "--json", str(tmp_path / "b.json")])
    assert result["same_captions"] and result["regions"] >= 6 and result["ratio"] > 0
    assert json.loads((tmp_path / "b.json").read_text()) == result
