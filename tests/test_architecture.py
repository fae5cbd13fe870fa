"""The package's import graph is acyclic, function-level imports included: the layers stay layers."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "src" / "dgi"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                # `from pkg import submodule` depends on the submodule, not on the package's __init__
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            else:
                continue
            graph[name].update(target for target in targets if target in modules and target != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for child in sorted(graph[node]):
            if state.get(child) == 1:
                return stack[stack.index(child):] + [child]
            if child not in state and (cycle := visit(child)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_in_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


# Each layer may import only the layers below it (and the shared utilities).
LAYERS = ["dgi.nets", "dgi.search", "dgi.training", "dgi.methods", "dgi.serving"]
UPPER = {"dgi.pipeline", "dgi.benchmark", "dgi.cli", "dgi.demo", "dgi.report"}


def test_layers_import_only_what_lies_below_them():
    graph = import_graph()
    violations = []
    for position, layer in enumerate(LAYERS):
        forbidden = set(LAYERS[position + 1:]) | UPPER
        if layer in ("dgi.methods", "dgi.serving"):
            forbidden -= {"dgi.pipeline"}  # both stand on the pipeline (train, load a run)
        for module, imports in graph.items():
            if module == layer or module.startswith(layer + "."):
                violations += [f"{module} -> {target}" for target in imports
                               if any(target == f or target.startswith(f + ".") for f in forbidden)]
    assert not violations, violations
