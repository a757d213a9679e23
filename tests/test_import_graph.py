"""wsgw's import graph, read from the source with `ast` (nothing is imported): no cycle, and
the layering rules that keep it so.

A cycle works until someone moves an import, then fails at import time, in whichever
order the modules happen to load; `if TYPE_CHECKING:` and function-level imports hide one
from Python but not from the design, so they count here too. Edges: `import a.b` → a.b;
`from a import b` → a.b when b is a module, else a; relative imports resolved. A package
is its `__init__`; .pyx/.pxd files are not Python modules (their .py twins are).
"""

from __future__ import annotations

import ast
from collections import deque
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "wsgw"

# wsgw.app builds and runs the gateway process: only what starts one may import it (the
# CLI, `python -m wsgw`, the worker supervisor, the developer tools). Any other module
# importing it reaches up into the process that runs it: that is how cycles start.
APP = "wsgw.app"
APP_IMPORTERS = ("wsgw.cli", "wsgw.__main__", "wsgw.workers", "wsgw.tools.*")

# The runtime bundle. The layers below it are handed one and use it by duck typing: they
# never import its module (which imports them), so the bundle stays a leaf of app.py.
SERVICES = "wsgw.services"
BELOW_SERVICES = ("wsgw.pipeline", "wsgw._core", "wsgw.oauth", "wsgw.config")

Graph = dict[str, dict[str, int]]  # module → {module it imports: first line that does}


def import_graph(root: Path) -> Graph:
    """Every import between modules of the package at ``root`` (named as the directory)."""
    files = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        files[".".join((root.name, *parts)).removesuffix(".__init__")] = path
    graph: Graph = {}
    for module, path in files.items():
        edges = graph[module] = {}
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for name in _imported_names(node, package):
                target = _longest_known_prefix(name, files)
                if target is not None and target != module:
                    edges[target] = min(edges.get(target, node.lineno), node.lineno)
    return graph


def _imported_names(node: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    """Dotted names an import statement loads; `from a import b` gives a.b (a module, or a
    name in a: _longest_known_prefix tells)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        base = ".".join([*parent, *([base] if base else [])])
    return [base if alias.name == "*" else f"{base}.{alias.name}" for alias in node.names]


def _longest_known_prefix(name: str, modules: dict[str, Path]) -> str | None:
    """The module of the package that importing ``name`` loads last; None outside it."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def find_cycles(graph: Graph) -> list[list[str]]:
    """Cycles that cover every edge inside a strongly connected component: for each such
    edge u → v, the shortest way back from v to u. Each starts at its least module."""
    found: set[tuple[str, ...]] = set()
    for component in _strongly_connected(graph):
        if len(component) < 2:
            continue
        for u in sorted(component):
            for v in sorted(graph[u]):
                if v in component:
                    cycle = [u, *_shortest_path(graph, v, u, component)[:-1]]
                    start = cycle.index(min(cycle))
                    found.add(tuple(cycle[start:] + cycle[:start]))
    return [list(cycle) for cycle in sorted(found)]


def _strongly_connected(graph: Graph) -> list[set[str]]:
    """Tarjan's algorithm, iterative (no recursion limit to meet)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                components.append(component)
    return components


def _shortest_path(graph: Graph, start: str, goal: str, within: set[str]) -> list[str]:
    """Breadth first from ``start`` to ``goal`` through ``within``; both ends included."""
    came_from = {start: start}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path = [node]
            while path[-1] != start:
                path.append(came_from[path[-1]])
            return path[::-1]
        for child in sorted(graph[node]):
            if child in within and child not in came_from:
                came_from[child] = node
                queue.append(child)
    raise AssertionError(f"{goal} is not reachable from {start} in its own component")


def importers(graph: Graph, target: str) -> dict[str, int]:
    """Modules that import ``target``, with the line that does."""
    return {module: edges[target] for module, edges in graph.items() if target in edges}


def app_importers(graph: Graph) -> dict[str, int]:
    """Importers of wsgw.app that are no entry point."""
    return {
        module: line
        for module, line in importers(graph, APP).items()
        if not any(fnmatchcase(module, pattern) for pattern in APP_IMPORTERS)
    }


def services_importers(graph: Graph) -> dict[str, int]:
    """Importers of wsgw.services in the layers below it."""
    return {
        module: line
        for module, line in importers(graph, SERVICES).items()
        if any(module == layer or module.startswith(f"{layer}.") for layer in BELOW_SERVICES)
    }


def _describe(cycles: list[list[str]], graph: Graph) -> str:
    lines = []
    for cycle in cycles:
        hops = list(zip(cycle, [*cycle[1:], cycle[0]], strict=True))
        lines.append(" -> ".join([*cycle, cycle[0]]))
        lines.append("    lines: " + ", ".join(f"{a}:{graph[a][b]}" for a, b in hops))
    return "\n".join(lines)


def _listing(found: dict[str, int], target: str) -> str:
    return "\n".join(f"{module}:{line} imports {target}" for module, line in sorted(found.items()))


# ---------------------------------------------------------------------------- wsgw itself


@pytest.fixture(scope="module")
def graph() -> Graph:
    return import_graph(ROOT)


def test_no_import_cycle(graph: Graph) -> None:
    cycles = find_cycles(graph)
    assert not cycles, f"{len(cycles)} import cycles in wsgw/:\n{_describe(cycles, graph)}"


def test_only_entry_points_import_app(graph: Graph) -> None:
    found = app_importers(graph)
    assert not found, f"only {', '.join(APP_IMPORTERS)} may import {APP}:\n" + _listing(found, APP)


def test_lower_layers_do_not_import_services(graph: Graph) -> None:
    if SERVICES not in graph:
        pytest.skip(f"{SERVICES} does not exist yet")
    found = services_importers(graph)
    assert not found, f"{', '.join(BELOW_SERVICES)} must not import {SERVICES}:\n" + _listing(
        found, SERVICES
    )


# ------------------------------------------------------------ the walker on a made-up tree

CLEAN_TREE = {
    "__init__.py": "",
    "app.py": "from wsgw.pipeline import relay\n",
    "cli.py": "def main():\n    import wsgw.app\n",
    "services.py": "from .config.models import Config\n",
    "pipeline/__init__.py": "",
    "pipeline/relay.py": "from typing import TYPE_CHECKING\n",
    "oauth/__init__.py": "",
    "oauth/tokens.py": "def issue():\n    from ..config import models\n",
    "config/__init__.py": "from .models import *\n",
    "config/models.py": "",
    # A compiled module has no .py: `from . import bucket` is the package itself.
    "_core/__init__.py": "from . import bucket\n",
    "_core/bucket.pyx": "import wsgw.app\n",
}
# Back edges hidden from Python: under TYPE_CHECKING, and inside a function.
CYCLIC_TREE = {
    **CLEAN_TREE,
    "pipeline/relay.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
    "    from wsgw.app import Gateway\n",
    "config/models.py": "def check():\n    import wsgw.oauth.tokens\n",
    "oauth/guard.py": "from wsgw import services\n",
}


def _tree(root: Path, files: dict[str, str]) -> Path:
    package = root / "wsgw"
    for name, text in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    return package


def test_walker_resolves_every_kind_of_import(tmp_path: Path) -> None:
    graph = import_graph(_tree(tmp_path, CLEAN_TREE))
    assert {module: sorted(edges) for module, edges in graph.items() if edges} == {
        "wsgw.app": ["wsgw.pipeline.relay"],
        "wsgw.cli": ["wsgw.app"],
        "wsgw.services": ["wsgw.config.models"],
        "wsgw.oauth.tokens": ["wsgw.config.models"],
        "wsgw.config": ["wsgw.config.models"],
    }
    assert find_cycles(graph) == []
    assert app_importers(graph) == {}
    assert services_importers(graph) == {}


def test_walker_finds_hidden_cycles_and_layer_breaks(tmp_path: Path) -> None:
    graph = import_graph(_tree(tmp_path, CYCLIC_TREE))
    assert find_cycles(graph) == [
        ["wsgw.app", "wsgw.pipeline.relay"],
        ["wsgw.config.models", "wsgw.oauth.tokens"],
    ]
    assert _describe(find_cycles(graph)[:1], graph) == (
        "wsgw.app -> wsgw.pipeline.relay -> wsgw.app\n    lines: wsgw.app:1, wsgw.pipeline.relay:3"
    )
    assert app_importers(graph) == {"wsgw.pipeline.relay": 3}
    assert services_importers(graph) == {"wsgw.oauth.guard": 1}


def test_cycles_cover_every_edge_of_a_component() -> None:
    graph: Graph = {"a": {"b": 1}, "b": {"a": 1, "c": 1}, "c": {"a": 1}, "d": {"a": 1}}
    assert find_cycles(graph) == [["a", "b"], ["a", "b", "c"]]
