"""Region crop, K-of-20 selection, caption datasets, the mix, the collater and the builders."""

from __future__ import annotations

import io
import json
import random
import re
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
import torch
from PIL import Image

from regionvlm.common.errors import ConfigError, InputError, MissingFileError
from regionvlm.common.registry import registry
from regionvlm.datasets import transforms as T
from regionvlm.datasets.builders import caption_builders  # noqa: F401  (registers the builders)
from regionvlm.datasets.caption_datasets import (
    CocoCaptionDataset,
    MixedCaptionDataset,
    RegionCaptionDataset,
    WebCaptionDataset,
    collate_caption_batch,
    region_prob_schedule,
    sample_rng,
)
from regionvlm.datasets.region_annotations import RegionAnnotations
from regionvlm.processors import BlipCaptionProcessor, BlipImageEvalProcessor

PROMPT = re.compile(r"^\[\d{1,3} \d{1,3}\]( \[\d{1,3} \d{1,3}\]){9}$")


# --------------------------------------------------------------------------- the crop
def test_crop_keeps_every_point_inside_for_many_seeds():
    for seed in range(400):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(1, 30))
        lo, hi = sorted(rng.uniform(-0.05, 1.05, size=2))
        points = rng.uniform(lo, hi, size=(n, 2))
        w, h = int(rng.integers(1, 700)), int(rng.integers(1, 700))
        crop = T.sample_crop(points, rng, 0.1)
        for f in (crop.left, crop.right, crop.top, crop.bottom):
            assert 0.0 <= f <= 0.1
        new = crop.apply_points(points)
        assert np.all((new >= 0.0) & (new <= 1.0))
        clipped = np.clip(points, 0, 1)
        # the re-normalized point is the same place in the original image
        np.testing.assert_allclose(crop.left + new[:, 0] * (1 - crop.left - crop.right), clipped[:, 0], atol=1e-12)
        np.testing.assert_allclose(crop.top + new[:, 1] * (1 - crop.top - crop.bottom), clipped[:, 1], atol=1e-12)
        x0, y0, x1, y1 = crop.pixel_box(w, h)
        px, py = clipped[:, 0] * w, clipped[:, 1] * h
        assert np.all((px >= x0) & (px <= x1) & (py >= y0) & (py <= y1))  # in the kept pixels too
        assert 0 < x1 - x0 <= w and 0 < y1 - y0 <= h


def test_crop_follows_the_official_draw_order_and_pixel_rounding():
    points = np.array([[0.05, 0.5], [0.7, 0.95], [0.3, 0.2]])
    image = Image.new("RGB", (200, 100))
    cropped, new = T.region_preserving_crop(image, points, np.random.default_rng(7), 0.1)
    draws = np.random.default_rng(7)
    wd1, wd2 = draws.uniform(0, 0.05), draws.uniform(0, 0.1)  # room: min(0.1, 0.05), min(0.1, 1 - 0.7)
    hd1, hd2 = draws.uniform(0, 0.1), draws.uniform(0, 0.05)  # min(0.1, 0.2), min(0.1, 1 - 0.95)
    expected = np.stack([(points[:, 0] - wd1) / (1 - wd1 - wd2), (points[:, 1] - hd1) / (1 - hd1 - hd2)], 1)
    np.testing.assert_allclose(new, expected)
    assert cropped.size == (200 - int(wd1 * 200) - int(wd2 * 200), 100 - int(hd1 * 100) - int(hd2 * 100))
    same, pts = T.region_preserving_crop(image, points, np.random.default_rng(0), 0.0)
    assert same.size == (200, 100) and np.array_equal(pts, points)
    with pytest.raises(InputError):
        T.sample_crop(np.array([[np.nan, 0.1]]), np.random.default_rng(0))


def test_select_points_k_of_20_in_order():
    pts = np.stack([np.arange(20) / 20, np.zeros(20)], 1)
    counts = np.zeros(20)
    for seed in range(2000):
        sel = T.select_points(pts, 10, np.random.default_rng(seed))
        idx = np.rint(sel[:, 0] * 20).astype(int)
        assert len(set(idx.tolist())) == 10 and np.all(np.diff(idx) > 0)
        counts[idx] += 1
    assert np.all(np.abs(counts / 2000 - 0.5) < 0.05)  # every point equally likely
    few = T.select_points(pts[:4], 10, np.random.default_rng(0))  # fewer than K: evenly spaced repeats
    assert (np.rint(few[:, 0] * 20).astype(int)).tolist() == [int(3 / 9 * j) for j in range(10)]
    text = T.region_text(pts, 10, np.random.default_rng(1))
    assert PROMPT.match(text)


# --------------------------------------------------------------------------- fixtures
def _save(path: Path, size=(48, 32), colour=(0, 0, 0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _region_ann(tmp_path: Path, n_images: int = 6) -> Path:
    entries = []
    rng = np.random.default_rng(0)
    for i in range(n_images):
        _save(tmp_path / "img" / f"{i}.png", colour=(i * 20, 0, 0))
        chunks = {}
        for c in range(1 + i % 4):
            center = rng.uniform(0.2, 0.8, size=2)
            chunks[f"Object {c} of image {i}."] = np.clip(center + rng.normal(0, 0.05, (20, 2)), 0, 1).tolist()
        entries.append({"image_path": f"img/{i}.png", "image_id": str(i), "sent_to_points": chunks})
    entries.append({"image_path": "img/none.png", "sent_to_points": {}})  # as in the authors' VG file: skipped
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(entries))
    return path


def _coco_ann(tmp_path: Path) -> Path:
    entries = []
    for i in range(3):
        _save(tmp_path / "coco" / "train2014" / f"COCO_train2014_{i:012d}.jpg", colour=(0, i * 50, 0))
        for c in range(2 if i < 2 else 1):
            entries.append(
                {
                    "image": f"train2014/COCO_train2014_{i:012d}.jpg",
                    "caption": f"Caption {c} of COCO {i}!",
                    "image_id": f"coco_{i}",
                }
            )
    path = tmp_path / "coco_karpathy_train.json"
    path.write_text(json.dumps(entries))
    return path


def _shards(tmp_path: Path) -> List[str]:
    import webdataset as wds

    paths = []
    for s in range(2):
        path = tmp_path / "web" / f"{s:05d}.tar"
        path.parent.mkdir(parents=True, exist_ok=True)
        with wds.TarWriter(str(path)) as sink:
            for k in range(3):
                buf = io.BytesIO()
                Image.new("RGB", (20, 20), (0, 0, 100 + k)).save(buf, format="PNG" if k == 2 else "JPEG")
                sample: Dict[str, Any] = {"__key__": f"s{s}_{k:03d}", ("png" if k == 2 else "jpg"): buf.getvalue()}
                if k == 1:
                    sample["txt"] = f"Web text {s} {k}"
                else:
                    sample["json"] = json.dumps({"caption": f"Web caption {s} {k}"}).encode()
                sink.write(sample)
            sink.write({"__key__": f"s{s}_bad", "json": json.dumps({"caption": "no image"}).encode()})
        paths.append(str(path))
    return paths


def _procs():
    return BlipImageEvalProcessor(image_size=16), BlipCaptionProcessor()


@pytest.fixture
def region_ds(tmp_path):
    vis, txt = _procs()
    return RegionCaptionDataset([str(_region_ann(tmp_path))], vis, txt, seed=5, image_root=str(tmp_path))


def _same(a: Dict[str, Any], b: Dict[str, Any]) -> bool:
    return (
        a["text_input"] == b["text_input"]
        and a["text_output"] == b["text_output"]
        and torch.equal(a["image"], b["image"])
    )


# --------------------------------------------------------------------------- region dataset
def test_region_item_shape_and_texts(region_ds):
    assert len(region_ds) == 6 and region_ds.ann.skipped_empty == 1
    item = region_ds[3]
    assert item["image"].shape == (3, 16, 16) and item["source"] == "region" and item["image_id"] == "3"
    assert PROMPT.match(item["text_input"])
    assert re.fullmatch(r"object [0-3] of image 3", item["text_output"])  # caption processor: lower, no "."


def test_region_items_are_a_function_of_seed_epoch_index(tmp_path, region_ds):
    first = [region_ds[i] for i in range(6)]
    random.seed(123), np.random.seed(123), torch.manual_seed(123)
    state = np.random.get_state()[1].copy()
    again = [region_ds[i] for i in reversed(range(6))][::-1]  # other order, other global seeds
    assert all(_same(a, b) for a, b in zip(first, again))
    assert np.array_equal(np.random.get_state()[1], state)  # global random state untouched
    vis, txt = _procs()
    fresh = RegionCaptionDataset(region_ds.ann, vis, txt, seed=5)
    assert _same(fresh[4], first[4])
    region_ds.set_epoch(1)
    assert any(not _same(region_ds[i], first[i]) for i in range(6))
    region_ds.set_epoch(0)
    assert _same(region_ds[2], first[2])


def test_samples_per_image_and_collater(tmp_path):
    vis, txt = _procs()
    ds = RegionCaptionDataset(
        [str(_region_ann(tmp_path))], vis, txt, samples_per_image=3, seed=1, image_root=str(tmp_path)
    )
    item = ds[3]  # image 3 has 4 chunks: 3 distinct ones
    assert len(item["text_input"]) == 3 and len(set(item["text_output"])) == 3
    assert all(PROMPT.match(t) for t in item["text_input"])
    single = ds.sample(1, sample_rng(1, 0, 1), num_samples=1)
    batch = collate_caption_batch([item, single, ds[0]])  # image 0 has one chunk: repeated 3 times
    assert batch["image"].shape == (3, 3, 16, 16)
    assert batch["image_index"].tolist() == [0, 0, 0, 1, 2, 2, 2]
    assert len(batch["text_input"]) == len(batch["text_output"]) == len(batch["source"]) == 7
    assert batch["text_output"][4:] == ["object 0 of image 0"] * 3
    with pytest.raises(InputError):
        collate_caption_batch([{"image": item["image"], "text_input": ["a", "b"], "text_output": ["c"]}])


def test_dataloader_workers_give_the_same_batches(tmp_path, region_ds):
    kwargs = dict(batch_size=3, shuffle=False, collate_fn=region_ds.collater)
    region_ds.set_epoch(2)
    single = list(torch.utils.data.DataLoader(region_ds, num_workers=0, **kwargs))
    multi = list(torch.utils.data.DataLoader(region_ds, num_workers=2, **kwargs))
    for a, b in zip(single, multi):
        assert a["text_input"] == b["text_input"] and torch.equal(a["image"], b["image"])


def test_region_annotation_errors_name_the_file(tmp_path):
    with pytest.raises(MissingFileError, match=r"nothere\.json.*It should be a JSON list"):
        RegionAnnotations([str(tmp_path / "nothere.json")])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image_path": "a.png", "sent_to_points": {"x": [[0.1, 0.2, 0.3]]}}]))
    with pytest.raises(InputError, match=r"bad\.json entry \[0\] chunk 'x'"):
        RegionAnnotations([str(bad)])
    pixels = tmp_path / "pixels.json"
    pixels.write_text(json.dumps([{"image_path": "a.png", "sent_to_points": {"x": [[120.0, 40.0]] * 20}}]))
    with pytest.raises(InputError, match="normalized"):
        RegionAnnotations([str(pixels)])
    vis, txt = _procs()
    ann = tmp_path / "missing_img.json"
    ann.write_text(json.dumps([{"image_path": "gone.png", "sent_to_points": {"x": [[0.1, 0.2]] * 20}}]))
    with pytest.raises(MissingFileError, match=r"gone\.png.*image_root"):
        RegionCaptionDataset([str(ann)], vis, txt, image_root=str(tmp_path))[0]


# --------------------------------------------------------------------------- global captions
def test_coco_karpathy_captions(tmp_path):
    vis, txt = _procs()
    ds = CocoCaptionDataset(str(_coco_ann(tmp_path)), str(tmp_path / "coco"), vis, txt, seed=0)
    assert len(ds) == 5
    item = ds[2]
    assert item["text_input"] == "" and item["text_output"] == "caption 0 of coco 1" and item["source"] == "coco"
    two = CocoCaptionDataset(str(_coco_ann(tmp_path)), str(tmp_path / "coco"), vis, txt, samples_per_image=2)[2]
    assert two["text_input"] == ["", ""] and two["text_output"] == ["caption 0 of coco 1", "caption 1 of coco 1"]
    lonely = CocoCaptionDataset(str(_coco_ann(tmp_path)), str(tmp_path / "coco"), vis, txt, samples_per_image=2)[4]
    assert lonely["text_output"] == ["caption 0 of coco 2"] * 2


def test_webdataset_shards(tmp_path, capsys):
    vis, txt = _procs()
    shards = _shards(tmp_path)
    ds = WebCaptionDataset(str(tmp_path / "web"), vis, txt, seed=0)
    items = list(ds)
    assert sorted(i["text_output"] for i in items) == sorted(
        [f"web caption {s} {k}" for s in range(2) for k in (0, 2)] + [f"web text {s} 1" for s in range(2)]
    )
    assert all(i["text_input"] == "" and i["image"].shape == (3, 16, 16) for i in items)
    assert ds.stream.skipped == 2 and "no image file" in capsys.readouterr().err
    brace = WebCaptionDataset(str(tmp_path / "web" / "{00000..00001}.tar"), vis, txt, shuffle_buffer=3, seed=1)
    assert sorted(i["text_output"] for i in brace) == sorted(i["text_output"] for i in items)
    assert len(list(WebCaptionDataset(shards[:1], vis, txt))) == 3
    with pytest.raises(MissingFileError, match=r"00009\.tar"):
        WebCaptionDataset(str(tmp_path / "web" / "00009.tar"), vis, txt)


# --------------------------------------------------------------------------- the mix
class _Source:
    """A stand-in sub-dataset that only reports which branch was taken (fast statistics)."""

    def __init__(self, name: str, n: int = 50):
        self.name, self.n = name, n
        self.stream = iter(())

    def __len__(self) -> int:
        return self.n

    def sample(self, index, rng, num_samples=None):
        return {"source": self.name}

    def make_item(self, image, caption, m):
        return {"source": self.name}


class _Web(_Source):
    def __init__(self):
        super().__init__("web")
        self.stream = _Endless()

    def set_epoch(self, epoch):
        pass


class _Endless:
    def __iter__(self):
        while True:
            yield None, "", ""


def _sources(ds: MixedCaptionDataset, n: int) -> Dict[str, int]:
    out = {"region": 0, "coco": 0, "web": 0}
    for i in range(n):
        out[ds[i]["source"]] += 1
    return out


@pytest.mark.slow
def test_official_mixing_ratios_statistically():
    ds = MixedCaptionDataset(_Source("region"), _Source("coco"), _Web(), seed=0, epoch_length=20000)
    counts = _sources(ds, 20000)
    assert abs(counts["region"] / 20000 - 0.6) < 0.0175  # 5 standard deviations
    glob = counts["coco"] + counts["web"]
    assert abs(counts["coco"] / glob - 0.1) < 0.017
    ds.set_epoch(1)
    assert _sources(ds, 20000) != counts  # epochs draw anew


def test_region_probability_schedule_as_curriculum():
    prob = region_prob_schedule(0.6, {0: 1.0, "4": 0.6, 6: 0.3})
    assert [prob(e) for e in range(8)] == [1.0, 1.0, 1.0, 1.0, 0.6, 0.6, 0.3, 0.3]
    assert region_prob_schedule(0.6, {2: 1.0})(0) == 0.6
    ds = MixedCaptionDataset(
        _Source("region"), _Source("coco"), _Web(), region_prob_by_epoch={0: 1.0, 2: 0.6}, seed=3, epoch_length=4000
    )
    assert _sources(ds, 4000)["region"] == 4000
    ds.set_epoch(2)
    assert abs(_sources(ds, 4000)["region"] / 4000 - 0.6) < 0.04
    with pytest.raises(ConfigError):
        region_prob_schedule(0.6, {0: 1.5})


def test_mix_configuration_errors():
    with pytest.raises(ConfigError, match="web_shards"):
        MixedCaptionDataset(_Source("region"), _Source("coco"), None)
    with pytest.raises(ConfigError, match="coco_ann"):
        MixedCaptionDataset(_Source("region"), None, _Web(), p_coco=0.5)
    MixedCaptionDataset(_Source("region"), None, None, p_region=1.0)  # region only: no global source needed
    MixedCaptionDataset(_Source("region"), _Source("coco"), None, p_coco=1.0)


def test_mix_end_to_end_with_real_sources_is_deterministic_except_web(tmp_path):
    vis, txt = _procs()
    region = RegionCaptionDataset([str(_region_ann(tmp_path))], vis, txt, image_root=str(tmp_path))
    coco = CocoCaptionDataset(str(_coco_ann(tmp_path)), str(tmp_path / "coco"), vis, txt)
    web = WebCaptionDataset(_shards(tmp_path), vis, txt, repeat=True)
    ds = MixedCaptionDataset(region, coco, web, p_region=0.4, p_coco=0.5, samples_per_image=2, seed=9, epoch_length=60)
    items = [ds[i] for i in range(60)]
    assert {i["source"] for i in items} == {"region", "coco", "web"}
    for it in items:
        assert len(it["text_input"]) == 2 and it["image"].shape == (3, 16, 16)
        if it["source"] == "region":
            assert all(PROMPT.match(t) for t in it["text_input"])
        else:
            assert it["text_input"] == ["", ""]
    again = MixedCaptionDataset(
        region, coco, web, p_region=0.4, p_coco=0.5, samples_per_image=2, seed=9, epoch_length=60
    )
    for a, b in zip(items, (again[i] for i in range(60))):
        assert a["source"] == b["source"]
        if a["source"] != "web":
            assert _same(a, b)
    batch = collate_caption_batch(items[:4])
    assert batch["image_index"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    import pickle

    pickle.loads(pickle.dumps(ds))  # workers get a copy without the stream


# --------------------------------------------------------------------------- builders
def test_builders_from_yaml_sections(tmp_path):
    region_ann, coco_ann = _region_ann(tmp_path), _coco_ann(tmp_path)
    _shards(tmp_path)
    proc = {"vis_processor": {"train": {"name": "region_image_train", "image_size": 16}}}
    mix = registry.get_class_or_raise("builder", "regionvlm_mix")
    assert mix.default_config_path("default") is None
    ds = mix(
        {
            "region_ann": [str(region_ann)],
            "image_root": str(tmp_path),
            "coco_ann": str(coco_ann),
            "coco_image_root": str(tmp_path / "coco"),
            "web_shards": str(tmp_path / "web"),
            "samples_per_image": 2,
            "seed": 4,
            **proc,
        }
    ).build_datasets()["train"]
    assert isinstance(ds, MixedCaptionDataset) and len(ds) == 6 and ds.p_coco == 0.1
    assert ds.current_region_prob() == 0.6 and ds.web is not None and ds.seed == 4
    assert collate_caption_batch([ds[i] for i in range(3)])["image"].shape == (3, 3, 16, 16)
    curriculum = mix(
        {
            "region_ann": str(region_ann),
            "image_root": str(tmp_path),
            "p_region": 0.6,
            "p_coco": 1.0,
            "coco_ann": str(coco_ann),
            "coco_image_root": str(tmp_path / "coco"),
            "region_prob_by_epoch": {0: 1.0, 3: 0.6},
            **proc,
        }
    ).build_datasets()["train"]
    assert curriculum.current_region_prob() == 1.0 and curriculum.web is None
    ln = registry.get_class_or_raise("builder", "localized_narratives")
    region = ln({"ann_paths": [str(region_ann)], "image_root": str(tmp_path), **proc}).build_datasets()["train"]
    assert PROMPT.match(region[0]["text_input"]) and region.seed == 42
    coco = registry.get_class_or_raise("builder", "coco_karpathy_caption")(
        {"ann_paths": str(coco_ann), "image_root": str(tmp_path / "coco"), **proc}
    ).build_datasets()["train"]
    assert coco[0]["text_output"] == "caption 0 of coco 0"
    web = registry.get_class_or_raise("builder", "webdataset_caption")(
        {"shards": str(tmp_path / "web"), **proc}
    ).build_datasets()["train"]
    assert len(list(web)) == 6
    vg = registry.get_class_or_raise("builder", "visual_genome_regions")
    with pytest.raises(MissingFileError, match=r"datasets\.visual_genome_regions\.ann_paths"):
        vg({**proc}).build_datasets()
    with pytest.raises(MissingFileError, match=r"absent\.json.*It should be a JSON list"):
        mix({"region_ann": str(tmp_path / "absent.json"), **proc}).build_datasets()
    with pytest.raises(ConfigError, match="web_shards"):
        mix(
            {
                "region_ann": str(region_ann),
                "image_root": str(tmp_path),
                "coco_ann": str(coco_ann),
                "coco_image_root": str(tmp_path / "coco"),
                **proc,
            }
        ).build_datasets()
