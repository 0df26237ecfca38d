"""A LAVIS-style registry: classes register by name so YAML can refer to them.

The verbs are LAVIS's (``register_model``, ``get_model_class``, ``list_models`` ...) so
that LAVIS users find their way around, but nothing here imports LAVIS.

Built-in components are found without the caller importing anything first: the
:data:`BUILTINS` table names the module that registers each built-in, and a lookup (or a
listing) imports that module on demand — only the modules it needs, so asking for a text
processor does not import the model. A test keeps the table equal to what the modules
register. A name that nobody registers raises :class:`ConfigError` with what exists.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, List

from regionvlm.common.errors import ConfigError

KINDS = ("model", "builder", "task", "processor", "runner", "lr_scheduler")

# kind -> name -> module that registers it (imported on first lookup).
BUILTINS: Dict[str, Dict[str, str]] = {
    "model": {"regionvlm_t5": "regionvlm.models.regionvlm_t5"},
    "processor": {
        "blip_caption": "regionvlm.processors.text_processors",
        "blip_question": "regionvlm.processors.text_processors",
        "blip_image_eval": "regionvlm.processors.image_processors",
        "region_image_train": "regionvlm.processors.image_processors",
    },
    "builder": {
        "localized_narratives": "regionvlm.datasets.builders.caption_builders",
        "visual_genome_regions": "regionvlm.datasets.builders.caption_builders",
        "coco_karpathy_caption": "regionvlm.datasets.builders.caption_builders",
        "webdataset_caption": "regionvlm.datasets.builders.caption_builders",
        "regionvlm_mix": "regionvlm.datasets.builders.caption_builders",
        "region_captions": "regionvlm.datasets.builders.region_file_builder",
        "coco_caption": "regionvlm.datasets.builders.coco_caption_builder",
        "refcocog_captions": "regionvlm.datasets.builders.region_caption_builder",
        "vg_captions_glamm": "regionvlm.datasets.builders.region_caption_builder",
        "vg_captions_grit": "regionvlm.datasets.builders.region_caption_builder",
        "synthetic_captions": "regionvlm.datasets.builders.region_caption_builder",
        "refcoco": "regionvlm.datasets.builders.ris_builder",
        "refcoco+": "regionvlm.datasets.builders.ris_builder",
        "refcocog": "regionvlm.datasets.builders.ris_builder",
        "ris_synthetic": "regionvlm.datasets.builders.ris_builder",
        "rec_refcoco": "regionvlm.datasets.builders.rec_builder",
        "rec_refcoco+": "regionvlm.datasets.builders.rec_builder",
        "rec_refcocog": "regionvlm.datasets.builders.rec_builder",
        "rec_synthetic": "regionvlm.datasets.builders.rec_builder",
        "phrasecut": "regionvlm.datasets.builders.phrasecut_builder",
        "vcr": "regionvlm.datasets.builders.vcr_builder",
        "coco_vqa": "regionvlm.datasets.builders.vqa_builder",
        "vqav2": "regionvlm.datasets.builders.vqa_builder",
        "ok_vqa": "regionvlm.datasets.builders.vqa_builder",
        "gqa": "regionvlm.datasets.builders.vqa_builder",
        "lvis_regions": "regionvlm.datasets.builders.region_classification_builder",
        "paco_regions": "regionvlm.datasets.builders.region_classification_builder",
        "synthetic_regions": "regionvlm.datasets.builders.region_classification_builder",
    },
    "task": {
        "region_captioning": "regionvlm.tasks.captioning",
        "captioning": "regionvlm.tasks.captioning",
        "ris": "regionvlm.tasks.ris",
        "rec": "regionvlm.tasks.rec",
        "vcr": "regionvlm.tasks.vcr",
        "vqa": "regionvlm.tasks.vqa",
        "gqa": "regionvlm.tasks.vqa",
        "region_classification": "regionvlm.tasks.region_classification",
    },
    "runner": {"runner_base": "regionvlm.runners.runner_base"},
    "lr_scheduler": {
        "linear_warmup_cosine_lr": "regionvlm.common.optims",
        "linear_warmup_step_cosine_lr": "regionvlm.common.optims",
    },
}


class Registry:
    """Name -> class maps for every kind of pluggable component."""

    def __init__(self) -> None:
        self.mapping: Dict[str, Dict[str, Any]] = {f"{kind}_name_mapping": {} for kind in KINDS}

    # -- generic machinery -------------------------------------------------
    def _register(self, kind: str, name: str) -> Callable[[type], type]:
        table = self.mapping[f"{kind}_name_mapping"]

        def wrap(cls: type) -> type:
            existing = table.get(name)
            if existing is not None and existing is not cls:
                raise ConfigError(
                    f"{kind} name '{name}' is already registered to {existing.__module__}."
                    f"{existing.__qualname__}; pick another name."
                )
            table[name] = cls
            return cls

        return wrap

    def _table(self, kind: str) -> Dict[str, Any]:
        return self.mapping[f"{kind}_name_mapping"]

    def _get(self, kind: str, name: str) -> Any:
        table = self._table(kind)
        if name not in table and name in BUILTINS[kind]:
            importlib.import_module(BUILTINS[kind][name])
        cls = table.get(name)
        if cls is None:
            raise ConfigError(f"no {kind} named '{name}'; registered {kind}s: {', '.join(self._list(kind))}.")
        return cls

    def _list(self, kind: str) -> List[str]:
        for module in sorted(set(BUILTINS[kind].values())):
            importlib.import_module(module)
        return sorted(self._table(kind))

    def get_class_or_raise(self, kind: str, name: str) -> Any:
        """The class registered as ``name`` (a built-in is imported on demand)."""
        if kind not in KINDS:
            raise ValueError(f"unknown registry kind '{kind}'; kinds: {KINDS}")
        return self._get(kind, name)

    # -- LAVIS verbs -------------------------------------------------------
    def register_model(self, name: str):
        return self._register("model", name)

    def register_builder(self, name: str):
        return self._register("builder", name)

    def register_task(self, name: str):
        return self._register("task", name)

    def register_processor(self, name: str):
        return self._register("processor", name)

    def register_runner(self, name: str):
        return self._register("runner", name)

    def register_lr_scheduler(self, name: str):
        return self._register("lr_scheduler", name)

    def get_model_class(self, name: str):
        return self._get("model", name)

    def get_builder_class(self, name: str):
        return self._get("builder", name)

    def get_task_class(self, name: str):
        return self._get("task", name)

    def get_processor_class(self, name: str):
        return self._get("processor", name)

    def get_runner_class(self, name: str):
        return self._get("runner", name)

    def get_lr_scheduler_class(self, name: str):
        return self._get("lr_scheduler", name)

    def list_models(self) -> List[str]:
        return self._list("model")

    def list_builders(self) -> List[str]:
        return self._list("builder")

    def list_tasks(self) -> List[str]:
        return self._list("task")

    def list_processors(self) -> List[str]:
        return self._list("processor")

    def list_runners(self) -> List[str]:
        return self._list("runner")

    def list_lr_schedulers(self) -> List[str]:
        return self._list("lr_scheduler")

    def list_datasets(self) -> List[str]:
        return self.list_builders()


registry = Registry()
