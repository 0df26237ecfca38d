"""The weight files of the real release, at the tiny preset's size: every layout loads, values
land where they belong in the requested dtype, and every kind of bad file stops with a clear
error naming the file (before any tensor is read, so no half-loaded model)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from weight_generator import gen

from regionvlm.common import tensor_files
from regionvlm.common.errors import CheckpointError, ConfigError, MissingFileError
from regionvlm.models import weights as W
from regionvlm.models.regionvlm_t5 import RegionVLMT5

ROOT = Path(__file__).resolve().parents[1]


RELEASE = ("eva_vit", "t5", "regionvlm")  # preset flant5xl
PRETRAIN = ("eva_vit", "t5", "bert", "blip2")  # preset pretrain_flant5xl


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("smoke")
    gen.write_all(out, smoke=True, seed=1)
    return out


def paths_in(folder: Path, settings=RELEASE) -> dict:
    return {s: str(folder / gen.RELEASE_FILES[s]) for s in settings}


def copy_of(smoke: Path, tmp_path: Path) -> Path:
    out = tmp_path / "w"
    shutil.copytree(smoke, out)
    return out


def meta_tiny(**overrides) -> RegionVLMT5:
    cfg = OmegaConf.merge(OmegaConf.load(RegionVLMT5.default_config_path("tiny")).model, OmegaConf.create(overrides))
    cfg = RegionVLMT5.check_config(cfg)
    with torch.device("meta"):
        return RegionVLMT5(**{k: v for k, v in cfg.items() if k in RegionVLMT5.constructor_keys()})


def load(paths: dict, dtypes=None) -> RegionVLMT5:
    model = meta_tiny()
    model.load_weights(paths, dtypes=dtypes)
    return model


def file_tensor(path: Path, key: str) -> torch.Tensor:
    if path.suffix == ".safetensors":
        with safe_open(str(path), "pt") as f:
            return f.get_tensor(key)
    obj = torch.load(path, weights_only=True)
    return (obj.get("model", obj))[key]


def t5_shard_of(folder: Path, key: str) -> Path:
    index = json.loads((folder / "flan-t5-xl" / "model.safetensors.index.json").read_text())
    return folder / "flan-t5-xl" / index["weight_map"][key]


# --- the layouts load ---------------------------------------------------------------


def test_generator_writes_the_release_layout(smoke):
    t5 = smoke / "flan-t5-xl"
    index = json.loads((t5 / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert shards == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    stored = set()
    for shard in shards:
        with safe_open(str(t5 / shard), "pt") as f:  # the safetensors library reads our writer's files
            stored |= set(f.keys())
            assert f.metadata() == {"format": "pt"}
    # the index names the tied copies; the shards store shared.weight only
    assert set(index["weight_map"]) - stored == {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}
    assert index["metadata"]["total_size"] == sum(gen._nbytes(s) for s in gen.t5_spec(gen.smoke_dims()))
    eva = torch.load(smoke / "eva_vit_g.pth", weights_only=True)
    assert eva["blocks.0.attn.q_bias"].dtype == torch.float16 and "blocks.3.mlp.fc2.bias" in eva  # 3 + 1 blocks
    assert eva["pos_embed"].shape == (1, 26, 64)  # a smaller grid than the model's 8x8, as 224 vs 364 px
    ckpt = torch.load(smoke / "ckpoint_RegionVLM.pth", weights_only=True)
    assert set(ckpt) == {"model", "optimizer", "config", "scaler", "epoch"}
    assert "Qformer.bert.encoder.layer.0.output.dense.weight" in ckpt["model"]  # RegionVLM keeps the text path
    blip2 = torch.load(smoke / "blip2_pretrained_flant5xl.pth", weights_only=True)["model"]
    assert not any("word_embeddings" in k or ".intermediate." in k or k.startswith("Qformer.cls") for k in blip2)
    bert = torch.load(smoke / "bert-base-uncased" / "pytorch_model.bin", weights_only=True)
    assert "bert.embeddings.LayerNorm.gamma" in bert and "cls.seq_relationship.weight" in bert
    assert W.sniff_format(smoke / "bert-base-uncased" / "pytorch_model.bin") == "torch-legacy"
    assert json.loads((t5 / "config.json").read_text())["d_model"] == 64


def test_real_split_and_key_count_match_the_published_flan_t5_xl():
    shards = gen.t5_shards(gen.REAL)
    stored = [[s for s in shard if s[0] not in gen.T5_TIED] for shard in shards]
    header_sizes = [sum(gen._nbytes(s) for s in shard) for shard in stored]
    assert [round(b / 1e9, 2) for b in header_sizes] == [9.45, 1.95]  # the published shard sizes
    assert sum(gen._nbytes(s) for shard in shards for s in shard) == 11925413888  # total_size, copies counted
    assert shards[1][0][0] == "decoder.block.17.layer.2.DenseReluDense.wi_0.weight"


def test_release_files_assemble_the_model(smoke):
    model = load(paths_in(smoke))
    assert not any(t.is_meta for t in list(model.parameters()) + list(model.buffers()))
    report = model.load_report
    assert report.sources["vision encoder"] == ["eva_vit"] and report.sources["T5"] == ["t5"]
    assert report.sources["Q-Former text path"] == ["regionvlm"] and report.sources["query_tokens"] == ["regionvlm"]
    assert any(k.startswith("blocks.3.") for k in report.ignored["eva_vit"])  # the 40th block of the real file
    assert report.bytes_read > 0 and set(report.dtypes.values()) == {"float32"}
    state = model.state_dict()
    eva = smoke / "eva_vit_g.pth"
    assert torch.equal(
        state["visual_encoder.blocks.2.attn.qkv.weight"], file_tensor(eva, "blocks.2.attn.qkv.weight").float()
    )
    assert torch.equal(state["visual_encoder.pos_embed"][:, :1], file_tensor(eva, "pos_embed")[:, :1].float())
    for key in ("lm_head.weight", "decoder.block.1.layer.2.DenseReluDense.wo.weight", "shared.weight"):
        assert torch.equal(state["t5_model." + key], file_tensor(t5_shard_of(smoke, key), key)), key
    ckpt = smoke / "ckpoint_RegionVLM.pth"
    for key in ("Qformer.bert.embeddings.word_embeddings.weight", "t5_proj.weight", "ln_vision.bias"):
        assert torch.equal(state[key], file_tensor(ckpt, key)), key
    assert model.t5_model.encoder.embed_tokens.weight is model.t5_model.shared.weight
    assert torch.equal(state["Qformer.bert.embeddings.position_ids"][0], torch.arange(64))


def test_pretrain_files_and_the_later_file_wins(smoke):
    model = load(paths_in(smoke, PRETRAIN))
    report = model.load_report
    assert report.sources["Q-Former text path"] == ["bert"] and report.sources["Q-Former"] == ["blip2"]
    assert len(report.ignored["bert"]) > 0  # pooler, cls heads, token types, attention (from blip2)
    bert = torch.load(smoke / "bert-base-uncased" / "pytorch_model.bin", weights_only=True)
    words = model.Qformer.bert.embeddings.word_embeddings.weight
    assert words.shape[0] == 30523 and torch.equal(words[:30522], bert["bert.embeddings.word_embeddings.weight"])
    assert torch.equal(
        model.Qformer.bert.encoder.layer[1].output.LayerNorm.weight, bert["bert.encoder.layer.1.output.LayerNorm.gamma"]
    )  # old names accepted
    both = load(paths_in(smoke, PRETRAIN + ("regionvlm",)))  # RegionVLM on top of its training start
    assert both.load_report.sources["Q-Former"] == ["regionvlm"]
    assert both.load_report.overridden["Q-Former"] == ["blip2"]
    assert both.load_report.overridden["Q-Former text path"] == ["bert"]
    assert torch.equal(both.query_tokens, file_tensor(smoke / "ckpoint_RegionVLM.pth", "query_tokens"))


def test_bin_layout_of_t5_loads(tmp_path):
    gen.write_all(tmp_path, smoke=True, t5_layout="bin", only=["t5"])
    folder = tmp_path / "flan-t5-xl"
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "pytorch_model-00001-of-00002.bin",
        "pytorch_model-00002-of-00002.bin",
        "pytorch_model.bin.index.json",
    ]
    gen.write_all(tmp_path, smoke=True, only=["eva_vit", "regionvlm"])
    model = load(paths_in(tmp_path))
    shard = torch.load(folder / "pytorch_model-00001-of-00002.bin", weights_only=True)
    assert shard["encoder.embed_tokens.weight"].data_ptr() == shard["shared.weight"].data_ptr()
    assert torch.equal(model.t5_model.shared.weight, shard["shared.weight"])
    assert "encoder.embed_tokens.weight" in model.load_report.ignored["t5"]


def test_per_group_dtypes(smoke):
    model = load(paths_in(smoke), dtypes={"vision encoder": "bf16", "T5": torch.bfloat16, "Q-Former": "fp16"})
    dtypes = W.group_dtypes(model)
    assert dtypes["vision encoder"] == ["bfloat16"] and dtypes["T5"] == ["bfloat16"]
    assert dtypes["Q-Former"] == ["float16"] and dtypes["Q-Former text path"] == ["float32"]
    assert model.Qformer.bert.embeddings.position_ids.dtype == torch.int64
    key = "decoder.block.1.layer.2.DenseReluDense.wo.weight"
    assert torch.equal(
        model.state_dict()["t5_model." + key], file_tensor(t5_shard_of(smoke, key), key).to(torch.bfloat16)
    )
    assert model.load_report.dtypes["T5"] == "bfloat16"
    with pytest.raises(ConfigError, match="unknown parameter group 'vit'"):
        W.resolve_dtypes({"vit": "bf16"})
    with pytest.raises(ConfigError, match="weight dtype for 'T5'"):
        W.resolve_dtypes({"T5": "int8"})


def test_conversion_crosses_chunk_boundaries(tmp_path, monkeypatch):
    monkeypatch.setattr(tensor_files, "CHUNK_ELEMENTS", 7)
    values = torch.randn(5, 9)
    save_file({"a": values, "b": values.half()}, str(tmp_path / "x.safetensors"))
    entries = {e.name: e for e in W.file_entries(tmp_path / "x.safetensors")}
    reader = tensor_files.TensorReader(tmp_path / "x.safetensors")
    try:
        assert torch.equal(reader.read(entries["a"], torch.bfloat16), values.to(torch.bfloat16))
        assert torch.equal(reader.read(entries["b"], torch.float32), values.half().float())
    finally:
        reader.close()


# --- the file readers agree with the libraries ------------------------------------------


def test_safetensors_reader_matches_the_library(tmp_path):
    tensors = {
        "f32": torch.randn(3, 5),
        "f16": torch.randn(7).half(),
        "bf16": torch.randn(2, 2, 2).bfloat16(),
        "i64": torch.arange(6).reshape(1, 6),
        "empty": torch.zeros(0, 3),
    }
    save_file(tensors, str(tmp_path / "t.safetensors"), metadata={"format": "pt"})
    assert W.sniff_format(tmp_path / "t.safetensors") == "safetensors"
    got = W.read_state_dict(tmp_path / "t.safetensors")
    assert set(got) == set(tensors)
    for k, v in tensors.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v), k


@pytest.mark.parametrize("legacy", [False, True])
def test_torch_reader_handles_views_and_shared_storage(tmp_path, legacy):
    base = torch.randn(6, 4)
    obj = {
        "model": {"a": base, "tied": base, "rows": base[2:5], "t": base.t(), "every2": base[::2]},
        "optimizer": {"state": {0: {"exp_avg": torch.ones(3)}}, "param_groups": [{"lr": 0.1, "params": [0]}]},
        "epoch": 3,
    }
    torch.save(obj, tmp_path / "c.pth", _use_new_zipfile_serialization=not legacy)
    got = W.read_state_dict(tmp_path / "c.pth")
    assert set(got) == {"a", "tied", "rows", "t", "every2"}  # the LAVIS "model" entry, nothing else
    for k, v in obj["model"].items():
        assert torch.equal(got[k], v), k


def test_older_pytorch_without_storage_offsets_still_loads(smoke, monkeypatch):
    monkeypatch.setattr(tensor_files, "_storage_file_offset", lambda t: None)  # memory-mapped fallback
    model = load(paths_in(smoke))
    key = "blocks.2.mlp.fc1.weight"
    assert torch.equal(model.state_dict()["visual_encoder." + key], file_tensor(smoke / "eva_vit_g.pth", key).float())


# --- accepted supersets ------------------------------------------------------------------


def test_accepted_supersets_of_the_published_files(smoke, tmp_path):
    w = copy_of(smoke, tmp_path)
    eva = torch.load(w / "eva_vit_g.pth", weights_only=True)
    eva.update({"norm.weight": torch.ones(64), "head.weight": torch.zeros(10, 64)})  # EVA-CLIP's head
    torch.save(eva, w / "eva_vit_g.pth")
    ckpt = torch.load(w / "ckpoint_RegionVLM.pth", weights_only=True)
    ckpt["model"]["Qformer.cls.predictions.bias"] = torch.zeros(30523)  # a stage-1 style LM head
    torch.save(ckpt, w / "ckpoint_RegionVLM.pth")
    blip2 = torch.load(w / "blip2_pretrained_flant5xl.pth", weights_only=True)
    blip2["model"]["visual_encoder.cls_token"] = torch.full((1, 1, 64), 3.0)  # ViT keys inside BLIP-2's file
    torch.save(blip2, w / "blip2_pretrained_flant5xl.pth")
    bert_dir = w / "bert-base-uncased"  # a newer-style bert directory: safetensors, new names, no prefix
    old = torch.load(bert_dir / "pytorch_model.bin", weights_only=True)
    new = {
        k.replace("bert.", "", 1)
        .replace("LayerNorm.gamma", "LayerNorm.weight")
        .replace("LayerNorm.beta", "LayerNorm.bias"): v
        for k, v in old.items()
        if not k.startswith("cls.")
    }
    new["embeddings.position_ids"] = torch.arange(64)[None]
    save_file({k: v.contiguous() for k, v in new.items()}, str(bert_dir / "model.safetensors"))
    model = load(paths_in(w, PRETRAIN + ("regionvlm",)))
    report = model.load_report
    assert {"norm.weight", "head.weight"} <= set(report.ignored["eva_vit"])
    assert "Qformer.cls.predictions.bias" in report.ignored["regionvlm"]
    assert torch.equal(model.visual_encoder.cls_token, torch.full((1, 1, 64), 3.0))
    assert report.sources["vision encoder"] == ["eva_vit", "blip2"]
    assert str(bert_dir / "model.safetensors") in report.files["bert"]


# --- bad files ----------------------------------------------------------------------------


def expect_failure(paths: dict, error, *patterns: str):
    model = meta_tiny()
    with pytest.raises(error) as info:
        model.load_weights(paths)
    for pattern in patterns:
        assert pattern in str(info.value), (pattern, str(info.value))
    assert all(p.is_meta for p in model.parameters())  # nothing was half-loaded
    return str(info.value)


def test_truncated_safetensors_shard(smoke, tmp_path):
    w = copy_of(smoke, tmp_path)
    shard = w / "flan-t5-xl" / "model-00002-of-00002.safetensors"
    os.truncate(shard, shard.stat().st_size - 1000)
    expect_failure(paths_in(w), CheckpointError, str(shard), "is truncated")
    os.truncate(shard, 20)  # inside the header
    expect_failure(paths_in(w), CheckpointError, str(shard), "truncated")


def test_truncated_bin_shard(tmp_path):
    gen.write_all(tmp_path, smoke=True, t5_layout="bin", only=["t5", "eva_vit", "regionvlm"])
    shard = tmp_path / "flan-t5-xl" / "pytorch_model-00001-of-00002.bin"
    os.truncate(shard, shard.stat().st_size // 2)
    expect_failure(paths_in(tmp_path), CheckpointError, str(shard), "truncated or corrupt")


def test_truncated_checkpoint_and_empty_file(smoke, tmp_path):
    w = copy_of(smoke, tmp_path)
    ckpt = w / "ckpoint_RegionVLM.pth"
    os.truncate(ckpt, ckpt.stat().st_size - 4096)
    expect_failure(paths_in(w), CheckpointError, str(ckpt), "truncated")
    os.truncate(ckpt, 0)
    expect_failure(paths_in(w), CheckpointError, str(ckpt), "is empty")


def test_shard_named_in_the_index_is_missing(smoke, tmp_path):
    w = copy_of(smoke, tmp_path)
    (w / "flan-t5-xl" / "model-00001-of-00002.safetensors").unlink()
    expect_failure(
        paths_in(w),
        MissingFileError,
        "model-00001-of-00002.safetensors",
        str(w / "flan-t5-xl" / "model.safetensors.index.json"),
    )


def test_index_listing_a_tensor_its_shard_lacks(smoke, tmp_path):
    w = copy_of(smoke, tmp_path)
    index_path = w / "flan-t5-xl" / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["lm_head.weight"] = "model-00001-of-00002.safetensors"
    index_path.write_text(json.dumps(index))
    expect_failure(paths_in(w), CheckpointError, str(index_path), "lm_head.weight")


def test_malformed_index(smoke, tmp_path):
    w = copy_of(smoke, tmp_path)
    index_path = w / "flan-t5-xl" / "model.safetensors.index.json"
    index_path.write_text(index_path.read_text()[:-40])
    expect_failure(paths_in(w), CheckpointError, str(index_path), "not valid JSON")
    index_path.write_text(json.dumps({"metadata": {}}))
    expect_failure(paths_in(w), CheckpointError, str(index_path), "weight_map")


def test_files_of_another_model_size(smoke, tmp_path):
    dims = gen.smoke_dims()
    xxl = tmp_path / "xxl"  # Flan-T5-XXL's proportions: twice the width, heads and feed-forward
    gen.write_all(xxl, smoke=True, only=["t5"])
    shutil.rmtree(xxl / "flan-t5-xl")
    gen.write_t5(xxl, replace(dims, t5_d_model=128, t5_heads=8, t5_d_ff=256), gen.np.random.default_rng(0))
    message = expect_failure(
        {**paths_in(smoke), "t5": str(xxl / "flan-t5-xl")}, CheckpointError, "shape mismatch", "t5 (", "flan-t5-xl"
    )
    assert "[32128, 128] vs model [32128, 64]" in message
    vit_l = tmp_path / "vitl"  # EVA ViT-L's proportions: narrower and fewer blocks
    vit_l.mkdir()
    gen.write_eva(vit_l, replace(dims, vit_width=48, vit_blocks=2), gen.np.random.default_rng(0))
    message = expect_failure(
        {**paths_in(smoke), "eva_vit": str(vit_l / "eva_vit_g.pth")},
        CheckpointError,
        "shape mismatch",
        str(vit_l / "eva_vit_g.pth"),
    )
    assert "cls_token: file [1, 1, 48] vs model [1, 1, 64]" in message


def test_real_size_xxl_header_is_rejected_before_reading(tmp_path):
    """Real sizes cost nothing here: sparse files with real headers (Flan-T5-XXL vs the XL model)."""
    xxl = replace(gen.REAL, t5_d_model=4096, t5_heads=64, t5_d_ff=10240)
    folder = tmp_path / "flan-t5-xxl"
    folder.mkdir()
    weight_map = {}
    shards = gen.t5_shards(xxl)
    for k, shard in enumerate(shards, 1):
        name = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        head, size = gen.safetensors_header([s for s in shard if s[0] not in gen.T5_TIED])
        with open(folder / name, "wb") as f:
            f.write(head)
            f.truncate(len(head) + size)  # sparse: no data on disk
        weight_map.update({s[0]: name for s in shard})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    cfg = RegionVLMT5.check_config(OmegaConf.load(RegionVLMT5.default_config_path("flant5xl")).model)
    with torch.device("meta"):
        model = RegionVLMT5(**{k: v for k, v in cfg.items() if k in RegionVLMT5.constructor_keys()})
    with pytest.raises(
        CheckpointError,
        match=r"flan-t5-xxl/model-00001-of-0000\d\.safetensors.*shape mismatch.*\[4096, 4096\] vs model \[2048, 2048\]",
    ):
        W.plan_weights(
            model.state_dict(), {"t5": str(folder)}, {"vit_depth": 39, "qformer_vocab": 30523, "qformer_layers": 12}
        )


def test_unknown_keys_name_the_file(smoke, tmp_path):
    w = copy_of(smoke, tmp_path)
    ckpt = torch.load(w / "ckpoint_RegionVLM.pth", weights_only=True)
    ckpt["model"]["Qformer.bert.encoder.layer.0.attention.self.rotary.weight"] = torch.zeros(3)
    torch.save(ckpt, w / "ckpoint_RegionVLM.pth")
    expect_failure(
        paths_in(w), CheckpointError, "do not exist in this model", str(w / "ckpoint_RegionVLM.pth"), "rotary"
    )
    bert = torch.load(w / "bert-base-uncased" / "pytorch_model.bin", weights_only=True)
    bert["bert.encoder.layer.0.adapter.weight"] = torch.zeros(2)
    torch.save(bert, w / "bert-base-uncased" / "pytorch_model.bin")
    expect_failure(paths_in(w, PRETRAIN), CheckpointError, "adapter", "pytorch_model.bin")


def test_pickled_code_is_refused(smoke, tmp_path):
    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    evil = tmp_path / "evil"
    evil.mkdir()
    torch.save({"shared.weight": torch.zeros(2), "hook": Payload()}, evil / "pytorch_model.bin")
    expect_failure(
        {**paths_in(smoke), "t5": str(evil)},
        CheckpointError,
        str(evil / "pytorch_model.bin"),
        "pickled Python objects",
        "weights_only=True",
        "refuses to run code",
    )
    assert not marker.exists()


def test_bad_paths(smoke, tmp_path):
    expect_failure({**paths_in(smoke), "t5": ""}, MissingFileError, "model.weights.t5", "empty")
    (tmp_path / "empty_dir").mkdir()
    expect_failure(
        {**paths_in(smoke), "t5": str(tmp_path / "empty_dir")},
        CheckpointError,
        str(tmp_path / "empty_dir"),
        "has no model.safetensors",
    )
    expect_failure({**paths_in(smoke), "eva_vit": str(smoke / "flan-t5-xl")}, CheckpointError, "is a directory")
    expect_failure(
        {**paths_in(smoke), "regionvlm": str(tmp_path / "nope.pth")},
        MissingFileError,
        "nope.pth",
        "model.weights.regionvlm",
    )
    lfs = tmp_path / "eva_vit_g.pth"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 2022452103\n")
    expect_failure({**paths_in(smoke), "eva_vit": str(lfs)}, CheckpointError, "Git LFS pointer")
    (tmp_path / "notes.txt").write_text("hello")
    expect_failure({**paths_in(smoke), "eva_vit": str(tmp_path / "notes.txt")}, CheckpointError, "neither a PyTorch")


def test_through_the_public_loader(smoke):
    from regionvlm import load_model_and_preprocess

    model, vis, _ = load_model_and_preprocess(
        "regionvlm_t5", "tiny", is_eval=True, load_pretrained=True, weights=paths_in(smoke)
    )
    assert model.load_report.sources["T5"] == ["t5"]
    with torch.no_grad():
        out = model.generate({"image": vis["eval"](Image.new("RGB", (80, 60))).unsqueeze(0)}, num_beams=1, max_length=3)
    assert len(out) == 1


def test_bf16_precision_reads_the_frozen_towers_straight_into_bf16(smoke, monkeypatch):
    """``model.precision=bf16`` (the 16 GB laptop option): the loader is asked for bf16 ViT and
    T5, so no fp32 copy of them is ever made; the trained parts stay fp32."""
    from regionvlm import load_model_and_preprocess

    asked = []
    original = RegionVLMT5.load_weights

    def spy(self, paths, dtypes=None):
        asked.append(dict(dtypes or {}))
        return original(self, paths, dtypes=dtypes)

    monkeypatch.setattr(RegionVLMT5, "load_weights", spy)
    model, _, _ = load_model_and_preprocess(
        "regionvlm_t5",
        "tiny",
        is_eval=True,
        load_pretrained=True,
        weights=paths_in(smoke),
        precision="bf16",
        freeze_vit=True,
        freeze_t5=True,
    )
    assert asked == [{"vision encoder": torch.bfloat16, "T5": torch.bfloat16}]
    assert W.group_dtypes(model)["vision encoder"] == ["bfloat16"] and W.group_dtypes(model)["T5"] == ["bfloat16"]
    assert model.Qformer.bert.embeddings.word_embeddings.weight.dtype == torch.float32


def test_auto_precision_on_cpu_reads_fp32_bit_exact_even_when_a_gpu_is_visible(smoke, monkeypatch, tmp_path):
    """The device is decided once, before any weight is read: ``precision: auto`` with
    ``run.device=cpu`` is fp32 even on a machine that has a GPU, so the frozen towers come out
    of the files bit-exact (no fp16/bf16 read followed by an upcast)."""
    from regionvlm.common.config import Config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine that reports a GPU
    asked = []
    original = RegionVLMT5.load_weights

    def spy(self, paths, dtypes=None):
        asked.append(dict(dtypes or {}))
        return original(self, paths, dtypes=dtypes)

    monkeypatch.setattr(RegionVLMT5, "load_weights", spy)
    cfg = Config.from_dict(
        {
            "model": {
                "arch": "regionvlm_t5",
                "model_type": "tiny",
                "load_pretrained": True,
                "weights": paths_in(smoke),
                "precision": "auto",
                "freeze_vit": True,
                "freeze_t5": True,
            },
            "datasets": {},
            "run": {"task": "ris", "evaluate": True, "device": "cpu", "output_dir": str(tmp_path)},
        }
    )
    task = cfg.task_class().setup_task(cfg)
    model = task.build_model(cfg, device=run_device(cfg), is_eval=True)
    assert asked == [{"vision encoder": torch.float32, "T5": torch.float32}]
    assert model.precision.name == "fp32" and model.device.type == "cpu"
    vit = torch.load(smoke / gen.RELEASE_FILES["eva_vit"], weights_only=True)
    for key in ("blocks.0.attn.qkv.weight", "patch_embed.proj.weight"):  # (pos_embed is interpolated)
        mine = model.visual_encoder.state_dict()[key]
        assert mine.dtype == torch.float32 and torch.equal(mine, vit[key].float()), key
    t5_key = "encoder.block.0.layer.0.SelfAttention.q.weight"
    assert torch.equal(model.t5_model.state_dict()[t5_key], file_tensor(t5_shard_of(smoke, t5_key), t5_key).float())


def run_device(cfg) -> torch.device:
    """What ``train.py`` does: the run's device, resolved once."""
    from regionvlm.common.dist_utils import resolve_device

    return resolve_device(cfg.run_settings.device)
