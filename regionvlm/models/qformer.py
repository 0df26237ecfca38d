"""The BLIP-2 Q-Former: a BERT encoder whose learned queries cross-attend to the image
(docs/method.md).

RegionVLM keeps the Q-Former's text path: the region prompt (``[12 34] [15 40] ...``)
is the text input. Queries and text share bidirectional self-attention in every layer;
only the query positions cross-attend to the image (every ``cross_attention_freq``-th
layer) and query/text positions have separate feed-forward weights
(``intermediate_query``/``output_query`` vs ``intermediate``/``output``).

Module and parameter names equal LAVIS's ``Qformer.bert.*`` so official checkpoints load
with no renaming. Attention is ``scaled_dot_product_attention``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from regionvlm.common.errors import InputError
from regionvlm.common.settings import Settings, setting


@dataclass(frozen=True)
class QFormerConfig(Settings):
    """The ``model.qformer`` section (BERT-base sizes; ``encoder_width`` comes from the ViT)."""

    vocab_size: int = setting(30523, min=1)
    hidden_size: int = setting(768, min=1)
    num_hidden_layers: int = setting(12, min=1)
    num_attention_heads: int = setting(12, min=1)
    intermediate_size: int = setting(3072, min=1)
    max_position_embeddings: int = setting(512, min=1)
    encoder_width: int = setting(1408, min=1)
    cross_attention_freq: int = setting(2, min=1)
    layer_norm_eps: float = setting(1e-12, min=0.0)
    hidden_dropout_prob: float = setting(0.1, min=0.0, max=1.0)
    attention_probs_dropout_prob: float = setting(0.1, min=0.0, max=1.0)

    def validate(self, section: str) -> None:
        from regionvlm.common.errors import ConfigError

        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"`{section}.hidden_size` ({self.hidden_size}) must be divisible by "
                f"`{section}.num_attention_heads` ({self.num_attention_heads})."
            )


class BertEmbeddings(nn.Module):
    """Text embeddings (word + absolute position); queries are prepended without positions."""

    def __init__(self, cfg: QFormerConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)
        self.register_buffer("position_ids", torch.arange(cfg.max_position_embeddings).expand((1, -1)))

    def forward(self, input_ids: Optional[torch.Tensor], query_embeds: torch.Tensor) -> torch.Tensor:
        if input_ids is not None and input_ids.shape[1] > 0:
            if input_ids.shape[1] > self.position_ids.shape[1]:
                raise InputError(
                    f"Q-Former text of {input_ids.shape[1]} tokens exceeds "
                    f"max_position_embeddings={self.position_ids.shape[1]}."
                )
            positions = self.position_ids[:, : input_ids.shape[1]]
            text = self.word_embeddings(input_ids) + self.position_embeddings(positions)
            embeddings = torch.cat([query_embeds.to(text.dtype), text], dim=1)
        else:
            embeddings = query_embeds
        return self.dropout(self.LayerNorm(embeddings))


class BertSelfAttention(nn.Module):
    def __init__(self, cfg: QFormerConfig, kv_width: int):
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(kv_width, cfg.hidden_size)
        self.value = nn.Linear(kv_width, cfg.hidden_size)
        self.dropout_p = cfg.attention_probs_dropout_prob

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, hidden: torch.Tensor, context: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        q = self._heads(self.query(hidden))
        k = self._heads(self.key(context))
        v = self._heads(self.value(context))
        if k.shape[0] != q.shape[0]:  # one image shared by many prompts: project it once
            k = k.expand(q.shape[0], -1, -1, -1)
            v = v.expand(q.shape[0], -1, -1, -1)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout_p if self.training else 0.0
        )
        b, h, n, d = out.shape
        return out.transpose(1, 2).reshape(b, n, h * d)


class BertSelfOutput(nn.Module):
    def __init__(self, cfg: QFormerConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class BertAttention(nn.Module):
    def __init__(self, cfg: QFormerConfig, kv_width: Optional[int] = None):
        super().__init__()
        self.self = BertSelfAttention(cfg, kv_width or cfg.hidden_size)
        self.output = BertSelfOutput(cfg)

    def forward(
        self, hidden: torch.Tensor, context: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        ctx = hidden if context is None else context
        return self.output(self.self(hidden, ctx, mask), hidden)


class BertIntermediate(nn.Module):
    def __init__(self, cfg: QFormerConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(hidden))


class BertOutput(nn.Module):
    def __init__(self, cfg: QFormerConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class BertLayer(nn.Module):
    def __init__(self, cfg: QFormerConfig, layer_idx: int):
        super().__init__()
        self.attention = BertAttention(cfg)
        self.has_cross_attention = layer_idx % cfg.cross_attention_freq == 0
        if self.has_cross_attention:
            self.crossattention = BertAttention(cfg, kv_width=cfg.encoder_width)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertOutput(cfg)
        self.intermediate_query = BertIntermediate(cfg)
        self.output_query = BertOutput(cfg)

    def forward(
        self, hidden: torch.Tensor, mask: Optional[torch.Tensor], image: torch.Tensor, num_queries: int
    ) -> torch.Tensor:
        hidden = self.attention(hidden, mask=mask)
        queries, text = hidden[:, :num_queries], hidden[:, num_queries:]
        if self.has_cross_attention:
            queries = self.crossattention(queries, context=image)
        queries = self.output_query(self.intermediate_query(queries), queries)
        if text.shape[1] == 0:
            return queries
        text = self.output(self.intermediate(text), text)
        return torch.cat([queries, text], dim=1)


class BertEncoder(nn.Module):
    def __init__(self, cfg: QFormerConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.gradient_checkpointing = False

    def forward(self, hidden, mask, image, num_queries):
        for layer in self.layer:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                hidden = checkpoint(layer, hidden, mask, image, num_queries, use_reentrant=False)
            else:
                hidden = layer(hidden, mask, image, num_queries)
        return hidden


class BertModel(nn.Module):
    def __init__(self, cfg: QFormerConfig):
        super().__init__()
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = BertEncoder(cfg)


class QFormer(nn.Module):
    """``Qformer`` in the official checkpoints; only ``bert`` remains (``cls`` is dropped)."""

    def __init__(self, cfg: QFormerConfig):
        super().__init__()
        self.config = cfg
        self.bert = BertModel(cfg)

    def forward(
        self,
        query_tokens: torch.Tensor,
        image_embeds: torch.Tensor,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Return the query outputs (B, num_queries, hidden).

        ``image_embeds`` may have batch 1 for a batch of prompts over the same image: its
        keys and values are then computed once and broadcast. ``attention_mask`` covers
        the text tokens only (1 = real token); queries always attend.
        """
        batch = max(query_tokens.shape[0], image_embeds.shape[0]) if input_ids is None else input_ids.shape[0]
        queries = query_tokens.expand(batch, -1, -1)
        num_queries = queries.shape[1]
        hidden = self.bert.embeddings(input_ids, queries)
        mask = None
        if (
            input_ids is not None
            and input_ids.shape[1] > 0
            and attention_mask is not None
            and not bool(attention_mask.all())
        ):
            keep = torch.cat(
                [torch.ones(batch, num_queries, dtype=torch.bool, device=hidden.device), attention_mask.bool()], dim=1
            )
            mask = keep[:, None, None, :]
        hidden = self.bert.encoder(hidden, mask, image_embeds, num_queries)
        return hidden[:, :num_queries]
