"""Batch inference over a file of regions: a caption, or an answer to its question, for each
region (docs/predict.md has the file format and every option).

    python -m regionvlm.predict --input regions.jsonl --image-root images/ --out captions.jsonl
    python -m regionvlm.predict --input qa.jsonl --task answer --out answers.jsonl
    python -m regionvlm.predict --input instances.json --out captions.jsonl --model-type tiny --checkpoint ckpt.pth
    python -m regionvlm.predict --check regions.jsonl --image-root images/     # validate only, no model
    torchrun --nproc_per_node 8 -m regionvlm.predict --input ... --out ...    # sharded, rank 0 writes

The input is JSONL (one region per line: ``image``, ``region`` box / points / polygon / rle or
none for the whole image, optional ``question``, ``caption``, ``id``) or COCO instances JSON
(every annotation a region). Every line is checked before the model is loaded: with
``--on-error stop`` (default) a bad line stops the run with every bad line's number; with
``--on-error skip`` the other lines are predicted and the bad ones are listed, with their
line numbers and reasons, in ``<out stem>.errors.jsonl``.

How the model sees a line: the regions of one image share one image encoding; a region's
``K`` points (the model's ``num_points``) are drawn from ``item_rng(seed, id)``, so a
result depends on the line alone, never on batching, sharding or resumption. Captions:
T5 gets the region's soft tokens and ``</s>`` (``model.generate``'s input and decoding
defaults: beam 5, up to 30 new tokens). Answers: the soft tokens, then the question (the
dialogue's ``qformer_first`` layout, ``--layout`` for the others; ``predict_answers``'
decoding defaults: beam 5, up to 10 new tokens, length penalty -1). Regions with different
prompts and questions share one batch.

The output (``--out``) has one row per predicted line, in input order: the line's id and
fields, ``region_text`` (the points the Q-Former read) and ``prediction``. It is written
atomically at the end; a killed run started again skips the finished units (their results
are in ``<out>.<fingerprint>.partial.rank<r>.jsonl`` beside it) and ends with the same bytes.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from regionvlm.common.cli import echo, run
from regionvlm.common.errors import ConfigError, InputError
from regionvlm.common.settings import Settings, setting

TASKS = ("caption", "answer")
LAYOUTS = ("qformer_first", "inline", "let")
# Decoding defaults per task: those of model.generate (captions) and model.predict_answers
# (answers), which tests/test_predict.py keeps equal to the methods' signatures.
TASK_GENERATION: Dict[str, Dict[str, Any]] = {
    "caption": {"num_beams": 5, "max_len": 30, "min_len": 1, "length_penalty": 1.0, "repetition_penalty": 1.0},
    "answer": {"num_beams": 5, "max_len": 10, "min_len": 1, "length_penalty": -1.0, "repetition_penalty": 1.0},
}


@dataclass(frozen=True)
class PredictSettings(Settings):
    """What a prediction run's results depend on (its resume fingerprint), plus batching."""

    task: str = setting("caption", choices=TASKS)
    seed: int = setting(42, min=0, help="seeds each region's points (with its id)")
    num_points: Optional[int] = setting(None, min=1, help="points per region (default: the model's)")
    layout: str = setting("qformer_first", choices=LAYOUTS, help="where a question's region goes")
    prompt: str = setting("{}", help="the question's template ({} is the question)")
    num_beams: int = setting(5, min=1)
    max_len: int = setting(30, min=1, help="new tokens")
    min_len: int = setting(1, min=0)
    length_penalty: float = setting(1.0)
    repetition_penalty: float = setting(1.0, min=0.0)
    batch_size: int = setting(16, min=1, help="regions per model call")
    num_workers: int = setting(2, min=0, help="image-loading threads")

    def validate(self, section: str) -> None:
        if self.prompt.count("{}") != 1:
            raise ConfigError(f"--prompt must contain '{{}}' once (where the question goes), got {self.prompt!r}.")
        self.generation()

    def generation(self) -> Any:
        from regionvlm.models.generation import GenerationSettings

        return GenerationSettings.create(
            "generation",
            num_beams=self.num_beams,
            max_len=self.max_len,
            min_len=self.min_len,
            length_penalty=self.length_penalty,
            repetition_penalty=self.repetition_penalty,
        )

    def result_fields(self) -> Dict[str, Any]:
        return {k: v for k, v in self.as_dict().items() if k != "num_workers"}

    @classmethod
    def for_task(cls, task: str, **given: Any) -> "PredictSettings":
        """The task's decoding defaults with ``given`` (None: not given) on top, checked."""
        values = {**TASK_GENERATION.get(task, {}), "task": task}
        values.update({k: v for k, v in given.items() if v is not None})
        return cls.parse(values, "predict")


# ------------------------------------------------------------------ --check
def check_file(
    path: str, image_root: Optional[str] = None, task: str = "caption", coco_region: str = "auto"
) -> Tuple[Dict[str, Any], List[Any]]:
    """Every problem of a region file (against its images too) and its summary; no model."""
    from regionvlm.data.region_files import check_images, read_region_file

    region_file = read_region_file(path, need_question=task == "answer", coco_region=coco_region, what="--check")
    root = Path(image_root).expanduser() if image_root else region_file.path.parent
    _, image_problems, missing = check_images(region_file.records, root)
    problems = sorted(region_file.problems + image_problems, key=lambda p: p.line or 0)
    bad = {p.where for p in image_problems}
    valid = [r for r in region_file.records if r.where not in bad]
    summary = {**region_file.summary(missing, valid), "image_root": str(root), "problems": len(problems)}
    return summary, problems


def format_check(summary: Dict[str, Any], problems: Sequence[Any]) -> str:
    """The ``--check`` report: every problem, then the counts."""
    kinds = summary["kinds"]
    names = {"whole": "whole image"}
    lines = [str(p) for p in problems]
    lines += [
        f"{summary['file']} ({summary['layout']}): {summary['regions']} valid region(s) "
        f"on {summary['images']} image(s)",
        "  region kinds: " + ", ".join(f"{names.get(k, k)} {n}" for k, n in kinds.items()),
        f"  questions: {summary['questions']}   captions: {summary['captions']} (blank: {summary['blank_captions']})",
        f"  images missing: {summary['images_missing']}"
        + (
            f" ({', '.join(summary['missing_images'])}{' ...' if summary['images_missing'] > 20 else ''})"
            if summary["images_missing"]
            else ""
        )
        + f"   (image root: {summary['image_root']})",
        f"  problems: {summary['problems']}",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------ the model
def build_model(
    model_type: Optional[str],
    checkpoint: Optional[str],
    cfg_path: Optional[str],
    options: Sequence[str],
    device: Any,
    seed: int = 42,
) -> Any:
    """The model of the flags (as the other commands read them), in eval mode on ``device``."""
    import torch

    from regionvlm.models import create_model, model_config

    options = list(options or [])
    bad = [o for o in options if not o.startswith("model.")]
    if bad:
        raise ConfigError(f"--options sets model.* keys only here (the flags set the rest), got {bad}.")
    if cfg_path and model_type:
        options.append(f"model.model_type={model_type}")
    model_cfg = model_config(model_type or "flant5xl", checkpoint, cfg_path, options, flag="--checkpoint")
    torch.manual_seed(seed)  # random-init parts (a preset without weights) are repeatable
    return create_model(model_cfg, device=device, is_eval=True)


# ------------------------------------------------------------------ command line
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m regionvlm.predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    io = p.add_argument_group("files")
    io.add_argument("--input", help="region file: JSONL (one region per line) or COCO instances JSON")
    io.add_argument("--out", help="predictions, JSONL (one row per region, in input order)")
    io.add_argument("--image-root", default=None, help="folder of the relative image paths (default: the file's)")
    io.add_argument("--check", metavar="FILE", default=None, help="only validate FILE: every problem + a summary")
    io.add_argument(
        "--on-error",
        choices=("stop", "skip"),
        default="stop",
        help="a bad line stops the run (default), or is skipped and listed",
    )
    io.add_argument(
        "--coco-region",
        choices=("auto", "bbox", "segmentation"),
        default="auto",
        help="COCO input: the segmentation when there is one (auto), or always the bbox",
    )
    task = p.add_argument_group("prediction")
    task.add_argument("--task", choices=TASKS, default="caption", help="caption each region, or answer its question")
    task.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="qformer_first",
        help="answers: soft tokens first (default), in place of [1] (inline), or 'Let [1] be' (let)",
    )
    task.add_argument("--prompt", default="{}", help="answers: the question's template, e.g. 'Question: {} Answer:'")
    task.add_argument("--seed", type=int, default=42, help="seeds each region's points with its id (default 42)")
    task.add_argument("--num-points", type=int, default=None, help="points per region (default: the model's K)")
    task.add_argument("--batch-size", type=int, default=16, help="regions per model call (default 16)")
    task.add_argument("--num-workers", type=int, default=2, help="image-loading threads (default 2)")
    gen = p.add_argument_group("decoding (defaults: model.generate for captions, model.predict_answers for answers)")
    gen.add_argument("--num-beams", type=int, default=None, help="beam width (5)")
    gen.add_argument(
        "--max-len", "--max-length", dest="max_len", type=int, default=None, help="new tokens (30; answers 10)"
    )
    gen.add_argument(
        "--min-len", "--min-length", dest="min_len", type=int, default=None, help="Hugging Face min_length (1)"
    )
    gen.add_argument("--length-penalty", type=float, default=None, help="1 (answers -1)")
    gen.add_argument("--repetition-penalty", type=float, default=None, help="1")
    model = p.add_argument_group("model (as train.py / eval_RIS.py)")
    model.add_argument("--model-type", default=None, help="preset: flant5xl (default, the paper's model) or tiny")
    model.add_argument("--checkpoint", default=None, help="RegionVLM checkpoint (sets model.checkpoint)")
    model.add_argument("--cfg-path", default=None, help="a YAML whose model: section to use")
    model.add_argument("--options", nargs="+", default=[], help="model.* overrides, e.g. model.max_txt_len=48")
    model.add_argument("--device", default="auto", help="auto (this rank's GPU if any), cpu, cuda, cuda:N")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    if args.check:
        summary, problems = check_file(args.check, args.image_root, args.task, args.coco_region)
        print(format_check(summary, problems))
        if problems:
            raise InputError(f"{len(problems)} problem(s) in '{args.check}' (listed above).")
        return summary
    if not args.input or not args.out:
        raise ConfigError("give --input FILE and --out FILE.jsonl (or --check FILE to validate a file).")
    settings = PredictSettings.for_task(
        args.task,
        seed=args.seed,
        num_points=args.num_points,
        layout=args.layout,
        prompt=args.prompt,
        num_beams=args.num_beams,
        max_len=args.max_len,
        min_len=args.min_len,
        length_penalty=args.length_penalty,
        repetition_penalty=args.repetition_penalty,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
    )
    from regionvlm.common import dist_utils
    from regionvlm.datasets.region_files import RegionFileSet
    from regionvlm.prediction import errors_path, predict, question_problems

    out = Path(args.out).expanduser()
    regions = RegionFileSet(
        args.input, args.image_root, need_question=args.task == "answer", coco_region=args.coco_region, what="--input"
    )
    skip = args.on_error == "skip"
    if not skip:
        regions.stop_on_problems(
            f"Fix them (python -m regionvlm.predict --check '{args.input}' lists every one), or predict the other "
            f"lines with --on-error skip (the bad ones are listed in {errors_path(out)})."
        )
    dist_utils.init_distributed_mode()
    device = dist_utils.resolve_device(args.device)
    model = build_model(args.model_type, args.checkpoint, args.cfg_path, args.options, device, args.seed)
    if args.task == "answer":
        regions.drop(question_problems(regions.records, model, settings))
        if not skip:
            regions.stop_on_problems("Shorten these questions, or skip them with --on-error skip.")
    if regions.problems:
        echo(f"[predict] {len(regions.problems)} bad line(s) skipped; listed in {errors_path(out)}")
    if not regions.records:
        raise InputError(f"'{args.input}' has no valid region to predict.")
    summary = predict(model, regions, settings, out, args.on_error)
    echo(
        f"[predict] {summary['predicted']} of {summary['regions'] + len(regions.problems)} region(s) predicted "
        f"in {summary['seconds']} s ({summary['regions_per_second']} regions/s; per rank: "
        f"{', '.join(map(str, summary['processed_per_rank']))}); {summary['skipped_lines']} skipped -> {out}"
    )
    echo(json.dumps(summary))
    return summary


if __name__ == "__main__":
    run(main)
