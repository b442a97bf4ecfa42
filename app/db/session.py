"""Engine and sessions: SQLite with WAL, foreign keys and a busy timeout.

Every engine raises `app.errors.DatabaseError` in place of SQLAlchemy's `OperationalError`
(see `app.db.errors`), so no entry point needs to know SQLAlchemy's exceptions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import Pool

from app.db.errors import translate_operational_error
from app.errors import ConfigError

BUSY_TIMEOUT_MS = 10_000
PAGE_SIZE_BYTES = 8_192
CACHE_SIZE_KB = 65_536  # per connection, an upper bound: pages are taken as they are read


def sqlite_path(url: str) -> Path | None:
    """Return the file behind a SQLite URL, or None for in-memory and non-SQLite databases."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as error:
        raise ConfigError(
            f"DATABASE_URL {safe_url(url)!r} is not a database URL: use e.g. "
            "sqlite:///data/arena.db"
        ) from error
    if not parsed.drivername.startswith("sqlite"):
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    return Path(database)


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # Calls with their reasoning are 2-3 kB rows (4 kB pages would hold one each) and a
        # vision agent's chart 12-14 kB (16 kB pages would hold one each): 8 kB pages waste
        # least of both (docs/BENCHMARKS.md). Takes effect only on a new database (before WAL).
        cursor.execute(f"PRAGMA page_size={PAGE_SIZE_BYTES}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        # WAL with NORMAL is still crash-safe for the database; at most the last commit is lost
        # on power failure, never a half-written one.
        cursor.execute("PRAGMA synchronous=NORMAL")
        # SQLite's default 2 MB page cache holds little of a database that grows by megabytes a
        # day: index pages of the busy tables then come from the OS on every write (measured: a
        # replayed backtest over a 200 MB file ran about 10% faster with 64 MB, noisy machine).
        cursor.execute(f"PRAGMA cache_size=-{CACHE_SIZE_KB}")
    finally:
        cursor.close()


def make_engine(url: str, *, echo: bool = False, poolclass: type[Pool] | None = None) -> Engine:
    """Create an engine for `url`, creating the SQLite file's folder on demand.

    On a server database the pool checks a connection before handing it out (`pool_pre_ping`),
    so one the server or the network dropped while idle is replaced instead of failing the next
    write; SQLAlchemy's default QueuePool sizes (5 kept, 10 more on demand) serve one process.
    """
    path = sqlite_path(url)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(
                f"DATABASE_URL {safe_url(url)!r}: the folder {path.parent} cannot be created "
                f"({error.strerror or error}); point DATABASE_URL at a folder you can write to"
            ) from error
    try:
        options: dict[str, Any] = {} if poolclass is None else {"poolclass": poolclass}
        if path is None and make_url(url).get_backend_name() != "sqlite":
            options["pool_pre_ping"] = True
        engine = create_engine(url, echo=echo, future=True, **options)
    except ImportError as error:
        raise ConfigError(_missing_driver(url, error)) from error
    except ArgumentError as error:
        raise ConfigError(f"DATABASE_URL {safe_url(url)!r} cannot be opened: {error}") from error
    event.listen(engine, "handle_error", translate_operational_error)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _set_sqlite_pragmas)
    return engine


@dataclass(frozen=True, slots=True)
class Database:
    """A migrated database: its URL, its engine and a session factory."""

    url: str
    engine: Engine
    sessions: sessionmaker[Session]


# Database backends and the extra that installs their driver (`pip install '.[postgres]'`).
DRIVER_EXTRAS: Final = {"postgresql": ("postgres", "psycopg 3")}
# `scheme://user:password@host`: what a URL SQLAlchemy cannot parse still masks.
_CREDENTIALS: Final = re.compile(r"(?P<head>[A-Za-z0-9+.-]+://[^:/@]*:)(?P<password>[^@]*)@")


def safe_url(url: str) -> str:
    """Return `url` fit for a message: its password, if any, masked."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return _CREDENTIALS.sub(r"\g<head>***@", url)
    return url if parsed.password is None else parsed.render_as_string(hide_password=True)


def _missing_driver(url: str, error: ImportError) -> str:
    """Return what to install for a database URL whose driver is missing."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    extra = DRIVER_EXTRAS.get(backend)
    missing = error.name or str(error)
    if extra is None:
        return (
            f"DATABASE_URL {safe_url(url)!r} needs the Python driver {missing}, which is not "
            "installed; the arena supports SQLite and PostgreSQL"
        )
    name, driver = extra
    dialect = f"{backend}+psycopg"
    other = "" if parsed.get_driver_name() == "psycopg" else f", and use a {dialect}:// URL"
    return (
        f"DATABASE_URL {safe_url(url)!r} needs the {backend} driver ({driver}), which is not "
        f"installed: pip install '.[{name}]' (in .venv: .venv/bin/pip install -e '.[{name}]')"
        f"{other}"
    )


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Return a session factory whose objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)
