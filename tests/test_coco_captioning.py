"""Zero-shot COCO captioning through the registered task, on a fixture in the LAVIS layout:
empty region text, the paper's decoding settings, LAVIS's result file, the caption metrics
and agg_metrics = CIDEr + BLEU-4; a killed run resumes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import train
from regionvlm.common.config import Config
from regionvlm.common.errors import ConfigError, InputError, MissingFileError

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "blip2" / "eval" / "caption_coco_flant5xl_eval.yaml"
IDS = (42, 73, 391895)
pytestmark = pytest.mark.skipif(
    shutil.which("java") is None,
    reason="the caption metrics' PTB tokenizer needs Java (apt-get install default-jre-headless)",
)


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    split, gt = [], {"images": [], "annotations": []}
    for n, image_id in enumerate(IDS):
        name = f"val2014/COCO_val2014_{image_id:012d}.jpg"
        (root / "coco" / "images" / "val2014").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(root / "coco" / "images" / name)
        captions = [f"a photo of thing {n}", f"something number {n} in a room"]
        split.append({"image": name, "caption": captions})
        gt["images"].append({"id": image_id})
        gt["annotations"] += [
            {"image_id": image_id, "caption": c, "id": 10 * image_id + k} for k, c in enumerate(captions)
        ]
    (root / "coco" / "annotations").mkdir(parents=True)
    (root / "coco" / "annotations" / "coco_karpathy_test.json").write_text(json.dumps(split))
    (root / "coco_gt").mkdir()
    (root / "coco_gt" / "coco_karpathy_test_gt.json").write_text(json.dumps(gt))
    return root


def options(data: Path, out: Path, *extra: str):
    return [
        "--cfg-path",
        str(CONFIG),
        "--options",
        "model.model_type=tiny",
        "run.device=cpu",
        "datasets.coco_caption.vis_processor.eval.image_size=64",
        f"run.output_dir={out}",
        f"datasets.coco_caption.build_info.annotations.test.storage={data}/coco/annotations/coco_karpathy_test.json",
        f"datasets.coco_caption.build_info.annotations.test.gt={data}/coco_gt/coco_karpathy_test_gt.json",
        f"datasets.coco_caption.build_info.images.storage={data}/coco/images",
        "run.batch_size_eval=2",
        "run.skip_metrics=[METEOR]",
        *extra,
    ]


@pytest.mark.slow
def test_captions_every_image_with_empty_region_text_and_scores_them(data, tmp_path, monkeypatch):
    from regionvlm.models.regionvlm_t5 import RegionVLMT5

    seen = {"texts": [], "generation": []}
    region_queries, generate = RegionVLMT5.region_queries, RegionVLMT5.generate_from_embeds

    def spy_queries(self, image_embeds, region_texts=None):
        seen["texts"].append(list(region_texts))
        return region_queries(self, image_embeds, region_texts)

    def spy_generate(self, embeds, mask, generation=None):
        seen["generation"].append(generation)
        return generate(self, embeds, mask, generation)

    monkeypatch.setattr(RegionVLMT5, "region_queries", spy_queries)
    monkeypatch.setattr(RegionVLMT5, "generate_from_embeds", spy_generate)
    out = tmp_path / "out"
    metrics = train.main(options(data, out))
    assert seen["texts"] == [["", ""], [""]]  # batches of 2: the empty region text, the model's global path
    g = seen["generation"][0]
    assert (g.num_beams, g.max_len, g.min_len) == (3, 20, 5)
    results = json.loads((out / "captioning_coco_caption_test_captions.json").read_text())
    assert sorted(r["image_id"] for r in results) == sorted(IDS) and all(isinstance(r["caption"], str) for r in results)
    for key in ("Bleu_1", "Bleu_4", "ROUGE_L", "CIDEr"):
        assert f"coco_caption_test/{key}" in metrics
    assert metrics["agg_metrics"] == pytest.approx(
        metrics["coco_caption_test/CIDEr"] + metrics["coco_caption_test/Bleu_4"]
    )
    written = json.loads((out / "captioning_coco_caption_test.json").read_text())
    assert written["skipped_metrics"]["METEOR"] == "skipped on request" and "SPICE" in written["skipped_metrics"]
    assert [c["region_text"] for c in written["captions"]] == ["", "", ""]
    assert not list(out.glob("*.partial.*"))


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_captions(data, tmp_path, monkeypatch):
    from regionvlm.models.regionvlm_t5 import RegionVLMT5

    generate, calls = RegionVLMT5.generate_from_embeds, {"n": 0}

    def dying(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(RegionVLMT5, "generate_from_embeds", dying)
    with pytest.raises(KeyboardInterrupt):
        train.main(options(data, tmp_path / "k"))
    assert len(list((tmp_path / "k").glob("*.partial.rank0.jsonl"))) == 1
    calls["n"] = -100
    train.main(options(data, tmp_path / "k"))
    assert calls["n"] == -99  # only the unfinished batch ran again
    monkeypatch.setattr(RegionVLMT5, "generate_from_embeds", generate)
    train.main(options(data, tmp_path / "full"))
    assert (tmp_path / "k" / "captioning_coco_caption_test.json").read_bytes() == (
        tmp_path / "full" / "captioning_coco_caption_test.json"
    ).read_bytes()


def test_bad_inputs_stop_before_captioning(data, tmp_path):
    with pytest.raises(ConfigError, match=r"`run.skip_metrics` can only name \['METEOR', 'SPICE'\]"):
        Config(CONFIG, options(data, tmp_path, "run.skip_metrics=[CIDEr]")[3:])
    (data / "coco" / "images" / "val2014" / "COCO_val2014_000000000042.jpg").unlink()
    with pytest.raises(MissingFileError, match="1 image\\(s\\) of coco_caption test are missing"):
        train.main(options(data, tmp_path / "x"))
    gt = json.loads((data / "coco_gt" / "coco_karpathy_test_gt.json").read_text())
    gt["images"].append({"id": 5})
    gt["annotations"].append({"image_id": 5, "caption": "x", "id": 5})
    (data / "coco_gt" / "coco_karpathy_test_gt.json").write_text(json.dumps(gt))
    with pytest.raises(InputError, match="do not list the same images"):
        train.main(options(data, tmp_path / "y"))
