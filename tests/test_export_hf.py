"""Hugging Face transformers export/import (``regionvlm.export``): the exported
InstructBLIP, driven only by transformers, computes what RegionVLM computes."""

from __future__ import annotations

import ast
import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from regionvlm.common.cli import run
from regionvlm.export import export_hf, hf_layout, import_hf, main, matching_presets
from regionvlm.models.generation import GenerationSettings
from regionvlm.models.regionvlm_t5 import RegionVLMT5

DOC = Path(__file__).resolve().parents[1] / "docs" / "huggingface.md"
BUNDLED = Path(__file__).resolve().parents[1] / "regionvlm" / "checkpoints" / "tiny_synthetic.pth"
REGIONS = [
    "[10 10] [12 15] [20 20] [15 11] [11 19] [18 14] [13 13] [16 17] [19 12] [14 18]",
    "[80 80] [82 85]",
    "",
    "[50 5]",
    " ".join(f"[{i * 7} {99 - i * 8}]" for i in range(12)),
    "[0 100] [100 0] [33 66]",
]
TARGETS = [
    "a red circle",
    "two blue squares on the left of a big green triangle",
    "the whole picture",
    "x",
    "a small star",
    "three shapes",
]


@pytest.fixture(scope="module")
def export_dir(tiny_model, tmp_path_factory) -> Path:
    return export_hf(tiny_model, tmp_path_factory.mktemp("hf") / "regionvlm-hf")


@pytest.fixture(scope="module")
def hf_model(export_dir):
    from transformers import InstructBlipForConditionalGeneration

    return InstructBlipForConditionalGeneration.from_pretrained(export_dir).eval()


@pytest.fixture(scope="module")
def pil_images():
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8))
        for h, w in ((48, 80), (64, 64), (200, 120), (31, 45), (90, 300), (70, 71))
    ]


def per_sample_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean token NLL per sample from transformers' logits (labels -100 = padding)."""
    valid = labels != -100
    nll = torch.zeros(labels.shape)
    nll[valid] = F.cross_entropy(logits[valid], labels[valid], reduction="none")
    return nll.sum(1) / valid.sum(1)


def test_exported_model_gives_the_projects_losses_and_greedy_ids(
    tiny_model, tiny_model_and_processors, export_dir, hf_model, pil_images
):
    from transformers import InstructBlipProcessor

    vis = tiny_model_and_processors[1]["eval"]
    processor = InstructBlipProcessor.from_pretrained(export_dir, backend="pil")
    pixels = torch.stack([vis(im) for im in pil_images])
    q = processor(images=pil_images, text=REGIONS, truncation=True, padding=True, return_tensors="pt")
    lm = processor(images=pil_images, text=[""] * len(REGIONS), return_tensors="pt")
    targets = processor.tokenizer(
        TARGETS, padding=True, truncation=True, max_length=tiny_model.max_output_txt_len, return_tensors="pt"
    )
    labels = targets.input_ids.masked_fill(targets.attention_mask == 0, -100)

    # same inputs: pixels, Q-Former ids (the 12-point region is cut at max_txt_len), [placeholders ; </s>]
    assert torch.equal(q.pixel_values, pixels)
    ours = tiny_model.tokenize_region_text(REGIONS)
    assert torch.equal(q.qformer_input_ids, ours.input_ids) and q.qformer_input_ids.shape[1] == tiny_model.max_txt_len
    image_token = hf_model.config.image_token_index
    n = hf_model.config.num_query_tokens
    assert lm.input_ids.tolist() == [[image_token] * n + [1]] * len(REGIONS)

    with torch.no_grad():
        ref = tiny_model({"image": pixels, "text_input": REGIONS, "text_output": TARGETS}, reduction="none")["loss"]
        out = hf_model(
            pixel_values=q.pixel_values,
            qformer_input_ids=q.qformer_input_ids,
            qformer_attention_mask=q.qformer_attention_mask,
            input_ids=lm.input_ids,
            attention_mask=lm.attention_mask,
            labels=labels,
        )
    losses = per_sample_nll(out.logits, labels)
    assert torch.allclose(losses, ref, rtol=1e-4, atol=0), (losses, ref)

    # greedy: ids of the project's generate(num_beams=1) path vs transformers' generate without input_ids
    gen = GenerationSettings.create(num_beams=1, max_len=20).hf_kwargs()  # what generate(num_beams=1) passes
    with torch.no_grad():
        embeds, mask = tiny_model.t5_inputs(tiny_model.region_queries(tiny_model.encode_image(pixels), REGIONS))
        ids_ref = tiny_model.t5_model.generate(inputs_embeds=embeds, attention_mask=mask, **gen)
        ids_hf = hf_model.generate(
            pixel_values=q.pixel_values,
            qformer_input_ids=q.qformer_input_ids,
            qformer_attention_mask=q.qformer_attention_mask,
            **gen,
        )
        texts = tiny_model.generate({"image": pixels, "text_input": REGIONS}, num_beams=1, max_length=20)
    assert torch.equal(ids_hf, ids_ref)
    assert processor.batch_decode(ids_hf, skip_special_tokens=True) == texts


def test_ln_vision_epsilon_is_the_one_inexact_setting(tiny_model, hf_model, pil_images, tiny_model_and_processors):
    """transformers' vision tower has one layer_norm_eps: the ViT's 1e-6 is kept, so ln_vision
    (1e-5) runs with 1e-6. That is the whole difference, and its effect is tiny."""
    assert hf_model.config.vision_config.layer_norm_eps == tiny_model.visual_encoder.blocks[0].norm1.eps == 1e-6
    assert tiny_model.ln_vision.eps == 1e-5 and hf_model.vision_model.post_layernorm.eps == 1e-6
    pixels = torch.stack([tiny_model_and_processors[1]["eval"](im) for im in pil_images])
    same_eps = copy.deepcopy(tiny_model)
    same_eps.ln_vision.eps = 1e-6
    samples = {"image": pixels, "text_input": REGIONS, "text_output": TARGETS}
    with torch.no_grad():
        hf_features = hf_model.vision_model(pixel_values=pixels).last_hidden_state
        ours, ours_same_eps = tiny_model.encode_image(pixels), same_eps.encode_image(pixels)
        loss, loss_same_eps = (m(samples, reduction="none")["loss"] for m in (tiny_model, same_eps))
    assert torch.allclose(hf_features, ours_same_eps, rtol=0, atol=1e-6)  # nothing else differs
    assert 0 < (hf_features - ours).abs().max() < 1e-5  # the documented effect (measured 9.5e-7)
    assert ((loss_same_eps - loss).abs() / loss).max() < 1e-6  # measured 9e-8 .. 2e-7


@pytest.mark.slow
def test_plain_transformers_loads_it_offline_and_the_doc_snippet_captions(
    tiny_model, tiny_model_and_processors, export_dir, tmp_path
):
    """A fresh process without regionvlm runs the three lines of docs/huggingface.md."""
    snippet = re.search(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S).group(1)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, size=(90, 120, 3), dtype=np.uint8))
    image.save(export_dir.parent / "street.jpg")
    script = (
        snippet
        + """
import json, sys
assert "regionvlm" not in sys.modules
lm = model.language_model
q = processor.qformer_tokenizer
print(json.dumps({
    "untied_head": lm.lm_head.weight.data_ptr() != lm.shared.weight.data_ptr(),
    "scale_decoder_outputs": lm.config.scale_decoder_outputs,
    "t5_act": type(lm.encoder.block[0].layer[1].DenseReluDense.act).__name__,
    "qformer_vocab": len(q), "dec": [q.bos_token, q.convert_tokens_to_ids("[DEC]")],
    "qformer_max_length": q.model_max_length,
    "image_token": [processor.image_token.content, processor.tokenizer.convert_tokens_to_ids("<image>")],
    "image_processor": type(processor.image_processor).__name__,
    "default_backend_pixels_close": bool((Processor.from_pretrained("regionvlm-hf")(images=Image.open("street.jpg"),
        return_tensors="pt").pixel_values - x.pixel_values).abs().max() < 0.04),  # torchvision resize: ~2/255
}))
"""
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=export_dir.parent, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    caption, facts = ast.literal_eval(lines[-2]), json.loads(lines[-1])
    assert facts == {
        "untied_head": True,
        "scale_decoder_outputs": False,
        "t5_act": "GELUActivation",
        "qformer_vocab": 30523,
        "dec": ["[DEC]", 30522],
        "qformer_max_length": tiny_model.max_txt_len,
        "image_token": ["<image>", 32100],
        "image_processor": "BlipImageProcessorPil",
        "default_backend_pixels_close": True,
    }
    region = re.search(r'text="([^"]*)"', snippet).group(1)
    pixels = tiny_model_and_processors[1]["eval"](Image.open(export_dir.parent / "street.jpg")).unsqueeze(0)
    assert caption == tiny_model.generate({"image": pixels, "text_input": [region]}, num_beams=5, max_length=30)


def test_export_import_round_trip_is_exact(tiny_model, export_dir, tmp_path):
    path, model_cfg = import_hf(export_dir, tmp_path / "back.pth")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    reference = tiny_model.state_dict()
    assert list(saved["model"]) == list(reference)
    for key, value in reference.items():
        assert saved["model"][key].dtype == value.dtype and torch.equal(saved["model"][key], value), key
    assert model_cfg["max_txt_len"] == tiny_model.max_txt_len and matching_presets(model_cfg) == ["tiny"]
    assert saved["config"] == model_cfg
    rebuilt = RegionVLMT5.from_config({**model_cfg, "checkpoint": str(path)})  # no preset needed
    assert all(torch.equal(v, reference[k]) for k, v in rebuilt.state_dict().items())

    # the project loads it back, and exporting that again gives the same files' tensors
    reloaded = copy.deepcopy(tiny_model)
    with torch.no_grad():
        for p in reloaded.parameters():
            p.zero_()
    reloaded.load_checkpoint(str(path))
    assert all(torch.equal(v, reference[k]) for k, v in reloaded.state_dict().items())
    again = export_hf(reloaded, tmp_path / "again")
    first, second = load_file(export_dir / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.slow
def test_sharded_export_loads_and_imports(tiny_model, tmp_path):
    """The full-size model is written in 5 GB shards; the same code path, with 2 MB shards."""
    from transformers import InstructBlipForConditionalGeneration

    out = export_hf(tiny_model, tmp_path / "sharded", max_shard_size="2MB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 3 and not (out / "model.safetensors").exists()
    hf = InstructBlipForConditionalGeneration.from_pretrained(out)
    assert torch.equal(hf.language_model.lm_head.weight, tiny_model.t5_model.lm_head.weight)
    path, _ = import_hf(out, tmp_path / "back.pth")
    back = torch.load(path, map_location="cpu", weights_only=True)["model"]
    assert all(torch.equal(back[k], v) for k, v in tiny_model.state_dict().items())


def test_command_line_exports_and_imports_a_checkpoint(tmp_path, capsys):
    out = tmp_path / "hf"
    main(["hf", "--checkpoint", str(BUNDLED), "--model-type", "tiny", "--out", str(out)])
    assert "wrote" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["InstructBlipForConditionalGeneration"]
    assert config["text_config"]["dense_act_fn"] == "gelu" and config["text_config"]["bos_token_id"] == 1
    main(["hf", "--from-hf", str(out), "--out", str(tmp_path / "back.pth")])
    assert "presets with this architecture: ['tiny']" in capsys.readouterr().out
    back = torch.load(tmp_path / "back.pth", map_location="cpu", weights_only=True)["model"]
    bundled = torch.load(BUNDLED, map_location="cpu", weights_only=True)["model"]
    for key, value in bundled.items():  # fp16 in the bundled file, fp32 in the model
        assert torch.equal(back[key], value.float()), key
    assert torch.equal(back["t5_model.decoder.embed_tokens.weight"], back["t5_model.shared.weight"])


def test_nonzero_key_bias_is_dropped_without_changing_outputs(export_dir, tiny_model, tmp_path, caplog):
    from transformers import InstructBlipForConditionalGeneration

    changed = tmp_path / "kbias"
    shutil.copytree(export_dir, changed)
    weights = load_file(changed / "model.safetensors")
    name = "vision_model.encoder.layers.1.self_attn.qkv.bias"
    width = weights[name].shape[0] // 3
    weights[name][width : 2 * width] = torch.randn(width, generator=torch.Generator().manual_seed(0))
    save_file(weights, changed / "model.safetensors", metadata={"format": "pt"})
    path, _ = import_hf(changed, tmp_path / "k.pth")
    assert "nonzero key bias" in caplog.text
    state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    for part in ("q_bias", "v_bias"):
        key = f"visual_encoder.blocks.1.attn.{part}"
        assert torch.equal(state[key], tiny_model.state_dict()[key])
    vit = copy.deepcopy(tiny_model.visual_encoder)
    vit.load_state_dict({k[len("visual_encoder.") :]: v for k, v in state.items() if k.startswith("visual_encoder.")})
    hf = InstructBlipForConditionalGeneration.from_pretrained(changed).eval()
    x = torch.randn(2, 3, tiny_model.image_size, tiny_model.image_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        hf_out = hf.vision_model.post_layernorm(
            hf.vision_model.encoder(hf.vision_model.embeddings(x)).last_hidden_state
        )
        ours = F.layer_norm(vit(x), (vit.num_features,), tiny_model.ln_vision.weight, tiny_model.ln_vision.bias, 1e-6)
    assert torch.allclose(hf_out, ours, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_paper_preset_maps_name_for_name_onto_instructblip():
    """flant5xl (39 ViT blocks, cross-attention every 2nd layer, 32 queries), on the meta device."""
    from omegaconf import OmegaConf

    from regionvlm.export import from_hf_state_dict, model_config_from_hf

    cfg = OmegaConf.load(RegionVLMT5.default_config_path("flant5xl")).model
    keep = ("image_size", "vit", "qformer", "t5", "num_query_token", "max_txt_len")
    with torch.device("meta"):
        model = RegionVLMT5(
            **{k: OmegaConf.to_container(cfg[k]) if k in ("vit", "qformer", "t5") else cfg[k] for k in keep}
        )
    config, state, processor = hf_layout(model)  # raises on any name or shape mismatch
    assert config.vision_config.num_hidden_layers == 39 and config.qformer_config.cross_attention_frequency == 2
    assert config.num_query_tokens == 32 and config.vision_config.image_size == 364
    assert processor.qformer_tokenizer.model_max_length == 32
    assert sum(k.endswith("crossattention.attention.query.weight") for k in state) == 6
    back = from_hf_state_dict(state, model.state_dict(), "flant5xl layout")
    assert list(back) == list(model.state_dict())
    derived = model_config_from_hf(config.to_dict(), 32, "flant5xl config")
    assert matching_presets(derived) == ["flant5xl", "pretrain_flant5xl"]


@pytest.fixture
def not_an_export(tmp_path) -> Path:
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 768}))
    return folder


@pytest.mark.parametrize(
    "case",
    [
        "missing checkpoint",
        "empty folder",
        "bert folder",
        "no weights",
        "unwritable export",
        "unwritable import",
        "existing out",
        "random weights",
        "unknown preset",
        "missing folder",
    ],
)
def test_bad_inputs_give_one_line_errors(case, tmp_path, export_dir, not_an_export, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(export_dir / "config.json", no_weights / "config.json")
    (tmp_path / "exists.pth").write_text("")
    ckpt = ["--checkpoint", str(BUNDLED), "--model-type", "tiny"]
    argv, expected = {
        "missing checkpoint": (
            ["--checkpoint", str(tmp_path / "nope.pth"), "--model-type", "tiny", "--out", str(tmp_path / "o")],
            "not found",
        ),
        "empty folder": (["--from-hf", str(tmp_path), "--out", str(tmp_path / "x.pth")], "no config.json"),
        "bert folder": (["--from-hf", str(not_an_export), "--out", str(tmp_path / "x.pth")], "not an InstructBLIP"),
        "no weights": (["--from-hf", str(no_weights), "--out", str(tmp_path / "x.pth")], "no model.safetensors"),
        "unwritable export": (ckpt + ["--out", str(a_file / "sub")], "is a file, not a directory"),
        "unwritable import": (["--from-hf", str(export_dir), "--out", str(a_file / "x.pth")], "is a file"),
        "existing out": (["--from-hf", str(export_dir), "--out", str(tmp_path / "exists.pth")], "--overwrite"),
        "random weights": (["--model-type", "tiny", "--out", str(tmp_path / "o")], "pass --checkpoint"),
        "unknown preset": (
            ["--checkpoint", str(BUNDLED), "--model-type", "huge", "--out", str(tmp_path / "o")],
            "unknown model_type",
        ),
        "missing folder": (
            ["--from-hf", str(tmp_path / "none"), "--out", str(tmp_path / "x.pth")],
            "is not a directory",
        ),
    }[case]
    with pytest.raises(SystemExit) as exit_info:
        run(main, ["hf", *argv])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith("error: ") and "\n" not in err and expected in err, err
    assert not (tmp_path / "o").exists() and not (tmp_path / "x.pth").exists()


def test_export_does_not_carry_the_shared_tokenizers_last_truncation(tiny_model, tmp_path):
    """A fast tokenizer keeps the truncation of its last call in its backend, and
    ``tokenizer.json`` saves it: an export made after any short truncation must still cut
    region text at ``max_txt_len``."""
    from transformers import InstructBlipProcessor

    tiny_model.tokenizer(["[1 2] [3 4] [5 6]"], truncation=True, max_length=5)
    tiny_model.t5_tokenizer(["a long caption of many words"], truncation=True, max_length=3)
    out = export_hf(tiny_model, tmp_path / "hf")
    processor = InstructBlipProcessor.from_pretrained(out, backend="pil")
    ids = processor.qformer_tokenizer([REGIONS[4]], truncation=True).input_ids[0]
    assert len(ids) == tiny_model.max_txt_len == len(tiny_model.tokenize_region_text([REGIONS[4]]).input_ids[0])
