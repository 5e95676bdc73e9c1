"""The package's shape: layers import downwards only, no cycles, small modules and functions.

Read from the source with ``ast``, so a violation fails the fast suite before review does.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "proxy"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

# Higher layers may import lower ones, never the reverse. The entry points sit on top; the
# pure parsing and the shared model at the bottom.
RANKS: dict[str, int] = {
    "__main__": 7,
    "healthcheck": 7,  # the image's HEALTHCHECK: an entry point, importing no proxy module
    "cli": 6,
    "commands": 6,
    "server": 5,
    "cache": 4,
    "upstream": 3,
    "fleet": 3,  # leases and peers: below the cache that uses them, above the stores
    "routing": 3,
    "store": 2,
    "auth": 2,
    "config": 1,
    "errors": 1,
    "metrics": 1,
    "logs": 1,
    "oci": 0,
    "model": 0,
    "tasks": 0,  # stopping background tasks: asyncio only
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """proxy modules imported anywhere in the file (function-local imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("proxy"):
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("proxy"))
    return {name for name in names if name in MODULES}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


@pytest.mark.parametrize("module", [m for m in MODULES if m != "proxy"])
def test_imports_go_down_the_layers(module: str) -> None:
    rank = RANKS[_layer(module)]
    upward = [
        imported
        for imported in _imports(MODULES[module])
        if _layer(imported) in RANKS and RANKS[_layer(imported)] > rank
    ]
    assert not upward, f"{module} imports from a higher layer: {upward}"


def test_no_import_cycles() -> None:
    graph = {module: _imports(path) for module, path in MODULES.items()}
    # A package's __init__ is imported with any of its modules; that edge is not a cycle.
    for module in graph:
        graph[module] = {m for m in graph[module] if not module.startswith(m + ".")}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        if module in done:
            return
        assert module not in visiting, f"import cycle: {' -> '.join([*visiting, module])}"
        visiting.append(module)
        for imported in sorted(graph[module]):
            visit(imported)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


@pytest.mark.parametrize("module", list(MODULES))
def test_modules_and_functions_stay_small(module: str) -> None:
    source = MODULES[module].read_text()
    assert source.count("\n") <= MAX_MODULE_LINES, f"{module} is over {MAX_MODULE_LINES} lines"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{module} has functions over {MAX_FUNCTION_LINES} lines: {long}"
