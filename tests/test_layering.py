"""calab's import graph: no cycles (imports inside functions included), no backend names
outside ``calab/backends/``, and the engine's layers in order."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "calab"


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


MODULES = _modules()


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for inner in ast.walk(node))
    return skipped


def _targets(module: str, node: ast.AST) -> list[str]:
    names = []
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]
            parts = package.split(".")
            parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join(parts + ([base] if base else []))
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
    resolved = []
    for name in names:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name:
            resolved.append(name)
    return resolved


def import_graph() -> dict[str, set[str]]:
    """Edges module → module for every import, at module level or inside a function.

    Imports of a module's own parent packages are left out (Python has already imported
    them), and so is ``calab`` itself; imports under ``if TYPE_CHECKING`` never run.
    """
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in skipped:
                for target in _targets(module, node):
                    if target != module and target != "calab" and not module.startswith(target + "."):
                        graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_walker_finds_function_level_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    # and it sees imports inside functions of the real package (the cadecon command
    # imports the loop only when it runs)
    assert "calab.cadecon" in import_graph()["calab.cli.cadecon"]


def test_calab_has_no_import_cycles():
    assert cycles(import_graph()) == []


def test_no_backend_names_outside_the_backends():
    pattern = re.compile(r"""(==|!=|\bin\b)\s*\(?\s*["'](cupy|jax|numpy)["']""")  # a name, not "numpy.core"
    offenders = []
    for module, path in MODULES.items():
        if module.startswith("calab.backends"):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert offenders == []


@pytest.mark.parametrize(
    ("lower", "upper"),
    [
        ("calab.engine.problem", "calab.engine.fista"),
        ("calab.engine.fista", "calab.engine.block"),
        ("calab.backends.types", "calab.backends.driver"),
        ("calab.kernel", "calab.engine.problem"),
    ],
)
def test_lower_layers_do_not_import_upper_ones(lower, upper):
    graph = import_graph()
    reached, frontier = set(), [lower]
    while frontier:
        for target in graph[frontier.pop()]:
            if target not in reached:
                reached.add(target)
                frontier.append(target)
    assert upper not in reached


#: calab's layers, lowest first.  A module belongs to the layer of its longest matching
#: prefix; it may import its own layer and those below, never one above (not even inside
#: a function).  The backends get the engine's generic FISTA step through the plan the
#: engine hands them (``SolvePlan.core``), and host arithmetic they share with the upper
#: layers lives in ``calab._hostmath``.
LAYERS = (
    ("calab._hostmath", "calab._atomic", "calab._progress", "calab._errors"),
    ("calab.backends",),
    ("calab._validate", "calab.kernel", "calab.filters", "calab.noise"),
    ("calab.engine", "calab.fista"),
    ("calab.deconvolution", "calab.io", "calab.loaders", "calab.simulation", "calab.indeca",
     "calab.datasets._dask", "calab.datasets._sources", "calab.plot", "calab._display"),
    ("calab.cadecon", "calab.datasets", "calab.demo", "calab._io"),
    ("calab.bridge", "calab.cli", "calab._cli", "calab.__main__"),
)


def layer_of(module: str) -> int | None:
    """Index in :data:`LAYERS` of ``module`` (longest matching prefix), None if unlisted."""
    best = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    return None if best is None else best[0]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``"lower -> upper"`` for every import of a higher layer."""
    found = []
    for module, targets in graph.items():
        for target in targets:
            if layer_of(module) is not None and layer_of(target) is not None and layer_of(target) > layer_of(module):
                found.append(f"{module} -> {target}")
    return sorted(found)


def test_every_module_has_a_layer():
    assert [module for module in MODULES if module != "calab" and layer_of(module) is None] == []


def test_the_layer_check_catches_an_upward_import():
    graph = {"calab.backends.base": {"calab.engine.fista"}, "calab.engine.fista": {"calab.backends.types"}}
    assert upward_imports(graph) == ["calab.backends.base -> calab.engine.fista"]


def test_no_layer_imports_a_higher_one():
    assert upward_imports(import_graph()) == []
