"""Batch prediction over a region file (``python -m regionvlm.predict``): batched equals one
at a time, results independent of batching, kill-and-resume byte-identical, two ranks cover
every line once, bad lines named by line number (stop, skip, --check), COCO input."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from regionvlm import predict as cli
from regionvlm import prediction
from regionvlm.common.errors import ConfigError, InputError, MissingFileError
from regionvlm.data.images import open_image
from regionvlm.data.region_files import read_region_file
from regionvlm.datasets.region_files import RegionFileSet
from regionvlm.processors import BlipCaptionProcessor, BlipImageEvalProcessor
from regionvlm.quickstart import bundled_checkpoint
from regionvlm.synthetic.world import write_world
from regionvlm.tasks.evaluation import item_rng

REPO = Path(__file__).resolve().parents[1]
MODEL_FLAGS = ["--model-type", "tiny", "--checkpoint", str(bundled_checkpoint()), "--device", "cpu"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("predict_world")
    write_world(root, num_train=0, num_val=0, num_test=5, seed=3)
    return root


@pytest.fixture(scope="module")
def model():
    from regionvlm import load_model

    return load_model("regionvlm_t5", "tiny", is_eval=True, checkpoint=str(bundled_checkpoint()))


def objects(world: Path):
    return [json.loads(line) for line in (world / "regions" / "synthetic_test.jsonl").read_text().splitlines()]


def mixed_lines(world: Path):
    """Every region kind and prompt: RLE, box, points, polygon, whole image; questions with
    ``[1]``, without it, and none."""
    from regionvlm.region import mask_from_rle

    lines = []
    questions = ["what colour is [1]?", "what is this?", None]
    for i, obj in enumerate(objects(world)):
        rle = obj["region"]["rle"]
        mask = mask_from_rle(rle)
        ys, xs = np.nonzero(mask)
        box = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
        x0, y0, w, h = box
        region = [
            {"rle": rle},
            {"box": box},
            {"points": [[float(x) + 0.5, float(y) + 0.5] for x, y in zip(xs[::7], ys[::7])]},
            {"polygon": [[x0, y0, x0 + w, y0, x0 + w, y0 + h, x0, y0 + h]]},
            None,
        ][i % 5]
        line = {"image": obj["image"], "note": f"object {i}"}
        if region is not None:
            line["region"] = region
        if i % 2 == 0:
            line["id"] = f"obj-{obj['id']}"
        question = questions[i % 3]
        if question is not None:
            line["question"] = question
        lines.append(line)
    return lines


def write_lines(path: Path, lines) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def settings(task: str = "caption", **kw):
    return cli.PredictSettings.for_task(task, **kw)


def run_predict(model, path: Path, out: Path, task="caption", on_error="stop", **kw):
    regions = RegionFileSet(path, path.parent / "images", need_question=task == "answer")
    return prediction.predict(model, regions, settings(task, **kw), out, on_error)


def rows(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------ same outputs
def test_task_decoding_defaults_are_those_of_generate_and_predict_answers(model):
    caption = inspect.signature(type(model).generate).parameters
    answer = inspect.signature(type(model).predict_answers).parameters
    assert cli.TASK_GENERATION["caption"] == {
        "num_beams": caption["num_beams"].default,
        "max_len": caption["max_length"].default,
        "min_len": caption["min_length"].default,
        "length_penalty": caption["length_penalty"].default,
        "repetition_penalty": caption["repetition_penalty"].default,
    }
    assert cli.TASK_GENERATION["answer"] == {
        "num_beams": answer["num_beams"].default,
        "max_len": answer["max_len"].default,
        "min_len": answer["min_len"].default,
        "length_penalty": answer["length_penalty"].default,
        "repetition_penalty": 1.0,
    }


@pytest.mark.parametrize("task", ["caption", "answer"])
def test_mixed_kinds_and_prompts_in_one_batch_equal_one_at_a_time(world, model, tmp_path, task):
    lines = mixed_lines(world)
    if task == "answer":
        lines = [{**line, "question": line.get("question") or "what shape is it?"} for line in lines]
    path = write_lines(world / f"mixed_{task}.jsonl", lines)
    summary = run_predict(model, path, tmp_path / "out.jsonl", task, batch_size=16)
    assert summary["predicted"] == len(lines) and summary["processed_per_rank"] == [len(lines)]
    got = rows(tmp_path / "out.jsonl")

    vis, txt = BlipImageEvalProcessor(image_size=model.image_size), BlipCaptionProcessor()
    regions = RegionFileSet(path, world / "images", need_question=task == "answer")
    records = regions.records
    generation = settings(task).generation()
    for position, (record, row) in enumerate(zip(records, got)):
        image = open_image(world / "images" / record.image)
        region = regions.load([position], vis).regions[0]
        text = txt(region.to_text(model.num_points, item_rng(42, record.key)))
        pixels = vis(image).unsqueeze(0)
        with torch.inference_mode():
            if task == "caption":  # LAVIS's generate with its defaults, one region at a time
                expected = model.generate({"image": pixels, "text_input": [text]})[0].strip()
            else:  # [soft tokens ; question ; </s>], one region at a time
                soft = model.region_queries(model.encode_image(pixels), [text])[0]
                embeds, mask = model.embed_segments([[soft, record.question]])
                expected = model.generate_from_embeds(embeds, mask, generation)[0].strip()
        assert row["region_text"] == text
        assert row["prediction"] == expected, (record.where, record.kind)
        assert row["id"] == record.id and row["note"] == record.fields["note"]
    kinds = {r.kind for r in records}
    assert kinds == {"rle", "box", "points", "polygon", "whole"}
    assert [r["id"] for r in got] == [r.id for r in records]  # input order
    whole = [row for row, r in zip(got, records) if r.kind == "whole"]
    assert whole and all(row["region_text"] == "" for row in whole)


def test_inline_layout_puts_the_soft_tokens_where_the_question_says(world, model, tmp_path):
    line = {"image": objects(world)[0]["image"], "region": objects(world)[0]["region"], "question": "is [1] red?"}
    path = write_lines(world / "inline.jsonl", [line])
    run_predict(model, path, tmp_path / "out.jsonl", "answer", layout="inline")
    row = rows(tmp_path / "out.jsonl")[0]
    regions = RegionFileSet(path, world / "images")
    vis = BlipImageEvalProcessor(image_size=model.image_size)
    batch = regions.load([0], vis)
    with torch.inference_mode():
        soft = model.region_queries(model.encode_image(batch.images), [row["region_text"]])[0]
        embeds, mask = model.embed_segments([["is ", soft, " red?"]])
        expected = model.generate_from_embeds(embeds, mask, settings("answer").generation())[0].strip()
    assert row["prediction"] == expected


def test_results_do_not_depend_on_batching_or_workers(world, model, tmp_path):
    path = write_lines(world / "batching.jsonl", mixed_lines(world))
    run_predict(model, path, tmp_path / "a.jsonl", batch_size=16, num_workers=2)
    run_predict(model, path, tmp_path / "b.jsonl", batch_size=3, num_workers=0)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


# ------------------------------------------------------------------ resume
def test_killed_run_resumes_and_ends_byte_identical(world, model, tmp_path, monkeypatch):
    path = write_lines(world / "resume.jsonl", mixed_lines(world))
    run_predict(model, path, tmp_path / "full" / "out.jsonl", batch_size=3)
    expected = (tmp_path / "full" / "out.jsonl").read_bytes()

    real = prediction.PredictEvaluator.process
    calls = {"n": 0}

    def dies_after_two_units(self, spec, batch):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt  # the process is killed mid-run
        return real(self, spec, batch)

    out = tmp_path / "killed" / "out.jsonl"
    monkeypatch.setattr(prediction.PredictEvaluator, "process", dies_after_two_units)
    with pytest.raises(KeyboardInterrupt):
        run_predict(model, path, out, batch_size=3)
    logs = list(out.parent.glob("out.jsonl.*.partial.rank0.jsonl"))
    assert len(logs) == 1 and not out.exists()
    logged = [json.loads(r) for r in logs[0].read_text().splitlines()]
    assert len(logged) == 2
    monkeypatch.setattr(prediction.PredictEvaluator, "process", real)
    summary = run_predict(model, path, out, batch_size=3)
    assert out.read_bytes() == expected
    done_before = sum(len(row["result"]) for row in logged)
    assert summary["processed_per_rank"] == [len(mixed_lines(world)) - done_before]
    assert not list(out.parent.glob("*.partial.*"))  # progress logs removed


def test_another_model_or_setting_never_reuses_progress(world, model, tmp_path):
    path = write_lines(world / "fp.jsonl", mixed_lines(world)[:4])
    regions = RegionFileSet(path, world / "images")
    evaluator = prediction.PredictEvaluator(model, regions, settings(), tmp_path, None, None)
    from regionvlm.tasks.evaluation import fingerprint

    base = fingerprint(settings(), evaluator.identity(), model)
    assert fingerprint(settings(seed=1), evaluator.identity(), model) != base
    assert fingerprint(settings(num_beams=2), evaluator.identity(), model) != base
    assert fingerprint(settings(num_workers=0), evaluator.identity(), model) == base


@pytest.mark.slow
@pytest.mark.ddp
def test_two_ranks_cover_every_line_once_and_rank0_writes(world, tmp_path):
    path = write_lines(world / "ranks.jsonl", mixed_lines(world))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    common = ["--input", str(path), "--image-root", str(world / "images"), "--batch-size", "2", *MODEL_FLAGS]
    single = subprocess.run(
        [sys.executable, "-m", "regionvlm.predict", *common, "--out", str(tmp_path / "one.jsonl")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    two = subprocess.run(
        [*cmd, "regionvlm.predict", *common, "--out", str(tmp_path / "two.jsonl")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    summary = json.loads(two.stdout.strip().splitlines()[-1])
    per_rank = summary["processed_per_rank"]
    assert len(per_rank) == 2 and all(n > 0 for n in per_rank) and sum(per_rank) == len(mixed_lines(world))
    assert (tmp_path / "two.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert [r["id"] for r in rows(tmp_path / "two.jsonl")] == [r.id for r in read_region_file(path).records]


# ------------------------------------------------------------------ bad lines
def bad_lines(world: Path, images: Path):
    obj = objects(world)[0]
    name = obj["image"]
    truncated = images / "truncated.png"
    data = (images / name).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    corrupt_rle = {"size": obj["region"]["rle"]["size"], "counts": obj["region"]["rle"]["counts"][:-3]}
    return [
        json.dumps({"image": name, "region": {"box": [1, 2, 10, 10]}}),  # 1 ok
        json.dumps({"image": "missing.png"}),  # 2 unknown image
        json.dumps({"image": name, "region": {"box": [60, 60, 10, 10]}}),  # 3 outside
        json.dumps({"image": name, "region": {"rle": corrupt_rle}}),  # 4 bad RLE
        f'{{"image": "{name}", "region": {{"points": [[1, NaN]]}}}}',  # 5 NaN
        json.dumps({"image": 5}),  # 6 wrong type
        json.dumps({"region": {"box": [1, 1, 2, 2]}}),  # 7 missing key
        "{not json",  # 8
        json.dumps({"image": name, "region": {"points": [[3, 4]]}, "id": "a"}),  # 9 ok
        json.dumps({"image": name, "id": "a"}),  # 10 duplicate id
        json.dumps({"image": name, "question": "is [2] bigger?"}),  # 11 a second region
        json.dumps({"image": name, "region": {"polygon": [[1, 1, 5, 5]]}}),  # 12 too few points
        "",  # 13 blank: skipped silently
        json.dumps({"image": "truncated.png"}),  # 14 decodes badly (found while predicting)
        json.dumps({"image": name, "region": {"polygon": [[1, 1, 2, 2, 3, 3]]}}),  # 15 covers no pixel
        json.dumps({"image": name, "region": {"box": "1 2 3 4"}}),  # 16 wrong type
        json.dumps({"image": name, "region": {"box": [1, 2, 3, 4], "points": [[1, 1]]}}),  # 17 two kinds
    ]


EXPECTED_BAD = {
    2: "image 'missing.png' not found",
    3: "reaches outside the 64x64 image",
    4: "RLE runs cover",
    5: "NaN or infinity",
    6: "'image' must be a non-empty path string",
    7: "missing key 'image'",
    8: "not valid JSON",
    10: "repeats the id of line 9",
    11: "mentions [2], but a line has one region",
    12: "even number (>= 6) of coordinates",
    16: "region.box must be a list of numbers",
    17: "exactly one of",
}


def test_bad_lines_stop_before_the_model_with_their_line_numbers(world, tmp_path, monkeypatch):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(bad_lines(world, world / "images")) + "\n")
    monkeypatch.setattr(cli, "build_model", lambda *a, **k: pytest.fail("the model was built"), raising=False)
    import regionvlm.prediction  # noqa: F401  (the stop happens before this is needed)

    with pytest.raises(InputError) as exc:
        cli.main(["--input", str(path), "--image-root", str(world / "images"), "--out", str(tmp_path / "o.jsonl")])
    message = str(exc.value)
    assert message.startswith(f"{len(EXPECTED_BAD)} bad lines in")
    for line, text in EXPECTED_BAD.items():
        assert f"line {line}: " in message and text in message, (line, text)
    assert "line 1:" not in message and "line 9:" not in message and "line 13:" not in message
    assert "--on-error skip" in message and not (tmp_path / "o.jsonl").exists()


def test_skip_predicts_the_rest_and_lists_every_bad_line(world, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(bad_lines(world, world / "images")) + "\n")
    out = tmp_path / "preds.jsonl"
    summary = cli.main(
        ["--input", str(path), "--image-root", str(world / "images"), "--out", str(out), "--on-error", "skip"]
        + MODEL_FLAGS
    )
    assert [r["id"] for r in rows(out)] == [1, "a"]
    errors = rows(tmp_path / "preds.errors.jsonl")
    found = {e["line"]: e["error"] for e in errors}
    assert set(found) == set(EXPECTED_BAD) | {14, 15}
    for line, text in EXPECTED_BAD.items():
        assert text in found[line]
    assert "truncated" in found[14] and "covers no pixel" in found[15]
    assert summary["predicted"] == 2 and summary["skipped_lines"] == len(found)
    # stop mode finds line 14 only when predicting: one clear error naming its line
    good = tmp_path / "late.jsonl"
    good.write_text(bad_lines(world, world / "images")[0] + "\n" + json.dumps({"image": "truncated.png"}) + "\n")
    with pytest.raises(InputError, match=r"line 2: .*truncated"):
        cli.main(["--input", str(good), "--image-root", str(world / "images"), "--out", str(out)] + MODEL_FLAGS)


def test_a_question_longer_than_t5_reads_stops_or_is_skipped(world, tmp_path):
    obj = objects(world)[0]
    lines = [
        {"image": obj["image"], "region": obj["region"], "question": q, "id": i}
        for i, q in enumerate(["what colour is [1]?", "what " * 600, "what is this?"])
    ]
    path = write_lines(tmp_path / "q.jsonl", lines)
    flags = ["--input", str(path), "--image-root", str(world / "images"), "--task", "answer"] + MODEL_FLAGS
    with pytest.raises(InputError, match=r"line 2: the question gives T5 \d+ tokens, more than the 512 it reads"):
        cli.main(flags + ["--out", str(tmp_path / "stop.jsonl")])
    assert not (tmp_path / "stop.jsonl").exists()
    out = tmp_path / "skip.jsonl"
    summary = cli.main(flags + ["--out", str(out), "--on-error", "skip"])
    assert [r["id"] for r in rows(out)] == [0, 2] and summary["skipped_lines"] == 1
    assert [e["line"] for e in rows(tmp_path / "skip.errors.jsonl")] == [2]


def test_check_reports_every_problem_and_a_summary_without_a_model(world, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(bad_lines(world, world / "images")) + "\n")
    code = (
        "import sys\n"
        "from regionvlm.common.cli import run\n"
        "from regionvlm.predict import main\n"
        "try:\n"
        f"    run(main, ['--check', {str(path)!r}, '--image-root', {str(world / 'images')!r}])\n"
        "except SystemExit as e:\n"
        "    print('exit', e.code, 'torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    out = proc.stdout
    assert out.strip().endswith("exit 2 False")  # a failing check, and torch was never imported
    for line, text in EXPECTED_BAD.items():
        assert f"line {line}: " in out and text in out
    assert f"error: {len(EXPECTED_BAD)} problem(s)" in proc.stderr
    assert "region kinds: box 1, points 1, polygon 1, rle 0, whole image 1" in out
    assert "images missing: 1 (missing.png)" in out and f"problems: {len(EXPECTED_BAD)}" in out

    good = write_lines(tmp_path / "good.jsonl", mixed_lines(world))
    without_question = [i + 1 for i, line in enumerate(mixed_lines(world)) if "question" not in line]
    with pytest.raises(InputError, match=f"{len(without_question)} problem"):  # answering needs questions
        cli.main(["--check", str(good), "--image-root", str(world / "images"), "--task", "answer"])
    caption_summary = cli.main(["--check", str(good), "--image-root", str(world / "images")])
    kinds = [next(iter(line["region"])) if "region" in line else "whole" for line in mixed_lines(world)]
    assert caption_summary["kinds"] == {k: kinds.count(k) for k in ("box", "points", "polygon", "rle", "whole")}
    assert min(caption_summary["kinds"].values()) >= 2
    assert caption_summary["questions"] == sum("question" in line for line in mixed_lines(world))
    assert caption_summary["images_missing"] == 0 and caption_summary["problems"] == 0


def test_flags_are_checked_before_any_work(world, tmp_path):
    base = ["--input", str(tmp_path / "x.jsonl"), "--out", str(tmp_path / "o.jsonl")]
    with pytest.raises(ConfigError, match="--prompt must contain"):
        cli.main(base + ["--prompt", "no slot"])
    with pytest.raises(ConfigError, match="min_len"):
        cli.main(base + ["--min-len", "40", "--max-len", "5"])
    with pytest.raises(ConfigError, match="give --input"):
        cli.main(["--out", str(tmp_path / "o.jsonl")])
    with pytest.raises(MissingFileError, match="not found"):
        cli.main(base)
    path = write_lines(tmp_path / "one.jsonl", [{"image": "x.png"}])
    with pytest.raises(ConfigError, match="model.\\* keys only"):
        cli.build_model("tiny", None, None, ["run.seed=3"], "cpu")
    assert path.is_file()


# ------------------------------------------------------------------ COCO input
def test_coco_instances_input_predicts_every_annotation(world, model, tmp_path):
    instances = json.loads((world / "refer" / "synthetic" / "instances.json").read_text())
    instances["annotations"][1]["segmentation"] = []  # no segmentation: its bbox
    mask_ann = instances["annotations"][2]
    from regionvlm.region import mask_from_rle

    mask = mask_from_rle(mask_ann["segmentation"])
    ys, xs = np.nonzero(mask)
    mask_ann["segmentation"] = [
        [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.min()), float(xs.max()), float(ys.max())]
    ]  # a polygon
    instances["annotations"][0]["caption"] = "a reference"
    coco = tmp_path / "instances.json"
    coco.write_text(json.dumps(instances))
    summary, problems = cli.check_file(str(coco), str(world / "images"))
    assert not problems and summary["layout"] == "coco"
    assert summary["kinds"]["box"] == 1 and summary["kinds"]["polygon"] == 1
    assert summary["regions"] == len(instances["annotations"])
    out = tmp_path / "coco_preds.jsonl"
    regions = RegionFileSet(coco, world / "images")
    prediction.predict(model, regions, settings(), out)
    got = rows(out)
    assert [r["id"] for r in got] == [a["id"] for a in instances["annotations"]]
    first = got[0]
    assert first["image"] == "scene_test_000000.png" and "segmentation" not in first and "bbox" in first
    assert first["caption"] == "a reference" and first["prediction"]
    # the same RLE regions as JSONL lines (same ids) give the same rows' predictions
    lines = [
        {
            "id": a["id"],
            "image": next(i["file_name"] for i in instances["images"] if i["id"] == a["image_id"]),
            "region": {"rle": a["segmentation"]},
        }
        for a in instances["annotations"]
        if isinstance(a["segmentation"], dict)
    ]
    jsonl = write_lines(tmp_path / "same.jsonl", lines)
    prediction.predict(model, RegionFileSet(jsonl, world / "images"), settings(), tmp_path / "same_preds.jsonl")
    by_id = {r["id"]: r for r in got}
    for row in rows(tmp_path / "same_preds.jsonl"):
        assert row["prediction"] == by_id[row["id"]]["prediction"]
        assert row["region_text"] == by_id[row["id"]]["region_text"]
    boxes = RegionFileSet(coco, world / "images", coco_region="bbox")
    assert {r.kind for r in boxes.records} == {"box"}


def test_coco_problems_name_the_annotation(world, tmp_path):
    instances = json.loads((world / "refer" / "synthetic" / "instances.json").read_text())
    instances["annotations"][0]["image_id"] = 999
    instances["annotations"][1]["bbox"] = [0, 0, 100, 100]
    instances["annotations"][1]["segmentation"] = None
    coco = tmp_path / "bad_coco.json"
    coco.write_text(json.dumps(instances))
    _, problems = cli.check_file(str(coco), str(world / "images"))
    text = "\n".join(map(str, problems))
    first, second = instances["annotations"][0]["id"], instances["annotations"][1]["id"]
    assert f"annotations[0] (id {first}): 'image_id' 999 is not an id" in text
    assert f"annotations[1] (id {second}): box [x, y, w, h]" in text and "outside the 64x64 image" in text


def test_images_of_any_mode_and_an_absolute_path(world, model, tmp_path):
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((40, 30), 128, dtype=np.uint8), "L").save(grey)
    path = write_lines(tmp_path / "abs.jsonl", [{"image": str(grey), "region": {"box": [0, 0, 30, 40]}}])
    run_predict(model, path, tmp_path / "abs_out.jsonl")
    assert rows(tmp_path / "abs_out.jsonl")[0]["image"] == str(grey)


@pytest.mark.slow
def test_a_process_killed_with_sigkill_resumes_byte_identical(world, tmp_path):
    import signal
    import time

    lines = [{**line, "id": f"{k}-{i}"} for k in range(4) for i, line in enumerate(mixed_lines(world))]
    path = write_lines(tmp_path / "many.jsonl", lines)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    base = [sys.executable, "-m", "regionvlm.predict", "--input", str(path), "--image-root", str(world / "images")]
    base += ["--batch-size", "1", "--num-workers", "0", *MODEL_FLAGS]
    full = subprocess.run([*base, "--out", str(tmp_path / "full.jsonl")], env=env, cwd=REPO, capture_output=True)
    assert full.returncode == 0, full.stderr[-2000:]
    out = tmp_path / "killed" / "out.jsonl"
    proc = subprocess.Popen([*base, "--out", str(out)], env=env, cwd=REPO, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        logs = list(out.parent.glob("*.partial.rank0.jsonl")) if out.parent.exists() else []
        if logs and len(logs[0].read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists() and logs, "the run finished before it could be killed"
    again = subprocess.run([*base, "--out", str(out)], env=env, cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming" in again.stdout
    assert out.read_bytes() == (tmp_path / "full.jsonl").read_bytes()


def test_benchmark_runs_and_compares_line_by_line(tmp_path):
    from benchmark_scripts import load_benchmark

    result = load_benchmark("bench_predict").main(
        ["--scenes", "2", "--batch-size", "4", "--json", str(tmp_path / "bench.json")]
    )
    same, total = map(int, result["same_outputs"].split("/"))
    assert same == total == result["regions"] > 0 and result["ratio"] > 0
    assert json.loads((tmp_path / "bench.json").read_text()) == result
