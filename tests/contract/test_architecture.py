"""The layout ARCHITECTURE.md promises: no import circle, small modules, data flowing one way."""

from __future__ import annotations

import ast
import collections
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "mspn_cli"
# Operator tables may run long; nothing else should.
LONG_MODULES_ALLOWED = ("export/onnx/ops_",)
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(("mspn_cli",) + tuple(p for p in parts if p != "__init__"))


def _top_level_imports():
    """Module -> the mspn_cli modules it imports when it is imported (not inside functions)."""
    graph = collections.defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mspn_cli"):
                graph[_module_name(path)].add(node.module)
            elif isinstance(node, ast.Import):
                graph[_module_name(path)].update(a.name for a in node.names if a.name.startswith("mspn_cli"))
    return graph


def _all_imports():
    """Module -> the mspn_cli modules it imports anywhere, function bodies included.

    `from mspn_cli.x import y` counts as an import of mspn_cli.x.y when y is a module.
    """
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    graph = collections.defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mspn_cli"):
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    graph[_module_name(path)].add(submodule if submodule in modules else node.module)
            elif isinstance(node, ast.Import):
                graph[_module_name(path)].update(a.name for a in node.names if a.name.startswith("mspn_cli"))
    return graph


def _room(module: str) -> str:
    """mspn_cli.runtime.lite_probe -> mspn_cli.runtime; a top-level module is its own room."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _cycles(graph):
    state, cycles = {}, []

    def visit(module, stack):
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    return cycles


def test_no_import_circle():
    assert _cycles(_top_level_imports()) == []


def test_no_import_circle_inside_a_room_even_through_deferred_imports():
    """An import inside a function breaks a circle at import time but not in the design:
    inside one room (one subpackage) modules depend on each other one way only."""
    inside = {module: {t for t in targets if _room(t) == _room(module) and t != module}
              for module, targets in _all_imports().items()}
    assert _cycles(inside) == []


def test_the_circle_checks_can_fail():
    assert _cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b", "a"]]


def test_no_module_over_400_lines_outside_the_operator_tables():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES
            and not str(p.relative_to(PACKAGE)).startswith(LONG_MODULES_ALLOWED)}
    assert long == {}


def test_data_flows_one_way():
    """The library never imports the CLI; the networks' rooms never import the pipeline or engines."""
    graph = _top_level_imports()
    for module, targets in graph.items():
        if not module.startswith(("mspn_cli.cli", "mspn_cli.__main__")):
            assert not any(t.startswith("mspn_cli.cli") for t in targets), (module, targets)
        if module.startswith(("mspn_cli.pose", "mspn_cli.detection", "mspn_cli.models", "mspn_cli.runtime",
                              "mspn_cli.export", "mspn_cli.weights", "mspn_cli.tracking")):
            assert not any(t.startswith(("mspn_cli.pipeline", "mspn_cli.engines", "mspn_cli.video")) for t in targets), (module, targets)
        if module.startswith("mspn_cli.export"):
            assert not any(t.startswith("mspn_cli.runtime") for t in targets), (module, targets)
