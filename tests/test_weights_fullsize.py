"""The paper's model loaded at its real size from stand-ins of the released files.

Slow (minutes) and big: ~17 GB of files and ~17 GB of RAM for the fp32 load. Run with

    python -m pytest -q -m fullsize tests/test_weights_fullsize.py

Set ``REGIONVLM_FULLSIZE_WEIGHTS`` to a folder written by
``python benchmarks/make_fullsize_weights.py --out DIR`` to reuse it; otherwise the files are
written to a temporary folder first (about 2.5 minutes here).
"""

from __future__ import annotations

import gc
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors import safe_open
from weight_generator import gen

from regionvlm.models import weights as W
from regionvlm.models.regionvlm_t5 import RegionVLMT5

pytestmark = [pytest.mark.slow, pytest.mark.fullsize]
ROOT = Path(__file__).resolve().parents[1]


def _mem_available() -> int:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))


def _need_memory(nbytes: int) -> None:
    if _mem_available() < nbytes:
        pytest.skip(f"needs {nbytes / 2**30:.0f} GiB of free memory, {_mem_available() / 2**30:.1f} GiB available")


@pytest.fixture(scope="module")
def fullsize(tmp_path_factory) -> Path:
    given = os.environ.get("REGIONVLM_FULLSIZE_WEIGHTS")
    if given:
        yield Path(given)
        return
    out = tmp_path_factory.mktemp("fullsize")
    if shutil.disk_usage(out).free < 20 * 10**9:
        pytest.skip("needs 20 GB of free disk for the stand-in files")
    gen.write_all(out)
    yield out
    shutil.rmtree(out, ignore_errors=True)


def t5_file_tensor(folder: Path, key: str) -> torch.Tensor:
    index = json.loads((folder / "flan-t5-xl" / "model.safetensors.index.json").read_text())
    with safe_open(str(folder / "flan-t5-xl" / index["weight_map"][key]), "pt") as f:
        return f.get_tensor(key)


def torch_file_tensor(path: Path, key: str) -> torch.Tensor:
    obj = torch.load(path, weights_only=True, mmap=W.sniff_format(path) == "torch-zip")
    return (obj.get("model", obj))[key].clone()


def test_flant5xl_loads_at_full_size(fullsize):
    from regionvlm import load_model_and_preprocess

    _need_memory(18 * 2**30)
    paths = gen.release_paths(fullsize, "flant5xl")
    model, _vis, _txt = load_model_and_preprocess("regionvlm_t5", "flant5xl", is_eval=True, weights=paths)
    tensors = list(model.parameters()) + list(model.buffers())
    assert not any(t.is_meta for t in tensors)
    assert sum(p.numel() for p in model.parameters()) == 4_023_505_536
    assert W.group_dtypes(model) == {g: ["float32"] for g in W.GROUPS}
    report = model.load_report
    assert report.sources["vision encoder"] == ["eva_vit"] and report.sources["T5"] == ["t5"]
    assert all(
        report.sources[g] == ["regionvlm"]
        for g in ("Q-Former", "Q-Former text path", "query_tokens", "ln_vision", "t5_proj")
    )
    assert sum(k.startswith("blocks.39.") for k in report.ignored["eva_vit"]) == 13  # the 40th block
    state = model.state_dict()
    assert state["visual_encoder.pos_embed"].shape == (1, 677, 1408)  # 224 px table interpolated to 364 px
    eva = fullsize / "eva_vit_g.pth"
    for key in ("blocks.38.mlp.fc2.weight", "blocks.0.attn.q_bias", "patch_embed.proj.weight"):
        assert torch.equal(state["visual_encoder." + key], torch_file_tensor(eva, key).float()), key
    for key in (
        "shared.weight",
        "decoder.block.17.layer.2.DenseReluDense.wi_0.weight",
        "lm_head.weight",
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
    ):
        assert torch.equal(state["t5_model." + key], t5_file_tensor(fullsize, key)), key
    for key in (
        "Qformer.bert.embeddings.word_embeddings.weight",
        "query_tokens",
        "Qformer.bert.encoder.layer.10.crossattention.self.key.weight",
    ):
        assert torch.equal(state[key], torch_file_tensor(fullsize / "ckpoint_RegionVLM.pth", key)), key
    assert model.t5_model.encoder.embed_tokens.weight is model.t5_model.shared.weight
    assert torch.equal(state["Qformer.bert.embeddings.position_ids"][0], torch.arange(512))
    del model, state, tensors
    gc.collect()


def test_pretrain_files_load_with_bf16_towers(fullsize):
    """The training start (bert + BLIP-2 files) at full size, ViT and T5 read straight into bf16."""
    _need_memory(10 * 2**30)
    cfg = RegionVLMT5.check_config(OmegaConf.load(RegionVLMT5.default_config_path("pretrain_flant5xl")).model)
    with torch.device("meta"):
        model = RegionVLMT5(**{k: v for k, v in cfg.items() if k in RegionVLMT5.constructor_keys()})
    paths = gen.release_paths(fullsize, "pretrain_flant5xl")
    report = model.load_weights(paths, dtypes={"vision encoder": "bf16", "T5": "bf16"})
    assert not any(p.is_meta for p in model.parameters())
    dtypes = W.group_dtypes(model)
    assert dtypes["vision encoder"] == ["bfloat16"] and dtypes["T5"] == ["bfloat16"]
    assert dtypes["Q-Former"] == ["float32"] and dtypes["Q-Former text path"] == ["float32"]
    assert W.state_bytes(model) < 8.5e9
    assert report.sources["Q-Former text path"] == ["bert"] and report.sources["Q-Former"] == ["blip2"]
    bert = fullsize / "bert-base-uncased" / "pytorch_model.bin"
    words = model.Qformer.bert.embeddings.word_embeddings.weight
    assert words.shape == (30523, 768)
    assert torch.equal(words[:30522], torch_file_tensor(bert, "bert.embeddings.word_embeddings.weight"))
    key = "decoder.block.23.layer.2.DenseReluDense.wo.weight"
    assert torch.equal(model.state_dict()["t5_model." + key], t5_file_tensor(fullsize, key).to(torch.bfloat16))
    key = "Qformer.bert.encoder.layer.11.output_query.dense.weight"
    assert torch.equal(model.state_dict()[key], torch_file_tensor(fullsize / "blip2_pretrained_flant5xl.pth", key))
