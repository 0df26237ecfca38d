"""The official VQA accuracy and GQA exact match on hand-made cases, one rule at a time."""

from __future__ import annotations

import sys

import pytest

from regionvlm.common.errors import ConfigError, InputError
from regionvlm.data.vqa import VQAReference, reference_from_official
from regionvlm.processors import vqa_lemmatizer
from regionvlm.tasks.vqa_metrics import (
    gqa_match,
    normalize_gqa_prediction,
    normalize_vqa_prediction,
    process_digit_article,
    process_human_answers,
    process_punctuation,
    score_gqa,
    score_vqa,
    vqa_accuracy,
)


def ten(match: str, k: int) -> list:
    """Ten human answers, ``k`` of them equal to ``match`` (the others all different)."""
    return [match] * k + [f"other{i}" for i in range(10 - k)]


# ------------------------------------------------------------- 10-choose-9 averaging
@pytest.mark.parametrize("k, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_leave_one_out_average(k, expected):
    # k matches: k subsets lose one match (k-1 left), 10-k subsets keep all k.
    assert vqa_accuracy("dog", ten("dog", k)) == pytest.approx(expected)


def test_leave_one_out_counts_positions_not_distinct_strings():
    # 3 equal answers among 3 answers: each subset of 2 has 2 matches -> 2/3.
    assert vqa_accuracy("cat", ["cat", "cat", "cat"]) == pytest.approx(2 / 3)
    assert vqa_accuracy("cat", ["cat"]) == 0.0  # one answer: the subset without it is empty


# ------------------------------------------------------------- punctuation
@pytest.mark.parametrize(
    "text, expected",
    [
        ("red/blue", "red blue"),  # mark not next to a space: replaced by a space
        ("red / blue", "red  blue"),  # mark next to a space: deleted
        ("yes!", "yes "),
        ("(yes)", " yes "),
        ("1,000", "1000"),  # digit-comma-digit: every mark deleted ...
        ("1,000-2,000", "10002000"),  # ... including the hyphen
        ("a,b", "a b"),
        ("don't", "don't"),  # apostrophes are not punctuation
        ("50%", "50%"),  # nor is %
        ("a-b c -d", "ab c d"),  # one decision per mark, for the whole text
    ],
)
def test_process_punctuation(text, expected):
    assert process_punctuation(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("5.", "5"),  # the "look-behind" is really a look-ahead: a period after a digit goes
        ("3.14", "3.14"),  # a period before a digit stays
        (".5", ".5"),
        ("mr. t", "mr t"),
        ("a.b", "ab"),
    ],
)
def test_period_rule(text, expected):
    assert process_punctuation(text) == expected


def test_at_most_32_periods_are_removed():
    assert process_punctuation("." * 40) == "." * 8


# ------------------------------------------------------------- digits, articles, contractions
@pytest.mark.parametrize(
    "text, expected",
    [
        ("Two", "2"),
        ("none", "0"),
        ("ten", "10"),
        ("eleven", "eleven"),
        ("two dogs", "2 dogs"),
        ("a dog", "dog"),
        ("The Dog", "dog"),
        ("an apple", "apple"),
        ("the", ""),
        ("a one", "1"),
        ("dont", "don't"),
        ("isnt it", "isn't it"),
        ("Im", "im"),  # the "Im" entry can never fire
        ("somebody'd", "somebodyd"),  # reversed entry, as official
        ("  lots   of\tspace ", "lots of space"),
    ],
)
def test_process_digit_article(text, expected):
    assert process_digit_article(text) == expected


def test_prediction_normalization_chain():
    assert normalize_vqa_prediction("  The Two dogs.\n") == "2 dogs"
    assert vqa_accuracy("Two.", ten("2", 4)) == 1.0
    assert vqa_accuracy("a Dog", ten("dog", 3)) == pytest.approx(0.9)
    assert vqa_accuracy("dont", ten("don't", 3)) == pytest.approx(0.9)


# ------------------------------------------------------------- human answers
def test_unanimous_human_answers_are_used_verbatim():
    assert process_human_answers(["t-shirt"] * 10) == ["t-shirt"] * 10
    assert vqa_accuracy("t-shirt", ["t-shirt"] * 10) == 0.0  # prediction becomes "t shirt"
    assert vqa_accuracy("2", ["2."] * 10) == 0.0


def test_disagreeing_human_answers_get_punctuation_only():
    humans = ["t-shirt"] * 3 + ["shirt"] * 7
    assert process_human_answers(humans)[:3] == ["t shirt"] * 3
    assert vqa_accuracy("t-shirt", humans) == pytest.approx(0.9)
    # no lower-casing and no number words for humans, while the prediction gets both
    assert vqa_accuracy("two", ["two"] * 5 + ["three"] * 5) == 0.0
    assert vqa_accuracy("Yes", ["Yes"] * 5 + ["no"] * 5) == 0.0
    assert vqa_accuracy("yes", ["yes"] * 5 + ["no"] * 5) == 1.0


def test_inputs_are_not_mutated():
    humans = ["t-shirt"] * 3 + ["shirt"] * 7
    vqa_accuracy("t-shirt", humans)
    assert humans[0] == "t-shirt"


def test_missing_or_malformed_answers_are_errors():
    with pytest.raises(InputError, match="no human answers"):
        vqa_accuracy("yes", [], question_id=7)
    with pytest.raises(InputError, match="list of strings"):
        vqa_accuracy("yes", "yes")
    with pytest.raises(InputError, match="must be strings"):
        vqa_accuracy("yes", ["yes", None])
    with pytest.raises(InputError, match="no `answers` list"):
        reference_from_official({"question_id": 1})
    with pytest.raises(InputError, match="no human answers"):
        reference_from_official({"question_id": 1, "answers": []})


def test_reference_from_official():
    ann = {
        "question_id": 5,
        "answer_type": "number",
        "question_type": "how many",
        "answers": [{"answer": "2", "answer_id": i + 1, "answer_confidence": "yes"} for i in range(10)],
    }
    ref = reference_from_official(ann)
    assert ref == VQAReference(5, ("2",) * 10, "number", "how many")


# ------------------------------------------------------------- aggregation
def test_score_vqa_aggregates_like_setAccuracy():
    refs = [
        VQAReference(1, tuple(ten("yes", 3)), "yes/no", "is the"),  # 0.9
        VQAReference(2, tuple(ten("no", 10)), "yes/no", "is the"),  # 1.0
        VQAReference(3, tuple(ten("2", 1)), "number", "how many"),  # 0.3
        VQAReference(4, tuple(ten("red", 0)), "other", "what color"),
    ]  # 0.0
    report = score_vqa(["yes", "no", "two", "blue"], refs)
    assert report["overall"] == 55.0
    assert report["perAnswerType"] == {"yes/no": 95.0, "number": 30.0, "other": 0.0}
    assert report["perQuestionType"] == {"is the": 95.0, "how many": 30.0, "what color": 0.0}
    assert [q["accuracy"] for q in report["per_question"]] == [90.0, 100.0, 30.0, 0.0]
    assert report["per_question"][2]["prediction_normalized"] == "2"
    assert report["num_questions"] == 4


def test_score_vqa_rounds_only_the_aggregate():
    refs = [VQAReference(i, tuple(ten("x", k))) for i, k in enumerate([1, 1, 0])]  # 0.3, 0.3, 0.0
    report = score_vqa(["x", "x", "x"], refs)
    assert report["overall"] == 20.0
    assert report["perAnswerType"] == {} and report["perQuestionType"] == {}
    with pytest.raises(InputError):
        score_vqa(["x"], refs)


# ------------------------------------------------------------- GQA
def test_gqa_normalizes_the_prediction_only():
    assert normalize_gqa_prediction("The dog.") == "dog"
    assert gqa_match("The dog.", "dog")
    assert gqa_match("Two", "2")
    assert not gqa_match("dog", "Dog")  # ground truth is not normalized
    assert not gqa_match("t-shirt", "t-shirt")  # prediction becomes "t shirt"
    report = score_gqa(["yes", "No.", "left"], ["yes", "no", "right"], ["a", "b", "c"])
    assert report["overall"] == pytest.approx(200 / 3)  # unrounded, as LAVIS
    assert [q["correct"] for q in report["per_question"]] == [True, True, False]
    with pytest.raises(InputError, match="must be a string"):
        score_gqa(["yes"], [None])


# ------------------------------------------------------------- OK-VQA lemmatizer
def test_lemmatizer_nouns_and_verbs():
    pytest.importorskip("lemminflect")
    got = vqa_lemmatizer.lemmatize_answers(
        [
            "dogs",
            "playing tennis",
            "is",
            "Dogs.",
            "feet",
            "went",
            "better",
            "2 cats",
            "t-shirts",
            "",
            "umbrellas  on  sale",
        ]
    )
    assert got == [
        "dog",
        "play tennis",
        "is",
        "dog.",
        "foot",
        "go",
        "better",
        "2 cat",
        "t-shirt",
        "",
        "umbrella on sale",
    ]


def test_lemmatizer_missing_package_is_a_clear_error(monkeypatch):
    vqa_lemmatizer._lemma_table.cache_clear()
    vqa_lemmatizer.lemmatize_word.cache_clear()
    monkeypatch.setitem(sys.modules, "lemminflect", None)  # makes `import lemminflect` fail
    try:
        with pytest.raises(ConfigError, match="pip install lemminflect"):
            vqa_lemmatizer.lemmatize_answers(["dogs"])
    finally:
        monkeypatch.undo()
        vqa_lemmatizer._lemma_table.cache_clear()
        vqa_lemmatizer.lemmatize_word.cache_clear()
