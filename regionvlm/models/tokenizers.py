"""The two tokenizers, loaded from files shipped inside the package (no network).

Q-Former: bert-base-uncased WordPiece plus ``[DEC]`` (id 30522), as BLIP-2 adds it.
T5: the Flan-T5 SentencePiece tokenizer (32100 entries including 100 sentinels).
A local directory in the Hugging Face layout may replace either (``qformer_tokenizer``,
``t5_tokenizer`` in the model config).
"""
from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Optional

from regionvlm.common.errors import require_file


def asset_dir(name: str) -> Path:
    """Path of a tokenizer directory shipped as package data."""
    return Path(str(resources.files("regionvlm") / "assets" / name))


@lru_cache(maxsize=4)
def qformer_tokenizer(path: Optional[str] = None):
    from transformers import BertTokenizer

    directory = require_file(path or str(asset_dir("bert-base-uncased")), "Q-Former tokenizer",
                             "model.qformer_tokenizer", "https://huggingface.co/bert-base-uncased")
    tok = BertTokenizer.from_pretrained(str(directory), local_files_only=True)
    tok.add_special_tokens({"bos_token": "[DEC]"})
    return tok


@lru_cache(maxsize=4)
def t5_tokenizer(path: Optional[str] = None):
    from transformers import T5TokenizerFast

    directory = require_file(path or str(asset_dir("flan-t5")), "T5 tokenizer",
                             "model.t5_tokenizer", "https://huggingface.co/google/flan-t5-xl")
    return T5TokenizerFast.from_pretrained(str(directory), local_files_only=True)
