"""Zero-shot referring expression comprehension (REC): the registered task ``rec`` (see
``docs/rec.md``).

The protocol of ReCLIP (Subramanian et al., 2022), with RegionVLM as the scorer: for each
referring expression every candidate box of its image is scored, the chosen candidate is
the one with the lowest score, and the expression is correct when the IoU of the chosen
box with the ground-truth box (the referred COCO annotation's ``bbox``) is at least 0.5
(Acc@0.5).

A candidate's score is the RIS score (:mod:`regionvlm.tasks.ris`, the same code): the
mean T5 token NLL of the text-processed sentence as the T5 target, given the candidate's
region, lowest over ``repeats`` draws of ``num_points`` points (default: the model's K).
Where the points are drawn (``region_prompt``):

- ``points`` (default): in the candidate's mask — a ground-truth candidate's annotation
  mask, or the pixels of the box for a detection (boxes only);
- ``box``: uniformly in the candidate's box (the annotation's ``bbox`` for ground-truth
  candidates);
- ``empty``, ``crop``, ``blur``, ``circle``: as in RIS, with the mask above.

Candidates (dataset setting ``candidates``): ``gt`` — every annotation of the image in
``instances.json``; ``detections`` — the image's boxes in a detections file (refer toolkit
or ReCLIP layout, :mod:`regionvlm.data.detections`). An image without candidates (only
possible with detections): ``on_no_candidate: empty`` (default) counts its expressions as
wrong (IoU 0) and lists them under ``no_candidate``; ``image`` scores the whole image as
the one candidate (what ReCLIP's script does); ``error`` stops.

Output: ``<output_dir>/rec[-dets][-<region_prompt>]_<dataset>_<splitBy>_<split>.json`` with
the metrics (``acc@0.5``, ``mIoU``, ``upper_bound@0.5``: the share of expressions with some
candidate at IoU >= 0.5, ``chance@0.5``, counts), the settings and, per expression, the
candidates' ids, boxes ``[x, y, w, h]``, scores and IoUs, the chosen id and box, its IoU and
``correct``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from regionvlm.common.cli import echo
from regionvlm.common.errors import InputError, MissingFileError
from regionvlm.common.registry import registry
from regionvlm.common.settings import setting
from regionvlm.data.boxes import box_iou, box_mask, to_xyxy
from regionvlm.data.images import open_image
from regionvlm.datasets.rec_datasets import Candidate, RECDataset
from regionvlm.tasks.evaluation import EvalSettings, EvalTask, Skip, SplitResult
from regionvlm.tasks.ris import (
    DRAWS,
    PROTOCOLS,
    REGION_PROMPTS,
    VISUAL_MODES,
    ImageQueriesEvaluator,
    MaskPrompts,
    build_prompts,
    fmt,
    resolve_scoring,
)

NO_CANDIDATE = ("empty", "error", "image")
IOU_THRESHOLD = 0.5
WHOLE_IMAGE_ID = -1  # the candidate id of the whole image (on_no_candidate: image)


# ----------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class RECSettings(EvalSettings):
    num_points: Optional[int] = setting(None, min=1, help="points per draw (default: the model's K)")
    repeats: int = setting(5, min=1, help="draws per candidate; the candidate's score is the lowest")
    protocol: str = setting("fast", choices=PROTOCOLS)
    draws: str = setting("image", choices=DRAWS)
    region_prompt: str = setting(
        "points",
        choices=REGION_PROMPTS,
        help="points (in the candidate's mask, or box for detections) | empty | box | crop | blur | circle",
    )
    encoder_batch: int = setting(128, min=1, help="region texts per Q-Former/T5-encoder call")
    decoder_batch: int = setting(0, min=0, help="(draw, sentence) pairs per decoder call; 0 = auto")
    on_no_candidate: str = setting("empty", choices=NO_CANDIDATE, help="empty (wrong) | error | image (whole image)")
    prefetch: int = setting(2, min=0, help="images loaded ahead by threads")

    NOT_IN_RESULTS = ("test_splits", "prefetch")

    def resolved(self, device: torch.device, num_points: Optional[int] = None) -> "RECSettings":
        return resolve_scoring(self, device, num_points)


# ----------------------------------------------------------------------------- metrics
def summarize(records: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """Percentages over the evaluated expressions: Acc@0.5, mIoU of the chosen box, the
    candidates' ceiling (some candidate at IoU >= 0.5) and chance (a candidate picked at
    random, ReCLIP's ``random`` method in expectation)."""
    n = len(records)
    if not n:
        empty = {"acc@0.5": None, "mIoU": None, "upper_bound@0.5": None, "chance@0.5": None}
        return {**empty, "num_expressions": 0, "num_correct": 0}
    correct = sum(1 for r in records if r["correct"])
    hits = [sum(1 for v in r["ious"] if v >= IOU_THRESHOLD) for r in records]
    return {
        "acc@0.5": 100.0 * correct / n,
        "mIoU": 100.0 * float(np.mean([r["iou"] for r in records])),
        "upper_bound@0.5": 100.0 * sum(1 for h in hits if h) / n,
        "chance@0.5": 100.0 * float(np.mean([h / len(r["ious"]) if r["ious"] else 0.0 for h, r in zip(hits, records)])),
        "num_expressions": n,
        "num_correct": correct,
    }


# ----------------------------------------------------------------------------- per image
@dataclass
class RECInputs:
    """One image's inputs, prepared on a prefetch thread; ``prompts`` is None when the image
    has no candidate (and ``on_no_candidate`` is not ``image``)."""

    candidates: List[Candidate]
    whole_image: bool
    prompts: Optional[MaskPrompts]
    sentences: List[Optional[str]]


class RECEvaluator(ImageQueriesEvaluator):
    """One REC split on the evaluation loop: a unit is an image with its expressions."""

    TASK = "REC"
    MISSING_HINT = "Images are read from <image_root>/<file_name> (image_root={ds.image_root})"

    def _load(self, key: str) -> RECInputs:
        image_id, queries = self.groups[key]
        ds, s = self.dataset, self.settings
        height, width = ds.image_size(image_id)
        path = ds.image_path(image_id)
        if not path.is_file():
            raise MissingFileError(
                f"image {image_id} not found at '{path}' (expected <image_root>/"
                f"{ds.refer.images[image_id].file_name}; set `image_root` / --image-root)."
            )
        rgb = open_image(path, f"image {image_id}")
        if s.region_prompt in VISUAL_MODES and rgb.size != (width, height):
            raise InputError(
                f"the image '{path}' is {rgb.height}x{rgb.width} but '{ds.refer.instances_path}' says image "
                f"{image_id} is {height}x{width}; region_prompt '{s.region_prompt}' marks the candidates on the "
                "image itself, so its size must be the boxes' frame."
            )
        candidates = ds.candidates(image_id)
        whole_image = not candidates and s.on_no_candidate == "image"
        if whole_image:
            candidates = [Candidate(WHOLE_IMAGE_ID, (0.0, 0.0, float(width), float(height)))]
            masks = [box_mask(candidates[0].box, height, width)]
        else:
            masks = ds.candidate_masks(image_id) if candidates else []
        prompts = None
        if candidates:
            boxes = [to_xyxy(c.box) for c in candidates]
            prompts = build_prompts(s.region_prompt, rgb, masks, self.vis_processor, boxes=boxes)
        sentences = [self.text_processor(q.sentence) or None for q in queries]
        return RECInputs(candidates, whole_image, prompts, sentences)

    # -- scoring one image (main thread)
    def process(self, key: str, inputs: RECInputs | Skip) -> Dict[str, Any]:
        image_id, queries = self.groups[key]
        s, ds = self.settings, self.dataset
        if isinstance(inputs, Skip):
            return {"expressions": [], "skipped": [self._skip_entry(q, inputs.reason) for q in queries]}
        active, skipped = self._active(queries, inputs.sentences)
        cands = inputs.candidates
        if not cands and active and s.on_no_candidate == "error":
            source = ds.detections.path if ds.detections is not None else ds.refer.instances_path
            raise InputError(
                f"image {image_id} has no candidate box in '{source}'; set run.on_no_candidate=empty "
                "(its expressions count as wrong) or image (the whole image is the one candidate, as ReCLIP does)."
            )
        scores = self._score(image_id, inputs.prompts, active)
        records = []
        for row, (_, q, _) in enumerate(active):
            gt = ds.gt_box(q.ann_id)
            ious = [box_iou(c.box, gt) for c in cands]
            pick = int(np.argmin(scores[row])) if cands else None
            iou = ious[pick] if pick is not None else 0.0
            records.append(
                {
                    "index": q.index,
                    "sent_id": q.sent_id,
                    "ref_id": q.ref_id,
                    "ann_id": q.ann_id,
                    "image_id": q.image_id,
                    "sentence": q.sentence,
                    "gt_box": list(gt),
                    "candidates": [c.id for c in cands],
                    "boxes": [list(c.box) for c in cands],
                    "scores": [float(v) for v in scores[row]],
                    "chosen": cands[pick].id if pick is not None else None,
                    "chosen_box": list(cands[pick].box) if pick is not None else None,
                    "iou": iou,
                    "correct": bool(iou >= IOU_THRESHOLD),
                    "ious": ious,
                    "whole_image": inputs.whole_image,
                }
            )
        return {"expressions": records, "skipped": skipped}

    # -- the whole split (main process)
    def finish(self, outputs: List[Dict[str, Any]]) -> SplitResult:
        records = sorted((r for res in outputs for r in res["expressions"]), key=lambda r: r["index"])
        skipped = self.skipped + [e for res in outputs for e in res["skipped"]]
        skipped.sort(key=lambda e: (e["ref_id"], e["sent_id"]))
        no_candidate = [
            {"ref_id": r["ref_id"], "sent_id": r["sent_id"], "image_id": r["image_id"]}
            for r in records
            if r["chosen"] is None or r["whole_image"]
        ]
        metrics = summarize(records)
        metrics.update(
            {
                "num_images": len({r["image_id"] for r in records}),
                "num_skipped": len(skipped),
                "num_no_candidate": len(no_candidate),
                "mean_candidates": float(np.mean([len(r["candidates"]) for r in records])) if records else None,
            }
        )
        name = f"{self.dataset.eval_name}_{self.dataset.split}"
        if no_candidate:
            handled = "scored with the whole image" if self.settings.on_no_candidate == "image" else "counted as wrong"
            echo(
                f"[rec] {name}: warning: {len(no_candidate)} expression(s) had no candidate box ({handled}; "
                "listed under 'no_candidate')."
            )
        if skipped:
            echo(f"[rec] {name}: warning: {len(skipped)} expression(s) skipped (listed under 'skipped').")
        return SplitResult(metrics, {"no_candidate": no_candidate, "skipped": skipped, "expressions": records})


# ----------------------------------------------------------------------------- task
@registry.register_task("rec")
class RECTask(EvalTask):
    """Zero-shot REC evaluation (no training step): ``run.evaluate: true`` with REC datasets
    (builders ``rec_refcoco``, ``rec_refcoco+``, ``rec_refcocog``, ``rec_synthetic``)."""

    NAME = "rec"
    Settings = RECSettings
    DATASET_TYPES = (RECDataset,)
    Evaluator = RECEvaluator
    HEADLINE = "acc@0.5"
    VARIANT = ("region_prompt", "points")

    def dataset_variant(self, settings: RECSettings, dataset: Any) -> str:
        """``dets`` first when the candidates are a detector's boxes: another experiment."""
        parts = ["dets"] if getattr(dataset, "candidate_source", "gt") == "detections" else []
        if self.variant(settings):
            parts.append(self.variant(settings))
        return "-".join(parts)

    def report(self, eval_name: str, split: str, m: Mapping[str, Any]) -> None:
        echo(
            f"[REC] {eval_name}_{split}: Acc@0.5 {fmt(m['acc@0.5'])}  mIoU {fmt(m['mIoU'])}  (chance "
            f"{fmt(m['chance@0.5'])}, candidates' ceiling {fmt(m['upper_bound@0.5'])}; {m['num_expressions']} "
            "expressions)"
        )
