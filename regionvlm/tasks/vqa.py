"""Zero-shot VQA tasks: ``vqa`` (VQAv2, OK-VQA: official VQA accuracy) and ``gqa`` (exact match).

Protocol (SPEC section 6): the Q-Former gets no region text; T5 gets
``prompt.format(question)`` (``Question: {} Short answer:``) after the 32 query tokens;
beam search with 5 beams, 1 to 10 new tokens; OK-VQA lemmatizes predictions when
``model.apply_lemmatizer`` is true. All of it happens in ``model.predict_answers``; this
module batches the questions, runs them through the shared resumable loop and scores.

Run settings (``run:``): ``num_beams`` (5), ``max_len`` (10), ``min_len`` (1), ``prompt``,
``inference_method`` (only "generate"), ``length_penalty`` (optional; unset = the model's
default, -1 as in LAVIS), ``batch_size_eval`` (16), ``num_workers`` (4 image-loading
threads; 0 = load in the main thread), ``test_splits`` (default: every built split).

Efficiency: questions are batched by image, so each image of a batch is decoded and run
through the ViT once (VQAv2 has ~5 questions per image); the next batches' images are
decoded in background threads while the model generates.

Outputs in ``output_dir`` (written atomically by the main process), per dataset and split:
``<dataset>_<split>_predictions.json`` (one record per question: prediction, normalized
prediction, references, score), ``<dataset>_<split>_metrics.json`` (overall, per answer
type, per question type, counts, skipped questions, settings) and
``<dataset>_<split>_vqa_result.json`` (LAVIS's result format: ``[{"question_id",
"answer"}]`` for VQA, ``[{"question_id", "pred_ans", "gt_ans"}]`` for GQA, usable with the
official tools). Progress logs ``<dataset>_<split>_<settings hash>.partial.rank*.jsonl``
let a killed run resume; they are removed when the results are written. Questions
skipped for missing images (``skip_missing_images``) are excluded from the accuracy and
listed in the metrics file (the official script would refuse an incomplete result set).
"""
from __future__ import annotations

import hashlib
import json
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch

from regionvlm.common import dist_utils
from regionvlm.common.errors import ConfigError, InputError
from regionvlm.common.io import atomic_write_json
from regionvlm.common.registry import registry
from regionvlm.datasets.datasets.vqa_datasets import VQAEvalDataset
from regionvlm.tasks.base_task import BaseTask
from regionvlm.tasks.eval_loop import clear_partials, finished_items, run_resumable
from regionvlm.tasks.vqa_metrics import score_gqa, score_vqa

DEFAULT_PROMPT = "Question: {} Short answer:"


@dataclass(frozen=True)
class VQASettings:
    """Generation and batching settings of a VQA evaluation (from ``run:``)."""

    num_beams: int = 5
    max_len: int = 10
    min_len: int = 1
    prompt: str = DEFAULT_PROMPT
    length_penalty: Optional[float] = None
    batch_size: int = 16
    num_workers: int = 4

    @classmethod
    def from_run_cfg(cls, run_cfg: Optional[Mapping[str, Any]]) -> "VQASettings":
        run_cfg = run_cfg or {}
        method = run_cfg.get("inference_method", "generate")
        if method != "generate":
            raise ConfigError(f"run.inference_method '{method}' is not supported; zero-shot VQA generates "
                              "answers (set run.inference_method: generate).")

        def integer(key: str, default: int, minimum: int) -> int:
            value = run_cfg.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"run.{key} must be an integer >= {minimum}, got {value!r}.")
            return value

        prompt = run_cfg.get("prompt", DEFAULT_PROMPT)
        if not isinstance(prompt, str) or (prompt and "{}" not in prompt):
            raise ConfigError(f"run.prompt must be a string with '{{}}' where the question goes "
                              f"(e.g. {DEFAULT_PROMPT!r}), got {prompt!r}.")
        length_penalty = run_cfg.get("length_penalty", None)
        if length_penalty is not None and (isinstance(length_penalty, bool)
                                           or not isinstance(length_penalty, (int, float))):
            raise ConfigError(f"run.length_penalty must be a number, got {length_penalty!r}.")
        settings = cls(num_beams=integer("num_beams", 5, 1), max_len=integer("max_len", 10, 1),
                       min_len=integer("min_len", 1, 0), prompt=prompt,
                       length_penalty=None if length_penalty is None else float(length_penalty),
                       batch_size=integer("batch_size_eval", 16, 1), num_workers=integer("num_workers", 4, 0))
        if settings.min_len > settings.max_len:
            raise ConfigError(f"run.min_len ({settings.min_len}) exceeds run.max_len ({settings.max_len}).")
        return settings

    def generation_kwargs(self) -> Dict[str, Any]:
        kwargs: Dict[str, Any] = dict(num_beams=self.num_beams, max_len=self.max_len, min_len=self.min_len,
                                      prompt=self.prompt, inference_method="generate")
        if self.length_penalty is not None:
            kwargs["length_penalty"] = self.length_penalty
        return kwargs


class BatchPrefetcher:
    """Loads the images of the next batches in threads while the model works on this one.

    ``order`` is the sequence of keys the loop will ask for; a key asked out of order is
    loaded on the spot. Futures of batches passed over are dropped."""

    def __init__(self, load, batches: Mapping[str, Sequence[int]], order: Sequence[str],
                 workers: int, depth: int = 2) -> None:
        self._load = load
        self._batches = batches
        self._order = list(order)
        self._pos = {k: i for i, k in enumerate(self._order)}
        self._depth = depth
        self._pool = ThreadPoolExecutor(max_workers=workers) if workers > 0 else None
        self._futures: Dict[str, Future] = {}
        self._next = 0

    def get(self, key: str) -> Dict[str, Any]:
        pos = self._pos.get(key)
        if self._pool is None or pos is None:
            return self._load(self._batches[key])
        for stale in [k for k in self._futures if self._pos[k] < pos]:
            self._futures.pop(stale).cancel()
        self._next = max(self._next, pos)
        while self._next < min(len(self._order), pos + 1 + self._depth):
            k = self._order[self._next]
            if k not in self._futures and self._next != pos:
                self._futures[k] = self._pool.submit(self._load, self._batches[k])
            self._next += 1
        future = self._futures.pop(key, None)
        return future.result() if future is not None else self._load(self._batches[key])

    def close(self) -> None:
        if self._pool is not None:
            for f in self._futures.values():
                f.cancel()
            self._pool.shutdown(wait=True)

    def __enter__(self) -> "BatchPrefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _batch_key(dataset: VQAEvalDataset, indices: Sequence[int]) -> str:
    return "|".join(str(dataset.items[i].question_id) for i in indices)


@registry.register_task("vqa")
class VQATask(BaseTask):
    """VQAv2 / OK-VQA: official VQA accuracy, per answer type and per question type."""

    metric = "vqa"

    def evaluate(self, model: torch.nn.Module, datasets: Dict[str, Dict[str, Any]],
                 run_cfg: Any, output_dir: Path) -> Dict[str, float]:
        settings = VQASettings.from_run_cfg(run_cfg)
        jobs = self._select(datasets, (run_cfg or {}).get("test_splits", None))
        was_training = model.training
        model.eval()
        metrics: Dict[str, float] = {}
        try:
            for name, split, dataset in jobs:
                metrics.update(self.evaluate_split(model, dataset, name, split, settings, Path(output_dir)))
        finally:
            model.train(was_training)
        if len(jobs) == 1:
            name, split, _ = jobs[0]
            metrics["agg_metrics"] = metrics[f"{name}_{split}/accuracy"]
        return metrics

    def _select(self, datasets: Mapping[str, Mapping[str, Any]], test_splits: Optional[Sequence[str]]):
        wanted = None if test_splits is None else [str(s) for s in test_splits]
        jobs = []
        for name, splits in datasets.items():
            for split, dataset in splits.items():
                if wanted is not None and split not in wanted:
                    continue
                if not isinstance(dataset, VQAEvalDataset) or dataset.metric != self.metric:
                    other = getattr(dataset, "metric", None)
                    hint = f"set run.task: {other}" if other in ("vqa", "gqa") else "use a VQA dataset builder"
                    raise ConfigError(f"dataset '{name}' ({split}) cannot be scored by task "
                                      f"'{self.metric}': {hint}.")
                jobs.append((name, split, dataset))
        if not jobs:
            have = {n: sorted(s) for n, s in datasets.items()}
            raise ConfigError(f"no dataset split to evaluate: run.test_splits={wanted} but the datasets have {have}.")
        return jobs

    def evaluate_split(self, model: torch.nn.Module, dataset: VQAEvalDataset, name: str, split: str,
                       settings: VQASettings, output_dir: Path) -> Dict[str, float]:
        """Predict every question of one split (resumable, sharded), score, write the results."""
        if len(dataset) == 0:
            raise InputError(f"{name} ({split}) has no question to evaluate"
                             f"{f' ({len(dataset.skipped)} skipped for missing images)' if dataset.skipped else ''}.")
        lemmatized = bool(getattr(model, "apply_lemmatizer", False))
        batches = dataset.batches(settings.batch_size)
        by_key = {_batch_key(dataset, b): b for b in batches}
        keys = list(by_key)
        signature = json.dumps({**asdict(settings), "lemmatized": lemmatized, "n": len(dataset)}, sort_keys=True)
        log_name = f"{name}_{split}_{hashlib.sha256(signature.encode()).hexdigest()[:10]}"
        done = finished_items(output_dir, log_name)
        rank, world = dist_utils.get_rank(), dist_utils.get_world_size()
        order = [k for k in keys[rank::world] if k not in done]
        expected_size = getattr(model, "image_size", None)

        with BatchPrefetcher(dataset.load_batch, by_key, order, settings.num_workers) as prefetch:
            def process(key: str) -> List[str]:
                samples = prefetch.get(key)
                size = samples["image"].shape[-1]
                if expected_size is not None and size != expected_size:
                    raise ConfigError(f"images of {name} are processed to {size} px but the model expects "
                                      f"{expected_size} px: set datasets.{name}.vis_processor.eval.image_size="
                                      f"{expected_size}.")
                answers = model.predict_answers(samples, **settings.generation_kwargs())
                if len(answers) != len(by_key[key]):
                    raise RuntimeError(f"the model returned {len(answers)} answers for {len(by_key[key])} questions.")
                return [str(a) for a in answers]

            results = run_resumable(keys, key=lambda k: k, process=process, out_dir=output_dir,
                                    name=log_name, desc=f"{name}/{split}")
        predictions: List[Optional[str]] = [None] * len(dataset)
        for key, answers in zip(keys, results):
            for i, answer in zip(by_key[key], answers):
                predictions[i] = answer
        report = self.score(dataset, predictions)
        if dist_utils.is_main_process():
            self.write_results(dataset, name, split, predictions, report, settings, lemmatized, output_dir)
        clear_partials(output_dir, log_name)
        return self.flat_metrics(f"{name}_{split}", report, len(dataset.skipped))

    # ------------------------------------------------------------------ scoring
    def score(self, dataset: VQAEvalDataset, predictions: Sequence[str]) -> Dict[str, Any]:
        return score_vqa(predictions, dataset.references())

    def question_record(self, item, prediction: str, scored: Mapping[str, Any]) -> Dict[str, Any]:
        return {"question_id": item.question_id, "question": item.question, "image": item.image,
                "prediction": prediction, "prediction_normalized": scored["prediction_normalized"],
                "accuracy": scored["accuracy"], "answers": list(item.answers),
                "answer_type": item.answer_type, "question_type": item.question_type}

    def result_record(self, item, prediction: str) -> Dict[str, Any]:
        return {"question_id": item.question_id, "answer": prediction}

    @staticmethod
    def flat_metrics(prefix: str, report: Mapping[str, Any], num_skipped: int) -> Dict[str, float]:
        out = {f"{prefix}/accuracy": report["overall"]}
        for answer_type, value in report.get("perAnswerType", {}).items():
            out[f"{prefix}/accuracy/{answer_type}"] = value
        out[f"{prefix}/num_questions"] = report["num_questions"]
        out[f"{prefix}/num_skipped"] = num_skipped
        return out

    def write_results(self, dataset: VQAEvalDataset, name: str, split: str, predictions: Sequence[str],
                      report: Mapping[str, Any], settings: VQASettings, lemmatized: bool,
                      output_dir: Path) -> None:
        records = [self.question_record(item, pred, scored)
                   for item, pred, scored in zip(dataset.items, predictions, report["per_question"])]
        summary = {k: v for k, v in report.items() if k != "per_question"}
        metrics = {"dataset": name, "split": split, "task": self.metric, **summary,
                   "num_skipped": len(dataset.skipped), "skipped": dataset.skipped,
                   "settings": asdict(settings), "lemmatized_predictions": lemmatized}
        atomic_write_json(output_dir / f"{name}_{split}_predictions.json", records)
        atomic_write_json(output_dir / f"{name}_{split}_vqa_result.json",
                          [self.result_record(item, pred) for item, pred in zip(dataset.items, predictions)])
        atomic_write_json(output_dir / f"{name}_{split}_metrics.json", metrics)


@registry.register_task("gqa")
class GQATask(VQATask):
    """GQA: exact match of the normalized prediction with the stored answer (LAVIS's GQATask)."""

    metric = "gqa"

    def score(self, dataset: VQAEvalDataset, predictions: Sequence[str]) -> Dict[str, Any]:
        return score_gqa(predictions, [it.answers[0] for it in dataset.items],
                         [it.question_id for it in dataset.items])

    def question_record(self, item, prediction: str, scored: Mapping[str, Any]) -> Dict[str, Any]:
        return {"question_id": item.question_id, "question": item.question, "image": item.image,
                "prediction": prediction, "prediction_normalized": scored["prediction_normalized"],
                "answer": item.answers[0], "correct": scored["correct"]}

    def result_record(self, item, prediction: str) -> Dict[str, Any]:
        return {"question_id": item.question_id, "pred_ans": prediction, "gt_ans": item.answers[0]}
