"""The shape of the code: every module imports, data flows one way, no import cycles.

docs/ARCHITECTURE.md draws the flow raw -> prepared -> bundle -> MLflow -> report/inference; these
tests hold the code to it. The import graph is read from the source with ``ast`` (every ``import``
statement, including the ones inside functions that run only on some paths), so a cycle that
only a rare code path would close is still found.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("wss_monai", "data_prep", "pipelines")
# Which top-level package may import which: the data flow, read left to right.
ALLOWED = {
    "wss_monai": set(),
    "data_prep": {"wss_monai"},
    "pipelines": {"wss_monai", "data_prep"},
}
MAX_LINES = 500


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the three packages."""
    found = {}
    for top in PACKAGES:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = module_files()


def package_of(module: str) -> str:
    """The package a module belongs to: itself for a package's ``__init__``, else its parent."""
    return module if (MODULES[module].name == "__init__.py") else module.rpartition(".")[0]


def layer_of(module: str) -> str:
    """The unit the layering is checked on: a top-level package's direct module or subpackage.

    ``wss_monai.engine.monitors`` -> ``wss_monai.engine``; ``wss_monai.geometry`` -> itself;
    ``data_prep`` (its ``__init__``) -> ``data_prep``.
    """
    return ".".join(module.split(".")[:2])


def imported(module: str) -> set[str]:
    """Modules of this repository that ``module`` imports anywhere in its source (resolved to known names)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = package_of(module)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # "from pkg import mod" depends on mod, "from mod import f" on mod
                full = f"{base}.{alias.name}"
                names.add(full if full in MODULES else base)
    resolved = set()
    for name in names:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name and name != module:
            resolved.add(name)
    return resolved


GRAPH = {module: imported(module) for module in MODULES}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle_and_only_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not m.endswith("__main__")))
def test_every_module_imports(module):
    importlib.import_module(module)


def test_packages_import_each_other_in_the_direction_of_the_data_flow():
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if target.split(".")[0] != module.split(".")[0]
        and target.split(".")[0] not in ALLOWED[module.split(".")[0]]
    )
    assert wrong == []


def test_no_import_cycle_between_packages():
    """Subpackages and the modules beside them form layers (``wss_monai.engine`` uses
    ``wss_monai.data``, which uses ``wss_monai.geometry``); a cycle among them is a tangle."""
    edges: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        source = layer_of(module)
        for target in map(layer_of, targets):
            # a top-level package's __init__ gathering its own parts is not a dependency on them
            gathers = MODULES[module].name == "__init__.py" and "." not in module and target.startswith(module + ".")
            if target != source and not gathers:
                edges.setdefault(source, set()).add(target)
    assert cycles(edges) == []


def test_no_import_cycle_between_modules():
    assert cycles(GRAPH) == []


def test_no_module_above_the_size_limit():
    long = {m: n for m, path in MODULES.items()
            if m.split(".")[0] in ("wss_monai", "pipelines")
            and (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_the_architecture_map_names_only_files_that_exist():
    """Every module or folder docs/ARCHITECTURE.md names under a package's heading is in that package."""
    import re

    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    sections = re.split(r"^### `([\w/]+)/`.*$", text, flags=re.M)
    missing = []
    for package, body in zip(sections[1::2], sections[2::2]):
        body = re.split(r"^## ", body, flags=re.M)[0]  # the section ends at the next chapter
        files = {p.relative_to(ROOT / package).as_posix() for p in (ROOT / package).rglob("*") if "__pycache__" not in p.parts}
        kinds = r"\.py|\.json|/" if package.startswith("bundles") else r"\.py|/"  # outputs like dataset.json are not files here
        for name in re.findall(rf"`([\w/]+(?:{kinds}))`", body):
            name = name.rstrip("/")
            if not any(f == name or f.endswith("/" + name) for f in files):
                missing.append(f"{package}/ ... {name}")
    assert sections[1::2] == ["data_prep", "wss_monai", "bundles/wss_segmentation", "pipelines"]
    assert missing == []
