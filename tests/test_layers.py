"""The import graph of the package: imports point down the layers of docs/ARCHITECTURE.md, and no two modules
import each other (directly or through others). Every import counts, also those inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

from distill.config import PROJECT_ROOT

# Lowest first; a module may import its own layer or lower ones (docs/ARCHITECTURE.md, "Layers").
LAYERS = [
    ["errors", "faults"],
    ["ir", "config"],
    ["workspace", "distributed", "tracking", "hf_training", "stamps", "graphs"],
    ["data"],
    ["retrieval"],
    ["teacher"],
    ["features"],
    ["objectives"],
    ["students"],
    ["export"],
    ["evaluation"],
    ["demo", "bench", "cli", "dashboard", "serving", "schema"],
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}
PACKAGE = PROJECT_ROOT / "distill"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("distill."):
                out.add(node.module)
            elif isinstance(node, ast.Import):
                out |= {a.name for a in node.names if a.name.startswith("distill.")}
        graph[module_name(path)] = out - {module_name(path)}
    return graph


def unit(module: str) -> str:
    return module.split(".")[1]


def test_every_module_has_a_layer():
    assert sorted({unit(m) for m in imports() if m != "distill"} - set(LAYER)) == []


def test_imports_point_down_the_layers():
    upward = [
        f"{m} -> {t}"
        for m, targets in imports().items()
        if m != "distill"
        for t in targets
        if LAYER[unit(t)] > LAYER[unit(m)]
    ]
    assert upward == []


def test_no_import_cycles():
    graph = imports()
    cycles = []
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                cycles.append(" -> ".join([*path[path.index(t) :], t]))
            elif t not in state:
                visit(t, [*path, t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []
