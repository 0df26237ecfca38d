"""The package layout shows the architecture: imports run one way (file formats ->
processors -> model -> datasets -> tasks -> runner -> command lines), with no cycle, lazy
or not — every import statement counts, including the ones inside functions."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Set

PACKAGE = Path(__file__).resolve().parents[1] / "regionvlm"

# Layers, lowest first; a module may import from its own layer or a lower one only.
LAYERS = [
    ("foundation", ("regionvlm.common", "regionvlm.region")),
    ("file formats", ("regionvlm.data", "regionvlm.synthetic")),
    ("processors", ("regionvlm.processors",)),
    ("model", ("regionvlm.models",)),
    ("datasets", ("regionvlm.datasets",)),
    ("tasks", ("regionvlm.tasks",)),
    ("runner", ("regionvlm.runners",)),
    (
        "applications",
        (
            "regionvlm.dialogue",
            "regionvlm.train",
            "regionvlm.chat",
            "regionvlm.demo",
            "regionvlm.proposals",
            "regionvlm.quickstart",
            "regionvlm.refer_cli",
            "regionvlm.predict",
            "regionvlm.prediction",
            "regionvlm.examples",
            "regionvlm.export",
            "regionvlm.integrations",
        ),
    ),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(f"{module} belongs to no layer; add it to LAYERS")


def imports() -> Dict[str, Set[str]]:
    """Module -> the regionvlm modules it imports (anywhere in the file)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: Dict[str, Set[str]] = {}
    for name, path in modules.items():
        targets: Set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                submodules = {f"{node.module}.{a.name}" for a in node.names} & set(modules)
                targets.update(submodules)  # `from pkg import submodule` imports the submodule
                if len(submodules) < len(node.names):
                    targets.add(node.module)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def test_imports_run_one_way():
    wrong = []
    for module, targets in imports().items():
        if module == "regionvlm":  # the package's lazy public names reach into the layers by design
            continue
        for target in targets:
            if target != "regionvlm" and layer_of(target) > layer_of(module):
                wrong.append(
                    f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
                )
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycle():
    graph = {m: {t for t in ts if t != "regionvlm"} for m, ts in imports().items() if m != "regionvlm"}
    state: Dict[str, int] = {}
    path: list = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt) :] + [nxt]))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_no_nested_datasets_package():
    assert not (PACKAGE / "datasets" / "datasets").exists()
    assert (PACKAGE / "data" / "proposals.py").is_file()  # file formats live in regionvlm.data
