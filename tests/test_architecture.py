"""The full `flant5xl` architecture has exactly the official parameter names and shapes.

The expected list is written out from the official model description (docs/method.md), not derived from our modules."""

import math
import re

import pytest
import torch
from omegaconf import OmegaConf

from regionvlm.models.regionvlm_t5 import RegionVLMT5

pytestmark = pytest.mark.slow  # builds the full 4 B architecture on the meta device


def spec_state_dict_shapes():
    """Every state-dict entry of the official LAVIS-format RegionVLM FlanT5-XL model."""
    w, mlp, depth, patch, tokens = 1408, 6144, 39, 14, 677  # EVA ViT-g at 364 px: 26 x 26 + 1
    h, inter, layers, vocab_q = 768, 3072, 12, 30523
    d, ff, t5_layers, t5_vocab, heads, dkv = 2048, 5120, 24, 32128, 32, 64
    s = {
        "visual_encoder.cls_token": (1, 1, w),
        "visual_encoder.pos_embed": (1, tokens, w),
        "visual_encoder.patch_embed.proj.weight": (w, 3, patch, patch),
        "visual_encoder.patch_embed.proj.bias": (w,),
    }
    for n in range(depth):
        b = f"visual_encoder.blocks.{n}."
        s.update(
            {
                b + "norm1.weight": (w,),
                b + "norm1.bias": (w,),
                b + "norm2.weight": (w,),
                b + "norm2.bias": (w,),
                b + "attn.qkv.weight": (3 * w, w),
                b + "attn.q_bias": (w,),
                b + "attn.v_bias": (w,),
                b + "attn.proj.weight": (w, w),
                b + "attn.proj.bias": (w,),
                b + "mlp.fc1.weight": (mlp, w),
                b + "mlp.fc1.bias": (mlp,),
                b + "mlp.fc2.weight": (w, mlp),
                b + "mlp.fc2.bias": (w,),
            }
        )
    s.update({"ln_vision.weight": (w,), "ln_vision.bias": (w,), "query_tokens": (1, 32, h)})
    e = "Qformer.bert.embeddings."
    s.update(
        {
            e + "word_embeddings.weight": (vocab_q, h),
            e + "position_embeddings.weight": (512, h),
            e + "LayerNorm.weight": (h,),
            e + "LayerNorm.bias": (h,),
            e + "position_ids": (1, 512),
        }
    )

    def attention(prefix, kv_width):
        out = {}
        for name, width in (("query", h), ("key", kv_width), ("value", kv_width)):
            out[f"{prefix}.self.{name}.weight"] = (h, width)
            out[f"{prefix}.self.{name}.bias"] = (h,)
        out.update(
            {
                f"{prefix}.output.dense.weight": (h, h),
                f"{prefix}.output.dense.bias": (h,),
                f"{prefix}.output.LayerNorm.weight": (h,),
                f"{prefix}.output.LayerNorm.bias": (h,),
            }
        )
        return out

    for n in range(layers):
        b = f"Qformer.bert.encoder.layer.{n}."
        s.update(attention(b + "attention", h))
        if n % 2 == 0:
            s.update(attention(b + "crossattention", w))
        for suffix in ("", "_query"):
            s.update(
                {
                    b + f"intermediate{suffix}.dense.weight": (inter, h),
                    b + f"intermediate{suffix}.dense.bias": (inter,),
                    b + f"output{suffix}.dense.weight": (h, inter),
                    b + f"output{suffix}.dense.bias": (h,),
                    b + f"output{suffix}.LayerNorm.weight": (h,),
                    b + f"output{suffix}.LayerNorm.bias": (h,),
                }
            )
    s.update({"t5_proj.weight": (d, h), "t5_proj.bias": (d,)})
    t = "t5_model."
    s.update(
        {
            t + "shared.weight": (t5_vocab, d),
            t + "encoder.embed_tokens.weight": (t5_vocab, d),
            t + "decoder.embed_tokens.weight": (t5_vocab, d),
            t + "lm_head.weight": (t5_vocab, d),
            t + "encoder.final_layer_norm.weight": (d,),
            t + "decoder.final_layer_norm.weight": (d,),
        }
    )
    inner = heads * dkv
    for stack in ("encoder", "decoder"):
        for n in range(t5_layers):
            b = f"{t}{stack}.block.{n}.layer."
            attn_layers = [("0", "SelfAttention")] + ([("1", "EncDecAttention")] if stack == "decoder" else [])
            for idx, name in attn_layers:
                for proj in "qkv":
                    s[f"{b}{idx}.{name}.{proj}.weight"] = (inner, d)
                s[f"{b}{idx}.{name}.o.weight"] = (d, inner)
                s[f"{b}{idx}.layer_norm.weight"] = (d,)
            if n == 0:
                s[f"{b}0.SelfAttention.relative_attention_bias.weight"] = (32, heads)
            ff_idx = "2" if stack == "decoder" else "1"
            s.update(
                {
                    f"{b}{ff_idx}.DenseReluDense.wi_0.weight": (ff, d),
                    f"{b}{ff_idx}.DenseReluDense.wi_1.weight": (ff, d),
                    f"{b}{ff_idx}.DenseReluDense.wo.weight": (d, ff),
                    f"{b}{ff_idx}.layer_norm.weight": (d,),
                }
            )
    return s


@pytest.fixture(scope="module")
def meta_flant5xl():
    cfg = OmegaConf.load(RegionVLMT5.default_config_path("flant5xl")).model
    cfg.load_pretrained = False
    with torch.device("meta"):
        return RegionVLMT5.from_config(cfg)


@pytest.mark.slow
def test_flant5xl_state_dict_matches_the_official_names_and_shapes(meta_flant5xl):
    got = {k: tuple(v.shape) for k, v in meta_flant5xl.state_dict().items()}
    want = spec_state_dict_shapes()
    assert sorted(set(want) - set(got)) == []
    assert sorted(set(got) - set(want)) == []
    wrong = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    assert wrong == {}


def test_flant5xl_size_and_trainable_parts(meta_flant5xl):
    total = sum(p.numel() for p in meta_flant5xl.parameters())
    unique = {
        k: v for k, v in spec_state_dict_shapes().items() if not k.endswith(("embed_tokens.weight", "position_ids"))
    }
    assert total == sum(math.prod(shape) for shape in unique.values())
    # 4.02 B with Flan-T5's own lm_head; a "3.96 B" figure is this minus one
    # 32128 x 2048 table, i.e. a T5 whose lm_head was (wrongly) tied to the input embeddings.
    assert round(total / 1e9, 2) == 4.02
    trainable = {n.split(".")[0] for n, p in meta_flant5xl.named_parameters() if p.requires_grad}
    assert trainable == {"ln_vision", "Qformer", "query_tokens", "t5_proj"}
    assert meta_flant5xl.t5_model.config.dense_act_fn == "gelu"
    t5 = meta_flant5xl.t5_model
    assert t5.lm_head.weight is not t5.shared.weight  # Flan-T5: untied output layer, no d_model**-0.5 rescale
    assert t5.encoder.embed_tokens.weight is t5.shared.weight is t5.decoder.embed_tokens.weight
    assert re.fullmatch(r"blocks\.38\..*", list(dict(meta_flant5xl.visual_encoder.named_parameters()))[-1])
