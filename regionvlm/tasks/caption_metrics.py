"""COCO caption metrics as the ``pycocoevalcap`` package computes them (zero-shot COCO).

The authors score captions with the package's ``COCOEvalCap`` on a COCO-format ground
truth (``coco_karpathy_test_gt.json``): every caption goes through the Stanford PTB
tokenizer (lower-cased, punctuation dropped), then BLEU-1..4, METEOR, ROUGE-L, CIDEr and
SPICE are computed over the ground truth's images. :func:`score_captions` runs the
package's own tokenizer and scorers in the package's order on the package's inputs, so the
numbers are the package's (keys as it names them: ``Bleu_1``..``Bleu_4``, ``METEOR``,
``ROUGE_L``, ``CIDEr``, ``SPICE``). What it adds:

* Checks first, with messages that name the file and entry: results must be a list of
  ``{"image_id": int, "caption": str}`` (the LAVIS result file) with exactly one prediction
  per ground-truth image (the package would crash on a missing or duplicate one, and
  refuse an unknown id, with a bare assertion).
* Java: the PTB tokenizer (so every metric), METEOR and SPICE run ``java``; without it the
  call stops with an error saying so and how to install it.
* SPICE needs the Stanford CoreNLP 3.6.0 jars that the package downloads on first use.
  Offline, or when they are absent, SPICE is reported under ``"skipped"`` with the reason
  instead of the package's download attempt; a SPICE run that fails is reported the same
  way, so the other metrics are never lost.
* The package's progress output goes to stderr, never to stdout.

Command line (stdout is the metrics JSON; user errors: one ``error:`` line, exit code 2,
through ``regionvlm.common.cli.run``)::

    python -m regionvlm.tasks.caption_metrics --gt coco_karpathy_test_gt.json \\
        --results test_epochbest.json [--out metrics.json] [--skip METEOR] [--skip SPICE]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Collection, Dict, Hashable, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from regionvlm.common.errors import ConfigError, InputError, MissingFileError
from regionvlm.common.io import atomic_write_json, require_output_file
from regionvlm.data.coco_karpathy import (
    CaptionGroundTruth,
    caption_gt_from_dataset,
    check_caption_text,
    is_int,
    load_json,
    read_caption_gt,
    require_fields,
)

METRICS: Tuple[str, ...] = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE")
SKIPPABLE: Tuple[str, ...] = ("METEOR", "SPICE")  # the slow Java scorers (METEOR ~15 s to start, SPICE minutes)
JAVA_INSTALL = "apt-get install default-jre-headless"
_SHOWN = 5  # ids listed in a mismatch message

GroundTruthLike = Union[str, Path, Mapping[str, Any], CaptionGroundTruth]
ResultsLike = Union[str, Path, Sequence[Mapping[str, Any]]]


def _import_package() -> None:
    try:
        import pycocoevalcap.eval  # noqa: F401
    except ImportError:
        raise MissingFileError(
            "the caption metrics need the `pycocoevalcap` package: pip install pycocoevalcap "
            "(or install this project with its `caption` extra)."
        ) from None


def require_java() -> str:
    """Path of ``java``; a clear error if there is none."""
    java = shutil.which("java")
    if java is None:
        raise MissingFileError(
            "Java is not installed (no `java` on PATH). pycocoevalcap runs Java for its PTB tokenizer, which "
            "prepares the captions of every metric (Bleu_1-4, METEOR, ROUGE_L, CIDEr, SPICE), and for METEOR and "
            f"SPICE themselves. Install a Java runtime, e.g. `{JAVA_INSTALL}` on Debian/Ubuntu."
        )
    return java


def spice_model_jars() -> Tuple[Path, Path]:
    """The two Stanford CoreNLP jars SPICE loads, where the package looks for them."""
    _import_package()
    from pycocoevalcap.spice import get_stanford_models as models

    lib = Path(models.SPICEDIR).resolve() / models.SPICELIB
    return lib / f"{models.JAR}.jar", lib / f"{models.JAR}-models.jar"


def spice_unavailable_reason() -> Optional[str]:
    """Why SPICE cannot run here (None if its CoreNLP jars are in place). Checking the
    files instead of calling the package avoids its network download."""
    missing = [p.name for p in spice_model_jars() if not p.is_file()]
    if not missing:
        return None
    return (
        f"needs Stanford CoreNLP models downloaded on first use; no network is assumed, so none was attempted "
        f"({', '.join(missing)} not in {spice_model_jars()[0].parent}; put them there, from "
        "stanford-corenlp-full-2015-12-09.zip, to compute SPICE)"
    )


def read_caption_results(path: str | Path) -> List[Dict[str, Any]]:
    """Read a LAVIS caption result file: a JSON list of ``{"image_id", "caption"}``."""
    data = load_json(path, "caption results")
    if not isinstance(data, list):
        raise InputError(
            f'\'{path}\' must hold a JSON list of {{"image_id": int, "caption": str}} entries, '
            f"got {type(data).__name__}."
        )
    return data


def check_caption_results(results: Any, gt: CaptionGroundTruth, source: str = "<results>") -> List[Dict[str, Any]]:
    """Validate predictions against ``gt``: well-formed entries and exactly one per
    ground-truth image. Returns fresh ``{"image_id", "caption"}`` dicts in input order."""
    if not isinstance(results, (list, tuple)):
        raise InputError(
            f'{source}: results must be a list of {{"image_id", "caption"}} entries, got {type(results).__name__}.'
        )
    clean: List[Dict[str, Any]] = []
    for i, entry in enumerate(results):
        where = f"{source} entry {i}"
        require_fields(entry, ("image_id", "caption"), where)
        if not is_int(entry["image_id"]):
            raise InputError(
                f"{where}: 'image_id' must be an integer (as in the ground truth), got {entry['image_id']!r}."
            )
        if not isinstance(entry["caption"], str):
            raise InputError(
                f"{where} (image {entry['image_id']}): 'caption' must be a string, "
                f"got {type(entry['caption']).__name__}."
            )
        check_caption_text(entry["caption"], f"{where} (image {entry['image_id']})")
        clean.append({"image_id": entry["image_id"], "caption": entry["caption"]})
    counts: Dict[int, int] = {}
    for entry in clean:
        counts[entry["image_id"]] = counts.get(entry["image_id"], 0) + 1
    expected = set(gt.image_ids)
    missing = sorted(expected - counts.keys())
    extra = sorted(counts.keys() - expected)
    duplicate = sorted(i for i, n in counts.items() if n > 1)
    if missing or extra or duplicate:
        parts = [
            f"{name}: {len(ids)} (first: {ids[:_SHOWN]})"
            for name, ids in (
                ("missing", missing),
                ("not in the ground truth", extra),
                ("predicted more than once", duplicate),
            )
            if ids
        ]
        raise InputError(
            f"{source} must give exactly one caption for each of the {len(expected)} images of '{gt.path}'; "
            f"image ids {'; '.join(parts)}."
        )
    return clean


def caption_gt_from_references(
    items: Sequence[Tuple[Hashable, Sequence[str]]],
) -> Tuple[CaptionGroundTruth, Dict[Hashable, int]]:
    """A COCO-format ground truth for captioned items that ship without one (regions): item
    ``k`` (in order) becomes image ``k + 1`` with its references as annotations. Returns the
    ground truth and each item id's image id."""
    numbering: Dict[Hashable, int] = {}
    images, annotations = [], []
    for item_id, refs in items:
        if item_id in numbering:
            raise InputError(f"caption item id {item_id!r} appears twice; ids must be unique.")
        numbering[item_id] = len(numbering) + 1
        images.append({"id": numbering[item_id]})
        annotations += [{"image_id": numbering[item_id], "caption": r} for r in refs]
    data = {"images": images, "annotations": [dict(a, id=k + 1) for k, a in enumerate(annotations)]}
    return caption_gt_from_dataset(data, "<references>"), numbering


def _as_gt(gt: GroundTruthLike) -> CaptionGroundTruth:
    if isinstance(gt, CaptionGroundTruth):
        return gt
    if isinstance(gt, Mapping):
        return caption_gt_from_dataset(gt)
    return read_caption_gt(gt)


def _scorers(skip: Collection[str]) -> Iterator[Tuple[str, Any, Union[str, List[str]]]]:
    """The package's scorers, in the package's order, minus the skipped ones."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.spice.spice import Spice

    table = [
        ("Bleu", lambda: Bleu(4), ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"]),
        ("METEOR", Meteor, "METEOR"),
        ("ROUGE_L", Rouge, "ROUGE_L"),
        ("CIDEr", Cider, "CIDEr"),
        ("SPICE", Spice, "SPICE"),
    ]
    for name, make, method in table:
        if name not in skip:
            yield name, make, method


def score_captions(gt: GroundTruthLike, results: ResultsLike, *, skip: Iterable[str] = ()) -> Dict[str, Any]:
    """Score predicted captions against a COCO-format caption ground truth.

    ``gt``: the ground-truth file, its loaded JSON, or a :class:`CaptionGroundTruth`.
    ``results``: a LAVIS result file or the list itself (``{"image_id", "caption"}``).
    ``skip``: any of ``METEOR``, ``SPICE`` not to compute.
    Returns ``{"Bleu_1": ..., ..., "CIDEr": ..., ["SPICE": ...,] "skipped": {metric: reason}}``
    with the package's values as Python floats.
    """
    skip = set(skip)
    unknown = skip - set(SKIPPABLE)
    if unknown:
        raise ConfigError(f"cannot skip {sorted(unknown)}: only {list(SKIPPABLE)} can be skipped.")
    gt_obj = _as_gt(gt)
    source = f"'{results}'" if isinstance(results, (str, Path)) else "results"
    rows = read_caption_results(results) if isinstance(results, (str, Path)) else results
    predictions = check_caption_results(rows, gt_obj, source)
    _import_package()
    require_java()

    skipped: Dict[str, str] = {m: "skipped on request" for m in SKIPPABLE if m in skip}
    if "SPICE" not in skipped:
        reason = spice_unavailable_reason()
        if reason:
            skipped["SPICE"] = reason
    from pycocoevalcap.eval import COCOEvalCap
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    from pycocotools.coco import COCO

    scores: Dict[str, float] = {}
    with contextlib.redirect_stdout(sys.stderr):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt_obj.dataset)
        coco.createIndex()
        coco_res = coco.loadRes(predictions)
        evaluator = COCOEvalCap(coco, coco_res)  # as the package: the ground truth's images
        image_ids = evaluator.params["image_id"]
        tokenizer = PTBTokenizer()
        refs = tokenizer.tokenize({i: coco.imgToAnns[i] for i in image_ids})
        hyps = tokenizer.tokenize({i: coco_res.imgToAnns[i] for i in image_ids})
        for name, make, method in _scorers(skipped):
            scorer = make()
            try:
                score, _ = scorer.compute_score(refs, hyps)
            except subprocess.CalledProcessError as e:
                if name != "SPICE":
                    raise
                skipped["SPICE"] = f"the SPICE jar failed (java exit code {e.returncode}; its messages are on stderr)"
                continue
            finally:
                del scorer  # METEOR's Java process ends with its object
            if isinstance(method, list):
                scores.update({m: float(s) for m, s in zip(method, score)})
            else:
                scores[method] = float(score)
    out: Dict[str, Any] = {m: scores[m] for m in METRICS if m in scores}
    out["skipped"] = skipped
    return out


@contextlib.contextmanager
def _stdout_fd_to_stderr() -> Iterator[None]:
    """Send everything written to file descriptor 1 (incl. Java child processes) to 2."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m regionvlm.tasks.caption_metrics",
        description="COCO caption metrics (pycocoevalcap) of a LAVIS caption result file; prints them as JSON.",
    )
    parser.add_argument("--gt", required=True, help="COCO-format caption ground truth, e.g. coco_karpathy_test_gt.json")
    parser.add_argument("--results", required=True, help='JSON list of {"image_id": int, "caption": str}')
    parser.add_argument("--out", help="also write the metrics JSON here")
    parser.add_argument("--skip", action="append", default=[], choices=SKIPPABLE, help="do not compute this metric")
    args = parser.parse_args(argv)
    if args.out:  # found out before minutes of scoring, not after
        require_output_file(args.out)
    with _stdout_fd_to_stderr():
        metrics = score_captions(args.gt, args.results, skip=args.skip)
    if args.out:
        atomic_write_json(args.out, metrics)
    print(json.dumps(metrics, indent=1))
    return metrics


if __name__ == "__main__":
    from regionvlm.common.cli import run

    run(main)
