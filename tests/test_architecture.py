"""Import architecture of the package (docs/architecture.md), checked from the source with ``ast``.

Every ``import`` statement counts: module level, inside functions and under ``if TYPE_CHECKING:``. An edge goes
from a module to the most specific ``searchr1`` module it names (``from searchr1.rollout import RolloutBatch`` →
``searchr1.rollout``; ``from searchr1.rollout import types`` → ``searchr1.rollout.types``). A package's own
``__init__`` is not counted as imported by ``import searchr1.a.b`` (Python runs it, but an ``__init__`` that
re-exports its children would make every sibling import a cycle); string-based lazy exports are not imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# package → the searchr1 packages its modules may import (besides its own and the base modules). Matches the table
# in docs/architecture.md; a new edge is a design decision: change both.
BASE = {
    "searchr1",
    "searchr1._lazy",
    "searchr1.atomic",
    "searchr1.distributed",
    "searchr1.errors",
    "searchr1.quiet",
    "searchr1.registry",
    "searchr1.resources",
}
ALLOWED: dict[str, set[str]] = {
    "algorithms": set(),
    "protocols": set(),
    "rewards": {"protocols"},
    "models": {"protocols"},  # the tiny tokenizer is trained on the protocol texts
    "retrieval": set(),
    "data": {"protocols"},
    "rollout": {"protocols", "retrieval", "models"},  # the rollout server loads its copy of the policy
    "evaluation": {"protocols", "rewards", "retrieval", "rollout", "models", "data"},
    "testing": {"protocols", "retrieval", "rollout"},
    "training": {"algorithms", "protocols", "rewards", "models", "retrieval", "data", "rollout", "evaluation"},
}
# Top-level modules that assemble everything (entry points).
ENTRY_POINTS = {"searchr1.cli", "searchr1.__main__"}
# Names of the model-loading home: tools (which may run training) must take these from searchr1.models.
MODEL_LOADING = "searchr1.models"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def source_modules(root: Path = ROOT) -> dict[str, Path]:
    """``searchr1`` modules and ``tools`` scripts by dotted name."""
    files = [*(root / "searchr1").rglob("*.py"), *(root / "tools").glob("*.py")]
    return {module_name(p, root): p for p in files}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int, tuple[str, ...]]]:
    """``(target module, line, imported names)`` of every searchr1 import in ``path`` (any depth in the tree)."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "searchr1":
                    out.append((_most_specific(alias.name, modules), node.lineno, ()))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            if base.split(".")[0] != "searchr1":
                continue
            names = tuple(a.name for a in node.names)
            subs = [f"{base}.{n}" for n in names if f"{base}.{n}" in modules]
            out.extend((s, node.lineno, (s.rpartition(".")[2],)) for s in subs)
            rest = tuple(n for n in names if f"{base}.{n}" not in modules)
            if rest or not subs:
                out.append((_most_specific(base, modules), node.lineno, rest))
    return out


def _most_specific(dotted: str, modules: dict[str, Path]) -> str:
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in modules:
            return ".".join(parts[:n])
    return dotted


def import_graph(root: Path = ROOT) -> dict[str, dict[str, int]]:
    """module → {imported module: first line}; only edges between modules that exist."""
    modules = source_modules(root)
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges = graph.setdefault(name, {})
        for target, line, _ in imports_of(name, path, modules):
            if target in modules and target != name:
                edges.setdefault(target, line)
    return graph


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as one concrete cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # recursion depth is bounded by the module count (~150)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_one_cycle(graph, set(c)) for c in components]


def _one_cycle(graph: dict[str, dict[str, int]], component: set[str]) -> list[str]:
    """A shortest cycle through the first module of ``component`` (breadth-first inside the component)."""
    start = min(component)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if w in component and w not in parents:
                    parents[w] = v
                    nxt.append(w)
        frontier = nxt
    return sorted(component)


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "searchr1" and len(parts) > 1 else None


def layer_violations(root: Path = ROOT) -> list[str]:
    """Imports that break :data:`ALLOWED`, and tools taking model loading from training or the CLI."""
    modules = source_modules(root)
    loading_names = _exported_names(modules[MODEL_LOADING])
    bad = []
    for name, path in sorted(modules.items()):
        own = _package(name)
        for target, line, names in imports_of(name, path, modules):
            where = f"{path.relative_to(root)}:{line} imports {target}"
            if name.startswith("tools."):
                if target.startswith(("searchr1.training", "searchr1.cli")) and set(names) & loading_names:
                    bad.append(f"{where} for {', '.join(names)}: load models from {MODEL_LOADING}")
                continue
            if own not in ALLOWED or target in BASE:
                continue
            dep = _package(target)
            if target in ENTRY_POINTS or (dep != own and dep not in ALLOWED[own]):
                bad.append(f"{where}: searchr1.{own} may import only {sorted(ALLOWED[own]) or 'the base modules'}")
    return bad


def _exported_names(path: Path) -> set[str]:
    """The names in a module's ``__all__`` (read from the source)."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return set()


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles (break each by moving the shared piece down a layer):\n" + "\n".join(
        " -> ".join(c) for c in cycles
    )


def test_packages_import_only_lower_layers():
    bad = layer_violations()
    assert not bad, "imports across layers (see docs/architecture.md):\n" + "\n".join(bad)


def test_checker_sees_cycles_and_layer_breaks(tmp_path: Path):
    """The checks fail on what they guard: a cycle through a TYPE_CHECKING import, a function-level import of
    training from retrieval, and a tool loading a model through training."""
    pkg = tmp_path / "searchr1"
    for sub in ("retrieval", "training", "models"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "__init__.py").write_text("__all__ = ['load_causal_lm']\n")
    (pkg / "retrieval" / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from searchr1.retrieval.b import B\n"
    )
    (pkg / "retrieval" / "b.py").write_text("def f():\n    from . import a\n    from searchr1.training.x import y\n")
    (pkg / "training" / "x.py").write_text("y = 1\n")
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "t.py").write_text("from searchr1.training.x import load_causal_lm\n")
    cycle = ["searchr1.retrieval.a", "searchr1.retrieval.b", "searchr1.retrieval.a"]
    assert find_cycles(import_graph(tmp_path)) == [cycle]
    bad = layer_violations(tmp_path)
    assert len(bad) == 2, bad
    assert "retrieval/b.py:3 imports searchr1.training.x" in bad[0]
    assert "tools/t.py:1 imports searchr1.training.x for load_causal_lm" in bad[1]
