"""The architecture holds: no import circle, and a pure core that reads no clock, file or network.

The layers of the core and the separation of the adapters are import-linter contracts
(`[tool.importlinter]` in pyproject.toml), checked by `lint-imports` in scripts/test.sh; these
tests check what import-linter does not: circles among every module (imports made only for type
checking and imports inside functions included) and calls that do I/O or read the clock.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[1] / "app"

# The pure core: every module here is checked for I/O calls.
CORE_MODULES = (
    "domain",
    "errors",
    "decisions",
    "indicators",
    "metrics",
    "candle_checks",
    "ports",
    # The evaluation's statistics and windows are pure too.
    "evaluation/windows",
    "evaluation/stats",
    "evaluation/results",
)
CORE_PACKAGES = ("prompts", "trading")

# Calls that read the clock, the disk, the network or the environment, by the dotted name they
# are called through (`datetime.now()`, `time.time()`, `path.read_text()`...).
FORBIDDEN_CALLS = {
    "datetime.now",
    "datetime.utcnow",
    "datetime.today",
    "date.today",
    "time.time",
    "time.time_ns",
    "time.monotonic",
    "time.perf_counter",
    "time.sleep",
    "os.getenv",
    "os.environ.get",
    "socket.socket",
    "socket.create_connection",
    "subprocess.run",
    "subprocess.Popen",
}
FORBIDDEN_BUILTINS = {"open", "input", "print"}
FORBIDDEN_METHODS = {"read_text", "read_bytes", "write_text", "write_bytes", "iterdir", "unlink"}
FORBIDDEN_NAMES = {"environ"}
# The one I/O the core may do: the prompt reads its system template, shipped with the package.
ALLOWED = {("prompts/builder.py", "_system_template")}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(APP.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def app_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(APP.rglob("*.py"))}


def imported_modules(path: Path, known: Mapping[str, Path]) -> set[str]:
    """Every app module `path` imports: at the top, inside functions, or for type checking."""
    package = (
        module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    )
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # `from app.db import queries` imports the module app.db.queries.
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name in known}


def import_graph() -> dict[str, set[str]]:
    modules = app_modules()
    return {name: imported_modules(path, modules) - {name} for name, path in modules.items()}


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_back_through_others() -> None:
    graph = import_graph()
    assert len(graph) > 40
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_planted_circle() -> None:
    # decisions -> errors -> ports -> decisions: the circle this project once had.
    planted = {"d": {"e"}, "e": {"p"}, "p": {"d"}, "x": {"d"}}
    assert cycles(planted) == [["d", "e", "p"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_walk_sees_imports_for_type_checking_and_inside_functions(tmp_path: Path) -> None:
    graph = import_graph()
    # app.errors reads `CallAttempt` from app.domain; app.cli imports app.wiring inside commands.
    assert "app.domain" in graph["app.errors"]
    assert any("app.wiring" in targets for name, targets in graph.items() if "cli" in name)


def core_files() -> list[Path]:
    files = [APP / f"{name}.py" for name in CORE_MODULES]
    for package in CORE_PACKAGES:
        files.extend(sorted((APP / package).rglob("*.py")))
    return files


def dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Call):
        return dotted(node.func) + "()"
    return "?"


def io_calls(source: str) -> Iterator[tuple[str, str]]:
    """Yield (enclosing function, what) for each clock, file, network or environment access."""

    def walk(node: ast.AST, function: str) -> Iterator[tuple[str, str]]:
        for child in ast.iter_child_nodes(node):
            name = function
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = child.name
            if isinstance(child, ast.Call):
                called = dotted(child.func)
                tail = called.rsplit(".", 1)[-1]
                if (
                    called in FORBIDDEN_BUILTINS
                    or any(called == c or called.endswith("." + c) for c in FORBIDDEN_CALLS)
                    or ("." in called and tail in FORBIDDEN_METHODS)
                ):
                    yield name, called
            elif (
                isinstance(child, ast.Name | ast.Attribute)
                and dotted(child).rsplit(".", 1)[-1] in FORBIDDEN_NAMES
            ):
                yield name, dotted(child)
            yield from walk(child, name)

    yield from walk(ast.parse(source), "<module>")


@pytest.mark.parametrize("path", core_files(), ids=lambda p: str(p.relative_to(APP)))
def test_the_core_reads_no_clock_file_or_network(path: Path) -> None:
    where = str(path.relative_to(APP))
    found = [
        f"{function}: {call}"
        for function, call in io_calls(path.read_text(encoding="utf-8"))
        if (where, function) not in ALLOWED
    ]
    assert not found, f"app/{where} does I/O or reads the clock ({found}): pass it in instead"


@pytest.mark.parametrize(
    "source",
    [
        "from datetime import datetime\ndef f():\n    return datetime.now()",
        "import datetime\nx = datetime.datetime.now(datetime.UTC)",
        "import time\ndef f():\n    return time.monotonic()",
        "def f(path):\n    return path.read_text()",
        "def f():\n    return open('x').read()",
        "import os\nkey = os.environ['KEY']",
        "import os\nkey = os.getenv('KEY')",
        "import socket\ns = socket.create_connection(('a', 1))",
    ],
)
def test_the_io_check_catches_planted_calls(source: str) -> None:
    assert list(io_calls(source)), f"{source!r} should be reported"


@pytest.mark.parametrize(
    "source",
    [
        "def f(now):\n    return now - 1",
        "import pandas as pd\nx = pd.Timestamp('2025-01-01', tz='UTC')",
        "def f(text):\n    return text.split()",
    ],
)
def test_the_io_check_lets_pure_code_through(source: str) -> None:
    assert list(io_calls(source)) == []
