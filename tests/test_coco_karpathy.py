"""Readers of the COCO Karpathy split files and the evaluation's file-name -> image id rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from regionvlm.common.errors import InputError, MissingFileError
from regionvlm.data.coco_karpathy import (
    KarpathyImage,
    build_caption_gt,
    caption_gt_from_dataset,
    check_split_matches_gt,
    default_paths,
    image_id_from_filename,
    read_caption_gt,
    read_karpathy_split,
)

# Entries as in coco_karpathy_test.json (one per image, five captions each).
TEST_SPLIT = [
    {
        "image": "val2014/COCO_val2014_000000391895.jpg",
        "caption": [
            "A man with a red helmet on a small moped on a dirt road. ",
            "Man riding a motor bike on a dirt road on the countryside.",
            "A man riding on the back of a motorcycle.",
            "A dirt path with a young person on a motor bike rests to the foreground of a verdant area.",
            "A man in a red shirt and a red hat is on a motorcycle on a hill side.",
        ],
    },
    {
        "image": "val2014/COCO_val2014_000000522418.jpg",
        "caption": [
            "A woman wearing a net on her head cutting a cake. ",
            "A woman cutting a large white sheet cake.",
            "A woman wearing a hair net cutting a large sheet cake.",
            "there is a woman that is cutting a white cake",
            "A woman marking a cake with the back of a chef's knife. ",
        ],
    },
]
GT = {
    "images": [{"id": 391895}, {"id": 522418}],
    "annotations": [
        {"image_id": 391895, "caption": "A man with a red helmet on a small moped on a dirt road. ", "id": 770337},
        {"image_id": 391895, "caption": "Man riding a motor bike on a dirt road on the countryside.", "id": 771687},
        {"image_id": 522418, "caption": "A woman wearing a net on her head cutting a cake. ", "id": 681330},
    ],
}


def write(path: Path, obj) -> Path:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj), encoding="utf-8")
    return path


# ------------------------------------------------------------- the image id rule
@pytest.mark.parametrize(
    "image, expected",
    [
        ("val2014/COCO_val2014_000000391895.jpg", 391895),  # the official names: the trailing number
        ("COCO_val2014_000000000042.jpg", 42),  # leading zeros dropped
        ("a_b/c_d/COCO_7.jpg", 7),  # folders (with underscores) are cut off first
        ("391895.jpg", 391895),  # no underscore: the whole stripped name
        ("COCO_val2014_12g.jpg", 12),  # quirk: the characters . j p g are stripped, not ".jpg"
        ("COCO_val2014_12.jpg.jpg", 12),  # ... repeatedly
        ("COCO_x_-5.jpg", -5),  # int() takes a sign
    ],
)
def test_image_id_rule(image, expected):
    assert image_id_from_filename(image) == expected


@pytest.mark.parametrize(
    "image",
    [
        "val2014/COCO_val2014_000000391895.jpeg",  # strip leaves "...391895.jpe"
        "val2014/COCO_val2014_000000391895.png",  # strip leaves "...391895.pn"
        "gap123.jpg",  # leading 'g' stripped, 'ap123' is not a number
        "val2014/COCO_val2014_.jpg",  # nothing after the last underscore
    ],
)
def test_image_id_rule_refuses_names_without_a_trailing_number(image):
    with pytest.raises(InputError, match="after the last '_'"):
        image_id_from_filename(image)


# ------------------------------------------------------------- split files
def test_read_split_in_the_lavis_format(tmp_path):
    images = read_karpathy_split(write(tmp_path / "coco_karpathy_test.json", TEST_SPLIT))
    assert images == [
        KarpathyImage("val2014/COCO_val2014_000000391895.jpg", 391895, tuple(TEST_SPLIT[0]["caption"])),
        KarpathyImage("val2014/COCO_val2014_000000522418.jpg", 522418, tuple(TEST_SPLIT[1]["caption"])),
    ]


def test_read_split_accepts_a_single_caption_string(tmp_path):
    entry = {"image": "val2014/COCO_val2014_000000000001.jpg", "caption": "a cat", "image_id": "coco_1"}
    (image,) = read_karpathy_split(write(tmp_path / "s.json", [entry]))
    assert image.captions == ("a cat",) and image.image_id == 1  # the file name decides, not "image_id"


@pytest.mark.parametrize(
    "data, message",
    [
        ({"images": []}, "JSON list"),
        (["val2014/COCO_val2014_000000000001.jpg"], "entry 0 must be an object"),
        ([{"caption": ["a"]}], "entry 0 has no 'image'"),
        ([{"image": "val2014/COCO_val2014_000000000001.jpg"}], "entry 0 has no 'caption'"),
        ([{"image": 5, "caption": ["a"]}], "'image' must be a non-empty path string"),
        ([{"image": "val2014/COCO_val2014_000000000001.jpg", "caption": []}], "non-empty list of strings"),
        ([{"image": "val2014/COCO_val2014_000000000001.jpg", "caption": ["a", 3]}], "non-empty list of strings"),
        ([{"image": "val2014/COCO_val2014_000000000001.png", "caption": ["a"]}], "entry 0: cannot derive an image id"),
        (
            [
                {"image": "val2014/COCO_val2014_000000000001.jpg", "caption": ["a"]},
                {"image": "val2014/COCO_val2014_000000000001.jpg", "caption": ["b"]},
            ],
            "entry 1 .* image id 1, already used by entry 0",
        ),
        # two different files with the same trailing number collide under the rule
        (
            [
                {"image": "val2014/COCO_val2014_000000000001.jpg", "caption": ["a"]},
                {"image": "train2014/COCO_train2014_000000000001.jpg", "caption": ["b"]},
            ],
            "already used by entry 0",
        ),
    ],
)
def test_read_split_refuses_malformed_entries(tmp_path, data, message):
    path = write(tmp_path / "coco_karpathy_test.json", data)
    with pytest.raises(InputError, match=message) as err:
        read_karpathy_split(path)
    assert str(path) in str(err.value)


def test_read_split_malformed_json_and_missing_file(tmp_path):
    bad = write(tmp_path / "coco_karpathy_val.json", '[{"image": "x.jpg",')
    with pytest.raises(InputError, match=r"not valid JSON \(.* at line 1"):
        read_karpathy_split(bad)
    with pytest.raises(MissingFileError, match="coco_karpathy_test.json is published at https://storage"):
        read_karpathy_split(tmp_path / "coco_karpathy_test.json")


# ------------------------------------------------------------- ground truth
def test_read_caption_gt(tmp_path):
    gt = read_caption_gt(write(tmp_path / "coco_karpathy_test_gt.json", GT))
    assert gt.image_ids == (391895, 522418)
    assert gt.captions[391895] == (GT["annotations"][0]["caption"], GT["annotations"][1]["caption"])
    assert gt.captions[522418] == (GT["annotations"][2]["caption"],)
    assert gt.dataset == GT


def _gt_with(**changes):
    data = json.loads(json.dumps(GT))
    for key, value in changes.items():
        if key == "ann0":
            data["annotations"][0] = value
        else:
            data[key] = value
    return data


@pytest.mark.parametrize(
    "data, message",
    [
        ([1, 2], "JSON object with 'images' and 'annotations'"),
        ({"annotations": []}, "needs a list 'images'"),
        (_gt_with(images=[]), "lists no images"),
        (_gt_with(images=[{"id": "391895"}, {"id": 522418}]), r"images\[0\] must be an object with an integer 'id'"),
        (
            _gt_with(images=[{"id": 391895}, {"id": 391895}, {"id": 522418}]),
            r"images\[1\]: image id 391895 is listed twice",
        ),
        (_gt_with(ann0={"image_id": 391895, "id": 770337}), r"annotations\[0\] has no 'caption'"),
        (_gt_with(ann0={"image_id": 391895, "caption": 3, "id": 770337}), "'caption' must be a string"),
        (_gt_with(ann0={"image_id": 391895.0, "caption": "a", "id": 770337}), "must be integers"),
        (_gt_with(ann0={"image_id": 7, "caption": "a", "id": 770337}), "refers to image 7, which is not in 'images'"),
        (
            _gt_with(ann0={"image_id": 391895, "caption": "a", "id": 681330}),
            r"annotations\[2\]: annotation id 681330 is used twice",
        ),
        (_gt_with(ann0={"image_id": 391895, "caption": "a\rb", "id": 770337}), "reads as a new line"),
        (
            _gt_with(images=[{"id": 391895}, {"id": 522418}, {"id": 9}]),
            r"1 image\(s\) have no reference caption \(first: \[9\]\)",
        ),
    ],
)
def test_gt_refuses_malformed_files(tmp_path, data, message):
    path = write(tmp_path / "gt.json", data)
    with pytest.raises(InputError, match=message) as err:
        read_caption_gt(path)
    assert str(path) in str(err.value)


def test_gt_missing_file_names_where_it_is_published(tmp_path):
    with pytest.raises(MissingFileError, match="coco_karpathy_test_gt.json is published at"):
        read_caption_gt(tmp_path / "coco_karpathy_test_gt.json")


def test_build_gt_from_split_and_check_against_it(tmp_path):
    images = read_karpathy_split(write(tmp_path / "coco_karpathy_test.json", TEST_SPLIT))
    gt = caption_gt_from_dataset(build_caption_gt(images))
    assert gt.image_ids == (391895, 522418)
    assert gt.captions[522418] == tuple(TEST_SPLIT[1]["caption"])
    assert [a["id"] for a in gt.dataset["annotations"]] == list(range(1, 11))
    check_split_matches_gt(images, gt, "split")  # the same images: no error
    with pytest.raises(InputError, match=r"1 ground-truth image\(s\) are not in the split \(first: \[522418\]\)"):
        check_split_matches_gt(images[:1], gt, "split")


def test_default_paths_follow_the_lavis_layout(tmp_path):
    paths = default_paths(tmp_path, "test")
    assert paths["annotation"] == tmp_path / "coco" / "annotations" / "coco_karpathy_test.json"
    assert paths["images"] == tmp_path / "coco" / "images"
    assert paths["gt"] == tmp_path / "coco_gt" / "coco_karpathy_test_gt.json"
    with pytest.raises(InputError, match="no caption ground truth"):
        default_paths(tmp_path, "train")
