"""The shape of the package, checked from its source (no module is imported).

``docs/design.md`` ("Layers") lists the layers of ``raysweep/`` from the bottom up, each with the
modules it holds and whether they may import Ray. This test parses every module's imports (at
the top, in functions and under ``TYPE_CHECKING`` alike) and fails on

- a circle of imports between modules;
- an import from a lower layer up to a higher one;
- ``ray`` imported by a module its layer does not list as a Ray module;
- a private Ray module (``ray._private``, ``..._internal``) imported outside the one adapter;
- an import inside a function, unless it is of a heavy optional package named in
  :data:`DEFERRED_IMPORTS` (with the reason), or in a module of :data:`DEFERRING_MODULES`.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "raysweep"
DESIGN = ROOT / "docs" / "design.md"

#: Third-party packages a function may import where it needs them, and why.
DEFERRED_IMPORTS = {
    "mlflow": "an optional tracker (extra `tracking`); imported only when a spec turns it on",
    "wandb": "an optional tracker (extra `tracking`); imported only when a spec turns it on",
    "ray.air.integrations.mlflow": "Ray's MLflow callback imports mlflow (~1 s on every "
    "command otherwise); imported only when a spec tracks searches with MLflow",
    "ray.air.integrations.wandb": "Ray's W&B callback imports wandb (~1 s on every command "
    "otherwise); imported only when a spec tracks searches with W&B",
    "tensorboardX": "an optional tracker; imported only when a spec turns it on",
    "torch.utils.tensorboard": "an optional tracker; imported only when a spec turns it on",
    "lightly": "benchmarks' comparison library, not a dependency of the package",
    "medmnist": "optional (extra `medmnist`): read only for a `medmnist:` source",
    "matplotlib": "the report's figures; a run that writes no report never pays its import",
}

#: Modules whose functions import what one command needs, with the reason.
DEFERRING_MODULES = {
    "raysweep.cli": "each command imports only what it runs, so that `raysweep --help`, "
    "`--spec-only` and `datasets` answer without importing torch and Ray",
}


@dataclass(frozen=True)
class Layer:
    number: int
    prefixes: tuple[str, ...]
    ray: tuple[str, ...]


def design_layers() -> list[Layer]:
    """The rows of the table under ``## Layers`` in docs/design.md:
    ``| n | module prefixes | modules that may import Ray |``."""
    text = DESIGN.read_text(encoding="utf-8")
    section = text.split("\n## Layers", 1)[1].split("\n## ", 1)[0]
    layers = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].isdigit():
            names = tuple(re.findall(r"`([\w.]+)`", cells[1]))
            ray = tuple(re.findall(r"`([\w.]+)`", cells[2]))
            layers.append(Layer(int(cells[0]), names, ray))
    assert layers, "docs/design.md has no layer table under '## Layers'"
    return layers


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@dataclass(frozen=True)
class Import:
    importer: str
    target: str
    line: int
    in_function: bool


def imports_of(path: Path, modules: set[str]) -> list[Import]:
    """Every import of ``path``: the raysweep modules it names (``from a import b`` names ``a.b``
    when that is a module, else ``a``) and third-party top-level packages as written."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    in_function: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            in_function.update(id(n) for n in ast.walk(node) if n is not node)
    found = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            subs = [f"{base}.{alias.name}" for alias in node.names]
            named = [s for s in subs if s in modules]
            targets = named + ([base] if len(named) < len(subs) else [])
        for target in targets:
            found.append(Import(name, target, node.lineno, id(node) in in_function))
    return found


@pytest.fixture(scope="module")
def graph() -> tuple[set[str], list[Import]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return modules, [imp for p in paths for imp in imports_of(p, modules)]


def layer_of(module: str, layers: list[Layer]) -> Layer:
    best: tuple[int, Layer] | None = None
    for layer in layers:
        for prefix in layer.prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), layer)
    assert best is not None, f"{module} is in no layer of docs/design.md ('## Layers')"
    return best[1]


def test_every_module_has_a_layer(graph):
    modules, _ = graph
    layers = design_layers()
    for module in sorted(modules):
        layer_of(module, layers)


def cycles(modules: set[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(modules):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def package_edges(modules: set[str], imports: list[Import]) -> dict[str, set[str]]:
    """Module -> the raysweep modules it imports (a package counts as its ``__init__``)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for imp in imports:
        if imp.target in modules and imp.target != imp.importer:
            edges[imp.importer].add(imp.target)
    return edges


def test_no_import_circles(graph):
    modules, imports = graph
    found = cycles(modules, package_edges(modules, imports))
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_import_back_up(graph):
    modules, imports = graph
    layers = design_layers()
    upward = []
    for imp in imports:
        if imp.target in modules:
            low, high = layer_of(imp.importer, layers), layer_of(imp.target, layers)
            if high.number > low.number:
                upward.append(f"{imp.importer}:{imp.line} (layer {low.number}) imports "
                              f"{imp.target} (layer {high.number})")
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_ray_only_where_listed(graph):
    _, imports = graph
    allowed = {m for layer in design_layers() for m in layer.ray}
    ray_importers = {imp.importer for imp in imports if imp.target.split(".")[0] == "ray"}
    assert ray_importers <= allowed, f"Ray imported outside the listed modules: " \
        f"{sorted(ray_importers - allowed)}"
    private = [f"{imp.importer}:{imp.line} {imp.target}" for imp in imports
               if imp.target.split(".")[0] == "ray"
               and any(p.startswith("_") for p in imp.target.split(".")[1:])
               and imp.importer != "raysweep.ray_adapter"]
    assert not private, f"private Ray API imported: {private}"


def test_imports_at_the_top(graph):
    _, imports = graph
    local = []
    for imp in imports:
        if not imp.in_function or imp.importer in DEFERRING_MODULES:
            continue
        if any(imp.target == p or imp.target.startswith(p + ".") for p in DEFERRED_IMPORTS):
            continue
        local.append(f"{imp.importer}:{imp.line} {imp.target}")
    assert not local, f"{len(local)} imports inside functions:\n" + "\n".join(local)
