"""The invariant checker finds what it is there to find: each test breaks one invariant by hand.

The schema comes from the real migrations; the rows are written with plain SQL, as the checker
reads them. One agent, starting with 10,000 USD, one cycle at 12:00:05 (newest 1m candle closed
12:00), one BTC long opened at 100 (quantity 1, margin 50, entry fee 0.05):
cash = 10,000 + 0 - 0.05 - 0 - 50 = 9,949.95.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.db.migrate import upgrade
from tests.faults.checker import Checker, RunRecord

CYCLE_AT = datetime(2026, 1, 15, 12, 0, 5, tzinfo=UTC)
MINUTE_MS = int(datetime(2026, 1, 15, 12, 0, tzinfo=UTC).timestamp() * 1000)


def stored(moment: datetime) -> str:
    return moment.replace(tzinfo=None).isoformat(sep=" ")


@pytest.fixture
def books(tmp_path: Path) -> Iterator[tuple[Path, sqlite3.Connection]]:
    database = tmp_path / "arena.db"
    upgrade(f"sqlite:///{database}")
    db = sqlite3.connect(database)
    at = stored(CYCLE_AT)
    db.execute(
        "INSERT INTO agent (id, run_id, name, provider, model, fallback_models, "
        "starting_cash_usd, created_at) VALUES (1, 'live', 'trend', 'modelscope', 'M', '[]', "
        "10000, ?)",
        (at,),
    )
    db.execute(
        "INSERT INTO cycle (id, agent_id, scheduled_at, invocation, started_at, finished_at, "
        "status) VALUES (1, 1, ?, 1, ?, ?, 'ok')",
        (at, at, at),
    )
    db.execute(
        "INSERT INTO position (id, agent_id, coin, side, quantity, entry_price, leverage, "
        "margin_usd, liquidation_price, entry_fee_usd, funding_usd, opened_at, status) "
        "VALUES (1, 1, 'BTC', 'long', 1, 100, 2, 50, 50.5, 0.05, 0, ?, 'open')",
        (at,),
    )
    db.execute(
        "INSERT INTO fill (id, agent_id, cycle_id, position_id, coin, side, quantity, price, "
        "reference_price, fee_usd, reason, realized_pnl_usd, filled_at) "
        "VALUES (1, 1, 1, 1, 'BTC', 'buy', 1, 100, 100, 0.05, 'entry', 0, ?)",
        (at,),
    )
    db.execute(
        "INSERT INTO decision (cycle_id, coin, signal, outcome) "
        "VALUES (1, 'BTC', 'buy', 'executed')"
    )
    db.execute(
        "INSERT INTO account_snapshot (agent_id, cycle_id, at, cash_usd, margin_usd, "
        "unrealized_pnl_usd, equity_usd, realized_pnl_usd, fees_paid_usd, funding_paid_usd, "
        "open_positions) VALUES (1, 1, ?, 9949.95, 50, 0, 9999.95, 0, 0.05, 0, 1)",
        (at,),
    )
    db.commit()
    yield database, db
    db.close()


def record(**changes: object) -> RunRecord:
    start = CYCLE_AT.timestamp()
    found = RunRecord(
        interval_s=5.0,
        timeframe_s=60.0,
        agents={"trend": "M"},
        lives=[{"started_at": start - 60, "ended_at": start + 600, "ended_by": "stop", "rc": 0}],
        honest={"BTC": [[MINUTE_MS - 60_000 * k, 99.0, 101.0] for k in range(5)]},
    )
    for name, value in changes.items():
        setattr(found, name, value)
    return found


def violations(database: Path, run: RunRecord) -> dict[str, list[str]]:
    return {name: found for name, found in Checker(database, run).run().items() if found}


def test_whole_books_pass(books: tuple[Path, sqlite3.Connection]) -> None:
    assert violations(books[0], record()) == {}


def test_a_cash_that_disagrees_with_the_ledger_is_found(
    books: tuple[Path, sqlite3.Connection],
) -> None:
    database, db = books
    db.execute("UPDATE account_snapshot SET cash_usd = cash_usd + 1")
    db.commit()
    assert list(violations(database, record())) == ["ledger"]


def test_a_second_snapshot_and_an_exit_fill_on_an_open_position_are_found(
    books: tuple[Path, sqlite3.Connection],
) -> None:
    database, db = books
    db.execute(
        "INSERT INTO account_snapshot (agent_id, cycle_id, at, cash_usd, margin_usd, "
        "unrealized_pnl_usd, equity_usd, realized_pnl_usd, fees_paid_usd, funding_paid_usd, "
        "open_positions) SELECT agent_id, cycle_id, at, cash_usd, margin_usd, "
        "unrealized_pnl_usd, equity_usd, realized_pnl_usd, fees_paid_usd, funding_paid_usd, "
        "open_positions FROM account_snapshot"
    )
    db.execute(
        "INSERT INTO fill (agent_id, position_id, coin, side, quantity, price, reference_price, "
        "fee_usd, reason, realized_pnl_usd, filled_at) "
        "SELECT 1, 1, 'BTC', 'sell', 1, 100, 100, 0, 'stop_loss', 0, filled_at FROM fill"
    )
    db.commit()
    found = violations(database, record())
    assert set(found) == {"snapshots", "fills_positions"}


def test_a_decision_on_a_bad_candle_and_a_fill_at_a_wick_are_found(
    books: tuple[Path, sqlite3.Connection],
) -> None:
    database, db = books
    db.execute("UPDATE fill SET price = 1.0")
    db.commit()
    wick = {"source": "exchange", "kind": "wick", "at": 0, "newest_close_ms": MINUTE_MS, "life": 0}
    found = violations(database, record(events=[wick]))
    assert set(found) == {"bad_data", "fill_prices"}


def test_a_request_without_its_record_and_an_asked_cycle_without_its_row_are_found(
    books: tuple[Path, sqlite3.Connection],
) -> None:
    database, _ = books
    later = "2026-01-15 12:00:10"
    asked = {"at": CYCLE_AT.timestamp() + 6, "number": 0, "model": "M", "cycle_at": later}
    found = violations(database, record(llm_requests=[asked]))
    assert set(found) == {"llm_recorded", "lost_cycles"}
    # A kill right after the request excuses the missing cycle row, not the missing record.
    killed = [
        {"started_at": 0, "ended_at": asked["at"] + 1, "ended_by": "kill", "rc": -9},
        {"started_at": asked["at"] + 2, "ended_at": asked["at"] + 600, "ended_by": "stop", "rc": 0},
    ]
    assert set(violations(database, record(llm_requests=[asked], lives=killed))) == {"llm_recorded"}
