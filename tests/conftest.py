"""Shared fixtures: the real data beside the project, temporary databases, a clean environment."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.db.llm_rows import forget_stored_texts
from tests.postgres import SessionDatabase, server_url, session_database

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_root(setting: str | None) -> Path:
    """Return the real-data folder: `ARENA_SHARED_DATA` (the `shared` folder or its `data`
    folder, either works), else `../shared/data` beside the repository."""
    root = Path(setting) if setting else REPO_ROOT.parent / "shared" / "data"
    inner = root / "data"
    return inner if inner.is_dir() and not (root / "market").is_dir() else root


SHARED_DATA = shared_data_root(os.environ.get("ARENA_SHARED_DATA"))

# Settings the developer's shell or .env might carry; tests start from defaults.
_SETTING_PREFIXES = (
    "ARENA_",
    "SYMBOLS",
    "AGENTS",
    "EXCHANGE_",
    "RISK_",
    "SCHEDULE_",
    "LLM_",
    "VISION_",
    "MODELSCOPE_",
    "DEEPSEEK_",
    "DASHSCOPE_",
    "OPENAI_",
    "DATABASE_",
    "LOG_",
    "SERVE_",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the slow end-to-end tests first (in collection order otherwise).

    With parallel workers they are then shared out at the start, instead of one of them
    leaving a single worker busy at the end while the others wait.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def shared_data(*parts: str) -> Path:
    """Return a path under ../shared/data, skipping the test with the reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(
            f"real data not available: {path} is absent (set ARENA_SHARED_DATA to the shared "
            "data folder, see the README's Testing section)"
        )
    return path


def unset_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset every settings variable the developer's shell may carry (until monkeypatch undoes)."""
    for name in list(os.environ):
        if name.upper().startswith(_SETTING_PREFIXES):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    unset_settings(monkeypatch)
    # A terminal size inherited from the runner (pytest-xdist workers get COLUMNS=80) would
    # squeeze piped output that tests read; tests that want a width set one.
    for name in ("COLUMNS", "LINES"):
        monkeypatch.delenv(name, raising=False)
    # Run from an empty folder so a developer's .env or arena.toml never leaks into a test.
    monkeypatch.chdir(tmp_path)
    forget_stored_texts()
    yield


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[SessionDatabase | None]:
    """This session's PostgreSQL database (see tests/postgres.py), or None without a server."""
    admin, _why = server_url()
    if admin is None:
        yield None
        return
    with session_database(admin) as database:
        yield database


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """Return the URL of a fresh SQLite file (not yet migrated)."""
    return f"sqlite:///{tmp_path / 'arena.db'}"


@pytest.fixture
def postgres_url(postgres_database: SessionDatabase | None) -> Iterator[str]:
    """Return the URL of a fresh, empty PostgreSQL schema (not yet migrated), or skip."""
    if postgres_database is None:
        pytest.skip(server_url()[1])
    with postgres_database.schema() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Return the URL of a fresh database (not yet migrated): every database test runs twice,
    on a SQLite file and on a PostgreSQL schema (skipped, saying how to enable it, without a
    server)."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def refused_port() -> Iterator[int]:
    """Return a loopback port where connections are refused, reserved for the whole test.

    The socket stays bound without listening (the kernel answers a connection with a reset), so
    no other test running in parallel can start a server on that port meanwhile.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@contextlib.contextmanager
def logging_restored() -> Iterator[None]:
    """Put the root logger's handlers and every logger's level back as they were on exit.

    `configure_logging` (run by every command) replaces the process's logging setup, and its
    stream handler is bound to the stderr of the moment: it must not outlive the test.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {
        name: logger.level
        for name, logger in logging.root.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)
        for name, logger in logging.root.manager.loggerDict.items():
            if isinstance(logger, logging.Logger):
                logger.setLevel(levels.get(name, logging.NOTSET))


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo whatever logging setup the test makes (see `logging_restored`)."""
    with logging_restored():
        yield
