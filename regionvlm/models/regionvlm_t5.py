"""RegionVLM: BLIP-2 (EVA ViT-g + Q-Former + FlanT5) whose Q-Former reads the region
as text coordinates (docs/method.md).

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
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from regionvlm.common.checkpoints import split_weights
from regionvlm.common.errors import CheckpointError, ConfigError, InputError
from regionvlm.common.registry import registry
from regionvlm.common.settings import Settings, setting
from regionvlm.models import init_priors, tokenizers
from regionvlm.models import precision as precision_policy
from regionvlm.models import weights as weight_io
from regionvlm.models.base_model import BaseModel
from regionvlm.models.eva_vit import EvaViT, VisionConfig
from regionvlm.models.generation import GenerationSettings
from regionvlm.models.qformer import QFormer, QFormerConfig
from regionvlm.processors.text_processors import check_text
from regionvlm.region import DEFAULT_NUM_POINTS

logger = logging.getLogger(__name__)

Segment = Union[str, torch.Tensor]


@dataclass(frozen=True)
class T5Settings(Settings):
    """The ``model.t5`` section (Flan-T5-XL sizes by default)."""

    vocab_size: int = setting(32128, min=1)
    d_model: int = setting(2048, min=1)
    d_kv: int = setting(64, min=1)
    d_ff: int = setting(5120, min=1)
    num_layers: int = setting(24, min=1)
    num_decoder_layers: int = setting(24, min=1)
    num_heads: int = setting(32, min=1)
    relative_attention_num_buckets: int = setting(32, min=1)
    relative_attention_max_distance: int = setting(128, min=1)
    dropout_rate: float = setting(0.1, min=0.0, max=1.0)


@dataclass(frozen=True)
class InitSettings(Settings):
    """The ``model.init`` section: random initialization (see :meth:`RegionVLMT5.init_weights`)."""

    scheme: str = setting("blip2", choices=("blip2", "from_scratch"))
    vit_pos_embed_std: float = setting(0.02, min=0.0)
    query_std: float = setting(0.02, min=0.0)
    lm_head_std: Optional[float] = setting(None, min=0.0)
    seed: int = setting(0, min=0)
    vit_pos_embed_layout: str = setting("random", choices=("random", "factorized"))
    numeral_anchor_every: Optional[int] = setting(None, min=1)


@dataclass(frozen=True)
class WeightPaths(Settings):
    """The ``model.weights`` section: the released files the weights are assembled from."""

    eva_vit: Optional[str] = None
    bert: Optional[str] = None
    t5: Optional[str] = None
    blip2: Optional[str] = None
    regionvlm: Optional[str] = None


def _build_t5(cfg: T5Settings):
    """FlanT5 from ``transformers`` with BLIP-2's exact-GELU override."""
    from transformers import T5Config, T5ForConditionalGeneration

    t5_cfg = T5Config(
        vocab_size=cfg.vocab_size,
        d_model=cfg.d_model,
        d_kv=cfg.d_kv,
        d_ff=cfg.d_ff,
        num_layers=cfg.num_layers,
        num_decoder_layers=cfg.num_decoder_layers,
        num_heads=cfg.num_heads,
        relative_attention_num_buckets=cfg.relative_attention_num_buckets,
        relative_attention_max_distance=cfg.relative_attention_max_distance,
        dropout_rate=cfg.dropout_rate,
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

    CONFIG_SECTIONS = {
        "vit": VisionConfig,
        "qformer": QFormerConfig,
        "t5": T5Settings,
        "init": InitSettings,
        "weights": WeightPaths,
    }
    PRETRAINED_MODEL_CONFIG_DICT = {
        "flant5xl": "configs/models/regionvlm_t5/flant5xl.yaml",
        "pretrain_flant5xl": "configs/models/regionvlm_t5/pretrain_flant5xl.yaml",
        "tiny": "configs/models/regionvlm_t5/tiny.yaml",
    }
    DEFAULT_MODEL_TYPE = "flant5xl"
    RANGES = {
        **{k: {"min": 1} for k in ("image_size", "num_query_token", "max_txt_len", "max_output_txt_len", "num_points")},
        "precision": {"choices": precision_policy.POLICIES},
    }

    def __init__(
        self,
        image_size: int = 364,
        vit: Optional[VisionConfig] = None,
        qformer: Optional[QFormerConfig] = None,
        t5: Optional[T5Settings] = None,
        num_query_token: int = 32,
        max_txt_len: int = 32,
        max_output_txt_len: int = 32,
        num_points: int = DEFAULT_NUM_POINTS,
        freeze_vit: bool = True,
        freeze_t5: bool = True,
        init: Optional[InitSettings] = None,
        qformer_tokenizer: Optional[str] = None,
        t5_tokenizer: Optional[str] = None,
        apply_lemmatizer: bool = False,
        precision: str = "auto",
        frozen_t5_dropout: bool = True,
    ):
        """Sizes come from the preset YAML (``vit``/``qformer``/``t5`` sections, as their typed
        settings; plain mappings are parsed); ``init`` is the random initialization
        (:meth:`init_weights`); ``precision`` names the policy applied when the model is placed on
        a device (:mod:`regionvlm.models.precision`); with ``frozen_t5_dropout`` a frozen T5 still
        runs its dropout while the model trains, as the authors' runner does (it puts the whole
        model in train mode). Values are checked by :meth:`check_config` (``from_config``)."""
        super().__init__()
        vit_cfg = _typed(VisionConfig, vit, "model.vit")
        if image_size % vit_cfg.patch_size:
            raise ConfigError(
                f"`model.image_size` ({image_size}) must be a multiple of `model.vit.patch_size` "
                f"({vit_cfg.patch_size})."
            )
        init_cfg = _typed(InitSettings, init, "model.init")
        self.visual_encoder = EvaViT(img_size=image_size, **vit_cfg.as_dict())
        width = self.visual_encoder.num_features
        self.ln_vision = nn.LayerNorm(width)

        qcfg = _typed(QFormerConfig, qformer, "model.qformer").replace(encoder_width=width)
        self.Qformer = QFormer(qcfg)
        self.query_tokens = nn.Parameter(torch.zeros(1, num_query_token, qcfg.hidden_size))
        with torch.random.fork_rng(devices=[]):  # Hugging Face's T5 init draws from the global RNG
            torch.manual_seed(init_cfg.seed)
            self.t5_model = _build_t5(_typed(T5Settings, t5, "model.t5"))
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
        # Where the weights came from: random until released files or a checkpoint provide them.
        self.load_report: Optional[weight_io.LoadReport] = None
        self._provided: set = set()  # keys some file provided
        self.max_output_txt_len = max_output_txt_len
        self.num_points = num_points
        self.freeze_vit = freeze_vit
        self.freeze_t5 = freeze_t5
        self.apply_lemmatizer = apply_lemmatizer
        self.precision_name = precision
        self.precision = precision_policy.PrecisionPolicy()  # fp32 until placed (see set_precision)
        self.frozen_t5_dropout = frozen_t5_dropout
        if not _on_meta(self):
            self.init_weights(init_cfg)
        self._freeze()

    # ------------------------------------------------------------------ setup
    def _freeze(self) -> None:
        for module, frozen in ((self.visual_encoder, self.freeze_vit), (self.t5_model, self.freeze_t5)):
            for p in module.parameters():
                p.requires_grad_(not frozen)

    def train(self, mode: bool = True):
        """A frozen ViT stays in eval mode; a frozen T5 too unless ``frozen_t5_dropout`` (the
        authors' runner leaves Flan-T5's dropout active during training)."""
        super().train(mode)
        if self.freeze_vit:
            self.visual_encoder.eval()
        if self.freeze_t5 and not self.frozen_t5_dropout:
            self.t5_model.eval()
        return self

    def set_precision(self, policy: precision_policy.PrecisionPolicy, training: bool) -> None:
        """Store each frozen tower's weights in the policy's dtype and use its autocast."""
        self.precision = policy
        for tower, module, frozen in (
            ("vit", self.visual_encoder, self.freeze_vit),
            ("t5", self.t5_model, self.freeze_t5),
        ):
            module.to(policy.weight_dtype(tower, frozen, training))

    @torch.no_grad()
    def init_weights(self, init: Optional[InitSettings] = None) -> None:
        """Random initialization (``init``: the ``model.init`` settings, checked when parsed).

        ``blip2``: the official scheme (truncated-normal 0.02 in the ViT, BERT's N(0, 0.02)
        in the Q-Former, Hugging Face's T5 init). ``from_scratch``: what a tiny model needs to
        learn regions from random weights (docs/tiny_training.md): N(0, 1/sqrt(width)) for ViT and
        Q-Former weights, a large ViT position table (``vit_pos_embed_std``), N(0, 0.02) query
        tokens and T5 ``lm_head``. Two priors for from-scratch training (``init_priors``):
        ``vit_pos_embed_layout: factorized`` (row + column position components) and
        ``numeral_anchor_every: N`` (Q-Former numerals 0..100 interpolate between anchors).
        """
        init = init or InitSettings()
        scheme, seed = init.scheme, init.seed
        gen = torch.Generator().manual_seed(seed)

        def normal_(t: torch.Tensor, std: float) -> None:
            t.copy_(torch.randn(t.shape, generator=gen) * std)

        def weight_std(width: int) -> float:
            return 1.0 / math.sqrt(width) if scheme == "from_scratch" else 0.02

        for tower, width in (
            (self.visual_encoder, self.visual_encoder.num_features),
            (self.Qformer, self.Qformer.config.hidden_size),
        ):
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
        normal_(self.visual_encoder.pos_embed, init.vit_pos_embed_std)
        if init.vit_pos_embed_layout == "factorized":
            grid = math.isqrt(self.visual_encoder.patch_embed.num_patches)
            self.visual_encoder.pos_embed[0, 1:] = init_priors.factorized_position_table(
                grid, self.visual_encoder.num_features, init.vit_pos_embed_std, gen
            )
        if init.numeral_anchor_every is not None:
            words = self.Qformer.bert.embeddings.word_embeddings.weight
            ids = self.tokenizer.convert_tokens_to_ids([str(n) for n in range(101)])
            words[ids] = init_priors.smooth_numeral_embeddings(
                len(ids), words.shape[1], weight_std(words.shape[1]), init.numeral_anchor_every, gen
            )
        normal_(self.visual_encoder.cls_token, 0.02)
        normal_(self.query_tokens, init.query_std)
        if init.lm_head_std is not None:
            normal_(self.t5_model.lm_head.weight, init.lm_head_std)

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
    def from_config(
        cls,
        cfg: Union[DictConfig, Mapping],
        device: Optional[Union[str, torch.device]] = None,
        is_eval: bool = True,
        precision: Optional[str] = None,
    ) -> "RegionVLMT5":
        """Build from a ``model:`` config (every key checked, see :meth:`check_config`); load the
        released files when ``load_pretrained`` is true, then ``checkpoint``.

        With a ``device`` the precision policy (``precision``, else the config's) is resolved
        for it once: released files are read straight into the dtypes it gives the frozen
        towers, and the model is placed there (in eval or train mode). Without one the model
        stays on the CPU in fp32, unplaced."""
        cfg = cls.check_config(cfg)
        kwargs = {k: v for k, v in cfg.items() if k in cls.constructor_keys()}
        policy = precision_policy.PrecisionPolicy.create(
            precision or kwargs.get("precision", "auto"), device if device is not None else "cpu"
        )
        if cfg.get("load_pretrained", False):
            with torch.device("meta"):
                model = cls(**kwargs)
            paths = _typed(WeightPaths, cfg.get("weights"), "model.weights").as_dict()
            model.load_weights(paths, dtypes=model.frozen_tower_dtypes(policy, training=not is_eval))
        else:
            model = cls(**kwargs)
        checkpoint = cfg.get("checkpoint", None)
        if checkpoint is not None:
            model.load_checkpoint(checkpoint)
        if model.random_weights:
            logger.warning("the model's weights are random: no checkpoint and no released files were loaded")
        model.use_grad_checkpoint(bool(cfg.get("use_grad_checkpoint", False)))
        return model if device is None else precision_policy.place_model(model, is_eval, device, policy.name)

    def frozen_tower_dtypes(self, policy: precision_policy.PrecisionPolicy, training: bool) -> Dict[str, torch.dtype]:
        """The weight dtypes ``policy`` gives the frozen towers, so that released files are read
        straight into them."""
        return {
            "vision encoder": policy.weight_dtype("vit", self.freeze_vit, training),
            "T5": policy.weight_dtype("t5", self.freeze_t5, training),
        }

    def use_grad_checkpoint(self, enabled: bool) -> None:
        self.visual_encoder.use_grad_checkpoint = enabled
        self.Qformer.bert.encoder.gradient_checkpointing = enabled

    def load_weights(
        self, paths: Mapping[str, Optional[str]], dtypes: Optional[Mapping[str, Union[str, torch.dtype]]] = None
    ) -> weight_io.LoadReport:
        """Assemble all weights from the official partial files (see ``models/weights.py``).

        Every file is checked before any tensor is read (a bad file leaves the model as it
        was); then each tensor is read once, straight into its final dtype: ``dtypes`` maps a
        parameter group (``weight_io.GROUPS``: "vision encoder", "T5", ...) to a dtype, fp32
        for groups not named. Build the model on the meta device first to need no more memory
        than the loaded model."""
        info = {
            "vit_depth": len(self.visual_encoder.blocks),
            "qformer_vocab": self.Qformer.config.vocab_size,
            "qformer_layers": self.Qformer.config.num_hidden_layers,
        }
        merged, report = weight_io.gather_weights(self.state_dict(), paths, info, dtypes=dtypes)
        self.load_state_dict(merged, strict=True, assign=True)
        del merged
        self.t5_model.encoder.embed_tokens = self.t5_model.shared
        self.t5_model.decoder.embed_tokens = self.t5_model.shared
        self._freeze()
        logger.info("%s", report)
        self.load_report = report
        self._provided = set(weight_io.required_keys(self.state_dict()))
        return report

    @property
    def random_weights(self) -> bool:
        """No file provided any weight (neither the released files nor a checkpoint)."""
        return not self._provided

    def load_checkpoint(self, path: str) -> List[str]:
        """Load a (partial) LAVIS-format checkpoint: the RegionVLM release or this project's
        training checkpoints; returns the loaded keys.

        Refused, before anything is loaded: unknown keys, wrong shapes, a file without
        tensors, integer tensors where the model has floats, NaN/infinite values, and a
        checkpoint that covers only part of a model whose other parts no file provided (built
        without the released files, e.g. the tiny preset): they would stay random. On top of
        the released files a partial checkpoint is the normal case (the RegionVLM release
        holds only the trained parts); ``load_report`` then says which group came from where."""
        p = weight_io.require_file(path, "checkpoint", "model.checkpoint", weight_io.PUBLISHED["regionvlm"])
        state, _ = split_weights(weight_io.read_state_dict(p))  # a training checkpoint's state is not weights
        source = f"checkpoint '{p}'"
        expected = self.state_dict()
        weight_io.check_values(source, state, expected)
        checked = weight_io.check_compatible(source, state, expected)
        unsourced = [k for k in weight_io.required_keys(expected) if k not in checked and k not in self._provided]
        if unsourced:
            have = sorted(weight_io.iter_groups(checked))
            lacking = sorted(weight_io.iter_groups(unsourced))
            raise CheckpointError(
                f"{source} provides only {have}; {len(unsourced)} parameters of {lacking} (e.g. {unsourced[:3]}) "
                "come from no file: the model was built without the released weights (model.load_pretrained "
                "false), so they would stay random. Give a checkpoint of the whole model (a training run's "
                "checkpoint_latest of this preset), or load the released files first (model.load_pretrained: "
                "true with model.weights.*)."
            )
        self.load_state_dict(checked, strict=False)
        self._provided |= set(checked)
        self.load_report = weight_io.report_checkpoint(self.load_report, checked, expected, str(p))
        logger.info("loaded %s from %s\n%s", weight_io.iter_groups(checked), p, self.load_report)
        return sorted(checked)

    def trainable_state_dict(self) -> Dict[str, torch.Tensor]:
        """Only what training changes (frozen towers are never written to checkpoints)."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in names}

    # ------------------------------------------------------------- data path
    def _autocast(self, tower: str):
        """The precision policy's autocast for one tower's step (``vit``, ``qformer``, ``t5``)."""
        return self.precision.autocast(tower, self.training)

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> image features (B, tokens, width) after ``ln_vision``."""
        if not torch.is_tensor(image) or image.ndim != 4 or image.shape[1] != 3:
            got = tuple(image.shape) if torch.is_tensor(image) else type(image).__name__
            raise InputError(f"image must be a (B, 3, H, W) tensor, got {got}.")
        if image.shape[0] == 0:
            raise InputError("image is an empty batch (0 images).")
        if image.is_floating_point() and not bool(torch.isfinite(image).all()):
            raise InputError("image holds NaN or infinite values; check the image processor's input.")
        with self._autocast("vit"):
            embeds = self.ln_vision(self.visual_encoder(image.to(self.device)))
        return embeds.float()

    def tokenize_region_text(self, texts: Sequence[str]) -> Dict[str, torch.Tensor]:
        """Q-Former tokens of region texts, right-truncated to ``max_txt_len`` (official 32)."""
        texts = [check_text(t, "region text") for t in texts]
        return self.tokenizer(
            texts, padding="longest", truncation=True, max_length=self.max_txt_len, return_tensors="pt"
        ).to(self.device)

    def region_queries(self, image_embeds: torch.Tensor, region_texts: Optional[Sequence[str]] = None) -> torch.Tensor:
        """Projected query outputs (B, num_queries, d_model) for region texts.

        ``region_texts=None`` runs the queries alone (the VQA path); ``""`` is the official
        global prompt ([CLS] [SEP]). ``image_embeds`` with batch 1 is shared by all texts."""
        if region_texts is None:
            with self._autocast("qformer"):
                out = self.Qformer(self.query_tokens, image_embeds)
                return self.t5_proj(out)
        tokens = self.tokenize_region_text(region_texts)
        if image_embeds.shape[0] not in (1, tokens.input_ids.shape[0]):
            raise InputError(f"{image_embeds.shape[0]} images for {tokens.input_ids.shape[0]} region texts.")
        with self._autocast("qformer"):
            out = self.Qformer(self.query_tokens, image_embeds, tokens.input_ids, tokens.attention_mask)
            return self.t5_proj(out)

    def embed_segments(
        self,
        batch: Sequence[Sequence[Segment]],
        add_eos: bool = True,
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
                    ids = self.t5_tokenizer(check_text(seg, "prompt text"), add_special_tokens=False).input_ids
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
            rows.append(torch.cat([p.to(_widest(pieces)) for p in pieces]))
        lengths = [r.shape[0] for r in rows]
        out = rows[0].new_zeros(len(rows), max(lengths), rows[0].shape[-1])
        mask = torch.zeros(len(rows), max(lengths), dtype=torch.long, device=self.device)
        for i, r in enumerate(rows):
            out[i, : r.shape[0]] = r
            mask[i, : r.shape[0]] = 1
        return out, mask

    def t5_inputs(
        self, queries: torch.Tensor, prompts: Optional[Sequence[str]] = None, truncate: bool = True
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``[soft tokens ; T5 tokens of the prompt]`` (prompt default empty: just ``</s>``)."""
        prompts = [""] * queries.shape[0] if prompts is None else [check_text(p, "T5 prompt") for p in prompts]
        tok = self.t5_tokenizer(
            prompts,
            padding="longest",
            truncation=truncate,
            max_length=self.max_txt_len if truncate else None,
            return_tensors="pt",
        ).to(self.device)
        text = self.t5_model.get_input_embeddings()(tok.input_ids)
        dtype = _widest([queries, text])  # as autocast's ``cat`` promotes: fp32 soft tokens keep T5's residual in fp32
        embeds = torch.cat([queries.to(dtype), text.to(dtype)], dim=1)
        mask = torch.cat(
            [torch.ones(queries.shape[:2], dtype=torch.long, device=self.device), tok.attention_mask], dim=1
        )
        return embeds, mask

    def encode_t5(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Run the T5 encoder once; its output can be reused for many targets."""
        with self._autocast("t5"):
            return self.t5_model.encoder(
                inputs_embeds=inputs_embeds, attention_mask=attention_mask, return_dict=True
            ).last_hidden_state

    def tokenize_targets(self, texts: Sequence[str]) -> Dict[str, torch.Tensor]:
        texts = [check_text(t, "target text") for t in texts]
        return self.t5_tokenizer(
            texts, padding="longest", truncation=True, max_length=self.max_output_txt_len, return_tensors="pt"
        ).to(self.device)

    def token_nll(
        self, encoder_hidden: torch.Tensor, encoder_mask: torch.Tensor, targets: Sequence[str]
    ) -> Tuple[torch.Tensor, torch.Tensor]:
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
        with self._autocast("t5"):
            hidden = t5.decoder(
                input_ids=t5._shift_right(labels),
                attention_mask=tok.attention_mask,
                encoder_hidden_states=encoder_hidden,
                encoder_attention_mask=encoder_mask,
                return_dict=True,
            ).last_hidden_state
            if _scales_decoder_outputs(t5.config):
                hidden = hidden * (t5.config.d_model**-0.5)
            logits = t5.lm_head(hidden[valid])
        nll = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
        nll[valid] = F.cross_entropy(logits.float(), labels[valid], reduction="none")
        return nll, valid

    def target_nll(
        self, encoder_hidden: torch.Tensor, encoder_mask: torch.Tensor, targets: Sequence[str]
    ) -> torch.Tensor:
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
        _require_items(samples["text_output"], "samples['text_output']")
        queries = self.region_queries(self._image_embeds_for(samples), samples["text_input"])
        embeds, mask = self.t5_inputs(queries, samples.get("prompt"))
        nll, valid = self.token_nll(self.encode_t5(embeds, mask), mask, samples["text_output"])
        if reduction == "none":
            per_sample = nll.sum(1) / valid.sum(1).clamp(min=1)
            return {"loss": per_sample}
        return {"loss": nll.sum() / valid.sum().clamp(min=1)}  # token mean, as Hugging Face's T5

    @torch.no_grad()
    def score(
        self,
        image: torch.Tensor,
        region_texts: Sequence[str],
        targets: Sequence[str],
        prompts: Optional[Sequence[str]] = None,
    ) -> torch.Tensor:
        """Mean token NLL of ``targets[i]`` given region ``region_texts[i]`` of one image,
        the image encoded once. Equals ``forward(..., reduction='none')``."""
        if image.ndim == 3:
            image = image.unsqueeze(0)
        if image.shape[0] != 1:
            raise InputError("score() takes one image; loop over images (each is encoded once).")
        if len(region_texts) != len(targets):
            raise InputError(f"{len(region_texts)} region texts for {len(targets)} targets.")
        _require_items(targets, "targets")
        queries = self.region_queries(self.encode_image(image), region_texts)
        embeds, mask = self.t5_inputs(queries, prompts)
        return self.target_nll(self.encode_t5(embeds, mask), mask, targets)

    @torch.no_grad()
    def generate_from_embeds(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, generation: Optional[GenerationSettings] = None
    ) -> List[str]:
        """Decode T5 encoder inputs built by :meth:`t5_inputs` or :meth:`embed_segments` (the
        path VCR, the dialogue and the chat share); ``generation`` defaults to beam 5, 30 tokens."""
        generation = generation or GenerationSettings()
        with self._autocast("t5"):
            out = self.t5_model.generate(
                inputs_embeds=inputs_embeds, attention_mask=attention_mask, **generation.hf_kwargs()
            )
        return self.t5_tokenizer.batch_decode(out, skip_special_tokens=True)

    @torch.no_grad()
    def generate(
        self,
        samples: Mapping,
        use_nucleus_sampling: bool = False,
        num_beams: int = 5,
        max_length: int = 30,
        min_length: int = 1,
        top_p: float = 0.9,
        repetition_penalty: float = 1.0,
        length_penalty: float = 1.0,
        num_captions: int = 1,
        temperature: float = 1.0,
    ) -> List[str]:
        """Caption the regions in ``samples['text_input']`` (default: the whole image).

        LAVIS's signature; ``max_length`` is the number of new tokens and ``min_length``
        Hugging Face's ``min_length`` (:class:`GenerationSettings` ``max_len``/``min_len``)."""
        generation = GenerationSettings.create(
            "generate()",
            use_nucleus_sampling=use_nucleus_sampling,
            num_beams=num_beams,
            max_len=max_length,
            min_len=min_length,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            length_penalty=length_penalty,
            num_captions=num_captions,
            temperature=temperature,
        )
        image = samples["image"]
        texts = samples.get("text_input")
        texts = [""] * image.shape[0] if texts is None else _require_items(texts, "samples['text_input']")
        queries = self.region_queries(self._image_embeds_for(samples), texts)
        embeds, mask = self.t5_inputs(queries, samples.get("prompt"))
        return self.generate_from_embeds(embeds, mask, generation)

    @torch.no_grad()
    def predict_answers(
        self,
        samples: Mapping,
        num_beams: int = 5,
        inference_method: str = "generate",
        max_len: int = 10,
        min_len: int = 1,
        num_ans_candidates: Optional[int] = None,
        answer_list: Optional[Sequence[str]] = None,
        prompt: str = "",
        length_penalty: float = -1,
    ) -> List[str]:
        """Zero-shot VQA as the official code: queries only (no region text), T5 prompt
        ``prompt.format(question)`` (untruncated), beam search.

        LAVIS's signature: its VQA task always passes ``answer_list`` and
        ``num_ans_candidates``, which only its ranking inference reads; generation (the only
        inference zero-shot evaluation uses) does not, exactly as in LAVIS."""
        if inference_method != "generate":
            raise ConfigError(f"only inference_method='generate' is supported, got '{inference_method}'.")
        generation = GenerationSettings.create(
            "predict_answers()", num_beams=num_beams, max_len=max_len, min_len=min_len, length_penalty=length_penalty
        )
        questions = samples["text_input"]
        questions = [questions] if isinstance(questions, str) else _require_items(questions, "samples['text_input']")
        texts = [prompt.format(q) for q in questions] if prompt else questions
        queries = self.region_queries(self._image_embeds_for(samples), None)
        embeds, mask = self.t5_inputs(queries, texts, truncate=False)
        answers = self.generate_from_embeds(embeds, mask, generation)
        if self.apply_lemmatizer:
            from regionvlm.processors.vqa_lemmatizer import lemmatize_answers

            answers = lemmatize_answers(answers)
        return answers


def _scales_decoder_outputs(config) -> bool:
    """T5 rescales decoder outputs by d_model^-0.5 before a *tied* lm_head (transformers 5
    names the switch ``scale_decoder_outputs``; 4.x derives it from ``tie_word_embeddings``)."""
    flag = getattr(config, "scale_decoder_outputs", None)
    return bool(config.tie_word_embeddings if flag is None else flag)


def _require_items(values: Any, what: str) -> List[Any]:
    """A non-empty list of inputs (an empty one would run the model on nothing, or on a default)."""
    if isinstance(values, str) or not isinstance(values, Sequence) or len(values) == 0:
        raise InputError(f"{what} must be a non-empty list (one entry per sample), got {values!r}.")
    return list(values)


def _widest(tensors: Sequence[torch.Tensor]) -> torch.dtype:
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _on_meta(module: nn.Module) -> bool:
    p = next(module.parameters(), None)
    return p is not None and p.is_meta


def _typed(settings_cls: Any, value: Any, section: str) -> Any:
    """A section as its typed settings: as given when already typed (from ``check_config``),
    parsed when a mapping or None (a direct constructor call)."""
    return value if isinstance(value, settings_cls) else settings_cls.parse(value, section)
