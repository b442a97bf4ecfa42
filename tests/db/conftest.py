"""Fixtures of the database tests."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from app.db.migrate import upgrade
from app.db.session import make_engine


@pytest.fixture
def engine(db_url: str) -> Engine:
    """A database migrated to the newest schema (SQLite, and PostgreSQL where it runs)."""
    database = make_engine(db_url)
    upgrade(db_url, engine=database)
    return database
