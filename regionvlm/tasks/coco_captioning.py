"""Zero-shot COCO captioning (task ``captioning``, LAVIS's name): caption every image of a
Karpathy split with an EMPTY region text (the model's global path) and score the captions
with the COCO caption evaluation package (BLEU-1..4, METEOR, ROUGE-L, CIDEr, SPICE).

Protocol of the paper's evaluation (``configs/blip2/eval/caption_coco_flant5xl_eval.yaml``):
Karpathy test split, 364 px, beam 3, at most 20 new tokens, ``min_len`` 5; ``agg_metrics``
is CIDEr + BLEU-4 as in LAVIS. What the metrics package cannot compute offline (SPICE
downloads Stanford CoreNLP models on first use) is reported under ``skipped`` with the
reason; ``run.skip_metrics`` leaves METEOR/SPICE out on purpose.

Outputs in ``run.output_dir`` (atomic, main process): ``<dataset>_<split>_captions.json``
(LAVIS's result format ``[{"image_id", "caption"}]``, scorable with
``python -m regionvlm.tasks.caption_metrics``) and ``<dataset>_<split>_metrics.json``.
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
from regionvlm.datasets.coco_caption_datasets import CocoCaptionEvalDataset
from regionvlm.tasks.caption_metrics import SKIPPABLE, score_captions
from regionvlm.tasks.evaluation import (
    DecodingEvalSettings,
    EvalTask,
    Prefetcher,
    clear_partials,
    fingerprint,
    pending_keys,
    run_resumable,
)


@dataclass(frozen=True)
class CaptioningSettings(DecodingEvalSettings):
    num_beams: int = setting(3, min=1)
    max_len: int = setting(20, min=1, help="new tokens")
    min_len: int = setting(5, min=0)
    skip_metrics: List[str] = setting([], help=f"metrics not to compute: any of {list(SKIPPABLE)}")

    def validate(self, section: str) -> None:
        from regionvlm.common.errors import ConfigError

        bad = sorted(set(self.skip_metrics) - set(SKIPPABLE))
        if bad:
            raise ConfigError(f"`{section}.skip_metrics` can only name {list(SKIPPABLE)}, got {bad}.")
        super().validate(section)


@registry.register_task("captioning")
class CaptioningTask(EvalTask):
    NAME = "captioning"
    Settings = CaptioningSettings
    DATASET_TYPES = (CocoCaptionEvalDataset,)
    HEADLINE = "CIDEr"

    def aggregate(self, metrics: Dict[str, Any]) -> Any:
        """LAVIS's ``agg_metrics`` of captioning: CIDEr + BLEU-4."""
        return metrics["CIDEr"] + metrics["Bleu_4"]

    def evaluate_split(
        self,
        model: torch.nn.Module,
        dataset: CocoCaptionEvalDataset,
        name: str,
        split: str,
        settings: CaptioningSettings,
        output_dir: Path,
    ) -> Dict[str, Any]:
        generation = settings.generation()
        size = settings.batch_size_eval
        batches = {f"{i}": list(range(i, min(i + size, len(dataset)))) for i in range(0, len(dataset), size)}
        keys = list(batches)
        log_name = f"{name}_{split}_captions.{fingerprint(settings, dataset.identity(), model)}"

        with Prefetcher(
            pending_keys(keys, output_dir, log_name),
            lambda k: dataset.load_batch(batches[k]),
            depth=2,
            workers=settings.num_workers,
        ) as prefetch:

            def caption(key: str) -> List[Dict[str, Any]]:
                samples = prefetch.get(key)
                image = samples["image"].to(model.device)
                queries = model.region_queries(model.encode_image(image), [""] * image.shape[0])
                embeds, mask = model.t5_inputs(queries)
                captions = model.generate_from_embeds(embeds, mask, generation)
                return [{"image_id": int(i), "caption": c} for i, c in zip(samples["image_id"], captions)]

            groups = run_resumable(
                keys,
                key=lambda k: k,
                process=caption,
                out_dir=output_dir,
                name=log_name,
                desc=f"captions {name}/{split}",
            )
        results = [row for group in groups for row in group]
        metrics: Dict[str, Any] = {}
        if dist_utils.is_main_process():
            atomic_write_json(Path(output_dir) / f"{name}_{split}_captions.json", results)
            scored = score_captions(dataset.gt, results, skip=settings.skip_metrics)
            metrics = {k: v for k, v in scored.items() if k != "skipped"}
            atomic_write_json(
                Path(output_dir) / f"{name}_{split}_metrics.json",
                {"dataset": name, "split": split, **scored, "num_images": len(results), "settings": settings.as_dict()},
            )
            metrics["num_images"] = len(results)
        metrics = dist_utils.all_gather_objects(metrics)[0]  # every rank returns rank 0's scores
        clear_partials(output_dir, log_name)
        return metrics
