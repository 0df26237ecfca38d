r"""Text processors with the BLIP caption cleaning that every text (and region prompt) goes through.

Text is checked once here: it must be a string of valid Unicode. A lone surrogate (what a
``\udXXX`` JSON escape or a non-UTF-8 byte read with ``surrogateescape`` leaves behind) can
be neither encoded nor tokenized, and is refused with its position. Control characters and
any other Unicode are accepted and left to the tokenizers' own rules, as in LAVIS (the
Q-Former's BERT tokenizer drops control characters, T5 reads them as ``<unk>``); very long
text is cut to ``max_words`` words here and to the model's token limits by the tokenizers.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional

from regionvlm.common.errors import ConfigError, InputError
from regionvlm.common.registry import registry

_SURROGATE = re.compile("[\ud800-\udfff]")


def check_text(text: Any, what: str = "text") -> str:
    """``text`` if it is a string of valid Unicode, else InputError naming ``what``."""
    if not isinstance(text, str):
        raise InputError(f"{what} must be a string, got {type(text).__name__}: {text!r:.80}.")
    bad = _SURROGATE.search(text)
    if bad:
        raise InputError(
            f"{what} is not valid Unicode: character {bad.start()} is the lone surrogate "
            f"{bad.group()!r} (a broken \\u escape or bytes that are not UTF-8) in {text[:60]!r}."
        )
    return text


def _max_words(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"text processor max_words must be a positive whole number, got {value!r}.")
    return value


def pre_caption(caption: str, max_words: int = 50) -> str:
    """BLIP's caption cleaning: lower-case, drop ``.!"()*#:;~``, squeeze spaces, cut to
    ``max_words`` words. Brackets survive, so region text ``[12 34]`` passes unchanged."""
    caption = check_text(caption, "caption")
    caption = re.sub(r"([.!\"()*#:;~])", " ", caption.lower())
    caption = re.sub(r"\s{2,}", " ", caption)
    caption = caption.rstrip("\n").strip(" ")
    words = caption.split(" ")
    if len(words) > max_words:
        caption = " ".join(words[:max_words])
    return caption


def pre_question(question: str, max_words: int = 50) -> str:
    """BLIP's question cleaning: lower-case, drop ``,.!?"'`` ..., cut to ``max_words``."""
    question = check_text(question, "question")
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
        self.prompt = check_text(prompt, "text processor prompt")
        self.max_words = _max_words(max_words)

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
        self.max_words = _max_words(max_words)

    def __call__(self, question: str) -> str:
        return pre_question(question, self.max_words)

    @classmethod
    def from_config(cls, cfg: Optional[Mapping[str, Any]] = None):
        cfg = cfg or {}
        return cls(max_words=cfg.get("max_words", 50))
