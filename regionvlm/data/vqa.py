"""VQA file formats: LAVIS's question lists, the official VQA question/annotation files and
GQA's question files, read into :class:`VQAItem` / :class:`VQAReference` with every entry
checked (the error names the file, the entry and the expected layout).

* LAVIS question list (``vqa_val_eval.json`` of VQAv2 and OK-VQA): a JSON list of
  ``{"question_id": 262148000, "question": "...", "image": "val2014/COCO_val2014_000000262148.jpg",
  "answer": ["down", "down", ...]}``; ``image`` is relative to the image root.
* Official VQA files (scoring, as the official script): questions
  ``{"questions": [{"question_id", "image_id", "question"}, ...]}`` and annotations
  ``{"annotations": [{"question_id", "question_type", "answer_type",
  "answers": [{"answer", "answer_id", "answer_confidence"}, ...]}, ...]}``.
* GQA: LAVIS's ``testdev_balanced_questions.json`` (a list of ``{"question_id", "question",
  "image": "n161313.jpg", "answer"}``) or the original GQA file of the same name (a dict
  ``{question_id: {"imageId", "question", "answer", ...}}``; images are ``<imageId>.jpg``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from regionvlm.common.errors import InputError, MissingFileError
from regionvlm.common.io import read_json

QuestionId = Union[int, str]

LAVIS_VQA_LAYOUT = (
    'a JSON list of {"question_id": 262148000, "question": "Where is he looking?", '
    '"image": "val2014/COCO_val2014_000000262148.jpg", "answer": [10 human answers]} '
    "(LAVIS's vqa_val_eval.json)"
)
OFFICIAL_QUESTIONS_LAYOUT = (
    '{"questions": [{"question_id": ..., "image_id": ..., "question": ...}, ...]} '
    "(official OpenEnded_mscoco_val2014_questions.json)"
)
OFFICIAL_ANNOTATIONS_LAYOUT = (
    '{"annotations": [{"question_id": ..., "question_type": ..., "answer_type": ..., '
    '"answers": [{"answer": ..., "answer_id": ...}, ...]}, ...]} '
    "(official mscoco_val2014_annotations.json)"
)
GQA_LAYOUT = (
    'a JSON list of {"question_id": ..., "question": ..., "image": "n161313.jpg", "answer": "no"} '
    "(LAVIS's testdev_balanced_questions.json) or the original GQA dict "
    '{question_id: {"imageId": "n161313", "question": ..., "answer": ...}}'
)


def check_answers(answers: Sequence[str], question_id: Any) -> List[str]:
    if isinstance(answers, str):
        raise InputError(
            f"question {question_id!r}: human answers must be a list of strings, got the string {answers!r}."
        )
    answers = list(answers)
    if not answers:
        raise InputError(
            f"question {question_id!r} has no human answers; VQA accuracy needs them "
            "(an annotated split must give every question its answers)."
        )
    bad = [a for a in answers if not isinstance(a, str)]
    if bad:
        raise InputError(f"question {question_id!r}: human answers must be strings, got {bad[:3]!r}.")
    return answers


@dataclass(frozen=True)
class VQAReference:
    """What the official annotation file says about one question."""

    question_id: Any
    answers: Tuple[str, ...]
    answer_type: Optional[str] = None
    question_type: Optional[str] = None


def reference_from_official(annotation: Mapping[str, Any]) -> VQAReference:
    """A :class:`VQAReference` from one entry of an official ``*_annotations.json``."""
    answers = annotation.get("answers")
    qid = annotation.get("question_id")
    if not isinstance(answers, list):
        raise InputError(f"annotation of question {qid!r} has no `answers` list.")
    texts = []
    for a in answers:
        if not isinstance(a, Mapping) or not isinstance(a.get("answer"), str):
            raise InputError(f"annotation of question {qid!r}: each answer must be {{'answer': str, ...}}, got {a!r}.")
        texts.append(a["answer"])
    return VQAReference(
        qid, tuple(check_answers(texts, qid)), annotation.get("answer_type"), annotation.get("question_type")
    )


@dataclass(frozen=True)
class VQAItem:
    """One question: the image path is relative to the dataset's image root."""

    question_id: QuestionId
    question: str
    image: str
    answers: Tuple[str, ...] = ()
    answer_type: Optional[str] = None
    question_type: Optional[str] = None


def _field(entry: Any, key: str, kind: Union[type, Tuple[type, ...]], where: str, layout: str) -> Any:
    if not isinstance(entry, Mapping) or key not in entry:
        raise InputError(f"{where}: missing `{key}`. Expected {layout}.")
    value = entry[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = "/".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise InputError(f"{where}: `{key}` must be {names}, got {value!r}.")
    return value


def _unique_ids(items: Sequence[VQAItem], path: Path) -> None:
    seen = set()
    for item in items:
        if item.question_id in seen:
            raise InputError(f"'{path}': question_id {item.question_id!r} appears twice; ids must be unique.")
        seen.add(item.question_id)


def read_lavis_vqa_questions(path: Union[str, Path], need_answers: bool, setting: str) -> List[VQAItem]:
    """Questions of a LAVIS ``vqa_*_eval.json``; ``need_answers``: each must have human answers."""
    data = read_json(path, "VQA question file", setting, LAVIS_VQA_LAYOUT)
    if not isinstance(data, list):
        raise InputError(f"'{path}' holds a {type(data).__name__}; expected {LAVIS_VQA_LAYOUT}.")
    items = []
    for i, entry in enumerate(data):
        where = f"'{path}' entry {i}"
        qid = _field(entry, "question_id", (int, str), where, LAVIS_VQA_LAYOUT)
        where = f"'{path}' entry {i} (question_id {qid!r})"
        answers: Tuple[str, ...] = ()
        if need_answers:
            raw = entry.get("answer")
            if isinstance(raw, str):
                raw = [raw]
            if not isinstance(raw, list) or not raw or not all(isinstance(a, str) for a in raw):
                raise InputError(
                    f"{where} has no human answers (`answer` must be a non-empty list of "
                    f"strings, got {raw!r}); every question of an annotated split needs them."
                )
            answers = tuple(raw)
        items.append(
            VQAItem(
                qid,
                _field(entry, "question", str, where, LAVIS_VQA_LAYOUT),
                _field(entry, "image", str, where, LAVIS_VQA_LAYOUT),
                answers,
            )
        )
    _unique_ids(items, Path(path))
    return items


def read_official_references(
    questions_path: Union[str, Path], annotations_path: Union[str, Path], setting: str
) -> Tuple[set, Dict[QuestionId, VQAReference]]:
    """Question ids of the official question file, and the scoring reference of each annotation."""
    questions = read_json(questions_path, "official VQA question file", setting, OFFICIAL_QUESTIONS_LAYOUT)
    if not isinstance(questions, Mapping) or not isinstance(questions.get("questions"), list):
        raise InputError(f"'{questions_path}' has no `questions` list; expected {OFFICIAL_QUESTIONS_LAYOUT}.")
    question_ids = set()
    for i, q in enumerate(questions["questions"]):
        question_ids.add(
            _field(q, "question_id", (int, str), f"'{questions_path}' question {i}", OFFICIAL_QUESTIONS_LAYOUT)
        )
    annotations = read_json(annotations_path, "official VQA annotation file", setting, OFFICIAL_ANNOTATIONS_LAYOUT)
    if not isinstance(annotations, Mapping) or not isinstance(annotations.get("annotations"), list):
        raise InputError(f"'{annotations_path}' has no `annotations` list; expected {OFFICIAL_ANNOTATIONS_LAYOUT}.")
    refs: Dict[QuestionId, VQAReference] = {}
    for i, ann in enumerate(annotations["annotations"]):
        _field(ann, "question_id", (int, str), f"'{annotations_path}' annotation {i}", OFFICIAL_ANNOTATIONS_LAYOUT)
        try:
            ref = reference_from_official(ann)
        except InputError as exc:
            raise InputError(f"'{annotations_path}' annotation {i}: {exc}") from None
        refs[ref.question_id] = ref
    return question_ids, refs


def attach_official_references(
    items: Sequence[VQAItem], question_ids: set, refs: Mapping[QuestionId, VQAReference], source: str
) -> List[VQAItem]:
    """Give each question its official answers and types; a question the official files do not
    know is an error, and so is an annotated question missing from the question list (the
    official script refuses results that do not cover the annotation file)."""
    missing = [it.question_id for it in items if it.question_id not in refs or it.question_id not in question_ids]
    if missing:
        raise InputError(
            f"{len(missing)} question(s) of {source} are not in the official question/annotation "
            f"files (e.g. {missing[:5]}); the files of one split must belong together."
        )
    ours = {it.question_id for it in items}
    extra = [qid for qid in refs if qid not in ours]
    if extra:
        raise InputError(
            f"the official annotation file has {len(extra)} question(s) that {source} lacks "
            f"(e.g. {extra[:5]}); the official script scores only complete result sets, "
            "so use the question list that belongs to this annotation file."
        )
    out = []
    for it in items:
        ref = refs[it.question_id]
        out.append(VQAItem(it.question_id, it.question, it.image, ref.answers, ref.answer_type, ref.question_type))
    return out


def read_gqa_questions(path: Union[str, Path], setting: str) -> List[VQAItem]:
    """GQA questions with their answer (LAVIS list layout or the original GQA dict)."""
    data = read_json(path, "GQA question file", setting, GQA_LAYOUT)
    if isinstance(data, Mapping):  # original GQA release: {qid: {"imageId", "question", "answer"}}
        entries = []
        for qid, entry in data.items():
            image_id = _field(entry, "imageId", str, f"'{path}' question {qid!r}", GQA_LAYOUT)
            entries.append({**entry, "question_id": qid, "image": f"{image_id}.jpg"})
    elif isinstance(data, list):
        entries = data
    else:
        raise InputError(f"'{path}' holds a {type(data).__name__}; expected {GQA_LAYOUT}.")
    items = []
    for i, entry in enumerate(entries):
        qid = _field(entry, "question_id", (int, str), f"'{path}' entry {i}", GQA_LAYOUT)
        where = f"'{path}' entry {i} (question_id {qid!r})"
        answer = entry.get("answer") if isinstance(entry, Mapping) else None
        if not isinstance(answer, str):
            raise InputError(
                f"{where} has no answer (`answer` must be a string, got {answer!r}); every "
                "question of an annotated split needs one."
            )
        items.append(
            VQAItem(
                qid,
                _field(entry, "question", str, where, GQA_LAYOUT),
                _field(entry, "image", str, where, GQA_LAYOUT),
                (answer,),
            )
        )
    _unique_ids(items, Path(path))
    return items


def check_images(
    items: Sequence[VQAItem], vis_root: Union[str, Path], skip_missing: bool, setting: str, option: str
) -> Tuple[List[VQAItem], List[Dict[str, Any]]]:
    """Keep the questions whose image exists. Missing images stop the run unless
    ``skip_missing`` is set; then the skipped questions are returned (never dropped silently)."""
    root = Path(str(vis_root)).expanduser()
    if not root.is_dir():
        raise MissingFileError(
            f"image folder '{root}' does not exist. Point `{setting}` to the folder the "
            "`image` paths of the question file are relative to."
        )
    exists: Dict[str, bool] = {}
    for item in items:
        if item.image not in exists:
            exists[item.image] = (root / item.image).is_file()
    missing = sorted(name for name, ok in exists.items() if not ok)
    if missing and not skip_missing:
        raise MissingFileError(
            f"{len(missing)} image(s) referenced by the questions are missing under '{root}' "
            f"(e.g. {[str(root / m) for m in missing[:3]]}). Put them there, point `{setting}` to the "
            f"right folder, or set `{option}=true` to skip those questions (they are listed in the results)."
        )
    kept = [it for it in items if exists[it.image]]
    skipped = [{"question_id": it.question_id, "image": str(root / it.image)} for it in items if not exists[it.image]]
    return kept, skipped
