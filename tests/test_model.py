"""The tiny RegionVLM: training signal, scoring, generation, checkpoints and weight loading."""

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from regionvlm.common.errors import CheckpointError, InputError, MissingFileError
from regionvlm.models.regionvlm_t5 import RegionVLMT5

REGION_A = "[10 10] [12 15] [20 20] [15 11] [11 19] [18 14] [13 13] [16 17] [19 12] [14 18]"
REGION_B = "[80 80] [82 85] [90 90] [85 81] [81 89] [88 84] [83 83] [86 87] [89 82] [84 88]"


def tiny_cfg(**overrides):
    cfg = OmegaConf.load(RegionVLMT5.default_config_path("tiny")).model
    return OmegaConf.merge(cfg, OmegaConf.create(overrides))


@pytest.fixture
def images():
    torch.manual_seed(0)
    return torch.randn(2, 3, 64, 64)


def test_forward_backward_reaches_every_trainable_group(images):
    model = RegionVLMT5.from_config(tiny_cfg()).train()
    out = model({"image": images, "text_input": [REGION_A, ""], "text_output": ["a red circle", "two shapes"]})
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    for name in (
        "visual_encoder.patch_embed.proj.weight",
        "Qformer.bert.embeddings.word_embeddings.weight",
        "query_tokens",
        "t5_proj.weight",
        "t5_model.lm_head.weight",
    ):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_frozen_towers_get_no_gradient_and_the_vit_stays_in_eval_mode(images):
    """The authors' runner puts the whole model in train mode with only the ViT pinned to eval:
    a frozen T5 keeps its dropout (``frozen_t5_dropout``, default); the option turns it off."""
    off = RegionVLMT5.from_config(tiny_cfg(freeze_vit=True, freeze_t5=True, frozen_t5_dropout=False)).train()
    assert not off.visual_encoder.training and not off.t5_model.training and off.Qformer.training
    model = RegionVLMT5.from_config(tiny_cfg(freeze_vit=True, freeze_t5=True)).train()
    assert not model.visual_encoder.training and model.t5_model.training and model.Qformer.training
    model({"image": images, "text_input": [REGION_A, REGION_B], "text_output": ["a", "b"]})["loss"].backward()
    assert all(p.grad is None for p in model.visual_encoder.parameters())
    assert all(p.grad is None for p in model.t5_model.parameters())
    assert set(model.trainable_state_dict()) == {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.slow
def test_overfits_two_images_and_uses_the_region(images):
    """The gradient path from region text to caption works. Plain random init: the tiny preset's
    priors (factorized positions, smooth numerals) are for learning from many scenes and make
    this two-noise-image toy converge later, and thread-count dependent."""
    torch.manual_seed(0)
    plain = {"vit_pos_embed_layout": "random", "numeral_anchor_every": None}
    model = RegionVLMT5.from_config(tiny_cfg(init=plain)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    samples = {
        "image": images[[0, 0, 1, 1]],
        "text_input": [REGION_A, REGION_B, REGION_A, REGION_B],
        "text_output": ["a red circle", "a blue star", "a green square", "a white triangle"],
    }
    losses = []
    for _ in range(150):
        loss = model(samples)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.02 * losses[0]  # two targets per image: only reachable by reading the region
    model.eval()
    caption = model.generate({"image": images[:1], "text_input": [REGION_B]}, num_beams=1, max_length=8)
    assert caption == ["a blue star"]


def test_score_equals_per_sample_forward_losses(tiny_model, images):
    texts, targets = [REGION_A, REGION_B, ""], ["a red circle", "a much longer blue star caption", "x"]
    scores = tiny_model.score(images[:1], texts, targets)
    with torch.no_grad():
        forward = tiny_model(
            {"image": images[:1].expand(3, -1, -1, -1), "text_input": texts, "text_output": targets}, reduction="none"
        )["loss"]
        shared = tiny_model(
            {"image": images[:1], "image_index": [0, 0, 0], "text_input": texts, "text_output": targets},
            reduction="none",
        )["loss"]
    assert torch.allclose(scores, forward, atol=1e-5)
    assert torch.allclose(scores, shared, atol=1e-5)
    # The batch loss is the token mean (as Hugging Face's T5), not the mean of sample means.
    with torch.no_grad():
        batch = tiny_model({"image": images[:1].expand(3, -1, -1, -1), "text_input": texts, "text_output": targets})[
            "loss"
        ]
    lengths = torch.tensor([len(tiny_model.t5_tokenizer(t).input_ids) for t in targets], dtype=torch.float)
    assert torch.allclose(batch, (forward * lengths).sum() / lengths.sum(), atol=1e-5)


@pytest.mark.parametrize("tied", [False, True])
def test_loss_matches_hugging_face_labels_loss(images, tied):
    """Projecting only real target tokens gives Hugging Face's T5 loss (incl. the tied-head scaling)."""
    model = RegionVLMT5.from_config(tiny_cfg()).eval()
    if tied:
        model.t5_model.config.tie_word_embeddings = True
        if hasattr(model.t5_model.config, "scale_decoder_outputs"):
            model.t5_model.config.scale_decoder_outputs = True
    targets = ["a red circle", "a large purple star and a small green triangle and a square"]
    samples = {"image": images, "text_input": [REGION_A, REGION_B], "text_output": targets}
    with torch.no_grad():
        ours = model(samples)["loss"]
        queries = model.region_queries(model.encode_image(images), [REGION_A, REGION_B])
        embeds, mask = model.t5_inputs(queries)
        tok = model.tokenize_targets(targets)
        labels = tok.input_ids.masked_fill(tok.input_ids == model.t5_tokenizer.pad_token_id, -100)
        reference = model.t5_model(
            inputs_embeds=embeds, attention_mask=mask, labels=labels, decoder_attention_mask=tok.attention_mask
        ).loss
    assert torch.allclose(ours, reference, atol=1e-5), (ours, reference)


def test_generate_greedy_beam_and_sampling_return_text(tiny_model, images):
    samples = {"image": images, "text_input": [REGION_A, ""]}
    greedy = tiny_model.generate(samples, num_beams=1, max_length=5)
    beam = tiny_model.generate(samples, num_beams=3, max_length=5)
    torch.manual_seed(0)
    sampled = tiny_model.generate(samples, use_nucleus_sampling=True, num_beams=1, max_length=5, num_captions=2)
    assert len(greedy) == len(beam) == 2 and len(sampled) == 4
    assert all(isinstance(t, str) and t for t in greedy + beam)
    assert tiny_model.generate(samples, num_beams=1, max_length=5) == greedy  # deterministic


def test_the_model_provides_the_step_api_tasks_rely_on(tiny_model):
    from regionvlm.models.protocol import RegionStepModel

    assert isinstance(tiny_model, RegionStepModel)


def test_predict_answers_uses_no_region_text(tiny_model, images, monkeypatch):
    """VQA: the Q-Former runs its queries alone (no text input at all, not even the empty
    region text), and T5 reads [queries ; T5 tokens of the formatted question]."""
    seen = {"qformer": [], "t5": []}
    qformer_forward = type(tiny_model.Qformer).forward
    generate = type(tiny_model).generate_from_embeds

    def spy_qformer(self, query_tokens, image_embeds, input_ids=None, attention_mask=None):
        seen["qformer"].append(input_ids)
        return qformer_forward(self, query_tokens, image_embeds, input_ids, attention_mask)

    def spy_generate(self, embeds, mask, generation=None):
        seen["t5"].append((embeds.detach().clone(), mask.detach().clone(), generation))
        return generate(self, embeds, mask, generation)

    monkeypatch.setattr(type(tiny_model.Qformer), "forward", spy_qformer)
    monkeypatch.setattr(type(tiny_model), "generate_from_embeds", spy_generate)
    questions = ["what is it?", "how many?"]
    answers = tiny_model.predict_answers(
        {"image": images, "text_input": questions}, prompt="Question: {} Short answer:", num_beams=2, max_len=4
    )
    assert len(answers) == 2 and seen["qformer"] == [None]
    embeds, mask, generation = seen["t5"][0]
    assert (generation.num_beams, generation.max_len, generation.length_penalty) == (2, 4, -1)
    with torch.no_grad():
        queries = tiny_model.region_queries(tiny_model.encode_image(images), None)
        expected, expected_mask = tiny_model.t5_inputs(
            queries, [f"Question: {q} Short answer:" for q in questions], truncate=False
        )
    torch.testing.assert_close(embeds, expected)
    assert torch.equal(mask, expected_mask)
    n = queries.shape[1]
    ids = tiny_model.t5_tokenizer("Question: what is it? Short answer:").input_ids
    table = tiny_model.t5_model.get_input_embeddings().weight
    torch.testing.assert_close(embeds[0, n : n + len(ids)], table[ids])


def test_save_and_load_trainable_checkpoint_round_trip(tmp_path, images):
    a = RegionVLMT5.from_config(tiny_cfg(init={"scheme": "from_scratch", "seed": 1})).eval()
    b = RegionVLMT5.from_config(tiny_cfg(init={"scheme": "from_scratch", "seed": 2})).eval()
    torch.save({"model": a.trainable_state_dict()}, tmp_path / "ckpt.pth")
    loaded = b.load_checkpoint(str(tmp_path / "ckpt.pth"))
    assert len(loaded) == len(a.trainable_state_dict())
    with torch.no_grad():
        assert torch.equal(a.score(images[:1], [REGION_A], ["x y"]), b.score(images[:1], [REGION_A], ["x y"]))


def test_partial_lavis_checkpoint_loads_on_released_weights_and_bad_ones_fail(tmp_path):
    """A partial checkpoint (the RegionVLM release holds only the trained parts) loads on top of
    the released files and the report says where each group came from; on a model whose other
    parts no file provided (random init) it is refused."""
    src = RegionVLMT5.from_config(tiny_cfg(init={"scheme": "from_scratch", "seed": 3}))
    dst = RegionVLMT5.from_config(tiny_cfg(load_pretrained=True, weights=_official_files(tmp_path, src)))
    partial = {k: v for k, v in src.state_dict().items() if k.startswith(("Qformer.", "query_tokens", "t5_proj"))}
    torch.save({"model": partial}, tmp_path / "partial.pth")
    random_init = RegionVLMT5.from_config(tiny_cfg())
    with pytest.raises(CheckpointError, match=r"provides only \['Q-Former', .*'vision encoder'\].*would stay random"):
        random_init.load_checkpoint(str(tmp_path / "partial.pth"))
    assert random_init.random_weights and random_init.load_report is None
    before_vit = dst.visual_encoder.pos_embed.clone()
    dst.load_checkpoint(str(tmp_path / "partial.pth"))
    assert torch.equal(dst.query_tokens, src.query_tokens)
    assert torch.equal(dst.visual_encoder.pos_embed, before_vit)  # not in the file: untouched
    report = dst.load_report
    assert report.sources["query_tokens"] == ["checkpoint"] and report.overridden["query_tokens"] == ["blip2"]
    assert report.sources["Q-Former text path"] == ["checkpoint"] and report.sources["vision encoder"] == ["eva_vit"]
    assert str(tmp_path / "partial.pth") in report.files["checkpoint"] and "<- checkpoint" in str(report)
    torch.save({"model": {**partial, "Qformer.cls.predictions.bias": torch.zeros(3)}}, tmp_path / "unknown.pth")
    with pytest.raises(CheckpointError, match="do not exist in this model"):
        dst.load_checkpoint(str(tmp_path / "unknown.pth"))
    torch.save({"model": {"t5_proj.weight": torch.zeros(5, 5)}}, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match="shape mismatch"):
        dst.load_checkpoint(str(tmp_path / "shape.pth"))
    with pytest.raises(MissingFileError, match="model.checkpoint"):
        dst.load_checkpoint(str(tmp_path / "absent.pth"))


def _official_files(tmp_path, src: RegionVLMT5):
    """Write the partial official files (in their own key layouts) from a source model."""
    sd = {k: v.clone() for k, v in src.state_dict().items()}
    eva = {k[len("visual_encoder.") :]: v for k, v in sd.items() if k.startswith("visual_encoder.")}
    depth = len(src.visual_encoder.blocks)
    for k in [k for k in eva if k.startswith("blocks.0.")]:  # the 40th block the official model drops
        eva[k.replace("blocks.0.", f"blocks.{depth}.")] = eva[k].clone()
    torch.save(eva, tmp_path / "eva_vit_g.pth")
    bert = {}
    for k, v in sd.items():
        if k.startswith("Qformer.bert.") and "crossattention" not in k and "_query" not in k:
            name = (
                k[len("Qformer.") :]
                .replace("LayerNorm.weight", "LayerNorm.gamma")
                .replace("LayerNorm.bias", "LayerNorm.beta")
            )
            if name.endswith("word_embeddings.weight"):
                v = v[:30522]  # bert-base-uncased has no [DEC] row
            if not name.endswith("position_ids"):
                bert[name] = v.contiguous()
    bert["bert.pooler.dense.weight"] = torch.zeros(64, 64)
    (tmp_path / "bert").mkdir()
    save_file(bert, str(tmp_path / "bert" / "model.safetensors"))
    t5 = {
        k[len("t5_model.") :]: v.contiguous()
        for k, v in sd.items()
        if k.startswith("t5_model.") and "embed_tokens" not in k
    }
    (tmp_path / "t5").mkdir()
    save_file(t5, str(tmp_path / "t5" / "model.safetensors"))
    blip2 = {
        k: v
        for k, v in sd.items()
        if k.startswith(("ln_vision", "query_tokens", "t5_proj"))
        or (
            (
                k.startswith("Qformer.")
                and not any(
                    s in k
                    for s in (
                        "word_embeddings",
                        "position_embeddings",
                        ".intermediate.",
                        ".output.dense",
                        ".output.LayerNorm",
                    )
                )
            )
            or (k.startswith("Qformer.") and ("attention.output" in k))
        )
    }
    blip2 = {k: v for k, v in blip2.items() if not k.endswith("position_ids")}
    torch.save({"model": blip2}, tmp_path / "blip2.pth")
    return {
        "eva_vit": str(tmp_path / "eva_vit_g.pth"),
        "bert": str(tmp_path / "bert"),
        "t5": str(tmp_path / "t5"),
        "blip2": str(tmp_path / "blip2.pth"),
    }


def test_assembles_the_model_from_partial_official_files(tmp_path, images):
    src = RegionVLMT5.from_config(tiny_cfg(init={"scheme": "from_scratch", "seed": 4})).eval()
    paths = _official_files(tmp_path, src)
    model = RegionVLMT5.from_config(tiny_cfg(load_pretrained=True, weights=paths)).eval()
    report = model.load_report
    assert report.sources["vision encoder"] == ["eva_vit"]
    assert report.sources["Q-Former text path"] == ["bert"]
    assert report.sources["T5"] == ["t5"]
    assert set(report.sources["Q-Former"]) == {"blip2"}
    assert report.sources["query_tokens"] == ["blip2"]
    assert any(k.startswith("blocks.3.") for k in report.ignored["eva_vit"])
    assert model.t5_model.encoder.embed_tokens.weight is model.t5_model.shared.weight
    for name, value in src.state_dict().items():
        got = model.state_dict()[name]
        if name.endswith("word_embeddings.weight"):
            assert torch.equal(got[:30522], value[:30522])
        else:
            assert torch.equal(got, value), name
    with torch.no_grad():
        assert torch.allclose(model.score(images[:1], [REGION_A], ["x"]), src.score(images[:1], [REGION_A], ["x"]))


def test_weight_assembly_failures_are_explained(tmp_path):
    src = RegionVLMT5.from_config(tiny_cfg())
    paths = _official_files(tmp_path, src)
    no_t5 = {k: v for k, v in paths.items() if k != "t5"}
    with pytest.raises(CheckpointError, match=r"came from no file \(groups: \['T5'\]"):
        RegionVLMT5.from_config(tiny_cfg(load_pretrained=True, weights=no_t5))
    with pytest.raises(MissingFileError, match=r"eva_vit_g.pth.*model.weights.eva_vit"):
        RegionVLMT5.from_config(
            tiny_cfg(load_pretrained=True, weights={**paths, "eva_vit": str(tmp_path / "x" / "eva_vit_g.pth")})
        )
    torch.save({"model": {"query_tokens": torch.zeros(1, 32, 768)}}, tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError, match="shape mismatch"):
        RegionVLMT5.from_config(
            tiny_cfg(load_pretrained=True, weights={**paths, "regionvlm": str(tmp_path / "wrong.pth")})
        )


def test_pos_embed_of_the_224_file_is_interpolated(tmp_path):
    src = RegionVLMT5.from_config(tiny_cfg())
    paths = _official_files(tmp_path, src)
    eva = torch.load(paths["eva_vit"])
    eva["pos_embed"] = torch.randn(1, 1 + 4 * 4, 64)  # a smaller training resolution
    torch.save(eva, paths["eva_vit"])
    model = RegionVLMT5.from_config(tiny_cfg(load_pretrained=True, weights=paths))
    assert model.visual_encoder.pos_embed.shape == (1, 65, 64)
    assert torch.equal(model.visual_encoder.pos_embed[:, :1], eva["pos_embed"][:, :1])


@pytest.mark.parametrize(
    "samples, message",
    [
        ({"image": torch.zeros(1, 3, 64, 64), "text_input": ["x"]}, "text_output"),
        ({"image": torch.zeros(1, 3, 64, 64), "text_input": ["x", "y"], "text_output": ["a"]}, "same length"),
        ({"image": torch.zeros(3, 64, 64), "text_input": ["x"], "text_output": ["a"]}, r"\(B, 3, H, W\)"),
        ({"image": torch.zeros(2, 3, 64, 64), "text_input": ["x"] * 3, "text_output": ["a"] * 3}, "2 images for 3"),
    ],
)
def test_bad_samples_raise_clear_errors(tiny_model, samples, message):
    with pytest.raises(InputError, match=message):
        tiny_model(samples)


def test_wrong_image_size_is_explained(tiny_model):
    with pytest.raises(ValueError, match="64x64 images"):
        tiny_model.encode_image(torch.zeros(1, 3, 32, 32))
