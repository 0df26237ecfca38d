"""Where a turn's region soft tokens go in the T5 input: the layouts of the region dialogue.

A question names regions with ``[i]`` markers (1-based). A layout turns the question text and
the regions' soft tokens into the segment list that ``model.embed_segments`` embeds (text
pieces and ``(n, d_model)`` tensors; it adds the closing ``</s>``):

- ``inline`` (the authors' ``predict_answers_interactive``): every ``[i]`` is replaced by
  region i's soft tokens where it stands: ``"Is " <soft 1> " bigger than " <soft 2> "?"``;
- ``let`` (the authors' ``predict_answers_describe_first``, VCR's layout):
  ``"Let" "[1] be" <soft 1> "[2] be" <soft 2>`` for the regions the text mentions (in order
  of first mention), then the text with its ``[i]`` left as text;
- ``qformer_first`` (the authors' ``predict_answers_qformer_first``): the soft tokens of the
  mentioned regions first, then the text with its ``[i]`` left as text.

The interactive dialogue (:mod:`regionvlm.dialogue`) and the region classification task both
lay out their questions here, so a question asked in the chat and the same question asked by
the benchmark reach T5 as the same input.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Sequence, Tuple, Union

LAYOUTS = ("inline", "let", "qformer_first")
# Decoding defaults that differ from GenerationSettings' (the authors' values per layout).
LAYOUT_GENERATION: Dict[str, Dict[str, Any]] = {"qformer_first": {"max_len": 10, "length_penalty": -1.0}}
REGION_MARK = re.compile(r"\[(\d+)\]")
LET_WORD = "Let"

Segment = Any  # a text piece (str) or a (n, d_model) tensor of soft tokens


def parse_region_refs(text: str) -> List[Union[str, int]]:
    """Split ``text`` at ``[i]`` markers: ``"is [1] red"`` -> ``["is ", 1, " red"]``.

    Only a bracketed integer is a marker, so region text like ``[12 34]`` stays text.
    Empty text pieces are dropped."""
    out: List[Union[str, int]] = []
    pos = 0
    for match in REGION_MARK.finditer(text):
        if match.start() > pos:
            out.append(text[pos : match.start()])
        out.append(int(match.group(1)))
        pos = match.end()
    if pos < len(text):
        out.append(text[pos:])
    return out


def first_mentions(parts: Sequence[Union[str, int]]) -> Tuple[int, ...]:
    """The region ids of :func:`parse_region_refs` parts, each once, in order of first mention."""
    seen: Dict[int, None] = {}
    for p in parts:
        if isinstance(p, int):
            seen.setdefault(p, None)
    return tuple(seen)


def layout_segments(
    layout: str, text: str, soft_tokens: Callable[[int], Segment]
) -> Tuple[List[Segment], Tuple[int, ...]]:
    """The segments of ``text`` under ``layout`` (no ``</s>``) and the region ids it mentions;
    ``soft_tokens(i)`` gives region i's soft tokens (the caller checks the ids exist)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}.")
    parts = parse_region_refs(text)
    ids = first_mentions(parts)
    if layout == "inline":
        return [soft_tokens(p) if isinstance(p, int) else p for p in parts], ids
    if layout == "qformer_first":
        return [soft_tokens(i) for i in ids] + [text], ids
    segments: List[Segment] = [LET_WORD] if ids else []
    for i in ids:
        segments += [f"[{i}] be", soft_tokens(i)]
    segments.append(text)
    return segments, ids
