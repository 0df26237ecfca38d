"""EVA-CLIP ViT-g/14, the frozen image encoder of BLIP-2 (docs/method.md).

Parameter names equal the official ``eva_vit_g.pth`` / LAVIS ``visual_encoder.*`` names
(``blocks.N.attn.qkv.weight`` with separate ``q_bias``/``v_bias``, ...), so official
state dicts load without renaming. No final norm: BLIP-2 applies ``ln_vision`` outside.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from regionvlm.common.errors import InputError
from regionvlm.common.settings import Settings, setting


@dataclass(frozen=True)
class VisionConfig(Settings):
    """The ``model.vit`` section (EVA ViT-g: patch 14, width 1408, 39 blocks, 16 heads)."""

    patch_size: int = setting(14, min=1)
    width: int = setting(1408, min=1)
    depth: int = setting(39, min=1)
    num_heads: int = setting(16, min=1)
    mlp_hidden: int = setting(6144, min=1)
    eps: float = setting(1e-6, min=0.0)

    def validate(self, section: str) -> None:
        from regionvlm.common.errors import ConfigError

        if self.width % self.num_heads:
            raise ConfigError(
                f"`{section}.width` ({self.width}) must be divisible by `{section}.num_heads` ({self.num_heads})."
            )


class PatchEmbed(nn.Module):
    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.img_size = img_size
        self.patch_size = patch_size
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise InputError(
                f"the vision encoder expects {self.img_size}x{self.img_size} images, got "
                f"{tuple(x.shape[-2:])}; use the model's image processor."
            )
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with EVA's qkv bias layout (q and v biased, k not)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.v_bias = None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias)
        q, k, v = qkv.reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class EvaViT(nn.Module):
    """Image (B, 3, S, S) -> token features (B, 1 + (S/patch)^2, width)."""

    def __init__(
        self,
        img_size: int = 364,
        patch_size: int = 14,
        width: int = 1408,
        depth: int = 39,
        num_heads: int = 16,
        mlp_hidden: int = 6144,
        eps: float = 1e-6,
        use_grad_checkpoint: bool = False,
    ):
        super().__init__()
        self.num_features = width
        self.patch_embed = PatchEmbed(img_size, patch_size, 3, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, width))
        self.blocks = nn.ModuleList(Block(width, num_heads, mlp_hidden, eps) for _ in range(depth))
        self.use_grad_checkpoint = use_grad_checkpoint

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(image)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        for block in self.blocks:
            if self.use_grad_checkpoint and self.training and x.requires_grad:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


def interpolate_pos_embed(pos_embed: torch.Tensor, num_patches: int) -> torch.Tensor:
    """Bicubically resize a (1, 1 + g*g, C) position table to ``num_patches`` patches
    (224 -> 364 px for ViT-g: 257 -> 677 tokens), keeping the class token's entry."""
    old_grid = int(math.sqrt(pos_embed.shape[1] - 1))
    new_grid = int(math.sqrt(num_patches))
    if old_grid == new_grid:
        return pos_embed
    cls_pos, grid = pos_embed[:, :1], pos_embed[:, 1:]
    dim = grid.shape[-1]
    grid = grid.reshape(1, old_grid, old_grid, dim).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, dim).to(pos_embed.dtype)
    return torch.cat([cls_pos, grid], dim=1)
