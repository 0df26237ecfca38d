"""The refer-layout loader (RefCOCO family + synthetic) and the RIS dataset builders.

``write_refer_fixture`` writes a small dataset in the real file formats (pickled refs,
COCO instances JSON with compressed RLE, uncompressed RLE and polygons, JPEG images, SAM
proposal files); ``tests/test_ris.py`` reuses it."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
from PIL import Image

from regionvlm.common.errors import ConfigError, InputError, MissingFileError
from regionvlm.data.refer import decode_segmentation, load_plain_pickle, load_refer

# image id -> (file name, height, width)
IMAGES = {
    1: ("COCO_train2014_000000000001.jpg", 40, 56),
    2: ("COCO_train2014_000000000002.jpg", 48, 64),
    3: ("COCO_train2014_000000000003.jpg", 32, 32),
}


def rect(h: int, w: int, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """Bool mask with rows r0..r1 and columns c0..c1 (inclusive) set."""
    m = np.zeros((h, w), dtype=bool)
    m[r0 : r1 + 1, c0 : c1 + 1] = True
    return m


def compressed_rle(mask: np.ndarray) -> Dict[str, Any]:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def uncompressed_rle(mask: np.ndarray) -> Dict[str, Any]:
    """COCO's uncompressed RLE: run lengths over the column-major pixels, starting with zeros."""
    flat = mask.flatten(order="F").astype(np.uint8)
    counts: List[int] = []
    current, run = 0, 0
    for v in flat:
        if v != current:
            counts.append(run)
            current, run = v, 0
        run += 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


# Proposals per image (proposal order) and ground truths, used by test_ris as well.
def fixture_masks() -> Dict[str, Any]:
    h1, w1 = 40, 56
    h2, w2 = 48, 64
    return {
        "proposals": {
            1: [
                rect(h1, w1, 10, 14, 10, 14),  # 0: 25 px < 4 % -> dropped (small)
                rect(h1, w1, 0, 9, 0, 55),  # 1: top rows full -> dropped (border)
                rect(h1, w1, 10, 29, 5, 19),  # 2: left block
                rect(h1, w1, 10, 29, 36, 50),  # 3: right block
                rect(h1, w1, 5, 34, 22, 33),
            ],  # 4: middle block
            2: [
                rect(h2, w2, 8, 39, 2, 17),  # 0: left
                rect(h2, w2, 8, 39, 44, 59),
            ],  # 1: right
            3: [rect(32, 32, 4, 27, 4, 27)],
        },
        "gt": {
            101: rect(h1, w1, 12, 29, 5, 21),  # compressed RLE
            102: rect(h1, w1, 10, 29, 36, 50),  # compressed RLE == proposal 3
            103: rect(h2, w2, 8, 39, 40, 59),
        },  # uncompressed RLE
        # ann 104 (image 3): two overlapping polygons
        "polygons": [[4.0, 4.0, 20.0, 4.0, 20.0, 20.0, 4.0, 20.0], [12.0, 12.0, 28.0, 12.0, 28.0, 28.0, 12.0, 28.0]],
    }


def write_refer_fixture(
    root: Path,
    dataset: str = "refcoco",
    split_by: str = "unc",
    *,
    image_dir: Path | None = None,
    proposal_dir: Path | None = None,
    sentences: Dict[int, str] | None = None,
) -> Dict[str, Path]:
    """Write refs + instances + images + proposals. Val: refs 10, 11 (image 1), 12 (image 2);
    testA: ref 13 (image 3, polygons). ``sentences`` overrides raw texts by sent_id."""
    from regionvlm.data.proposals import save_image_proposals

    masks = fixture_masks()
    folder = root / dataset
    folder.mkdir(parents=True, exist_ok=True)
    image_dir = image_dir or root / "images"
    proposal_dir = proposal_dir or root / "proposals"
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for image_id, (name, h, w) in IMAGES.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(image_dir / name, quality=95)
        props = masks["proposals"][image_id]
        save_image_proposals(proposal_dir, name, props, [0.9 - 0.01 * i for i in range(len(props))])
    anns = [
        {"id": 101, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": compressed_rle(masks["gt"][101])},
        {"id": 102, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": compressed_rle(masks["gt"][102])},
        {"id": 103, "image_id": 2, "category_id": 1, "iscrowd": 0, "segmentation": uncompressed_rle(masks["gt"][103])},
        {"id": 104, "image_id": 3, "category_id": 1, "iscrowd": 0, "segmentation": masks["polygons"]},
    ]
    instances = {
        "images": [{"id": i, "file_name": n, "height": h, "width": w} for i, (n, h, w) in IMAGES.items()],
        "annotations": anns,
        "categories": [{"id": 1, "name": "block"}],
    }
    (folder / "instances.json").write_text(json.dumps(instances))
    texts = {100: "The LEFT block.", 101: "left thing", 110: "the right block", 120: "right side", 130: "the square"}
    texts.update(sentences or {})

    def ref(ref_id: int, ann_id: int, image_id: int, split: str, sent_ids: List[int]) -> Dict[str, Any]:
        sents = [
            {"raw": texts[s], "sent": texts[s].lower(), "tokens": texts[s].lower().split(), "sent_id": s}
            for s in sent_ids
        ]
        return {
            "ref_id": ref_id,
            "ann_id": ann_id,
            "image_id": image_id,
            "split": split,
            "sentences": sents,
            "sent_ids": sent_ids,
            "category_id": 1,
            "file_name": IMAGES[image_id][0],
        }

    refs = [
        ref(10, 101, 1, "val", [100, 101]),
        ref(11, 102, 1, "val", [110]),
        ref(12, 103, 2, "val", [120]),
        ref(13, 104, 3, "testA", [130]),
    ]
    with open(folder / f"refs({split_by}).p", "wb") as f:
        pickle.dump(refs, f, protocol=2)  # the official files are Python 2 pickles
    return {
        "data_root": root,
        "image_root": image_dir,
        "proposals": proposal_dir,
        "refs": folder / f"refs({split_by}).p",
        "instances": folder / "instances.json",
    }


@pytest.fixture
def refer_root(tmp_path: Path) -> Dict[str, Path]:
    return write_refer_fixture(tmp_path / "refer")


def test_queries_one_per_sentence_in_ref_order(refer_root):
    split = load_refer(refer_root["data_root"], "refcoco", "unc", "val")
    assert [(q.ref_id, q.sent_id) for q in split.queries] == [(10, 100), (10, 101), (11, 110), (12, 120)]
    assert [q.index for q in split.queries] == [0, 1, 2, 3]
    assert split.queries[0].sentence == "The LEFT block."  # raw, not the lower-cased 'sent'
    assert sorted(split.images) == [1, 2]
    assert split.images[1].file_name == IMAGES[1][0] and (split.images[1].height, split.images[1].width) == (40, 56)
    assert [(i, [q.sent_id for q in qs]) for i, qs in split.queries_by_image()] == [(1, [100, 101, 110]), (2, [120])]
    test_a = load_refer(refer_root["data_root"], "refcoco", "unc", "testA")
    assert [(q.ref_id, q.image_id) for q in test_a.queries] == [(13, 3)]


def test_gt_masks_from_compressed_and_uncompressed_rle(refer_root):
    masks = fixture_masks()["gt"]
    split = load_refer(refer_root["data_root"], "refcoco", "unc", "val")
    for ann_id in (101, 102, 103):
        got = split.gt_mask(ann_id)
        assert got.dtype == bool and got.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(got, masks[ann_id])


def test_gt_polygons_official_rule_drops_overlap_union_keeps_it(refer_root):
    from pycocotools import mask as mask_utils

    polys = fixture_masks()["polygons"]
    parts = mask_utils.decode(mask_utils.frPyObjects(polys, 32, 32)).astype(bool)
    assert parts.shape[2] == 2 and np.logical_and(parts[..., 0], parts[..., 1]).any()
    official = load_refer(refer_root["data_root"], "refcoco", "unc", "testA").gt_mask(104)
    union = load_refer(refer_root["data_root"], "refcoco", "unc", "testA", gt_mask="union").gt_mask(104)
    np.testing.assert_array_equal(official, parts.sum(2) == 1)
    np.testing.assert_array_equal(union, parts.any(2))
    assert union.sum() > official.sum()


def test_decode_segmentation_rejects_bad_input():
    with pytest.raises(InputError, match="empty segmentation"):
        decode_segmentation([], 10, 10, what="annotation 7")
    with pytest.raises(InputError, match="even number"):
        decode_segmentation([[1.0, 2.0, 3.0]], 10, 10)
    with pytest.raises(InputError, match="differs from the image size"):
        decode_segmentation(compressed_rle(np.ones((4, 5), bool)), 10, 10)
    with pytest.raises(ConfigError, match="gt_mask"):
        decode_segmentation([[0, 0, 5, 0, 5, 5]], 10, 10, rule="max")


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > marker_from_pickle",))


def test_restricted_unpickler_refuses_objects_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "refs(unc).p"
    with open(bad, "wb") as f:
        pickle.dump([{"ref_id": 1, "x": _Payload()}], f, protocol=2)
    with pytest.raises(InputError, match=r"references the Python object '(posix|nt|os)\.system'"):
        load_plain_pickle(bad)
    assert not (tmp_path / "marker_from_pickle").exists()
    from collections import OrderedDict

    with open(bad, "wb") as f:
        pickle.dump(OrderedDict(a=1), f)
    with pytest.raises(InputError, match="collections.OrderedDict"):
        load_plain_pickle(bad)
    plain = {"a": [1, 2.5, "x", (3, None), True], "s": {1, 2}, "f": frozenset({3})}
    for protocol in (0, 2, 4):
        with open(bad, "wb") as f:
            pickle.dump(plain, f, protocol=protocol)
        assert load_plain_pickle(bad) == plain
    bad.write_bytes(b"not a pickle")
    with pytest.raises(InputError, match="cannot read the pickle"):
        load_plain_pickle(bad)


def test_missing_files_and_bad_splits_name_what_to_fix(refer_root, tmp_path):
    with pytest.raises(MissingFileError, match=r"refs\(google\)\.p"):
        load_refer(refer_root["data_root"], "refcoco", "google", "val")
    with pytest.raises(MissingFileError, match="refcocog"):
        load_refer(refer_root["data_root"], "refcocog", "umd", "val")
    with pytest.raises(ConfigError, match=r"splits \['train', 'val', 'test'\]"):
        load_refer(refer_root["data_root"], "refcocog", "umd", "testA")
    with pytest.raises(ConfigError, match=r"no splitBy 'unc'.*\['google', 'umd'\]"):
        load_refer(refer_root["data_root"], "refcocog", "unc", "val")
    with pytest.raises(ConfigError, match="unknown dataset_name"):
        load_refer(refer_root["data_root"], "refclef", "unc", "val")
    # a valid split name the file has no refs for (google defines 'test', the fixture has none)
    (refer_root["refs"].parent / "refs(google).p").write_bytes(refer_root["refs"].read_bytes())
    with pytest.raises(InputError, match=r"no refs in split 'test'.*\['testA', 'val'\]"):
        load_refer(refer_root["data_root"], "refcoco", "google", "test")


def test_missing_annotation_stops_or_is_skipped_and_listed(refer_root):
    data = json.loads(refer_root["instances"].read_text())
    data["annotations"] = [a for a in data["annotations"] if a["id"] != 102]
    refer_root["instances"].write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"ref 11 .*annotation 102 is not in .*instances\.json.*skip_missing"):
        load_refer(refer_root["data_root"], "refcoco", "unc", "val")
    split = load_refer(refer_root["data_root"], "refcoco", "unc", "val", skip_missing=True)
    assert [q.ref_id for q in split.queries] == [10, 10, 12]
    assert [(s["ref_id"], s["sent_id"]) for s in split.skipped] == [(11, 110)]
    assert "annotation 102" in split.skipped[0]["reason"]


def test_empty_sentence_is_a_clear_error_or_skipped(tmp_path):
    roots = write_refer_fixture(tmp_path / "r", sentences={101: "   "})
    with pytest.raises(InputError, match=r"sentence 101 of ref 10 is empty.*skip_missing"):
        load_refer(roots["data_root"], "refcoco", "unc", "val")
    split = load_refer(roots["data_root"], "refcoco", "unc", "val", skip_missing=True)
    assert [q.sent_id for q in split.queries] == [100, 110, 120]
    assert split.skipped[0]["sent_id"] == 101 and "empty" in split.skipped[0]["reason"]


def test_malformed_refs_and_instances(refer_root):
    with open(refer_root["refs"], "wb") as f:
        pickle.dump([{"ref_id": 1}], f, protocol=2)
    with pytest.raises(InputError, match=r"ref #0 must be a dict with keys"):
        load_refer(refer_root["data_root"], "refcoco", "unc", "val")
    refer_root["instances"].write_text("{broken")
    with pytest.raises(InputError, match="not valid JSON"):
        load_refer(refer_root["data_root"], "refcoco", "unc", "val")


def test_synthetic_dataset_name_and_splits(tmp_path):
    roots = write_refer_fixture(tmp_path / "w" / "refer", dataset="synthetic", split_by="unc")
    split = load_refer(roots["data_root"], "synthetic", "unc", "val")
    assert len(split.queries) == 4
    with pytest.raises(ConfigError, match="synthetic dataset has splits"):
        load_refer(roots["data_root"], "synthetic", "unc", "testA")


def test_builders_are_registered_and_build_split_datasets(refer_root, tmp_path):
    from regionvlm.common.registry import registry
    from regionvlm.datasets.ris_datasets import RISDataset

    for name in ("refcoco", "refcoco+", "refcocog", "ris_synthetic"):
        assert registry.get_builder_class(name) is not None
    cfg = {
        "data_root": str(refer_root["data_root"]),
        "image_root": str(refer_root["image_root"]),
        "proposals": str(refer_root["proposals"]),
        "split": ["val", "testA"],
    }
    built = registry.get_builder_class("refcoco")(cfg, image_size=64).build_datasets()
    assert sorted(built) == ["testA", "val"] and isinstance(built["val"], RISDataset)
    val = built["val"]
    assert len(val) == 4 and val[0]["sentence"] == "The LEFT block."
    assert val.image_path(1) == refer_root["image_root"] / IMAGES[1][0]
    assert val.proposal_path(1) == refer_root["proposals"] / "COCO_train2014_000000000001.json"
    assert val.missing_files() == []
    builder = registry.get_builder_class("refcoco")
    with pytest.raises(ConfigError, match=r"datasets\.refcoco\.proposals` is not set"):
        builder({k: v for k, v in cfg.items() if k != "proposals"}, image_size=64).build_datasets()
    with pytest.raises(ConfigError, match=r"unknown setting.*splitby.*did you mean `splitBy`"):
        builder({**cfg, "splitby": "unc"}, image_size=64)
    with pytest.raises(ConfigError, match="own builder name"):
        builder({**cfg, "dataset_name": "refcocog"}, image_size=64).build_datasets()
    with pytest.raises(ConfigError, match="model takes 64x64"):
        builder(
            {**cfg, "vis_processor": {"eval": {"name": "blip_image_eval", "image_size": 224}}}, image_size=64
        ).build_datasets()
    world = tmp_path / "world"
    write_refer_fixture(
        world / "refer", dataset="synthetic", image_dir=world / "images", proposal_dir=world / "proposals"
    )
    syn = registry.get_builder_class("ris_synthetic")(
        {"world": str(world), "split": "val"}, image_size=64
    ).build_datasets()["val"]
    assert syn.dataset_name == "synthetic" and syn.missing_files() == [] and len(syn) == 4


def test_list_images_command(refer_root, tmp_path, capsys):
    from regionvlm.data.refer import main

    out = tmp_path / "val.txt"
    main(["--data-root", str(refer_root["data_root"]), "--dataset", "refcoco", "--split", "val", "--out", str(out)])
    assert out.read_text().splitlines() == [IMAGES[1][0], IMAGES[2][0]]
