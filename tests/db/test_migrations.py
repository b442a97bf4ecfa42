"""The Alembic migrations and the SQLAlchemy models describe the same database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text

from app.db import models
from app.db.base import Base
from app.db.migrate import downgrade, upgrade
from app.db.session import make_engine, make_session_factory

EXPECTED_TABLES = {
    "agent",
    "cycle",
    "llm_call",
    "decision",
    "fill",
    "position",
    "account_snapshot",
    "quota_usage",
    "llm_cache",
    "candle",
    "evaluation_plan",
    "evaluation_window",
}


def test_upgrade_to_head_matches_models_and_downgrade_to_base_empties(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(db_url, engine=engine)

    tables = set(inspect(engine).get_table_names())
    assert tables >= EXPECTED_TABLES | {"alembic_version"}
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == [], f"models and migrations disagree: {diff}"

    downgrade(db_url, engine=engine)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}


def test_sqlite_opens_with_wal_foreign_keys_and_busy_timeout(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() >= 1000
        assert connection.execute(text("PRAGMA cache_size")).scalar() == -65_536


def test_database_folder_is_created_on_demand(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'deeper' / 'arena.db'}"
    upgrade(url)
    assert (tmp_path / "nested" / "deeper" / "arena.db").is_file()


@pytest.mark.parametrize(
    "stored",
    [
        datetime(2025, 10, 17, 22, 0, tzinfo=UTC),
        # The same instant written in UTC+8 must come back as 14:00 UTC.
        datetime(2025, 10, 18, 6, 0, 0, 123456, tzinfo=timezone(timedelta(hours=8))),
    ],
)
def test_timestamps_round_trip_timezone_aware_utc(db_url: str, stored: datetime) -> None:
    engine = make_engine(db_url)
    upgrade(db_url, engine=engine)
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        session.add(
            models.Agent(
                name="qwen",
                provider="modelscope",
                model="Qwen/Qwen3-235B-A22B-Instruct-2507",
                fallback_models=[],
                starting_cash_usd=10_000.0,
                created_at=stored,
            )
        )
    with make_session_factory(engine)() as session:
        loaded = session.scalars(select(models.Agent.created_at)).one()
    assert loaded.tzinfo is not None
    assert loaded.utcoffset() == timedelta(0)
    assert loaded == stored


def test_naive_datetimes_are_refused(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(db_url, engine=engine)
    with (
        pytest.raises(Exception, match="naive datetime"),
        make_session_factory(engine).begin() as session,
    ):
        session.add(
            models.Agent(
                name="x",
                provider="baseline",
                model="buy_and_hold",
                fallback_models=[],
                starting_cash_usd=1.0,
                created_at=datetime(2025, 1, 1),
            )
        )


def test_foreign_keys_are_enforced(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(db_url, engine=engine)
    with pytest.raises(Exception, match=r"(?i)foreign key"), engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO cycle (agent_id, scheduled_at, invocation, started_at, status) "
                "VALUES (999, '2025-01-01 00:00:00', 1, '2025-01-01 00:00:00', 'ok')"
            )
        )


def test_new_databases_use_8_kb_pages(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    upgrade(sqlite_url, engine=engine)
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA page_size")).scalar() == 8_192
