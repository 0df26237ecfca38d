"""Zero-shot VQA tasks: ``vqa`` (VQAv2, OK-VQA: official VQA accuracy) and ``gqa`` (exact match).

Protocol (docs/evaluation.md): the Q-Former gets no region text; T5 gets
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

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch

from regionvlm.common import dist_utils
from regionvlm.common.errors import ConfigError, InputError
from regionvlm.common.io import atomic_write_json
from regionvlm.common.registry import registry
from regionvlm.common.settings import setting
from regionvlm.datasets.vqa_datasets import VQAEvalDataset
from regionvlm.tasks.evaluation import (
    DecodingEvalSettings,
    EvalTask,
    Prefetcher,
    clear_partials,
    fingerprint,
    pending_keys,
    run_resumable,
)
from regionvlm.tasks.vqa_metrics import score_gqa, score_vqa

DEFAULT_PROMPT = "Question: {} Short answer:"


@dataclass(frozen=True)
class VQASettings(DecodingEvalSettings):
    """Generation and batching settings of a VQA evaluation (from ``run:``)."""

    batch_size_eval: int = setting(16, min=1, help="questions per model call")
    max_len: int = setting(10, min=1, help="new tokens")
    prompt: str = setting(DEFAULT_PROMPT, help="T5 prompt; '{}' is replaced by the question")
    length_penalty: Optional[float] = setting(None, help="unset: the model's default, -1 as in LAVIS")
    inference_method: str = setting("generate", choices=("generate",), help="zero-shot VQA generates answers")

    def validate(self, section: str) -> None:
        if self.prompt and "{}" not in self.prompt:
            raise ConfigError(
                f"`{section}.prompt` must contain '{{}}' where the question goes "
                f"(e.g. {DEFAULT_PROMPT!r}), got {self.prompt!r}."
            )
        super().validate(section)

    def generation_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments of ``model.predict_answers`` (LAVIS's names)."""
        kwargs: Dict[str, Any] = dict(
            num_beams=self.num_beams,
            max_len=self.max_len,
            min_len=self.min_len,
            prompt=self.prompt,
            inference_method="generate",
        )
        if self.length_penalty is not None:
            kwargs["length_penalty"] = self.length_penalty
        return kwargs


def _batch_key(dataset: VQAEvalDataset, indices: Sequence[int]) -> str:
    return "|".join(str(dataset.items[i].question_id) for i in indices)


@registry.register_task("vqa")
class VQATask(EvalTask):
    """VQAv2 / OK-VQA: official VQA accuracy, per answer type and per question type."""

    NAME = "vqa"
    Settings = VQASettings
    DATASET_TYPES = (VQAEvalDataset,)
    HEADLINE = "accuracy"
    metric = "vqa"

    def select(self, datasets: Mapping[str, Mapping[str, Any]], settings: VQASettings):
        jobs = super().select(datasets, settings)
        for name, split, dataset in jobs:
            if dataset.metric != self.metric:
                raise ConfigError(
                    f"dataset '{name}' ({split}) cannot be scored by task '{self.metric}': "
                    f"set run.task: {dataset.metric}."
                )
        return jobs

    def evaluate_split(
        self,
        model: torch.nn.Module,
        dataset: VQAEvalDataset,
        name: str,
        split: str,
        settings: VQASettings,
        output_dir: Path,
    ) -> Dict[str, Any]:
        """Predict every question of one split (resumable, sharded), score, write the results."""
        if len(dataset) == 0:
            raise InputError(
                f"{name} ({split}) has no question to evaluate"
                f"{f' ({len(dataset.skipped)} skipped for missing images)' if dataset.skipped else ''}."
            )
        lemmatized = bool(getattr(model, "apply_lemmatizer", False))
        batches = dataset.batches(settings.batch_size_eval)
        by_key = {_batch_key(dataset, b): b for b in batches}
        keys = list(by_key)
        identity = {**dataset.identity(), "lemmatized": lemmatized}
        log_name = f"{name}_{split}_{fingerprint(settings, identity, model)}"

        def load(key: str) -> Dict[str, Any]:
            return dataset.load_batch(by_key[key])

        with Prefetcher(
            pending_keys(keys, output_dir, log_name), load, depth=2, workers=settings.num_workers
        ) as prefetch:

            def process(key: str) -> List[str]:
                answers = model.predict_answers(prefetch.get(key), **settings.generation_kwargs())
                if len(answers) != len(by_key[key]):
                    raise RuntimeError(f"the model returned {len(answers)} answers for {len(by_key[key])} questions.")
                return [str(a) for a in answers]

            results = run_resumable(
                keys, key=lambda k: k, process=process, out_dir=output_dir, name=log_name, desc=f"{name}/{split}"
            )
        predictions: List[Optional[str]] = [None] * len(dataset)
        for key, answers in zip(keys, results):
            for i, answer in zip(by_key[key], answers):
                predictions[i] = answer
        report = self.score(dataset, predictions)
        if dist_utils.is_main_process():
            self.write_results(dataset, name, split, predictions, report, settings, lemmatized, output_dir)
        clear_partials(output_dir, log_name)
        return self.flat_metrics(report, len(dataset.skipped))

    # ------------------------------------------------------------------ scoring
    def score(self, dataset: VQAEvalDataset, predictions: Sequence[str]) -> Dict[str, Any]:
        return score_vqa(predictions, dataset.references())

    def question_record(self, item, prediction: str, scored: Mapping[str, Any]) -> Dict[str, Any]:
        return {
            "question_id": item.question_id,
            "question": item.question,
            "image": item.image,
            "prediction": prediction,
            "prediction_normalized": scored["prediction_normalized"],
            "accuracy": scored["accuracy"],
            "answers": list(item.answers),
            "answer_type": item.answer_type,
            "question_type": item.question_type,
        }

    def result_record(self, item, prediction: str) -> Dict[str, Any]:
        return {"question_id": item.question_id, "answer": prediction}

    @staticmethod
    def flat_metrics(report: Mapping[str, Any], num_skipped: int) -> Dict[str, float]:
        out = {"accuracy": report["overall"]}
        for answer_type, value in report.get("perAnswerType", {}).items():
            out[f"accuracy/{answer_type}"] = value
        out["num_questions"] = report["num_questions"]
        out["num_skipped"] = num_skipped
        return out

    def write_results(
        self,
        dataset: VQAEvalDataset,
        name: str,
        split: str,
        predictions: Sequence[str],
        report: Mapping[str, Any],
        settings: VQASettings,
        lemmatized: bool,
        output_dir: Path,
    ) -> None:
        records = [
            self.question_record(item, pred, scored)
            for item, pred, scored in zip(dataset.items, predictions, report["per_question"])
        ]
        summary = {k: v for k, v in report.items() if k != "per_question"}
        metrics = {
            "dataset": name,
            "split": split,
            "task": self.metric,
            **summary,
            "num_skipped": len(dataset.skipped),
            "skipped": dataset.skipped,
            "settings": settings.as_dict(),
            "lemmatized_predictions": lemmatized,
        }
        atomic_write_json(output_dir / f"{name}_{split}_predictions.json", records)
        atomic_write_json(
            output_dir / f"{name}_{split}_vqa_result.json",
            [self.result_record(item, pred) for item, pred in zip(dataset.items, predictions)],
        )
        atomic_write_json(output_dir / f"{name}_{split}_metrics.json", metrics)


@registry.register_task("gqa")
class GQATask(VQATask):
    """GQA: exact match of the normalized prediction with the stored answer (LAVIS's GQATask)."""

    NAME = "gqa"
    metric = "gqa"

    def score(self, dataset: VQAEvalDataset, predictions: Sequence[str]) -> Dict[str, Any]:
        return score_gqa(predictions, [it.answers[0] for it in dataset.items], [it.question_id for it in dataset.items])

    def question_record(self, item, prediction: str, scored: Mapping[str, Any]) -> Dict[str, Any]:
        return {
            "question_id": item.question_id,
            "question": item.question,
            "image": item.image,
            "prediction": prediction,
            "prediction_normalized": scored["prediction_normalized"],
            "answer": item.answers[0],
            "correct": scored["correct"],
        }

    def result_record(self, item, prediction: str) -> Dict[str, Any]:
        return {"question_id": item.question_id, "pred_ans": prediction, "gt_ans": item.answers[0]}
