"""Open-vocabulary region classification (``region_classification``): Osprey's LVIS and PACO
protocol (docs/region_classification.md).

Per region the model is asked ``"What is the category of <region>? Using only one word or
phrase."`` and its answer is scored against the region's class name by semantic similarity
(SS) and semantic IoU (S-IoU) (:mod:`regionvlm.tasks.region_classification_metrics`).

How RegionVLM sees a region: ``num_points`` points drawn in its mask (the model's K by default)
from ``item_rng(seed, "<file_name>/<region index>")``, written as region text for the Q-Former,
whose 32 projected outputs (the region's soft tokens) go into the question for T5. Where they
go is the ``layout`` of the region dialogue (:mod:`regionvlm.processors.region_layouts`, the
code the chat uses): ``inline`` (default) puts them where ``<region>`` stands in the question,
as the dialogue does with ``[1]`` and as Osprey splices its mask tokens into the same sentence;
``let`` and ``qformer_first`` are the authors' other layouts. Decoding defaults are
``predict_answers``' (beam 5, at most 10 new tokens, length penalty -1).

Efficiency: a unit is a run of regions of one image (``batch_size_eval`` at most); its image is
decoded, preprocessed and encoded by the ViT once, its masks decoded and its points drawn on
prefetch threads; the Q-Former, T5 encoder and beam search run once per unit.

Files (the evaluation loop's names; ``-<layout>`` follows the task name for a layout other
than ``inline``): ``region_classification_<dataset>_<split>.json`` (metrics, settings, one
record per region: file_name, region, category, class_name, region_text, answer,
answer_processed, semantic_similarity, semantic_iou), ``..._metrics.json`` and
``..._answers.json`` (``[{"file_name", "region", "answer"}]``: what the metric command reads).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from regionvlm.common.cli import echo
from regionvlm.common.errors import ConfigError
from regionvlm.common.registry import registry
from regionvlm.common.settings import setting
from regionvlm.datasets.region_classification_datasets import RegionClassBatch, RegionClassDataset
from regionvlm.models.generation import GenerationSettings
from regionvlm.processors.region_layouts import LAYOUTS, first_mentions, layout_segments, parse_region_refs
from regionvlm.processors.text_processors import BlipCaptionProcessor
from regionvlm.tasks.evaluation import (
    DecodingEvalSettings,
    EvalTask,
    SplitEvaluator,
    SplitResult,
    item_rng,
    region_image_embeds,
)
from regionvlm.tasks.region_classification_metrics import (
    SentenceSimilarity,
    check_similarity_model,
    require_sentence_transformers,
    score_answers,
)

QUESTION = "What is the category of <region>? Using only one word or phrase."
PLACEHOLDER = "<region>"


@dataclass(frozen=True)
class RegionClassificationSettings(DecodingEvalSettings):
    """Osprey's question, ``predict_answers``' decoding, the dialogue's ``inline`` layout."""

    max_len: int = setting(10, min=1, help="new tokens")
    length_penalty: float = setting(-1.0, help="beam-search length penalty (predict_answers: -1)")
    num_points: Optional[int] = setting(None, min=1, help="points per region (default: the model's)")
    layout: str = setting("inline", choices=LAYOUTS, help="where the region's soft tokens go in the question")
    question: str = setting(QUESTION, help=f"the question; {PLACEHOLDER} stands for the region")
    similarity_model: Optional[str] = setting(None, help="folder of sentence-transformers/all-MiniLM-L6-v2")

    def validate(self, section: str) -> None:
        if self.question.count(PLACEHOLDER) != 1:
            raise ConfigError(
                f"`{section}.question` must contain {PLACEHOLDER} exactly once (where the region goes), "
                f"got {self.question!r}."
            )
        if first_mentions(parse_region_refs(self.question)):
            raise ConfigError(
                f"`{section}.question` holds a region marker like [1]; write {PLACEHOLDER} for the region, got "
                f"{self.question!r}."
            )
        super().validate(section)

    def generation(self) -> GenerationSettings:
        return GenerationSettings.create(
            "run",
            num_beams=self.num_beams,
            max_len=self.max_len,
            min_len=self.min_len,
            length_penalty=self.length_penalty,
        )

    def dialogue_question(self) -> str:
        """The question as the dialogue writes it: region 1 as ``[1]``."""
        return self.question.replace(PLACEHOLDER, "[1]")


def question_segments(settings: RegionClassificationSettings, soft_tokens: torch.Tensor) -> List[Any]:
    """The T5 input of one region (before ``</s>``): the question under ``settings.layout``,
    laid out as the dialogue lays out ``"What is the category of [1]? ..."``."""
    return layout_segments(settings.layout, settings.dialogue_question(), lambda _: soft_tokens)[0]


class RegionClassEvaluator(SplitEvaluator):
    """A unit is a batch of regions grouped by image; the answers are scored in ``finish``."""

    def __init__(
        self, model: Any, dataset: RegionClassDataset, settings: RegionClassificationSettings, output_dir: Path
    ) -> None:
        super().__init__(model, dataset, settings, output_dir)
        self.generation = settings.generation()
        self.text_processor = getattr(dataset, "text_processor", None) or BlipCaptionProcessor()

    def units(self) -> List[Tuple[str, List[int]]]:
        return self.dataset.units(self.settings.batch_size_eval)

    def load(self, positions: List[int]) -> Tuple[RegionClassBatch, List[str]]:
        batch = self.dataset.load_unit(positions)
        texts = [self.region_text(r, f"{name}/{index}") for r, (name, index) in zip(batch.regions, batch.keys)]
        return batch, texts

    def region_text(self, region: Any, item: str) -> str:
        """The Q-Former text of a region: K points drawn from ``item_rng(seed, item)``."""
        return self.text_processor(region.to_text(self.settings.num_points, item_rng(self.settings.seed, item)))

    def segments(self, soft_tokens: torch.Tensor) -> List[Any]:
        """The T5 input of one region (before ``</s>``) under the configured layout."""
        return question_segments(self.settings, soft_tokens)

    def process(self, positions: List[int], inputs: Tuple[RegionClassBatch, List[str]]) -> List[Dict[str, Any]]:
        batch, texts = inputs
        model = self.model
        queries = model.region_queries(region_image_embeds(model, batch.images, batch.image_index), texts)
        t5_embeds, mask = model.embed_segments([self.segments(q) for q in queries])
        answers = model.generate_from_embeds(t5_embeds, mask, self.generation)
        return [
            {"file_name": name, "region": index, "category": category, "region_text": text, "answer": answer}
            for (name, index), category, text, answer in zip(batch.keys, batch.categories, texts, answers)
        ]

    def finish(self, outputs: List[List[Dict[str, Any]]]) -> SplitResult:
        rows = [row for unit in outputs for row in unit]
        similarity = SentenceSimilarity(self.settings.similarity_model, "run.similarity_model", _device(self.model))
        scores = score_answers([r["answer"] for r in rows], [r["category"] for r in rows], similarity)
        records = [
            {
                "file_name": r["file_name"],
                "region": r["region"],
                "category": r["category"],
                "class_name": name,
                "region_text": r["region_text"],
                "answer": r["answer"],
                "answer_processed": processed,
                "semantic_similarity": ss,
                "semantic_iou": iou,
            }
            for r, name, processed, ss, iou in zip(
                rows, scores.class_names, scores.answers_processed, scores.similarity, scores.iou
            )
        ]
        answers = [{"file_name": r["file_name"], "region": r["region"], "answer": r["answer"]} for r in rows]
        details = {"regions": records}
        return SplitResult(scores.metrics(), details, {"answers": answers})


def _device(model: Any) -> str:
    device = getattr(model, "device", None)
    return str(device) if device is not None else "cpu"


@registry.register_task("region_classification")
class RegionClassificationTask(EvalTask):
    """Osprey's referring object classification on LVIS and PACO: SS and S-IoU."""

    NAME = "region_classification"
    Settings = RegionClassificationSettings
    DATASET_TYPES = (RegionClassDataset,)
    Evaluator = RegionClassEvaluator
    HEADLINE = "semantic_similarity"
    VARIANT = ("layout", "inline")

    def prepare(self, model: Any, settings: RegionClassificationSettings) -> RegionClassificationSettings:
        """K from the model; the sentence model's folder checked before the first image."""
        check_similarity_model(settings.similarity_model, "run.similarity_model")
        require_sentence_transformers()
        return super().prepare(model, settings)

    def report(self, eval_name: str, split: str, metrics: Dict[str, Any]) -> None:
        echo(
            f"[{self.NAME}] {eval_name}_{split}: semantic similarity {metrics['semantic_similarity']:.2f}, "
            f"semantic IoU {metrics['semantic_iou']:.2f} ({metrics['regions']} regions)"
        )
