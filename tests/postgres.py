"""The PostgreSQL server the suite runs its database tests on, when one is there.

The server is `TEST_POSTGRES_URL` or, when that is unset, a local one on 127.0.0.1:5432 (user
`postgres`, trust authentication) if it answers. Each test session (each pytest-xdist worker)
creates its own database, `arena_test_<worker>_<pid>`, and drops it at the end; each test gets a
fresh schema in it (cheaper than a database), reached through the URL's `search_path`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import count
from typing import Any

from sqlalchemy.engine import URL, make_url

ENV_NAME = "TEST_POSTGRES_URL"
LOCAL_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
HOW_TO_ENABLE = (
    f"PostgreSQL tests skipped: set {ENV_NAME}=postgresql+psycopg://user@host/db (a user that may "
    "create databases) or start a server on 127.0.0.1:5432 with trust auth for user postgres"
)
_CONNECT_TIMEOUT_S = 3


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT_S):
            return True
    except OSError:
        return False


def server_url() -> tuple[URL | None, str]:
    """Return the server's admin URL, or None and why the PostgreSQL tests skip."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return None, f"{HOW_TO_ENABLE}; and install the driver: pip install -e '.[postgres]'"
    setting = os.environ.get(ENV_NAME)
    url = make_url(setting or LOCAL_URL)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    if not _answers(url.host or "127.0.0.1", url.port or 5432):
        where = f"{ENV_NAME} ({url.render_as_string()})" if setting else "127.0.0.1:5432"
        return None, f"{HOW_TO_ENABLE} (nothing answers at {where})"
    return url, ""


def _execute(url: URL, *statements: str) -> list[Any]:
    """Run `statements` in autocommit on `url`; return the rows of the last one."""
    import psycopg

    rows: list[Any] = []
    with psycopg.connect(
        url.set(drivername="postgresql").render_as_string(hide_password=False),
        autocommit=True,
        connect_timeout=_CONNECT_TIMEOUT_S,
    ) as connection:
        for statement in statements:
            cursor = connection.execute(statement)  # type: ignore[arg-type]
            rows = cursor.fetchall() if cursor.description else []
    return rows


@dataclass
class SessionDatabase:
    """A database made for one test session; hands out one fresh schema per test."""

    url: URL
    _numbers: Iterator[int]

    @contextmanager
    def schema(self) -> Iterator[str]:
        """Yield the URL of a fresh, empty schema; drop it (and its connections) afterwards."""
        name = f"t{next(self._numbers)}"
        tag = f"arena_test_{self.url.database}_{name}"
        _execute(self.url, f"CREATE SCHEMA {name}")
        url = self.url.update_query_dict(
            {"options": f"-csearch_path={name}", "application_name": tag}
        )
        try:
            yield url.render_as_string(hide_password=False)
        finally:
            # Connections the test left in a pool (or in a transaction) would block the drop.
            _execute(
                self.url,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE application_name = '{tag}' AND pid <> pg_backend_pid()",
                f"DROP SCHEMA {name} CASCADE",
            )


@contextmanager
def session_database(admin: URL) -> Iterator[SessionDatabase]:
    """Create `arena_test_<worker>_<pid>` on the server, yield it, drop it at the end."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"arena_test_{worker}_{os.getpid()}"
    _execute(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}")
    try:
        yield SessionDatabase(admin.set(database=name), count(1))
    finally:
        _execute(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
