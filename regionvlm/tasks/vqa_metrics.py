"""VQA accuracy (VQAv2, OK-VQA) and GQA exact match, as the official code computes them.

Published numbers for RegionVLM and BLIP-2 come from LAVIS's copy of the official VQA
evaluation script (``vqaEval.py``, docs/evaluation.md). This module re-implements that
script's algorithm; scores are comparable with published numbers only because every
quirk below is reproduced, so none of them may be "fixed" silently.

Definition. For a prediction ``p`` and the ``n`` human answers of a question (10 in
VQAv2 and OK-VQA), the accuracy is the mean over the ``n`` leave-one-out subsets of
``min(1, #answers in the subset equal to p / 3)``: with 10 answers, the average over the
10 subsets of 9 ("10 choose 9"). Three or more matches in a subset give 1; a prediction
matched by exactly 3 of 10 humans scores (7 * 1 + 3 * 2/3) / 10 = 0.9.

Processing of the PREDICTION (every question):
  1. ``\\n`` and ``\\t`` become spaces, then the text is stripped.
  2. Punctuation (:func:`process_punctuation`). The marks are ``; / [ ] " { } ( ) = + \\ _
     - > < @ ` , ? !``. Apostrophes, colons, ``* # % & $ ~ |`` are NOT punctuation here.
     One decision is made for the whole text, from the ORIGINAL text: if any mark in the
     list appears next to a space (``"p "`` or ``" p"``, checked mark by mark) or the text
     contains a digit-comma-digit sequence (``1,000``), that mark is deleted; otherwise it
     is replaced by a space. The digit-comma rule therefore deletes EVERY mark in texts like
     ``"1,000-2,000"`` -> ``"10002000"``, and ``"t-shirt"`` becomes ``"t shirt"``.
  3. Periods: the official pattern is ``(?!<=\\d)(\\.)(?!\\d)``. Its first group was meant
     as a look-behind but is a negative LOOK-AHEAD for the literal text ``<=`` + digit, so
     it never blocks anything: every period not followed by a digit is removed (``"5."`` ->
     ``"5"``, ``"mr. t"`` -> ``"mr t"``, ``"3.14"`` and ``".5"`` stay). The official call
     ``sub("", text, re.UNICODE)`` passes ``re.UNICODE`` (= 32) as the positional
     ``count`` argument, so at most 32 periods are removed.
  4. Lower-case, split on whitespace (so runs of spaces collapse), map the number words
     ``zero``..``ten`` to digits and ``none`` to ``"0"`` (only these 12 words; "eleven"
     stays), drop the articles ``a an the`` (after the number mapping), then expand the
     contraction table word by word (``dont`` -> ``don't``). Quirks of that table: the
     entries ``Id've I'dve Im Ive`` contain capitals and can never fire on lower-cased
     text; ``somebody'd`` maps to ``somebodyd`` (the reverse direction of all others).

Processing of the HUMAN answers (the idiosyncrasy that matters most):
  * If all answers of a question are identical strings, they are used exactly as stored:
    no stripping, no lower-casing, no number words, no articles, no punctuation. So a
    unanimous ``"t-shirt"`` can never be matched (the prediction ``t-shirt`` becomes
    ``t shirt``) and a unanimous ``"2."`` never matches a prediction (which becomes
    ``"2"``).
  * If they disagree, each gets step 2 and 3 only (punctuation and periods), never
    step 1 or 4: human answers are not lower-cased and ``"two"`` stays ``"two"`` while a
    predicted ``"two"`` becomes ``"2"``. (The VQAv2/OK-VQA annotation files already store
    normalized answers, which is why this rarely shows.)
  * The official script overwrites the stored answers in place; scoring twice with the
    same objects would process them twice. This module never mutates its inputs.
  * Leave-one-out: the official script drops from each subset every answer RECORD equal
    to the held-out record; records carry a unique ``answer_id`` in the official files,
    so exactly one is dropped. Here answers are plain strings and the subset drops the
    held-out POSITION, which is the same thing for the official files.

Aggregates, as the official ``setAccuracy``: overall / per answer type / per question
type = ``round(100 * mean(per-question accuracy), 2)`` over unrounded per-question values;
the per-question value reported is ``round(100 * acc, 2)``.

GQA (LAVIS's ``GQATask``, inference_method "generate"): the prediction gets step 2, 3
and 4 (not step 1), the ground-truth answer is used as stored, and the score is exact
string equality; accuracy = 100 * mean, not rounded. As above, ``"t-shirt"`` answers can
never be matched.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

from regionvlm.common.errors import InputError
from regionvlm.data.vqa import VQAReference, check_answers

PUNCTUATION: Tuple[str, ...] = (
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
)
NUMBER_WORDS: Dict[str, str] = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
ARTICLES: Tuple[str, ...] = ("a", "an", "the")
# The official table, entry for entry (including its unreachable capitalized keys and the
# reversed "somebody'd" entry, see the module docstring).
CONTRACTIONS: Dict[str, str] = {
    "aint": "ain't",
    "arent": "aren't",
    "cant": "can't",
    "couldve": "could've",
    "couldnt": "couldn't",
    "couldn'tve": "couldn't've",
    "couldnt've": "couldn't've",
    "didnt": "didn't",
    "doesnt": "doesn't",
    "dont": "don't",
    "hadnt": "hadn't",
    "hadnt've": "hadn't've",
    "hadn'tve": "hadn't've",
    "hasnt": "hasn't",
    "havent": "haven't",
    "hed": "he'd",
    "hed've": "he'd've",
    "he'dve": "he'd've",
    "hes": "he's",
    "howd": "how'd",
    "howll": "how'll",
    "hows": "how's",
    "Id've": "I'd've",
    "I'dve": "I'd've",
    "Im": "I'm",
    "Ive": "I've",
    "isnt": "isn't",
    "itd": "it'd",
    "itd've": "it'd've",
    "it'dve": "it'd've",
    "itll": "it'll",
    "let's": "let's",
    "maam": "ma'am",
    "mightnt": "mightn't",
    "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've",
    "mightve": "might've",
    "mustnt": "mustn't",
    "mustve": "must've",
    "neednt": "needn't",
    "notve": "not've",
    "oclock": "o'clock",
    "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at",
    "shant": "shan't",
    "shed've": "she'd've",
    "she'dve": "she'd've",
    "she's": "she's",
    "shouldve": "should've",
    "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll",
    "somebodys": "somebody's",
    "someoned": "someone'd",
    "someoned've": "someone'd've",
    "someone'dve": "someone'd've",
    "someonell": "someone'll",
    "someones": "someone's",
    "somethingd": "something'd",
    "somethingd've": "something'd've",
    "something'dve": "something'd've",
    "somethingll": "something'll",
    "thats": "that's",
    "thered": "there'd",
    "thered've": "there'd've",
    "there'dve": "there'd've",
    "therere": "there're",
    "theres": "there's",
    "theyd": "they'd",
    "theyd've": "they'd've",
    "they'dve": "they'd've",
    "theyll": "they'll",
    "theyre": "they're",
    "theyve": "they've",
    "twas": "'twas",
    "wasnt": "wasn't",
    "wed've": "we'd've",
    "we'dve": "we'd've",
    "weve": "we've",
    "werent": "weren't",
    "whatll": "what'll",
    "whatre": "what're",
    "whats": "what's",
    "whatve": "what've",
    "whens": "when's",
    "whered": "where'd",
    "wheres": "where's",
    "whereve": "where've",
    "whod": "who'd",
    "whod've": "who'd've",
    "who'dve": "who'd've",
    "wholl": "who'll",
    "whos": "who's",
    "whove": "who've",
    "whyll": "why'll",
    "whyre": "why're",
    "whys": "why's",
    "wont": "won't",
    "wouldve": "would've",
    "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've",
    "yall": "y'all",
    "yall'll": "y'all'll",
    "y'allll": "y'all'll",
    "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've",
    "youd": "you'd",
    "youd've": "you'd've",
    "you'dve": "you'd've",
    "youll": "you'll",
    "youre": "you're",
    "youve": "you've",
}

_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")  # sic: see the module docstring
_PERIOD_STRIP_COUNT = int(re.UNICODE)  # sic: the official call passes re.UNICODE as `count`
_DIGIT_COMMA = re.compile(r"(\d)(,)(\d)")
ROUND_DIGITS = 2  # the official `n`


def process_punctuation(text: str) -> str:
    """Official punctuation and period handling (steps 2 and 3 of the module docstring)."""
    digit_comma = _DIGIT_COMMA.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        if (mark + " " in text or " " + mark in text) or digit_comma:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_STRIP.sub("", out, _PERIOD_STRIP_COUNT)


def process_digit_article(text: str) -> str:
    """Lower-case, number words -> digits, drop articles, expand contractions (step 4)."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize_vqa_prediction(prediction: str) -> str:
    """The official processing of a predicted answer (steps 1-4)."""
    text = prediction.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text))


def process_human_answers(answers: Sequence[str]) -> List[str]:
    """Human answers as the official script compares them: punctuation handling only,
    and only when the answers are not all identical."""
    answers = list(answers)
    if len(set(answers)) > 1:
        return [process_punctuation(a) for a in answers]
    return answers


def vqa_accuracy(prediction: str, answers: Sequence[str], question_id: Any = None) -> float:
    """Accuracy in [0, 1] of one prediction against its human answers (official algorithm)."""
    if not isinstance(prediction, str):
        raise InputError(f"question {question_id!r}: the prediction must be a string, got {prediction!r}.")
    humans = process_human_answers(check_answers(answers, question_id))
    pred = normalize_vqa_prediction(prediction)
    matches = [h == pred for h in humans]
    total = sum(matches)
    # Leave-one-out over positions: the subset without answer i has total - matches[i] matches.
    return sum(min(1.0, (total - m) / 3.0) for m in matches) / len(humans)


def _percent(values: Sequence[float]) -> float:
    return round(100.0 * float(sum(values)) / len(values), ROUND_DIGITS)


def score_vqa(predictions: Sequence[str], references: Sequence[VQAReference]) -> Dict[str, Any]:
    """Official VQA accuracy of aligned predictions and references.

    Returns ``overall``, ``perAnswerType`` and ``perQuestionType`` (percent, 2 decimals; the
    type tables only hold questions whose reference has that field), ``num_questions`` and
    ``per_question``: one ``{"prediction_normalized", "accuracy"}`` per question (percent).
    """
    if len(predictions) != len(references):
        raise InputError(f"{len(predictions)} predictions for {len(references)} questions.")
    if not references:
        raise InputError("no questions to score.")
    accs: List[float] = []
    by_answer_type: Dict[str, List[float]] = {}
    by_question_type: Dict[str, List[float]] = {}
    per_question = []
    for pred, ref in zip(predictions, references):
        acc = vqa_accuracy(pred, ref.answers, ref.question_id)
        accs.append(acc)
        if ref.answer_type is not None:
            by_answer_type.setdefault(ref.answer_type, []).append(acc)
        if ref.question_type is not None:
            by_question_type.setdefault(ref.question_type, []).append(acc)
        per_question.append(
            {"prediction_normalized": normalize_vqa_prediction(pred), "accuracy": round(100.0 * acc, ROUND_DIGITS)}
        )
    return {
        "overall": _percent(accs),
        "perAnswerType": {k: _percent(v) for k, v in by_answer_type.items()},
        "perQuestionType": {k: _percent(v) for k, v in by_question_type.items()},
        "num_questions": len(accs),
        "per_question": per_question,
    }


def normalize_gqa_prediction(prediction: str) -> str:
    """LAVIS's GQA processing of a generated answer: punctuation, then digits/articles."""
    return process_digit_article(process_punctuation(prediction))


def gqa_match(prediction: str, answer: str) -> bool:
    """Exact match of the normalized prediction with the ground truth AS STORED."""
    return normalize_gqa_prediction(prediction) == answer


def score_gqa(
    predictions: Sequence[str], answers: Sequence[str], question_ids: Optional[Sequence[Any]] = None
) -> Dict[str, Any]:
    """GQA accuracy (percent, unrounded as in LAVIS) and per-question results."""
    if len(predictions) != len(answers):
        raise InputError(f"{len(predictions)} predictions for {len(answers)} questions.")
    if not answers:
        raise InputError("no questions to score.")
    ids = list(question_ids) if question_ids is not None else list(range(len(answers)))
    per_question = []
    for qid, pred, gt in zip(ids, predictions, answers):
        if not isinstance(gt, str):
            raise InputError(f"GQA question {qid!r}: the answer must be a string, got {gt!r}.")
        if not isinstance(pred, str):
            raise InputError(f"GQA question {qid!r}: the prediction must be a string, got {pred!r}.")
        norm = normalize_gqa_prediction(pred)
        per_question.append({"prediction_normalized": norm, "correct": norm == gt})
    correct = sum(q["correct"] for q in per_question)
    return {
        "overall": 100.0 * correct / len(per_question),
        "num_questions": len(per_question),
        "per_question": per_question,
    }
