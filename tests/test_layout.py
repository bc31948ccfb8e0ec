"""The package's layers, read from its source: which module imports which.

Every ``import`` counts, the ones inside functions too (a lazy import is still a dependency,
only a later one). The rules are DESIGN.md's: ``models/`` and ``diffusion/`` are the maths and
know nothing of how they are trained, run or served; ``data/`` knows nothing of the models;
the service never pulls in training; and no module reaches itself through others (a cycle).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "worldreel"

# (layer, layers it must never import)
FORBIDDEN = [
    ("models", {"train", "pipelines", "eval", "serve", "cli"}),
    ("diffusion", {"train", "pipelines", "eval", "serve", "cli"}),
    ("data", {"models", "diffusion", "pipelines", "train", "eval", "serve", "cli"}),
    ("serve", {"train"}),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """worldreel module -> the worldreel modules it imports (anywhere in its file)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # a relative import
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                # ``from worldreel.data import facts`` imports the module worldreel.data.facts
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:  # ``import worldreel.x.y`` -> the longest known module
                    target = target.rpartition(".")[0]
                if target.startswith("worldreel") and target != name and target != "worldreel":
                    edges.add(target)
        graph[name] = edges
    return graph


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_the_graph_sees_function_level_imports():
    graph = import_graph()
    # cli/train.py imports the trainer inside a command function only
    assert "worldreel.train.trainer" in graph["worldreel.cli.train"]
    assert "worldreel.data.facts" in graph["worldreel.data.clips"]  # from worldreel.data.facts import FPS


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("layer,forbidden", FORBIDDEN, ids=[layer for layer, _ in FORBIDDEN])
def test_layers_import_only_downwards(layer, forbidden):
    graph = import_graph()
    bad = sorted(f"{src} -> {dst}" for src, dsts in graph.items() if _layer(src) == layer
                 for dst in dsts if _layer(dst) in forbidden)
    assert not bad, f"{layer}/ must not import {sorted(forbidden)}:\n" + "\n".join(bad)
