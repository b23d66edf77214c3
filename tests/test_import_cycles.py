"""The package's layers point one way (lazy imports inside functions included): every import goes
to the importer's own layer or a lower one of LAYERS, there are no cycles among modules, and
lightwork.jobs is imported by nothing but the console script."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def import_graph() -> dict[str, set[str]]:
    """Module -> the lightwork modules it imports, for every module of the package."""
    packages = [
        top for top in REPO.iterdir() if (top / "__init__.py").is_file() and top.name not in ("tests", "benchmarks")
    ]
    paths = {}
    for path in [*REPO.glob("*.py"), *(path for package in packages for path in package.rglob("*.py"))]:
        parts = path.relative_to(REPO).with_suffix("").parts
        paths[".".join(("lightwork", *parts)).removesuffix(".__init__")] = path

    def module_of(name: str) -> str | None:  # "lightwork.data.storage.join" -> "lightwork.data.storage"
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in filter(None, map(module_of, (t for t in targets if t.startswith("lightwork")))):
                if target != name and not name.startswith(f"{target}."):  # a module's own package runs first anyway
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


# Lowest first. A module belongs to the longest entry that prefixes it; it may import its own layer
# and the layers below. data.storage (local and S3 file access) sits below everything that reads
# or writes; config is the schema only; synthesis is the bridge between data and anomalies;
# testing (clusters for tests and benchmarks) sits above the library it drives.
LAYERS = (
    ("lightwork", "lightwork.errors"),
    ("lightwork.data.storage",),
    ("lightwork.anomalies",),
    ("lightwork.config",),
    ("lightwork.data",),
    ("lightwork.demo",),
    ("lightwork.synthesis",),
    ("lightwork.models",),
    ("lightwork.methods",),
    ("lightwork.training",),
    ("lightwork.evaluation",),
    ("lightwork.inference",),
    ("lightwork.distributed",),
    ("lightwork.testing",),
    ("lightwork.jobs",),
    ("lightwork.cli",),
)


def layer_of(module: str) -> int:
    """The index in LAYERS of the longest entry that is `module` or a package above it."""
    matches = [
        (len(entry), index)
        for index, entries in enumerate(LAYERS)
        for entry in entries
        if module == entry or module.startswith(f"{entry}.")
    ]
    assert matches, f"{module} is in no layer of LAYERS"
    return max(matches)[1]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import of `graph` into a higher layer than the importer's, as a line each."""
    return sorted(
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in graph.items()
        for target in targets
        if layer_of(target) > layer_of(module)
    )


def test_layers_point_one_way():
    assert not upward_imports(import_graph()), "\n".join(upward_imports(import_graph()))


def test_the_layer_check_finds_an_upward_import_and_takes_the_longest_entry():
    graph = {"lightwork.config": {"lightwork.data.manifest", "lightwork.data.storage", "lightwork.errors"}}
    assert upward_imports(graph) == ["lightwork.config (layer 3) imports lightwork.data.manifest (layer 4)"]
    assert layer_of("lightwork.errors") == layer_of("lightwork") == 0


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_no_import_cycle_anywhere():
    graph = import_graph()
    assert "lightwork.anomalies.registry" in graph and "lightwork.distributed.train" in graph
    assert not cycles(graph), cycles(graph)
    importers_of_jobs = {
        module for module, targets in graph.items() if any(t.startswith("lightwork.jobs") for t in targets)
    }
    assert importers_of_jobs <= {"lightwork.cli"} | {m for m in graph if m.startswith("lightwork.jobs")}, (
        importers_of_jobs
    )
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        packages.setdefault(package_of(module), set()).update(
            package_of(t) for t in targets if package_of(t) != package_of(module)
        )
    assert not cycles(packages), cycles(packages)
