"""Interactive region dialogue over one image (docs/dialogue.md).

A :class:`Conversation` holds one image (encoded once), the regions the user pointed at
(each turned into ``num_points`` points once, with a seed, so the text shown is the text
sent) and the turns so far. In a question, ``[i]`` stands for region ``i`` (1-based, in
the order the regions were added)::

    conv = Conversation(model, image, vis_processor=vis["eval"], text_processor=txt["eval"])
    conv.add_region(Region.from_box((10, 20, 200, 180), image_size=image.size))   # -> 1
    conv.add_region(Region.from_points([(40, 50), (60, 52)], image_size=image.size))  # -> 2
    conv.describe(1)                        # region captioning, no text needed
    conv.ask("Is [1] bigger than [2]?")     # both regions' soft tokens in one turn
    conv.ask("What color is it?")           # follow-up: earlier turns are the context

Every T5 input is built by ``model.embed_segments`` (text pieces without special tokens,
soft tokens as tensors, one ``</s>`` at the end) - the same code VCR uses.

Layout of one turn (``layout=``; built by :mod:`regionvlm.processors.region_layouts`, which
the region classification task shares)
    ``"inline"`` (default; the authors' ``predict_answers_interactive``):
    every ``[i]`` is replaced by region i's soft tokens where the user wrote it:
    ``"Is " <soft 1> " bigger than " <soft 2> "?"``. Difference from the official code,
    which tokenizes the whole question and splices at the ``[``/``]`` tokens: here each text
    piece is tokenized alone, so a piece that starts right after a marker without a space
    (``"[1]?"``) gets one extra ``"▁"`` token (id 3) in front; pieces that start with a
    space tokenize identically.
    ``"let"`` (the authors' ``predict_answers_describe_first``, VCR's official layout):
    ``"Let" "[1] be" <soft 1> "[2] be" <soft 2>`` for the regions the turn mentions (in
    order of first mention), then the question text with its ``[i]`` left as text.
    ``"qformer_first"`` (the authors' ``predict_answers_qformer_first``): the soft tokens of
    the regions the turn mentions first (in order of first mention), then the question text
    with its ``[i]`` left as text: ``<soft 1> "What is [1]?"``. The authors decode it with
    beam 5, at most 10 new tokens and length penalty -1; these are this layout's defaults.

Region description (:meth:`Conversation.describe`)
    ``<soft i> </s>``: the 32 soft tokens with an empty prompt, exactly the trained
    region-captioning input. It does not read earlier turns; it enters the history as the
    turn ``"[i]"`` (so "What color is it?" afterwards is about region i).

Multi-turn context (``history=``)
    ``"official"`` (default) reproduces the authors' ``predict_answers_interactive_multiturn``
    (their only multi-turn code; it keeps state in ``contexts``/``context_temp``). Each turn
    ``t`` has its own input ``S_t = <turn layout> </s>`` (the authors tokenize every question
    with its ``</s>``, so earlier turns keep theirs). Answers are never part of the context.
    Walking the turns in order, with ``context`` and ``last`` initially empty:

    - a turn that mentions regions, while ``context`` is empty: input ``S_t``;
      ``context`` becomes the soft tokens of the regions it mentions (the authors keep only
      the region's soft tokens here, not the question);
    - a turn that mentions regions, ``context`` not empty: ``context`` becomes ``last``
      (the whole previous input); input ``context + S_t``;
    - a turn without regions: input ``context + S_t``;
    - ``last`` = this turn's input.

    So after ``"[1] what is this?"``, ``"what color?"`` is sent as
    ``<soft 1> "what color?" </s>``; a later ``"and [2]?"`` is sent as
    ``<soft 1> "what color?" </s> "and " <soft 2> "?" </s>``. The authors' turns carry one
    region each, prepended to the question; a turn here may mention several (their soft
    tokens, in order of first mention, form the first context).
    ``"qa"`` (this project's addition): every earlier turn in full, with its answer:
    ``S_1 a_1 </s> S_2 a_2 </s> ... S_t`` (``S_k`` ends with ``</s>``).
    ``"none"``: every turn alone (the authors' single-turn ``predict_answers_interactive``).

Decoding defaults are the authors' interactive settings: beam 5, up to 30 new tokens,
minimum length 1, length and repetition penalty 1 (``qformer_first``: 10 tokens, length
penalty -1). Keyword arguments of :meth:`Conversation.ask`/:meth:`Conversation.describe`
are :class:`~regionvlm.models.generation.GenerationSettings` fields (``num_beams``,
``max_len``, ``min_len``, ``length_penalty``, ...). Beam search and greedy decoding are
deterministic; ``use_nucleus_sampling=True`` samples with a seed derived from the
conversation seed and the turn number (or the ``seed`` you pass), so a replay repeats.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from regionvlm.common.errors import InputError
from regionvlm.data.images import to_rgb
from regionvlm.models.generation import GenerationSettings
from regionvlm.processors.region_layouts import (
    LAYOUT_GENERATION,
    LAYOUTS,
    first_mentions,
    layout_segments,
    parse_region_refs,
)
from regionvlm.processors.text_processors import check_text
from regionvlm.region import Region, check_num_points, check_seed, format_points

logger = logging.getLogger(__name__)

HISTORIES = ("official", "qa", "none")

Segment = Union[str, torch.Tensor]


@dataclass(frozen=True)
class RegionEntry:
    """One region as the model sees it: the points drawn once, their text and soft tokens."""

    region: Region
    points: np.ndarray  # (K, 2) normalized (x, y), as sent
    text: str  # Q-Former region text, after the text processor
    soft_tokens: torch.Tensor  # (num_query_token, d_model) projected Q-Former outputs
    points_kept: int  # points that survive the Q-Former's ``max_txt_len`` truncation


@dataclass(frozen=True)
class Turn:
    """One exchange. ``segments`` is the turn's own layout (no ``</s>``)."""

    kind: str  # "ask" or "describe"
    text: str  # what the user typed ("" for describe)
    segments: Tuple[Segment, ...]
    region_ids: Tuple[int, ...]  # regions mentioned, in order of first mention
    answer: str


class Conversation:
    """A dialogue about regions of one image; see the module docstring for the layouts."""

    def __init__(
        self,
        model,
        image: Image.Image,
        vis_processor: Optional[Callable] = None,
        text_processor: Optional[Callable[[str], str]] = None,
        num_points: Optional[int] = None,
        seed: int = 0,
        layout: str = "inline",
        history: str = "official",
        prompt: str = "{}",
    ) -> None:
        rgb = to_rgb(image, "the conversation's image")
        if layout not in LAYOUTS:
            raise InputError(f"layout must be one of {LAYOUTS}, got '{layout}'.")
        if history not in HISTORIES:
            raise InputError(f"history must be one of {HISTORIES}, got '{history}'.")
        if check_text(prompt, "prompt").count("{}") != 1:
            raise InputError(f"prompt must contain '{{}}' exactly once (where the question goes), got {prompt!r}.")
        num_points = check_num_points(model.num_points if num_points is None else num_points)
        check_seed(seed, "seed")
        if model.training:
            logger.info("switching the model to eval mode for the conversation (no dropout)")
            model.eval()
        if vis_processor is None:
            from regionvlm.processors import BlipImageEvalProcessor

            vis_processor = BlipImageEvalProcessor(image_size=model.image_size)
        if text_processor is None:
            from regionvlm.processors import BlipCaptionProcessor

            text_processor = BlipCaptionProcessor()
        self.model = model
        self.image = rgb.copy() if rgb is image else rgb
        self.text_processor = text_processor
        self.num_points = int(num_points)
        self.seed = int(seed)
        self.layout = layout
        self.history = history
        self.prompt = prompt
        self.regions: List[RegionEntry] = []
        self.turns: List[Turn] = []
        self.last_segments: List[Segment] = []
        with torch.inference_mode():
            self.image_embeds = model.encode_image(vis_processor(self.image).unsqueeze(0))

    # ------------------------------------------------------------------ regions
    @property
    def image_size(self) -> Tuple[int, int]:
        """(width, height) of the image in pixels."""
        return self.image.size

    def add_region(self, region: Region) -> int:
        """Add a region; returns its id ``i`` (1-based) for ``[i]`` in questions.

        Its points are drawn once (seeded by the conversation seed and ``i``)."""
        if not isinstance(region, Region):
            raise InputError(f"add_region expects a Region, got {type(region).__name__}.")
        if region.kind == "mask":
            width, height = self.image_size
            if region.data.shape != (height, width):
                raise InputError(
                    f"mask is {region.data.shape[1]}x{region.data.shape[0]} (WxH) but the image is "
                    f"{width}x{height}; the mask must have the image's size."
                )
        region_id = len(self.regions) + 1
        rng = np.random.default_rng([self.seed, region_id])
        points = region.sample_points(self.num_points, rng)
        text = self.text_processor(format_points(points))
        with torch.inference_mode():
            soft = self.model.region_queries(self.image_embeds, [text])[0]
        kept = _points_kept(self.model, points, self.text_processor)
        self.regions.append(RegionEntry(region, points, text, soft, kept))
        return region_id

    def region(self, region_id: int) -> RegionEntry:
        """The region ``[region_id]`` (points, text, soft tokens)."""
        if isinstance(region_id, bool) or not isinstance(region_id, (int, np.integer)):
            raise InputError(f"a region id is an integer (1 for [1]), got {region_id!r}.")
        self._check_ids([int(region_id)], "(region id)")
        return self.regions[region_id - 1]

    def region_text(self, region_id: int) -> str:
        """The exact Q-Former text of region ``region_id``, e.g. ``[12 34] [15 40] ...``."""
        return self.region(region_id).text

    def reset(self, keep_regions: bool = True) -> None:
        """Forget the turns (and the regions unless ``keep_regions``); the image stays encoded."""
        self.turns.clear()
        self.last_segments = []
        if not keep_regions:
            self.regions.clear()

    # ------------------------------------------------------------------- turns
    def _check_ids(self, ids: Sequence[int], where: str) -> None:
        bad = [i for i in ids if not 1 <= i <= len(self.regions)]
        if bad:
            have = (
                f"regions [1]..[{len(self.regions)}]"
                if len(self.regions) > 1
                else "region [1]"
                if self.regions
                else "no regions yet"
            )
            raise InputError(
                f"{', '.join(f'[{i}]' for i in bad)} {where} refers to no region: this conversation "
                f"has {have}. Add a region first (points, box, scribble or mask)."
            )

    def turn_segments(self, text: str) -> Tuple[List[Segment], Tuple[int, ...]]:
        """This turn's own layout (no context, no ``</s>``) and the regions it mentions."""
        check_text(text, "a question")
        full = self.prompt.replace("{}", text, 1)
        self._check_ids(first_mentions(parse_region_refs(full)), f"in {text!r}")
        if not full.strip():
            raise InputError("empty question; type a question, or use describe(i) to caption region i.")
        return layout_segments(self.layout, full, lambda i: self.regions[i - 1].soft_tokens)

    def context_segments(self, mentions_regions: bool) -> List[Segment]:
        """What goes before the next turn's own layout, by ``history`` (module docstring)."""
        eos = self.model.t5_tokenizer.eos_token
        if self.history == "none":
            return []
        if self.history == "qa":
            out: List[Segment] = []
            for t in self.turns:
                out += list(t.segments) + [eos, t.answer, eos]
            return out
        context: Optional[List[Segment]] = None
        last: List[Segment] = []
        for t in self.turns:
            own = list(t.segments) + [eos]
            if t.region_ids and context is None:
                last = own
                context = [self.regions[i - 1].soft_tokens for i in t.region_ids]
            elif t.region_ids:
                context = last
                last = context + own
            else:
                last = (context or []) + own
        if mentions_regions:
            return [] if context is None else list(last)
        return list(context or [])

    def prompt_segments(self, text: str) -> List[Segment]:
        """Everything :meth:`ask` would send for ``text`` (before the final ``</s>``)."""
        own, ids = self.turn_segments(text)
        return self.context_segments(bool(ids)) + own

    def ask(self, text: str, **generation: Any) -> str:
        """Answer ``text`` (``[i]`` = region i) given the earlier turns; ``generation``:
        :class:`GenerationSettings` fields and ``seed`` (see :meth:`generate`)."""
        own, ids = self.turn_segments(text)
        segments = self.context_segments(bool(ids)) + own
        answer = self.generate(segments, **generation)
        self.turns.append(Turn("ask", text, tuple(own), ids, answer))
        return answer

    def describe(self, region_id: int, **generation: Any) -> str:
        """Caption region ``region_id``: its soft tokens with an empty prompt (``<soft> </s>``)."""
        soft = self.region(region_id).soft_tokens
        answer = self.generate([soft], **generation)
        self.turns.append(Turn("describe", "", (soft,), (region_id,), answer))
        return answer

    def generation_settings(self, **overrides: Any) -> GenerationSettings:
        """This layout's decoding defaults with ``overrides`` on top (checked)."""
        return GenerationSettings.create("generation", **{**LAYOUT_GENERATION.get(self.layout, {}), **overrides})

    @torch.inference_mode()
    def generate(self, segments: Sequence[Segment], seed: Optional[int] = None, **generation: Any) -> str:
        """Decode from ``segments`` (+ ``</s>``) through ``model.embed_segments``; sampling is
        seeded by ``seed`` (default: from the conversation seed and the turn number)."""
        if seed is not None:
            check_seed(seed, "seed")
        settings = self.generation_settings(**generation)
        self._check_length(segments)
        self.last_segments = list(segments)
        embeds, mask = self.model.embed_segments([self.last_segments], add_eos=True)
        if not settings.use_nucleus_sampling:
            return self.model.generate_from_embeds(embeds, mask, settings)[0].strip()
        if seed is None:
            seed = int(np.random.SeedSequence([self.seed, len(self.turns)]).generate_state(1)[0])
        devices = [self.model.device] if self.model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(seed))
            return self.model.generate_from_embeds(embeds, mask, settings)[0].strip()

    def _check_length(self, segments: Sequence[Segment]) -> None:
        """Refuse a T5 input longer than the tokenizer's ``model_max_length`` (512 for
        Flan-T5): T5's attention grows with the square of the length, so a pasted book
        would exhaust memory instead of being answered."""
        tokenizer = self.model.t5_tokenizer
        limit = int(tokenizer.model_max_length)
        text = sum(
            len(tokenizer(seg, add_special_tokens=False, verbose=False).input_ids)
            for seg in segments
            if isinstance(seg, str)
        )
        soft = sum(int(seg.shape[0]) for seg in segments if not isinstance(seg, str))
        if text + soft + 1 > limit:
            raise InputError(
                f"this turn would give the model {text + soft + 1} tokens ({text} of text, {soft} soft tokens of "
                f"regions, </s>), more than the {limit} it reads (the T5 tokenizer's model_max_length). Ask a "
                "shorter question, or reset the conversation (its earlier turns are part of the input)."
            )

    # ----------------------------------------------------------------- display
    def describe_segments(self, segments: Sequence[Segment]) -> str:
        """Readable form of a layout: soft tokens as ``<soft [i]>`` (or ``<soft xN>``)."""
        names = {id(r.soft_tokens): f"<soft [{k}]>" for k, r in enumerate(self.regions, 1)}
        out = []
        for seg in segments:
            if isinstance(seg, str):
                out.append(repr(seg))
            else:
                out.append(names.get(id(seg), f"<soft x{seg.shape[0]}>"))
        return " ".join(out + [repr(self.model.t5_tokenizer.eos_token)])


def _points_kept(model, points: np.ndarray, text_processor: Callable[[str], str]) -> int:
    """How many leading points fit in the Q-Former's ``max_txt_len`` tokens ([CLS] + [SEP]
    included); the official 32 keeps 7 of 10 points, the tiny preset's 48 keeps all."""
    limit = int(model.max_txt_len)
    kept = 0
    for n in range(1, len(points) + 1):
        length = len(model.tokenizer(text_processor(format_points(points[:n]))).input_ids)
        if length > limit:
            break
        kept = n
    return kept
