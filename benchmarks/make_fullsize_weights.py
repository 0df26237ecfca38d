"""Write stand-ins for the released weight files: the real file names, containers, dtypes,
tensor names and shapes, filled with seeded random numbers.

    python benchmarks/make_fullsize_weights.py --out /tmp/regionvlm_fullsize          # ~17 GB, real sizes
    python benchmarks/make_fullsize_weights.py --out /tmp/w --smoke                   # same layout, tiny preset sizes
    python benchmarks/make_fullsize_weights.py --out /tmp/w --smoke --t5-layout bin   # the older .bin T5 layout

Written (``DIR`` then points ``REGIONVLM_WEIGHTS`` or ``model.weights.*`` at the files):

- ``eva_vit_g.pth``: EVA ViT-g as a plain state dict (zip ``torch.save``), fp16, 40 blocks,
  position table for 224 px (257 tokens), ``attn.q_bias``/``attn.v_bias``.
- ``flan-t5-xl/``: the published ``config.json``; two fp32 safetensors shards split where the
  published ones are (Hugging Face's 10 GB rule over the original state dict, tied embedding
  copies counted), ``model.safetensors.index.json`` listing every name of the original state
  dict (the tied ``encoder/decoder.embed_tokens`` copies included, but not stored in a shard).
  ``--t5-layout bin``: ``pytorch_model-0000x-of-00002.bin`` + ``pytorch_model.bin.index.json``
  instead (the copies stored, sharing ``shared.weight``'s storage).
- ``bert-base-uncased/``: the published ``config.json`` and ``pytorch_model.bin`` in the pre-1.6
  PyTorch format with the old ``LayerNorm.gamma/beta`` names and the ``cls.*`` heads.
- ``blip2_pretrained_flant5xl.pth`` and ``ckpoint_RegionVLM.pth``: what LAVIS's runner saves,
  ``{"model", "optimizer", "config", "scaler", "epoch"}`` with only the trainable tensors (plus
  buffers) of the BLIP-2 stage-2 model (no Q-Former text path, no ``cls`` head) and of RegionVLM
  (text path kept).

Random numbers come from NumPy's PCG64 in chunks; large files are streamed to disk, so
writing is bound by the disk, not by memory (the largest in-memory file is the 2 GB ViT).
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

from regionvlm.common.io import atomic_path, atomic_write_json

Spec = Tuple[str, Tuple[int, ...], torch.dtype]
CHUNK = 1 << 22  # random numbers are drawn this many at a time
HF_SHARD_BYTES = 10 * 10**9  # transformers' default max_shard_size ("10GB") when Flan-T5 was uploaded


@dataclass(frozen=True)
class Dims:
    """Sizes of the released files (``REAL``) or of a small stand-in (``smoke``)."""

    vit_width: int = 1408
    vit_blocks: int = 40  # the file has 40; the model keeps 39
    vit_mlp: int = 6144
    vit_patch: int = 14
    vit_file_image: int = 224
    q_hidden: int = 768
    q_layers: int = 12
    q_heads: int = 12
    q_intermediate: int = 3072
    q_max_pos: int = 512
    bert_vocab: int = 30522
    q_cross_freq: int = 2
    num_query: int = 32
    t5_vocab: int = 32128
    t5_d_model: int = 2048
    t5_d_kv: int = 64
    t5_heads: int = 32
    t5_d_ff: int = 5120
    t5_layers: int = 24
    t5_decoder_layers: int = 24
    t5_buckets: int = 32
    shard_bytes: int = HF_SHARD_BYTES


REAL = Dims()


def smoke_dims() -> Dims:
    """The ``tiny`` preset's sizes, with the real files' proportions: one ViT block more than the
    model, a position table for a smaller image (as 224 vs 364 px), the T5 split into 2 shards."""
    from omegaconf import OmegaConf

    from regionvlm.models.regionvlm_t5 import RegionVLMT5

    cfg = OmegaConf.load(RegionVLMT5.default_config_path("tiny")).model
    grid = cfg.image_size // cfg.vit.patch_size
    dims = Dims(
        vit_width=cfg.vit.width,
        vit_blocks=cfg.vit.depth + 1,
        vit_mlp=cfg.vit.mlp_hidden,
        vit_patch=cfg.vit.patch_size,
        vit_file_image=cfg.vit.patch_size * max(2, round(grid * 224 / 364)),
        q_hidden=cfg.qformer.hidden_size,
        q_layers=cfg.qformer.num_hidden_layers,
        q_heads=cfg.qformer.num_attention_heads,
        q_intermediate=cfg.qformer.intermediate_size,
        q_max_pos=cfg.qformer.max_position_embeddings,
        q_cross_freq=cfg.qformer.cross_attention_freq,
        num_query=cfg.num_query_token,
        t5_vocab=cfg.t5.vocab_size,
        t5_d_model=cfg.t5.d_model,
        t5_d_kv=cfg.t5.d_kv,
        t5_heads=cfg.t5.num_heads,
        t5_d_ff=cfg.t5.d_ff,
        t5_layers=cfg.t5.num_layers,
        t5_decoder_layers=cfg.t5.num_decoder_layers,
    )
    # split where the real files split, relative to the key list (inside the last decoder blocks)
    real, small = t5_spec(REAL), t5_spec(dims)
    cut = round(len(t5_shards(REAL)[0]) / len(real) * len(small))
    return replace(dims, shard_bytes=sum(_nbytes(s) for s in small[:cut]))


def _nbytes(spec: Spec) -> int:
    return math.prod(spec[1]) * torch.empty((), dtype=spec[2]).element_size()


# --- what each released file holds, in its own names and order ------------------------


def eva_spec(d: Dims) -> List[Spec]:
    """``eva_vit_g.pth`` as LAVIS's ``create_eva_vit_g`` reads it."""
    w, h, f16 = d.vit_width, torch.float16, d.vit_mlp
    grid = d.vit_file_image // d.vit_patch
    out: List[Spec] = [
        ("cls_token", (1, 1, w), h),
        ("pos_embed", (1, grid * grid + 1, w), h),
        ("patch_embed.proj.weight", (w, 3, d.vit_patch, d.vit_patch), h),
        ("patch_embed.proj.bias", (w,), h),
    ]
    for i in range(d.vit_blocks):
        b = f"blocks.{i}"
        out += [
            (f"{b}.norm1.weight", (w,), h),
            (f"{b}.norm1.bias", (w,), h),
            (f"{b}.attn.q_bias", (w,), h),
            (f"{b}.attn.v_bias", (w,), h),
            (f"{b}.attn.qkv.weight", (3 * w, w), h),
            (f"{b}.attn.proj.weight", (w, w), h),
            (f"{b}.attn.proj.bias", (w,), h),
            (f"{b}.norm2.weight", (w,), h),
            (f"{b}.norm2.bias", (w,), h),
            (f"{b}.mlp.fc1.weight", (f16, w), h),
            (f"{b}.mlp.fc1.bias", (f16,), h),
            (f"{b}.mlp.fc2.weight", (w, f16), h),
            (f"{b}.mlp.fc2.bias", (w,), h),
        ]
    return out


def t5_spec(d: Dims) -> List[Spec]:
    """The original ``T5ForConditionalGeneration`` state dict (tied embedding copies included)."""
    m, inner, ff, f = d.t5_d_model, d.t5_heads * d.t5_d_kv, d.t5_d_ff, torch.float32

    def attention(prefix: str, relative: bool) -> List[Spec]:
        out = [
            (f"{prefix}.q.weight", (inner, m), f),
            (f"{prefix}.k.weight", (inner, m), f),
            (f"{prefix}.v.weight", (inner, m), f),
            (f"{prefix}.o.weight", (m, inner), f),
        ]
        return out + ([(f"{prefix}.relative_attention_bias.weight", (d.t5_buckets, d.t5_heads), f)] if relative else [])

    def ffn(prefix: str) -> List[Spec]:
        return [
            (f"{prefix}.DenseReluDense.wi_0.weight", (ff, m), f),
            (f"{prefix}.DenseReluDense.wi_1.weight", (ff, m), f),
            (f"{prefix}.DenseReluDense.wo.weight", (m, ff), f),
            (f"{prefix}.layer_norm.weight", (m,), f),
        ]

    out: List[Spec] = [("shared.weight", (d.t5_vocab, m), f), ("encoder.embed_tokens.weight", (d.t5_vocab, m), f)]
    for i in range(d.t5_layers):
        b = f"encoder.block.{i}.layer"
        out += attention(f"{b}.0.SelfAttention", i == 0) + [(f"{b}.0.layer_norm.weight", (m,), f)] + ffn(f"{b}.1")
    out += [("encoder.final_layer_norm.weight", (m,), f), ("decoder.embed_tokens.weight", (d.t5_vocab, m), f)]
    for i in range(d.t5_decoder_layers):
        b = f"decoder.block.{i}.layer"
        out += attention(f"{b}.0.SelfAttention", i == 0) + [(f"{b}.0.layer_norm.weight", (m,), f)]
        out += attention(f"{b}.1.EncDecAttention", False) + [(f"{b}.1.layer_norm.weight", (m,), f)] + ffn(f"{b}.2")
    return out + [("decoder.final_layer_norm.weight", (m,), f), ("lm_head.weight", (d.t5_vocab, m), f)]


T5_TIED = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


def t5_shards(d: Dims) -> List[List[Spec]]:
    """Hugging Face's split: walk the state dict in order, open a new shard when the next
    tensor would push the current one past ``shard_bytes`` (tied copies counted)."""
    shards: List[List[Spec]] = [[]]
    size = 0
    for spec in t5_spec(d):
        if shards[-1] and size + _nbytes(spec) > d.shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += _nbytes(spec)
    return shards


def bert_spec(d: Dims) -> List[Spec]:
    """``bert-base-uncased/pytorch_model.bin``: ``BertForPreTraining`` with the old names."""
    h, i, f = d.q_hidden, d.q_intermediate, torch.float32

    def ln(prefix: str) -> List[Spec]:
        return [(f"{prefix}.LayerNorm.gamma", (h,), f), (f"{prefix}.LayerNorm.beta", (h,), f)]

    def linear(prefix: str, out_f: int, in_f: int) -> List[Spec]:
        return [(f"{prefix}.weight", (out_f, in_f), f), (f"{prefix}.bias", (out_f,), f)]

    out: List[Spec] = [
        ("bert.embeddings.word_embeddings.weight", (d.bert_vocab, h), f),
        ("bert.embeddings.position_embeddings.weight", (d.q_max_pos, h), f),
        ("bert.embeddings.token_type_embeddings.weight", (2, h), f),
    ] + ln("bert.embeddings")
    for n in range(d.q_layers):
        b = f"bert.encoder.layer.{n}"
        for x in ("query", "key", "value"):
            out += linear(f"{b}.attention.self.{x}", h, h)
        out += linear(f"{b}.attention.output.dense", h, h) + ln(f"{b}.attention.output")
        out += linear(f"{b}.intermediate.dense", i, h) + linear(f"{b}.output.dense", h, i) + ln(f"{b}.output")
    out += linear("bert.pooler.dense", h, h)
    out += [("cls.predictions.bias", (d.bert_vocab,), f)] + linear("cls.predictions.transform.dense", h, h)
    out += ln("cls.predictions.transform") + [("cls.predictions.decoder.weight", (d.bert_vocab, h), f)]
    return out + linear("cls.seq_relationship", 2, h)


def lavis_spec(d: Dims, text_path: bool) -> List[Spec]:
    """The ``model`` entry LAVIS's runner saves for a BLIP-2 T5 model: parameters that train
    (ViT and T5 are frozen, so absent) plus buffers. BLIP-2 stage 2 deletes the Q-Former's text
    path and ``cls``; RegionVLM keeps the text path (the word table has the ``[DEC]`` row)."""
    h, i, w, f = d.q_hidden, d.q_intermediate, d.vit_width, torch.float32

    def linear(prefix: str, out_f: int, in_f: int) -> List[Spec]:
        return [(f"{prefix}.weight", (out_f, in_f), f), (f"{prefix}.bias", (out_f,), f)]

    def ln(prefix: str) -> List[Spec]:
        return [(f"{prefix}.LayerNorm.weight", (h,), f), (f"{prefix}.LayerNorm.bias", (h,), f)]

    def attention(prefix: str, kv_width: int) -> List[Spec]:
        return (
            linear(f"{prefix}.self.query", h, h)
            + linear(f"{prefix}.self.key", h, kv_width)
            + linear(f"{prefix}.self.value", h, kv_width)
            + linear(f"{prefix}.output.dense", h, h)
            + ln(f"{prefix}.output")
        )

    out: List[Spec] = [
        ("query_tokens", (1, d.num_query, h), f),
        ("ln_vision.weight", (w,), f),
        ("ln_vision.bias", (w,), f),
    ]
    e = "Qformer.bert.embeddings"
    if text_path:
        out += [
            (f"{e}.word_embeddings.weight", (d.bert_vocab + 1, h), f),
            (f"{e}.position_embeddings.weight", (d.q_max_pos, h), f),
        ]
    out += ln(e) + [(f"{e}.position_ids", (1, d.q_max_pos), torch.int64)]
    for n in range(d.q_layers):
        b = f"Qformer.bert.encoder.layer.{n}"
        out += attention(f"{b}.attention", h)
        if n % d.q_cross_freq == 0:
            out += attention(f"{b}.crossattention", w)
        if text_path:
            out += linear(f"{b}.intermediate.dense", i, h) + linear(f"{b}.output.dense", h, i) + ln(f"{b}.output")
        out += linear(f"{b}.intermediate_query.dense", i, h) + linear(f"{b}.output_query.dense", h, i)
        out += ln(f"{b}.output_query")
    return out + linear("t5_proj", d.t5_d_model, h)


# --- values ---------------------------------------------------------------------------


def _chunks(rng: np.random.Generator, name: str, numel: int, dtype: torch.dtype) -> Iterator[np.ndarray]:
    """Random values for one tensor, ``CHUNK`` at a time, as raw bytes of ``dtype``: weights
    uniform in +-0.02, norm scales around 1, integer buffers ``arange``."""
    if not dtype.is_floating_point:
        yield torch.arange(numel, dtype=dtype).numpy().view(np.uint8)
        return
    is_scale = name.endswith(
        ("LayerNorm.weight", "LayerNorm.gamma", "layer_norm.weight", "norm1.weight", "norm2.weight", "ln_vision.weight")
    )
    for start in range(0, numel, CHUNK):
        block = rng.random(min(CHUNK, numel - start), dtype=np.float32)
        block -= 0.5
        block *= 0.04
        if is_scale:
            block += 1.0
        yield torch.from_numpy(block).to(dtype).view(torch.uint8).numpy()


def _tensor(rng: np.random.Generator, spec: Spec) -> torch.Tensor:
    name, shape, dtype = spec
    out = torch.empty(shape, dtype=dtype)
    flat = out.reshape(-1).view(torch.uint8).numpy()
    pos = 0
    for chunk in _chunks(rng, name, math.prod(shape), dtype):
        flat[pos : pos + chunk.size] = chunk
        pos += chunk.size
    return out


def _state(rng: np.random.Generator, specs: List[Spec]) -> Dict[str, torch.Tensor]:
    return {spec[0]: _tensor(rng, spec) for spec in specs}


# --- containers -------------------------------------------------------------------------

_ST_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64"}


def safetensors_header(specs: List[Spec], metadata: Optional[Dict[str, str]] = None) -> Tuple[bytes, int]:
    """The bytes before the data of a safetensors file holding ``specs`` in name order (a
    little-endian u64 length, then a JSON header padded with spaces to 8 bytes), and the
    size of the data that follows."""
    header: Dict[str, object] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name, shape, dtype in sorted(specs, key=lambda s: s[0]):
        n = _nbytes((name, shape, dtype))
        header[name] = {"dtype": _ST_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw, offset


def write_safetensors(
    path: Path, specs: List[Spec], rng: np.random.Generator, metadata: Optional[Dict[str, str]] = None
) -> None:
    """A safetensors file streamed tensor by tensor, never more than a chunk in memory."""
    specs = sorted(specs, key=lambda s: s[0])
    head, _ = safetensors_header(specs, metadata)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(head)
        for name, shape, dtype in specs:
            for chunk in _chunks(rng, name, math.prod(shape), dtype):
                f.write(memoryview(chunk))


def _torch_save(obj: object, path: Path, legacy: bool = False) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp, _use_new_zipfile_serialization=not legacy)


def _adamw_state(rng: np.random.Generator, specs: List[Spec], lr: float) -> Dict[str, object]:
    """``torch.optim.AdamW.state_dict()`` over the trainable tensors, LAVIS's two groups."""
    trainable = [s for s in specs if s[2].is_floating_point]
    state = {}
    for i, (name, shape, dtype) in enumerate(trainable):
        state[i] = {
            "step": torch.tensor(1000.0),
            "exp_avg": _tensor(rng, (name, shape, dtype)),
            "exp_avg_sq": _tensor(rng, (name, shape, dtype)).abs_(),
        }
    decay = [i for i, s in enumerate(trainable) if len(s[1]) > 1 and not s[0].endswith(".bias")]
    no_decay = [i for i in range(len(trainable)) if i not in set(decay)]
    group = {
        "lr": lr,
        "betas": (0.9, 0.999),
        "eps": 1e-08,
        "amsgrad": False,
        "foreach": None,
        "maximize": False,
        "capturable": False,
        "differentiable": False,
        "fused": None,
    }
    return {
        "state": state,
        "param_groups": [
            {**group, "weight_decay": 0.05, "params": decay},
            {**group, "weight_decay": 0.0, "params": no_decay},
        ],
    }


def _runner_checkpoint(rng: np.random.Generator, specs: List[Spec], model_type: str, epoch: int) -> Dict[str, object]:
    """What LAVIS's ``_save_checkpoint`` writes."""
    config = {
        "model": {"arch": "blip2_t5", "model_type": model_type, "load_finetuned": False, "freeze_vit": True},
        "run": {
            "task": "captioning",
            "lr_sched": "linear_warmup_cosine_lr",
            "init_lr": 1e-4,
            "weight_decay": 0.05,
            "amp": True,
            "seed": 42,
            "output_dir": "output/BLIP2",
        },
    }
    return {
        "model": _state(rng, specs),
        "optimizer": _adamw_state(rng, specs, 1e-5),
        "config": config,
        "scaler": {
            "scale": 65536.0,
            "growth_factor": 2.0,
            "backoff_factor": 0.5,
            "growth_interval": 2000,
            "_growth_tracker": 0,
        },
        "epoch": epoch,
    }


def t5_config(d: Dims) -> Dict[str, object]:
    """google/flan-t5-xl's published ``config.json`` (sizes replaced in smoke mode)."""
    return {
        "architectures": ["T5ForConditionalGeneration"],
        "d_ff": d.t5_d_ff,
        "d_kv": d.t5_d_kv,
        "d_model": d.t5_d_model,
        "decoder_start_token_id": 0,
        "dense_act_fn": "gelu_new",
        "dropout_rate": 0.1,
        "eos_token_id": 1,
        "feed_forward_proj": "gated-gelu",
        "initializer_factor": 1.0,
        "is_encoder_decoder": True,
        "is_gated_act": True,
        "layer_norm_epsilon": 1e-06,
        "model_type": "t5",
        "n_positions": 512,
        "num_decoder_layers": d.t5_decoder_layers,
        "num_heads": d.t5_heads,
        "num_layers": d.t5_layers,
        "output_past": True,
        "pad_token_id": 0,
        "relative_attention_max_distance": 128,
        "relative_attention_num_buckets": d.t5_buckets,
        "task_specific_params": {
            "summarization": {
                "early_stopping": True,
                "length_penalty": 2.0,
                "max_length": 200,
                "min_length": 30,
                "no_repeat_ngram_size": 3,
                "num_beams": 4,
                "prefix": "summarize: ",
            },
            "translation_en_to_de": {
                "early_stopping": True,
                "max_length": 300,
                "num_beams": 4,
                "prefix": "translate English to German: ",
            },
            "translation_en_to_fr": {
                "early_stopping": True,
                "max_length": 300,
                "num_beams": 4,
                "prefix": "translate English to French: ",
            },
            "translation_en_to_ro": {
                "early_stopping": True,
                "max_length": 300,
                "num_beams": 4,
                "prefix": "translate English to Romanian: ",
            },
        },
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": "4.23.1",
        "use_cache": True,
        "vocab_size": d.t5_vocab,
    }


def bert_config(d: Dims) -> Dict[str, object]:
    """bert-base-uncased's published ``config.json`` (sizes replaced in smoke mode)."""
    return {
        "architectures": ["BertForMaskedLM"],
        "attention_probs_dropout_prob": 0.1,
        "gradient_checkpointing": False,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": d.q_hidden,
        "initializer_range": 0.02,
        "intermediate_size": d.q_intermediate,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": d.q_max_pos,
        "model_type": "bert",
        "num_attention_heads": d.q_heads,
        "num_hidden_layers": d.q_layers,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "transformers_version": "4.6.0.dev0",
        "type_vocab_size": 2,
        "use_cache": True,
        "vocab_size": d.bert_vocab,
    }


# --- writers ------------------------------------------------------------------------------
# The released files, by the `model.weights` setting that points to each, and which a preset reads.
RELEASE_FILES = {
    "eva_vit": "eva_vit_g.pth",
    "t5": "flan-t5-xl",
    "bert": "bert-base-uncased",
    "blip2": "blip2_pretrained_flant5xl.pth",
    "regionvlm": "ckpoint_RegionVLM.pth",
}
PRESET_SETTINGS = {
    "flant5xl": ("eva_vit", "t5", "regionvlm"),
    "pretrain_flant5xl": ("eva_vit", "t5", "bert", "blip2"),
    "tiny": ("eva_vit", "t5", "regionvlm"),  # files written with --smoke
}


def release_paths(folder: Path, preset: str = "flant5xl") -> Dict[str, str]:
    """``model.weights`` for ``preset`` when the files lie in ``folder`` under their released names."""
    return {setting: str(folder / RELEASE_FILES[setting]) for setting in PRESET_SETTINGS[preset]}


def write_eva(out: Path, d: Dims, rng: np.random.Generator) -> List[Path]:
    path = out / RELEASE_FILES["eva_vit"]
    _torch_save(_state(rng, eva_spec(d)), path)
    return [path]


def write_t5(out: Path, d: Dims, rng: np.random.Generator, layout: str = "safetensors") -> List[Path]:
    folder = out / RELEASE_FILES["t5"]
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "config.json", t5_config(d), indent=2)
    shards = t5_shards(d)
    total = sum(_nbytes(s) for shard in shards for s in shard)
    written, weight_map = [], {}
    for k, shard in enumerate(shards, 1):
        if layout == "safetensors":
            name = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
            write_safetensors(folder / name, [s for s in shard if s[0] not in T5_TIED], rng)
        else:
            name = f"pytorch_model-{k:05d}-of-{len(shards):05d}.bin"
            state = _state(rng, [s for s in shard if s[0] not in T5_TIED])
            for tied in T5_TIED:  # the old files hold the copies, sharing shared.weight's storage
                if any(s[0] == tied for s in shard):
                    state[tied] = state["shared.weight"]
            _torch_save(state, folder / name)
        weight_map.update({s[0]: name for s in shard})
        written.append(folder / name)
    index = "model.safetensors.index.json" if layout == "safetensors" else "pytorch_model.bin.index.json"
    atomic_write_json(
        folder / index, {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, indent=2
    )
    return written + [folder / index, folder / "config.json"]


def write_bert(out: Path, d: Dims, rng: np.random.Generator) -> List[Path]:
    folder = out / RELEASE_FILES["bert"]
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "config.json", bert_config(d), indent=2)
    state = _state(rng, [s for s in bert_spec(d) if s[0] != "cls.predictions.decoder.weight"])
    state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"]  # tied
    _torch_save(state, folder / "pytorch_model.bin", legacy=True)
    return [folder / "pytorch_model.bin", folder / "config.json"]


def write_blip2(out: Path, d: Dims, rng: np.random.Generator) -> List[Path]:
    path = out / RELEASE_FILES["blip2"]
    _torch_save(_runner_checkpoint(rng, lavis_spec(d, text_path=False), "pretrain_flant5xl", 9), path)
    return [path]


def write_regionvlm(out: Path, d: Dims, rng: np.random.Generator) -> List[Path]:
    path = out / RELEASE_FILES["regionvlm"]
    _torch_save(_runner_checkpoint(rng, lavis_spec(d, text_path=True), "LN_coco_flant5xl", 4), path)
    return [path]


WRITERS = {"eva_vit": write_eva, "t5": write_t5, "bert": write_bert, "blip2": write_blip2, "regionvlm": write_regionvlm}


def write_all(
    out: Path, smoke: bool = False, t5_layout: str = "safetensors", seed: int = 0, only: Optional[List[str]] = None
) -> Dict[str, List[Path]]:
    """Write the stand-ins into ``out``; returns the files per weight setting."""
    dims = smoke_dims() if smoke else REAL
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for k, (setting, writer) in enumerate(WRITERS.items()):
        if only and setting not in only:
            continue
        rng = np.random.default_rng([seed, k])  # each file has its own stream: --only reproduces it
        if setting == "t5":
            written[setting] = writer(out, dims, rng, t5_layout)
        else:
            written[setting] = writer(out, dims, rng)
    return written


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder to write into (then REGIONVLM_WEIGHTS=this folder)")
    p.add_argument("--smoke", action="store_true", help="tiny preset sizes instead of the real ones")
    p.add_argument("--t5-layout", choices=("safetensors", "bin"), default="safetensors")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default="", help=f"comma-separated subset of {list(WRITERS)}")
    args = p.parse_args(argv)
    only = [s for s in args.only.split(",") if s]
    bad = [s for s in only if s not in WRITERS]
    if bad:
        p.error(f"--only: unknown {bad}; choose from {list(WRITERS)}")
    start = time.perf_counter()
    written = write_all(Path(args.out), args.smoke, args.t5_layout, args.seed, only)
    total = 0
    for setting, files in written.items():
        for f in files:
            total += f.stat().st_size
            print(f"{setting:<10} {f.stat().st_size / 1e9:8.3f} GB  {f}")
    print(f"wrote {total / 1e9:.2f} GB in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
