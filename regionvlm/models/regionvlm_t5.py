"""RegionVLM: BLIP-2 (EVA ViT-g + Q-Former + FlanT5) whose Q-Former reads the region
as text coordinates (SPEC section 1).

Data path, top to bottom::

    image --visual_encoder--> ln_vision --> image_embeds            (encode_image)
    query_tokens + region text --Qformer(cross-attends image)--> t5_proj  (region_queries)
    [32 soft tokens ; T5 tokens of the prompt] --T5 encoder-->      (encode_t5)
    T5 decoder --> caption / answer / loss of a target              (target_nll, generate)

Each step is a method so evaluation can cache what it shares: RIS encodes an image once,
runs the Q-Former and T5 encoder once per (mask, draw) and only the decoder per sentence.
"""
from __future__ import annotations

import logging
import math
from contextlib import nullcontext
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from regionvlm.common.errors import CheckpointError, ConfigError, InputError
from regionvlm.common.registry import registry
from regionvlm.models.base_model import BaseModel
from regionvlm.models.eva_vit import EvaViT
from regionvlm.models.qformer import QFormer, QFormerConfig
from regionvlm.models import init_priors, tokenizers, weights as weight_io

logger = logging.getLogger(__name__)

Segment = Union[str, torch.Tensor]


def _build_t5(cfg: Mapping, weights_dir: Optional[str] = None):
    """FlanT5 from ``transformers`` with BLIP-2's exact-GELU override."""
    from transformers import T5Config, T5ForConditionalGeneration

    t5_cfg = T5Config(
        vocab_size=cfg.get("vocab_size", 32128),
        d_model=cfg.get("d_model", 2048),
        d_kv=cfg.get("d_kv", 64),
        d_ff=cfg.get("d_ff", 5120),
        num_layers=cfg.get("num_layers", 24),
        num_decoder_layers=cfg.get("num_decoder_layers", 24),
        num_heads=cfg.get("num_heads", 32),
        relative_attention_num_buckets=cfg.get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=cfg.get("relative_attention_max_distance", 128),
        dropout_rate=cfg.get("dropout_rate", 0.1),
        layer_norm_epsilon=1e-6,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    t5_cfg.dense_act_fn = "gelu"  # BLIP-2 overrides gated-gelu's tanh approximation
    t5_cfg.tie_word_embeddings = False  # Flan-T5's lm_head is its own matrix (some versions ignore the kwarg)
    model = T5ForConditionalGeneration(t5_cfg)
    # Encoder and decoder always read the one shared input table (transformers 5 ties them
    # only together with lm_head, under the same flag).
    model.encoder.embed_tokens = model.shared
    model.decoder.embed_tokens = model.shared
    if model.lm_head.weight is model.shared.weight:
        raise RuntimeError("transformers tied T5's lm_head to the input embeddings; Flan-T5 needs them untied.")
    return model


@registry.register_model("regionvlm_t5")
class RegionVLMT5(BaseModel):
    """RegionVLM with FlanT5. Presets: ``flant5xl`` (the paper's model), ``tiny`` (CPU)."""

    PRETRAINED_MODEL_CONFIG_DICT = {
        "flant5xl": "configs/models/regionvlm_t5/flant5xl.yaml",
        "pretrain_flant5xl": "configs/models/regionvlm_t5/pretrain_flant5xl.yaml",
        "tiny": "configs/models/regionvlm_t5/tiny.yaml",
    }
    DEFAULT_MODEL_TYPE = "flant5xl"

    def __init__(self, image_size: int = 364, vit: Optional[Mapping] = None,
                 qformer: Optional[Mapping] = None, t5: Optional[Mapping] = None,
                 num_query_token: int = 32, max_txt_len: int = 32, max_output_txt_len: int = 32,
                 num_points: int = 10, freeze_vit: bool = True, freeze_t5: bool = True,
                 init: Optional[Mapping] = None, qformer_tokenizer: Optional[str] = None,
                 t5_tokenizer: Optional[str] = None, apply_lemmatizer: bool = False):
        super().__init__()
        vit = dict(vit or {})
        self.visual_encoder = EvaViT(img_size=image_size, **vit)
        width = self.visual_encoder.num_features
        self.ln_vision = nn.LayerNorm(width)

        qcfg = QFormerConfig(**{**dict(qformer or {}), "encoder_width": width})
        self.Qformer = QFormer(qcfg)
        self.query_tokens = nn.Parameter(torch.zeros(1, num_query_token, qcfg.hidden_size))
        with torch.random.fork_rng(devices=[]):  # Hugging Face's T5 init draws from the global RNG
            torch.manual_seed(int(dict(init or {}).get("seed", 0)))
            self.t5_model = _build_t5(dict(t5 or {}))
        self.t5_proj = nn.Linear(qcfg.hidden_size, self.t5_model.config.d_model)

        self.tokenizer = tokenizers.qformer_tokenizer(qformer_tokenizer)
        self.t5_tokenizer = tokenizers.t5_tokenizer(t5_tokenizer)
        if len(self.tokenizer) != qcfg.vocab_size:
            raise ConfigError(
                f"Q-Former vocab_size {qcfg.vocab_size} != tokenizer size {len(self.tokenizer)} "
                "(bert-base-uncased + [DEC] = 30523)."
            )
        self.image_size = image_size
        self.max_txt_len = max_txt_len
        self.max_output_txt_len = max_output_txt_len
        self.num_points = num_points
        self.freeze_vit = freeze_vit
        self.freeze_t5 = freeze_t5
        self.apply_lemmatizer = apply_lemmatizer
        self._init_cfg = dict(init or {})
        if not _on_meta(self):
            self.init_weights(**self._init_cfg)
        self._freeze()

    # ------------------------------------------------------------------ setup
    def _freeze(self) -> None:
        for module, frozen in ((self.visual_encoder, self.freeze_vit), (self.t5_model, self.freeze_t5)):
            for p in module.parameters():
                p.requires_grad_(not frozen)

    def train(self, mode: bool = True):
        """Frozen towers stay in eval mode (no dropout) while the rest trains."""
        super().train(mode)
        if self.freeze_vit:
            self.visual_encoder.eval()
        if self.freeze_t5:
            self.t5_model.eval()
        return self

    @torch.no_grad()
    def init_weights(self, scheme: str = "blip2", vit_pos_embed_std: float = 0.02,
                     query_std: float = 0.02, lm_head_std: Optional[float] = None, seed: int = 0,
                     vit_pos_embed_layout: str = "random", numeral_anchor_every: Optional[int] = None,
                     ) -> None:
        """Random initialization.

        ``blip2``: the official scheme (truncated-normal 0.02 in the ViT, BERT's N(0, 0.02)
        in the Q-Former, Hugging Face's T5 init). ``from_scratch``: what a tiny model needs to
        learn regions from random weights (TINY_TRAINING.md): N(0, 1/sqrt(width)) for ViT and
        Q-Former weights, a large ViT position table (``vit_pos_embed_std``), N(0, 0.02) query
        tokens and T5 ``lm_head``. Two priors for from-scratch training (``init_priors``):
        ``vit_pos_embed_layout: factorized`` (row + column position components) and
        ``numeral_anchor_every: N`` (Q-Former numerals 0..100 interpolate between anchors).
        """
        if scheme not in ("blip2", "from_scratch"):
            raise ConfigError(f"model.init.scheme must be 'blip2' or 'from_scratch', got '{scheme}'.")
        if vit_pos_embed_layout not in ("random", "factorized"):
            raise ConfigError("model.init.vit_pos_embed_layout must be 'random' or 'factorized', "
                              f"got '{vit_pos_embed_layout}'.")
        if numeral_anchor_every is not None and int(numeral_anchor_every) < 1:
            raise ConfigError("model.init.numeral_anchor_every must be a positive integer (or null to "
                              f"keep random numeral embeddings), got {numeral_anchor_every}.")
        gen = torch.Generator().manual_seed(seed)

        def normal_(t: torch.Tensor, std: float) -> None:
            t.copy_(torch.randn(t.shape, generator=gen) * std)

        def weight_std(width: int) -> float:
            return 1.0 / math.sqrt(width) if scheme == "from_scratch" else 0.02

        for tower, width in ((self.visual_encoder, self.visual_encoder.num_features),
                             (self.Qformer, self.Qformer.config.hidden_size)):
            self._init_tower(tower, weight_std(width), normal_)
        for name, p in self.visual_encoder.named_parameters():
            if name.endswith(("q_bias", "v_bias")):
                p.zero_()
        for module in (self.ln_vision, self.t5_proj):  # seeded too, so a build is repeatable
            if isinstance(module, nn.Linear):
                normal_(module.weight, weight_std(module.in_features))
                module.bias.zero_()
            else:
                module.weight.fill_(1.0)
                module.bias.zero_()
        normal_(self.visual_encoder.pos_embed, vit_pos_embed_std)
        if vit_pos_embed_layout == "factorized":
            grid = math.isqrt(self.visual_encoder.patch_embed.num_patches)
            self.visual_encoder.pos_embed[0, 1:] = init_priors.factorized_position_table(
                grid, self.visual_encoder.num_features, vit_pos_embed_std, gen)
        if numeral_anchor_every is not None:
            words = self.Qformer.bert.embeddings.word_embeddings.weight
            ids = self.tokenizer.convert_tokens_to_ids([str(n) for n in range(101)])
            words[ids] = init_priors.smooth_numeral_embeddings(
                len(ids), words.shape[1], weight_std(words.shape[1]), int(numeral_anchor_every), gen)
        normal_(self.visual_encoder.cls_token, 0.02)
        normal_(self.query_tokens, query_std)
        if lm_head_std is not None:
            normal_(self.t5_model.lm_head.weight, lm_head_std)

    @staticmethod
    def _init_tower(tower: nn.Module, std: float, normal_) -> None:
        for module in tower.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.Embedding)):
                normal_(module.weight, std)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()

    @classmethod
    def from_config(cls, cfg: Union[DictConfig, Mapping]) -> "RegionVLMT5":
        """Build from a ``model:`` config; load weights when ``load_pretrained`` is true."""
        cfg = OmegaConf.create(cfg) if not isinstance(cfg, DictConfig) else cfg
        kwargs = dict(
            image_size=cfg.get("image_size", 364),
            vit=_section(cfg, "vit"),
            qformer=_section(cfg, "qformer"),
            t5=_section(cfg, "t5"),
            num_query_token=cfg.get("num_query_token", 32),
            max_txt_len=cfg.get("max_txt_len", 32),
            max_output_txt_len=cfg.get("max_output_txt_len", 32),
            num_points=cfg.get("num_points", 10),
            freeze_vit=cfg.get("freeze_vit", True),
            freeze_t5=cfg.get("freeze_t5", True),
            init=_section(cfg, "init"),
            qformer_tokenizer=cfg.get("qformer_tokenizer", None),
            t5_tokenizer=cfg.get("t5_tokenizer", None),
            apply_lemmatizer=cfg.get("apply_lemmatizer", False),
        )
        weights = cfg.get("weights", None)
        paths = OmegaConf.to_container(weights, resolve=True) if weights is not None else {}
        if cfg.get("load_pretrained", False):
            with torch.device("meta"):
                model = cls(**kwargs)
            model.load_weights(paths)
        else:
            model = cls(**kwargs)
        checkpoint = cfg.get("checkpoint", None)
        if checkpoint:
            model.load_checkpoint(checkpoint)
        model.use_grad_checkpoint(bool(cfg.get("use_grad_checkpoint", False)))
        return model

    def use_grad_checkpoint(self, enabled: bool) -> None:
        self.visual_encoder.use_grad_checkpoint = enabled
        self.Qformer.bert.encoder.gradient_checkpointing = enabled

    def load_weights(self, paths: Mapping[str, Optional[str]]) -> weight_io.LoadReport:
        """Assemble all weights from the official partial files (see ``models/weights.py``)."""
        expected = self.state_dict()
        info = {"vit_depth": len(self.visual_encoder.blocks),
                "qformer_vocab": self.Qformer.config.vocab_size,
                "qformer_layers": self.Qformer.config.num_hidden_layers}
        merged, report = weight_io.gather_weights(expected, paths, info)
        merged["Qformer.bert.embeddings.position_ids"] = torch.arange(
            expected["Qformer.bert.embeddings.position_ids"].shape[1]).unsqueeze(0)
        shared = merged["t5_model.shared.weight"]
        merged["t5_model.encoder.embed_tokens.weight"] = shared
        merged["t5_model.decoder.embed_tokens.weight"] = shared
        self.load_state_dict(merged, strict=True, assign=True)
        self.t5_model.encoder.embed_tokens = self.t5_model.shared
        self.t5_model.decoder.embed_tokens = self.t5_model.shared
        self._freeze()
        logger.info("%s", report)
        self.load_report = report
        return report

    def load_checkpoint(self, path: str) -> List[str]:
        """Load a (partial) LAVIS-format checkpoint: the RegionVLM release or this project's
        training checkpoints. Unknown keys or wrong shapes raise; returns the loaded keys."""
        p = weight_io.require_file(path, "checkpoint", "model.checkpoint", weight_io.PUBLISHED["regionvlm"])
        state = weight_io.read_state_dict(p)
        loaded = weight_io.load_partial(self, state, f"checkpoint ({p})")
        logger.info("loaded %s from %s", weight_io.iter_groups(loaded), p)
        return loaded

    def trainable_state_dict(self) -> Dict[str, torch.Tensor]:
        """Only what training changes (frozen towers are never written to checkpoints)."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in names}

    # ------------------------------------------------------------- data path
    def _autocast(self):
        return self.maybe_autocast(torch.bfloat16) if self.device.type == "cuda" else nullcontext()

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> image features (B, tokens, width) after ``ln_vision``."""
        if image.ndim != 4 or image.shape[1] != 3:
            raise InputError(f"image must be a (B, 3, H, W) tensor, got shape {tuple(image.shape)}.")
        with self._autocast():
            embeds = self.ln_vision(self.visual_encoder(image.to(self.device)))
        return embeds.float()

    def tokenize_region_text(self, texts: Sequence[str]) -> Dict[str, torch.Tensor]:
        """Q-Former tokens of region texts, right-truncated to ``max_txt_len`` (official 32)."""
        return self.tokenizer(list(texts), padding="longest", truncation=True,
                              max_length=self.max_txt_len, return_tensors="pt").to(self.device)

    def region_queries(self, image_embeds: torch.Tensor,
                       region_texts: Optional[Sequence[str]] = None) -> torch.Tensor:
        """Projected query outputs (B, num_queries, d_model) for region texts.

        ``region_texts=None`` runs the queries alone (the VQA path); ``""`` is the official
        global prompt ([CLS] [SEP]). ``image_embeds`` with batch 1 is shared by all texts."""
        if region_texts is None:
            with self._autocast():
                out = self.Qformer(self.query_tokens, image_embeds)
                return self.t5_proj(out)
        tokens = self.tokenize_region_text(region_texts)
        if image_embeds.shape[0] not in (1, tokens.input_ids.shape[0]):
            raise InputError(f"{image_embeds.shape[0]} images for {tokens.input_ids.shape[0]} region texts.")
        with self._autocast():
            out = self.Qformer(self.query_tokens, image_embeds, tokens.input_ids, tokens.attention_mask)
            return self.t5_proj(out)

    def embed_segments(self, batch: Sequence[Sequence[Segment]], add_eos: bool = True,
                       ) -> Tuple[torch.Tensor, torch.Tensor]:
        """T5 encoder input from interleaved text and soft tokens, one list per sample.

        Text pieces are tokenized without special tokens; ``</s>`` closes each sample. This
        is the one place where multi-region prompts (VCR ``Let [1] be <soft> ...``, dialogue)
        and the plain ``[soft ; prompt]`` layout are built. Right-padded; returns embeds and mask."""
        embed = self.t5_model.get_input_embeddings()
        rows: List[torch.Tensor] = []
        for segments in batch:
            pieces = []
            for seg in segments:
                if isinstance(seg, str):
                    ids = self.t5_tokenizer(seg, add_special_tokens=False).input_ids
                    if ids:
                        pieces.append(embed(torch.tensor(ids, device=self.device)))
                else:
                    if seg.ndim != 2 or seg.shape[-1] != embed.embedding_dim:
                        raise InputError(f"soft tokens must be (n, {embed.embedding_dim}), got {tuple(seg.shape)}.")
                    pieces.append(seg)
            if add_eos:
                pieces.append(embed(torch.tensor([self.t5_tokenizer.eos_token_id], device=self.device)))
            if not pieces:
                raise InputError("an empty T5 input (no text, no soft tokens).")
            dtype = pieces[0].dtype
            rows.append(torch.cat([p.to(dtype) for p in pieces]))
        lengths = [r.shape[0] for r in rows]
        out = rows[0].new_zeros(len(rows), max(lengths), rows[0].shape[-1])
        mask = torch.zeros(len(rows), max(lengths), dtype=torch.long, device=self.device)
        for i, r in enumerate(rows):
            out[i, : r.shape[0]] = r
            mask[i, : r.shape[0]] = 1
        return out, mask

    def t5_inputs(self, queries: torch.Tensor, prompts: Optional[Sequence[str]] = None,
                  truncate: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
        """``[soft tokens ; T5 tokens of the prompt]`` (prompt default empty: just ``</s>``)."""
        prompts = [""] * queries.shape[0] if prompts is None else list(prompts)
        tok = self.t5_tokenizer(prompts, padding="longest", truncation=truncate,
                                max_length=self.max_txt_len if truncate else None,
                                return_tensors="pt").to(self.device)
        text = self.t5_model.get_input_embeddings()(tok.input_ids)
        embeds = torch.cat([queries.to(text.dtype), text], dim=1)
        mask = torch.cat([torch.ones(queries.shape[:2], dtype=torch.long, device=self.device),
                          tok.attention_mask], dim=1)
        return embeds, mask

    def encode_t5(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Run the T5 encoder once; its output can be reused for many targets."""
        with self._autocast():
            return self.t5_model.encoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                         return_dict=True).last_hidden_state

    def tokenize_targets(self, texts: Sequence[str]) -> Dict[str, torch.Tensor]:
        return self.t5_tokenizer(list(texts), padding="longest", truncation=True,
                                 max_length=self.max_output_txt_len, return_tensors="pt").to(self.device)

    def token_nll(self, encoder_hidden: torch.Tensor, encoder_mask: torch.Tensor,
                  targets: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-token NLL (B, L) of the targets and their validity mask (T5 tokens incl. ``</s>``).

        The vocabulary projection runs on real target tokens only, never on padding: with
        mixed-length targets (region phrases next to long captions) that halves the largest
        tensor of a training step. Same numbers as Hugging Face's ``labels=`` loss (tested)."""
        if any(not isinstance(t, str) for t in targets):
            raise InputError("targets must be strings.")
        tok = self.tokenize_targets(targets)
        labels = tok.input_ids.masked_fill(tok.input_ids == self.t5_tokenizer.pad_token_id, -100)
        valid = labels != -100
        t5 = self.t5_model
        with self._autocast():
            hidden = t5.decoder(input_ids=t5._shift_right(labels), attention_mask=tok.attention_mask,
                                encoder_hidden_states=encoder_hidden, encoder_attention_mask=encoder_mask,
                                return_dict=True).last_hidden_state
            if _scales_decoder_outputs(t5.config):
                hidden = hidden * (t5.config.d_model ** -0.5)
            logits = t5.lm_head(hidden[valid])
        nll = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
        nll[valid] = F.cross_entropy(logits.float(), labels[valid], reduction="none")
        return nll, valid

    def target_nll(self, encoder_hidden: torch.Tensor, encoder_mask: torch.Tensor,
                   targets: Sequence[str]) -> torch.Tensor:
        """Mean token NLL of each target given its encoder output (B,)."""
        nll, valid = self.token_nll(encoder_hidden, encoder_mask, targets)
        return nll.sum(1) / valid.sum(1).clamp(min=1)

    # ------------------------------------------------------------ LAVIS API
    def _image_embeds_for(self, samples: Mapping) -> torch.Tensor:
        embeds = self.encode_image(samples["image"])
        index = samples.get("image_index")
        return embeds if index is None else embeds[torch.as_tensor(index, device=embeds.device)]

    def forward(self, samples: Mapping, reduction: str = "mean") -> Dict[str, torch.Tensor]:
        """Captioning loss. ``samples``: ``image`` (B or fewer images with ``image_index``),
        ``text_input`` (region texts; "" = global), ``text_output`` (targets), optional
        ``prompt`` (T5 prompt, default empty). ``reduction='none'`` gives per-sample mean NLL."""
        for key in ("image", "text_input", "text_output"):
            if key not in samples:
                raise InputError(f"samples needs '{key}' (have {sorted(samples)}).")
        if reduction not in ("mean", "none"):
            raise InputError(f"reduction must be 'mean' or 'none', got '{reduction}'.")
        if len(samples["text_input"]) != len(samples["text_output"]):
            raise InputError("text_input and text_output must have the same length.")
        queries = self.region_queries(self._image_embeds_for(samples), samples["text_input"])
        embeds, mask = self.t5_inputs(queries, samples.get("prompt"))
        nll, valid = self.token_nll(self.encode_t5(embeds, mask), mask, samples["text_output"])
        if reduction == "none":
            per_sample = nll.sum(1) / valid.sum(1).clamp(min=1)
            return {"loss": per_sample}
        return {"loss": nll.sum() / valid.sum().clamp(min=1)}  # token mean, as Hugging Face's T5

    @torch.no_grad()
    def score(self, image: torch.Tensor, region_texts: Sequence[str], targets: Sequence[str],
              prompts: Optional[Sequence[str]] = None) -> torch.Tensor:
        """Mean token NLL of ``targets[i]`` given region ``region_texts[i]`` of one image,
        the image encoded once. Equals ``forward(..., reduction='none')``."""
        if image.ndim == 3:
            image = image.unsqueeze(0)
        if image.shape[0] != 1:
            raise InputError("score() takes one image; loop over images (each is encoded once).")
        if len(region_texts) != len(targets):
            raise InputError(f"{len(region_texts)} region texts for {len(targets)} targets.")
        queries = self.region_queries(self.encode_image(image), region_texts)
        embeds, mask = self.t5_inputs(queries, prompts)
        return self.target_nll(self.encode_t5(embeds, mask), mask, targets)

    def _generate(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, **gen) -> List[str]:
        with self._autocast():
            out = self.t5_model.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **gen)
        return self.t5_tokenizer.batch_decode(out, skip_special_tokens=True)

    @staticmethod
    def generation_kwargs(use_nucleus_sampling: bool = False, num_beams: int = 5, max_length: int = 30,
                          min_length: int = 1, top_p: float = 0.9, repetition_penalty: float = 1.0,
                          length_penalty: float = 1.0, num_captions: int = 1,
                          temperature: float = 1.0) -> Dict:
        if num_beams < 1 or max_length < 1:
            raise InputError("num_beams and max_length must be >= 1.")
        kwargs = dict(do_sample=use_nucleus_sampling, num_beams=num_beams, max_new_tokens=max_length,
                      min_length=min_length, repetition_penalty=repetition_penalty,
                      length_penalty=length_penalty, num_return_sequences=num_captions)
        if use_nucleus_sampling:  # only meaningful (and only accepted quietly) when sampling
            if not (0 < float(top_p) <= 1 and float(temperature) > 0):
                raise InputError(f"sampling needs 0 < top_p <= 1 and temperature > 0, got {top_p}, {temperature}.")
            kwargs.update(top_p=top_p, temperature=temperature)
        return kwargs

    @torch.no_grad()
    def generate(self, samples: Mapping, use_nucleus_sampling: bool = False, num_beams: int = 5,
                 max_length: int = 30, min_length: int = 1, top_p: float = 0.9,
                 repetition_penalty: float = 1.0, length_penalty: float = 1.0, num_captions: int = 1,
                 temperature: float = 1.0) -> List[str]:
        """Caption the regions in ``samples['text_input']`` (default: the whole image)."""
        image = samples["image"]
        texts = samples.get("text_input") or [""] * image.shape[0]
        queries = self.region_queries(self._image_embeds_for(samples), texts)
        embeds, mask = self.t5_inputs(queries, samples.get("prompt"))
        return self._generate(embeds, mask, **self.generation_kwargs(
            use_nucleus_sampling, num_beams, max_length, min_length, top_p, repetition_penalty,
            length_penalty, num_captions, temperature))

    @torch.no_grad()
    def predict_answers(self, samples: Mapping, num_beams: int = 5, inference_method: str = "generate",
                        max_len: int = 10, min_len: int = 1, num_ans_candidates: int = 128,
                        answer_list: Optional[Sequence[str]] = None, prompt: str = "",
                        length_penalty: float = -1, **kwargs) -> List[str]:
        """Zero-shot VQA as the official code: queries only (no region text), T5 prompt
        ``prompt.format(question)`` (untruncated), beam search."""
        if inference_method != "generate":
            raise ConfigError(f"only inference_method='generate' is supported, got '{inference_method}'.")
        questions = samples["text_input"]
        questions = [questions] if isinstance(questions, str) else list(questions)
        texts = [prompt.format(q) for q in questions] if prompt else questions
        queries = self.region_queries(self._image_embeds_for(samples), None)
        embeds, mask = self.t5_inputs(queries, texts, truncate=False)
        answers = self._generate(embeds, mask, do_sample=False, num_beams=num_beams,
                                 max_new_tokens=max_len, min_length=min_len, length_penalty=length_penalty)
        if self.apply_lemmatizer:
            from regionvlm.tasks.vqa_lemmatizer import lemmatize_answers

            answers = lemmatize_answers(answers)
        return answers


def _scales_decoder_outputs(config) -> bool:
    """T5 rescales decoder outputs by d_model^-0.5 before a *tied* lm_head (transformers 5
    names the switch ``scale_decoder_outputs``; 4.x derives it from ``tie_word_embeddings``)."""
    flag = getattr(config, "scale_decoder_outputs", None)
    return bool(config.tie_word_embeddings if flag is None else flag)


def _section(cfg: DictConfig, key: str) -> Dict:
    value = cfg.get(key, None)
    return OmegaConf.to_container(value, resolve=True) if value is not None else {}


def _on_meta(module: nn.Module) -> bool:
    p = next(module.parameters(), None)
    return p is not None and p.is_meta
