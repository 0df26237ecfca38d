"""The one evaluation loop every evaluation task runs on (RIS, REC, VCR, VQA/GQA, captioning,
region classification), in the manner of detectron2's ``inference_on_dataset``.

A task supplies only what is its own, as a :class:`SplitEvaluator`: the units of work of a
split (:meth:`~SplitEvaluator.units`), how to load a unit's inputs (on prefetch threads),
how to process a unit with the model (score, generate, answer) and how to turn every
unit's output into metrics and results (:meth:`~SplitEvaluator.finish`). The loop
(:func:`run_split`) owns everything else, the same way for every task:

1. a :func:`fingerprint` of (settings, data identity, model) names the progress logs, so a
   log written with other settings, another split or another model is never mixed in;
2. the units are sharded over ranks (strided), their inputs prefetched on threads
   (:class:`Prefetcher`), each output appended to ``<prefix>.<fingerprint>.partial.rank<r>.jsonl``
   as it finishes (a killed run resumes; torn rows are redone), with a progress bar;
3. every rank gathers every output; the main process alone calls ``finish`` and writes the
   result files atomically; every rank returns the main process's metrics (one rule);
4. the progress logs are removed.

Result files (:func:`result_prefix`): ``<task>[-<variant>]_<dataset>_<split>.json`` holds the
data identity, the settings, the metrics and the per-item predictions;
``<prefix>_metrics.json`` the same without the per-item part; a task may add files in a
benchmark's official format as ``<prefix>_<format>.json``. The variant names settings that
make another experiment of the same split (``ris-box``, ``vcr-ranking``), so evaluations
written to one folder never overwrite each other.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from abc import ABC, abstractmethod
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import (
    Any,
    Callable,
    ClassVar,
    Dict,
    Generic,
    Hashable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
)

import numpy as np
import torch

from regionvlm.common import dist_utils
from regionvlm.common.cli import echo
from regionvlm.common.errors import ConfigError
from regionvlm.common.io import JsonlAppender, atomic_write_json, ensure_dir, read_jsonl_rows
from regionvlm.common.settings import Settings, setting
from regionvlm.models.generation import GenerationSettings
from regionvlm.models.protocol import RegionStepModel
from regionvlm.tasks.base_task import BaseTask, parse_run_settings

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
U = TypeVar("U")


@dataclass(frozen=True)
class EvalSettings(Settings):
    """``run:`` keys every evaluation task reads."""

    seed: int = setting(42, min=0, help="seed of every random draw (region points)")
    test_splits: Optional[List[str]] = setting(None, help="splits to evaluate (default: every built split)")

    # Keys that cannot change a number in the results (left out of the resume fingerprint).
    NOT_IN_RESULTS: ClassVar[Tuple[str, ...]] = ("num_workers", "test_splits")

    def result_fields(self) -> Dict[str, Any]:
        return {k: v for k, v in self.as_dict().items() if k not in self.NOT_IN_RESULTS}

    @classmethod
    def from_run_cfg(cls, run_cfg: Optional[Mapping[str, Any]]) -> Any:
        """These settings from a whole ``run:`` section (the runner's keys are known there)."""
        return parse_run_settings(cls, run_cfg)


@dataclass(frozen=True)
class BatchEvalSettings(EvalSettings):
    """Tasks that batch their items and load inputs on threads."""

    batch_size_eval: int = setting(8, min=1, help="items per model call")
    num_workers: int = setting(4, min=0, help="input-loading threads (0: load in the main thread)")


@dataclass(frozen=True)
class DecodingEvalSettings(BatchEvalSettings):
    """Tasks that generate text: LAVIS's decoding keys (each task sets its protocol's defaults)."""

    num_beams: int = setting(5, min=1)
    max_len: int = setting(30, min=1, help="new tokens")
    min_len: int = setting(1, min=0, help="Hugging Face min_length (decoder tokens incl. the start token)")

    def validate(self, section: str) -> None:
        self.generation()  # min_len <= max_len and the rest, checked where decoding is defined

    def generation(self) -> GenerationSettings:
        return GenerationSettings.create("run", num_beams=self.num_beams, max_len=self.max_len, min_len=self.min_len)


def item_rng(seed: int, key: str) -> np.random.Generator:
    """A generator that depends only on (seed, key): stable across processes and runs."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


@contextlib.contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The unwrapped model in eval mode under ``torch.inference_mode``; its mode is restored after."""
    module = getattr(model, "module", model)
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            yield module
    finally:
        module.train(was_training)


def region_image_embeds(model: Any, images: torch.Tensor, image_index: Sequence[int]) -> torch.Tensor:
    """ViT features with one row per region: each distinct image of a batch is encoded once
    (the ViT is the cost) and its row repeated for every region on it."""
    embeds = model.encode_image(images.to(model.device))
    return embeds[torch.as_tensor(image_index, device=embeds.device)]


def model_identity(model: torch.nn.Module) -> Dict[str, Any]:
    """What of the model a result depends on: its class, sizes, precision and a probe of the
    weights that differ between checkpoints (sums of a few trained tensors)."""
    module = getattr(model, "module", model)
    params = dict(module.named_parameters())
    probe = {}
    for name in (
        "query_tokens",
        "t5_proj.weight",
        "t5_proj.bias",
        "ln_vision.weight",
        "Qformer.bert.embeddings.word_embeddings.weight",
    ):
        if name in params:
            probe[name] = repr(float(params[name].detach().double().sum()))
    precision = getattr(module, "precision", None)
    return {
        "class": type(module).__name__,
        "image_size": getattr(module, "image_size", None),
        "max_txt_len": getattr(module, "max_txt_len", None),
        "precision": getattr(precision, "name", None),
        "weights": probe,
    }


def fingerprint(settings: Any, data_identity: Mapping[str, Any], model: torch.nn.Module) -> str:
    """Short hash of (settings that change results, data identity, model identity)."""
    blob = json.dumps(
        {"settings": _result_settings(settings), "data": dict(data_identity), "model": model_identity(model)},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# ----------------------------------------------------------------- resumable loop
def finished_items(out_dir: str | Path, name: str) -> Dict[str, Any]:
    """Results already logged by any rank of an earlier (possibly killed) run."""
    done: Dict[str, Any] = {}
    torn = 0
    for log in sorted(Path(out_dir).glob(f"{name}.partial.rank*.jsonl")):
        rows, bad = read_jsonl_rows(log)
        torn += bad
        for row in rows:
            if "key" in row and "result" in row:
                done[row["key"]] = row["result"]
            else:
                torn += 1
    if torn:
        echo(f"[{name}] {torn} unreadable progress row(s) (a killed write) will be redone")
    return done


def run_resumable(
    items: Sequence[T],
    key: Callable[[T], str],
    process: Callable[[T], Any],
    out_dir: str | Path,
    name: str,
    desc: str = "eval",
    weight: Optional[Callable[[T], int]] = None,
    unit: str = "it",
    done: Optional[Mapping[str, Any]] = None,
) -> List[Any]:
    """Process ``items`` (each rank a strided shard), logging each result as it finishes;
    return every item's result in ``items`` order, on every rank. ``name`` should carry the
    run's :func:`fingerprint`. ``weight`` (default 1 per item) counts an item in the progress
    bar's ``unit`` (e.g. the regions of a batch), so its rate and ETA are in that unit.
    ``done`` is :func:`finished_items` when the caller has read it already."""
    out_dir = ensure_dir(out_dir)
    keys = [key(item) for item in items]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{name}: item keys must be unique.")
    rank, world = dist_utils.get_rank(), dist_utils.get_world_size()
    done = finished_items(out_dir, name) if done is None else done
    shard = list(zip(keys, items))[rank::world]
    mine = {k: done[k] for k, _ in shard if k in done}
    todo = [(k, item) for k, item in shard if k not in done]
    if done:
        echo(f"[{name}] resuming: {len(done)} of {len(items)} items already done")
    from tqdm import tqdm

    size = weight or (lambda item: 1)
    total = sum(size(item) for _, item in shard)
    with (
        JsonlAppender(out_dir / f"{name}.partial.rank{rank}.jsonl") as log,
        tqdm(
            total=total,
            initial=total - sum(size(item) for _, item in todo),
            desc=desc,
            unit=unit,
            disable=not dist_utils.is_main_process(),
            dynamic_ncols=True,
        ) as bar,
    ):
        for k, item in todo:
            result = process(item)
            log.write({"key": k, "result": result})
            mine[k] = result
            bar.update(size(item))
    merged: Dict[str, Any] = {}
    for part in dist_utils.all_gather_objects(mine):
        merged.update(part)
    return [merged[k] for k in keys]


def clear_partials(out_dir: str | Path, name: str) -> None:
    """Remove progress logs once the final results file is written (main process only)."""
    dist_utils.barrier()
    if dist_utils.is_main_process():
        for log in Path(out_dir).glob(f"{name}.partial.rank*.jsonl"):
            log.unlink()


# ----------------------------------------------------------------- prefetching
class Prefetcher(Generic[K, T]):
    """Loads the inputs of the next ``depth`` keys (in ``order``) on threads while the model
    works on the current one. A key asked out of order is loaded on the spot; loads of keys
    passed over are cancelled. ``workers=0`` loads in the calling thread."""

    def __init__(self, order: Sequence[K], load: Callable[[K], T], depth: int = 2, workers: int = 2) -> None:
        self._order = list(order)
        self._position = {k: i for i, k in enumerate(self._order)}
        self._load = load
        self._depth = depth
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers)) if workers > 0 and depth > 0 else None
        self._futures: Dict[K, Future] = {}

    def get(self, key: K) -> T:
        position = self._position.get(key)
        if self._pool is None or position is None:
            return self._load(key)
        for stale in [k for k in self._futures if self._position[k] < position]:
            self._futures.pop(stale).cancel()
        for k in self._order[position + 1 : position + 1 + self._depth]:
            if k not in self._futures:
                self._futures[k] = self._pool.submit(self._load, k)
        future = self._futures.pop(key, None)
        return future.result() if future is not None else self._load(key)

    def close(self) -> None:
        if self._pool is not None:
            for future in self._futures.values():
                future.cancel()
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "Prefetcher[K, T]":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def check_image_size(model: torch.nn.Module, dataset: Any, name: str) -> None:
    """A dataset whose image processor resizes to another size than the model takes is a
    configuration error (builders check it too; datasets built by hand reach here)."""
    size = getattr(getattr(dataset, "vis_processor", None), "image_size", None)
    expected = getattr(model, "image_size", None)
    if size is not None and expected is not None and int(size) != int(expected):
        raise ConfigError(
            f"`datasets.{name}` processes images to {size} px but the model takes {expected} px; set "
            f"`datasets.{name}.vis_processor.eval.image_size` to {expected} (or null)."
        )


# ----------------------------------------------------------------- one split, one loop
def result_prefix(task: str, dataset: str, split: str, variant: str = "") -> str:
    """``<task>[-<variant>]_<dataset>_<split>``: the stem of every file of one evaluation."""
    head = f"{task}-{variant}" if variant else task
    return f"{head}_{dataset}_{split}"


@dataclass(frozen=True)
class Skip:
    """What a :meth:`SplitEvaluator.load` returns for a unit it cannot load but may skip
    (a missing file under ``skip_missing``): ``process`` lists the unit's items as skipped."""

    reason: str


@dataclass
class SplitResult:
    """What :meth:`SplitEvaluator.finish` returns: ``metrics`` (flat, JSON scalars: what the
    runner reports), ``details`` (the per-item part of the results file: predictions,
    skipped items ...) and ``extra_files`` (``format -> JSON object``, written as
    ``<prefix>_<format>.json``: a benchmark's official result layout)."""

    metrics: Dict[str, Any]
    details: Dict[str, Any] = field(default_factory=dict)
    extra_files: Dict[str, Any] = field(default_factory=dict)


class SplitEvaluator(ABC, Generic[U]):
    """What a task supplies to evaluate one split (see the module docstring).

    ``units`` are the unit-of-work keys and specs in result order (an image with its queries,
    a batch of questions); ``load`` runs on prefetch threads (decode, preprocess), ``process``
    on the main thread with the model and returns a JSON-serializable output; ``finish``
    runs on the main process only, with every unit's output in ``units`` order."""

    def __init__(self, model: Any, dataset: Any, settings: Any, output_dir: Path) -> None:
        self.model = model
        self.dataset = dataset
        self.settings = settings
        self.output_dir = Path(output_dir)

    @abstractmethod
    def units(self) -> List[Tuple[str, U]]:
        """``(key, spec)`` of every unit of work, in result order; keys unique and stable."""

    def load(self, spec: U) -> Any:
        """The inputs of one unit (prefetch threads); default: the spec itself."""
        return spec

    @abstractmethod
    def process(self, spec: U, inputs: Any) -> Any:
        """One unit through the model: a JSON-serializable output."""

    @abstractmethod
    def finish(self, outputs: List[Any]) -> SplitResult:
        """Metrics and results from every unit's output (main process only)."""

    def identity(self) -> Mapping[str, Any]:
        """What the results depend on besides the model and the settings (default: the dataset's)."""
        return self.dataset.identity()

    def prefetch(self) -> Tuple[int, int]:
        """(depth, threads) of input prefetching (default: ``num_workers`` threads, 2 ahead)."""
        workers = int(getattr(self.settings, "num_workers", 0))
        return (2 if workers else 0), workers

    unit_name: ClassVar[str] = "it"  # what the progress bar counts (see :meth:`weight`)

    def weight(self, spec: U) -> int:
        """How many of ``unit_name`` a unit counts for in the progress bar (default 1)."""
        return 1

    def describe(self) -> str:
        """The progress bar's label."""
        return f"{getattr(self.dataset, 'eval_name', '')} {getattr(self.dataset, 'split', '')}".strip()


def run_units(evaluator: SplitEvaluator, log_name: str) -> List[Any]:
    """The loop's middle, for any caller that writes its own files: every unit of
    ``evaluator`` through ``process`` (inputs prefetched, units sharded over ranks, each
    output logged as ``<log_name>.partial.rank<r>.jsonl`` in ``evaluator.output_dir`` as it
    finishes, so a killed run resumes), every unit's output on every rank in ``units`` order.
    ``log_name`` should carry the run's :func:`fingerprint`; :func:`clear_partials` removes
    the logs once the results are written."""
    out = evaluator.output_dir
    units = evaluator.units()
    specs = dict(units)
    keys = [k for k, _ in units]
    depth, workers = evaluator.prefetch()
    done = finished_items(out, log_name)
    rank, world = dist_utils.get_rank(), dist_utils.get_world_size()
    pending = [k for k in keys[rank::world] if k not in done]  # this rank's share still to run: what to prefetch
    with Prefetcher(pending, lambda k: evaluator.load(specs[k]), depth, workers) as ahead:
        return run_resumable(
            keys,
            key=str,
            process=lambda k: evaluator.process(specs[k], ahead.get(k)),
            out_dir=out,
            name=log_name,
            desc=evaluator.describe(),
            weight=lambda k: evaluator.weight(specs[k]),
            unit=evaluator.unit_name,
            done=done,
        )


def run_split(evaluator: SplitEvaluator, task: str, dataset: str, split: str, variant: str = "") -> Dict[str, Any]:
    """The loop: fingerprint -> prefetch -> resumable, sharded run -> ``finish`` and atomic
    writes on the main process -> its metrics on every rank -> progress logs removed."""
    out = evaluator.output_dir
    prefix = result_prefix(task, dataset, split, variant)
    log_name = f"{prefix}.{fingerprint(evaluator.settings, evaluator.identity(), evaluator.model)}"
    outputs = run_units(evaluator, log_name)
    metrics = None
    if dist_utils.is_main_process():
        result = evaluator.finish(outputs)
        metrics = result.metrics
        head = {
            "task": task,
            "variant": variant or None,
            "dataset": dataset,
            "split": split,
            "data": dict(evaluator.identity()),
            "settings": _result_settings(evaluator.settings),
            "metrics": metrics,
        }
        atomic_write_json(out / f"{prefix}.json", {**head, **result.details})
        atomic_write_json(out / f"{prefix}_metrics.json", head)
        for fmt, obj in result.extra_files.items():
            atomic_write_json(out / f"{prefix}_{fmt}.json", obj)
    metrics = dist_utils.all_gather_objects(metrics)[0]  # every rank returns the main process's metrics
    clear_partials(out, log_name)
    return metrics


def _result_settings(settings: Any) -> Dict[str, Any]:
    return settings.result_fields() if hasattr(settings, "result_fields") else dict(settings)


# ----------------------------------------------------------------- the task base
class EvalTask(BaseTask, ABC):
    """An evaluation task: ``evaluate`` runs its :class:`SplitEvaluator` through
    :func:`run_split` on every selected split inside :func:`evaluating` and names the metrics
    ``<dataset>_<split>/<metric>`` (plus LAVIS's ``agg_metrics`` when one split runs).
    Subclasses set ``NAME``, ``Settings``, ``DATASET_TYPES`` (what they can score),
    ``Evaluator``, ``HEADLINE`` (the metric behind ``agg_metrics``) and, when a setting makes
    another experiment of a split, ``VARIANT``."""

    NAME = ""
    Settings = EvalSettings
    DATASET_TYPES: Tuple[type, ...] = ()
    Evaluator: type = SplitEvaluator
    HEADLINE = ""
    VARIANT: Optional[Tuple[str, Any]] = None  # (setting, its default): see variant()

    def select(self, datasets: Mapping[str, Mapping[str, Any]], settings: EvalSettings) -> List[Tuple[str, str, Any]]:
        """``(builder name, split, dataset)`` of every split to evaluate."""
        wanted = settings.test_splits
        jobs = []
        for name, splits in datasets.items():
            for split, dataset in splits.items():
                if wanted is not None and split not in wanted:
                    continue
                if not isinstance(dataset, self.DATASET_TYPES):
                    raise ConfigError(self.wrong_dataset_message(name, split, dataset))
                jobs.append((name, split, dataset))
        if not jobs:
            have = {n: sorted(s) for n, s in datasets.items()}
            raise ConfigError(f"no dataset split to evaluate: run.test_splits={wanted} but the datasets have {have}.")
        return jobs

    def wrong_dataset_message(self, name: str, split: str, dataset: Any) -> str:
        kinds = ", ".join(t.__name__ for t in self.DATASET_TYPES)
        return (
            f"task '{self.NAME}' scores {kinds} datasets; `datasets.{name}` ({split}) built a "
            f"{type(dataset).__name__}. Use a matching builder or run.task."
        )

    def variant(self, settings: Any) -> str:
        """The setting that makes another experiment of the same split (part of the file
        names): ``VARIANT = (key, default)`` names it; its value, or "" at the default."""
        if self.VARIANT is None:
            return ""
        key, default = self.VARIANT
        value = getattr(settings, key)
        return "" if value == default else str(value)

    def dataset_variant(self, settings: Any, dataset: Any) -> str:
        """The variant of one dataset's results: :meth:`variant`, unless a dataset setting also
        makes another experiment (REC's detected candidates)."""
        return self.variant(settings)

    def prepare(self, model: RegionStepModel, settings: Any) -> Any:
        """The settings with what comes from the model filled in: ``num_points`` left unset is
        the model's K (a task that sets it overrides the model explicitly)."""
        if getattr(settings, "num_points", 0) is None:
            return settings.replace(num_points=int(model.num_points))
        return settings

    def evaluate(
        self, model: torch.nn.Module, datasets: Dict[str, Dict[str, Any]], run_cfg: Any, output_dir: Path
    ) -> Dict[str, Any]:
        settings = self.parse_settings(run_cfg)
        jobs = self.select(datasets, settings)
        metrics: Dict[str, Any] = {}
        with evaluating(model) as module:
            settings = self.prepare(module, settings)
            for name, split, dataset in jobs:
                check_image_size(module, dataset, name)
                eval_name = getattr(dataset, "eval_name", name)
                evaluator = self.Evaluator(module, dataset, settings, Path(output_dir))
                result = run_split(evaluator, self.NAME, eval_name, split, self.dataset_variant(settings, dataset))
                self.report(eval_name, split, result)
                metrics.update({f"{eval_name}_{split}/{k}": v for k, v in result.items()})
                if len(jobs) == 1:
                    metrics["agg_metrics"] = self.aggregate(result)
        return metrics

    def report(self, eval_name: str, split: str, metrics: Mapping[str, Any]) -> None:
        """One line per split on the console (default: the headline metric)."""
        value = metrics.get(self.HEADLINE)
        shown = "n/a" if value is None else (f"{value:.2f}" if isinstance(value, float) else str(value))
        echo(f"[{self.NAME}] {eval_name}_{split}: {self.HEADLINE} {shown}")

    def aggregate(self, metrics: Dict[str, Any]) -> Any:
        """LAVIS's ``agg_metrics`` of one split (default: the ``HEADLINE`` metric)."""
        return metrics.get(self.HEADLINE)
