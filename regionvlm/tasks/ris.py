"""Zero-shot referring image segmentation: the registered task ``ris`` (see ``docs/ris.md``).

For each image: its cached SAM proposals are filtered (:func:`filter_proposals`, the
official rules literally); every kept mask gets R draws of K random in-mask pixels, each
turned into region text; the score of (sentence, mask) is the lowest, over the draws, mean
token NLL of the text-processed sentence as the T5 target; the prediction is the mask with
the lowest score. IoU at the original resolution; oIoU = 100 sum(I) / sum(U), mIoU = 100
mean(IoU).

How the region reaches the model (``region_prompt``):

- ``points`` (default, the paper's protocol): K random in-mask pixels as region text;
- ``empty``: the same draws, then every region text emptied (the no-region ablation);
- ``box``: K points drawn uniformly in the mask's box (:func:`mask_box`) as region text;
- ``crop``, ``blur``, ``circle``: visual-prompt baselines — the image itself is marked per
  mask (:mod:`regionvlm.processors.visual_prompts`, at the original resolution, before the
  image processor) and the region text is empty. Nothing is random there, so each mask is
  scored once: its score is that single NLL (``repeats``, ``num_points`` and ``draws`` do
  not apply).

Two implementations of the same scores:

- ``protocol: official`` — the authors' loop: per (sentence, mask) one ``model.forward`` of
  R samples with the image repeated R times and re-encoded (visual modes: one sample, the
  mask's prompted image). Slow; kept as the reference.
- ``protocol: fast`` (default) — per image, the ViT runs once (visual modes: once on the
  batch of the masks' prompted images); the Q-Former and the T5 encoder run once per
  (mask, draw), all masks in large batches; the decoder then scores every (draw, sentence)
  pair of the image in chunks of ``decoder_batch`` pairs (``model.target_nll``), sentences
  of similar length together.

Randomness and the one deviation it needs: draws come from ``item_rng(seed, key)``, so the
numbers do not depend on sharding, batching or resumption. With ``draws: image`` (default)
the R draws of a mask are made once per image and shared by all its sentences — that is
what lets the fast path reuse the encoder. The official script draws afresh for every
sentence (unseeded); ``draws: sentence`` does that (key per sentence; the fast path then
runs the Q-Former/encoder per sentence, still batched). Both settings follow the same
distribution.

An empty proposal mask (no pixel) is never a candidate, whatever the thresholds: it is
dropped and counted (``num_empty_proposals``), so it cannot end a run. A query whose
proposals are all filtered out, even by the 1 % fallback, cannot be
answered (the official script crashes there). ``on_no_candidate: empty`` (default)
predicts an empty mask — IoU 0, its ground truth still counts in sum(U) — and lists the
query under ``no_candidate`` in the results; ``on_no_candidate: error`` stops instead.

Settings (``run:`` section of the YAML; defaults = official): seed 42, threshold 0.7,
small_threshold 0.04, fallback_min_area 0.01, max_masks 20, num_points (the model's K, 10), repeats 5,
protocol fast, draws image, region_prompt points, encoder_batch 128 (region texts, or
prompted images, per Q-Former/T5-encoder/ViT call), decoder_batch 0 (= auto: 1024 (draw,
sentence) pairs per decoder call on GPU, 64 on CPU, where large batches only thrash the
cache), on_no_candidate empty, visualize 0 (N PNG overlays), prefetch 2 (images loaded and
prompted ahead by threads).

Datasets: any :class:`~regionvlm.datasets.ris_datasets.RISQueryDataset` — the refer layout
(RefCOCO, RefCOCO+, RefCOCOg, the synthetic world; a query is a sentence of a ref) and
PhraseCut (a query is a task; ``docs/phrasecut.md``). The protocol is the same for all.

Output: ``<output_dir>/ris[-<region_prompt>]_<dataset>_<split>.json`` (``<dataset>`` is e.g.
``refcoco_unc`` or ``phrasecut``; written atomically) with the metrics, the settings
(``region_prompt`` among them) and, per query, its ids, the candidate proposal ids, their
scores, the chosen id and its IoU. A dataset with named subsets (PhraseCut) adds, per
subset, oIoU, mIoU and the share of queries above IoU 0.5 ... 0.9 under ``subsets``. Same
seed and inputs -> byte-identical file.
Progress is logged per image; a killed run started again resumes (the log name carries a
fingerprint of the settings, the data and the model, so changed settings never mix with
old partial results).
"""

from __future__ import annotations

import math
import textwrap
from abc import abstractmethod
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple

import numpy as np
import torch

from regionvlm.common.cli import echo
from regionvlm.common.errors import InputError, MissingFileError
from regionvlm.common.registry import registry
from regionvlm.common.settings import setting
from regionvlm.data.boxes import sampling_box
from regionvlm.data.proposals import ProposalSet, read_proposals
from regionvlm.datasets.ris_datasets import RISQueryDataset
from regionvlm.processors.visual_prompts import VISUAL_PROMPTS, apply_visual_prompt, mask_box
from regionvlm.region import MaskPointSampler, Region, format_points
from regionvlm.tasks.evaluation import EvalSettings, EvalTask, Skip, SplitEvaluator, SplitResult, item_rng

PROTOCOLS = ("fast", "official")
DRAWS = ("image", "sentence")
NO_CANDIDATE = ("empty", "error")
TEXT_PROMPTS = ("points", "empty", "box")  # the region as text, the image encoded once for all masks
VISUAL_MODES = tuple(VISUAL_PROMPTS)  # ("crop", "blur", "circle"): the image marked per mask, empty text
REGION_PROMPTS = TEXT_PROMPTS + VISUAL_MODES


# ----------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class RISSettings(EvalSettings):
    threshold: float = setting(0.7, min=0.0, help="border test (official, literal)")
    small_threshold: float = setting(0.04, min=0.0, max=1.0, help="drop proposals under this image fraction")
    fallback_min_area: float = setting(0.01, min=0.0, max=1.0, help="if nothing survives: masks >= this fraction")
    max_masks: int = setting(20, min=1)
    num_points: Optional[int] = setting(None, min=1, help="points per draw (default: the model's K)")
    repeats: int = setting(5, min=1, help="draws per mask; the mask's score is the lowest")
    protocol: str = setting("fast", choices=PROTOCOLS)
    draws: str = setting("image", choices=DRAWS)
    encoder_batch: int = setting(128, min=1, help="region texts per Q-Former/T5-encoder call")
    decoder_batch: int = setting(0, min=0, help="(draw, sentence) pairs per decoder call; 0 = auto")
    on_no_candidate: str = setting("empty", choices=NO_CANDIDATE)
    visualize: int = setting(0, min=0, help="write N PNG overlays")
    prefetch: int = setting(2, min=0, help="images loaded ahead by threads")
    region_prompt: str = setting(
        "points",
        choices=REGION_PROMPTS,
        help="points | empty (ablation) | box (points in the mask's box) | "
        "crop | blur | circle (visual prompts, empty region text)",
    )

    NOT_IN_RESULTS = ("test_splits", "visualize", "prefetch")

    def resolved(self, device: torch.device, num_points: Optional[int] = None) -> "RISSettings":
        return resolve_scoring(self, device, num_points)


class ScoringSettings(Protocol):
    """What the scorers read of a task's settings (RIS's and REC's share these keys)."""

    seed: int
    num_points: Optional[int]
    repeats: int
    draws: str
    region_prompt: str
    encoder_batch: int
    decoder_batch: int

    def resolved(self, device: torch.device, num_points: Optional[int] = None) -> "ScoringSettings": ...


def resolve_scoring(settings: Any, device: torch.device, num_points: Optional[int] = None) -> Any:
    """Fill ``decoder_batch: 0`` (auto): 1024 pairs per call on GPU, 64 on CPU (measured on
    the tiny preset: larger CPU batches are slower, their logits no longer fit in cache), and
    an unset ``num_points`` with the model's K (``num_points``)."""
    out = settings
    if not out.decoder_batch:
        out = replace(out, decoder_batch=1024 if torch.device(device).type == "cuda" else 64)
    if out.num_points is None and num_points is not None:
        out = replace(out, num_points=int(num_points))
    return out


# ----------------------------------------------------------------------------- filtering
@dataclass(frozen=True)
class Candidates:
    """Proposal indices that are scored (proposal order) and whether the fallback chose them."""

    indices: List[int]
    fallback: bool
    empty: int = 0  # empty masks among the proposals: dropped (nothing to point at) and counted


def hugs_border(mask: np.ndarray, threshold: float) -> bool:
    """The official border test, literally: with H x W the mask size, the foreground count in
    the top or bottom 2 rows compared with ``threshold * H``, in the left or right 2 columns
    with ``threshold * W`` (rows against H and columns against W, as the released code does)."""
    height, width = mask.shape
    return bool(
        mask[:2].sum() > threshold * height
        or mask[-2:].sum() > threshold * height
        or mask[:, :2].sum() > threshold * width
        or mask[:, -2:].sum() > threshold * width
    )


def filter_proposals(
    props: ProposalSet,
    threshold: float = 0.7,
    small_threshold: float = 0.04,
    max_masks: int = 20,
    fallback_min_area: float = 0.01,
) -> Candidates:
    """The official filtering: drop masks under ``small_threshold`` of the image and border huggers,
    keep the first ``max_masks`` survivors in proposal order; if none survive, keep the first
    ``max_masks`` masks covering at least ``fallback_min_area``, without the border test. An
    empty mask is never a candidate, whatever the thresholds (counted in ``Candidates.empty``)."""
    height, width = props.height, props.width
    empty = int((props.areas == 0).sum())
    keep: List[int] = []
    for i in range(len(props)):
        if props.areas[i] == 0:
            continue
        if props.areas[i] / height / width < small_threshold:  # official: mask.sum() / H / W
            continue
        if hugs_border(props.mask(i), threshold):
            continue
        keep.append(i)
        if len(keep) == max_masks:
            break
    if keep:
        return Candidates(keep, False, empty)
    fallback = [
        i for i in range(len(props)) if props.areas[i] and not props.areas[i] / height / width < fallback_min_area
    ]
    return Candidates(fallback[:max_masks], True, empty)


# ----------------------------------------------------------------------------- region prompts
class PointSampler(Protocol):
    def sample(self, k: int, rng: np.random.Generator) -> np.ndarray: ...


class BoxPointSampler:
    """K points drawn uniformly in a pixel box ``(x0, y0, x1, y1)`` (a mask's box with ends
    exclusive, or a detector's float box), by the project's box rule
    (:meth:`regionvlm.region.Region.sample_points`). The box is clipped to the image and a
    side of no length becomes the one-pixel cell at its position
    (:func:`regionvlm.data.boxes.sampling_box`), so a zero-area detection can be drawn in."""

    def __init__(self, box: Tuple[float, float, float, float], height: int, width: int):
        self.region = Region.from_box(sampling_box(box, height, width), image_size=(width, height))

    def sample(self, k: int, rng: np.random.Generator) -> np.ndarray:
        return self.region.sample_points(k, rng)


@dataclass
class MaskPrompts:
    """One image's candidate masks as the scorers take them, in one ``region_prompt`` mode:
    ``images`` is (1, 3, S, S), the image every mask shares (text modes), or (M, 3, S, S),
    mask m's prompted image (visual modes); ``samplers`` says where each mask's points are
    drawn (text modes; empty for visual modes)."""

    mode: str
    images: torch.Tensor
    samplers: List[PointSampler]

    @property
    def visual(self) -> bool:
        return self.mode in VISUAL_MODES

    def __len__(self) -> int:
        return self.images.shape[0] if self.visual else len(self.samplers)

    def to(self, device: torch.device | str) -> "MaskPrompts":
        return replace(self, images=self.images.to(device))


def build_prompts(
    mode: str,
    image: Any,
    masks: Sequence[np.ndarray],
    vis_processor: Callable[[Any], torch.Tensor],
    boxes: Optional[Sequence[Tuple[float, float, float, float]]] = None,
) -> MaskPrompts:
    """What ``region_prompt`` ``mode`` gives the model for each of ``masks`` (bool, the
    image's own resolution) of the PIL ``image``: visual modes transform the image per mask
    and run each result through ``vis_processor``; text modes process the image once.
    ``box`` draws in ``boxes`` (pixel ``(x0, y0, x1, y1)`` per mask, e.g. COCO's annotated
    box); by default in each mask's own box (:func:`mask_box`)."""
    if mode not in REGION_PROMPTS:
        raise ValueError(f"unknown region_prompt {mode!r}")  # settings validation stops users before this
    if not masks:
        raise ValueError("build_prompts needs at least one mask")
    if boxes is not None and len(boxes) != len(masks):
        raise ValueError(f"{len(boxes)} boxes for {len(masks)} masks")
    if mode in VISUAL_MODES:
        return MaskPrompts(mode, torch.stack([vis_processor(im) for im in apply_visual_prompt(mode, image, masks)]), [])
    if mode == "box":
        boxes = boxes if boxes is not None else [mask_box(m) for m in masks]
        samplers: List[PointSampler] = [BoxPointSampler(b, *m.shape) for b, m in zip(boxes, masks)]
    else:
        samplers = [MaskPointSampler(m) for m in masks]
    return MaskPrompts(mode, vis_processor(image).unsqueeze(0), samplers)


def draw_region_texts(
    samplers: Sequence[PointSampler],
    num_points: int,
    repeats: int,
    rng: np.random.Generator,
    text_processor: Callable[[str], str],
    empty: bool = False,
) -> List[str]:
    """``repeats`` region texts per mask, mask-major (mask 0 draw 0..R-1, mask 1 ...).
    ``empty=True`` (the ablation) replaces every text by "" after drawing the same points."""
    texts = [text_processor(format_points(s.sample(num_points, rng))) for s in samplers for _ in range(repeats)]
    return [""] * len(texts) if empty else texts


# ----------------------------------------------------------------------------- scoring
@dataclass
class DrawGroup:
    """Sentences (indices into the image's sentence list) that share one set of draws."""

    key: str
    sentences: List[int]


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def encode_region_texts(
    model: torch.nn.Module, image_embeds: torch.Tensor, texts: Sequence[str], batch: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Q-Former + T5 encoder for many region texts: of one image (``image_embeds`` batch 1)
    or each with its own image (``image_embeds`` batch ``len(texts)``)."""
    if image_embeds.shape[0] not in (1, len(texts)):
        raise ValueError(f"{image_embeds.shape[0]} image embeddings for {len(texts)} region texts")
    hidden, masks = [], []
    for start in range(0, len(texts), batch):
        rows = image_embeds if image_embeds.shape[0] == 1 else image_embeds[start : start + batch]
        queries = model.region_queries(rows, texts[start : start + batch])
        embeds, mask = model.t5_inputs(queries)
        hidden.append(model.encode_t5(embeds, mask))
        masks.append(mask)
    return torch.cat(hidden), torch.cat(masks)


def _sentence_order(model: torch.nn.Module, sentences: Sequence[str], indices: Sequence[int]) -> List[int]:
    lengths = [len(ids) for ids in model.t5_tokenizer([sentences[i] for i in indices]).input_ids]
    return [i for _, i in sorted(zip(lengths, indices))]


def _region_inputs(
    prompts: MaskPrompts, groups: Sequence[DrawGroup], settings: ScoringSettings, text_processor: Callable[[str], str]
) -> Tuple[List[DrawGroup], int, List[str]]:
    """(groups, draws per mask, region texts in group-major, mask-major, draw order).
    Visual modes draw nothing: one group of every sentence, one empty text per mask."""
    if prompts.visual:
        return [DrawGroup("visual", sorted(i for g in groups for i in g.sentences))], 1, [""] * len(prompts)
    texts: List[str] = []
    for g in groups:
        texts += draw_region_texts(
            prompts.samplers,
            settings.num_points,
            settings.repeats,
            item_rng(settings.seed, g.key),
            text_processor,
            empty=settings.region_prompt == "empty",
        )
    return list(groups), settings.repeats, texts


def encode_images(model: torch.nn.Module, images: torch.Tensor, batch: int) -> torch.Tensor:
    """ViT features of a stack of images, ``batch`` images per call."""
    return torch.cat([model.encode_image(images[i : i + batch]) for i in range(0, images.shape[0], batch)])


@torch.inference_mode()
def score_image_fast(
    model: torch.nn.Module,
    prompts: MaskPrompts,
    sentences: Sequence[str],
    groups: Sequence[DrawGroup],
    settings: ScoringSettings,
    text_processor: Callable[[str], str],
) -> np.ndarray:
    """Scores (num_sentences, num_masks): the ViT once per image (visual modes: once per
    mask's prompted image, batched), the Q-Former + T5 encoder once per distinct (image, region
    text) — once per (mask, draw), or once in all for the EMPTY ablation, whose texts are all
    equal —, the decoder for every distinct (encoder row, sentence) pair, in chunks."""
    model = _unwrap(model)
    settings = settings.resolved(model.device, model.num_points)
    if settings.region_prompt != prompts.mode:
        raise ValueError(f"prompts built for {prompts.mode!r}, settings say {settings.region_prompt!r}")
    groups, repeats, texts = _region_inputs(prompts, groups, settings, text_processor)
    per_group = len(prompts) * repeats
    image_embeds = encode_images(model, prompts.images.to(model.device), settings.encoder_batch)
    # Identical inputs are encoded once: key = the text (one shared image) or (its image, text).
    shared = image_embeds.shape[0] == 1
    distinct: Dict[Any, int] = {}
    row_of = [
        distinct.setdefault(t if shared else (i // repeats % len(prompts), t), len(distinct))
        for i, t in enumerate(texts)
    ]
    firsts = list(distinct)
    unique_texts = [k if shared else k[1] for k in firsts]
    unique_embeds = image_embeds if shared else image_embeds[[k[0] for k in firsts]]
    hidden, enc_mask = encode_region_texts(model, unique_embeds, unique_texts, settings.encoder_batch)
    # Distinct (encoder row, sentence) pairs, sentences of similar token length next to each
    # other so that a decoder chunk pads little.
    pair_of: Dict[Tuple[int, int], int] = {}
    for gi, g in enumerate(groups):
        for s in _sentence_order(model, sentences, g.sentences):
            for r in row_of[gi * per_group : (gi + 1) * per_group]:
                pair_of.setdefault((r, s), len(pair_of))
    pairs = list(pair_of)
    chunks = []  # kept on the device: no synchronization until every chunk is queued
    for start in range(0, len(pairs), settings.decoder_batch):
        part = pairs[start : start + settings.decoder_batch]
        idx = torch.tensor([r for r, _ in part], device=hidden.device)
        chunks.append(model.target_nll(hidden[idx], enc_mask[idx], [sentences[s] for _, s in part]).float())
    nll = torch.cat(chunks).cpu().numpy().astype(np.float64)
    scores = np.full((len(sentences), len(prompts), repeats), np.nan)
    for gi, g in enumerate(groups):
        rows = row_of[gi * per_group : (gi + 1) * per_group]
        for s in g.sentences:
            scores[s] = nll[[pair_of[(r, s)] for r in rows]].reshape(len(prompts), repeats)
    return scores.min(axis=2)


@torch.inference_mode()
def score_image_official(
    model: torch.nn.Module,
    prompts: MaskPrompts,
    sentences: Sequence[str],
    groups: Sequence[DrawGroup],
    settings: ScoringSettings,
    text_processor: Callable[[str], str],
) -> np.ndarray:
    """The authors' protocol: one ``model.forward`` of R samples per (sentence, mask), the
    image repeated R times and encoded again each time (visual modes: one sample, the mask's
    prompted image)."""
    model = _unwrap(model)
    settings = settings.resolved(model.device, model.num_points)
    if settings.region_prompt != prompts.mode:
        raise ValueError(f"prompts built for {prompts.mode!r}, settings say {settings.region_prompt!r}")
    groups, repeats, texts = _region_inputs(prompts, groups, settings, text_processor)
    images = prompts.images.to(model.device)
    per_group = len(prompts) * repeats
    scores = np.full((len(sentences), len(prompts)), np.nan)
    for gi, g in enumerate(groups):
        for s in g.sentences:
            for m in range(len(prompts)):
                image = images[m : m + 1] if prompts.visual else images
                first = gi * per_group + m * repeats
                loss = model(
                    {
                        "image": image.repeat(repeats, 1, 1, 1),
                        "text_input": texts[first : first + repeats],
                        "text_output": [sentences[s]] * repeats,
                    },
                    reduction="none",
                )["loss"]
                scores[s, m] = float(loss.float().min())
    return scores


SCORERS = {"fast": score_image_fast, "official": score_image_official}


def mask_iou(pred: Optional[np.ndarray], gt: np.ndarray) -> Tuple[int, int, float]:
    """(intersection, union, IoU) in pixels; IoU 0 when the union is empty (official)."""
    if pred is None:
        inter, union = 0, int(gt.sum())
    else:
        if pred.shape != gt.shape:
            raise InputError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size.")
        inter, union = int(np.logical_and(pred, gt).sum()), int(np.logical_or(pred, gt).sum())
    return inter, union, (inter / union if union else 0.0)


def summarize(records: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """oIoU and mIoU (percent) over evaluated queries."""
    if not records:
        return {"oIoU": None, "mIoU": None, "num_queries": 0}
    inter = sum(r["intersection"] for r in records)
    union = sum(r["union"] for r in records)
    return {
        "oIoU": 100.0 * inter / union if union else 0.0,
        "mIoU": 100.0 * float(np.mean([r["iou"] for r in records])),
        "num_queries": len(records),
    }


ACCURACY_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def summarize_subsets(records: Sequence[Mapping[str, Any]], names: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """Per named subset (each record lists its own under ``subsets``): oIoU, mIoU and the share
    of queries with IoU above each of :data:`ACCURACY_THRESHOLDS` (percent), as PhraseCut's
    evaluator reports them; a subset without queries reports ``num_queries`` 0 only."""
    out: Dict[str, Dict[str, Any]] = {}
    for name in names:
        members = [r for r in records if name in r["subsets"]]
        summary = summarize(members)
        if members:
            ious = np.array([r["iou"] for r in members])
            summary["accuracy"] = {f"{t:.1f}": 100.0 * float(np.mean(ious > t)) for t in ACCURACY_THRESHOLDS}
        else:
            summary = {"num_queries": 0}
        out[name] = summary
    return out


# ----------------------------------------------------------------------------- per image
@dataclass
class ImageInputs:
    """One image's inputs, prepared on a prefetch thread: ``prompts`` is None when no
    proposal survives filtering."""

    proposals: ProposalSet
    candidates: Candidates
    prompts: Optional[MaskPrompts]
    gt: List[np.ndarray]  # per query of the image
    sentences: List[Optional[str]]
    subsets: List[Optional[List[str]]]  # per query: its named subsets (None: the dataset has none)


class ImageQueriesEvaluator(SplitEvaluator):
    """What RIS and REC share: a unit is an image with its referring expressions, scored by
    loss ranking over the image's candidates. Images whose files are missing stop the run
    before it starts, or (``skip_missing``) are left out with their expressions listed; an
    image that fails to load under ``skip_missing`` skips its expressions."""

    TASK = ""
    MISSING_HINT = "Images are read from <image_root>/<file_name>"

    def __init__(self, model: torch.nn.Module, dataset: Any, settings: Any, output_dir: str | Path):
        from regionvlm.processors import BlipCaptionProcessor, BlipImageEvalProcessor

        model = _unwrap(model)
        super().__init__(model, dataset, settings.resolved(model.device, model.num_points), Path(output_dir))
        self.vis_processor = dataset.vis_processor or BlipImageEvalProcessor(image_size=model.image_size)
        self.text_processor = dataset.text_processor or BlipCaptionProcessor()
        self.groups = {str(image_id): (image_id, queries) for image_id, queries in dataset.groups()}
        self.skipped: List[Dict[str, Any]] = list(dataset.skipped)

    def describe(self) -> str:
        return f"{self.TASK} {self.dataset.dataset_name} {self.dataset.split}"

    def prefetch(self) -> Tuple[int, int]:
        return self.settings.prefetch, min(self.settings.prefetch, 4)

    def units(self) -> List[Tuple[str, str]]:
        ds = self.dataset
        keys = list(self.groups)
        missing = ds.missing_files()
        if missing:
            if not ds.skip_missing:
                listing = "\n  ".join(f"{m['what']}: {m['path']}" for m in missing[:5])
                raise MissingFileError(
                    f"{len(missing)} file(s) needed by {ds.dataset_name} {ds.split} are missing, e.g.\n  {listing}\n"
                    f"{self.MISSING_HINT.format(ds=ds)}. Set skip_missing to evaluate without them."
                )
            absent: Dict[str, str] = {}
            for m in missing:
                absent.setdefault(str(m["image_id"]), f"{m['what']} file missing: {m['path']}")
            for k in [k for k in keys if k in absent]:
                self.skipped.extend(self._skip_entry(q, absent[k]) for q in self.groups[k][1])
            keys = [k for k in keys if k not in absent]
        return [(k, k) for k in keys]

    def load(self, key: str) -> Any:
        try:
            return self._load(key)
        except (MissingFileError, InputError) as exc:
            if not self.dataset.skip_missing:
                raise
            return Skip(str(exc))

    @abstractmethod
    def _load(self, key: str) -> Any:
        """The inputs of one image (prefetch threads): candidates, prompts, sentences."""

    def _skip_entry(self, q: Any, reason: str) -> Dict[str, Any]:
        return {**self.dataset.query_ids(q), "reason": reason}

    def _active(self, queries: Sequence[Any], sentences: Sequence[Optional[str]]) -> Tuple[list, list]:
        """``(active, skipped)``: ``(position, query, sentence)`` of the expressions to score, and
        the skip entries of those empty after text processing (an error unless ``skip_missing``)."""
        ds = self.dataset
        active, skipped = [], []
        for i, (q, sentence) in enumerate(zip(queries, sentences)):
            if sentence is not None:
                active.append((i, q, sentence))
                continue
            reason = (
                f"{ds.describe_query(q)} ({q.sentence!r}) is empty after text processing; an empty expression "
                "cannot be scored"
            )
            if not ds.skip_missing:
                raise InputError(f"'{ds.queries_file}': {reason}. Fix the file or set skip_missing.")
            skipped.append(self._skip_entry(q, reason))
        return active, skipped

    def _score(self, image_id: Any, prompts: Optional[torch.Tensor], active: Sequence[tuple]) -> np.ndarray:
        """Loss of every (active expression, candidate): one row per expression; no columns
        when the image has no candidate."""
        s = self.settings
        if prompts is None or not active:
            return np.zeros((len(active), 0))
        if s.draws == "image":
            groups = [DrawGroup(f"{image_id}", list(range(len(active))))]
        else:
            groups = [  # key: image, then the query's ids (e.g. 1/10/100 for ref 10 sentence 100)
                DrawGroup("/".join(str(v) for v in [image_id, *(getattr(q, f) for f in self.dataset.ID_FIELDS)]), [i])
                for i, (_, q, _) in enumerate(active)
            ]
        sentences = [sentence for _, _, sentence in active]
        return SCORERS[s.protocol](self.model, prompts.to(self.model.device), sentences, groups, s, self.text_processor)


class RISEvaluator(ImageQueriesEvaluator):
    """One RIS split on the evaluation loop. The dataset is any
    :class:`~regionvlm.datasets.ris_datasets.RISQueryDataset` (RefCOCO family, synthetic world,
    PhraseCut)."""

    TASK = "RIS"
    MISSING_HINT = (
        "Images are read from <image_root>/<file_name> (image_root={ds.image_root}); proposals from "
        "<proposals>/<image name>.json (proposals={ds.proposals}, written by `python -m regionvlm.proposals`)"
    )

    def _load(self, key: str) -> ImageInputs:
        image_id, queries = self.groups[key]
        ds, s = self.dataset, self.settings
        info = ds.image(image_id)
        props = read_proposals(ds.proposal_path(image_id), info.file_name)
        if (props.height, props.width) != (info.height, info.width):
            raise InputError(
                f"proposals '{props.path}' are {props.height}x{props.width} but '{ds.sizes_file}' says "
                f"image {image_id} ({info.file_name}) is {info.height}x{info.width}; regenerate the proposals "
                "from the same images."
            )
        path = ds.image_path(image_id)
        rgb = ds.load_image(image_id)  # its size checked against the dataset's record
        if s.region_prompt in VISUAL_MODES and rgb.size != (props.width, props.height):
            raise InputError(
                f"the image '{path}' is {rgb.height}x{rgb.width} but its proposals '{props.path}' are "
                f"{props.height}x{props.width}; region_prompt '{s.region_prompt}' marks the masks on the image "
                "itself, so they must match (regenerate the proposals from this image)."
            )
        cands = filter_proposals(props, s.threshold, s.small_threshold, s.max_masks, s.fallback_min_area)
        prompts = None
        if cands.indices:
            prompts = build_prompts(s.region_prompt, rgb, [props.mask(i) for i in cands.indices], self.vis_processor)
        gt = ds.gt_masks(queries)
        sentences = [self.text_processor(q.sentence) or None for q in queries]
        subsets = [ds.query_subsets(q, m) for q, m in zip(queries, gt)]
        return ImageInputs(props, cands, prompts, gt, sentences, subsets)

    # -- scoring one image (main thread)
    def process(self, key: str, inputs: ImageInputs | Skip) -> Dict[str, Any]:
        image_id, queries = self.groups[key]
        s = self.settings
        ds = self.dataset
        if isinstance(inputs, Skip):
            return {
                "queries": [],
                "skipped": [self._skip_entry(q, inputs.reason) for q in queries],
                "empty_proposals": 0,
            }
        active, skipped = self._active(queries, inputs.sentences)
        cands = inputs.candidates
        if not cands.indices and active and s.on_no_candidate == "error":
            raise InputError(
                f"image {image_id}: none of the {len(inputs.proposals)} proposals in '{inputs.proposals.path}' "
                f"survives filtering, not even the fallback (>= {s.fallback_min_area:.0%} of the image); "
                "set run.on_no_candidate=empty to score such queries as IoU 0."
            )
        scores = self._score(image_id, inputs.prompts, active)
        records = []
        for row, (i, q, _) in enumerate(active):
            chosen = cands.indices[int(np.argmin(scores[row]))] if cands.indices else None
            inter, union, iou = mask_iou(inputs.proposals.mask(chosen) if chosen is not None else None, inputs.gt[i])
            record = {
                "index": q.index,
                **ds.query_ids(q),
                "sentence": q.sentence,
                "candidates": list(cands.indices),
                "fallback": cands.fallback,
                "scores": [float(v) for v in scores[row]],
                "chosen": chosen,
                "iou": iou,
                "intersection": inter,
                "union": union,
            }
            if inputs.subsets[i] is not None:
                record["subsets"] = inputs.subsets[i]
            records.append(record)
        return {"queries": records, "skipped": skipped, "empty_proposals": cands.empty}

    # -- the whole split (main process)
    def finish(self, outputs: List[Dict[str, Any]]) -> SplitResult:
        records = sorted((r for res in outputs for r in res["queries"]), key=lambda r: r["index"])
        id_fields = self.dataset.ID_FIELDS
        skipped = self.skipped + [e for res in outputs for e in res["skipped"]]
        skipped.sort(key=lambda e: tuple(e[f] for f in id_fields))
        metrics = summarize(records)
        no_candidate = [{f: r[f] for f in (*id_fields, "image_id")} for r in records if r["chosen"] is None]
        metrics.update(
            {
                "num_images": len({r["image_id"] for r in records}),
                "num_skipped": len(skipped),
                "num_no_candidate": len(no_candidate),
                "num_fallback": sum(1 for r in records if r["fallback"] and r["chosen"] is not None),
                "num_empty_proposals": sum(res.get("empty_proposals", 0) for res in outputs),
            }
        )
        if self.settings.visualize:
            self.visualize(records[: self.settings.visualize])
        name = f"{self.dataset.eval_name}_{self.dataset.split}"
        if no_candidate:
            echo(
                f"[ris] {name}: warning: {len(no_candidate)} quer(y/ies) had no proposal left after filtering "
                "(scored as IoU 0; listed under 'no_candidate')."
            )
        if skipped:
            echo(f"[ris] {name}: warning: {len(skipped)} quer(y/ies) skipped (listed under 'skipped').")
        if metrics["num_empty_proposals"]:
            echo(
                f"[ris] {name}: warning: {metrics['num_empty_proposals']} empty proposal mask(s) dropped "
                "(counted as num_empty_proposals)."
            )
        details: Dict[str, Any] = {"no_candidate": no_candidate, "skipped": skipped}
        if self.dataset.SUBSETS:
            details["subsets"] = summarize_subsets(records, self.dataset.SUBSETS)
        return SplitResult(metrics, {**details, "queries": records})

    def visualize(self, records: Sequence[Mapping[str, Any]]) -> List[Path]:
        """PNG per query: image with the chosen mask (red) and ground truth (green), the
        expression and the IoU below."""
        from PIL import Image, ImageDraw

        folder = self.output_dir / f"ris_{self.dataset.eval_name}_{self.dataset.split}_vis"
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for r in records:
            image_id = r["image_id"]
            rgb = np.asarray(self.dataset.load_image(image_id)).astype(np.float32)
            gt = self.dataset.gt_masks([self.dataset.queries[r["index"]]])[0]
            pred = np.zeros_like(gt)
            if r["chosen"] is not None:
                pred = read_proposals(self.dataset.proposal_path(image_id)).mask(r["chosen"])
            out = rgb.copy()
            for m, colour in ((gt, (0, 255, 0)), (pred, (255, 0, 0))):
                out[m] = 0.55 * out[m] + 0.45 * np.array(colour, dtype=np.float32)
            height, width = gt.shape
            lines = textwrap.wrap(f'"{r["sentence"]}"', max(10, width // 7)) + [
                f"IoU {r['iou']:.3f}  red: proposal {r['chosen']}  green: ground truth"
            ]
            canvas = Image.new("RGB", (width, height + 14 * len(lines) + 6), (255, 255, 255))
            canvas.paste(Image.fromarray(out.clip(0, 255).astype(np.uint8)), (0, 0))
            draw = ImageDraw.Draw(canvas)
            for i, line in enumerate(lines):
                draw.text((3, height + 3 + 14 * i), line, fill=(0, 0, 0))
            path = folder / f"q{r['index']:05d}_{self.dataset.query_label(r)}.png"
            canvas.save(path)
            written.append(path)
        return written


# ----------------------------------------------------------------------------- task
@registry.register_task("ris")
class RISTask(EvalTask):
    """Zero-shot RIS evaluation (no training step): ``run.evaluate: true`` with RIS datasets
    (builders ``refcoco``, ``refcoco+``, ``refcocog``, ``ris_synthetic``, ``phrasecut``)."""

    NAME = "ris"
    Settings = RISSettings
    DATASET_TYPES = (RISQueryDataset,)
    Evaluator = RISEvaluator
    HEADLINE = "oIoU"
    VARIANT = ("region_prompt", "points")

    def wrong_dataset_message(self, name: str, split: str, dataset: Any) -> str:
        return (
            f"task 'ris' scores RISDataset datasets (builders refcoco, refcoco+, refcocog, ris_synthetic) and "
            f"PhraseCutDataset datasets (builder phrasecut); `datasets.{name}` ({split}) built a "
            f"{type(dataset).__name__}. Use a matching builder or run.task."
        )

    def report(self, eval_name: str, split: str, m: Mapping[str, Any]) -> None:
        echo(f"[RIS] {eval_name}_{split}: oIoU {fmt(m['oIoU'])}  mIoU {fmt(m['mIoU'])}  ({m['num_queries']} queries)")


def fmt(v: Optional[float]) -> str:
    """A metric for the log: two decimals, ``n/a`` when undefined (no query)."""
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"
