"""A LAVIS-style registry: classes register by name so YAML can refer to them.

The verbs are LAVIS's (``register_model``, ``get_model_class``, ``list_models`` ...)
so that LAVIS users find their way around, but nothing here imports LAVIS.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List

_KINDS = ("model", "builder", "task", "processor", "runner", "lr_scheduler")


class Registry:
    """Name -> class maps for every kind of pluggable component, plus a path store."""

    def __init__(self) -> None:
        self.mapping: Dict[str, Dict[str, Any]] = {f"{kind}_name_mapping": {} for kind in _KINDS}
        self.mapping["state"] = {}
        self.mapping["paths"] = {}

    # -- generic machinery -------------------------------------------------
    def _register(self, kind: str, name: str) -> Callable[[type], type]:
        table = self.mapping[f"{kind}_name_mapping"]

        def wrap(cls: type) -> type:
            existing = table.get(name)
            if existing is not None and existing is not cls:
                raise KeyError(
                    f"{kind} name '{name}' is already registered to {existing.__module__}."
                    f"{existing.__qualname__}; pick another name."
                )
            table[name] = cls
            return cls

        return wrap

    def _get(self, kind: str, name: str) -> Any:
        return self.mapping[f"{kind}_name_mapping"].get(name)

    def _list(self, kind: str) -> List[str]:
        return sorted(self.mapping[f"{kind}_name_mapping"])

    def get_class_or_raise(self, kind: str, name: str) -> Any:
        """Like ``get_<kind>_class`` but with an error that lists what exists."""
        cls = self._get(kind, name)
        if cls is None:
            raise KeyError(f"no {kind} named '{name}'; registered {kind}s: {self._list(kind)}")
        return cls

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

    def register_path(self, name: str, path: str) -> None:
        self.mapping["paths"][name] = str(path)

    def register(self, name: str, obj: Any) -> None:
        """Store a value in the shared state (LAVIS uses dotted names, e.g. 'config.run')."""
        self.mapping["state"][name] = obj

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

    def get_path(self, name: str):
        return self.mapping["paths"].get(name)

    def get(self, name: str, default: Any = None) -> Any:
        return self.mapping["state"].get(name, default)

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
