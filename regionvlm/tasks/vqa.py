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

Outputs in ``output_dir`` (the evaluation loop's names, written atomically by the main
process): ``<task>_<dataset>_<split>.json`` (overall, per answer type and per question type
accuracy, counts, skipped questions, settings, and one record per question: prediction,
normalized prediction, references, score), ``..._metrics.json`` (the metrics alone) and
``..._vqa_result.json`` (LAVIS's result format: ``[{"question_id", "answer"}]`` for VQA,
``[{"question_id", "pred_ans", "gt_ans"}]`` for GQA, usable with the official tools).
Questions skipped for missing images (``skip_missing_images``) are excluded from the
accuracy and listed (the official script would refuse an incomplete result set).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from regionvlm.common.errors import ConfigError, InputError
from regionvlm.common.registry import registry
from regionvlm.common.settings import setting
from regionvlm.datasets.vqa_datasets import VQAEvalDataset
from regionvlm.tasks.evaluation import DecodingEvalSettings, EvalTask, SplitEvaluator, SplitResult
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


class VQAEvaluator(SplitEvaluator):
    """VQAv2 / OK-VQA: a unit is a batch of questions (grouped by image) that
    ``model.predict_answers`` answers; the official VQA accuracy scores them."""

    def units(self) -> List[Tuple[str, List[int]]]:
        ds = self.dataset
        if len(ds) == 0:
            raise InputError(
                f"{ds.eval_name} ({ds.split}) has no question to evaluate"
                f"{f' ({len(ds.skipped)} skipped for missing images)' if ds.skipped else ''}."
            )
        batches = ds.batches(self.settings.batch_size_eval)
        return [("|".join(str(ds.items[i].question_id) for i in b), b) for b in batches]

    @property
    def lemmatized(self) -> bool:
        return bool(getattr(self.model, "apply_lemmatizer", False))

    def identity(self) -> Dict[str, Any]:
        return {**self.dataset.identity(), "lemmatized": self.lemmatized}

    def load(self, indices: List[int]) -> Dict[str, Any]:
        return self.dataset.load_batch(indices)

    def process(self, indices: List[int], samples: Dict[str, Any]) -> Dict[str, str]:
        answers = self.model.predict_answers(samples, **self.settings.generation_kwargs())
        if len(answers) != len(indices):
            raise RuntimeError(f"the model returned {len(answers)} answers for {len(indices)} questions.")
        return {str(i): str(a) for i, a in zip(indices, answers)}

    def finish(self, outputs: List[Dict[str, str]]) -> SplitResult:
        ds = self.dataset
        answers = {int(i): a for unit in outputs for i, a in unit.items()}
        predictions = [answers[i] for i in range(len(ds))]
        report = self.score(predictions)
        records = [self.question_record(it, p, sc) for it, p, sc in zip(ds.items, predictions, report["per_question"])]
        details = {
            **{k: v for k, v in report.items() if k != "per_question"},
            "lemmatized_predictions": self.lemmatized,
            "skipped": ds.skipped,
            "predictions": records,
        }
        official = [self.result_record(it, p) for it, p in zip(ds.items, predictions)]
        return SplitResult(self.flat_metrics(report, len(ds.skipped)), details, {"vqa_result": official})

    # -- scoring (GQA overrides)
    def score(self, predictions: Sequence[str]) -> Dict[str, Any]:
        return score_vqa(predictions, self.dataset.references())

    def question_record(self, item: Any, prediction: str, scored: Mapping[str, Any]) -> Dict[str, Any]:
        return {
            **self.prediction_fields(item, prediction, scored),
            "accuracy": scored["accuracy"],
            "answers": list(item.answers),
            "answer_type": item.answer_type,
            "question_type": item.question_type,
        }

    @staticmethod
    def prediction_fields(item: Any, prediction: str, scored: Mapping[str, Any]) -> Dict[str, Any]:
        """The fields every per-question record starts with (VQA's and GQA's)."""
        return {
            "question_id": item.question_id,
            "question": item.question,
            "image": item.image,
            "prediction": prediction,
            "prediction_normalized": scored["prediction_normalized"],
        }

    def result_record(self, item: Any, prediction: str) -> Dict[str, Any]:
        """LAVIS's result layout (what the official tools read)."""
        return {"question_id": item.question_id, "answer": prediction}

    @staticmethod
    def flat_metrics(report: Mapping[str, Any], num_skipped: int) -> Dict[str, float]:
        out = {"accuracy": report["overall"]}
        for answer_type, value in report.get("perAnswerType", {}).items():
            out[f"accuracy/{answer_type}"] = value
        out["num_questions"] = report["num_questions"]
        out["num_skipped"] = num_skipped
        return out


class GQAEvaluator(VQAEvaluator):
    """GQA: exact match of the normalized prediction with the stored answer (LAVIS's GQATask)."""

    def score(self, predictions: Sequence[str]) -> Dict[str, Any]:
        items = self.dataset.items
        return score_gqa(predictions, [it.answers[0] for it in items], [it.question_id for it in items])

    def question_record(self, item: Any, prediction: str, scored: Mapping[str, Any]) -> Dict[str, Any]:
        return {
            **self.prediction_fields(item, prediction, scored),
            "answer": item.answers[0],
            "correct": scored["correct"],
        }

    def result_record(self, item: Any, prediction: str) -> Dict[str, Any]:
        return {"question_id": item.question_id, "pred_ans": prediction, "gt_ans": item.answers[0]}


@registry.register_task("vqa")
class VQATask(EvalTask):
    """VQAv2 / OK-VQA: official VQA accuracy, per answer type and per question type."""

    NAME = "vqa"
    Settings = VQASettings
    DATASET_TYPES = (VQAEvalDataset,)
    Evaluator = VQAEvaluator
    HEADLINE = "accuracy"

    def select(self, datasets: Mapping[str, Mapping[str, Any]], settings: VQASettings):
        jobs = super().select(datasets, settings)
        for name, split, dataset in jobs:
            if dataset.metric != self.NAME:
                raise ConfigError(
                    f"dataset '{name}' ({split}) cannot be scored by task '{self.NAME}': "
                    f"set run.task: {dataset.metric}."
                )
        return jobs


@registry.register_task("gqa")
class GQATask(VQATask):
    """GQA balanced test-dev, scored by exact match."""

    NAME = "gqa"
    Evaluator = GQAEvaluator
