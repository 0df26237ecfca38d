"""Decoding settings: one name per idea, one mapping to Hugging Face ``generate``.

The names are the run-config names of LAVIS (``num_beams``, ``max_len``, ``min_len``) that
every task, the chat and the demo use; :meth:`GenerationSettings.hf_kwargs` is the only
place that translates them. ``max_len`` counts new tokens (LAVIS passes it as
``max_new_tokens``); ``min_len`` is Hugging Face's ``min_length`` as LAVIS passes it (for
T5 it counts the decoder start token, so ``min_len: 5`` means at least 4 generated tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

from regionvlm.common.settings import Settings, setting


@dataclass(frozen=True)
class GenerationSettings(Settings):
    num_beams: int = setting(5, min=1, help="beam width (1 = greedy)")
    max_len: int = setting(30, min=1, help="maximum number of new tokens")
    min_len: int = setting(1, min=0, help="Hugging Face min_length (decoder tokens incl. the start token)")
    length_penalty: float = setting(1.0, help="beam-search length penalty (LAVIS VQA uses -1)")
    repetition_penalty: float = setting(1.0, min=0.0, help="1.0 = none")
    use_nucleus_sampling: bool = setting(False, help="sample instead of beam search")
    top_p: float = setting(0.9, min=0.0, max=1.0, help="nucleus mass when sampling")
    temperature: float = setting(1.0, min=0.0, help="softmax temperature when sampling")
    num_captions: int = setting(1, min=1, help="sequences returned per input")

    def validate(self, section: str) -> None:
        from regionvlm.common.errors import ConfigError

        if self.min_len > self.max_len:
            raise ConfigError(f"`{section}.min_len` ({self.min_len}) exceeds `{section}.max_len` ({self.max_len}).")
        if self.use_nucleus_sampling and (self.top_p <= 0 or self.temperature <= 0):
            raise ConfigError(
                f"sampling needs `{section}.top_p` > 0 and `{section}.temperature` > 0, got "
                f"{self.top_p} and {self.temperature}."
            )
        if not self.use_nucleus_sampling and self.num_captions > self.num_beams:
            raise ConfigError(
                f"`{section}.num_captions` ({self.num_captions}) cannot exceed `{section}.num_beams` "
                f"({self.num_beams}) in beam search."
            )
        if self.repetition_penalty <= 0:
            raise ConfigError(f"`{section}.repetition_penalty` must be > 0, got {self.repetition_penalty}.")

    @classmethod
    def create(cls, section: str = "generation", **values: Any) -> "GenerationSettings":
        """Checked settings from keyword values (``GenerationSettings.create(num_beams=3)``)."""
        return cls.parse(values, section)

    def hf_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments of ``transformers`` ``generate`` (sampling knobs only when sampling)."""
        kwargs: Dict[str, Any] = dict(
            do_sample=self.use_nucleus_sampling,
            num_beams=self.num_beams,
            max_new_tokens=self.max_len,
            min_length=self.min_len,
            repetition_penalty=self.repetition_penalty,
            length_penalty=self.length_penalty,
            num_return_sequences=self.num_captions,
        )
        if self.use_nucleus_sampling:
            kwargs.update(top_p=self.top_p, temperature=self.temperature)
        return kwargs
