"""The package's shape stays as docs/architecture.md draws it: imports point one way (lower
layers never import higher ones), no import cycle, module-level or inside functions, and no
module or function too long to hold in one's head. Read with ``ast``: nothing is imported."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import progression

ROOT = Path(progression.__file__).parent

# Layers, lowest first: a module may import its own layer (without a cycle) or lower ones.
LAYERS: list[set[str]] = [
    # foundations: format, scores, configs, errors, files, tracking store, simulator
    {"errors", "io", "config", "columns", "scoring", "cohort", "simulate", "plotting",
     "tracking", "registry"},
    {"data", "ingest"},  # ingest: from PACS exports and score sheets to format v1
    {"models", "calibration", "metrics", "pairwise", "subgroups", "trained"},
    {"train", "predict", "pyfunc_model"},
    {"evaluate", "enrich", "explain", "serve", "tuning"},
    {"commands", "cli"},
]
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
# Over the limits on purpose: data tables only.
DATA_TABLES = {
    "progression.simulate.anatomy.hand_geometry",  # joint coordinates of the simulated hand
}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        parts = ["progression", *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """Every progression module ``name`` imports, at module level or inside functions.
    ``from pkg import x`` imports ``pkg.x`` when that is a module, else ``pkg``'s __init__."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def owner(target: str) -> str | None:
        while target and target not in mods:
            target = target.rpartition(".")[0]
        return target or None

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                       for a in node.names]
        else:
            continue
        for target in targets:
            if target.startswith("progression"):
                module = owner(target)
                if module and module != name:
                    found.add(module)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, mods) for name, path in mods.items()}


def _layer(module: str) -> int | None:
    top = module.split(".")[1] if "." in module else None
    for level, names in enumerate(LAYERS):
        if top in names:
            return level
    return None


def test_every_module_has_a_layer():
    unplaced = sorted(m for m in _graph() if m != "progression" and _layer(m) is None)
    assert unplaced == [], f"add these modules to a layer in LAYERS: {unplaced}"


def test_no_import_cycle():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    assert cycles == []


def test_imports_point_down_the_layers():
    upward = []
    for module, targets in _graph().items():
        here = _layer(module)
        for target in targets:
            there = _layer(target)
            edge = f"{module} -> {target}"
            if here is not None and there is not None and there > here:
                upward.append(edge)
    assert sorted(upward) == []


def test_the_top_level_package_imports_nothing_eagerly():
    tree = ast.parse((ROOT / "__init__.py").read_text())
    eager = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
             and not (isinstance(node, ast.ImportFrom) and node.module == "__future__")]
    assert eager == []


def test_modules_and_functions_stay_short():
    too_long = []
    for name, path in _modules().items():
        tree = ast.parse(path.read_text())
        lines = len(path.read_text().splitlines())
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{name}: {lines} lines")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                qualified = f"{name}.{node.name}"
                if length > MAX_FUNCTION_LINES and qualified not in DATA_TABLES:
                    too_long.append(f"{qualified}: {length} lines")
    assert sorted(too_long) == []


def test_every_module_is_on_the_architecture_map():
    """docs/architecture.md names every module, so a newcomer finds where a thing lives."""
    text = (ROOT.parent / "docs" / "architecture.md").read_text()
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))
    missing = sorted(name for name in _modules()
                     if not name.startswith("progression.commands.")
                     and name.rsplit(".", 1)[-1] not in words)
    assert missing == [], f"add these modules to the map in docs/architecture.md: {missing}"


def test_the_top_level_api_names_the_evaluation_entry_point_apart_from_its_package():
    from progression.evaluate.report import evaluate

    assert progression.evaluate_forecasts is evaluate
    assert "evaluate" not in progression.__all__  # progression.evaluate is the subpackage
