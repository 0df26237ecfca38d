"""Region prompts (docs/method.md): text format, seeded sampling per kind, clear errors."""

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from test_refer import uncompressed_rle

from regionvlm.common.errors import InputError
from regionvlm.region import Region, format_points, sample_mask_points, select_in_order


def test_text_format_is_official():
    pts = np.array([[0.12, 0.345], [0.15, 0.40], [0.6, 0.719]])
    assert format_points(pts) == "[12 34] [15 40] [60 71]"
    assert format_points(np.zeros((0, 2))) == ""


def test_quantization_is_int_of_100v_in_the_points_dtype():
    # 29/100 * 100 is 28.999... in float64 but 29.0 in float32 (the official mask path).
    assert format_points(np.array([[0.29, 1.0]])) == "[28 100]"
    assert format_points(np.array([[0.29, 1.0]], dtype=np.float32)) == "[29 100]"


def test_trace_with_enough_points_keeps_k_distinct_in_order():
    trace = np.stack([np.linspace(0, 1, 20), np.linspace(1, 0, 20)], axis=1)
    pts = Region.from_trace(trace).sample_points(10, np.random.default_rng(3))
    assert pts.shape == (10, 2)
    xs = pts[:, 0]
    assert np.all(np.diff(xs) > 0), "trace order must be kept and indices distinct"


def test_trace_with_fewer_points_is_evenly_spaced_with_repeats():
    assert select_in_order(3, 10, np.random.default_rng(0)).tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 2]
    assert select_in_order(20, 10, None).tolist() == [int(19 / 9 * j) for j in range(10)]


def test_sampling_is_reproducible_with_a_seed_for_every_kind():
    mask = np.zeros((50, 40), bool)
    mask[10:30, 5:25] = True
    regions = [
        Region.from_points([[1, 2], [30, 40], [10, 10]], image_size=(40, 50)),
        Region.from_trace(np.random.default_rng(0).random((25, 2))),
        Region.from_box([5, 5, 20, 30], image_size=(40, 50)),
        Region.from_mask(mask),
    ]
    for region in regions:
        a = region.to_text(10, np.random.default_rng(7))
        b = region.to_text(10, np.random.default_rng(7))
        c = region.to_text(10, np.random.default_rng(8))
        assert a == b
        assert len(a.split("] [")) == 10
        if region.kind in ("trace", "box", "mask"):
            assert a != c
    assert Region.whole_image().to_text() == ""


def test_box_points_lie_inside_the_box():
    pts = Region.from_box([0.2, 0.3, 0.5, 0.9]).sample_points(200, np.random.default_rng(0))
    assert pts[:, 0].min() >= 0.2 and pts[:, 0].max() <= 0.5
    assert pts[:, 1].min() >= 0.3 and pts[:, 1].max() <= 0.9


def test_mask_points_are_distinct_foreground_pixels_col_row_over_width_height():
    mask = np.zeros((10, 20), bool)
    mask[2, 3] = mask[7, 15] = True
    pts = sample_mask_points(mask, 10, np.random.default_rng(0))
    assert pts.dtype == np.float32 and len(pts) == 2  # fewer pixels than K: all of them, once
    got = {(round(float(x) * 20), round(float(y) * 10)) for x, y in pts}
    assert got == {(3, 2), (15, 7)}


def test_mask_from_coco_rle_compressed_and_uncompressed():
    mask = np.zeros((12, 9), np.uint8)
    mask[3:6, 2:8] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    rle_str = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    assert np.array_equal(Region.from_mask(rle_str).data, mask.astype(bool))
    assert np.array_equal(Region.from_mask(uncompressed_rle(mask)).data, mask.astype(bool))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Region.from_mask(np.zeros((4, 4))), "empty"),
        (lambda: Region.from_mask(np.zeros((4, 4, 3))), "2-D"),
        (lambda: Region.from_points([[0.5, 1.5]]), "[0, 1]"),
        (lambda: Region.from_points([[10, 60]], image_size=(50, 50)), "inside"),
        (lambda: Region.from_points([[np.nan, 0.2]]), "NaN"),
        (lambda: Region.from_points([[0.1, 0.2, 0.3]]), "(x, y) pairs"),
        (lambda: Region.from_points([]), "(x, y) pairs"),
        (lambda: Region.from_box([0.5, 0.5, 0.2, 0.9]), "x0 < x1"),
        (lambda: Region.from_box([0.1, 0.2, 0.3]), "4 numbers"),
        (lambda: Region.from_mask({"counts": "x"}), "size"),
        (lambda: Region.from_box([0, 0, 1, 1]).sample_points(10, None), "rng"),
        (lambda: Region.from_trace([[0.1, 0.1]]).sample_points(0), "positive"),
    ],
)
def test_bad_regions_raise_clear_errors(make, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        make()


def test_trace_clip_allows_slightly_outside_points():
    region = Region.from_trace([[-0.01, 0.5], [1.02, 0.5]], clip=True)
    assert region.data.min() == 0.0 and region.data.max() == 1.0


@pytest.mark.parametrize(
    "text, expected", [("12", 12), (" -3 ", -3), ("007", 7), ("²", None), ("1²", None), ("--3", None), ("1_0", None)]
)
def test_whole_number_strings_take_ascii_digits_only(text, expected):
    from regionvlm.region import whole_number

    assert whole_number(text, strings=True) == expected
