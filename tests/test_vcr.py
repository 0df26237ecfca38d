"""Zero-shot VCR: loader, object references, prompt layout, answer parsing, both modes, CLI.

Every test writes its own VCR-format fixture (JSONL + per-image metadata JSON + images).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from regionvlm.common.errors import InputError, MissingFileError, RegionVLMError
from regionvlm.data.vcr import object_mask, object_references, read_vcr_jsonl, render_tokens
from regionvlm.datasets.builders.vcr_builder import VCRBuilder
from regionvlm.datasets.vcr_datasets import VCRDataset
from regionvlm.tasks import vcr as vcr_task
from regionvlm.tasks.vcr import (
    VCREvaluator,
    VCRSettings,
    VCRTask,
    answer_index_for_rationale,
    answer_prompt,
    is_correct,
    parse_prediction,
    prompt_segments,
    rationale_prompt,
    score_item,
)

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ fixture
def _square(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def _items():
    """Four items: plain refs, ids >= 10 and multi-object refs, no refs, a box fallback."""
    a = [[[0], "is", "eating", "."], ["He", "sleeps", "."], [[2], "barks", "."], ["Nothing", "."]]
    r = [["Because", [1], "watches", "."], ["It", "is", "late", "."], [[0], "is", "hungry", "."], ["No", "reason", "."]]
    many = [f"obj{i}" for i in range(12)]
    return [
        dict(
            annot_id="val-0",
            objects=["person", "person", "dog"],
            question=["What", "is", [0], "doing", "?"],
            answer_choices=a,
            rationale_choices=r,
            answer_label=0,
            rationale_label=2,
            img="m/a.png",
            size=(48, 32),
            segms=[[_square(2, 2, 20, 20)], [_square(25, 5, 40, 25)], [_square(5, 22, 15, 30)]],
        ),
        dict(
            annot_id="val-1",
            objects=many,
            question=["Why", "is", [11], "near", [1, 10], "?"],
            answer_choices=[[[9], "is", "tired", "."], ["Rain", "."], [[2], "left", "."], ["Nope", "."]],
            rationale_choices=[[[8], "yawns", "."], ["Clouds", "."], [[3], "waves", "."], ["Hm", "."]],
            answer_label=3,
            rationale_label=1,
            img="m/b.png",
            size=(40, 40),
            segms=[[_square(3 * i, 3 * i, 3 * i + 4, 3 * i + 4)] for i in range(12)],
        ),
        dict(
            annot_id="val-2",
            objects=["car"],
            question=["Is", "it", "raining", "?"],
            answer_choices=[["Yes", "."], ["No", "."], ["Maybe", "."], ["Snow", "."]],
            rationale_choices=[["Wet", "."], ["Dry", "."], ["Grey", "."], ["Cold", "."]],
            answer_label=1,
            rationale_label=0,
            img="m/a.png",
            size=(48, 32),
            segms=[[_square(1, 1, 9, 9)]],
        ),
        dict(
            annot_id="val-3",
            objects=["cup"],
            question=["Whose", "is", [0], "?"],
            answer_choices=[["Mine", "."], ["His", "."], ["Hers", "."], ["Ours", "."]],
            rationale_choices=[["Name", "."], ["Color", "."], ["Size", "."], ["Place", "."]],
            answer_label=2,
            rationale_label=3,
            img="m/c.png",
            size=(30, 20),
            segms=[[[[4, 4], [6, 6]]]],
        ),  # a 2-point "polygon": no area -> box fallback
    ]


def write_vcr(root: Path, items=None, extra_lines=()) -> Path:
    """Write ``val.jsonl`` and ``vcr1images/`` (images + metadata) under ``root``."""
    items = _items() if items is None else items
    images = root / "vcr1images"
    rng = np.random.default_rng(0)
    lines = []
    for it in items:
        w, h = it["size"]
        img_path = images / it["img"]
        img_path.parent.mkdir(parents=True, exist_ok=True)
        if not img_path.exists():
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(img_path)
        meta_fn = it["img"].replace(".png", f"_{it['annot_id']}.json")
        boxes = [[1, 1, w - 2, h - 2, 0.9] for _ in it["objects"]]
        (images / meta_fn).write_text(
            json.dumps({"boxes": boxes, "segms": it["segms"], "width": w, "height": h, "names": it["objects"]})
        )
        row = {
            k: it[k]
            for k in (
                "annot_id",
                "objects",
                "question",
                "answer_choices",
                "rationale_choices",
                "answer_label",
                "rationale_label",
            )
            if k in it
        }
        row.update(img_fn=it["img"], metadata_fn=meta_fn)
        lines.append(json.dumps(row))
    lines += list(extra_lines)
    (root / "val.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def vcr_root(tmp_path):
    return write_vcr(tmp_path / "vcr")


def build_dataset(root: Path, image_size: int = 64, **kw) -> VCRDataset:
    cfg = {"data_root": str(root), "vis_processor": {"eval": {"name": "blip_image_eval", "image_size": image_size}}}
    cfg.update(kw)
    return VCRBuilder(cfg).build_datasets()["val"]


def authors_object_parser(prompt: str):
    """The authors' eval_VCR.py parser, re-typed here to compare against: every digit
    character inside [...] is one object, the list then goes through a set."""
    starts = [m.start() for m in re.finditer(r"\[", prompt)]
    ends = [m.start() + 1 for m in re.finditer(r"\]", prompt)]
    found = [int(c) for s, e in zip(starts, ends) for c in prompt[s:e] if c.isnumeric()]
    return list(set(found))


# ------------------------------------------------------- references, prompts
def test_render_and_references_handle_ids_from_ten():
    tokens = ["Why", "is", (11,), "near", (1, 10), "?"]
    assert render_tokens(tokens) == "Why is [11] near [1, 10] ?"
    assert render_tokens(tokens) == " ".join(str(list(t)) if isinstance(t, tuple) else t for t in tokens)
    assert object_references(tokens, [(0,), "x"]) == [11, 1, 10, 0]


def test_prompts_exact_strings_and_objects(vcr_root):
    items, _ = read_vcr_jsonl(vcr_root / "val.jsonl", vcr_root / "vcr1images")
    it0, it1 = items[0], items[1]
    qa = answer_prompt(it0)
    assert qa.text == (
        "Question: What is [0] doing ? 1. [0] is eating . 2. He sleeps . 3. [2] barks . 4. Nothing . Answer: "
    )
    assert qa.objects == (0, 2)
    qar = rationale_prompt(it0, it0.answer_label)
    assert qar.text == (
        "Question: What is [0] doing ? Answer: [0] is eating . Why?  1. Because [1] watches . "
        "2. It is late . 3. [0] is hungry . 4. No reason ."
    )
    assert qar.objects == (0, 1) and qar.choices[2] == "[0] is hungry ."
    q_ar = rationale_prompt(it0, 2, "q_ar")  # question [0], answer 3 [2], rationales [1], [0]
    assert q_ar.objects == (0, 1, 2) and list(q_ar.objects) == authors_object_parser(q_ar.text)
    # ids >= 10: every referenced object is found; the authors' digit parser finds 1, 0, 9, 2 instead
    qa1 = answer_prompt(it1)
    assert sorted(qa1.objects) == [1, 2, 9, 10, 11]
    assert sorted(authors_object_parser(qa1.text)) == [0, 1, 2, 9]
    # ids < 10: the order equals the authors' (CPython set order, not always ascending)
    items9 = _items()[1:2]
    items9[0]["question"] = ["Is", [9], "with", [1], "?"]
    items9[0]["answer_choices"][0] = [[2], "."]
    root9 = write_vcr(vcr_root.parent / "nine", items9)
    it9 = read_vcr_jsonl(root9 / "val.jsonl", root9 / "vcr1images")[0][0]
    for prompt in (answer_prompt(it9), rationale_prompt(it9, 0)):
        assert list(prompt.objects) == authors_object_parser(prompt.text)
    assert answer_prompt(it9).objects == (9, 2, 1)


def test_embedding_layout_matches_official(tiny_model, vcr_root):
    """embed_segments == the authors' layout built by hand: "Let" (no </s>), per object
    "[i] be" (no </s>) + its soft tokens, then the prompt tokenized WITH </s>."""
    model = tiny_model
    item = read_vcr_jsonl(vcr_root / "val.jsonl", vcr_root / "vcr1images")[0][0]
    prompt = answer_prompt(item)
    nq, d = model.query_tokens.shape[1], model.t5_model.config.d_model
    gen = torch.Generator().manual_seed(1)
    soft = {o: torch.randn(nq, d, generator=gen) for o in prompt.objects}
    embeds, mask = model.embed_segments([prompt_segments(prompt, soft)])

    tok, emb = model.t5_tokenizer, model.t5_model.get_input_embeddings()
    with torch.no_grad():
        parts = [emb(torch.tensor(tok("Let").input_ids[:-1]))]
        for o in prompt.objects:
            parts += [emb(torch.tensor(tok(f"[{o}] be").input_ids[:-1])), soft[o]]
        q_ids = tok(prompt.text).input_ids
        assert q_ids[-1] == tok.eos_token_id
        parts.append(emb(torch.tensor(q_ids)))
        official = torch.cat(parts)
    assert embeds.shape == (1, official.shape[0], d) and int(mask.sum()) == official.shape[0]
    assert torch.equal(embeds[0], official)
    # soft tokens sit right after "Let" + "[0] be" (1 + 4 tokens) and after "[2] be"
    assert torch.equal(embeds[0, 5 : 5 + nq], soft[0])
    assert torch.equal(embeds[0, 5 + nq + 4 : 5 + 2 * nq + 4], soft[2])


# ------------------------------------------------------------ answer parsing
@pytest.mark.parametrize(
    "text, pred, fallback",
    [
        ("2", "2", False),
        ("answer: 3.", "3", False),
        ("none", "1", True),
        ("", "1", True),
        ("10", "10", False),
        ("1 or 2", "1", False),
        ("choice 04", "04", False),
        ("[0] is 2", "0", False),
    ],
)
def test_parse_prediction(text, pred, fallback):
    assert parse_prediction(text) == (pred, fallback)


def test_correctness_and_answer_shown_follow_the_authors():
    assert is_correct("3", 2) and not is_correct("03", 2) and not is_correct("10", 0)
    assert [answer_index_for_rationale(p) for p in ("1", "2", "3", "4", "0", "5", "10", "02")] == [
        0,
        1,
        2,
        3,
        3,
        0,
        0,
        1,
    ]


def test_q_ar_bookkeeping():
    assert score_item(1, 2, "2", "3", "3") == {"q_a": True, "qa_r": True, "q_ar": True}
    assert score_item(1, 2, "2", "1", "3") == {"q_a": True, "qa_r": False, "q_ar": True}
    assert score_item(1, 2, "1", "3", "3") == {"q_a": False, "qa_r": True, "q_ar": False}
    assert score_item(1, 2, "2", "3", "1") == {"q_a": True, "qa_r": True, "q_ar": False}


def _evaluator(model, dataset, **settings) -> VCREvaluator:
    """The task's evaluator with the model's settings filled in, as ``VCRTask.evaluate`` makes it."""
    return VCREvaluator(model, dataset, VCRTask().prepare(model, VCRSettings(**settings)), Path("unused"))


def test_run_batch_uses_predicted_answer_for_q_ar(tiny_model, vcr_root, monkeypatch):
    dataset = build_dataset(vcr_root)
    ev = _evaluator(tiny_model, dataset, batch_size_eval=4)
    script = {"val-0": ("1", "3", "3"), "val-1": ("0", "2", "2"), "val-2": ("7", "1", "2"), "val-3": ("3", "4", "4")}
    seen = []

    encoded = []
    real_encode = tiny_model.encode_image
    monkeypatch.setattr(tiny_model, "encode_image", lambda img: encoded.append(img.shape[0]) or real_encode(img))

    def fake_decide(image_embeds, image_of, samples, prompts):
        assert image_embeds.shape[0] == 3 and list(image_of) == [0, 1, 0, 2]  # val-0, val-2 share a.png
        out = []
        for b, prompt in prompts:
            seen.append((samples[b].item.key, prompt))
            pred = script[samples[b].item.key][vcr_task.PROMPT_KINDS.index(prompt.kind)]
            out.append({"pred": pred, "fallback": False, "output": pred})
        return out

    monkeypatch.setattr(ev, "decide", fake_decide)
    rows = {r["key"]: r for r in ev.process([0, 1, 2, 3], ev.load([0, 1, 2, 3]))}
    assert encoded == [3]
    shown = {k: p for k, p in seen if p.kind == "q_ar"}
    items = {it.key: it for it in dataset.items}
    assert shown["val-0"] == rationale_prompt(items["val-0"], 0, "q_ar")  # "1" -> answer 1
    assert shown["val-1"] == rationale_prompt(items["val-1"], 3, "q_ar")  # "0" -> answers[-1]
    assert shown["val-2"] == rationale_prompt(items["val-2"], 0, "q_ar")  # "7" -> answer 1
    assert rows["val-0"]["correct"] == {"q_a": True, "qa_r": True, "q_ar": True}
    assert rows["val-1"]["correct"] == {"q_a": False, "qa_r": True, "q_ar": False}
    assert rows["val-2"]["correct"] == {"q_a": False, "qa_r": True, "q_ar": False}
    assert rows["val-3"]["correct"] == {"q_a": True, "qa_r": True, "q_ar": True}
    assert rows["val-1"]["q_ar"]["answer_shown"] == 4
    summary = vcr_task.summarize(list(rows.values()))
    assert summary["correct"] == {"q_a": 2, "qa_r": 4, "q_ar": 2} and summary["accuracy"]["q_ar"] == 50.0
    assert summary["out_of_range"]["q_a"] == 2


# ------------------------------------------------------------------- loader
def test_masks_from_polygons_and_box_fallback(vcr_root):
    dataset = build_dataset(vcr_root)
    s0 = dataset[0]
    assert sorted(s0.masks) == [0, 1, 2] and s0.mask_fallbacks == []
    m = s0.masks[0]
    assert m.shape == (32, 48) and m[5, 5] and m[10, 15] and not m[25, 30] and not m[0, 0]
    assert 17 * 17 <= m.sum() <= 19 * 19
    assert tuple(s0.image.shape) == (3, 64, 64)
    s1 = dataset[1]
    assert sorted(s1.masks) == [1, 2, 3, 8, 9, 10, 11]
    assert s1.masks[11][35, 35] and not s1.masks[11][5, 5]
    s3 = dataset[3]
    assert s3.mask_fallbacks == [0] and s3.masks[0][10, 10] and not s3.masks[0][0, 0]
    meta = json.loads((vcr_root / "vcr1images" / dataset.items[0].metadata_fn).read_text())
    mask, used_box = object_mask(meta, 2, "here")
    assert not used_box and mask[25, 10]


def test_bad_input_messages(tmp_path):
    root = write_vcr(tmp_path / "a", extra_lines=["{not json"])
    with pytest.raises(InputError, match=r"val\.jsonl:5: not valid JSON"):
        read_vcr_jsonl(root / "val.jsonl", root / "vcr1images")
    items, skipped = read_vcr_jsonl(root / "val.jsonl", root / "vcr1images", skip_missing=True)
    assert len(items) == 4 and len(skipped) == 1 and skipped[0].where.endswith("val.jsonl:5")

    bad = _items()[:2]
    bad[1]["rationale_choices"][2] = [[12], "waves"]
    root = write_vcr(tmp_path / "b", bad)
    with pytest.raises(
        InputError,
        match=r"val\.jsonl:2 \(val-1\): rationale_choices\[2\] refers to object 12, "
        r"but the item lists 12 objects \(valid indices 0\.\.11\)",
    ):
        read_vcr_jsonl(root / "val.jsonl", root / "vcr1images")

    bad = _items()[:1]
    bad[0]["answer_choices"] = bad[0]["answer_choices"][:3]
    root = write_vcr(tmp_path / "c", bad)
    with pytest.raises(InputError, match="answer_choices must be a list of 4 choices, got 3"):
        read_vcr_jsonl(root / "val.jsonl", root / "vcr1images")

    root = write_vcr(tmp_path / "d")
    (root / "vcr1images" / "m" / "c.png").unlink()
    with pytest.raises(MissingFileError, match=r"val\.jsonl:4 \(val-3\): image file .*c\.png' not found"):
        build_dataset(root)
    ds = build_dataset(root, skip_missing=True)
    assert len(ds) == 3 and [s.key for s in ds.skipped] == ["val-3"]

    dup = _items()[:1] * 2
    root = write_vcr(tmp_path / "e", dup)
    with pytest.raises(InputError, match="annot_id 'val-0' already used"):
        read_vcr_jsonl(root / "val.jsonl", root / "vcr1images")

    root = write_vcr(tmp_path / "f")
    meta = root / "vcr1images" / "m" / "a_val-0.json"
    meta.write_text(json.dumps({"boxes": [], "segms": [], "width": 48, "height": 32}))
    ds = build_dataset(root)
    with pytest.raises(InputError, match=r"val\.jsonl:1 \(val-0\): metadata .* has 0 boxes for 3 objects"):
        ds[0]
    with pytest.raises(MissingFileError, match="datasets.vcr.data_root"):
        VCRBuilder(
            {"data_root": str(tmp_path / "nowhere"), "vis_processor": {"eval": {"image_size": 64}}}
        ).build_datasets()


# --------------------------------------------------------- model end to end
def _run(model, dataset, out, **run):
    cfg = {"mode": "generate", "seed": 42, "batch_size_eval": 4, **run}
    metrics = VCRTask().evaluate(model, {"vcr": {"val": dataset}}, cfg, out)
    variant = "" if cfg["mode"] == "generate" else f"-{cfg['mode']}"
    return metrics, json.loads((Path(out) / f"vcr{variant}_vcr_val.json").read_text())


@pytest.mark.slow
def test_generate_mode_counts_and_determinism(tiny_model, vcr_root, tmp_path):
    dataset = build_dataset(vcr_root)
    metrics, res = _run(tiny_model, dataset, tmp_path / "o1")
    preds = res["predictions"]
    assert res["num_items"] == 4 and len(preds) == 4 and res["protocol"].startswith("official")
    for kind in ("q_a", "qa_r", "q_ar"):
        correct = sum(p["correct"][kind] for p in preds)
        assert res["correct"][kind] == correct
        assert metrics[f"vcr_val/{kind}"] == round(100 * correct / 4, 4)
        assert res["fallbacks"][kind] == sum(p[kind]["fallback"] for p in preds)
        for p in preds:
            assert p[kind]["pred"] == parse_prediction(p[kind]["output"])[0]
    assert res["mask_box_fallback_objects"] == 1 and res["skipped"] == []
    assert not list((tmp_path / "o1").glob("*.partial.*"))
    _, again = _run(tiny_model, dataset, tmp_path / "o2")
    assert again["predictions"] == preds


def test_region_points_are_seeded_per_item_and_prompt(tiny_model, vcr_root):
    dataset = build_dataset(vcr_root)
    sample = dataset[0]

    def texts(seed):
        ev = _evaluator(tiny_model, dataset, seed=seed)
        rng = vcr_task.item_rng(seed, "val-0/q_a")
        return [ev.region_text(sample.masks[o], rng) for o in answer_prompt(sample.item).objects]

    a = texts(42)
    assert a == texts(42) and a != texts(7)
    assert all(len(re.findall(r"\[\d+ \d+\]", t)) == 10 for t in a)


def test_ranking_mode_and_batch_invariance(tiny_model, vcr_root, tmp_path):
    dataset = build_dataset(vcr_root)
    _, r4 = _run(tiny_model, dataset, tmp_path / "r4", mode="ranking")
    _, r1 = _run(tiny_model, dataset, tmp_path / "r1", mode="ranking", batch_size_eval=1)
    assert r4["protocol"].startswith("ranking (addition")
    for a, b in zip(r4["predictions"], r1["predictions"]):
        for kind in ("q_a", "qa_r", "q_ar"):
            assert len(a[kind]["scores"]) == 4
            assert a[kind]["pred"] == str(int(np.argmin(a[kind]["scores"])) + 1) == b[kind]["pred"]
            np.testing.assert_allclose(a[kind]["scores"], b[kind]["scores"], rtol=1e-4, atol=1e-4)
        assert a["q_ar"]["answer_shown"] == int(a["q_a"]["pred"])
    assert r4["fallbacks"] == {"q_a": 0, "qa_r": 0, "q_ar": 0}
    _, num = _run(tiny_model, dataset, tmp_path / "rn", mode="ranking", ranking_target="number")
    assert num["predictions"][0]["q_a"]["scores"] != r4["predictions"][0]["q_a"]["scores"]


@pytest.mark.slow
def test_killed_run_resumes(tiny_model, vcr_root, tmp_path, monkeypatch):
    dataset = build_dataset(vcr_root)
    calls = {"n": 0}
    original = type(tiny_model).generate_from_embeds

    def dying(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:  # the second batch (2 items each) dies
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(type(tiny_model), "generate_from_embeds", dying)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_model, dataset, tmp_path / "k", batch_size_eval=2, max_len=8)
    assert list((tmp_path / "k").glob("*.partial.rank0.jsonl"))
    calls["n"] = -100
    _, resumed = _run(tiny_model, dataset, tmp_path / "k", batch_size_eval=2, max_len=8)
    assert calls["n"] == -98  # only the unfinished batch ran again (2 generate calls)
    monkeypatch.setattr(type(tiny_model), "generate_from_embeds", original)
    _, full = _run(tiny_model, dataset, tmp_path / "full", batch_size_eval=2, max_len=8)
    assert resumed["predictions"] == full["predictions"]


def test_task_errors(tiny_model, tmp_path):
    items = _items()[:1]
    del items[0]["answer_label"]
    root = write_vcr(tmp_path / "t", items)
    ds = build_dataset(root)
    with pytest.raises(RegionVLMError, match="test labels are hidden"):
        _run(tiny_model, ds, tmp_path / "o")
    ds = build_dataset(write_vcr(tmp_path / "u"), image_size=32)
    with pytest.raises(RegionVLMError, match="processes images to 32 px but the model takes 64"):
        _run(tiny_model, ds, tmp_path / "o")
    with pytest.raises(RegionVLMError, match="`run.mode` must be one of"):
        _run(tiny_model, ds, tmp_path / "o", mode="vote")
    root = write_vcr(tmp_path / "v")  # unreadable metadata found only when the item loads
    (root / "vcr1images" / "m" / "b_val-1.json").write_text("{broken")
    metrics, res = _run(tiny_model, build_dataset(root, skip_missing=True), tmp_path / "s", mode="ranking")
    assert res["num_items"] == 3 and metrics["vcr_val/num_skipped"] == 1
    assert res["skipped"][0]["key"] == "val-1" and "is not valid JSON" in res["skipped"][0]["reason"]
    assert [p["key"] for p in res["predictions"]] == ["val-0", "val-1", "val-2", "val-3"]


def test_cli_runs_the_trainer_path(vcr_root, tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(REPO))
    sys.modules.pop("eval_VCR", None)
    import eval_VCR

    out = tmp_path / "cli"
    metrics = eval_VCR.main(
        [
            "--data-root",
            str(vcr_root),
            "--model-type",
            "tiny",
            "--mode",
            "ranking",
            "--batch-size",
            "2",
            "--seed",
            "3",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--options",
            "run.num_workers=2",
        ]
    )
    res = json.loads((out / "vcr-ranking_vcr_val.json").read_text())
    assert res["settings"]["seed"] == 3 and res["settings"]["batch_size_eval"] == 2 and res["num_items"] == 4
    assert metrics["vcr_val/q_a"] == res["accuracy"]["q_a"]
    assert json.loads((out / "vcr-ranking_vcr_val_metrics.json").read_text())["metrics"] == res["metrics"]
    assert json.loads((out / "evaluate.jsonl").read_text())["metrics"] == metrics
    from regionvlm.common.cli import run

    with pytest.raises(SystemExit):
        run(eval_VCR.main, ["--data-root", str(tmp_path / "missing"), "--model-type", "tiny", "--out", str(out)])
    assert "val.jsonl' not found" in capsys.readouterr().err
