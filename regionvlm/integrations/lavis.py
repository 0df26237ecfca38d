"""RegionVLM inside LAVIS's own registry, for environments that have ``salesforce-lavis``.

    import regionvlm.integrations.lavis                      # registers into lavis.common.registry
    from lavis.models import load_model_and_preprocess
    model, vis, txt = load_model_and_preprocess("regionvlm_t5", "tiny", is_eval=True)

Importing this module registers adapters of the project's components, found by name in the
project's registry, into LAVIS's registry (whose ``register_*`` insist on LAVIS base classes):

- models (``regionvlm_t5`` with its presets ``flant5xl``, ``pretrain_flant5xl``, ``tiny``): a
  class deriving from the project's model and from LAVIS's ``BaseModel``, so every method is
  the project's. LAVIS reads a preset's processors by name from LAVIS's registry, so each
  preset is handed to LAVIS as a copy (written once per process to a temporary folder) whose
  processor names are the ones registered here.
- processors: the project's, deriving also from LAVIS's ``BaseProcessor``.
- dataset builders and tasks (``ris``, ``vcr``, ``region_captioning``, ...): thin LAVIS
  classes that call the project's. A task evaluates a whole split in one go (sharded,
  resumable, seeded per item) instead of LAVIS's batch-by-batch ``valid_step``: LAVIS's
  runner calls ``task.evaluation(model, data_loader)`` and the adapter hands the loader's
  dataset to the project's ``evaluate``; results files go to LAVIS's ``result_dir``.
- runner ``runner_base_cpu``: LAVIS's ``RunnerBase`` that also runs on one CPU process. As
  shipped, LAVIS's runner copies every batch on a CUDA stream (``PrefetchLoader``), calls
  ``torch.distributed.barrier()`` after each training epoch, and returns no model when the
  model already sits on ``run.device`` (it only wraps a model it moves). This runner builds
  plain loaders on CPU, skips that barrier when no process group exists, and returns an
  unmoved model as it is; otherwise it is ``runner_base``.

A name LAVIS already uses for something of its own (processor ``blip_caption``, builder
``coco_vqa``, task ``vqa`` ...) is registered with the prefix ``regionvlm_``;
:func:`lavis_name` tells which name a component got.

``python -m regionvlm.integrations.lavis --cfg-path X.yaml`` runs a LAVIS-format config the
way LAVIS's ``train.py`` (``run.evaluate: false``) and ``evaluate.py`` (``true``) do.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import lavis.common.optims  # noqa: F401  (registers LAVIS's lr schedulers, as LAVIS's train.py does)
import lavis.runners.runner_base as lavis_runner_module
import lavis.tasks as lavis_tasks
import numpy as np
import torch
from lavis.common.registry import registry as lavis_registry
from lavis.datasets.builders.base_dataset_builder import (
    BaseDatasetBuilder as LavisBaseDatasetBuilder,
)
from lavis.models.base_model import BaseModel as LavisBaseModel
from lavis.processors.base_processor import BaseProcessor as LavisBaseProcessor
from lavis.runners.runner_base import RunnerBase as LavisRunnerBase
from lavis.tasks.base_task import BaseTask as LavisBaseTask
from omegaconf import DictConfig, OmegaConf

from regionvlm.common.errors import ConfigError
from regionvlm.common.io import atomic_write_text
from regionvlm.common.registry import registry as project_registry

PREFIX = "regionvlm_"
CPU_RUNNER = "runner_base_cpu"
KINDS = ("processor", "model", "builder", "task")
# ``run:`` keys whose value the adapter decides: LAVIS asks for one split at a time.
RUN_KEYS_DECIDED_BY_LAVIS = ("test_splits",)

_NAMES: Dict[str, Dict[str, str]] = {kind: {} for kind in KINDS}  # project name -> LAVIS name
_CONFIG_DIR: Optional[Path] = None


# ------------------------------------------------------------------------------ names
def lavis_name(kind: str, name: str) -> str:
    """The name under which the project's ``kind`` ``name`` is registered in LAVIS."""
    try:
        return _NAMES[kind][name]
    except KeyError:
        have = sorted(_NAMES.get(kind, {}))
        raise ConfigError(f"no project {kind} '{name}' is registered in LAVIS; registered: {have}.") from None


def project_name(kind: str, name: str) -> str:
    """The project's name of a LAVIS-registered component (other names are returned as given)."""
    for ours, theirs in _NAMES[kind].items():
        if theirs == name:
            return ours
    return name


def _identifier(kind: str, name: str) -> str:
    """A module-level class name for a generated adapter (so instances pickle)."""
    return f"Lavis{kind.capitalize()}_" + re.sub(r"\W", lambda m: f"_{ord(m.group()):x}_", name)


def _config_dir() -> Path:
    """Where LAVIS's copies of the presets live (one private folder per process)."""
    global _CONFIG_DIR
    if _CONFIG_DIR is None:
        _CONFIG_DIR = Path(tempfile.mkdtemp(prefix="regionvlm-lavis-"))
        atexit.register(shutil.rmtree, _CONFIG_DIR, True)
    return _CONFIG_DIR


# ------------------------------------------------------------------------------ models
def _lavis_preset(model_cls: type, model_type: str, model_name: str) -> Path:
    """The project's preset YAML with LAVIS's names for its processors (interpolations such as
    ``${oc.env:REGIONVLM_WEIGHTS,weights}`` are kept and resolve when LAVIS reads the file)."""
    cfg = OmegaConf.load(model_cls.default_config_path(model_type))
    if cfg.get("model") is not None and cfg.model.get("arch") is not None:
        cfg.model.arch = model_name
    for section in ("vis_processor", "text_processor"):
        for spec in (OmegaConf.select(cfg, f"preprocess.{section}", default=None) or {}).values():
            if spec is not None and spec.get("name") is not None:
                spec.name = lavis_name("processor", spec.name)
    path = _config_dir() / "models" / model_name / f"{model_type}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, OmegaConf.to_yaml(cfg))
    return path


def _model_adapter(name: str, model_cls: type, registered_as: str) -> type:
    presets = {t: str(_lavis_preset(model_cls, t, registered_as)) for t in model_cls.PRETRAINED_MODEL_CONFIG_DICT}

    def default_config_path(cls, model_type: str) -> str:
        if model_type not in presets:
            raise ConfigError(f"unknown model_type '{model_type}' for {registered_as}; available: {sorted(presets)}.")
        return presets[model_type]

    return type(
        _identifier("model", registered_as),
        (model_cls, LavisBaseModel),
        {
            "__doc__": f"The project's model '{name}' as a LAVIS model (every method is the project's).",
            "PRETRAINED_MODEL_CONFIG_DICT": presets,
            "default_config_path": classmethod(default_config_path),
        },
    )


# ------------------------------------------------------------------------------ builders
class ProjectBuilder(LavisBaseDatasetBuilder):
    """A LAVIS builder that builds with one of the project's builders (``project_builder``).

    LAVIS's own builder constructor (downloads, ``build_info``) is not used: the section goes
    to the project's builder as it is, with the model's image size and the run's seed (given
    here, else read from the LAVIS config of the current run)."""

    project_builder: type
    regionvlm_component: Tuple[str, str]
    registered_as = ""

    def __init__(self, cfg: Any = None, image_size: Optional[int] = None, seed: Optional[int] = None) -> None:
        self.config = cfg if cfg is not None else OmegaConf.create()
        run = lavis_registry.get("configuration", no_warning=True)
        if image_size is None and run is not None:
            image_size = run.model_cfg.get("image_size", None)
        if seed is None and run is not None:
            seed = run.run_cfg.get("seed", None)
        self.image_size = image_size
        self.seed = seed

    @classmethod
    def default_config_path(cls, type: str = "default") -> str:
        """LAVIS loads a default section for every dataset; the project's defaults live in its
        builders, so this is an empty section."""
        path = _config_dir() / "datasets" / f"{_identifier('builder', cls.registered_as)}.yaml"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, OmegaConf.to_yaml({"datasets": {cls.registered_as: {}}}))
        return str(path)

    def build_datasets(self) -> Dict[str, Any]:
        builder = self.project_builder(self.config, image_size=self.image_size, seed=self.seed)
        return builder.build_datasets()


# ------------------------------------------------------------------------------ tasks
class ProjectConfig:
    """A LAVIS ``Config`` as the project's tasks read it: the same sections, LAVIS names of
    builders and models turned back into the project's, and ``run:`` limited to the keys the
    task reads (plus the seed its builders get): LAVIS's own keys (``lr_sched``,
    ``dist_url`` ...) are no settings of the project's tasks, which refuse unknown keys."""

    def __init__(self, lavis_cfg: Any, task_cls: type) -> None:
        model = OmegaConf.create(OmegaConf.to_container(lavis_cfg.model_cfg, resolve=False))
        if model.get("arch") is not None:
            model.arch = project_name("model", str(model.arch))
        datasets = lavis_cfg.datasets_cfg or {}
        self.model_cfg: DictConfig = model
        self.datasets_cfg: DictConfig = OmegaConf.create(
            {project_name("builder", str(k)): v for k, v in datasets.items()}
        )
        self.run_cfg: DictConfig = OmegaConf.create(project_run_settings(lavis_cfg.run_cfg, task_cls))
        self.lavis_run_cfg = lavis_cfg.run_cfg
        self.config = OmegaConf.create({"model": self.model_cfg, "datasets": self.datasets_cfg, "run": self.run_cfg})


def project_run_settings(run_cfg: Any, task_cls: type) -> Dict[str, Any]:
    """The ``run:`` keys a project task reads, from a LAVIS ``run:`` section."""
    run = OmegaConf.to_container(run_cfg, resolve=True) if run_cfg is not None else {}
    settings = getattr(task_cls, "Settings", None)
    if settings is not None:
        known = set(settings.keys()) | {"seed"}
        run = {k: v for k, v in run.items() if k in known}
    for key in RUN_KEYS_DECIDED_BY_LAVIS:
        run.pop(key, None)
    return run


class ProjectTask(LavisBaseTask):
    """A LAVIS task that runs one of the project's tasks (``project_task``).

    ``build_datasets`` and ``train_step`` are the project task's (``train_epoch`` first sets
    the training datasets' epoch, as the project's runner does); ``build_model`` builds the
    LAVIS-registered model and places it as the project's runner does (its precision policy
    on ``run.device``); ``evaluation(model, data_loader)`` evaluates the loader's whole
    dataset with the project task's ``evaluate`` and ``after_evaluation`` returns its metrics
    (with ``agg_metrics``, which LAVIS's runner needs on validation splits)."""

    project_task: type
    regionvlm_component: Tuple[str, str]
    registered_as = ""

    def __init__(self, project: Any = None, cfg: Optional[ProjectConfig] = None) -> None:
        super().__init__()
        self.project = project if project is not None else self.project_task.setup_task(None)
        self.project_cfg = cfg
        self.datasets: Dict[str, Dict[str, Any]] = {}

    @classmethod
    def setup_task(cls, cfg: Any = None, **kwargs: Any) -> "ProjectTask":
        view = ProjectConfig(cfg, cls.project_task) if cfg is not None else None
        return cls(cls.project_task.setup_task(view), view)

    def build_datasets(self, cfg: Any) -> Dict[str, Dict[str, Any]]:
        self.project_cfg = ProjectConfig(cfg, self.project_task)
        self.datasets = self.project.build_datasets(self.project_cfg)
        return self.datasets

    def build_model(self, cfg: Any) -> torch.nn.Module:
        """The model on the run's device, its weights read straight into that device's dtypes."""
        from regionvlm.common.dist_utils import resolve_device

        model_cfg = cfg.model_cfg
        model_cls = lavis_registry.get_model_class(model_cfg.arch)
        if model_cls is None:
            raise ConfigError(
                f"model.arch '{model_cfg.arch}' is not registered in LAVIS; registered: {lavis_registry.list_models()}."
            )
        run = cfg.run_cfg
        device = resolve_device(str(run.get("device", "cpu")))
        return model_cls.from_config(model_cfg, device=device, is_eval=bool(run.get("evaluate", False)))

    def train_step(self, model: torch.nn.Module, samples: Dict[str, Any]) -> torch.Tensor:
        return self.project.train_step(model, samples)

    def train_epoch(self, epoch: int, *args: Any, **kwargs: Any) -> Dict[str, Any]:
        """LAVIS's epoch, after telling the training datasets which epoch it is (their
        sampling and curricula depend on it, as under the project's runner)."""
        splits = self.project_cfg.lavis_run_cfg.get("train_splits", None) if self.project_cfg is not None else None
        for by_split in self.datasets.values():
            for split, dataset in by_split.items():
                if split in (splits or ["train"]) and hasattr(dataset, "set_epoch"):
                    dataset.set_epoch(epoch)
        return super().train_epoch(epoch, *args, **kwargs)

    def before_evaluation(self, model: torch.nn.Module, dataset: Any, **kwargs: Any) -> None:
        hook = getattr(model, "before_evaluation", None)
        if hook is not None:
            hook(dataset=dataset, task_type=type(self))

    def evaluation(self, model: torch.nn.Module, data_loader: Any, cuda_enabled: bool = True) -> Dict[str, Any]:
        dataset = getattr(data_loader, "dataset", None)
        name, split = self._locate(dataset)
        run_cfg = self.project_cfg.run_cfg if self.project_cfg is not None else OmegaConf.create()
        return self.project.evaluate(model, {name: {split: dataset}}, run_cfg, self._result_dir())

    def after_evaluation(
        self, val_result: Mapping[str, Any], split_name: str = "", epoch: Any = None, **kwargs: Any
    ) -> Dict[str, Any]:
        return dict(val_result)

    def _locate(self, dataset: Any) -> Tuple[str, str]:
        for name, splits in self.datasets.items():
            for split, built in splits.items():
                if built is dataset:
                    return name, split
        raise ConfigError(
            f"task '{self.registered_as}' was asked to evaluate a {type(dataset).__name__} that its "
            "build_datasets(cfg) did not build; build the datasets with this task (as LAVIS's "
            "train.py/evaluate.py do) before creating the runner."
        )

    @staticmethod
    def _result_dir() -> Path:
        registered = lavis_registry.get_path("result_dir")
        if registered is None:
            raise ConfigError(
                "the evaluation writes its results to LAVIS's result_dir, which a LAVIS runner "
                "registers: evaluate through a runner (runner.evaluate())."
            )
        return Path(registered)


# ------------------------------------------------------------------------------ runner
class _HostLoader:
    """LAVIS's ``PrefetchLoader`` without the CUDA stream: batches stay on the host."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[Any]:
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)


class _DistributedWithoutGroup:
    """``torch.distributed`` as LAVIS's runner module sees it on one CPU process: ``barrier()``
    is a no-op while no process group exists (LAVIS calls it after every training epoch)."""

    @staticmethod
    def barrier(*args: Any, **kwargs: Any) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.distributed, name)


@contextlib.contextmanager
def _replaced(module: Any, **attrs: Any) -> Iterator[None]:
    saved = {name: getattr(module, name) for name in attrs}
    for name, value in attrs.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


class RunnerBaseCPU(LavisRunnerBase):
    """LAVIS's ``runner_base`` that also runs on one CPU process (registered as
    ``runner_base_cpu``; see the module docstring for the three differences). Multi-process
    CPU runs are not possible: LAVIS's ``init_distributed_mode`` selects a CUDA device."""

    regionvlm_component = ("runner", CPU_RUNNER)

    @property
    def model(self) -> torch.nn.Module:
        """LAVIS's property wraps the model only when it moves it; a model already on
        ``run.device`` (always the case on CPU) would come back as None."""
        model = super().model
        if model is None and not self.use_distributed:
            self._wrapped_model = self._model
            return self._model
        return model

    def create_loaders(self, *args: Any, **kwargs: Any) -> Any:
        if self.cuda_enabled:
            return super().create_loaders(*args, **kwargs)
        with _replaced(lavis_runner_module, PrefetchLoader=_HostLoader):
            return super().create_loaders(*args, **kwargs)

    def train(self) -> Any:
        if self.cuda_enabled or torch.distributed.is_initialized():
            return super().train()
        with _replaced(lavis_runner_module, dist=_DistributedWithoutGroup()):
            return super().train()


# ------------------------------------------------------------------------------ registration
def _adapter(kind: str, name: str, project_cls: type, registered_as: str) -> type:
    if kind == "processor":
        cls = type(
            _identifier(kind, registered_as),
            (project_cls, LavisBaseProcessor),
            {"__doc__": f"The project's processor '{name}' as a LAVIS processor."},
        )
    elif kind == "model":
        cls = _model_adapter(name, project_cls, registered_as)
    elif kind == "builder":
        cls = type(
            _identifier(kind, registered_as),
            (ProjectBuilder,),
            {
                "__doc__": f"LAVIS builder of the project's dataset builder '{name}'.",
                "project_builder": project_cls,
                "registered_as": registered_as,
            },
        )
    else:
        cls = type(
            _identifier(kind, registered_as),
            (ProjectTask,),
            {
                "__doc__": f"LAVIS task running the project's task '{name}'.",
                "project_task": project_cls,
                "registered_as": registered_as,
            },
        )
    cls.__module__ = __name__
    cls.regionvlm_component = (kind, name)
    globals()[cls.__name__] = cls
    return cls


def _register(kind: str, name: str, make: Callable[[str], type]) -> str:
    """Register ``make(registered_as)`` in LAVIS as ``name``, or as ``regionvlm_<name>`` when
    LAVIS has a ``name`` of its own; an earlier registration of the same component is kept."""
    table = lavis_registry.mapping[f"{kind}_name_mapping"]
    candidates = (name,) if name.startswith(PREFIX) else (name, PREFIX + name)
    for candidate in candidates:
        existing = table.get(candidate)
        if existing is None:
            getattr(lavis_registry, f"register_{kind}")(candidate)(make(candidate))
            return candidate
        if getattr(existing, "regionvlm_component", None) == (kind, name):
            return candidate
    raise ConfigError(
        f"LAVIS already has {kind}s named {list(candidates)} that are not the project's; "
        f"the project's {kind} '{name}' cannot be registered."
    )


def register() -> Dict[str, Dict[str, str]]:
    """Register every project processor, model, dataset builder and task, and the CPU runner,
    into LAVIS's registry (once per process); returns ``{kind: {project name: LAVIS name}}``."""
    listing = {
        "processor": project_registry.list_processors,
        "model": project_registry.list_models,
        "builder": project_registry.list_builders,
        "task": project_registry.list_tasks,
    }
    getter = {
        "processor": project_registry.get_processor_class,
        "model": project_registry.get_model_class,
        "builder": project_registry.get_builder_class,
        "task": project_registry.get_task_class,
    }
    for kind in KINDS:  # processors first: the model presets name them
        for name in listing[kind]():
            project_cls = getter[kind](name)
            _NAMES[kind][name] = _register(
                kind, name, lambda as_name, k=kind, n=name, c=project_cls: _adapter(k, n, c, as_name)
            )
    _register("runner", CPU_RUNNER, lambda as_name: RunnerBaseCPU)
    return {kind: dict(names) for kind, names in _NAMES.items()}


NAMES = register()


# ------------------------------------------------------------------------------ command line
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run a LAVIS-format config (model, datasets, task and runner from "
        "LAVIS's registry, RegionVLM registered) as LAVIS's train.py "
        "(run.evaluate: false) or evaluate.py (true) does."
    )
    parser.add_argument("--cfg-path", required=True, help="path to the LAVIS-format YAML config")
    parser.add_argument(
        "--options",
        nargs="+",
        default=None,
        help="override config entries, e.g. run.init_lr=1e-5 (LAVIS's key=value syntax)",
    )
    return parser.parse_args(argv)


def _setup_seeds(run_cfg: Any, rank: int) -> None:
    """LAVIS's seeding: ``run.seed`` + rank for Python, NumPy and torch; deterministic cuDNN."""
    seed = int(run_cfg.get("seed", 42)) + rank
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def _runner_class(run_cfg: Any) -> type:
    name = str(run_cfg.get("runner", "runner_base"))
    runner_cls = lavis_registry.get_runner_class(name)
    if runner_cls is None:
        raise ConfigError(
            f"run.runner '{name}' is not registered in LAVIS; registered: {lavis_registry.list_runners()}."
        )
    if run_cfg.get("device", None) is None:
        raise ConfigError("run.device is not set (LAVIS's runner reads it): use cuda or cpu.")
    on_cpu = torch.device(str(run_cfg.device)).type == "cpu"
    if on_cpu and issubclass(runner_cls, LavisRunnerBase) and not issubclass(runner_cls, RunnerBaseCPU):
        raise ConfigError(
            f"run.device is cpu but LAVIS's runner '{name}' needs CUDA (it copies batches on a "
            f"CUDA stream); set run.runner: {CPU_RUNNER}."
        )
    return runner_cls


def main(argv: Optional[Sequence[str]] = None) -> Any:
    """LAVIS's ``train.py`` / ``evaluate.py`` steps, in order, with LAVIS's own classes.
    Returns the runner's test logs (``{split: metrics}``) of an evaluation, the runner itself
    (its ``task``, ``model`` and ``output_dir``) after training."""
    import lavis.datasets.builders
    import lavis.processors  # noqa: F401
    from lavis.common.config import Config
    from lavis.common.dist_utils import get_rank, init_distributed_mode
    from lavis.common.logger import setup_logger
    from lavis.common.utils import now

    args = parse_args(argv)
    if not Path(args.cfg_path).is_file():
        raise ConfigError(f"config file '{args.cfg_path}' does not exist (check --cfg-path).")
    job_id = now()
    cfg = Config(args)
    runner_cls = _runner_class(cfg.run_cfg)
    init_distributed_mode(cfg.run_cfg)
    _setup_seeds(cfg.run_cfg, get_rank())
    setup_logger()
    task = lavis_tasks.setup_task(cfg)
    datasets = task.build_datasets(cfg)
    model = task.build_model(cfg)
    runner = runner_cls(cfg=cfg, job_id=job_id, task=task, model=model, datasets=datasets)
    if cfg.run_cfg.get("evaluate", False):
        return runner.evaluate(skip_reload=True)
    runner.train()
    return runner


if __name__ == "__main__":
    from regionvlm.common.cli import run

    result = run(main)
    if isinstance(result, dict):  # an evaluation's logs; a training run has logged to output_dir
        print(json.dumps(result, indent=1, default=str))
