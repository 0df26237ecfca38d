"""Answer lemmatization for OK-VQA's protocol, with no model download.

The official protocol (LAVIS ``apply_lemmatizer``) runs spaCy's ``en_core_web_sm`` over
each predicted answer and replaces every token tagged NOUN or VERB by its lemma, leaving
all other tokens (AUX, ADJ, numbers, ...) as they are; OK-VQA's ground-truth answers are
stored in lemmatized form, so "dogs" must become "dog" to match. ``en_core_web_sm`` is a
model that is not on PyPI, so this module uses ``lemminflect`` instead (a PyPI package
that ships its English lemma dictionaries; ``pip install lemminflect``).

Without a tagger there is no context, so each word's part of speech is chosen by a fixed
rule that approximates what spaCy does on short answers (documented deviation):

1. Surrounding punctuation is split off the word and kept (spaCy makes it separate
   tokens; VQA normalization later removes it either way); the core is looked up
   lower-cased. A hyphenated word missing from the dictionary is lemmatized part by
   part (``t-shirts`` -> ``t-shirt``), as spaCy splits it at the hyphens.
2. A word that can be an auxiliary (``is``, ``has``, ``do`` ...) is kept: spaCy tags
   these AUX, which the official rule does not lemmatize.
3. A word ending in ``ing``/``ed`` that can be a verb takes its verb lemma
   (``running`` -> ``run``, ``cooked`` -> ``cook``).
4. Otherwise a word that can be a noun takes its (most frequent) noun lemma
   (``dogs`` -> ``dog``, ``feet`` -> ``foot``), else a verb takes its verb lemma
   (``went`` -> ``go``).
5. Everything else (adjectives, adverbs, numbers, words outside the dictionary) is kept.
   A word whose lemma equals its lower-cased form keeps its original spelling.

Words are separated by single spaces in the output, as spaCy's ``" ".join`` does.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Callable, Dict, List, Sequence, Tuple

from regionvlm.common.errors import ConfigError

_EDGE_PUNCT = re.compile(r"^(\W*)(.*?)(\W*)$", re.UNICODE)


@lru_cache(maxsize=1)
def _lemma_table() -> Callable[[str], Dict[str, Tuple[str, ...]]]:
    try:
        from lemminflect import getAllLemmas
    except ImportError:
        raise ConfigError(
            "OK-VQA's lemmatized protocol (model.apply_lemmatizer: true) needs the `lemminflect` "
            "package, which ships its English dictionaries (no download at run time): "
            "`pip install lemminflect` (or `pip install regionvlm[vqa]`). To score without "
            "lemmatization, set model.apply_lemmatizer=false (not comparable with published "
            "OK-VQA numbers)."
        ) from None
    return getAllLemmas


@lru_cache(maxsize=65536)
def lemmatize_word(word: str) -> str:
    """Lemma of one whitespace-free word by the rule in the module docstring."""
    lead, core, trail = _EDGE_PUNCT.match(word).groups()
    if not core:
        return word
    lemmas = _lemma_table()(core.lower())
    if not lemmas and "-" in core.strip("-"):
        # spaCy splits "t-shirts" into t / - / shirts; lemmatize the parts the same way.
        return lead + "-".join(lemmatize_word(part) for part in core.split("-")) + trail
    if "AUX" in lemmas:
        return word
    if core.lower().endswith(("ing", "ed")) and "VERB" in lemmas:
        lemma = lemmas["VERB"][0]
    elif "NOUN" in lemmas:
        lemma = lemmas["NOUN"][0]
    elif "VERB" in lemmas:
        lemma = lemmas["VERB"][0]
    else:
        return word
    if lemma == core.lower():
        return word
    return lead + lemma + trail


def lemmatize_answers(answers: Sequence[str]) -> List[str]:
    """Lemmatize each answer's nouns and verbs (OK-VQA protocol, see module docstring)."""
    if isinstance(answers, str):
        raise ConfigError("lemmatize_answers expects a list of answers, got one string.")
    return [" ".join(lemmatize_word(w) for w in answer.split()) for answer in answers]
