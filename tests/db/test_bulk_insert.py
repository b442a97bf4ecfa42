"""A `BulkInsert` stores exactly what SQLAlchemy's `insert()` executemany stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, insert, select

from app.db import models
from app.db.bulk_insert import BulkInsert
from app.errors import InvariantError

AT = datetime(2025, 10, 18, 0, 0, tzinfo=UTC)
COLUMNS = tuple(
    column.name for column in models.AccountSnapshot.__table__.columns if column.name != "id"
)


def test_rows_are_stored_as_an_insert_stores_them(engine: Engine) -> None:
    # Shared times (converted once each), another zone for the same instant, an int for a float.
    rows = [
        (None, None, AT, 3, 1.5, 0, 1, 2, 3, 4, 0),
        (None, None, AT.astimezone(timezone(timedelta(hours=2))), 2.25, 0, 0, 0, 0, 0, 0, 1),
        (None, None, AT + timedelta(minutes=3), 1e-9, 7, -1.5, 8, 9, 10, 11, 2),
    ]
    with engine.begin() as connection:
        agent_id = connection.execute(
            insert(models.Agent).values(
                run_id="test",
                name="a",
                provider="p",
                model="m",
                starting_cash_usd=1.0,
                created_at=AT,
            )
        ).inserted_primary_key[0]  # type: ignore[index]
        rows = [(agent_id, *row[1:]) for row in rows]
        connection.execute(
            insert(models.AccountSnapshot), [dict(zip(COLUMNS, row, strict=True)) for row in rows]
        )
        BulkInsert(models.AccountSnapshot, COLUMNS).execute(connection, rows)
        columns = [models.AccountSnapshot.__table__.c[name] for name in COLUMNS]
        stored = connection.execute(select(*columns).order_by(models.AccountSnapshot.id)).all()
    assert stored[:3] == stored[3:]
    assert [type(row.cash_usd) for row in stored] == [float] * 6
    assert stored[1].at == AT


def test_columns_out_of_the_tables_order_are_refused() -> None:
    with pytest.raises(InvariantError):
        BulkInsert(models.AccountSnapshot, ("cycle_id", "agent_id"))


def test_a_column_left_to_its_default_is_refused(engine: Engine) -> None:
    # `open_positions` has a Python-side default SQLAlchemy would fill in per row.
    bulk = BulkInsert(models.AccountSnapshot, COLUMNS[:-1])
    with engine.begin() as connection, pytest.raises(InvariantError):
        bulk.execute(connection, [(1, None, AT, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0)])
