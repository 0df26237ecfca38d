"""The step API the tasks rely on, as a typing Protocol.

RIS, VCR, VQA, captioning and the dialogue call a model only through these methods, so any
model that provides them (``RegionVLMT5``, a wrapper, a test double) runs every task. Each
step is what the evaluation caches: RIS encodes an image once, runs the Q-Former and the
T5 encoder once per (mask, draw) and the decoder per sentence.
"""

from __future__ import annotations

from typing import Optional, Protocol, Sequence, Tuple, Union, runtime_checkable

import torch

from regionvlm.models.generation import GenerationSettings

Segment = Union[str, torch.Tensor]


@runtime_checkable
class RegionStepModel(Protocol):
    image_size: int
    num_points: int
    max_txt_len: int

    @property
    def device(self) -> torch.device: ...

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> image features (B, tokens, width)."""

    def region_queries(self, image_embeds: torch.Tensor, region_texts: Optional[Sequence[str]] = None) -> torch.Tensor:
        """Projected query outputs (B, queries, d_model); ``None``: queries alone (VQA)."""

    def t5_inputs(
        self, queries: torch.Tensor, prompts: Optional[Sequence[str]] = None, truncate: bool = True
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``[soft tokens ; T5 tokens of the prompt]`` and its mask."""

    def embed_segments(
        self, batch: Sequence[Sequence[Segment]], add_eos: bool = True
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """T5 encoder input from interleaved text and soft tokens (VCR, dialogue)."""

    def encode_t5(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The T5 encoder's output, reusable for many targets."""

    def target_nll(
        self, encoder_hidden: torch.Tensor, encoder_mask: torch.Tensor, targets: Sequence[str]
    ) -> torch.Tensor:
        """Mean token NLL of each target (B,)."""

    def generate_from_embeds(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, generation: Optional[GenerationSettings] = None
    ) -> list:
        """Decoded text of T5 encoder inputs."""
