"""Every agent-cycle leaves a row with its reason, one agent's trouble never loses another's, and
an agent-cycle lost to another writer reloads that agent from the database.

Real parts: the historical market, paper accounts and a migrated SQLite store; the scripted
strategies answer at once, so no real duration races anything."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

from app.db import models
from app.db.repository import SqlCycleStore
from app.db.session import make_engine
from app.db.writer import DatabaseWriter
from app.errors import DatabaseError, DataUnavailableError
from app.market.historical import HistoricalMarketData
from app.ports import AgentCycleRecord, DecisionRequest, StrategyAnswer
from app.trading.engine import AgentSlot, CycleEngine, CycleReport
from app.trading.recording import ImmediateRecorder
from app.wiring import restore_slot
from tests.fakes.strategies import ScriptedStrategy
from tests.trading.test_engine import (
    COSTS,
    STEP,
    HeldOffLimit,
    build_engine,
    count,
    enter_long_btc_once,
)
from tests.trading.test_engine import database as database_fixture
from tests.trading.test_engine import market as market_fixture

market = market_fixture
database = database_fixture


def cycle_rows(engine: Engine) -> dict[str, tuple[str, str | None]]:
    with engine.connect() as connection:
        return {
            name: (status, error)
            for name, status, error in connection.execute(
                select(models.Agent.name, models.Cycle.status, models.Cycle.error).join(
                    models.Cycle.agent
                )
            )
        }


class RefusingStore:
    """The real store, except that it refuses `agent`'s agent-cycles that traded (a disk that
    fills up on the large record, say): those raise the `DatabaseError` SQLite would."""

    def __init__(self, store: SqlCycleStore, agent: str) -> None:
        self.store = store
        self.agent = agent
        self.refused = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    def record_cycle(self, record: AgentCycleRecord) -> bool:
        if record.agent == self.agent and record.status == "ok":
            self.refused += 1
            raise DatabaseError("database or disk is full")
        return self.store.record_cycle(record)


def test_an_agent_cycle_the_database_refuses_is_retried_then_recorded_failed_and_others_trade(
    market: HistoricalMarketData, database: Engine
) -> None:
    """`unlucky`'s record is refused three times (the recorder's attempts), then recorded as
    failed with the reason and its account unchanged; `trader` in the same cycle fills and is
    recorded. Before: the error ended the whole cycle (`gather` without `return_exceptions`)."""
    unlucky = ScriptedStrategy("unlucky", enter_long_btc_once)
    trader = ScriptedStrategy("trader", enter_long_btc_once)
    engine, store, clock = build_engine(market, database, [unlucky, trader])
    refusing = RefusingStore(store, "unlucky")
    engine.recorder.store = refusing  # type: ignore[attr-defined]

    report = asyncio.run(engine.run_cycle(clock[0]))

    by_agent = {summary.agent: summary for summary in report.agents}
    assert by_agent["trader"].status == "ok" and by_agent["trader"].fills == 1
    assert by_agent["unlucky"].status == "failed"
    assert refusing.refused == 3
    rows = cycle_rows(database)
    assert rows["trader"] == ("ok", None)
    assert rows["unlucky"][0] == "failed"
    assert "could not be recorded: database or disk is full" in (rows["unlucky"][1] or "")
    slots = {slot.name: slot for slot in engine.slots}
    assert not slots["unlucky"].account.positions  # the fill that was not recorded never was
    assert "BTC" in slots["trader"].account.positions
    assert count(database, models.Fill) == 1


def test_a_cycle_without_market_data_is_recorded_skipped_for_every_agent(
    market: HistoricalMarketData, database: Engine
) -> None:
    """The live engine records an exchange that fails the snapshot as a skipped agent-cycle per
    agent, with the reason; nobody is asked. Before: the error left the cycle with no row."""
    first = ScriptedStrategy("first", enter_long_btc_once)
    second = ScriptedStrategy("second", enter_long_btc_once)
    engine, _, clock = build_engine(market, database, [first, second])
    engine.record_market_failures = True

    class Down:
        def __getattr__(self, name: str) -> object:
            return getattr(market, name)

        async def snapshot(self, at: datetime) -> object:
            raise DataUnavailableError("exchange answered HTML where JSON was expected")

    engine.market = Down()  # type: ignore[assignment]
    report = asyncio.run(engine.run_cycle(clock[0]))

    assert {(s.agent, s.status, s.recorded) for s in report.agents} == {
        ("first", "skipped", True),
        ("second", "skipped", True),
    }
    rows = cycle_rows(database)
    assert set(rows) == {"first", "second"}
    for status, error in rows.values():
        assert status == "skipped"
        assert error == "no market data: exchange answered HTML where JSON was expected"
    assert first.requests == [] and second.requests == []
    # Skipped without prices: no account snapshot claims the account was valued or checked.
    assert count(database, models.AccountSnapshot) == 0


def test_an_agent_whose_exits_could_not_be_checked_is_recorded_skipped(
    market: HistoricalMarketData, database: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`blind`'s exit check fails; it sits the cycle out, on record, and `trader` trades."""
    blind = ScriptedStrategy("blind", enter_long_btc_once)
    trader = ScriptedStrategy("trader", enter_long_btc_once)
    engine, _, clock = build_engine(market, database, [blind, trader])
    checked = CycleEngine._catch_up_locked

    async def failing(self: CycleEngine, slot: AgentSlot, now: datetime, shared: Any) -> int:
        if slot.name == "blind":
            raise TimeoutError("candles did not come within 10 s")
        return await checked(self, slot, now, shared)

    monkeypatch.setattr(CycleEngine, "_catch_up_locked", failing)
    report = asyncio.run(engine.run_cycle(clock[0]))

    rows = cycle_rows(database)
    assert rows["trader"] == ("ok", None)
    assert rows["blind"] == (
        "skipped",
        "exits could not be checked: TimeoutError: candles did not come within 10 s",
    )
    assert blind.requests == []
    assert {s.agent: s.status for s in report.agents} == {"trader": "ok", "blind": "skipped"}


def test_an_engine_that_loses_an_agent_cycle_reloads_the_agent_before_trading_again(
    market: HistoricalMarketData, database: Engine
) -> None:
    """Two engines on one database (what a defeated lock allows). `ahead` records the first
    cycle: its trader goes long BTC. `behind`, restored before that, loses the same cycle, so
    its account in memory is stale; it must reload the agent from the database, and at the next
    cycle see the position (and hold), not open a second BTC position from stale books.
    Before: it kept the stale account and entered again (two open BTC positions)."""
    ahead_trader = ScriptedStrategy("trader", enter_long_btc_once)
    behind_trader = ScriptedStrategy("trader", enter_long_btc_once)
    ahead, _, clock = build_engine(market, database, [ahead_trader])
    behind, behind_store, _ = build_engine(market, database, [behind_trader], restore=True)

    async def reload(name: str) -> AgentSlot:
        behind_store.reload_open_positions()
        return restore_slot(behind_store, name, behind_trader, costs=COSTS, interval=STEP)

    behind.reload_slot = reload
    first = clock[0]
    asyncio.run(ahead.run_cycle(first))
    # `behind` saw the cycle as pending (its check came before `ahead` wrote): force that race.
    behind.recorder.cycle_done = _never_done  # type: ignore[method-assign]
    lost = asyncio.run(behind.run_cycle(first))
    assert lost.agents[0].recorded is False

    clock[0] = first + STEP
    asyncio.run(behind.run_cycle(first + STEP))

    assert "BTC" in behind_trader.requests[-1].account.positions
    assert count(database, models.Position, status="open") == 1
    assert count(database, models.Fill, reason="entry") == 1
    # The books restore and agree with the ledgers (restore_slot checks them).
    restore_slot(behind_store, "trader", behind_trader, costs=COSTS, interval=STEP)


async def _never_done(agent: str, scheduled_at: datetime) -> bool:
    return False


class AnswersWhenTold(ScriptedStrategy):
    """A model whose answer comes when the test says so (an event on the event loop)."""

    def __init__(self, name: str) -> None:
        super().__init__(name, enter_long_btc_once)
        self.go = asyncio.Event()
        self.answered = asyncio.Event()

    async def decide(self, request: DecisionRequest) -> StrategyAnswer:
        await self.go.wait()
        answer = await super().decide(request)
        self.answered.set()
        return answer


class SignallingStore:
    """The real store; `writing` is set when an agent-cycle write starts (on whatever thread)."""

    def __init__(self, store: SqlCycleStore) -> None:
        self.store = store
        self.writing = threading.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    def record_cycle(self, record: AgentCycleRecord) -> bool:
        self.writing.set()
        return self.store.record_cycle(record)


def test_a_database_locked_by_another_process_delays_only_the_records(
    market: HistoricalMarketData, database: Engine, db_url: str
) -> None:
    """Another connection holds the database's write lock while a cycle runs (SQLite: a
    `BEGIN IMMEDIATE`; PostgreSQL: `LOCK TABLE cycle`). `first` answers at
    once and its write starts, waiting for the lock. While it waits, the event loop must stay
    free: only then can `second`'s model be asked and answer, and only after that does the test
    let the lock go. Both agent-cycles are then recorded `ok`, no write ever failed, and
    `second`'s time limit was never cut.

    The order is the proof, not a duration: the busy timeout (10 s) is only the margin within
    which the loop must get a turn. Before: the write ran on the event loop, which froze until
    the busy timeout ran out; the write failed and the error ended the whole cycle (with the
    write merely retried on the loop, the lock is let go first and writes fail: checked by
    running this test with `write=run_inline`)."""
    first = ScriptedStrategy("first", enter_long_btc_once)
    second = AnswersWhenTold("second")
    limits = HeldOffLimit()
    engine, store, clock = build_engine(market, database, [first, second], time_limit=limits)
    signalling = SignallingStore(store)
    writer = DatabaseWriter()
    failed_writes: list[float] = []

    async def note_retry(seconds: float) -> None:
        failed_writes.append(seconds)

    engine.recorder = ImmediateRecorder(
        signalling,  # type: ignore[arg-type]
        write=writer.run,
        read=asyncio.to_thread,
        sleep=note_retry,
    )
    locked = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def hold_the_lock() -> None:
        if db_url.startswith("sqlite"):
            holder = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")
            locked.set()
            release.wait(60)  # only keeps a broken run from hanging
            order.append("lock let go")
            holder.execute("COMMIT")
            holder.close()
            return
        # PostgreSQL: a transaction holding the cycle table against every other writer.
        other = make_engine(db_url)
        with other.connect() as connection, connection.begin():
            connection.execute(text("LOCK TABLE cycle IN EXCLUSIVE MODE"))
            locked.set()
            release.wait(60)
            order.append("lock let go")
        other.dispose()

    async def scenario() -> CycleReport:
        holder = threading.Thread(target=hold_the_lock)
        holder.start()
        await asyncio.to_thread(locked.wait, 60)
        cycle = asyncio.create_task(engine.run_cycle(clock[0]))
        await asyncio.to_thread(signalling.writing.wait, 60)  # `first`'s write waits ...
        second.go.set()  # ... while the loop serves `second`'s model
        await second.answered.wait()
        order.append("second answered")
        release.set()
        await asyncio.to_thread(holder.join, 60)
        return await cycle

    try:
        report = asyncio.run(scenario())
    finally:
        release.set()
        writer.close()
    assert order == ["second answered", "lock let go"]
    assert failed_writes == []
    assert {(s.agent, s.status, s.recorded) for s in report.agents} == {
        ("first", "ok", True),
        ("second", "ok", True),
    }
    assert limits.asked_s == [5.0, 5.0]
    assert cycle_rows(database) == {"first": ("ok", None), "second": ("ok", None)}
    assert count(database, models.Fill) == 2
