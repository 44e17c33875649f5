"""The package layout's rules: a folder is one stage, imports point down only, no module imports itself back.

Every import counts, also the ones inside functions (a function-level import hides a cycle, it does not remove it).
"""

from __future__ import annotations

import ast
from pathlib import Path

import rspretrain

PACKAGE = Path(rspretrain.__file__).parent
#: Stages in data-flow order; a module may import from its own stage and the ones before it.
STAGES = {"core": 0, "data": 1, "nn": 2, "losses": 2, "views": 2, "training": 3, "pretrain": 4, "downstream": 5, "apps": 6}
#: Top-level entry points above every stage (the public API facade and ``python -m rspretrain``).
ENTRY_POINTS = {"rspretrain", "rspretrain.__main__", "rspretrain.backbones"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(("rspretrain", *path.relative_to(PACKAGE).with_suffix("").parts))
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            for target in targets:
                if target in modules and target != name and not name.startswith(target + "."):
                    edges.setdefault(name, set()).add(target)
    return edges


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in STAGES) else None


def test_every_module_belongs_to_a_stage():
    loose = [m for m in _modules() if m not in ENTRY_POINTS and _stage(m) not in STAGES]
    assert not loose, f"modules outside the stage folders: {loose}"


def test_imports_point_down_only():
    upward = [
        f"{source} -> {target}"
        for source, targets in _imports(_modules()).items() if source not in ENTRY_POINTS
        for target in targets
        if target not in ENTRY_POINTS and STAGES[_stage(target)] > STAGES[_stage(source)]
    ]
    assert not upward, "imports that point up a stage:\n" + "\n".join(sorted(upward))


def test_no_import_cycle_between_modules():
    edges = _imports(_modules())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in list(edges):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"
