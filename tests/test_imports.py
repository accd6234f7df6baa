"""Import structure of the packages: no import cycles, one version."""

import ast
import sys
from pathlib import Path

import pytest

import compress
import dc_kernels
import eie_model
import perf
import workloads
from compress._version import __version__

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("compress", "dc_kernels", "eie_model", "perf", "workloads")


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its text (functions included)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from package import submodule` imports the submodule; other names come from
                # the package's __init__.
                submodules = [f"{node.module}.{alias.name}" for alias in node.names]
                edges.update(s for s in submodules if s in modules)
                if any(s not in modules for s in submodules):
                    edges.add(node.module)
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph)))
    try:
        for node in graph:
            if node not in index:
                visit(node)
    finally:
        sys.setrecursionlimit(limit)
    return found


def test_no_module_imports_one_that_imports_it_back():
    graph = import_graph()
    assert "compress.size" in graph["compress"] and "compress.matrix" in graph["compress.size"]
    assert cycles(graph) == []


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_one_version_everywhere():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in pyproject["project"]["dynamic"] and "version" not in pyproject["project"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "compress._version.__version__"}
    for package in (compress, dc_kernels, eie_model, perf, workloads):
        assert package.__version__ is __version__, package.__name__
    header = compress.load(compress.save_bytes({"a": workloads.random_compressed_matrix(3, 4, 0.5, 2)}))
    assert header.library_version == __version__


def test_dc_kernels_lists_its_lazy_names_before_loading_them():
    lazy = ["CompressedLinear", "compress_", "plan_compression", "save_compressed", "load_compressed"]
    assert set(lazy) <= set(dir(dc_kernels)) and set(lazy) <= set(dc_kernels.__all__)
