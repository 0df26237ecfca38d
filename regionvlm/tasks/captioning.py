"""Captioning, whole images or regions, in one task: ``captioning`` (LAVIS's name; COCO's
decoding defaults) and ``region_captioning`` (RegionVLM's training task; greedy decoding
defaults for held-out evaluation). Their evaluation is the same :class:`CaptionEvaluator`.

Each sample to caption is an image and a region: geometry (a box, mask, points or trace:
``num_points`` points drawn from ``item_rng(seed, <result id>)``, the model's K by default),
a region text the dataset already made (held-out Localized Narratives), or none (the whole
image: the official EMPTY region text). T5 gets the region's 32 soft tokens and no text
prompt. Any dataset that implements :class:`~regionvlm.datasets.protocol.CaptionEvalDataset`
is scored, so a region-captioning benchmark is a dataset, not a task: COCO Karpathy
(``coco_caption``), RefCOCOg and Visual Genome regions, a held-out LN file.

Metrics: the COCO caption evaluation package (``pycocoevalcap``: BLEU-1..4, METEOR, ROUGE-L,
CIDEr, SPICE; :mod:`regionvlm.tasks.caption_metrics`) against the dataset's references, and
exact match (prediction equal to one reference, stripped). What the package cannot compute
here (no Java, SPICE's models offline, ``run.skip_metrics``) is listed under ``skipped`` with
the reason; the captions are written either way and can be scored later with
``python -m regionvlm.tasks.caption_metrics``. ``agg_metrics`` is CIDEr + BLEU-4 as in LAVIS
(exact match when CIDEr is not available).

Files (the loop's names): ``captioning_<dataset>_<split>.json`` (metrics, settings, every
caption with its region text and references), ``..._metrics.json``, ``..._captions.json``
(LAVIS's result layout ``[{"image_id", "caption"}]``) and, for datasets without a COCO-format
ground truth file, ``..._references.json`` (their ground truth, or one written from the
references, whose image ids are the captions' ids: the pair scores offline with the command
above).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Hashable, List, Optional, Tuple

from regionvlm.common.cli import echo
from regionvlm.common.errors import ConfigError, MissingFileError
from regionvlm.common.registry import registry
from regionvlm.common.settings import setting
from regionvlm.datasets.protocol import CaptionBatch, CaptionEvalDataset
from regionvlm.processors.text_processors import BlipCaptionProcessor
from regionvlm.region import Region
from regionvlm.tasks.caption_metrics import SKIPPABLE, caption_gt_from_references, score_captions
from regionvlm.tasks.evaluation import (
    DecodingEvalSettings,
    EvalTask,
    SplitEvaluator,
    SplitResult,
    item_rng,
    region_image_embeds,
)

REGION_PROMPTS = ("points", "empty")


@dataclass(frozen=True)
class CaptioningSettings(DecodingEvalSettings):
    """COCO's protocol by default: beam 3, at most 20 new tokens, at least 5."""

    num_beams: int = setting(3, min=1)
    max_len: int = setting(20, min=1, help="new tokens")
    min_len: int = setting(5, min=0)
    num_points: Optional[int] = setting(None, min=1, help="points per region (default: the model's)")
    region_prompt: str = setting("points", choices=REGION_PROMPTS, help="points | empty (the no-region ablation)")
    skip_metrics: List[str] = setting([], help=f"metrics not to compute: any of {list(SKIPPABLE)}")

    def validate(self, section: str) -> None:
        bad = sorted(set(self.skip_metrics) - set(SKIPPABLE))
        if bad:
            raise ConfigError(f"`{section}.skip_metrics` can only name {list(SKIPPABLE)}, got {bad}.")
        super().validate(section)


@dataclass(frozen=True)
class RegionCaptioningSettings(CaptioningSettings):
    """Held-out region captions: greedy, up to 30 new tokens."""

    num_beams: int = setting(1, min=1)
    max_len: int = setting(30, min=1, help="new tokens")
    min_len: int = setting(1, min=0)


class CaptionEvaluator(SplitEvaluator):
    """A unit is a batch of regions (grouped by image); its images are encoded once."""

    def __init__(self, model: Any, dataset: CaptionEvalDataset, settings: CaptioningSettings, output_dir) -> None:
        super().__init__(model, dataset, settings, output_dir)
        self.generation = settings.generation()
        self.text_processor = getattr(dataset, "text_processor", None) or BlipCaptionProcessor()

    def units(self) -> List[Tuple[str, Any]]:
        return self.dataset.caption_units(self.settings.batch_size_eval)

    def load(self, spec: Any) -> CaptionBatch:
        return self.dataset.load_captions(spec)

    def region_text(self, region: Any, result_id: Hashable) -> str:
        """The region's text; ``region_prompt: empty`` gives every sample the empty text (the
        ablation: what the model writes without being told where to look)."""
        if region is None or self.settings.region_prompt == "empty":
            return ""
        if isinstance(region, Region):
            rng = item_rng(self.settings.seed, str(result_id))
            return self.text_processor(region.to_text(self.settings.num_points, rng))
        return str(region)

    def process(self, spec: Any, batch: CaptionBatch) -> List[Dict[str, Any]]:
        model = self.model
        texts = [self.region_text(r, i) for r, i in zip(batch.regions, batch.ids)]
        queries = model.region_queries(region_image_embeds(model, batch.images, batch.image_index), texts)
        captions = model.generate_from_embeds(*model.t5_inputs(queries), self.generation)
        return [
            {"id": i, "region_text": t, "caption": c, "references": refs}
            for i, t, c, refs in zip(batch.ids, texts, captions, batch.references)
        ]

    def finish(self, outputs: List[List[Dict[str, Any]]]) -> SplitResult:
        rows = [row for unit in outputs for row in unit]
        with_refs = [r for r in rows if r["references"]]
        exact = sum(r["caption"].strip() in {ref.strip() for ref in r["references"]} for r in with_refs)
        metrics: Dict[str, Any] = {"num_captions": len(rows)}
        if with_refs:
            metrics["exact_match"] = round(100.0 * exact / len(with_refs), 2)
        gt = self.dataset.caption_ground_truth()
        extra: Dict[str, Any] = {}
        if gt is None and with_refs:
            gt, numbering = caption_gt_from_references([(r["id"], r["references"]) for r in with_refs])
            extra["references"] = gt.dataset
            results = [{"image_id": numbering[r["id"]], "caption": r["caption"]} for r in with_refs]
        else:
            results = [{"image_id": r["id"], "caption": r["caption"]} for r in rows]
            if gt is not None and not Path(gt.path).is_file():  # built in memory: kept so the pair rescores
                extra["references"] = gt.dataset
        extra["captions"] = results
        skipped: Dict[str, str] = {}
        if gt is not None:
            try:
                scored = score_captions(gt, results, skip=self.settings.skip_metrics)
            except MissingFileError as exc:  # no Java or no pycocoevalcap: the captions are kept
                scored = {"skipped": {"Bleu_1-4, METEOR, ROUGE_L, CIDEr, SPICE": str(exc)}}
                echo(f"[captioning] warning: caption metrics not computed: {exc}")
            skipped = scored.pop("skipped")
            metrics.update(scored)
        return SplitResult(metrics, {"skipped_metrics": skipped, "captions": rows}, extra)


@registry.register_task("captioning")
class CaptioningTask(EvalTask):
    NAME = "captioning"
    Settings = CaptioningSettings
    DATASET_TYPES = (CaptionEvalDataset,)
    Evaluator = CaptionEvaluator
    HEADLINE = "CIDEr"
    VARIANT = ("region_prompt", "points")

    def aggregate(self, metrics: Dict[str, Any]) -> Any:
        """LAVIS's ``agg_metrics`` of captioning: CIDEr + BLEU-4 (exact match without them)."""
        if "CIDEr" in metrics and "Bleu_4" in metrics:
            return metrics["CIDEr"] + metrics["Bleu_4"]
        return metrics.get("exact_match")


@registry.register_task("region_captioning")
class RegionCaptioningTask(CaptioningTask):
    """RegionVLM's training task (T5 cross-entropy of region and global captions); its
    evaluation captions held-out regions like ``captioning``, decoding greedily by default."""

    NAME = "region_captioning"
    Settings = RegionCaptioningSettings
    HEADLINE = "exact_match"

    def aggregate(self, metrics: Dict[str, Any]) -> Any:
        return metrics.get(self.HEADLINE)
