"""The core (DESIGN.md §1) stays pure: no exchange, LLM, database, scheduler or HTTP library."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[1] / "app"

CORE_FILES = [
    "domain.py",
    "errors.py",
    "ports.py",
    "indicators.py",
    "decisions.py",
    "metrics.py",
    "trading/risk.py",
    "trading/paper.py",
    "trading/engine.py",
]
CORE_PACKAGES = ["prompts"]

FORBIDDEN_ROOTS = {
    "ccxt",
    "openai",
    "sqlalchemy",
    "alembic",
    "apscheduler",
    "httpx",
    "httpx2",
    "aiohttp",
    "requests",
    "urllib3",
    "websockets",
    "fastapi",
    "starlette",
    "uvicorn",
    "jinja2",
}
FORBIDDEN_MODULES = {"urllib.request", "http.client", "socket"}
# Inside the project, the core may only lean on other core modules.
ALLOWED_APP_MODULES = {
    "app",
    "app.domain",
    "app.errors",
    "app.ports",
    "app.indicators",
    "app.decisions",
    "app.metrics",
    "app.prompts",
    "app.trading",
    "app.trading.risk",
    "app.trading.paper",
    "app.trading.engine",
}


# Every module inside these packages belongs to the core.
CORE_PACKAGE_PREFIXES = ("app.prompts.", "app.trading.")


def core_modules() -> list[Path]:
    files = {APP / name for name in CORE_FILES if (APP / name).is_file()}
    for package in (*CORE_PACKAGES, "trading"):
        files.update((APP / package).rglob("*.py"))
    return sorted(files)


def imported_modules(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def is_app_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:]) if "." in name else Path()
    return (APP / relative).with_suffix(".py").is_file() or (
        APP / relative / "__init__.py"
    ).is_file()


def violations(source: str) -> list[str]:
    found = []
    for name in sorted(imported_modules(source)):
        root = name.split(".")[0]
        if root in FORBIDDEN_ROOTS or name in FORBIDDEN_MODULES:
            found.append(name)
        elif root == "app":
            # `from app.domain import Position` yields "app.domain.Position": judge the module part.
            module = name if is_app_module(name) else name.rsplit(".", 1)[0]
            in_core_package = module.startswith(CORE_PACKAGE_PREFIXES)
            if module not in ALLOWED_APP_MODULES and not in_core_package:
                found.append(name)
    return found


def test_core_modules_exist() -> None:
    assert len(core_modules()) >= 4


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: str(p.relative_to(APP)))
def test_core_module_imports_no_io_library(path: Path) -> None:
    bad = violations(path.read_text(encoding="utf-8"))
    assert not bad, f"{path.relative_to(APP.parent)} imports {bad}: the core must stay pure"


@pytest.mark.parametrize(
    "source",
    [
        "import ccxt.async_support as ccxt",
        "from openai import AsyncOpenAI",
        "import sqlalchemy",
        "from apscheduler.schedulers.asyncio import AsyncIOScheduler",
        "import httpx",
        "import aiohttp",
        "from urllib.request import urlopen",
        "from app.db.models import Agent",
        "from app.config import Settings",
        "from app import wiring",
    ],
)
def test_the_import_walk_catches_forbidden_imports(source: str) -> None:
    assert violations(source), f"{source!r} should be reported"


@pytest.mark.parametrize(
    "source",
    [
        "import pandas as pd",
        "from app.domain import Position",
        "from app import domain",
        "from app.prompts.builder import build_messages",
        "from app.trading.paper import PaperAccount",
    ],
)
def test_the_import_walk_allows_pure_imports(source: str) -> None:
    assert violations(source) == []


# -- the dashboard stays at the edge ------------------------------------------------------------

WEB = APP / "web"
# What the dashboard may lean on: the records, the reports over them, settings and the core types.
WEB_ALLOWED_PREFIXES = (
    "app.web",
    "app.db",
    "app.reports",
    "app.config",
    "app.metrics",
    "app.domain",
    "app.errors",
)
# Only entry points may import the dashboard: the command line and the daemon that serves it.
WEB_IMPORTERS = {"cli.py", "live.py"}


def _all_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted(WEB.rglob("*.py")), ids=lambda p: p.name)
def test_web_imports_only_records_reports_settings_and_core_types(path: Path) -> None:
    own = {name for name in _all_imports(path) if name == "app" or name.startswith("app.")}
    bad = sorted(
        name for name in own if name != "app" and not name.startswith(WEB_ALLOWED_PREFIXES)
    )
    assert not bad, f"{path.relative_to(APP.parent)} imports {bad}: the dashboard only reads"


def test_nothing_but_entry_points_imports_the_dashboard() -> None:
    importers = sorted(
        str(path.relative_to(APP))
        for path in APP.rglob("*.py")
        if WEB not in path.parents
        and any(name.startswith("app.web") for name in _all_imports(path))
    )
    assert set(importers) <= WEB_IMPORTERS, importers
