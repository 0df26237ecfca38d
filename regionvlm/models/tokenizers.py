"""The two tokenizers, loaded from files shipped inside the package (no network).

Q-Former: bert-base-uncased WordPiece plus ``[DEC]`` (id 30522), as BLIP-2 adds it.
T5: the Flan-T5 SentencePiece tokenizer (32100 entries including 100 sentinels).
A local directory in the Hugging Face layout may replace either (``qformer_tokenizer``,
``t5_tokenizer`` in the model config).

A replacement directory is checked before ``transformers`` reads it: given a folder without
the vocabulary file, ``transformers`` quietly builds a tokenizer of a few special tokens
(104 entries for T5) and training would run on it. So the folder must hold the vocabulary
(T5: ``tokenizer.json`` or ``spiece.model``; BERT: ``vocab.txt`` or ``tokenizer.json``),
and the loaded tokenizer must have the special tokens the model uses and a plausible size;
anything else stops with the folder, what is missing and the setting.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Optional, Sequence

from regionvlm.common.errors import InputError, require_file

# The smallest vocabularies accepted: far below the real ones (30522 and 32100), far above
# the handful of special tokens transformers creates from an empty folder.
MIN_VOCAB = 1000
T5_VOCAB_FILES = ("tokenizer.json", "spiece.model")
BERT_VOCAB_FILES = ("vocab.txt", "tokenizer.json")


def asset_dir(name: str) -> Path:
    """Path of a tokenizer directory shipped as package data."""
    return Path(str(resources.files("regionvlm") / "assets" / name))


def _tokenizer_dir(
    path: Optional[str], what: str, setting: str, published: str, shipped: str, vocab_files: Sequence[str]
) -> Path:
    directory = require_file(path or str(asset_dir(shipped)), what, setting, published)
    if not directory.is_dir():
        raise InputError(
            f"{what} '{directory}' is a file; `{setting}` must name a folder in the Hugging Face "
            f"layout (holding {' or '.join(vocab_files)})."
        )
    if not any((directory / name).is_file() for name in vocab_files):
        present = sorted(p.name for p in directory.iterdir())[:8]
        raise InputError(
            f"{what} folder '{directory}' has no vocabulary file ({' or '.join(vocab_files)}; it holds "
            f"{present or 'nothing'}). Copy the tokenizer files of {published} there or point "
            f"`{setting}` to such a folder."
        )
    return directory


def _load(loader, directory: Path, what: str, setting: str):
    try:
        return loader(str(directory), local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError, UnicodeDecodeError) as exc:
        raise InputError(
            f"cannot load the {what} from '{directory}' (`{setting}`): the files are damaged or not a "
            f"tokenizer ({type(exc).__name__}: {str(exc)[:200]})."
        ) from None
    except Exception as exc:
        if type(exc).__module__.split(".")[0] in ("tokenizers", "sentencepiece", "builtins"):
            raise InputError(
                f"cannot load the {what} from '{directory}' (`{setting}`): the files are damaged "
                f"({type(exc).__name__}: {str(exc)[:200]})."
            ) from None
        raise


def _check(tok, directory: Path, what: str, setting: str, specials: Sequence[str]) -> None:
    missing = [
        name
        for name in specials
        if getattr(tok, name, None) is None
        or (tok.convert_tokens_to_ids(getattr(tok, name)) == tok.unk_token_id and name != "unk_token")
    ]
    if len(tok) < MIN_VOCAB or missing:
        problem = f"only {len(tok)} entries" if len(tok) < MIN_VOCAB else f"no {', '.join(missing)}"
        raise InputError(
            f"the {what} in '{directory}' (`{setting}`) is not usable: {problem}. Use the complete "
            "tokenizer files of the model's checkpoint."
        )


@lru_cache(maxsize=4)
def qformer_tokenizer(path: Optional[str] = None):
    from transformers import BertTokenizer

    directory = _tokenizer_dir(
        path,
        "Q-Former tokenizer",
        "model.qformer_tokenizer",
        "https://huggingface.co/bert-base-uncased",
        "bert-base-uncased",
        BERT_VOCAB_FILES,
    )
    tok = _load(BertTokenizer.from_pretrained, directory, "Q-Former tokenizer", "model.qformer_tokenizer")
    _check(
        tok,
        directory,
        "Q-Former tokenizer",
        "model.qformer_tokenizer",
        ("cls_token", "sep_token", "pad_token", "unk_token"),
    )
    tok.add_special_tokens({"bos_token": "[DEC]"})
    return tok


@lru_cache(maxsize=4)
def t5_tokenizer(path: Optional[str] = None):
    from transformers import T5TokenizerFast

    directory = _tokenizer_dir(
        path,
        "T5 tokenizer",
        "model.t5_tokenizer",
        "https://huggingface.co/google/flan-t5-xl",
        "flan-t5",
        T5_VOCAB_FILES,
    )
    tok = _load(T5TokenizerFast.from_pretrained, directory, "T5 tokenizer", "model.t5_tokenizer")
    _check(tok, directory, "T5 tokenizer", "model.t5_tokenizer", ("eos_token", "pad_token", "unk_token"))
    return tok
