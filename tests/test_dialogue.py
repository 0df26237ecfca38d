"""The dialogue API: which embeddings go where, multi-turn context, errors, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from regionvlm import Region
from regionvlm.common.errors import ConfigError, InputError
from regionvlm.dialogue import Conversation, parse_region_refs
from regionvlm.region import format_points

FAST = dict(max_len=4)


@pytest.fixture
def conv(tiny_model_and_processors, rgb_image):
    model, vis, txt = tiny_model_and_processors
    c = Conversation(model, rgb_image, vis["eval"], txt["eval"], seed=3)
    c.add_region(Region.from_box((4, 6, 30, 40), image_size=rgb_image.size))
    c.add_region(Region.from_points([(50, 10), (60, 20), (55, 30)], image_size=rgb_image.size))
    return c


@pytest.fixture
def sent(tiny_model, monkeypatch):
    """Records the T5 encoder input of every generation."""
    calls = []
    original = type(tiny_model).generate_from_embeds

    def spy(self, embeds, mask, generation=None):
        calls.append((embeds.detach().clone(), mask.detach().clone(), generation))
        return original(self, embeds, mask, generation)

    # Patch the class, not the shared instance: undoing an instance patch would leave a bound
    # method in the instance's __dict__ that hides later class-level patches of other tests.
    monkeypatch.setattr(type(tiny_model), "generate_from_embeds", spy)
    return calls


def by_hand(model, pieces):
    """T5 encoder input built without embed_segments: token embeddings and soft tokens
    concatenated in order, then </s>."""
    table = model.t5_model.get_input_embeddings()
    rows = []
    for p in pieces:
        if isinstance(p, str):
            rows.append(table(torch.tensor(model.t5_tokenizer(p, add_special_tokens=False).input_ids)))
        else:
            rows.append(p)
    rows.append(table(torch.tensor([model.t5_tokenizer.eos_token_id])))
    return torch.cat(rows)[None]


def test_parse_region_refs():
    assert parse_region_refs("is [1] left of [12]?") == ["is ", 1, " left of ", 12, "?"]
    assert parse_region_refs("[2]") == [2]
    assert parse_region_refs("points [12 34] near [1]") == ["points [12 34] near ", 1]


def test_regions_sampled_once_and_soft_tokens_match_the_model(conv, tiny_model_and_processors, rgb_image):
    model, vis, _ = tiny_model_and_processors
    box = conv.region(1)
    x, y = box.points[:, 0] * 64, box.points[:, 1] * 48
    assert len(box.points) == 10 and (x >= 4).all() and (x <= 30).all() and (y >= 6).all() and (y <= 40).all()
    assert conv.region_text(1) == format_points(box.points)
    assert conv.region_text(1) == conv.region_text(1)  # no re-sampling on access
    with torch.inference_mode():
        embeds = model.encode_image(vis["eval"](rgb_image)[None])
        expected = model.region_queries(embeds, [conv.region_text(1), conv.region_text(2)])
    torch.testing.assert_close(conv.region(1).soft_tokens, expected[0])
    torch.testing.assert_close(conv.region(2).soft_tokens, expected[1])


def test_inline_layout_puts_each_region_where_it_is_written(conv, tiny_model, sent):
    q1, q2 = conv.region(1).soft_tokens, conv.region(2).soft_tokens
    segments = conv.prompt_segments("Is [1] left of [2]?")
    assert [s if isinstance(s, str) else id(s) for s in segments] == ["Is ", id(q1), " left of ", id(q2), "?"]
    conv.ask("Is [1] left of [2]?", **FAST)
    embeds, mask, _ = sent[-1]
    expected = by_hand(tiny_model, ["Is ", q1, " left of ", q2, "?"])
    torch.testing.assert_close(embeds, expected)
    assert mask.shape == expected.shape[:2] and bool(mask.all())
    # the soft tokens sit exactly after the tokens of "Is" (2 tokens: "▁I", "s")
    n = len(tiny_model.t5_tokenizer("Is ", add_special_tokens=False).input_ids)
    torch.testing.assert_close(embeds[0, n : n + q1.shape[0]], q1)


def test_let_layout_is_the_vcr_prefix(tiny_model_and_processors, rgb_image, sent):
    model, vis, txt = tiny_model_and_processors
    c = Conversation(model, rgb_image, vis["eval"], txt["eval"], layout="let")
    c.add_region(Region.from_box((4, 6, 30, 40), image_size=rgb_image.size))
    c.add_region(Region.whole_image())
    q1, q2 = c.region(1).soft_tokens, c.region(2).soft_tokens
    c.ask("What is [2] doing near [1]?", **FAST)
    expected = by_hand(model, ["Let", "[2] be", q2, "[1] be", q1, "What is [2] doing near [1]?"])
    torch.testing.assert_close(sent[-1][0], expected)
    assert c.region_text(2) == ""  # whole image = the official empty region prompt


def test_qformer_first_layout_and_its_decoding(tiny_model_and_processors, rgb_image, sent):
    """The authors' predict_answers_qformer_first: the mentioned regions' soft tokens first, then
    the whole question with its [i] as text; beam 5, 10 new tokens, length penalty -1."""
    model, vis, txt = tiny_model_and_processors
    c = Conversation(model, rgb_image, vis["eval"], txt["eval"], layout="qformer_first", history="none")
    c.add_region(Region.from_box((4, 6, 30, 40), image_size=rgb_image.size))
    c.add_region(Region.from_points([(50, 10), (60, 20)], image_size=rgb_image.size))
    q1, q2 = c.region(1).soft_tokens, c.region(2).soft_tokens
    c.ask("Is [2] near [1]?")
    torch.testing.assert_close(sent[-1][0], by_hand(model, [q2, q1, "Is [2] near [1]?"]))
    generation = sent[-1][2]
    assert (generation.num_beams, generation.max_len, generation.length_penalty) == (5, 10, -1.0)
    c.ask("What is [1]?", max_len=4)  # user settings win over the layout's defaults
    assert sent[-1][2].max_len == 4 and sent[-1][2].length_penalty == -1.0


def test_describe_is_the_trained_captioning_path(conv, tiny_model_and_processors, rgb_image, sent):
    model, vis, _ = tiny_model_and_processors
    answer = conv.describe(1, num_beams=3, max_len=6)
    with torch.inference_mode():
        queries = model.region_queries(model.encode_image(vis["eval"](rgb_image)[None]), [conv.region_text(1)])
        embeds, _mask = model.t5_inputs(queries)  # [soft ; empty prompt] = soft + </s>
        reference = model.generate(
            {"image": vis["eval"](rgb_image)[None], "text_input": [conv.region_text(1)]}, num_beams=3, max_length=6
        )
    torch.testing.assert_close(sent[-1][0], embeds)
    assert answer == reference[0].strip()
    assert conv.turns[-1].kind == "describe" and conv.turns[-1].region_ids == (1,)


def test_official_multiturn_context(conv, tiny_model, sent):
    """The authors' predict_answers_interactive_multiturn, turn by turn (module docstring)."""
    q1, q2 = conv.region(1).soft_tokens, conv.region(2).soft_tokens
    eos = tiny_model.t5_tokenizer.eos_token
    assert tiny_model.t5_tokenizer(eos, add_special_tokens=False).input_ids == [tiny_model.t5_tokenizer.eos_token_id]
    script = [
        ("hello", ["hello"]),  # before any region: no context
        ("[1] what is this?", [q1, " what is this?"]),  # first region turn: alone
        ("what color?", [q1, "what color?"]),  # context = region 1's soft tokens
        ("and [2]?", [q1, "what color?", eos, "and ", q2, "?"]),  # context = previous input
        ("which is bigger?", [q1, "what color?", eos, "which is bigger?"]),
        # a region turn takes the whole previous input as its context (the "and [2]?" turn is gone)
        ("[1] or [2]?", [q1, "what color?", eos, "which is bigger?", eos, q1, " or ", q2, "?"]),
    ]
    for text, expected in script:
        conv.ask(text, **FAST)
        torch.testing.assert_close(sent[-1][0], by_hand(tiny_model, expected), msg=text)
    assert [t.text for t in conv.turns] == [t for t, _ in script]


def test_describe_enters_the_official_history(conv, tiny_model, sent):
    q1 = conv.region(1).soft_tokens
    conv.describe(1, **FAST)
    conv.ask("what color is it?", **FAST)
    torch.testing.assert_close(sent[-1][0], by_hand(tiny_model, [q1, "what color is it?"]))


def test_qa_and_none_histories(tiny_model_and_processors, rgb_image, sent):
    model, vis, txt = tiny_model_and_processors
    eos = model.t5_tokenizer.eos_token
    qa = Conversation(model, rgb_image, vis["eval"], txt["eval"], history="qa")
    qa.add_region(Region.from_box((4, 6, 30, 40), image_size=rgb_image.size))
    q1 = qa.region(1).soft_tokens
    a1 = qa.ask("[1] what is this?", **FAST)
    qa.ask("why?", **FAST)
    torch.testing.assert_close(sent[-1][0], by_hand(model, [q1, " what is this?", eos, a1, eos, "why?"]))

    alone = Conversation(model, rgb_image, vis["eval"], txt["eval"], history="none")
    alone.add_region(Region.from_box((4, 6, 30, 40), image_size=rgb_image.size))
    alone.ask("[1] what is this?", **FAST)
    alone.ask("why?", **FAST)
    torch.testing.assert_close(sent[-1][0], by_hand(model, ["why?"]))


def test_prompt_template(tiny_model_and_processors, rgb_image, sent):
    model, vis, txt = tiny_model_and_processors
    c = Conversation(model, rgb_image, vis["eval"], txt["eval"], prompt="Question: {} Short answer:")
    c.add_region(Region.from_points([(3, 3)], image_size=rgb_image.size))
    q1 = c.region(1).soft_tokens
    c.ask("what is [1]?", **FAST)
    torch.testing.assert_close(sent[-1][0], by_hand(model, ["Question: what is ", q1, "? Short answer:"]))


def test_unknown_region_ids_are_clear_errors(conv, tiny_model_and_processors, rgb_image):
    with pytest.raises(InputError, match=r"\[3\] in 'is \[3\] red\?' refers to no region.*regions \[1\]\.\.\[2\]"):
        conv.ask("is [3] red?")
    with pytest.raises(InputError, match=r"\[0\].*refers to no region"):
        conv.ask("[0] and [1]")
    with pytest.raises(InputError, match="refers to no region"):
        conv.describe(5)
    with pytest.raises(InputError, match="integer"):
        conv.describe("1")
    with pytest.raises(InputError, match="empty question"):
        conv.ask("   ")
    assert conv.turns == []  # failed turns leave no trace
    model, vis, txt = tiny_model_and_processors
    empty = Conversation(model, rgb_image, vis["eval"], txt["eval"])
    with pytest.raises(InputError, match="no regions yet"):
        empty.ask("what is [1]?")
    with pytest.raises(InputError, match="mask is 4x4 .* image is 64x48"):
        empty.add_region(Region.from_mask(np.ones((4, 4), dtype=bool)))
    with pytest.raises(InputError, match="layout"):
        Conversation(model, rgb_image, layout="inline-ish")
    with pytest.raises(InputError, match="history"):
        Conversation(model, rgb_image, history="all")


def test_image_encoded_once(tiny_model_and_processors, rgb_image, monkeypatch):
    model, vis, txt = tiny_model_and_processors
    calls = []
    original = model.encode_image
    monkeypatch.setattr(model, "encode_image", lambda image: calls.append(1) or original(image))
    c = Conversation(model, rgb_image, vis["eval"], txt["eval"])
    c.add_region(Region.from_box((4, 6, 30, 40), image_size=rgb_image.size))
    c.add_region(Region.from_points([(5, 5)], image_size=rgb_image.size))
    c.describe(1, **FAST)
    c.ask("[1] or [2]?", **FAST)
    assert len(calls) == 1


def test_deterministic_decoding_and_seeded_sampling(tiny_model_and_processors, rgb_image):
    model, vis, txt = tiny_model_and_processors

    def run(seed, **gen):
        c = Conversation(model, rgb_image, vis["eval"], txt["eval"], seed=seed)
        c.add_region(Region.from_box((4, 6, 30, 40), image_size=rgb_image.size))
        return c.region_text(1), c.ask("[1] what is it?", max_len=8, **gen)

    assert run(0) == run(0)
    assert run(0, num_beams=1) == run(0, num_beams=1)
    assert run(0)[0] != run(1)[0]  # the seed picks the box's points
    state = torch.get_rng_state()
    sampled = run(0, use_nucleus_sampling=True, top_p=0.95, temperature=1.5)
    assert torch.equal(state, torch.get_rng_state())  # sampling leaves the global RNG alone
    assert sampled == run(0, use_nucleus_sampling=True, top_p=0.95, temperature=1.5)
    c = Conversation(model, rgb_image, vis["eval"], txt["eval"])
    c.add_region(Region.from_box((4, 6, 30, 40), image_size=rgb_image.size))
    draws = {c.ask("[1]", max_len=8, use_nucleus_sampling=True, temperature=2.0, seed=s) for s in range(4)}
    assert len(draws) > 1  # sampling does sample
    with pytest.raises(ConfigError, match="top_p"):
        c.ask("[1]", use_nucleus_sampling=True, top_p=0.0)


def test_points_kept_reports_qformer_truncation(tiny_model_and_processors, rgb_image, monkeypatch):
    model, vis, txt = tiny_model_and_processors
    c = Conversation(model, rgb_image, vis["eval"], txt["eval"])
    c.add_region(Region.from_box((4, 6, 60, 40), image_size=rgb_image.size))
    assert c.region(1).points_kept == 10  # tiny preset: max_txt_len 48 keeps all ten
    monkeypatch.setattr(model, "max_txt_len", 32)  # official: [CLS] + 7 x 4 tokens + [SEP] = 30
    c.add_region(Region.from_box((4, 6, 60, 40), image_size=rgb_image.size))
    assert c.region(2).points_kept == 7


def test_reset(conv):
    conv.ask("[1] hi", **FAST)
    conv.reset()
    assert conv.turns == [] and len(conv.regions) == 2
    conv.reset(keep_regions=False)
    assert conv.regions == []
