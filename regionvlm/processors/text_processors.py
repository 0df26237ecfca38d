"""Text processors with the BLIP caption cleaning that every text (and region prompt) goes through."""
from __future__ import annotations

import re
from typing import Any, Mapping, Optional

from regionvlm.common.registry import registry


def pre_caption(caption: str, max_words: int = 50) -> str:
    """BLIP's caption cleaning: lower-case, drop ``.!"()*#:;~``, squeeze spaces, cut to
    ``max_words`` words. Brackets survive, so region text ``[12 34]`` passes unchanged."""
    caption = re.sub(r"([.!\"()*#:;~])", " ", caption.lower())
    caption = re.sub(r"\s{2,}", " ", caption)
    caption = caption.rstrip("\n").strip(" ")
    words = caption.split(" ")
    if len(words) > max_words:
        caption = " ".join(words[:max_words])
    return caption


def pre_question(question: str, max_words: int = 50) -> str:
    """BLIP's question cleaning: lower-case, drop ``,.!?"'`` ..., cut to ``max_words``."""
    question = re.sub(r"([.!\"()*#:;~])", "", question.lower())
    question = question.rstrip(" ")
    words = question.split(" ")
    if len(words) > max_words:
        question = " ".join(words[:max_words])
    return question


@registry.register_processor("blip_caption")
class BlipCaptionProcessor:
    """``prompt + pre_caption(text)``; used for captions, referring sentences and region text."""

    def __init__(self, prompt: str = "", max_words: int = 50):
        self.prompt = prompt
        self.max_words = int(max_words)

    def __call__(self, caption: str) -> str:
        return self.prompt + pre_caption(caption, self.max_words)

    @classmethod
    def from_config(cls, cfg: Optional[Mapping[str, Any]] = None):
        cfg = cfg or {}
        return cls(prompt=cfg.get("prompt", ""), max_words=cfg.get("max_words", 50))


@registry.register_processor("blip_question")
class BlipQuestionProcessor:
    """Question cleaning for VQA prompts."""

    def __init__(self, max_words: int = 50):
        self.max_words = int(max_words)

    def __call__(self, question: str) -> str:
        return pre_question(question, self.max_words)

    @classmethod
    def from_config(cls, cfg: Optional[Mapping[str, Any]] = None):
        cfg = cfg or {}
        return cls(max_words=cfg.get("max_words", 50))
