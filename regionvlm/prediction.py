"""The loop of ``python -m regionvlm.predict`` (the command line, its settings and ``--check``
live in :mod:`regionvlm.predict`, which imports no model code).

:class:`PredictEvaluator` supplies the evaluation loop (:func:`regionvlm.tasks.evaluation.run_units`)
with one step: a unit's images encoded once, every region's soft tokens in one Q-Former
call, then one T5 batch: ``[soft tokens ; </s>]`` for captions (``model.generate``'s input),
the dialogue's turn layout (:func:`regionvlm.processors.region_layouts.layout_segments`,
``[soft tokens ; question ; </s>]`` by default) for answers. The loop brings prefetching, sharding over
``torchrun`` ranks, per-unit progress logs (resume) and the progress bar; :func:`predict`
writes the rows in input order on rank 0.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Sequence

import torch

from regionvlm.common import dist_utils
from regionvlm.common.errors import InputError
from regionvlm.common.io import ensure_dir, write_jsonl
from regionvlm.data.region_files import Problem, RegionRecord
from regionvlm.datasets.region_files import RegionBatch, RegionFileSet
from regionvlm.processors import BlipCaptionProcessor, BlipImageEvalProcessor
from regionvlm.processors.region_layouts import layout_segments
from regionvlm.region import Region
from regionvlm.tasks.evaluation import (
    SplitEvaluator,
    SplitResult,
    clear_partials,
    evaluating,
    fingerprint,
    item_rng,
    region_image_embeds,
    run_units,
)


def errors_path(out: Path) -> Path:
    """``<out stem>.errors.jsonl`` beside ``out``: the lines ``--on-error skip`` left out."""
    out = Path(out)
    stem = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return out.with_name(f"{stem}.errors.jsonl")


def question_problems(records: Sequence[RegionRecord], model: Any, settings: Any) -> List[Problem]:
    """Lines whose question would give T5 more tokens than it reads (its tokenizer's
    ``model_max_length``, 512 for Flan-T5): refused before any generation."""
    tokenizer = model.t5_tokenizer
    limit = int(tokenizer.model_max_length)
    soft = int(model.query_tokens.shape[1])
    out = []
    for record in records:
        if record.question is None:
            continue
        text = settings.prompt.replace("{}", record.question, 1)
        count = len(tokenizer(text, add_special_tokens=False, verbose=False).input_ids) + soft + 1
        if count > limit:
            out.append(record.problem(f"the question gives T5 {count} tokens, more than the {limit} it reads"))
    return out


class PredictEvaluator(SplitEvaluator):
    """A unit is up to ``batch_size`` regions of a few images (each image encoded once)."""

    unit_name = "region"

    def __init__(
        self,
        model: Any,
        regions: RegionFileSet,
        settings: Any,
        output_dir: Path,
        vis_processor: Any,
        text_processor: Any,
        stop_on_error: bool = True,
    ) -> None:
        super().__init__(model, regions, settings, output_dir)
        self.regions = regions
        self.vis, self.txt = vis_processor, text_processor
        self.generation = settings.generation()
        self.stop_on_error = stop_on_error
        self.processed = 0  # regions this process predicted in this run (resumed ones not counted)

    def units(self) -> List[Any]:
        return self.regions.units(self.settings.batch_size)

    def weight(self, spec: Sequence[int]) -> int:
        return len(spec)

    def load(self, spec: Sequence[int]) -> RegionBatch:
        return self.regions.load(spec, self.vis)

    def identity(self) -> Dict[str, Any]:
        return self.regions.identity()

    def prefetch(self) -> Any:
        workers = int(self.settings.num_workers)
        return (2 if workers else 0), workers

    def describe(self) -> str:
        return f"{self.settings.task} {self.regions.path.name}"

    def region_text(self, record: RegionRecord, region: Region) -> str:
        """The region's ``num_points`` points, drawn from ``item_rng(seed, id)`` (empty: whole image)."""
        rng = item_rng(self.settings.seed, record.key)
        return self.txt(region.to_text(self.settings.num_points, rng))

    def segments(self, question: str, soft: torch.Tensor) -> List[Any]:
        """The T5 input of a question about the region (``[1]``): the dialogue's layout of the
        templated question; the soft tokens go first when the question does not place them."""
        text = self.settings.prompt.replace("{}", question, 1)
        segments, mentioned = layout_segments(self.settings.layout, text, lambda i: soft)
        return segments if mentioned else [soft] + segments

    def process(self, spec: Sequence[int], batch: RegionBatch) -> List[Dict[str, Any]]:
        if batch.errors and self.stop_on_error:
            position, message = next(iter(batch.errors.items()))
            record = self.regions.records[position]
            raise InputError(f"'{self.regions.path}' {record.where}: {message} (--on-error skip goes on).")
        model = self.model
        ok = [i for i, p in enumerate(spec) if p not in batch.errors]
        texts = [self.region_text(batch.records[i], batch.regions[i]) for i in ok]
        predictions: List[str] = []
        if ok:
            embeds = region_image_embeds(model, batch.images, [batch.image_index[i] for i in ok])
            queries = model.region_queries(embeds, texts)
            if self.settings.task == "caption":
                inputs = model.t5_inputs(queries)
            else:
                questions = [batch.records[i].question for i in ok]
                inputs = model.embed_segments([self.segments(q, queries[j]) for j, q in enumerate(questions)])
            predictions = [p.strip() for p in model.generate_from_embeds(*inputs, self.generation)]
        self.processed += len(ok)
        done = dict(zip(ok, zip(texts, predictions)))
        out = []
        for i, position in enumerate(spec):
            key = batch.records[i].key
            if i in done:
                out.append({"key": key, "region_text": done[i][0], "prediction": done[i][1]})
            else:
                out.append({"key": key, "error": batch.errors[position]})
        return out

    def finish(self, outputs: List[List[Dict[str, Any]]]) -> SplitResult:
        """Rows in input order (id first, the line's fields, ``region_text``, ``prediction``)
        and the regions that failed while loading."""
        by_key = {row["key"]: row for unit in outputs for row in unit}
        rows, errors = [], []
        for record in self.regions.records:
            result = by_key[record.key]
            if "error" in result:
                errors.append(record.problem(result["error"]))
                continue
            rows.append(
                {
                    "id": record.id,
                    **record.fields,
                    "region_text": result["region_text"],
                    "prediction": result["prediction"],
                }
            )
        metrics = {"regions": len(self.regions.records), "predicted": len(rows), "errors": len(errors)}
        return SplitResult(metrics, {"rows": rows, "errors": errors})


def predict(
    model: Any,
    regions: RegionFileSet,
    settings: Any,
    out: str | Path,
    on_error: str = "stop",
    vis_processor: Any = None,
    text_processor: Any = None,
) -> Dict[str, Any]:
    """Predict every region of ``regions`` into ``out`` (JSONL, input order; with
    ``on_error='skip'`` the bad lines of the file and the regions that fail to load go to
    :func:`errors_path`); returns the run's summary on every rank."""
    out = Path(out)
    ensure_dir(out.parent)
    if settings.num_points is None:
        settings = replace(settings, num_points=int(model.num_points))
    vis = vis_processor or BlipImageEvalProcessor(image_size=model.image_size)
    txt = text_processor or BlipCaptionProcessor()
    start = time.time()
    with evaluating(model) as module:
        evaluator = PredictEvaluator(module, regions, settings, out.parent, vis, txt, on_error == "stop")
        log_name = f"{out.name}.{fingerprint(settings, evaluator.identity(), module)}"
        outputs = run_units(evaluator, log_name)
    seconds = time.time() - start
    per_rank = dist_utils.all_gather_objects(evaluator.processed)
    summary = None
    if dist_utils.is_main_process():
        result = evaluator.finish(outputs)
        write_jsonl(out, result.details["rows"])
        problems = sorted(list(regions.problems) + result.details["errors"], key=lambda p: p.line or 0)
        if on_error == "skip":
            write_jsonl(errors_path(out), [p.as_row() for p in problems])
        elif errors_path(out).is_file():
            errors_path(out).unlink()  # a stale list of an earlier skip run
        processed = sum(per_rank)
        summary = {
            **result.metrics,
            "skipped_lines": len(problems),
            "processed_per_rank": per_rank,
            "seconds": round(seconds, 2),
            "regions_per_second": round(processed / seconds, 2) if processed and seconds > 0 else None,
            "out": str(out),
            "errors_file": str(errors_path(out)) if on_error == "skip" else None,
        }
    summary = dist_utils.all_gather_objects(summary)[0]
    clear_partials(out.parent, log_name)
    return summary
