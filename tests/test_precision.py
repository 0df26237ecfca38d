"""Precision policies: each tower's weight dtype and the autocast of each step, under every
policy, checked on CPU through the same policy object the GPU uses; the GradScaler exactly
under ``official`` training."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from regionvlm.common.errors import ConfigError
from regionvlm.models import place_model
from regionvlm.models.precision import PrecisionPolicy, resolve
from regionvlm.models.regionvlm_t5 import RegionVLMT5

REGION = "[10 10] [12 15] [20 20] [15 11] [11 19] [18 14] [13 13] [16 17] [19 12] [14 18]"
F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16


@pytest.fixture(scope="module")
def frozen_tiny():
    """The tiny architecture with the paper's freezing (ViT and T5 frozen)."""
    cfg = OmegaConf.load(RegionVLMT5.default_config_path("tiny")).model
    cfg = OmegaConf.merge(cfg, {"freeze_vit": True, "freeze_t5": True, "precision": "auto"})
    torch.manual_seed(0)
    return RegionVLMT5.from_config(cfg)


def test_auto_is_official_on_gpu_and_fp32_on_cpu():
    assert resolve("auto", "cuda") == "official" and resolve("auto", "cpu") == "fp32"
    assert PrecisionPolicy.create("bf16", "cpu").name == "bf16"
    with pytest.raises(ConfigError, match="precision must be one of"):
        PrecisionPolicy.create("fp8", "cpu")


# (policy, training) -> expected (ViT weights, T5 weights) of frozen towers; the Q-Former trains: fp32
WEIGHTS = {
    ("official", False): (F16, BF16),
    ("official", True): (F32, BF16),
    ("bf16", False): (BF16, BF16),
    ("bf16", True): (BF16, BF16),
    ("fp32", False): (F32, F32),
    ("fp32", True): (F32, F32),
}
# (policy, training) -> autocast dtype seen inside (ViT, Q-Former, T5 encoder, T5 decoder); None = off
AUTOCAST = {
    ("official", False): (F16, None, BF16, BF16),
    ("official", True): (F16, F16, BF16, BF16),
    ("bf16", False): (BF16, BF16, BF16, BF16),
    ("bf16", True): (BF16, BF16, BF16, BF16),
    ("fp32", False): (None, None, None, None),
    ("fp32", True): (None, None, None, None),
}


def _record_autocast(model):
    seen = {}

    def hook(name):
        def record(module, args):
            seen[name] = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None

        return record

    handles = [
        getattr_path(model, path).register_forward_pre_hook(hook(name))
        for name, path in (
            ("vit", "visual_encoder"),
            ("qformer", "Qformer"),
            ("t5_encoder", "t5_model.encoder"),
            ("t5_decoder", "t5_model.decoder"),
        )
    ]
    return seen, handles


def getattr_path(obj, path):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("policy", ["official", "bf16", "fp32"])
@pytest.mark.parametrize("training", [False, True])
def test_tower_dtypes_and_step_autocast(frozen_tiny, policy, training):
    model = place_model(copy.deepcopy(frozen_tiny), is_eval=not training, device="cpu", precision=policy)
    vit, t5 = WEIGHTS[(policy, training)]
    assert model.visual_encoder.blocks[0].attn.qkv.weight.dtype == vit
    assert model.t5_model.lm_head.weight.dtype == t5 and model.t5_model.shared.weight.dtype == t5
    assert all(p.dtype == F32 for p in model.Qformer.parameters())
    assert model.query_tokens.dtype == F32 and model.t5_proj.weight.dtype == F32
    seen, handles = _record_autocast(model)
    images = torch.randn(2, 3, 64, 64)
    samples = {"image": images, "text_input": [REGION, ""], "text_output": ["a red circle", "two shapes"]}
    with model.precision.train_autocast() if training else torch.inference_mode():
        loss = model(samples)["loss"]
    for handle in handles:
        handle.remove()
    assert torch.isfinite(loss.float())
    expected = dict(zip(("vit", "qformer", "t5_encoder", "t5_decoder"), AUTOCAST[(policy, training)]))
    assert seen == expected


def test_official_training_step_outer_autocast_is_fp16():
    policy = PrecisionPolicy.create("official", "cpu")
    with policy.train_autocast():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == F16
    assert policy.uses_grad_scaler and isinstance(policy.grad_scaler(), torch.amp.GradScaler)
    for name in ("bf16", "fp32"):
        assert PrecisionPolicy.create(name, "cpu").grad_scaler() is None


def test_trainable_towers_keep_fp32_master_weights():
    """A tower that trains (the tiny preset trains everything) never gets reduced-precision weights."""
    cfg = OmegaConf.load(RegionVLMT5.default_config_path("tiny")).model
    model = place_model(RegionVLMT5.from_config(cfg), is_eval=False, device="cpu", precision="official")
    assert all(p.dtype == F32 for p in model.parameters())


def test_official_eval_matches_fp32_closely(frozen_tiny):
    """The official numerics change scores only at the reduced-precision level."""
    images = torch.randn(1, 3, 64, 64)
    scores = {}
    for policy in ("fp32", "official"):
        model = place_model(copy.deepcopy(frozen_tiny), is_eval=True, device="cpu", precision=policy)
        scores[policy] = model.score(images, [REGION, ""], ["a red circle", "two shapes"])
    assert torch.allclose(scores["fp32"], scores["official"].float(), rtol=0.05)
