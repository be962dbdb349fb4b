"""The layering of the packages, checked on every module's imports (function-level ones too).

    flows  ->  generators, training  ->  filters  ->  storage  ->  core

A module may import its own package and the layers below it, never one above or beside
it (generators and training do not import each other), and no two modules import each
other. filters may use storage's records only (a filter never does I/O).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RANK = {"core": 0, "storage": 1, "filters": 2, "generators": 3, "training": 3, "flows": 4}


def _modules() -> dict[str, Path]:
    mods = {}
    for package in RANK:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = path
    return mods


def _imports(path: Path, mods: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports, anywhere in the file."""
    def resolve(target: str) -> str | None:
        while target and target not in mods:
            target = target.rpartition(".")[0]
        return target or None

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        for name in names:
            if name.split(".")[0] in RANK and (target := resolve(name)):
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(path, mods) - {name} for name, path in mods.items()}


def test_no_module_imports_a_layer_above_or_beside_it():
    bad = []
    for module, targets in sorted(_graph().items()):
        mine = module.split(".")[0]
        for target in sorted(targets):
            theirs = target.split(".")[0]
            if theirs != mine and RANK[theirs] >= RANK[mine]:
                bad.append(f"{module} imports {target}")
            if mine == "filters" and theirs == "storage" and target != "storage.records":
                bad.append(f"{module} imports {target} (filters use storage's records only)")
    assert not bad, "\n".join(bad)


def test_no_two_modules_import_each_other():
    graph = _graph()
    pairs = sorted({tuple(sorted((a, b))) for a, targets in graph.items() for b in targets if a in graph.get(b, ())})
    assert not pairs, pairs


def test_the_check_sees_function_level_imports(tmp_path):
    """The walker finds an import inside a function body (where layering leaks used to hide)."""
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from flows.generate import generate_flow\n")
    assert _imports(path, _modules()) == {"flows.generate"}
