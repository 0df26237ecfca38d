"""Fine-tuning on your own region captions: the ``region_captions`` builder (JSONL and COCO with
captions; blank captions skipped and counted), its held-out split as a caption-task dataset,
mixing with Localized Narratives, and the runner's validation on ``valid_splits`` keeping the
best checkpoint (through ``train.py``, resumable)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from regionvlm.common.errors import ConfigError, InputError
from regionvlm.common.registry import registry
from regionvlm.datasets.protocol import CaptionEvalDataset
from regionvlm.datasets.region_files import crop_region, region_extent
from regionvlm.datasets.transforms import sample_crop
from regionvlm.quickstart import bundled_checkpoint
from regionvlm.region import Region
from regionvlm.runners.validation import Validator
from regionvlm.synthetic.world import write_world

REPO = Path(__file__).resolve().parents[1]
CFG = REPO / "configs" / "blip2" / "train" / "finetune_regions.yaml"
PINK = {"pink": (255, 110, 190)}


@pytest.fixture(scope="module")
def variant(tmp_path_factory) -> Path:
    """A world variant with a colour word the bundled checkpoint never saw."""
    root = tmp_path_factory.mktemp("variant")
    write_world(root, num_train=10, num_val=4, num_test=0, seed=5, extra_colours=PINK)
    return root


def build(section, image_size=64, num_points=10, seed=7):
    return registry.get_builder_class("region_captions")(
        section, image_size=image_size, num_points=num_points, seed=seed
    ).build_datasets()


def regions_file(variant: Path, split: str) -> str:
    return str(variant / "regions" / f"synthetic_{split}.jsonl")


def test_world_variant_adds_the_colour_and_leaves_the_default_world_alone(variant, tmp_path):
    summary = json.loads((variant / "world.json").read_text())
    assert summary["extra_colours"] == {"pink": [255, 110, 190]}
    captions = [json.loads(x)["caption"] for x in Path(regions_file(variant, "train")).read_text().splitlines()]
    assert any("pink" in c for c in captions)
    plain = tmp_path / "plain"
    write_world(plain, num_train=0, num_val=0, num_test=3, seed=0)
    refs = [json.loads(x) for x in (plain / "regions" / "synthetic_test.jsonl").read_text().splitlines()]
    instances = json.loads((plain / "refer" / "synthetic" / "instances.json").read_text())
    assert [r["id"] for r in refs] == [a["id"] for a in instances["annotations"]]
    assert [r["region"]["rle"] for r in refs] == [a["segmentation"] for a in instances["annotations"]]
    assert not any("pink" in r["caption"] for r in refs) and "extra_colours" not in json.loads(
        (plain / "world.json").read_text()
    )


def test_builder_makes_train_and_val_splits_and_skips_blank_captions(variant, tmp_path, capsys):
    lines = Path(regions_file(variant, "train")).read_text().splitlines()
    entries = [json.loads(x) for x in lines[:8]]
    entries[1]["caption"] = ""
    entries[2]["caption"] = "   "
    entries[3]["caption"] = None
    del entries[4]["caption"]
    own = tmp_path / "train.jsonl"
    own.write_text("".join(json.dumps(e) + "\n" for e in entries))
    datasets = build(
        {"ann_paths": str(own), "val_ann_paths": regions_file(variant, "val"), "image_root": str(variant / "images")}
    )
    train_ds, val = datasets["train"], datasets["val"]
    assert len(train_ds) == 4 and train_ds.uncaptioned == 4
    assert "4 region(s) without a caption" in capsys.readouterr().out
    assert isinstance(val, CaptionEvalDataset) and val.eval_name == "region_captions" and val.split == "val"
    item = train_ds[0]
    assert item["text_output"] == entries[0]["caption"] and item["text_input"].startswith("[")
    assert item["image"].shape == (3, 64, 64)
    assert train_ds[0]["text_input"] == item["text_input"]  # per-item seeded
    train_ds.set_epoch(1)
    assert train_ds[0]["text_input"] != item["text_input"]  # another epoch, another draw
    pairs = build(
        {"ann_paths": regions_file(variant, "train"), "image_root": str(variant / "images"), "samples_per_image": 2}
    )["train"]
    two = pairs[0]
    assert len(two["text_input"]) == 2 and len(set(two["ids"])) == 2  # two regions of one image, one crop
    batch = pairs.collater([pairs[0], pairs[1]])
    assert batch["image"].shape[0] == 2 and batch["image_index"].tolist() == [0, 0, 1, 1]
    units = val.caption_units(4)
    batch = val.load_captions(units[0][1])
    assert len(batch.ids) <= 4 and all(isinstance(r, Region) for r in batch.regions)
    assert batch.images.shape[0] == len(set(batch.image_index))  # each image once


def test_bad_lines_stop_the_build_or_are_skipped(variant, tmp_path):
    lines = Path(regions_file(variant, "train")).read_text().splitlines()[:4]
    lines.insert(2, json.dumps({"image": "nope.png", "caption": "x", "id": "nope"}))
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    section = {"ann_paths": str(bad), "image_root": str(variant / "images")}
    with pytest.raises(InputError, match=r"1 bad line in .*\n  line 3: image 'nope.png' not found"):
        build(section)
    assert len(build({**section, "on_error": "skip"})["train"]) == 4
    with pytest.raises(ConfigError, match="needs `ann_paths`"):
        build({"image_root": "x"})


def test_coco_instances_with_captions_train(variant, tmp_path):
    instances = json.loads((variant / "refer" / "synthetic" / "instances.json").read_text())
    by_id = {
        json.loads(x)["id"]: json.loads(x)["caption"]
        for x in Path(regions_file(variant, "train")).read_text().splitlines()
    }
    train_anns = [a for a in instances["annotations"] if a["id"] in by_id]
    for a in train_anns:
        a["caption"] = by_id[a["id"]]
    train_anns[0]["caption"] = " "
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({**instances, "annotations": train_anns}))
    dataset = build({"ann_paths": str(coco), "image_root": str(variant / "images"), "coco_region": "bbox"})["train"]
    assert len(dataset) == len(train_anns) - 1 and dataset.uncaptioned == 1
    assert {r.kind for r in dataset.records} == {"box"}
    assert dataset[0]["text_output"] == train_anns[1]["caption"]


def test_the_crop_keeps_every_region_inside():
    rng = np.random.default_rng(0)
    mask = np.zeros((40, 50), dtype=bool)
    mask[10:25, 20:30] = True
    regions = [
        Region("mask", mask),
        Region.from_box((10, 5, 40, 30), image_size=(50, 40)),
        Region.from_points([[5, 5], [45, 35]], image_size=(50, 40)),
    ]
    for _ in range(20):
        crop = sample_crop(np.concatenate([region_extent(r) for r in regions]), rng, 0.1)
        cropped = [crop_region(r, crop) for r in regions]
        assert cropped[0].data.sum() == mask.sum()  # every mask pixel survives the pixel crop
        assert np.all((cropped[1].data >= 0) & (cropped[1].data <= 1))
        x0, y0, x1, y1 = crop.pixel_box(50, 40)
        assert cropped[0].data.shape == (y1 - y0, x1 - x0)
    assert region_extent(Region.whole_image()) is None


def test_region_files_mix_with_localized_narratives(variant, tmp_path):
    from tiny_training import write_train_world

    ln_world = write_train_world(tmp_path / "ln", num_train=4)
    section = {
        "region_ann": str(ln_world / "annotations" / "ln_synthetic_train.json"),
        "region_files": regions_file(variant, "train"),
        "region_files_image_root": str(variant / "images"),
        "p_region": 1.0,
        "epoch_length": 40,
    }
    builder = registry.get_builder_class("regionvlm_mix")
    mix = builder(section, image_size=64, num_points=10, seed=3).build_datasets()["train"]
    assert len(mix.region) == 4 + len(mix.region.sources[1])
    sources = {mix[i]["source"] for i in range(40)}
    assert sources == {"region", "region_file"}
    only_files = builder({**section, "p_region_files": 1.0}, image_size=64, num_points=10, seed=3).build_datasets()
    assert {only_files["train"][i]["source"] for i in range(20)} == {"region_file"}


def test_validator_settings_and_metric_names(variant):
    datasets = build(
        {
            "ann_paths": regions_file(variant, "train"),
            "val_ann_paths": regions_file(variant, "val"),
            "image_root": str(variant / "images"),
        }
    )
    task = registry.get_task_class("region_captioning")()
    from regionvlm.runners.runner_base import RunnerSettings

    task.settings = task.parse_settings({})

    def validator(**run):
        return Validator(task, {"region_captions": datasets}, RunnerSettings.parse(run), Path("."))

    v = validator(valid_splits=["val"], best_metric="CIDEr")
    assert v.value({"region_captions_val/CIDEr": 0.5, "other_val/CIDEr": 1.5}) == 1.0  # mean over the splits
    assert v.value({"region_captions_val/CIDEr": 0.5, "CIDEr": 3.0}) == 3.0  # a full key wins
    with pytest.raises(ConfigError, match=r"run.best_metric 'CIDEr' .* choose one of \['a/exact_match'\]"):
        v.value({"a/exact_match": 1.0})
    assert v.due(5, epoch_end=True) and not validator().enabled
    every = validator(valid_splits=["val"], valid_every_steps=3)
    assert every.due(3, False) and not every.due(4, False)
    with pytest.raises(ConfigError, match="valid_splits=\\['test'\\]"):
        validator(valid_splits=["test"])
    with pytest.raises(ConfigError, match="needs run.valid_splits"):
        validator(valid_every_steps=3)


# ------------------------------------------------------------------ train.py end to end
def options(variant: Path, out: Path, *extra: str):
    return [
        "--cfg-path",
        str(CFG),
        "--options",
        "model.model_type=tiny",
        f"model.checkpoint={bundled_checkpoint()}",
        "model.freeze_t5=false",  # the tiny T5 learnt only the default world's words (docs/finetuning.md)
        f"datasets.region_captions.ann_paths={regions_file(variant, 'train')}",
        f"datasets.region_captions.val_ann_paths={regions_file(variant, 'val')}",
        f"datasets.region_captions.image_root={variant / 'images'}",
        "run.device=cpu",
        "run.num_workers=0",
        "run.batch_size_train=8",
        "run.max_epoch=2",
        "run.init_lr=1e-3",
        "run.warmup_steps=2",
        "run.valid_every_steps=2",
        "run.batch_size_eval=32",
        "run.skip_metrics=[METEOR]",
        f"run.output_dir={out}",
        *extra,
    ]


@pytest.mark.skipif(shutil.which("java") is None, reason="CIDEr's tokenizer runs Java")
def test_train_validates_keeps_the_best_checkpoint_and_resumes_identically(variant, tmp_path):
    summary = train.main(options(variant, tmp_path / "full"))
    out = tmp_path / "full"
    rows = [json.loads(x) for x in (out / "valid.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 3, 4, 6]  # every 2 updates and at both epoch ends (3 updates each)
    assert all("region_captions_val/CIDEr" in r["metrics"] for r in rows)
    best = max(rows, key=lambda r: r["value"])  # first of the maxima: only a strictly better value replaces
    first_best = next(r for r in rows if r["value"] == best["value"])
    saved = json.loads((out / "best.json").read_text())
    assert saved["step"] == first_best["step"] and saved["value"] == pytest.approx(first_best["value"])
    assert summary["best"] == saved
    state = torch.load(out / "checkpoint_best.pth", weights_only=True)
    assert state["step"] == saved["step"] and state["validation"]["best"] == saved
    assert (out / "valid" / f"step_{saved['step']}" / "region_captioning_region_captions_val.json").is_file()
    assert [r["is_best"] for r in rows].count(True) >= 1

    # the tiny model's fine-tuned weights as one file: the bundled ones under the trained ones
    from regionvlm import load_model
    from regionvlm.examples.finetune_new_word import merge_weights

    merged = merge_weights(bundled_checkpoint(), out / "checkpoint_best.pth", tmp_path / "merged.pth")
    model = load_model("regionvlm_t5", "tiny", checkpoint=str(merged)).state_dict()
    bundled = torch.load(bundled_checkpoint(), weights_only=True)["model"]
    assert all(torch.equal(model[k], v) for k, v in state["model"].items())  # trained: ViT frozen, rest trained
    assert "visual_encoder.pos_embed" not in state["model"]
    assert torch.equal(model["visual_encoder.pos_embed"], bundled["visual_encoder.pos_embed"].float())

    # killed after 3 updates and resumed: same validations, same best, same weights
    stopped = train.main(options(variant, tmp_path / "killed", "run.stop_after_steps=3"))
    assert stopped == {"stopped_at_step": 3}
    train.main(options(variant, tmp_path / "killed", "run.resume_ckpt_path=latest"))
    again = [json.loads(x) for x in (tmp_path / "killed" / "valid.jsonl").read_text().splitlines()]
    assert [(r["step"], r["value"], r["is_best"]) for r in again] == [
        (r["step"], r["value"], r["is_best"]) for r in rows
    ]
    assert json.loads((tmp_path / "killed" / "best.json").read_text()) == saved
    a = torch.load(out / "checkpoint_latest.pth", weights_only=True)["model"]
    b = torch.load(tmp_path / "killed" / "checkpoint_latest.pth", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_evaluate_only_scores_the_held_out_file(variant, tmp_path):
    metrics = train.main(options(variant, tmp_path / "eval", "run.evaluate=true", "run.skip_metrics=[METEOR,SPICE]"))
    assert "region_captions_val/exact_match" in metrics and metrics["region_captions_val/num_captions"] > 0
