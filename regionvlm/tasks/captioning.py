"""Region captioning: the training task of RegionVLM (and its evaluation by generation).

Training: T5 cross-entropy of the region (or global) caption. Evaluation: caption every
region of a region-caption split (e.g. a held-out Localized Narratives file built with
``split: val``) and report exact match against the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List

import torch

from regionvlm.common import dist_utils
from regionvlm.common.io import atomic_write_json
from regionvlm.common.registry import registry
from regionvlm.common.settings import setting
from regionvlm.datasets.caption_datasets import RegionCaptionDataset
from regionvlm.tasks.evaluation import DecodingEvalSettings, EvalTask, clear_partials, fingerprint, run_resumable


@dataclass(frozen=True)
class RegionCaptioningSettings(DecodingEvalSettings):
    num_beams: int = setting(1, min=1)


@registry.register_task("region_captioning")
class RegionCaptioningTask(EvalTask):
    """Train on region/global captions; evaluate region captions by exact match."""

    NAME = "region_captioning"
    Settings = RegionCaptioningSettings
    DATASET_TYPES = (RegionCaptionDataset,)
    HEADLINE = "exact_match"

    def evaluate_split(
        self,
        model: torch.nn.Module,
        dataset: RegionCaptionDataset,
        name: str,
        split: str,
        settings: RegionCaptioningSettings,
        output_dir: Path,
    ) -> Dict[str, Any]:
        dataset.set_epoch(0)
        generation = settings.generation()

        def caption(index: int) -> List[Dict[str, str]]:
            sample = dataset[index]
            image = sample["image"].unsqueeze(0).to(model.device)
            texts = sample["text_input"] if isinstance(sample["text_input"], list) else [sample["text_input"]]
            refs = sample["text_output"] if isinstance(sample["text_output"], list) else [sample["text_output"]]
            queries = model.region_queries(model.encode_image(image), texts)
            embeds, mask = model.t5_inputs(queries)
            preds = model.generate_from_embeds(embeds, mask, generation)
            return [{"region": t, "reference": r, "prediction": p} for t, r, p in zip(texts, refs, preds)]

        identity = {"dataset": name, "split": split, "items": len(dataset), "summary": dataset.ann.summary()}
        log_name = f"captions_{name}_{split}.{fingerprint(settings, identity, model)}"
        rows = [
            row
            for group in run_resumable(
                list(range(len(dataset))), str, caption, output_dir, log_name, desc=f"captions {name}/{split}"
            )
            for row in group
        ]
        exact = sum(r["prediction"].strip() == r["reference"].strip() for r in rows) / max(1, len(rows))
        metrics = {"exact_match": round(100.0 * exact, 2), "num_regions": len(rows)}
        if dist_utils.is_main_process():
            atomic_write_json(
                Path(output_dir) / f"captions_{name}_{split}.json",
                {"metrics": metrics, "settings": settings.as_dict(), "captions": rows},
            )
        clear_partials(output_dir, log_name)
        return metrics
