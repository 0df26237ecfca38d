"""Initialization priors that let a *tiny* RegionVLM learn regions from random weights.

The paper's model starts from pretrained EVA/BERT/T5 weights and never uses these. A tiny
model trained from scratch on the synthetic world must discover, from captions alone, that
the numeral ``34`` in ``[12 34]`` names a row of image patches. Two priors make that fast
(measured in ``regionvlm/checkpoints/README.md``):

* a *factorized* ViT position table, ``pos[row, col] = R[row] + C[col]``: patches that share
  a row (or column) share a component, so one direction in key space can select a row;
* *smooth numerals*: the Q-Former embeddings of ``0 .. 100`` interpolate linearly between
  random anchors, so numerals close in value start close and what is learnt for ``34``
  transfers to ``35``.
"""

from __future__ import annotations

import math

import torch


def factorized_position_table(grid: int, dim: int, std: float, generator: torch.Generator) -> torch.Tensor:
    """(grid * grid, dim) table ``R[row] + C[col]``, rows-major like the patch order, std ``std``."""
    rows = torch.randn(grid, 1, dim, generator=generator) * (std / math.sqrt(2.0))
    cols = torch.randn(1, grid, dim, generator=generator) * (std / math.sqrt(2.0))
    return (rows + cols).reshape(grid * grid, dim)


def smooth_numeral_embeddings(
    count: int, dim: int, std: float, anchor_every: int, generator: torch.Generator
) -> torch.Tensor:
    """(count, dim) embeddings for the numerals ``0 .. count - 1``.

    Anchors every ``anchor_every`` values are N(0, std); values in between interpolate linearly
    and are rescaled so every row keeps the anchors' expected norm."""
    if anchor_every < 1:
        raise ValueError(f"anchor_every must be >= 1, got {anchor_every}.")
    anchors = torch.randn(count // anchor_every + 2, dim, generator=generator) * std
    rows = []
    for value in range(count):
        i, rem = divmod(value, anchor_every)
        f = rem / anchor_every
        mixed = anchors[i] * (1 - f) + anchors[i + 1] * f
        rows.append(mixed / math.sqrt((1 - f) ** 2 + f**2))
    return torch.stack(rows)
