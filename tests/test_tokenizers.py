"""The shipped tokenizers give the published token ids; official Q-Former truncation."""

import numpy as np

from regionvlm.models import tokenizers
from regionvlm.region import format_points


def test_bert_vocab_gives_published_ids_and_dec_token():
    tok = tokenizers.qformer_tokenizer()
    assert tok("Hello world! A man riding a horse.").input_ids == [
        101,
        7592,
        2088,
        999,
        1037,
        2158,
        5559,
        1037,
        3586,
        1012,
        102,
    ]
    assert len(tok) == 30523
    assert tok.convert_tokens_to_ids("[DEC]") == 30522 == tok.bos_token_id


def test_flan_t5_tokenizer_gives_published_ids():
    tok = tokenizers.t5_tokenizer()
    assert tok("translate English to German: The house is wonderful.").input_ids == [
        13959,
        1566,
        12,
        2968,
        10,
        37,
        629,
        19,
        1627,
        5,
        1,
    ]
    assert len(tok) == 32100
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert tok("").input_ids == [1]  # the empty T5 prompt of region captioning is just </s>


def _ten_points() -> str:
    pts = np.array(
        [
            [0.12, 0.34],
            [0.15, 0.40],
            [0.60, 0.71],
            [0.22, 0.05],
            [0.91, 0.33],
            [0.45, 0.56],
            [0.07, 0.88],
            [0.50, 0.50],
            [0.33, 0.66],
            [0.99, 0.01],
        ]
    )
    return format_points(pts)


def test_region_prompt_token_count_and_official_truncation(tiny_model):
    text = _ten_points()
    full = tokenizers.qformer_tokenizer()(text).input_ids
    assert len(full) == 42  # 10 points x 4 tokens + [CLS] + [SEP]
    cut = tiny_model.tokenizer([text], truncation=True, max_length=32).input_ids[0]
    assert len(cut) == 32
    kept = tiny_model.tokenizer.decode(cut[1:-1])
    assert kept.count("[") == 8 and kept.count("]") == 7  # cut inside the 8th point


def test_truncation_length_is_configurable(tiny_model):
    old = tiny_model.max_txt_len
    try:
        tiny_model.max_txt_len = 32
        assert tiny_model.tokenize_region_text([_ten_points()]).input_ids.shape[1] == 32
        tiny_model.max_txt_len = 64
        assert tiny_model.tokenize_region_text([_ten_points()]).input_ids.shape[1] == 42
    finally:
        tiny_model.max_txt_len = old
