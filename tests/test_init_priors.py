"""The tiny preset's from-scratch priors: factorized ViT positions and smooth numerals."""

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from regionvlm.common.errors import ConfigError
from regionvlm.models import init_priors
from regionvlm.models.regionvlm_t5 import RegionVLMT5


def tiny_cfg(**init):
    cfg = OmegaConf.load(RegionVLMT5.default_config_path("tiny")).model
    return OmegaConf.merge(cfg, OmegaConf.create({"init": init}))


def test_factorized_table_is_row_plus_column_in_patch_order():
    table = init_priors.factorized_position_table(6, 512, 5.0, torch.Generator().manual_seed(0)).view(6, 6, 512)
    # moving one column changes every row by the same vector; moving one row, every column
    col_step = table[:, 3] - table[:, 2]
    row_step = table[4] - table[1]
    assert torch.allclose(col_step, col_step[0].expand_as(col_step), atol=1e-5)
    assert torch.allclose(row_step, row_step[0].expand_as(row_step), atol=1e-5)
    assert table.std().item() == pytest.approx(5.0, rel=0.1)


def test_smooth_numerals_are_close_in_value_close_in_space():
    rows = init_priors.smooth_numeral_embeddings(101, 256, 0.125, 10, torch.Generator().manual_seed(0))
    assert rows.shape == (101, 256)
    norms = rows.norm(dim=1)
    assert norms.std() / norms.mean() < 0.15  # interpolated rows keep the anchors' norm
    assert norms.mean().item() == pytest.approx(0.125 * math.sqrt(256), rel=0.1)
    near = F.cosine_similarity(rows[34], rows[35], dim=0)
    far = F.cosine_similarity(rows[34], rows[78], dim=0)
    assert near > 0.9 and abs(far) < 0.3
    with pytest.raises(ValueError, match="anchor_every"):
        init_priors.smooth_numeral_embeddings(2, 8, 1.0, 0, torch.Generator())


def test_tiny_preset_applies_both_priors_and_the_paper_scheme_does_not():
    tiny = RegionVLMT5.from_config(tiny_cfg())
    grid = math.isqrt(tiny.visual_encoder.patch_embed.num_patches)
    table = tiny.visual_encoder.pos_embed[0, 1:].view(grid, grid, -1).detach()
    col_step = table[:, 5] - table[:, 4]
    assert torch.allclose(col_step, col_step[0].expand_as(col_step), atol=1e-4)
    words = tiny.Qformer.bert.embeddings.word_embeddings.weight.detach()
    num = tiny.tokenizer.convert_tokens_to_ids([str(n) for n in range(101)])
    assert F.cosine_similarity(words[num[41]], words[num[42]], dim=0) > 0.9

    plain = RegionVLMT5.from_config(tiny_cfg(vit_pos_embed_layout="random", numeral_anchor_every=None))
    words = plain.Qformer.bert.embeddings.word_embeddings.weight.detach()
    assert abs(F.cosine_similarity(words[num[41]], words[num[42]], dim=0)) < 0.5
    table = plain.visual_encoder.pos_embed[0, 1:].view(grid, grid, -1).detach()
    col_step = table[:, 5] - table[:, 4]
    assert not torch.allclose(col_step, col_step[0].expand_as(col_step), atol=1e-2)


def test_bad_prior_settings_are_config_errors():
    with pytest.raises(ConfigError, match="vit_pos_embed_layout"):
        RegionVLMT5.from_config(tiny_cfg(vit_pos_embed_layout="sincos"))
    with pytest.raises(ConfigError, match="numeral_anchor_every"):
        RegionVLMT5.from_config(tiny_cfg(numeral_anchor_every=0))
