"""Zero-shot VQA end to end on tiny fixtures in the real file layouts, with the tiny model.

Each benchmark's YAML is loaded as shipped (paths through ``$REGIONVLM_DATA``), with the
model switched to ``tiny`` and the image size to the tiny model's. The tests first ask the
model for its answer to each question one by one, then write annotation files whose
human answers match those predictions a known number of times, so the accuracy the task
reports can be checked against hand-computed values (and batched generation against
one-question generation).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
from PIL import Image

import regionvlm.datasets.builders.vqa_builder
import regionvlm.tasks.vqa  # noqa: F401  (registers the tasks)
from regionvlm.common.config import Config
from regionvlm.common.errors import ConfigError, InputError, MissingFileError
from regionvlm.common.registry import registry
from regionvlm.tasks.vqa import VQASettings
from regionvlm.tasks.vqa_metrics import normalize_gqa_prediction, normalize_vqa_prediction

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "vqav2": ("configs/blip2/eval/vqav2_zeroshot_flant5xl_eval.yaml", "coco_vqa", "val", "coco"),
    "okvqa": ("configs/blip2/eval/okvqa_zeroshot_flant5xl_eval.yaml", "ok_vqa", "test", "okvqa"),
    "gqa": ("configs/blip2/eval/gqa_zeroshot_flant5xl_eval.yaml", "gqa", "val", "gqa"),
}
SCRIPTS = {
    "vqav2": "run_scripts/blip2/eval/validate_vqa_zeroshot_flant5xl.sh",
    "okvqa": "run_scripts/blip2/eval/eval_okvqa_zeroshot_flant5xl.sh",
    "gqa": "run_scripts/blip2/eval/eval_gqa_zeroshot_flant5xl.sh",
}
# (question id, image number, question, answer type, question type, #human answers equal to the prediction)
QUESTIONS = [
    (101, 1, "Is the dog asleep?", "yes/no", "is the", 3),
    (102, 1, "What color is the car?", "other", "what color", 0),
    (103, 2, "Is it sunny?", "yes/no", "is it", 10),
    (104, 2, "How many people are there?", "number", "how many", 1),
    (105, 3, "What is on the table?", "other", "what is", 4),
]
EXPECTED = {"overall": 64.0, "yes/no": 95.0, "other": 50.0, "number": 30.0}  # 90, 0, 100, 30, 100


def coco_name(n: int) -> str:
    return f"val2014/COCO_val2014_{n:012d}.jpg"


def write_image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(path, format="JPEG")


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def write_vqa_layout(data: Path, folder: str, answers: Dict[int, List[str]]) -> None:
    """LAVIS's four files for VQAv2 / OK-VQA, plus COCO images."""
    ann_dir = data / folder / "annotations"
    questions_file = (
        "v2_OpenEnded_mscoco_val2014_questions.json" if folder == "coco" else "OpenEnded_mscoco_val2014_questions.json"
    )
    annotations_file = "v2_mscoco_val2014_annotations.json" if folder == "coco" else "mscoco_val2014_annotations.json"
    write_json(
        ann_dir / "vqa_val_eval.json",
        [
            {"question_id": qid, "question": q, "image": coco_name(img), "answer": answers[qid]}
            for qid, img, q, *_ in QUESTIONS
        ],
    )
    write_json(ann_dir / "answer_list.json", ["yes", "no"])
    write_json(
        ann_dir / questions_file,
        {
            "info": {},
            "task_type": "Open-Ended",
            "data_type": "mscoco",
            "data_subtype": "val2014",
            "license": {},
            "questions": [{"question_id": qid, "image_id": img, "question": q} for qid, img, q, *_ in QUESTIONS],
        },
    )
    write_json(
        ann_dir / annotations_file,
        {
            "annotations": [
                {
                    "question_id": qid,
                    "image_id": img,
                    "question_type": qtype,
                    "answer_type": atype,
                    "multiple_choice_answer": answers[qid][0] if answers[qid] else "",
                    "answers": [
                        {"answer": a, "answer_confidence": "yes", "answer_id": j + 1}
                        for j, a in enumerate(answers[qid])
                    ],
                }
                for qid, img, _, atype, qtype, _ in QUESTIONS
            ]
        },
    )
    for img in {q[1] for q in QUESTIONS}:
        write_image(data / "coco" / "images" / coco_name(img), img)


def write_gqa_layout(data: Path, answers: Dict[int, str]) -> None:
    write_json(
        data / "gqa" / "annotations" / "testdev_balanced_questions.json",
        [
            {"question_id": str(qid), "question": q, "image": f"n{img}.jpg", "answer": answers[qid]}
            for qid, img, q, *_ in QUESTIONS
        ],
    )
    for img in {q[1] for q in QUESTIONS}:
        write_image(data / "gqa" / "images" / f"n{img}.jpg", img)


def options(tmp_path: Path, ds_name: str, *extra: str) -> List[str]:
    return [
        "model.model_type=tiny",
        f"run.output_dir={tmp_path / 'out'}",
        "run.batch_size_eval=2",
        "run.num_workers=2",
        f"datasets.{ds_name}.vis_processor.eval.image_size=64",
        *extra,
    ]


def write_layout(bench: str, data: Path, predictions: Dict[int, str]) -> None:
    """Human answers that contain each question's prediction the planned number of times."""
    if bench == "gqa":
        write_gqa_layout(
            data, {qid: normalize_gqa_prediction(predictions[qid]) if k else "zzz" for qid, *_, k in QUESTIONS}
        )
    else:
        write_vqa_layout(
            data,
            CONFIGS[bench][3],
            {
                qid: [normalize_vqa_prediction(predictions[qid])] * k + [f"filler {j}" for j in range(10 - k)]
                for qid, *_, k in QUESTIONS
            },
        )


@pytest.fixture
def data_root(tmp_path, monkeypatch) -> Path:
    data = tmp_path / "data"
    monkeypatch.setenv("REGIONVLM_DATA", str(data))
    return data


def setup(bench: str, tmp_path: Path, *extra: str):
    cfg_path, ds_name, split, _ = CONFIGS[bench]
    cfg = Config(ROOT / cfg_path, options(tmp_path, ds_name, *extra))
    task = registry.get_class_or_raise("task", cfg.run_cfg.task).setup_task(cfg)
    return cfg, task, ds_name, split


def one_by_one(model, dataset, run_cfg) -> Dict[int, str]:
    """The model's answer to each question alone (no batching, no image sharing)."""
    kwargs = VQASettings.from_run_cfg(run_cfg).generation_kwargs()
    out = {}
    for item in dataset.items:
        sample = {"image": dataset.load_image(item.image)[None], "text_input": [dataset.text_processor(item.question)]}
        out[int(item.question_id)] = model.predict_answers(sample, **kwargs)[0]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("bench", ["vqav2", "okvqa", "gqa"])
def test_benchmark_config_end_to_end(bench, tmp_path, data_root):
    if bench == "okvqa":
        pytest.importorskip("lemminflect")
    write_layout(bench, data_root, {q[0]: "placeholder" for q in QUESTIONS})
    cfg, task, ds_name, split = setup(bench, tmp_path)
    assert cfg.run_cfg.num_beams == 5 and cfg.run_cfg.max_len == 10 and cfg.run_cfg.min_len == 1
    assert cfg.run_cfg.prompt == "Question: {} Short answer:"
    model = task.build_model(cfg)
    assert model.apply_lemmatizer == (bench == "okvqa")
    predictions = one_by_one(model, task.build_datasets(cfg)[ds_name][split], cfg.run_cfg)

    write_layout(bench, data_root, predictions)
    datasets = task.build_datasets(cfg)
    out = Path(cfg.run_cfg.output_dir)
    metrics = task.evaluate(model, datasets, cfg.run_cfg, out)

    prefix = f"{ds_name}_{split}"
    stem = f"{task.NAME}_{prefix}"  # the evaluation loop's file names
    summary = json.loads((out / f"{stem}.json").read_text())
    records = summary["predictions"]
    assert [r["prediction"] for r in records] == [predictions[q[0]] for q in QUESTIONS]  # batched == one by one
    assert json.loads((out / f"{stem}_metrics.json").read_text())["metrics"] == summary["metrics"]
    result = json.loads((out / f"{stem}_vqa_result.json").read_text())
    assert summary["num_questions"] == 5 and summary["metrics"]["num_skipped"] == 0 and summary["skipped"] == []
    assert summary["settings"]["num_beams"] == 5 and summary["settings"]["prompt"] == "Question: {} Short answer:"
    assert summary["lemmatized_predictions"] == (bench == "okvqa")
    assert not list(out.glob("*.partial.rank*.jsonl"))
    if bench == "gqa":
        assert metrics[f"{prefix}/accuracy"] == pytest.approx(80.0)  # all but q102 (k=0) are right
        assert [r["correct"] for r in records] == [True, False, True, True, True]
        assert result[0] == {"question_id": "101", "pred_ans": predictions[101], "gt_ans": records[0]["answer"]}
    else:
        assert metrics[f"{prefix}/accuracy"] == EXPECTED["overall"] == summary["overall"]
        for answer_type in ("yes/no", "other", "number"):
            assert metrics[f"{prefix}/accuracy/{answer_type}"] == EXPECTED[answer_type]
        assert summary["perQuestionType"]["how many"] == 30.0
        assert [r["accuracy"] for r in records] == [90.0, 0.0, 100.0, 30.0, 100.0]
        assert records[3]["answer_type"] == "number" and len(records[3]["answers"]) == 10
        assert result[0] == {"question_id": 101, "answer": predictions[101]}
    assert metrics["agg_metrics"] == metrics[f"{prefix}/accuracy"]
    assert metrics[f"{prefix}/num_questions"] == 5 and metrics[f"{prefix}/num_skipped"] == 0


def test_resume_after_a_kill_skips_finished_batches(tmp_path, data_root, tiny_model):
    write_gqa_layout(data_root, {q[0]: "yes" for q in QUESTIONS})
    cfg, task, _ds_name, _split = setup("gqa", tmp_path, "run.num_beams=1", "run.max_len=2")
    datasets = task.build_datasets(cfg)
    calls = []
    kill_at = [2]  # the call that "kills" the process (None: never)
    real = tiny_model.predict_answers

    def counting(samples, **kwargs):
        calls.append(len(samples["text_input"]))
        if len(calls) == kill_at[0]:
            raise KeyboardInterrupt("killed")
        return real(samples, **kwargs)

    out = Path(cfg.run_cfg.output_dir)
    tiny_model.predict_answers = counting
    try:
        with pytest.raises(KeyboardInterrupt):
            task.evaluate(tiny_model, datasets, cfg.run_cfg, out)
        assert len(list(out.glob("gqa_gqa_val.*.partial.rank0.jsonl"))) == 1
        calls.clear()
        kill_at[0] = None
        metrics = task.evaluate(tiny_model, datasets, cfg.run_cfg, out)
    finally:
        del tiny_model.predict_answers
    assert sum(calls) == 3  # 5 questions in batches of 2: the first batch was not redone
    assert metrics["gqa_val/num_questions"] == 5
    assert not list(out.glob("*.partial.rank*.jsonl"))


def test_questions_on_one_image_share_a_batch_and_one_decode(data_root, tmp_path):
    write_gqa_layout(data_root, {q[0]: "yes" for q in QUESTIONS})
    cfg, task, ds_name, split = setup("gqa", tmp_path)
    dataset = task.build_datasets(cfg)[ds_name][split]
    batches = dataset.batches(2)
    assert [[dataset.items[i].question_id for i in b] for b in batches] == [["101", "102"], ["103", "104"], ["105"]]
    samples = dataset.load_batch(batches[0])
    assert samples["image"].shape == (1, 3, 64, 64) and samples["image_index"] == [0, 0]
    assert samples["text_input"] == ["is the dog asleep?", "what color is the car?"]  # blip_question
    collated = dataset.collater([dataset[0], dataset[2]])
    assert collated["image"].shape == (2, 3, 64, 64) and collated["question_id"] == ["101", "103"]


def test_missing_image_stops_unless_skipped(tmp_path, data_root, tiny_model):
    write_vqa_layout(data_root, "coco", {q[0]: ["yes"] * 10 for q in QUESTIONS})
    missing = data_root / "coco" / "images" / coco_name(2)
    missing.unlink()
    cfg, task, ds_name, split = setup("vqav2", tmp_path)
    with pytest.raises(MissingFileError, match="skip_missing_images") as err:
        task.build_datasets(cfg)
    assert str(missing) in str(err.value)

    cfg, task, ds_name, split = setup(
        "vqav2", tmp_path, "datasets.coco_vqa.skip_missing_images=true", "run.num_beams=1", "run.max_len=2"
    )
    datasets = task.build_datasets(cfg)
    assert len(datasets[ds_name][split]) == 3
    metrics = task.evaluate(tiny_model, datasets, cfg.run_cfg, Path(cfg.run_cfg.output_dir))
    assert metrics["coco_vqa_val/num_skipped"] == 2 and metrics["coco_vqa_val/num_questions"] == 3
    summary = json.loads((Path(cfg.run_cfg.output_dir) / "vqa_coco_vqa_val.json").read_text())
    assert summary["skipped"] == [
        {"question_id": 103, "image": str(missing)},
        {"question_id": 104, "image": str(missing)},
    ]


def test_missing_annotation_file_names_path_and_layout(tmp_path, data_root):
    write_vqa_layout(data_root, "okvqa", {q[0]: ["yes"] * 10 for q in QUESTIONS})
    ann = data_root / "okvqa" / "annotations" / "mscoco_val2014_annotations.json"
    ann.unlink()
    cfg, task, *_ = setup("okvqa", tmp_path)
    with pytest.raises(MissingFileError, match="annotations") as err:
        task.build_datasets(cfg)
    assert str(ann) in str(err.value) and "datasets.ok_vqa.build_info.annotations.test.storage" in str(err.value)


def test_question_without_answers_is_an_error(tmp_path, data_root):
    answers = {q[0]: ["yes"] * 10 for q in QUESTIONS}
    answers[104] = []
    write_vqa_layout(data_root, "coco", answers)
    cfg, task, *_ = setup("vqav2", tmp_path)
    with pytest.raises(InputError, match="104"):
        task.build_datasets(cfg)  # from the official annotation file
    only_questions = str(data_root / "coco" / "annotations" / "vqa_val_eval.json")
    cfg, task, *_ = setup("vqav2", tmp_path, f"datasets.coco_vqa.build_info.annotations.val.storage=[{only_questions}]")
    with pytest.raises(InputError, match="no human answers"):
        task.build_datasets(cfg)  # from the LAVIS question list alone
    write_json(
        data_root / "gqa" / "annotations" / "testdev_balanced_questions.json",
        [{"question_id": "7", "question": "q?", "image": "n1.jpg"}],
    )
    cfg, task, *_ = setup("gqa", tmp_path)
    with pytest.raises(InputError, match="has no answer"):
        task.build_datasets(cfg)


def test_question_list_alone_scores_from_its_answers(tmp_path, data_root, tiny_model):
    write_vqa_layout(data_root, "coco", {q[0]: ["yes"] * 10 for q in QUESTIONS})
    only_questions = str(data_root / "coco" / "annotations" / "vqa_val_eval.json")
    cfg, task, ds_name, split = setup(
        "vqav2",
        tmp_path,
        "run.num_beams=1",
        "run.max_len=2",
        f"datasets.coco_vqa.build_info.annotations.val.storage=[{only_questions}]",
    )
    datasets = task.build_datasets(cfg)
    assert list(datasets[ds_name]) == ["val"]
    assert datasets[ds_name][split].items[0].answers == ("yes",) * 10
    metrics = task.evaluate(tiny_model, datasets, cfg.run_cfg, Path(cfg.run_cfg.output_dir))
    assert not any("/accuracy/" in k for k in metrics)  # no answer types without the official files


def test_mismatched_official_files_are_errors(tmp_path, data_root):
    write_vqa_layout(data_root, "coco", {q[0]: ["yes"] * 10 for q in QUESTIONS})
    path = data_root / "coco" / "annotations" / "vqa_val_eval.json"
    write_json(path, json.loads(path.read_text())[:4])
    cfg, task, *_ = setup("vqav2", tmp_path)
    with pytest.raises(InputError, match="lacks"):
        task.build_datasets(cfg)


def test_original_gqa_layout_is_read(tmp_path, data_root):
    write_gqa_layout(data_root, {q[0]: "yes" for q in QUESTIONS})
    write_json(
        data_root / "gqa" / "annotations" / "testdev_balanced_questions.json",
        {"201": {"imageId": "n1", "question": "Is it red?", "answer": "no", "fullAnswer": "No."}},
    )
    cfg, task, ds_name, split = setup("gqa", tmp_path)
    item = task.build_datasets(cfg)[ds_name][split].items[0]
    assert (item.question_id, item.image, item.answers) == ("201", "n1.jpg", ("no",))


def test_wrong_settings_are_config_errors(tmp_path, data_root, tiny_model):
    write_gqa_layout(data_root, {q[0]: "yes" for q in QUESTIONS})
    cfg, task, *_ = setup("gqa", tmp_path, "datasets.gqa.vis_processor.eval.image_size=364")
    with pytest.raises(ConfigError, match="is 364 but the model takes 64x64 images"):
        task.build_datasets(cfg)
    datasets = task.build_datasets(Config(ROOT / CONFIGS["gqa"][0], options(tmp_path, "gqa")))
    vqa_task = registry.get_class_or_raise("task", "vqa")()
    with pytest.raises(ConfigError, match="run.task: gqa"):
        vqa_task.evaluate(tiny_model, datasets, cfg.run_cfg, tmp_path / "x")
    for bad in (
        {"inference_method": "rank"},
        {"prompt": "no placeholder"},
        {"num_beams": 0},
        {"min_len": 5, "max_len": 2},
    ):
        with pytest.raises(ConfigError):
            VQASettings.from_run_cfg(bad)
    with pytest.raises(ConfigError, match="test_splits"):
        task.evaluate(tiny_model, datasets, {"test_splits": ["test"]}, tmp_path / "x")


# ---------------------------------------------------------------- run scripts
FAKE_PYTHON = "import json, sys; json.dump(sys.argv[1:], open(sys.argv[0] + '.args', 'w'))"


def run_script(bench: str, tmp_path: Path, env: Dict[str, str], *args: str) -> subprocess.CompletedProcess:
    fake = tmp_path / "fake_python.py"
    fake.write_text(FAKE_PYTHON)
    full_env = {k: v for k, v in os.environ.items() if k not in ("NGPU", "LAUNCHER", "CUDA_VISIBLE_DEVICES")}
    full_env.update({"PYTHON": f"{sys.executable} {fake}", **env})
    return subprocess.run(
        ["bash", str(ROOT / SCRIPTS[bench]), *args], env=full_env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("bench", ["vqav2", "okvqa", "gqa"])
def test_scripts_forward_options(bench, tmp_path):
    cfg = str(ROOT / CONFIGS[bench][0])
    train = str(ROOT / "train.py")
    args_file = tmp_path / "fake_python.py.args"

    proc = run_script(bench, tmp_path, {"NGPU": "0"}, "model.model_type=tiny", "run.output_dir=a b")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(args_file.read_text()) == [
        train,
        "--cfg-path",
        cfg,
        "--options",
        "run.device=cpu",
        "model.model_type=tiny",
        "run.output_dir=a b",
    ]
    proc = run_script(bench, tmp_path, {"NGPU": "2"}, "--options", "run.batch_size_eval=8")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(args_file.read_text()) == [
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        train,
        "--cfg-path",
        cfg,
        "--options",
        "run.batch_size_eval=8",
    ]
    proc = run_script(bench, tmp_path, {"CUDA_VISIBLE_DEVICES": "0,3,5"})
    assert json.loads(args_file.read_text())[2:6] == ["--nproc_per_node=3", train, "--cfg-path", cfg]
    proc = run_script(bench, tmp_path, {"NGPU": "0", "LAUNCHER": f"{sys.executable} {tmp_path / 'fake_python.py'} X"})
    assert json.loads(args_file.read_text())[:2] == ["X", train]
    proc = run_script(bench, tmp_path, {"NGPU": "0"}, "not-an-option")
    assert proc.returncode == 2 and "not a key=value option" in proc.stderr


@pytest.mark.slow
def test_script_runs_train_py_end_to_end(tmp_path, data_root):
    """The shipped script, train.py and the runner with the tiny model on CPU."""
    write_gqa_layout(data_root, {q[0]: "yes" for q in QUESTIONS})
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("NGPU", "LAUNCHER", "PYTHON")}
    env.update({"NGPU": "0", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"})
    args = options(out, "gqa", "run.num_beams=2", "run.max_len=3")
    proc = subprocess.run(
        ["bash", str(ROOT / SCRIPTS["gqa"]), *args], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "out" / "gqa_gqa_val_metrics.json").read_text())["metrics"]
    assert metrics["num_questions"] == 5
    assert len(json.loads((out / "out" / "gqa_gqa_val.json").read_text())["predictions"]) == 5
