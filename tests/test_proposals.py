"""SAM proposals: the file format, the CLI on a real (tiny, random) SAM, the PNG import."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from regionvlm.common.errors import CheckpointError, ConfigError, InputError, MissingFileError
from regionvlm.data.proposals import (
    ProposalSet,
    load_image_proposals,
    proposal_path,
    read_proposals,
    save_image_proposals,
)
from regionvlm.proposals import build_sam, import_png_dir, list_images, main, natural_key


def _masks(h=12, w=16):
    a = np.zeros((h, w), bool)
    a[2:6, 3:9] = True
    b = np.zeros((h, w), bool)
    b[:, 10:] = True
    c = np.zeros((h, w), bool)
    c[7, 1] = True
    return [a, b, c]


def test_save_load_roundtrip_keeps_order_scores_and_exact_masks(tmp_path):
    masks = _masks()
    path = save_image_proposals(tmp_path, "COCO_train2014_000000000009.jpg", masks, [0.9, 0.5, 0.25])
    assert path == tmp_path / "COCO_train2014_000000000009.json"
    got, scores = load_image_proposals(tmp_path, "COCO_train2014_000000000009.jpg")
    assert scores == [0.9, 0.5, 0.25]
    for g, m in zip(got, masks):
        assert g.dtype == bool and g.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(g, m)
    doc = json.loads(path.read_text())
    assert doc["format"] == "regionvlm-proposals" and (doc["height"], doc["width"]) == (12, 16)
    assert [r["area"] for r in doc["masks"]] == [24, 72, 1]
    assert doc["masks"][0]["bbox"] == [3.0, 2.0, 6.0, 4.0]
    props = read_proposals(path)
    assert props.areas.tolist() == [24, 72, 1] and len(props) == 3
    # the stem and the file name map to the same file; empty sets need the image size
    assert load_image_proposals(tmp_path, "COCO_train2014_000000000009")[1] == [0.9, 0.5, 0.25]
    save_image_proposals(tmp_path, "blank.png", [], [], image_size=(5, 7))
    assert load_image_proposals(tmp_path, "blank.png") == ([], [])
    with pytest.raises(InputError, match="pass image_size"):
        save_image_proposals(tmp_path, "x.png", [], [])
    with pytest.raises(InputError, match="2 masks but 1 scores"):
        save_image_proposals(tmp_path, "x.png", masks[:2], [0.1])
    with pytest.raises(InputError, match="one size"):
        save_image_proposals(tmp_path, "x.png", [masks[0], np.zeros((3, 3), bool)], [0.1, 0.2])


def test_proposal_path_rules(tmp_path):
    assert proposal_path(tmp_path, "sub/img.v2.JPG") == tmp_path / "sub" / "img.v2.json"
    assert proposal_path(tmp_path, "img.v2") == tmp_path / "img.v2.json"
    for bad in ("../x.jpg", "/abs/x.jpg"):
        with pytest.raises(InputError, match="relative path"):
            proposal_path(tmp_path, bad)


def test_missing_and_malformed_proposal_files_say_what_to_do(tmp_path):
    with pytest.raises(MissingFileError, match=r"for image 'a\.jpg' not found at .*a\.json.*regionvlm\.proposals"):
        load_image_proposals(tmp_path, "a.jpg")
    (tmp_path / "b.json").write_text("{not json")
    with pytest.raises(InputError, match=r"cannot read the proposal file .*b\.json"):
        read_proposals(tmp_path / "b.json")
    (tmp_path / "c.json").write_text(json.dumps({"format": "other", "masks": []}))
    with pytest.raises(InputError, match="is not a regionvlm-proposals file"):
        read_proposals(tmp_path / "c.json")
    path = save_image_proposals(tmp_path, "d.jpg", _masks(), [1, 2, 3])
    doc = json.loads(path.read_text())
    doc["masks"][1]["segmentation"]["size"] = [3, 3]
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=r"mask 1: RLE size \[3, 3\] differs from the image size \[12, 16\]"):
        read_proposals(path)


def test_proposal_set_decodes_lazily_and_from_masks():
    props = ProposalSet.from_masks(_masks())
    assert props.areas.tolist() == [24, 72, 1] and props.scores == [None, None, None]
    np.testing.assert_array_equal(props.mask(1), _masks()[1])


@pytest.fixture(scope="module")
def tiny_sam_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    sam = build_sam("tiny")
    path = tmp_path_factory.mktemp("sam") / "tiny_sam.pth"
    torch.save(sam.state_dict(), path)
    return path


SAM_FLAGS = [
    "--model-type",
    "tiny",
    "--device",
    "cpu",
    "--points-per-side",
    "4",
    "--pred-iou-thresh",
    "0",
    "--stability-score-thresh",
    "0",
    "--box-nms-thresh",
    "0.95",
    "--no-progress",
]


def test_cli_runs_the_real_generator_and_resumes(tmp_path, tiny_sam_checkpoint):
    from segment_anything import SamAutomaticMaskGenerator

    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "sub/b.png"):
        Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(images / name)
    out = tmp_path / "props"
    counts = main(
        ["--images", str(images), "--sam-checkpoint", str(tiny_sam_checkpoint), "--out", str(out), *SAM_FLAGS]
    )
    assert counts["written"] == 2 and counts["masks"] > 0
    assert (out / "a.json").is_file() and (out / "sub" / "b.json").is_file()

    # the stored proposals are exactly the generator's output, in its order
    sam = build_sam("tiny", str(tiny_sam_checkpoint))
    gen = SamAutomaticMaskGenerator(
        sam, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=0.95
    )
    expected = gen.generate(np.asarray(Image.open(images / "a.jpg").convert("RGB")))
    masks, scores = load_image_proposals(out, "a.jpg")
    assert len(masks) == len(expected) > 0
    np.testing.assert_allclose(scores, [e["predicted_iou"] for e in expected], rtol=1e-6)
    for m, e in zip(masks, expected):
        np.testing.assert_array_equal(m, e["segmentation"])
    doc = json.loads((out / "a.json").read_text())
    assert doc["source"]["settings"]["points_per_side"] == 4 and doc["source"]["model_type"] == "tiny"

    # resumable: finished images are skipped, a deleted one is redone
    mtime = (out / "a.json").stat().st_mtime_ns
    (out / "sub" / "b.json").unlink()
    counts = main(
        ["--images", str(images), "--sam-checkpoint", str(tiny_sam_checkpoint), "--out", str(out), *SAM_FLAGS]
    )
    assert counts["written"] == 1 and counts["done_before"] == 1
    assert (out / "a.json").stat().st_mtime_ns == mtime

    # a list of names relative to --image-root
    listing = tmp_path / "list.txt"
    listing.write_text("sub/b.png\n")
    assert [n for n, _ in list_images(listing, images)] == ["sub/b.png"]


def test_bad_checkpoints_and_settings(tmp_path, tiny_sam_checkpoint):
    with pytest.raises(MissingFileError, match=r"SAM tiny checkpoint not found .*--sam-checkpoint"):
        build_sam("tiny", str(tmp_path / "nope.pth"))
    state = torch.load(tiny_sam_checkpoint, weights_only=True)
    state.pop(next(iter(state)))
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match=r"1 missing keys .*1 unexpected .*--model-type"):
        build_sam("tiny", str(tmp_path / "broken.pth"))
    with pytest.raises(ConfigError, match="unknown SAM --model-type"):
        build_sam("vit_x")
    with pytest.raises(ConfigError, match="--sam-checkpoint is required"):
        main(["--images", str(tmp_path), "--out", str(tmp_path / "o")])
    with pytest.raises(MissingFileError, match="neither a folder of images nor a list file"):
        main(
            [
                "--images",
                str(tmp_path / "none"),
                "--sam-checkpoint",
                str(tiny_sam_checkpoint),
                "--out",
                str(tmp_path / "o"),
                *SAM_FLAGS,
            ]
        )


def test_import_png_dir_sorts_numerically_and_checks_values(tmp_path):
    src = tmp_path / "SAM_proposals"
    folder = src / "COCO_train2014_000000000009"
    folder.mkdir(parents=True)
    masks = {}
    for i, name in enumerate(("10.png", "2.png", "1.png")):
        m = np.zeros((8, 10), np.uint8)
        m[i : i + 3, 2 * i : 2 * i + 4] = 255
        Image.fromarray(m).save(folder / name)
        masks[name] = m > 0
    (src / "empty_image").mkdir()
    out = tmp_path / "props"
    counts = import_png_dir(src, out, progress=False)
    assert counts == {"folders": 2, "done_before": 0, "written": 1, "empty": 1, "masks": 3}
    got, scores = load_image_proposals(out, "COCO_train2014_000000000009.jpg")
    for g, name in zip(got, ("1.png", "2.png", "10.png")):
        np.testing.assert_array_equal(g, masks[name])
    assert scores == [None, None, None]
    assert json.loads((out / "COCO_train2014_000000000009.json").read_text())["source"]["files"] == [
        "1.png",
        "2.png",
        "10.png",
    ]
    assert import_png_dir(src, out, progress=False)["done_before"] == 1
    assert sorted(["b10.png", "b2.png", "a.png"], key=natural_key) == ["a.png", "b2.png", "b10.png"]

    grey = src / "grey"
    grey.mkdir()
    Image.fromarray(np.full((4, 4), 128, np.uint8)).save(grey / "0.png")
    with pytest.raises(InputError, match=r"0\.png' is not a binary mask: values \[128\]"):
        import_png_dir(src, out, progress=False)
