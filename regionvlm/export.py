"""Hugging Face ``transformers`` export and import of RegionVLM (the InstructBLIP layout).

RegionVLM is InstructBLIP's architecture: a Q-Former that reads text (here the region
coordinates) next to its learned queries, and a T5 whose prompt is empty. So the whole model
(EVA ViT, ``ln_vision``, Q-Former, queries, ``t5_proj``, T5) fits an
``InstructBlipForConditionalGeneration`` directory that plain ``transformers`` loads::

    python -m regionvlm.export hf --checkpoint CKPT --model-type tiny --out DIR     # export
    python -m regionvlm.export hf --from-hf DIR --out CKPT                           # import

The directory holds ``config.json``, ``generation_config.json``, the weights as safetensors,
and an ``InstructBlipProcessor`` (image processor, the Flan-T5 tokenizer with its ``<image>``
placeholder, and the Q-Former tokenizer: bert-base-uncased + ``[DEC]``, whose
``model_max_length`` is the model's region-text limit ``max_txt_len``). Export and import are
exact inverses (bit-identical tensors). What the layout cannot express exactly, and its
measured effect, is listed in ``docs/huggingface.md``: the one that changes numbers is the
``ln_vision`` epsilon (1e-5), which becomes the vision tower's shared ``layer_norm_eps``
(the ViT's 1e-6).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from regionvlm.common.errors import CheckpointError, ConfigError, MissingFileError, RegionVLMError
from regionvlm.common.io import atomic_directory
from regionvlm.models.weights import DERIVED

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
MIN_TRANSFORMERS = 5  # the PIL image-processor backend and this config layout are transformers 5's

_VIT_RULES = (
    (r"cls_token", "embeddings.class_embedding"),
    (r"pos_embed", "embeddings.position_embedding"),
    (r"patch_embed\.proj\.(weight|bias)", r"embeddings.patch_embedding.\1"),
    (r"blocks\.(\d+)\.norm1\.(weight|bias)", r"encoder.layers.\1.layer_norm1.\2"),
    (r"blocks\.(\d+)\.norm2\.(weight|bias)", r"encoder.layers.\1.layer_norm2.\2"),
    (r"blocks\.(\d+)\.attn\.qkv\.weight", r"encoder.layers.\1.self_attn.qkv.weight"),
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"encoder.layers.\1.self_attn.projection.\2"),
    (r"blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", r"encoder.layers.\1.mlp.\2.\3"),
)
_QFORMER_RULES = (
    (r"embeddings\.LayerNorm\.(weight|bias)", r"embeddings.layernorm.\1"),
    (r"embeddings\.(word|position)_embeddings\.weight", r"embeddings.\1_embeddings.weight"),
    (
        r"encoder\.layer\.(\d+)\.(attention|crossattention)\.self\.(query|key|value)\.(weight|bias)",
        r"encoder.layer.\1.\2.attention.\3.\4",
    ),
    (
        r"encoder\.layer\.(\d+)\.(attention|crossattention)\.output\.(dense|LayerNorm)\.(weight|bias)",
        r"encoder.layer.\1.\2.output.\3.\4",
    ),
    (
        r"encoder\.layer\.(\d+)\.(intermediate|intermediate_query)\.dense\.(weight|bias)",
        r"encoder.layer.\1.\2.dense.\3",
    ),
    (r"encoder\.layer\.(\d+)\.(output|output_query)\.(dense|LayerNorm)\.(weight|bias)", r"encoder.layer.\1.\2.\3.\4"),
)
# Keys of the project's state dict that are recomputed, never stored in the export.
_QKV_BIAS = re.compile(r"^visual_encoder\.blocks\.(\d+)\.attn\.(q_bias|v_bias)$")


# ----------------------------------------------------------------------------- key mapping
def hf_name(key: str) -> Optional[str]:
    """The ``InstructBlipForConditionalGeneration`` name of a RegionVLM state-dict key.

    ``None`` for derived keys and for the EVA ``q_bias``/``v_bias`` pair (joined into one
    ``qkv.bias`` by :func:`to_hf_state_dict`)."""
    if DERIVED.match(key) or _QKV_BIAS.match(key):
        return None
    for prefix, hf_prefix, rules in (
        ("visual_encoder.", "vision_model.", _VIT_RULES),
        ("Qformer.bert.", "qformer.", _QFORMER_RULES),
    ):
        if key.startswith(prefix):
            rest = key[len(prefix) :]
            for pattern, repl in rules:
                if re.fullmatch(pattern, rest):
                    return hf_prefix + re.sub(f"^{pattern}$", repl, rest)
            raise RuntimeError(f"no Hugging Face name for '{key}'")
    if key.startswith("ln_vision."):
        return "vision_model.post_layernorm." + key[len("ln_vision.") :]
    if key.startswith("t5_proj."):
        return "language_projection." + key[len("t5_proj.") :]
    if key.startswith("t5_model."):
        return "language_model." + key[len("t5_model.") :]
    if key == "query_tokens":
        return key
    raise RuntimeError(f"no Hugging Face name for '{key}'")


def to_hf_state_dict(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """RegionVLM (LAVIS names) -> InstructBLIP names; tensors are shared, not copied.

    EVA's ``q_bias``/``v_bias`` become one ``qkv.bias`` = [q_bias ; 0 ; v_bias]; the T5
    encoder/decoder input tables are ``language_model.shared`` (transformers re-ties them);
    ``position_ids`` is recomputed by transformers."""
    out: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = hf_name(key)
        if name is not None:
            out[name] = value
    for key in state:
        m = _QKV_BIAS.match(key)
        if m and m.group(2) == "q_bias":
            q, v = state[key], state[key.replace("q_bias", "v_bias")]
            out[f"vision_model.encoder.layers.{m.group(1)}.self_attn.qkv.bias"] = torch.cat([q, torch.zeros_like(v), v])
    _check_derived(state)
    return out


def _check_derived(state: Mapping[str, torch.Tensor]) -> None:
    """Derived keys must hold what the export will recompute (else the export would not be exact)."""
    if any(v.is_meta for v in state.values()):
        return  # names and shapes only
    shared = state.get("t5_model.shared.weight")
    for key in ("t5_model.encoder.embed_tokens.weight", "t5_model.decoder.embed_tokens.weight"):
        if key in state and shared is not None and not torch.equal(state[key], shared):
            raise CheckpointError(
                f"'{key}' differs from 't5_model.shared.weight'; the InstructBLIP layout "
                "(and this project's model) have one T5 input table."
            )
    pos = state.get("Qformer.bert.embeddings.position_ids")
    if pos is not None and not torch.equal(pos.reshape(-1), torch.arange(pos.numel(), device=pos.device)):
        raise CheckpointError("'Qformer.bert.embeddings.position_ids' is not 0..n-1; it cannot be exported.")


def from_hf_state_dict(
    hf_state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], source: str
) -> Dict[str, torch.Tensor]:
    """InstructBLIP names -> RegionVLM's full state dict (every key of ``expected``).

    ``expected`` is the project's state dict (meta tensors are fine) of the architecture the
    export describes; unknown or missing tensors and wrong shapes raise CheckpointError."""
    reverse: Dict[str, str] = {}
    for key in expected:
        name = hf_name(key)
        if name is not None:
            reverse[name] = key
    out: Dict[str, torch.Tensor] = {}
    used = set()
    for name, key in reverse.items():
        if name in hf_state:
            out[key] = hf_state[name]
            used.add(name)
    for key in expected:
        m = _QKV_BIAS.match(key)
        if m and m.group(2) == "q_bias":
            name = f"vision_model.encoder.layers.{m.group(1)}.self_attn.qkv.bias"
            if name not in hf_state:
                continue
            bias = hf_state[name]
            width = bias.shape[0] // 3
            k_bias = bias[width : 2 * width]
            if not k_bias.is_meta and bool(k_bias.any()):
                # q·b_k is the same for every key of a query row, so softmax cancels it: dropping
                # the key bias changes no output (RegionVLM's EVA ViT has none).
                logger.warning(
                    "%s: %s has a nonzero key bias (max |b_k| = %.3g); it is dropped, which "
                    "leaves every attention output unchanged.",
                    source,
                    name,
                    float(k_bias.abs().max()),
                )
            out[key] = bias[:width].clone()
            out[key.replace("q_bias", "v_bias")] = bias[2 * width :].clone()
            used.add(name)
    # transformers re-ties the T5 input tables on load; a file written by save_pretrained may hold them
    for extra in ("language_model.encoder.embed_tokens.weight", "language_model.decoder.embed_tokens.weight"):
        if extra in hf_state and "language_model.shared.weight" in hf_state:
            if not torch.equal(hf_state[extra], hf_state["language_model.shared.weight"]):
                raise CheckpointError(
                    f"{source}: '{extra}' differs from 'language_model.shared.weight'; "
                    "RegionVLM's T5 has one input table."
                )
            used.add(extra)
    unknown = sorted(set(hf_state) - used)
    if unknown:
        raise CheckpointError(f"{source}: {len(unknown)} tensors have no place in RegionVLM (e.g. {unknown[:5]}).")
    shared = out.get("t5_model.shared.weight")
    for key, value in expected.items():
        if key in out:
            continue
        if key == "Qformer.bert.embeddings.position_ids":
            out[key] = torch.arange(value.shape[-1]).unsqueeze(0)
        elif (
            key in ("t5_model.encoder.embed_tokens.weight", "t5_model.decoder.embed_tokens.weight")
            and shared is not None
        ):
            out[key] = shared
    missing = [k for k in expected if k not in out]
    if missing:
        raise CheckpointError(f"{source}: {len(missing)} RegionVLM tensors are missing (e.g. {missing[:5]}).")
    wrong = [
        f"{k}: {tuple(out[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if tuple(out[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise CheckpointError(f"{source}: shape mismatch for {len(wrong)} tensors: {wrong[:5]}.")
    return {k: out[k] for k in expected}


# ----------------------------------------------------------------------------- configs
def architecture(model) -> Dict[str, Any]:
    """The architecture fields of a built RegionVLM, read from its modules (the source of truth)."""
    vit = model.visual_encoder
    block = vit.blocks[0]
    if block.attn.q_bias is None:
        raise CheckpointError("this ViT has no q/v bias; InstructBLIP's vision attention always has one.")
    q = model.Qformer.config
    t5 = model.t5_model.config
    return {
        "image_size": int(vit.patch_embed.img_size),
        "vit": {
            "patch_size": int(vit.patch_embed.patch_size),
            "width": int(vit.num_features),
            "depth": len(vit.blocks),
            "num_heads": int(block.attn.num_heads),
            "mlp_hidden": int(block.mlp.fc1.out_features),
            "eps": float(block.norm1.eps),
        },
        "qformer": {
            "vocab_size": q.vocab_size,
            "hidden_size": q.hidden_size,
            "num_hidden_layers": q.num_hidden_layers,
            "num_attention_heads": q.num_attention_heads,
            "intermediate_size": q.intermediate_size,
            "max_position_embeddings": q.max_position_embeddings,
            "cross_attention_freq": q.cross_attention_freq,
            "layer_norm_eps": q.layer_norm_eps,
            "hidden_dropout_prob": q.hidden_dropout_prob,
            "attention_probs_dropout_prob": q.attention_probs_dropout_prob,
        },
        "num_query_token": int(model.query_tokens.shape[1]),
        "t5": {
            "vocab_size": t5.vocab_size,
            "d_model": t5.d_model,
            "d_kv": t5.d_kv,
            "d_ff": t5.d_ff,
            "num_layers": t5.num_layers,
            "num_decoder_layers": t5.num_decoder_layers,
            "num_heads": t5.num_heads,
            "relative_attention_num_buckets": t5.relative_attention_num_buckets,
            "relative_attention_max_distance": t5.relative_attention_max_distance,
            "dropout_rate": t5.dropout_rate,
        },
    }


def hf_config(model, image_token_index: int):
    """The ``InstructBlipConfig`` of a built RegionVLM."""
    from transformers import InstructBlipConfig, InstructBlipQFormerConfig, InstructBlipVisionConfig, T5Config

    arch = architecture(model)
    vit, q, t5 = arch["vit"], arch["qformer"], model.t5_model.config
    vision = InstructBlipVisionConfig(
        hidden_size=vit["width"],
        intermediate_size=vit["mlp_hidden"],
        num_hidden_layers=vit["depth"],
        num_attention_heads=vit["num_heads"],
        image_size=arch["image_size"],
        patch_size=vit["patch_size"],
        hidden_act="gelu",
        layer_norm_eps=vit["eps"],
        attention_dropout=0.0,
        qkv_bias=True,
    )
    qformer = InstructBlipQFormerConfig(
        vocab_size=q["vocab_size"],
        hidden_size=q["hidden_size"],
        num_hidden_layers=q["num_hidden_layers"],
        num_attention_heads=q["num_attention_heads"],
        intermediate_size=q["intermediate_size"],
        hidden_act="gelu",
        hidden_dropout_prob=q["hidden_dropout_prob"],
        attention_probs_dropout_prob=q["attention_probs_dropout_prob"],
        max_position_embeddings=q["max_position_embeddings"],
        layer_norm_eps=q["layer_norm_eps"],
        pad_token_id=0,
        cross_attention_frequency=q["cross_attention_freq"],
        encoder_hidden_size=vit["width"],
    )
    eos = int(t5.eos_token_id)
    text = T5Config(
        **arch["t5"],
        layer_norm_epsilon=t5.layer_norm_epsilon,
        feed_forward_proj="gated-gelu",
        dense_act_fn="gelu",  # BLIP-2's exact GELU; "gated-gelu" alone would mean the tanh approximation
        tie_word_embeddings=False,  # Flan-T5: own lm_head, no d_model^-0.5 rescaling of decoder outputs
        decoder_start_token_id=int(t5.decoder_start_token_id),
        pad_token_id=int(t5.pad_token_id),
        # RegionVLM's T5 input for an empty prompt is [query outputs ; </s>]. InstructBLIP's
        # generate() without input_ids builds num_query_tokens placeholders + bos_token_id, so
        # bos = </s> makes that default exactly RegionVLM's empty prompt.
        eos_token_id=eos,
        bos_token_id=eos,
    )
    if text.dense_act_fn != "gelu" or text.scale_decoder_outputs:
        raise RuntimeError("this transformers version does not keep T5's exact-GELU / unscaled-output settings.")
    if image_token_index >= text.vocab_size:
        raise ConfigError(
            f"the image placeholder id {image_token_index} does not fit the T5 vocabulary ({text.vocab_size} rows)."
        )
    config = InstructBlipConfig(
        vision_config=vision,
        qformer_config=qformer,
        text_config=text,
        num_query_tokens=arch["num_query_token"],
        image_token_index=image_token_index,
    )
    config.architectures = ["InstructBlipForConditionalGeneration"]
    return config


def model_config_from_hf(config: Mapping[str, Any], max_txt_len: Optional[int], source: str) -> Dict[str, Any]:
    """A RegionVLM ``model:`` section (architecture only) from an exported ``config.json``."""
    try:
        if config.get("model_type") != "instructblip":
            raise KeyError("model_type")
        v, q, t = config["vision_config"], config["qformer_config"], config["text_config"]
        if t.get("model_type") != "t5":
            raise CheckpointError(f"{source}: the language model is '{t.get('model_type')}'; RegionVLM uses T5.")
        if not v.get("qkv_bias", True):
            raise CheckpointError(f"{source}: a vision tower without q/v biases is not RegionVLM's EVA ViT.")
        act = t.get("dense_act_fn", "gelu_new")
        if t.get("feed_forward_proj") != "gated-gelu" or act != "gelu" or t.get("scale_decoder_outputs", False):
            raise CheckpointError(
                f"{source}: the T5 is not BLIP-2's Flan-T5 (gated exact-GELU FFN, unscaled "
                f"decoder outputs); got feed_forward_proj={t.get('feed_forward_proj')}, "
                f"dense_act_fn={act}, scale_decoder_outputs={t.get('scale_decoder_outputs')}."
            )
        image_size, patch = v["image_size"], v["patch_size"]
        if isinstance(image_size, (list, tuple)) or isinstance(patch, (list, tuple)):
            raise CheckpointError(f"{source}: RegionVLM's ViT takes square images and patches.")
        cfg: Dict[str, Any] = {
            "arch": "regionvlm_t5",
            "image_size": int(image_size),
            "vit": {
                "patch_size": int(patch),
                "width": v["hidden_size"],
                "depth": v["num_hidden_layers"],
                "num_heads": v["num_attention_heads"],
                "mlp_hidden": v["intermediate_size"],
                "eps": float(v["layer_norm_eps"]),
            },
            "qformer": {
                "vocab_size": q["vocab_size"],
                "hidden_size": q["hidden_size"],
                "num_hidden_layers": q["num_hidden_layers"],
                "num_attention_heads": q["num_attention_heads"],
                "intermediate_size": q["intermediate_size"],
                "max_position_embeddings": q["max_position_embeddings"],
                "cross_attention_freq": q["cross_attention_frequency"],
                "layer_norm_eps": float(q["layer_norm_eps"]),
                "hidden_dropout_prob": float(q["hidden_dropout_prob"]),
                "attention_probs_dropout_prob": float(q["attention_probs_dropout_prob"]),
            },
            "num_query_token": config["num_query_tokens"],
            "t5": {
                k: t[k]
                for k in (
                    "vocab_size",
                    "d_model",
                    "d_kv",
                    "d_ff",
                    "num_layers",
                    "num_decoder_layers",
                    "num_heads",
                    "relative_attention_num_buckets",
                    "relative_attention_max_distance",
                    "dropout_rate",
                )
            },
        }
    except KeyError as exc:
        raise CheckpointError(
            f"{source} is not an InstructBLIP config (missing or wrong {exc}); "
            "export one with `python -m regionvlm.export hf`."
        ) from None
    if max_txt_len is not None:
        cfg["max_txt_len"] = int(max_txt_len)
    return cfg


def matching_presets(model_cfg: Mapping[str, Any]) -> List[str]:
    """The regionvlm_t5 presets whose architecture equals ``model_cfg``'s."""
    from omegaconf import OmegaConf

    from regionvlm.models.eva_vit import VisionConfig
    from regionvlm.models.qformer import QFormerConfig
    from regionvlm.models.regionvlm_t5 import RegionVLMT5, T5Settings

    def arch_of(cfg: Mapping[str, Any]) -> Tuple:
        q = QFormerConfig.parse(cfg.get("qformer"), "model.qformer").as_dict()
        for key in ("encoder_width", "hidden_dropout_prob", "attention_probs_dropout_prob"):
            q.pop(key)  # the ViT width is compared as such; dropout is not architecture
        t5 = T5Settings.parse(cfg.get("t5"), "model.t5").as_dict()
        t5.pop("dropout_rate")
        return (
            int(cfg.get("image_size", 364)),
            VisionConfig.parse(cfg.get("vit"), "model.vit").as_dict(),
            q,
            int(cfg.get("num_query_token", 32)),
            t5,
        )

    target = arch_of(model_cfg)
    return [
        name
        for name in RegionVLMT5.PRETRAINED_MODEL_CONFIG_DICT
        if arch_of(OmegaConf.to_container(OmegaConf.load(RegionVLMT5.default_config_path(name)).model)) == target
    ]


# ----------------------------------------------------------------------------- export
def build_processor(model):
    """An ``InstructBlipProcessor`` equal to the project's evaluation preprocessing."""
    from transformers import BlipImageProcessorPil, InstructBlipProcessor
    from transformers.image_utils import PILImageResampling

    from regionvlm.processors.image_processors import CLIP_MEAN, CLIP_STD

    image_processor = BlipImageProcessorPil(
        size={"height": model.image_size, "width": model.image_size},
        resample=PILImageResampling.BICUBIC,
        do_resize=True,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
        do_convert_rgb=True,
    )
    qformer_tokenizer = _clean_copy(model.tokenizer)  # the cached project tokenizers stay untouched
    qformer_tokenizer.model_max_length = int(model.max_txt_len)  # honoured by truncation=True
    t5_tokenizer = _clean_copy(model.t5_tokenizer)  # the processor adds "<image>" to it
    return InstructBlipProcessor(
        image_processor=image_processor,
        tokenizer=t5_tokenizer,
        qformer_tokenizer=qformer_tokenizer,
        num_query_tokens=int(model.query_tokens.shape[1]),
    )


def _clean_copy(tokenizer: Any) -> Any:
    """A copy of a shared tokenizer without the truncation/padding state its last call left in
    the fast backend (``tokenizer.json`` would save it, and the exported processor would then
    truncate at that call's length instead of ``model_max_length``)."""
    copied = copy.deepcopy(tokenizer)
    backend = getattr(copied, "backend_tokenizer", None)
    if backend is not None:
        backend.no_truncation()
        backend.no_padding()
    return copied


def _hf_expected_keys(config) -> Dict[str, Tuple[int, ...]]:
    """Names and shapes of what ``from_pretrained`` reads (tied T5 input tables excluded)."""
    from transformers import InstructBlipForConditionalGeneration

    with torch.device("meta"):
        hf = InstructBlipForConditionalGeneration(config)
    state = hf.state_dict()
    return {
        k: tuple(v.shape)
        for k, v in state.items()
        if k not in ("language_model.encoder.embed_tokens.weight", "language_model.decoder.embed_tokens.weight")
    }


def _require_transformers() -> None:
    import transformers

    if int(transformers.__version__.split(".")[0]) < MIN_TRANSFORMERS:
        raise ConfigError(
            f"the Hugging Face export needs transformers >= {MIN_TRANSFORMERS} (installed: "
            f"{transformers.__version__}); upgrade with `pip install -U transformers`."
        )


def hf_layout(model) -> Tuple[Any, Dict[str, torch.Tensor], Any]:
    """(``InstructBlipConfig``, InstructBLIP state dict, ``InstructBlipProcessor``) of a built
    RegionVLM, checked name by name and shape by shape against what ``from_pretrained`` reads.
    Works on a model built on the meta device (names and shapes only)."""
    processor = build_processor(model)
    image_token_index = processor.tokenizer.convert_tokens_to_ids(processor.image_token.content)
    config = hf_config(model, int(image_token_index))
    state = to_hf_state_dict(model.state_dict())
    expected = _hf_expected_keys(config)
    if set(state) != set(expected):
        raise RuntimeError(
            f"export key mismatch: extra {sorted(set(state) - set(expected))[:5]}, "
            f"missing {sorted(set(expected) - set(state))[:5]}"
        )
    wrong = [k for k, s in expected.items() if tuple(state[k].shape) != s]
    if wrong:
        raise RuntimeError(f"export shape mismatch: {wrong[:5]}")
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in state.values() if v.is_floating_point()})
    if len(dtypes) != 1:
        raise CheckpointError(f"the model mixes dtypes {dtypes}; cast it to one (e.g. model.float()) before exporting.")
    config.dtype = dtypes[0]
    return config, state, processor


def save_weights(state: Mapping[str, torch.Tensor], directory: Path, max_shard_size: str | int = "5GB") -> None:
    """``model.safetensors``, or shards + ``model.safetensors.index.json`` above ``max_shard_size``
    (the names ``from_pretrained`` looks for)."""
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    tensors, seen = {}, set()
    for name, value in state.items():
        value = value.detach().cpu()
        storage = value.untyped_storage().data_ptr()
        tensors[name] = (value.clone() if storage in seen else value).contiguous()  # safetensors refuses aliases
        seen.add(storage)
    split = split_torch_state_dict_into_shards(tensors, max_shard_size=max_shard_size)
    for filename, names in split.filename_to_tensors.items():
        save_file({n: tensors[n] for n in names}, str(directory / filename), metadata={"format": "pt"})
        os.chmod(directory / filename, 0o644)  # safetensors writes 0600; an export is meant to be shared
    if split.is_sharded:
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def export_hf(model, out_dir: str | Path, overwrite: bool = False, max_shard_size: str | int = "5GB") -> Path:
    """Write ``model`` as an InstructBLIP directory that plain ``transformers`` loads."""
    from transformers import GenerationConfig

    _require_transformers()
    out = _prepare_out_dir(out_dir, overwrite)
    config, state, processor = hf_layout(model)
    t5 = config.text_config
    # Token ids only: InstructBLIP's generate() runs the T5's own generation settings, so search
    # options (RegionVLM: num_beams=5, max_new_tokens=30) are passed to generate().
    generation = GenerationConfig(
        decoder_start_token_id=t5.decoder_start_token_id,
        bos_token_id=t5.bos_token_id,
        eos_token_id=t5.eos_token_id,
        pad_token_id=t5.pad_token_id,
    )
    with atomic_directory(out) as tmp:  # a failure (e.g. a full disk) leaves no half export and the old one intact
        config.save_pretrained(tmp)
        generation.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        save_weights(state, tmp, max_shard_size)
    return out


def _prepare_out_dir(out_dir: str | Path, overwrite: bool) -> Path:
    """Fail before any slow work when the export cannot be written where asked."""
    out = Path(out_dir).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out '{out}' is a file; give a directory for the Hugging Face export.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--out '{out}' exists and is not empty; remove it or pass --overwrite.")
    _require_writable_parent(out)
    return out


def _require_writable_parent(out: Path) -> None:
    parent = out.parent
    existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(f"cannot write --out '{out}': '{existing}' is a file, not a directory.")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=parent, prefix=f".{out.name}.probe"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"cannot write to '{parent}' (for --out '{out}'): {exc.strerror or exc}; choose a writable location."
        ) from None


# ----------------------------------------------------------------------------- import
def read_hf_export(hf_dir: str | Path) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor]]:
    """Read an InstructBLIP directory: (RegionVLM ``model:`` section, full RegionVLM state dict)."""
    from regionvlm.models.regionvlm_t5 import RegionVLMT5
    from regionvlm.models.weights import read_hf_directory

    directory = Path(hf_dir).expanduser()
    if not directory.is_dir():
        raise MissingFileError(
            f"--from-hf '{directory}' is not a directory; give the folder written by "
            "`python -m regionvlm.export hf --out`."
        )
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointError(f"'{directory}' has no {CONFIG_FILE}; it is not a Hugging Face model export.")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise CheckpointError(f"cannot read '{config_path}' as JSON: {exc}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"'{config_path}' does not hold a JSON object.")
    model_cfg = model_config_from_hf(config, _qformer_max_length(directory), str(config_path))
    hf_state = read_hf_directory(directory)
    kwargs = {k: v for k, v in model_cfg.items() if k != "arch"}
    with torch.device("meta"):  # names and shapes only: no memory, no initialization
        try:
            skeleton = RegionVLMT5(**kwargs)
        except (RegionVLMError, TypeError, ValueError) as exc:
            raise CheckpointError(f"'{config_path}' does not describe a RegionVLM: {exc}") from None
    state = from_hf_state_dict(hf_state, skeleton.state_dict(), str(directory))
    return model_cfg, state


def _qformer_max_length(directory: Path) -> Optional[int]:
    path = directory / "qformer_tokenizer" / "tokenizer_config.json"
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("model_max_length")
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, RecursionError, AttributeError):
        return None
    return int(value) if isinstance(value, (int, float)) and value < 1e6 else None


def import_hf(hf_dir: str | Path, out_path: str | Path, overwrite: bool = False) -> Tuple[Path, Dict[str, Any]]:
    """Write an InstructBLIP export back as a RegionVLM checkpoint (full state, LAVIS format).

    The file holds ``{"model": state_dict, "config": model section}``; ``model.load_checkpoint``
    (or ``load_model(..., checkpoint=...)``) of the matching preset loads it."""
    from regionvlm.common.io import atomic_torch_save

    out = Path(out_path).expanduser().absolute()
    if out.is_dir():
        raise ConfigError(f"--out '{out}' is a directory; give the checkpoint file to write (e.g. model.pth).")
    if out.exists() and not overwrite:
        raise ConfigError(f"--out '{out}' exists; remove it or pass --overwrite.")
    _require_writable_parent(out)
    model_cfg, state = read_hf_export(hf_dir)
    atomic_torch_save({"model": state, "config": model_cfg}, out)  # a full disk: OutputError, nothing left
    return out, model_cfg


# ----------------------------------------------------------------------------- command line
def build_model(model_type: str, checkpoint: Optional[str], cfg_path: Optional[str], options: Sequence[str]):
    """The model to export: a preset (or a YAML's ``model:``) with ``--options``, plus the checkpoint."""
    from omegaconf import OmegaConf

    from regionvlm.common.errors import require_file
    from regionvlm.models import model_config
    from regionvlm.models.regionvlm_t5 import RegionVLMT5

    if checkpoint is not None:
        if not checkpoint.strip():
            raise ConfigError("--checkpoint is empty; give the checkpoint file to export.")
        require_file(checkpoint, "RegionVLM checkpoint", "--checkpoint")
    model_cfg = model_config(model_type, checkpoint, cfg_path, options)
    if model_cfg.get("arch") != "regionvlm_t5":
        raise ConfigError(f"model.arch is '{model_cfg.get('arch')}'; only regionvlm_t5 exports to InstructBLIP.")
    if not model_cfg.get("checkpoint") and not model_cfg.get("load_pretrained", False):
        raise ConfigError(
            f"preset '{model_cfg.get('model_type')}' has random weights and no checkpoint was "
            "given; pass --checkpoint (or options that load weights)."
        )
    torch.manual_seed(0)
    model = RegionVLMT5.from_config(OmegaConf.create(OmegaConf.to_container(model_cfg, resolve=True)))
    return model.eval()


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m regionvlm.export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="format", required=True)
    hf = sub.add_parser("hf", help="Hugging Face transformers (InstructBlipForConditionalGeneration)")
    hf.add_argument(
        "--checkpoint",
        default=None,
        help="RegionVLM checkpoint (this project's or LAVIS format) to export (sets model.checkpoint)",
    )
    hf.add_argument(
        "--model-type",
        default="flant5xl",
        help="preset of regionvlm_t5 the checkpoint belongs to: flant5xl (default), tiny, ...",
    )
    hf.add_argument("--cfg-path", default=None, help="YAML with a model: section (instead of --model-type)")
    hf.add_argument(
        "--options", nargs="+", default=[], help="config overrides, e.g. model.weights.eva_vit=weights/eva_vit_g.pth"
    )
    hf.add_argument(
        "--from-hf",
        default=None,
        metavar="DIR",
        help="import: convert this exported directory back to a RegionVLM checkpoint",
    )
    hf.add_argument(
        "--out", required=True, help="export: the directory to write; import (--from-hf): the checkpoint file to write"
    )
    hf.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> Path:
    """Export (``--checkpoint``) or import (``--from-hf``); returns what was written."""
    from regionvlm.common.cli import echo

    args = parse_args(argv)
    if args.from_hf:
        if args.checkpoint or args.cfg_path or args.options:
            raise ConfigError("--from-hf reads everything from the export; drop --checkpoint/--cfg-path/--options.")
        out, model_cfg = import_hf(args.from_hf, args.out, overwrite=args.overwrite)
        presets = matching_presets(model_cfg)
        how = (
            f"load it with load_model('regionvlm_t5', '{presets[0]}', checkpoint='{out}')"
            if presets
            else "no preset has this architecture: build it with "
            f"RegionVLMT5.from_config({{**torch.load('{out}')['config'], 'checkpoint': '{out}'}})"
        )
        echo(f"wrote {out} ({model_cfg['arch']}, presets with this architecture: {presets or 'none'}); {how}")
        return out
    from regionvlm.common.config import parse_options

    parse_options(args.options)  # malformed options fail before the slow model build
    _prepare_out_dir(args.out, args.overwrite)
    model = build_model(args.model_type, args.checkpoint, args.cfg_path, args.options)
    out = export_hf(model, args.out, overwrite=args.overwrite)
    echo(
        f"wrote {out}: InstructBlipForConditionalGeneration.from_pretrained('{out}') and "
        f"InstructBlipProcessor.from_pretrained('{out}', backend='pil') load it (see docs/huggingface.md)"
    )
    return out


if __name__ == "__main__":
    from regionvlm.common.cli import run

    run(main)
