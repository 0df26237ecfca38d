"""Zero-shot Visual Commonsense Reasoning (task ``vcr``, docs/evaluation.md).

Per item the image is encoded once. Every prompt lists the objects it mentions; each gets its
own Q-Former pass (the image + ``K`` random pixels of the object's mask as region text) and
its 32 soft tokens are spliced into the T5 input exactly as the authors'
``predict_answers_describe_first`` does::

    "Let"  "[i] be" <32 soft tokens of i>  "[j] be" <soft j> ...  "<prompt>" </s>

(each text piece tokenized on its own without ``</s>``; one ``</s>`` closes the prompt —
:meth:`RegionVLMT5.embed_segments`). Objects appear in the order the authors' code produces,
``list(set(indices in reading order))`` (CPython's set order: ascending for small indices,
but e.g. ``{9, 1, 2}`` iterates as 9, 2, 1); the indices come from the token lists, so ids
>= 10 are right, unlike the authors' digit-by-digit parser (see ``regionvlm.data.vcr``).

Prompts (strings exactly as the authors build them, double spaces and trailing space
included; the T5 tokenizer squeezes them)::

    Q->A : "Question: {q} 1. {a1} 2. {a2} 3. {a3} 4. {a4} Answer: "
    QA->R: "Question: {q} Answer: {gold answer} Why?  1. {r1} 2. {r2} 3. {r3} 4. {r4}"
    Q->AR: QA->R with the predicted answer; right only if answer and rationale are right.

Modes:

- ``generate`` (official): beam 5, up to 30 new tokens; the prediction is the first run of
  digits in the output, ``"1"`` when there is none (counted as a fallback). It is compared
  as a string with ``label + 1`` (so ``"01"`` is wrong), and Q->AR uses answer
  ``int(pred) - 1`` with Python indexing as the authors do: ``"0"`` selects answer 4,
  ``"5"`` and above answer 1 (counted as out of range).
- ``ranking`` (an addition, NOT the paper's protocol): the same T5 input, each of the four
  choices scored by its mean token NLL as the T5 target (``ranking_target: text``, the
  choice's text — truncated to ``model.max_output_txt_len`` tokens, raise it to score long
  rationales in full — or ``number``, the digit ``1``-``4``); the lowest wins.

Each prompt draws its own points (as the authors do, who re-sample for every prompt) from
``item_rng(seed, "<annot_id>/<q_a|qa_r|q_ar>")``, so results depend only on the seed, not
on sharding, batching order or resumption. Items are processed ``batch_size`` at a time
through :func:`run_resumable` (torchrun-sharded, resumable, progress bar); a resumed run
must keep the same settings (they are part of the progress-log name).
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from regionvlm.common.errors import ConfigError, RegionVLMError
from regionvlm.common.registry import registry
from regionvlm.common.settings import setting
from regionvlm.data.vcr import NUM_CHOICES, VCRItem, object_references, render_tokens
from regionvlm.datasets.vcr_datasets import VCRDataset, VCRSample
from regionvlm.region import format_points, sample_mask_points
from regionvlm.tasks.evaluation import DecodingEvalSettings, EvalTask, SplitEvaluator, SplitResult, item_rng

MODES = ("generate", "ranking")
RANKING_TARGETS = ("text", "number")
PROMPT_KINDS = ("q_a", "qa_r", "q_ar")
LEAD_WORD = "Let"
FALLBACK_PREDICTION = "1"
_FIRST_INTEGER = re.compile(r"\d+")


# -------------------------------------------------------------------- prompts
@dataclass(frozen=True)
class VCRPrompt:
    """One T5 input: the prompt text, its objects (official order) and its four choices."""

    kind: str
    text: str
    objects: Tuple[int, ...]
    choices: Tuple[str, ...]


def official_object_order(indices: Sequence[int]) -> Tuple[int, ...]:
    """``list(set(indices))`` as the authors' code orders the objects (CPython set order)."""
    return tuple(set(indices))


def answer_prompt(item: VCRItem) -> VCRPrompt:
    """Q->A: the question followed by the four numbered answers."""
    choices = tuple(render_tokens(c) for c in item.answer_choices)
    question = render_tokens(item.question).strip()
    text = "Question: " + question + "".join(f" {j}. {c}" for j, c in enumerate(choices, 1)) + " Answer: "
    objects = official_object_order(object_references(item.question, *item.answer_choices))
    return VCRPrompt("q_a", text, objects, choices)


def rationale_prompt(item: VCRItem, answer_index: int, kind: str = "qa_r") -> VCRPrompt:
    """QA->R (gold answer) or Q->AR (predicted answer): question, answer, four rationales."""
    choices = tuple(render_tokens(c) for c in item.rationale_choices)
    answer = item.answer_choices[answer_index]
    text = (
        "Question: "
        + render_tokens(item.question).strip()
        + " Answer: "
        + render_tokens(answer)
        + " Why? "
        + "".join(f" {j}. {c}" for j, c in enumerate(choices, 1))
    )
    objects = official_object_order(object_references(item.question, answer, *item.rationale_choices))
    return VCRPrompt(kind, text, objects, choices)


def prompt_segments(prompt: VCRPrompt, soft: Dict[int, torch.Tensor]) -> List[Any]:
    """``["Let", "[i] be", soft_i, ..., prompt]`` for :meth:`RegionVLMT5.embed_segments`."""
    segments: List[Any] = [LEAD_WORD]
    for obj in prompt.objects:
        segments += [f"[{obj}] be", soft[obj]]
    segments.append(prompt.text)
    return segments


# ------------------------------------------------------------ answer parsing
def parse_prediction(output: str) -> Tuple[str, bool]:
    """First run of digits in the generated text, or ``("1", True)`` when there is none."""
    match = _FIRST_INTEGER.search(output)
    return (match.group(0), False) if match else (FALLBACK_PREDICTION, True)


def is_correct(prediction: str, label: int) -> bool:
    """The authors' test: the predicted string equals the 1-based label as a string."""
    return prediction == str(label + 1)


def in_range(prediction: str) -> bool:
    return prediction in {str(j) for j in range(1, NUM_CHOICES + 1)}


def answer_index_for_rationale(prediction: str) -> int:
    """Which answer the Q->AR prompt shows: ``answers[int(pred) - 1]`` with Python indexing,
    answer 1 when that index does not exist (the authors' ``try/except``)."""
    index = int(prediction) - 1
    return index % NUM_CHOICES if -NUM_CHOICES <= index < NUM_CHOICES else 0


def score_item(answer_label: int, rationale_label: int, q_a: str, qa_r: str, q_ar: str) -> Dict[str, bool]:
    """Correctness of the three predictions; Q->AR needs the answer *and* its rationale."""
    return {
        "q_a": is_correct(q_a, answer_label),
        "qa_r": is_correct(qa_r, rationale_label),
        "q_ar": is_correct(q_a, answer_label) and is_correct(q_ar, rationale_label),
    }


# ------------------------------------------------------------------ settings
@dataclass(frozen=True)
class VCRSettings(DecodingEvalSettings):
    mode: str = setting("generate", choices=MODES, help="generate (official) | ranking (addition)")
    ranking_target: str = setting("text", choices=RANKING_TARGETS, help="ranking: score the choice text or number")
    num_points: Optional[int] = setting(None, min=1, help="points per object (default: the model's, 10)")
    qformer_batch: int = setting(64, min=1, help="object prompts per Q-Former call")


def summarize(rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Accuracies (percent of evaluated items), correct counts, fallbacks, out-of-range picks."""
    done = [r for r in rows if "skipped" not in r]
    n = len(done)
    correct = {k: sum(r["correct"][k] for r in done) for k in PROMPT_KINDS}
    return {
        "num_items": n,
        "accuracy": {k: round(100.0 * correct[k] / n, 4) if n else None for k in PROMPT_KINDS},
        "correct": correct,
        "fallbacks": {k: sum(r[k]["fallback"] for r in done) for k in PROMPT_KINDS},
        "out_of_range": {k: sum(not in_range(r[k]["pred"]) for r in done) for k in PROMPT_KINDS},
        "mask_box_fallback_objects": sum(len(r["mask_box_fallbacks"]) for r in done),
    }


# ----------------------------------------------------------------- evaluator
class VCREvaluator(SplitEvaluator):
    """A unit is a batch of items: their three prompts, each image encoded once."""

    def units(self) -> List[Tuple[str, List[int]]]:
        ds = self.dataset
        unlabeled = [it.key for it in ds.items if it.answer_label is None or it.rationale_label is None]
        if unlabeled:
            raise ConfigError(
                f"{len(unlabeled)} VCR items have no answer/rationale label (first: "
                f"{unlabeled[0]}); the VCR test labels are hidden, evaluate on val."
            )
        indices = list(range(len(ds)))
        size = self.settings.batch_size_eval
        chunks = [indices[i : i + size] for i in range(0, len(indices), size)]
        return [(",".join(ds.items[i].key for i in c), c) for c in chunks]

    def describe(self) -> str:
        return f"VCR {self.dataset.split} ({self.settings.mode})"

    # -- loading -----------------------------------------------------------
    def load(self, indices: Sequence[int]) -> List[Any]:
        """Samples, or a ``str`` reason for an item skipped under ``skip_missing``."""

        def one(index: int) -> Any:
            try:
                return self.dataset[index]
            except RegionVLMError as exc:
                if not self.dataset.skip_missing:
                    raise
                return str(exc)

        if self.settings.num_workers > 0 and len(indices) > 1:
            with ThreadPoolExecutor(min(self.settings.num_workers, len(indices))) as pool:
                return list(pool.map(one, indices))
        return [one(i) for i in indices]

    # -- model steps -------------------------------------------------------
    def region_text(self, mask, rng) -> str:
        text = format_points(sample_mask_points(mask, self.settings.num_points, rng))
        processor = self.dataset.text_processor
        return processor(text) if processor is not None else text

    def soft_tokens(
        self,
        image_embeds: torch.Tensor,
        image_of: Sequence[int],
        samples: Sequence[VCRSample],
        prompts: Sequence[Tuple[int, VCRPrompt]],
    ) -> List[Dict[int, torch.Tensor]]:
        """Per prompt: object -> its 32 soft tokens (one Q-Former pass per object, batched).
        ``image_of[b]`` is the row of ``image_embeds`` holding sample ``b``'s image."""
        jobs: List[Tuple[int, int, int, str]] = []  # (prompt, image row, object, region text)
        for p, (b, prompt) in enumerate(prompts):
            rng = item_rng(self.settings.seed, f"{samples[b].item.key}/{prompt.kind}")
            for obj in prompt.objects:
                jobs.append((p, image_of[b], obj, self.region_text(samples[b].masks[obj], rng)))
        out: List[Dict[int, torch.Tensor]] = [{} for _ in prompts]
        step = self.settings.qformer_batch
        for start in range(0, len(jobs), step):
            part = jobs[start : start + step]
            index = torch.tensor([b for _, b, _, _ in part], device=image_embeds.device)
            queries = self.model.region_queries(image_embeds[index], [t for _, _, _, t in part])
            for (p, _, obj, _), q in zip(part, queries):
                out[p][obj] = q
        return out

    def decide(
        self,
        image_embeds: torch.Tensor,
        image_of: Sequence[int],
        samples: Sequence[VCRSample],
        prompts: Sequence[Tuple[int, VCRPrompt]],
    ) -> List[Dict[str, Any]]:
        """One decision per prompt: ``{"pred", "fallback", "output"|"scores"}``."""
        soft = self.soft_tokens(image_embeds, image_of, samples, prompts)
        embeds, mask = self.model.embed_segments([prompt_segments(prompt, s) for (_, prompt), s in zip(prompts, soft)])
        if self.settings.mode == "generate":
            outputs = self.model.generate_from_embeds(embeds, mask, self.settings.generation())
            decisions = []
            for text in outputs:
                pred, fallback = parse_prediction(text)
                decisions.append({"output": text, "pred": pred, "fallback": fallback})
            return decisions
        hidden = self.model.encode_t5(embeds, mask)
        if self.settings.ranking_target == "text":
            targets = [c for _, prompt in prompts for c in prompt.choices]
        else:
            targets = [str(j) for _ in prompts for j in range(1, NUM_CHOICES + 1)]
        nll = self.model.target_nll(
            hidden.repeat_interleave(NUM_CHOICES, 0), mask.repeat_interleave(NUM_CHOICES, 0), targets
        )
        scores = nll.view(len(prompts), NUM_CHOICES).float().cpu()
        return [
            {"scores": [round(float(v), 6) for v in row], "pred": str(int(row.argmin()) + 1), "fallback": False}
            for row in scores
        ]

    def process(self, indices: Sequence[int], loaded: List[Any]) -> List[Dict[str, Any]]:
        """Q->A and QA->R of every item in one pass, then Q->AR with the predicted answers.
        Each distinct image file of the batch is encoded once."""
        rows: List[Optional[Dict[str, Any]]] = [None] * len(indices)
        live = []
        for pos, (index, sample) in enumerate(zip(indices, loaded)):
            if isinstance(sample, str):
                item = self.dataset.items[index]
                rows[pos] = {"key": item.key, "where": item.where, "skipped": sample}
            else:
                live.append((pos, sample))
        if live:
            samples = [s for _, s in live]
            if not all(torch.is_tensor(s.image) for s in samples):
                raise ConfigError("the VCR dataset has no image processor; build it with the `vcr` builder.")
            rows_of: Dict[str, int] = {}  # items sharing an image file share its encoding
            image_of = [rows_of.setdefault(s.item.img_fn, len(rows_of)) for s in samples]
            first = {}
            for s, row in zip(samples, image_of):
                first.setdefault(row, s.image)
            image_embeds = self.model.encode_image(torch.stack([first[r] for r in range(len(first))]))
            prompts = []
            for b, s in enumerate(samples):
                prompts += [(b, answer_prompt(s.item)), (b, rationale_prompt(s.item, s.item.answer_label))]
            stage1 = self.decide(image_embeds, image_of, samples, prompts)
            used = [answer_index_for_rationale(stage1[2 * b]["pred"]) for b in range(len(samples))]
            second = [(b, rationale_prompt(s.item, used[b], "q_ar")) for b, s in enumerate(samples)]
            stage2 = self.decide(image_embeds, image_of, samples, second)
            for b, (pos, s) in enumerate(live):
                q_a, qa_r, q_ar = stage1[2 * b], stage1[2 * b + 1], stage2[b]
                q_ar = {**q_ar, "answer_shown": used[b] + 1}
                correct = score_item(
                    s.item.answer_label, s.item.rationale_label, q_a["pred"], qa_r["pred"], q_ar["pred"]
                )
                rows[pos] = {
                    "key": s.item.key,
                    "answer_gold": s.item.answer_label + 1,
                    "rationale_gold": s.item.rationale_label + 1,
                    "q_a": q_a,
                    "qa_r": qa_r,
                    "q_ar": q_ar,
                    "correct": correct,
                    "mask_box_fallbacks": s.mask_fallbacks,
                }
        return rows

    def finish(self, outputs: List[List[Dict[str, Any]]]) -> SplitResult:
        rows = [row for group in outputs for row in group]
        summary = summarize(rows)
        skipped = [s.to_dict() for s in self.dataset.skipped] + [
            {"key": r["key"], "where": r["where"], "reason": r["skipped"]} for r in rows if "skipped" in r
        ]
        metrics: Dict[str, Any] = dict(summary["accuracy"])
        metrics.update(
            {
                "num_items": summary["num_items"],
                "num_skipped": len(skipped),
                **{f"fallbacks_{k}": v for k, v in summary["fallbacks"].items()},
            }
        )
        s = self.settings
        protocol = (
            "official: beam search, first integer of the output (default 1)"
            if s.mode == "generate"
            else f"ranking (addition, not the paper's protocol): lowest mean NLL of the choice {s.ranking_target} "
            "as T5 target"
        )
        details = {"annotation": self.dataset.annotation_path, "protocol": protocol, **summary}
        return SplitResult(metrics, {**details, "skipped": skipped, "predictions": rows})


# ---------------------------------------------------------------------- task
@registry.register_task("vcr")
class VCRTask(EvalTask):
    """Zero-shot VCR (Q->A, QA->R, Q->AR) on every ``vcr`` dataset of the config."""

    NAME = "vcr"
    Settings = VCRSettings
    DATASET_TYPES = (VCRDataset,)
    Evaluator = VCREvaluator
    HEADLINE = "q_ar"
    VARIANT = ("mode", "generate")
