"""The package's layout stays easy to see: no module over 500 lines, no import cycle among its
modules (imports inside functions and the subpackages' `__init__` counted), the core (the model
code) imports no data, training, serving or tuning code, and one module spells the run folder's
file names. Read from the source with `ast`: nothing is imported."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "keras_resnet"
CORE = ("config", "models", "blocks", "layers", "weights", "weight_mapping", "features", "analysis")
NOT_CORE = ("data", "training", "serving", "tuning", "cli", "preprocessing")

pytestmark = pytest.mark.one_backend("tensorflow")  # source files only: the same on every backend


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its file. `from a.b import c` counts
    a.b.c when that is a module, else a.b, and the subpackage a (its `__init__` runs first); the
    top-level package, whose names load lazily, is left out."""
    mods = modules()
    graph = {name: set() for name in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + [base]).rstrip(".")
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            else:
                continue
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                parts = target.split(".")
                for depth in range(2, len(parts) + 1):
                    prefix = ".".join(parts[:depth])
                    if prefix in mods and prefix != name and not name.startswith(prefix + "."):
                        graph[name].add(prefix)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_is_over_500_lines():
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    assert len(sizes) > 60
    assert {name: size for name, size in sizes.items() if size > 500} == {}


def test_no_import_cycle():
    graph = import_graph()
    assert "keras_resnet.data.gpu_crop" in graph["keras_resnet.training.run"]  # sees the imports
    assert cycles(graph) == []


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_core_imports_no_data_training_serving_or_tuning():
    graph = import_graph()
    reached = {
        module: sorted(t for t in graph[f"keras_resnet.{module}"] if t.split(".")[1] in NOT_CORE)
        for module in CORE
    }
    assert reached == {module: [] for module in CORE}


def test_one_module_spells_the_run_folders_file_names():
    spelled = {
        name
        for name, path in modules().items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and node.value in ("metrics.json", "history.csv")
    }
    assert spelled == {"keras_resnet.training.run_folder"}
