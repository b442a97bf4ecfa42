"""Run Alembic migrations from code: `arena db upgrade` and every command needing the database."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, text

from app.db.session import make_engine

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
# PostgreSQL advisory lock keys serialising migrations ("ARNA", "MIGR"): see `_one_at_a_time`.
_MIGRATION_LOCK: Final = (0x4152_4E41, 0x4D49_4752)


def _one_at_a_time(connection: Connection) -> None:
    """On PostgreSQL, wait for any other process migrating the same database.

    Every command migrates first: eight backtests started at once on a fresh database would
    otherwise all try to create the same tables. The lock lasts until the migration's
    transaction ends; DDL is transactional there, so the next process finds the schema at head.
    SQLite serialises writers itself.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(
            text("SELECT pg_advisory_xact_lock(:a, :b)"),
            dict(a=_MIGRATION_LOCK[0], b=_MIGRATION_LOCK[1]),
        )


def alembic_config(url: str) -> Config:
    """Return an Alembic configuration for the database at `url`."""
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise FileNotFoundError(f"migrations not found at {MIGRATIONS_DIR}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head", *, engine: Engine | None = None) -> None:
    """Migrate the database at `url` to `revision` (creating the SQLite file if needed)."""
    engine = engine or make_engine(url)
    config = alembic_config(url)
    with engine.begin() as connection:
        _one_at_a_time(connection)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(url: str, revision: str = "base", *, engine: Engine | None = None) -> None:
    """Migrate the database at `url` down to `revision`."""
    engine = engine or make_engine(url)
    config = alembic_config(url)
    with engine.begin() as connection:
        _one_at_a_time(connection)
        config.attributes["connection"] = connection
        command.downgrade(config, revision)
