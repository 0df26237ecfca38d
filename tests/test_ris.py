"""Zero-shot RIS: filtering rules, region prompts (text and visual), scoring, metrics,
determinism, resume, bad input, CLI."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict

import numpy as np
import pytest
import torch
from test_refer import IMAGES, fixture_masks, rect, write_refer_fixture

import regionvlm.datasets.builders.ris_builder  # noqa: F401  (registers the builders)
from regionvlm.common.errors import ConfigError, InputError, MissingFileError
from regionvlm.common.registry import registry
from regionvlm.data.proposals import ProposalSet, save_image_proposals
from regionvlm.processors.visual_prompts import (
    BLUR_RADIUS,
    apply_visual_prompt,
    blur_outside_mask,
    crop_to_mask,
    draw_ellipse_around_mask,
    mask_box,
)
from regionvlm.region import MaskPointSampler, sample_mask_points
from regionvlm.tasks.evaluation import item_rng
from regionvlm.tasks.ris import (
    REGION_PROMPTS,
    BoxPointSampler,
    RISEvaluator,
    RISSettings,
    RISTask,
    build_prompts,
    filter_proposals,
    hugs_border,
    mask_iou,
    summarize,
)

H, W = 50, 100  # filtering cases: rows are compared with 0.7 * H = 35, columns with 0.7 * W = 70


# --------------------------------------------------------------------------- filtering
def _set(*masks):
    return ProposalSet.from_masks(list(masks))


def test_small_masks_are_dropped_below_small_threshold():
    exactly = rect(H, W, 10, 19, 10, 29)  # 200 px = 4 % exactly: kept (the test is "< 0.04")
    below = rect(H, W, 10, 19, 40, 58)  # 190 px: dropped
    assert exactly.sum() / H / W == 0.04
    assert filter_proposals(_set(below, exactly)).indices == [1]
    assert filter_proposals(_set(below, exactly), small_threshold=0.03).indices == [0, 1]


@pytest.mark.parametrize("side", ["top", "bottom"])
def test_top_and_bottom_rows_are_compared_with_threshold_times_height(side):
    r0, r1 = (0, 20) if side == "top" else (H - 21, H - 1)
    hug = rect(H, W, r0, r1, 10, 27)  # 18 columns -> 36 pixels in the 2 edge rows > 35
    ok = rect(H, W, r0, r1, 40, 56)  # 17 columns -> 34 pixels, not > 35
    assert hugs_border(hug, 0.7) and not hugs_border(ok, 0.7)
    assert filter_proposals(_set(hug, ok)).indices == [1]
    # literal rule: a row count above 0.7 * H drops the mask even though it is far below 0.7 * W
    assert 0.7 * W > 36


@pytest.mark.parametrize("side", ["left", "right"])
def test_left_and_right_columns_are_compared_with_threshold_times_width(side):
    c0, c1 = (0, 20) if side == "left" else (W - 21, W - 1)
    hug = rect(H, W, 0, 35, c0, c1)  # 36 rows -> 72 pixels in the 2 edge columns > 70
    ok = rect(H, W, 0, 34, c0, c1)  # 35 rows -> 70, not > 70 (its top rows: 21 * 2 = 42 > 35!)
    assert hugs_border(hug, 0.7)
    assert hugs_border(ok, 0.7)  # dropped by the top-rows test instead
    ok = rect(H, W, 3, 37, c0, c1)  # 35 rows off the top edge -> kept
    assert not hugs_border(ok, 0.7)
    assert filter_proposals(_set(hug, ok)).indices == [1]


def test_at_most_max_masks_in_proposal_order():
    masks = [rect(H, W, 5 + i % 5, 30, 5 + i, 40 + i) for i in range(25)]
    got = filter_proposals(ProposalSet.from_masks(masks))
    assert got.indices == list(range(20)) and not got.fallback
    assert filter_proposals(ProposalSet.from_masks(masks), max_masks=3).indices == [0, 1, 2]


def test_fallback_keeps_masks_of_at_least_one_percent_without_border_test():
    border = rect(H, W, 0, 49, 0, 99)  # whole image: border hugger
    one_pct = rect(H, W, 0, 4, 0, 9)  # 50 px = 1 %: kept by the fallback (touches the corner)
    tiny = rect(H, W, 20, 22, 20, 22)  # 9 px < 1 %: never
    small = rect(H, W, 10, 19, 40, 58)  # 190 px < 4 % but >= 1 %
    got = filter_proposals(_set(tiny, border, small, one_pct))
    assert got.fallback and got.indices == [1, 2, 3]
    many = [rect(H, W, 0, 10, 0, 99)] * 25
    assert filter_proposals(ProposalSet.from_masks(many)).indices == list(range(20))
    nothing = filter_proposals(_set(tiny))
    assert nothing.indices == [] and nothing.fallback


# --------------------------------------------------------------------------- sampling
def _reference_mask_points(mask, k, rng):
    """The official rule written out plainly: foreground (row, col) in row-major order, K of
    them without replacement, (col / W, row / H) in float32."""
    rows, cols = np.nonzero(mask)
    take = rng.choice(rows.size, size=min(k, rows.size), replace=False)
    h, w = mask.shape
    return np.stack([cols[take].astype(np.float32) / np.float32(w), rows[take].astype(np.float32) / np.float32(h)], 1)


def test_mask_point_sampler_draws_exactly_the_official_rule():
    masks = [rect(40, 56, 10, 29, 5, 19), rect(40, 56, 3, 3, 7, 9)]  # the second has 3 < K pixels
    for mask in masks:
        a, b, c = np.random.default_rng(5), np.random.default_rng(5), np.random.default_rng(5)
        sampler = MaskPointSampler(mask)
        for _ in range(4):
            want = _reference_mask_points(mask, 10, a)
            np.testing.assert_array_equal(sampler.sample(10, b), want)
            np.testing.assert_array_equal(sample_mask_points(mask, 10, c), want)
    with pytest.raises(InputError, match="empty"):
        MaskPointSampler(np.zeros((4, 4), bool))


# --------------------------------------------------------------------------- visual prompts
def _scene(h: int = 60, w: int = 80):
    """A random RGB image and a mask of two pieces: a 20x30 block (rows 20-39, cols 30-59)
    and a 3x3 speck (rows 2-4, cols 2-4), apart from each other."""
    from PIL import Image

    image = Image.fromarray(np.random.default_rng(3).integers(0, 255, (h, w, 3), dtype=np.uint8))
    mask = rect(h, w, 20, 39, 30, 59) | rect(h, w, 2, 4, 2, 4)
    return image, mask


def test_mask_box_is_the_box_of_the_largest_piece():
    _, mask = _scene()
    assert mask_box(mask) == (30, 20, 60, 40)  # the block, ends exclusive; the speck ignored
    assert mask_box(rect(10, 12, 3, 3, 5, 9)) == (5, 3, 10, 4)  # one piece: its bounding box
    diagonal = np.eye(6, dtype=bool)  # 8-connected: one piece
    diagonal[0, 5] = True  # a lone pixel, smaller
    assert mask_box(diagonal) == (0, 0, 6, 6)
    tie = rect(8, 8, 0, 1, 6, 7) | rect(8, 8, 5, 6, 0, 1)  # two 2x2 pieces: the first in row-major order
    assert mask_box(tie) == (6, 0, 8, 2)
    with pytest.raises(InputError, match="empty"):
        mask_box(np.zeros((4, 4), bool))


def test_crop_is_exactly_the_mask_box():
    image, mask = _scene()
    before = np.asarray(image).copy()
    out = crop_to_mask(image, mask)
    np.testing.assert_array_equal(np.asarray(out), before[20:40, 30:60])
    np.testing.assert_array_equal(np.asarray(image), before)  # the input is not modified
    np.testing.assert_array_equal(np.asarray(crop_to_mask(image, mask, padding=25)), before[0:60, 5:80])
    with pytest.raises(InputError, match=r"mask is \(10, 10\).*image is 60x80"):
        crop_to_mask(image, np.ones((10, 10), bool))
    with pytest.raises(InputError, match="empty"):
        crop_to_mask(image, np.zeros((60, 80), bool))


def test_blur_changes_only_pixels_outside_the_mask():
    from PIL import ImageFilter

    image, mask = _scene()
    before = np.asarray(image).copy()
    out = np.asarray(blur_outside_mask(image, mask)).astype(int)
    np.testing.assert_array_equal(out[mask], before[mask])  # inside: untouched (both pieces)
    blurred = np.asarray(image.filter(ImageFilter.GaussianBlur(BLUR_RADIUS))).astype(int)
    np.testing.assert_array_equal(out[~mask], blurred[~mask])  # outside: the Gaussian-blurred image
    assert (out[~mask] != before[~mask]).mean() > 0.9  # ... which differs from the original
    assert out[~mask].std() < 0.25 * before[~mask].std()  # radius 10 px smooths the noise away
    from scipy import ndimage  # ... and is a Gaussian of std 10 px

    def gap(sigma):
        exact = ndimage.gaussian_filter(before.astype(float), sigma=(sigma, sigma, 0), mode="nearest")
        return np.abs(blurred - exact)[15:45, 20:60].mean()

    assert gap(10) < 0.5 and gap(10) < gap(7) and gap(10) < gap(14)
    np.testing.assert_array_equal(np.asarray(image), before)


def test_circle_draws_a_red_ellipse_in_the_mask_box_and_nothing_else():
    image, mask = _scene()
    before = np.asarray(image).astype(int)
    out = np.asarray(draw_ellipse_around_mask(image, mask)).astype(int)
    changed = np.any(out != before, axis=2)
    assert (out[changed] == [255, 0, 0]).all()  # every changed pixel is red
    rows, cols = np.nonzero(changed)
    # inscribed in (x0, y0, x1, y1) = (30, 20, 60, 40): columns 30..60 and rows 20..40 inclusive
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (20, 40, 30, 60)
    for y, x in ((30, 30), (30, 60), (20, 45), (40, 45)):  # it touches the box's four sides ...
        assert changed[y, x]
    for y, x in ((20, 30), (20, 60), (40, 30), (40, 60), (30, 45)):  # ... not its corners nor its centre
        assert not changed[y, x]
    assert changed[22:38, 33:57].sum() < changed.sum()  # a 10 px outline, not a filled disc
    np.testing.assert_array_equal(np.asarray(image), before)


def test_apply_visual_prompt_per_mask_equals_the_single_transforms():
    image, mask = _scene()
    other = rect(60, 80, 5, 15, 5, 25)
    for mode, fn in (("crop", crop_to_mask), ("blur", blur_outside_mask), ("circle", draw_ellipse_around_mask)):
        got = apply_visual_prompt(mode, image, [mask, other])
        for out, m in zip(got, (mask, other)):
            np.testing.assert_array_equal(np.asarray(out), np.asarray(fn(image, m)))
    with pytest.raises(InputError, match=r"unknown visual prompt 'glow'.*\['blur', 'circle', 'crop'\]"):
        apply_visual_prompt("glow", image, [mask])


def test_box_mode_draws_points_uniformly_inside_the_mask_box():
    _, mask = _scene()
    sampler = BoxPointSampler(mask_box(mask), *mask.shape)
    pts = np.concatenate([sampler.sample(10, np.random.default_rng(i)) for i in range(50)])
    assert pts.shape == (500, 2)
    x, y = pts[:, 0] * 80, pts[:, 1] * 60
    assert (x >= 30).all() and (x <= 60).all() and (y >= 20).all() and (y <= 40).all()
    assert x.min() < 33 and x.max() > 57 and y.min() < 22 and y.max() > 38  # the whole box, not the mask's speck
    assert (np.histogram(x, bins=3, range=(30, 60))[0] > 120).all()  # roughly uniform (~167 per third)
    from PIL import Image

    prompts = build_prompts("box", Image.new("RGB", (80, 60)), [mask], lambda im: torch.zeros(3, 4, 4))
    np.testing.assert_array_equal(
        prompts.samplers[0].sample(10, np.random.default_rng(0)), sampler.sample(10, np.random.default_rng(0))
    )
    assert prompts.images.shape == (1, 3, 4, 4) and len(prompts) == 1
    visual = build_prompts("crop", Image.new("RGB", (80, 60)), [mask, mask], lambda im: torch.zeros(3, 4, 4))
    assert visual.images.shape == (2, 3, 4, 4) and visual.samplers == [] and len(visual) == 2


# --------------------------------------------------------------------------- metrics
def test_mask_iou_and_summary_by_hand():
    gt = rect(10, 10, 0, 4, 0, 4)  # 25 px
    pred = rect(10, 10, 0, 4, 2, 6)  # 25 px, overlap 15
    assert mask_iou(pred, gt) == (15, 35, 15 / 35)
    assert mask_iou(None, gt) == (0, 25, 0.0)
    assert mask_iou(np.zeros((10, 10), bool), np.zeros((10, 10), bool)) == (0, 0, 0.0)
    records = [
        {"intersection": 15, "union": 35, "iou": 15 / 35},
        {"intersection": 0, "union": 25, "iou": 0.0},
        {"intersection": 10, "union": 10, "iou": 1.0},
    ]
    got = summarize(records)
    assert got["oIoU"] == pytest.approx(100 * 25 / 70)
    assert got["mIoU"] == pytest.approx(100 * (15 / 35 + 0 + 1) / 3)
    assert summarize([]) == {"oIoU": None, "mIoU": None, "num_queries": 0}


# --------------------------------------------------------------------------- a model whose choice is known
class _WordTokenizer:
    def __call__(self, texts):
        return SimpleNamespace(input_ids=[t.split() for t in texts])


class FakeModel(torch.nn.Module):
    """Region score = mean x of the region's points for sentences with 'left', minus it for
    'right': the protocol must pick the leftmost / rightmost candidate."""

    image_size = 32
    max_txt_len = 48
    num_points = 10  # K, as RegionStepModel declares it

    def __init__(self):
        super().__init__()
        self.query_tokens = torch.nn.Parameter(torch.zeros(1, 1, 2))
        self.t5_tokenizer = _WordTokenizer()
        self.calls: Counter = Counter()

    @property
    def device(self):
        return self.query_tokens.device

    def encode_image(self, image):
        self.calls["images_encoded"] += image.shape[0]
        return torch.zeros(image.shape[0], 1, 1)

    def region_queries(self, image_embeds, texts):
        pts = [np.array(re.findall(r"\[(\d+) (\d+)\]", t), dtype=float) / 100 for t in texts]
        return torch.tensor(np.array([[p.mean(0)] for p in pts]), dtype=torch.float32)

    def t5_inputs(self, queries, prompts=None):
        return queries, torch.ones(queries.shape[:2], dtype=torch.long)

    def encode_t5(self, embeds, mask):
        return embeds

    def target_nll(self, hidden, mask, targets):
        self.calls["decoded"] += len(targets)
        sign = torch.tensor([1.0 if "left" in t else -1.0 for t in targets])
        return sign * hidden[:, 0, 0]

    def forward(self, samples, reduction="mean"):
        q = self.region_queries(self.encode_image(samples["image"]), samples["text_input"])
        return {"loss": self.target_nll(q, None, samples["text_output"])}


def _datasets(roots: Dict[str, Path], image_size: int = FakeModel.image_size, **extra) -> Dict[str, Dict[str, Any]]:
    cfg = {
        "data_root": str(roots["data_root"]),
        "image_root": str(roots["image_root"]),
        "proposals": str(roots["proposals"]),
        "split": "val",
        **extra,
    }
    return {"refcoco": registry.get_builder_class("refcoco")(cfg, image_size=image_size).build_datasets()}


def _evaluate(model, roots, out: Path, run: Dict[str, Any] | None = None, **ds_extra) -> Dict[str, Any]:
    run = dict(run or {})
    metrics = RISTask().evaluate(model, _datasets(roots, model.image_size, **ds_extra), run, out)
    prompt = run.get("region_prompt", "points")
    path = out / f"ris{'' if prompt == 'points' else '-' + prompt}_refcoco_unc_val.json"  # the variant names the file
    return {"metrics": metrics, "results": json.loads(path.read_text()), "bytes": path.read_bytes()}


@pytest.fixture
def roots(tmp_path) -> Dict[str, Path]:
    return write_refer_fixture(tmp_path / "refer")


@pytest.mark.parametrize("protocol", ["fast", "official"])
def test_lowest_score_wins_and_metrics_match_hand_computation(roots, tmp_path, protocol):
    model = FakeModel()
    out = _evaluate(model, roots, tmp_path / protocol, {"protocol": protocol})
    q = out["results"]["queries"]
    assert [(r["ref_id"], r["sent_id"]) for r in q] == [(10, 100), (10, 101), (11, 110), (12, 120)]
    assert q[0]["candidates"] == [2, 3, 4] and q[3]["candidates"] == [0, 1]  # small and border masks gone
    assert [r["chosen"] for r in q] == [2, 2, 3, 1]  # left, left, right, right
    # scores: min over the 5 draws (shared by the image's sentences) of +-mean x, computed independently
    props = fixture_masks()["proposals"][1]
    rng = item_rng(42, "1")
    draws = {i: [sample_mask_points(props[i], 10, rng) for _ in range(5)] for i in (2, 3, 4)}
    mean_x = {i: [(p[:, 0] * np.float32(100)).astype(int).mean() / 100 for p in d] for i, d in draws.items()}
    np.testing.assert_allclose(q[0]["scores"], [min(mean_x[i]) for i in (2, 3, 4)], rtol=1e-6)
    np.testing.assert_allclose(q[2]["scores"], [min(-v for v in mean_x[i]) for i in (2, 3, 4)], rtol=1e-6)
    # IoU by hand: left block vs GT 101 (rows 12-29, cols 5-21): I = 18*15, U = 300 + 306 - 270
    assert (q[0]["intersection"], q[0]["union"]) == (270, 336)
    assert (q[2]["intersection"], q[2]["union"]) == (300, 300)  # proposal 3 == GT 102
    assert (q[3]["intersection"], q[3]["union"]) == (512, 640)  # 32x16 inside 32x20
    m = out["metrics"]
    assert m["refcoco_unc_val/oIoU"] == pytest.approx(100 * (270 + 270 + 300 + 512) / (336 + 336 + 300 + 640))
    assert m["refcoco_unc_val/mIoU"] == pytest.approx(100 * (270 / 336 * 2 + 1 + 0.8) / 4)
    assert m["agg_metrics"] == m["refcoco_unc_val/oIoU"]
    assert m["refcoco_unc_val/num_queries"] == 4 and m["refcoco_unc_val/num_images"] == 2
    if protocol == "fast":  # image encoded once per image; decoder for every (draw, sentence)
        assert model.calls["images_encoded"] == 2 and model.calls["decoded"] == 3 * 15 + 1 * 10
    else:  # the image re-encoded R times per (sentence, mask)
        assert model.calls["images_encoded"] == 5 * (3 * 3 + 1 * 2)


def test_draws_per_sentence_option(roots, tmp_path):
    shared = _evaluate(FakeModel(), roots, tmp_path / "a")["results"]["queries"]
    fresh = _evaluate(FakeModel(), roots, tmp_path / "b", {"draws": "sentence"})["results"]["queries"]
    assert shared[0]["scores"] == shared[1]["scores"]  # same draws for both 'left' sentences
    assert fresh[0]["scores"] != fresh[1]["scores"]  # new draws per sentence
    assert [r["chosen"] for r in fresh] == [2, 2, 3, 1]


def test_box_mode_scores_points_in_the_mask_box_with_the_same_seeded_draws(roots, tmp_path):
    model = FakeModel()
    res = _evaluate(model, roots, tmp_path / "box", {"region_prompt": "box", "protocol": "fast"})["results"]
    q = res["queries"]
    assert res["settings"]["region_prompt"] == "box"
    assert [r["chosen"] for r in q] == [2, 2, 3, 1]
    props = fixture_masks()["proposals"][1]
    rng = item_rng(42, "1")  # the image's key, as for `points`
    samplers = {i: BoxPointSampler(mask_box(props[i]), 40, 56) for i in (2, 3, 4)}
    draws = {i: [samplers[i].sample(10, rng) for _ in range(5)] for i in (2, 3, 4)}
    mean_x = {i: [(p[:, 0] * 100).astype(int).mean() / 100 for p in d] for i, d in draws.items()}
    np.testing.assert_allclose(q[0]["scores"], [min(mean_x[i]) for i in (2, 3, 4)], rtol=1e-6)
    official = _evaluate(FakeModel(), roots, tmp_path / "boxo", {"region_prompt": "box", "protocol": "official"})
    assert [r["scores"] for r in official["results"]["queries"]] == [r["scores"] for r in q]


# --------------------------------------------------------------------------- the real (tiny) model
class _CountImages:
    """Wraps ``model.encode_image`` to record the batch size of every call."""

    def __init__(self, model):
        self.original, self.batches = model.encode_image, []

    def __call__(self, image):
        self.batches.append(image.shape[0])
        return self.original(image)


@pytest.mark.parametrize("mode", REGION_PROMPTS)
def test_every_region_prompt_fast_equals_official_on_tiny_model(mode, tiny_model, roots, tmp_path, monkeypatch):
    counter = _CountImages(tiny_model)
    monkeypatch.setattr(tiny_model, "encode_image", counter)
    run = {"region_prompt": mode}
    fast = _evaluate(tiny_model, roots, tmp_path / "fast", {**run, "decoder_batch": 7, "encoder_batch": 2})["results"]
    fast_batches, counter.batches = counter.batches, []
    official = _evaluate(tiny_model, roots, tmp_path / "official", {**run, "protocol": "official"})["results"]
    assert fast["settings"]["region_prompt"] == official["settings"]["region_prompt"] == mode
    for f, o in zip(fast["queries"], official["queries"]):
        assert f["candidates"] == o["candidates"]
        np.testing.assert_allclose(f["scores"], o["scores"], rtol=1e-5, atol=1e-5)
        assert f["chosen"] == o["chosen"] and f["iou"] == o["iou"]
    assert fast["metrics"] == official["metrics"]
    # image 1: 3 sentences x 3 masks, image 2: 1 sentence x 2 masks
    if mode in ("crop", "blur", "circle"):
        assert fast_batches == [2, 1, 2]  # each mask's prompted image once (encoder_batch 2)
        assert counter.batches == [1] * (3 * 3 + 1 * 2)  # one pass per (sentence, mask), not R
    else:
        assert fast_batches == [1, 1]  # the image once
        assert counter.batches == [5] * (3 * 3 + 1 * 2)  # R draws per (sentence, mask)


@pytest.mark.parametrize("mode", ["crop", "blur", "circle"])
def test_visual_prompt_score_is_the_single_nll_of_the_prompted_image(mode, tiny_model, roots, tmp_path):
    from PIL import Image

    from regionvlm.processors import BlipCaptionProcessor, BlipImageEvalProcessor

    res = _evaluate(tiny_model, roots, tmp_path / "a", {"region_prompt": mode})["results"]
    fresh = _evaluate(
        tiny_model, roots, tmp_path / "b", {"region_prompt": mode, "draws": "sentence", "repeats": 2, "num_points": 3}
    )["results"]
    assert [r["scores"] for r in fresh["queries"]] == [r["scores"] for r in res["queries"]]  # nothing drawn
    vis, txt = BlipImageEvalProcessor(image_size=tiny_model.image_size), BlipCaptionProcessor()
    with Image.open(roots["image_root"] / IMAGES[1][0]) as im:
        image = im.convert("RGB")
    props = fixture_masks()["proposals"][1]
    query = res["queries"][0]
    prompted = torch.stack([vis(x) for x in apply_visual_prompt(mode, image, [props[i] for i in (2, 3, 4)])])
    want = [float(tiny_model.score(prompted[k], [""], [txt(query["sentence"])])[0]) for k in range(3)]
    np.testing.assert_allclose(query["scores"], want, rtol=1e-5, atol=1e-5)
    assert np.ptp(query["scores"]) > 1e-4  # the marks differ per mask, so do the scores


def test_empty_region_prompt_ablation_scores_every_mask_alike(tiny_model, roots, tmp_path):
    res = _evaluate(tiny_model, roots, tmp_path / "empty", {"region_prompt": "empty"})["results"]
    assert res["settings"]["region_prompt"] == "empty"
    for query in res["queries"]:
        assert np.ptp(query["scores"]) < 1e-5  # no region information: every candidate looks the same


def test_same_seed_gives_byte_identical_results_and_seed_matters(tiny_model, roots, tmp_path):
    a = _evaluate(tiny_model, roots, tmp_path / "a")
    b = _evaluate(tiny_model, roots, tmp_path / "b")
    assert a["bytes"] == b["bytes"]
    c = _evaluate(tiny_model, roots, tmp_path / "c", {"seed": 7})
    assert c["results"]["queries"][0]["scores"] != a["results"]["queries"][0]["scores"]
    assert c["results"]["settings"]["seed"] == 7
    assert not list((tmp_path / "a").glob("*.partial.*"))  # progress logs are removed at the end


def test_resume_after_kill_gives_identical_results(tiny_model, roots, tmp_path, monkeypatch):
    reference = _evaluate(tiny_model, roots, tmp_path / "ref")["bytes"]
    original = RISEvaluator.process
    calls = []

    def killed_after_one(self, key, prefetcher):
        if calls:
            raise KeyboardInterrupt("simulated kill")
        calls.append(key)
        return original(self, key, prefetcher)

    monkeypatch.setattr(RISEvaluator, "process", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        _evaluate(tiny_model, roots, tmp_path / "run")
    logs = list((tmp_path / "run").glob("ris_refcoco_unc_val.*.partial.rank0.jsonl"))
    assert len(logs) == 1 and len(logs[0].read_text().splitlines()) == 1
    assert not (tmp_path / "run" / "ris_refcoco_unc_val.json").exists()

    done = []

    def counting(self, key, prefetcher):
        done.append(key)
        return original(self, key, prefetcher)

    monkeypatch.setattr(RISEvaluator, "process", counting)
    resumed = _evaluate(tiny_model, roots, tmp_path / "run")
    assert done == ["2"]  # only the image not finished before
    assert resumed["bytes"] == reference
    # other settings never reuse that log: a different seed starts from scratch
    monkeypatch.setattr(RISEvaluator, "process", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        _evaluate(tiny_model, roots, tmp_path / "run2")
    done.clear()
    monkeypatch.setattr(RISEvaluator, "process", counting)
    _evaluate(tiny_model, roots, tmp_path / "run2", {"seed": 1})
    assert done == ["1", "2"]


# --------------------------------------------------------------------------- bad input
def test_missing_proposals_stop_with_path_or_are_skipped_and_listed(roots, tmp_path):
    (roots["proposals"] / "COCO_train2014_000000000002.json").unlink()
    with pytest.raises(
        MissingFileError,
        match=r"(?s)1 file\(s\).*proposals: .*COCO_train2014_000000000002\.json"
        r".*regionvlm\.proposals",
    ):
        _evaluate(FakeModel(), roots, tmp_path / "a")
    out = _evaluate(FakeModel(), roots, tmp_path / "b", skip_missing=True)
    assert [r["ref_id"] for r in out["results"]["queries"]] == [10, 10, 11]
    skipped = out["results"]["skipped"]
    assert [(s["ref_id"], s["sent_id"]) for s in skipped] == [(12, 120)]
    assert "COCO_train2014_000000000002.json" in skipped[0]["reason"]
    assert out["metrics"]["refcoco_unc_val/num_skipped"] == 1 and out["metrics"]["refcoco_unc_val/num_queries"] == 3


def test_missing_or_unreadable_image(roots, tmp_path):
    (roots["image_root"] / IMAGES[1][0]).unlink()
    with pytest.raises(MissingFileError, match=r"(?s)image: .*COCO_train2014_000000000001\.jpg.*image_root"):
        _evaluate(FakeModel(), roots, tmp_path / "a")
    (roots["image_root"] / IMAGES[1][0]).write_bytes(b"not an image")
    with pytest.raises(InputError, match=r"image 1 '.*000000000001\.jpg' is not an image that PIL can read"):
        _evaluate(FakeModel(), roots, tmp_path / "b")
    out = _evaluate(FakeModel(), roots, tmp_path / "c", skip_missing=True)
    assert out["metrics"]["refcoco_unc_val/num_skipped"] == 3
    assert [r["ref_id"] for r in out["results"]["queries"]] == [12]


@pytest.mark.parametrize("mode", ["points", "blur"])
def test_an_image_of_another_size_than_instances_json_is_refused(roots, tmp_path, mode, request):
    """The ground truth and the proposals are at the size instances.json records; an image of
    another size (even one that only normalized points would survive) is refused, or skipped
    and listed under skip_missing."""
    from PIL import Image

    model = FakeModel() if mode == "points" else request.getfixturevalue("tiny_model")
    Image.new("RGB", (32, 24)).save(roots["image_root"] / IMAGES[2][0])  # instances.json: 64x48
    with pytest.raises(
        InputError,
        match=r"COCO_train2014_000000000002\.jpg' is 32x24 pixels but '.*instances\.json' \(image 2\) says 64x48",
    ):
        _evaluate(model, roots, tmp_path / "a", {"region_prompt": mode})
    out = _evaluate(model, roots, tmp_path / "b", {"region_prompt": mode}, skip_missing=True)
    assert out["metrics"]["refcoco_unc_val/num_queries"] == 3 and out["metrics"]["refcoco_unc_val/num_skipped"] == 1


def test_empty_sentence_after_text_processing(tmp_path):
    roots = write_refer_fixture(tmp_path / "r", sentences={120: "..."})
    with pytest.raises(InputError, match=r"sentence 120 of ref 12 \('\.\.\.'\) is empty after text processing"):
        _evaluate(FakeModel(), roots, tmp_path / "a")
    out = _evaluate(FakeModel(), roots, tmp_path / "b", skip_missing=True)
    assert [(s["ref_id"], s["sent_id"]) for s in out["results"]["skipped"]] == [(12, 120)]


def test_no_candidate_scores_iou_zero_or_stops(roots, tmp_path):
    tiny = rect(48, 64, 20, 22, 20, 22)  # 9 px < 1 % of 48x64
    save_image_proposals(roots["proposals"], IMAGES[2][0], [tiny], [0.5])
    out = _evaluate(FakeModel(), roots, tmp_path / "a")
    last = out["results"]["queries"][3]
    assert last["chosen"] is None and last["candidates"] == [] and last["iou"] == 0.0
    assert (last["intersection"], last["union"]) == (0, 640)  # the ground truth still counts in sum(U)
    assert out["results"]["no_candidate"] == [{"ref_id": 12, "sent_id": 120, "image_id": 2}]
    assert out["metrics"]["refcoco_unc_val/num_no_candidate"] == 1
    with pytest.raises(InputError, match=r"image 2: none of the 1 proposals .* survives filtering"):
        _evaluate(FakeModel(), roots, tmp_path / "b", {"on_no_candidate": "error"})


def test_fallback_is_used_and_reported(roots, tmp_path):
    border = [rect(48, 64, 0, 20, 0, 40), rect(48, 64, 27, 47, 30, 63)]  # both hug a border
    save_image_proposals(roots["proposals"], IMAGES[2][0], border, [0.5, 0.4])
    last = _evaluate(FakeModel(), roots, tmp_path / "a")["results"]["queries"][3]
    assert last["fallback"] and last["candidates"] == [0, 1] and last["chosen"] == 1


def test_bad_settings_and_datasets(roots, tmp_path):
    with pytest.raises(ConfigError, match=r"`run.protocol` must be one of \['fast', 'official'\]"):
        RISSettings.from_run_cfg({"protocol": "quick"})
    with pytest.raises(
        ConfigError,
        match=r"`run.region_prompt` must be one of \['points', 'empty', 'box', 'crop', "
        r"'blur', 'circle'\], got 'glow'",
    ):
        RISSettings.from_run_cfg({"region_prompt": "glow"})
    assert RISSettings.from_run_cfg({"region_prompt": "circle"}).region_prompt == "circle"
    with pytest.raises(ConfigError, match="`run.repeats` must be >= 1"):
        RISSettings.from_run_cfg({"repeats": 0})
    with pytest.raises(ConfigError, match="`run.seed` must be an integer"):
        RISSettings.from_run_cfg({"seed": "abc"})
    with pytest.raises(ConfigError, match=r"`run.thresold` \(did you mean `threshold`\?\)"):
        RISSettings.from_run_cfg({"thresold": 0.1})
    assert RISSettings.from_run_cfg({}) == RISSettings()
    with pytest.raises(ConfigError, match="scores RISDataset datasets"):
        RISTask().evaluate(FakeModel(), {"vqa": {"val": [1, 2]}}, {}, tmp_path)


def test_visualize_writes_overlays(roots, tmp_path):
    _evaluate(FakeModel(), roots, tmp_path / "v", {"visualize": 2})
    pngs = sorted((tmp_path / "v" / "ris_refcoco_unc_val_vis").glob("*.png"))
    assert [p.name for p in pngs] == ["q00000_ref10_sent100.png", "q00001_ref10_sent101.png"]
    from PIL import Image

    with Image.open(pngs[0]) as im:
        assert im.size[0] == 56 and im.size[1] > 40


# --------------------------------------------------------------------------- command line
def test_eval_ris_flags_build_the_config():
    import eval_RIS

    data = eval_RIS.build_user_config(
        eval_RIS.parse_args(
            [
                "--dataset_name",
                "refcocog",
                "--split",
                "test",
                "--points",
                "8",
                "--threshold",
                "0.5",
                "--seed",
                "3",
                "--region-prompt",
                "crop",
            ]
        )
    )
    assert list(data["datasets"]) == ["refcocog"]
    ds = data["datasets"]["refcocog"]
    assert ds["dataset_name"] == "refcocog" and ds["split"] == "test" and "splitBy" not in ds
    assert ds["data_root"].endswith("/refer")  # paths kept from the YAML
    assert data["run"]["num_points"] == 8 and data["run"]["threshold"] == 0.5 and data["run"]["seed"] == 3
    assert data["run"]["small_threshold"] == 0.04 and data["run"]["task"] == "ris"
    assert data["run"]["region_prompt"] == "crop"
    syn = eval_RIS.build_user_config(eval_RIS.parse_args(["--dataset_name", "synthetic", "--world", "W"]))
    assert syn["datasets"] == {
        "ris_synthetic": {
            "dataset_name": "synthetic",
            "world": "W",
            "split": "val",
            "skip_missing": False,
            "gt_mask": "official",
        }
    }
    with pytest.raises(ConfigError, match="--world applies to --dataset_name synthetic"):
        eval_RIS.build_user_config(eval_RIS.parse_args(["--world", "W"]))


def test_eval_ris_and_train_py_run_the_same_task_on_the_synthetic_world(tmp_path, capsys, tiny_model):
    import eval_RIS
    import train

    world = tmp_path / "world"
    write_refer_fixture(
        world / "refer", dataset="synthetic", image_dir=world / "images", proposal_dir=world / "proposals"
    )
    ckpt = tmp_path / "tiny.pth"
    torch.save({"model": tiny_model.trainable_state_dict()}, ckpt)
    out = tmp_path / "out"
    metrics = eval_RIS.main(
        [
            "--dataset_name",
            "synthetic",
            "--world",
            str(world),
            "--model-type",
            "tiny",
            "--checkpoint",
            str(ckpt),
            "--device",
            "cpu",
            "--out",
            str(out),
            "--visualize",
            "1",
            "--options",
            "run.prefetch=0",
        ]
    )
    printed = capsys.readouterr().out
    results = json.loads((out / "ris_synthetic_unc_val.json").read_text())
    assert f"synthetic_unc_val/oIoU: {round(metrics['synthetic_unc_val/oIoU'], 4)}" in printed
    assert "synthetic_unc_val/mIoU:" in printed
    assert results["metrics"]["num_queries"] == 4 and results["settings"]["repeats"] == 5
    assert results["data"]["dataset_name"] == "synthetic"
    assert len(list((out / "ris_synthetic_unc_val_vis").glob("*.png"))) == 1

    # train.py with the equivalent YAML runs the same task code: byte-identical results
    yaml = tmp_path / "ris_synthetic.yaml"
    yaml.write_text(
        f"model: {{arch: regionvlm_t5, model_type: tiny, checkpoint: '{ckpt}'}}\n"
        f"datasets: {{ris_synthetic: {{world: '{world}', split: val}}}}\n"
        f"run: {{task: ris, evaluate: true, device: cpu, output_dir: '{tmp_path / 'trainer'}', seed: 42}}\n"
    )
    train.main(["--cfg-path", str(yaml)])
    assert (tmp_path / "trainer" / "ris_synthetic_unc_val.json").read_bytes() == (
        out / "ris_synthetic_unc_val.json"
    ).read_bytes()


def test_eval_ris_rejects_a_checkpoint_of_another_architecture(tmp_path, tiny_model):
    import eval_RIS
    from regionvlm.common.errors import CheckpointError

    world = tmp_path / "world"
    write_refer_fixture(
        world / "refer", dataset="synthetic", image_dir=world / "images", proposal_dir=world / "proposals"
    )
    state = {k: v for k, v in tiny_model.trainable_state_dict().items() if k.startswith(("t5_proj", "query"))}
    state["t5_proj.weight"] = torch.zeros(2048, 768)  # the flant5xl shape
    torch.save({"model": state}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="t5_proj.weight"):
        eval_RIS.main(
            [
                "--dataset_name",
                "synthetic",
                "--world",
                str(world),
                "--model-type",
                "tiny",
                "--checkpoint",
                str(tmp_path / "other.pth"),
                "--device",
                "cpu",
                "--out",
                str(tmp_path / "o"),
            ]
        )


# --------------------------------------------------------------------------- benchmark
@pytest.mark.slow
def test_benchmark_reports_a_line_per_mode_and_the_protocols_agree(tmp_path, capsys):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_ris.py"
    spec = importlib.util.spec_from_file_location("bench_ris", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(
        [
            "--preset",
            "tiny",
            "--device",
            "cpu",
            "--modes",
            "box,blur",
            "--images",
            "1",
            "--sentences",
            "2",
            "--masks",
            "3",
            "--height",
            "60",
            "--width",
            "80",
            "--threads",
            "1",
            "--json",
            str(tmp_path / "bench.json"),
        ]
    )
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[2:]] == ["box", "blur"]
    assert json.loads((tmp_path / "bench.json").read_text())["modes"].keys() == {"box", "blur"}
    for mode, passes in (("box", 5), ("blur", 1)):
        m = result["modes"][mode]
        assert m["passes_per_mask"] == passes and m["same_argmin"] == "2/2" and m["max_abs_score_diff"] < 1e-5
        assert m["fast_s_per_sentence"] > 0 and m["official_s_per_sentence"] > 0
    with pytest.raises(SystemExit):
        bench.main(["--modes", "points,glow"])
