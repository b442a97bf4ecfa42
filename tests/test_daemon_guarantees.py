"""What the daemon guarantees, checked on `arena run` as users run it (a real process over the
fake exchange and the fake model server on loopback): every agent-cycle leaves a row with its
reason, one daemon per database whatever path reaches it, a stop that is handled from the first
instant, and a cadence the models can keep."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from app.config import AgentConfig
from app.db import models
from app.db.lock import DaemonLock, lock_path_for
from app.db.repository import AgentIdentity, SqlCycleStore
from app.db.session import make_engine
from app.domain import PaperCosts
from tests.arena_cli import arena as arena_in_process
from tests.fakes.exchange import FakeExchange
from tests.fakes.openai_server import FakeOpenAIServer
from tests.test_live import (
    FIRST_CYCLE,
    TREND_MODEL,
    _Lines,
    agent_args,
    arena,
    arena_env,
    count_rows,
)
from tests.test_live import exchange as exchange_fixture
from tests.test_live import llm as llm_fixture

exchange = exchange_fixture
llm = llm_fixture

AGENTS = (f"trend=modelscope:{TREND_MODEL}", "hodl=baseline:buy_and_hold")


def cycle_rows(database: Path) -> dict[str, tuple[str, str | None]]:
    engine = make_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as connection:
            return {
                name: (status, error)
                for name, status, error in connection.execute(
                    select(models.Agent.name, models.Cycle.status, models.Cycle.error).join(
                        models.Cycle.agent
                    )
                )
            }
    finally:
        engine.dispose()


@pytest.mark.slow
def test_a_cycle_the_exchange_fails_is_recorded_skipped_for_every_agent_with_its_reason(
    exchange: FakeExchange,
    llm: FakeOpenAIServer,
    tmp_path: Path,
) -> None:
    """The exchange answers the candles with a truncated body. Every agent's cycle is a
    `skipped` row saying so, the model is not asked, the log has one line per agent, and the
    run ends normally. Before: no row at all, only a traceback in the log."""
    database = tmp_path / "arena.db"
    env = arena_env(exchange, llm, f"sqlite:///{database}")
    exchange.fail("/fapi/v1/klines", "malformed")
    try:
        result = arena(
            "run",
            "--once",
            "--at",
            FIRST_CYCLE.isoformat(),
            *agent_args(AGENTS),
            env=env,
            cwd=tmp_path,
        )
    finally:
        exchange.clear_failures()

    assert result.returncode == 0, result.stderr
    rows = cycle_rows(database)
    assert set(rows) == {"trend", "hodl"}
    for status, error in rows.values():
        assert status == "skipped"
        assert (error or "").startswith("no market data: ")
    assert llm.requests_for(TREND_MODEL) == []
    for agent in ("trend", "hodl"):
        lines = [line for line in result.stderr.splitlines() if f": {agent} skipped (" in line]
        assert len(lines) == 1, result.stderr
        assert "no market data" in lines[0]
    assert "Traceback" not in result.stderr


def test_lock_path_is_the_same_whatever_path_reaches_the_database(tmp_path: Path) -> None:
    real = tmp_path / "data" / "arena.db"
    real.parent.mkdir()
    real.touch()
    (tmp_path / "linked-folder").symlink_to(real.parent)
    (tmp_path / "linked-file.db").symlink_to(real)
    expected = lock_path_for(f"sqlite:///{real}")
    assert lock_path_for(f"sqlite:///{tmp_path / 'linked-folder' / 'arena.db'}") == expected
    assert lock_path_for(f"sqlite:///{tmp_path / 'linked-file.db'}") == expected
    assert lock_path_for(f"sqlite:///{tmp_path / 'data' / '..' / 'data' / 'arena.db'}") == (
        expected
    )


@pytest.mark.slow
def test_a_second_daemon_reaching_the_database_through_a_symlink_is_refused(
    exchange: FakeExchange,
    llm: FakeOpenAIServer,
    tmp_path: Path,
) -> None:
    """The first daemon holds the database's lock (taken as `arena run` takes it, through the
    real path); a second `arena run` whose DATABASE_URL goes through a symlink to the file is
    refused with the one-line message and exit code 2, and writes nothing. Before: the lock
    file was named from the unresolved path, so the second daemon ran."""
    real = tmp_path / "real" / "arena.db"
    real.parent.mkdir()
    first_env = arena_env(exchange, llm, f"sqlite:///{real}")
    created = arena_in_process(
        "run", "--once", "--at", FIRST_CYCLE.isoformat(), *agent_args(AGENTS[1:]), env=first_env
    )
    assert created.exit_code == 0, created.stderr
    link = tmp_path / "elsewhere.db"
    link.symlink_to(real)
    before = cycle_rows(real)

    with DaemonLock(lock_path_for(f"sqlite:///{real}")):
        second = arena(
            "run",
            "--once",
            *agent_args(AGENTS[1:]),
            env=arena_env(exchange, llm, f"sqlite:///{link}"),
            cwd=tmp_path,
        )

    assert second.returncode == 2, second.stderr
    message = [line for line in second.stderr.splitlines() if line.strip()]
    assert len(message) == 1, second.stderr
    assert "another `arena run` already uses this database" in message[0]
    assert f"pid {os.getpid()}" in message[0]
    assert cycle_rows(real) == before


@pytest.mark.parametrize(
    ("name", "value"), [("SCHEDULE_INTERVAL", "1s"), ("SCHEDULE_MONITOR_INTERVAL", "30s")]
)
def test_a_cadence_below_one_minute_is_refused_in_one_line(name: str, value: str) -> None:
    """Before: `SCHEDULE_INTERVAL=1s` was accepted and every model cycle then failed."""
    result = arena_in_process(
        "run", "--once", "--agent", "hodl=baseline:buy_and_hold", env={name: value}
    )
    assert result.exit_code == 2
    message = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(message) == 1, result.stderr
    assert name in message[0] and "minimum of 1m" in message[0]


@pytest.mark.slow
def test_a_sigterm_while_the_daemon_starts_stops_it_cleanly_before_any_cycle(
    llm: FakeOpenAIServer, tmp_path: Path
) -> None:
    """The exchange holds the daemon's first request (its markets), so the daemon is caught in
    its start, before its event loop could take the signal over: SIGTERM then. The stop is
    remembered; once the exchange answers, the daemon stops before its first cycle, exit code 0.
    A state to reach, not a race. Before: Python's default action killed it (exit -15)."""
    database = tmp_path / "arena.db"
    with FakeExchange() as live_exchange:  # follows the real clock, as a daemon needs
        live_exchange.fail("/fapi/v1/exchangeInfo", "timeout", times=1)
        daemon = subprocess.Popen(
            [sys.executable, "-m", "app", "run", "--agent", "hodl=baseline:buy_and_hold"],
            env=arena_env(live_exchange, llm, f"sqlite:///{database}"),
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines = _Lines(daemon.stderr)
        try:
            deadline = time.monotonic() + 300  # only keeps a broken run from hanging
            while not live_exchange.requests_to("/fapi/v1/exchangeInfo"):
                assert daemon.poll() is None, "".join(lines.lines)
                assert time.monotonic() < deadline, "the daemon never asked for the markets"
                time.sleep(0.05)
            daemon.send_signal(signal.SIGTERM)
            live_exchange.reset()  # the held request is answered (504), the retry succeeds
            assert daemon.wait(timeout=300) == 0, "".join(lines.lines)
        finally:
            if daemon.poll() is None:
                daemon.kill()
    assert any("SIGTERM received" in line for line in lines.lines), "".join(lines.lines)
    assert any("arena stopped" in line for line in lines.lines), "".join(lines.lines)
    assert cycle_rows(database) == {}


def test_a_live_arena_that_loses_a_cycle_to_another_writer_reloads_the_agent(
    exchange: FakeExchange,
    llm: FakeOpenAIServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two live arenas on one database, as a defeated lock would allow (here the second one's
    lock is switched off). Both are built, then `ahead` runs the first cycle: buy-and-hold buys
    the six coins. `behind`, restored before that, runs the same cycle (its check forced to find
    it pending, the race it would lose), loses it, and reloads the agent through the live
    arena's own reload; at the next cycle it holds what `ahead` bought instead of buying it all
    again. Before: it kept its stale books, bought twice and the next start refused the ledger."""
    from app.config import load_settings
    from app.db.lock import DaemonLock as RealLock
    from app.db.lock import lock_path_for
    from app.wiring import build_live_arena, open_database, restore_slots

    for key, value in arena_env(exchange, llm, f"sqlite:///{tmp_path / 'arena.db'}").items():
        monkeypatch.setenv(key, value)
    settings = load_settings(env_file=None)
    agents = [AgentConfig.from_spec("hodl=baseline:buy_and_hold")]
    second = FIRST_CYCLE + timedelta(minutes=3)

    class NoLock(RealLock):
        def acquire(self) -> None:
            return None

    async def never_done(agent: str, scheduled_at: datetime) -> bool:
        return False

    async def race() -> None:
        async with build_live_arena(settings, agents) as ahead:
            monkeypatch.setattr(
                "app.wiring.daemon_lock_for", lambda url: NoLock(lock_path_for(url))
            )
            async with build_live_arena(settings, agents) as behind:
                await ahead.run_once(FIRST_CYCLE)
                checks = behind.engine.recorder.cycle_done
                behind.engine.recorder.cycle_done = never_done  # type: ignore[method-assign]
                await behind.run_once(FIRST_CYCLE)
                behind.engine.recorder.cycle_done = checks  # type: ignore[method-assign]
                await behind.run_once(second)

    asyncio.run(race())

    engine = make_engine(f"sqlite:///{tmp_path / 'arena.db'}")
    with engine.connect() as connection:
        open_positions = connection.execute(
            select(models.Position.coin).where(models.Position.status == "open")
        ).all()
    engine.dispose()
    assert len(open_positions) == 6 == len({coin for (coin,) in open_positions})
    assert count_rows(f"sqlite:///{tmp_path / 'arena.db'}", models.Cycle) == 2
    # The books restore and agree with the ledgers (a mismatch raises here).
    database = open_database(settings)
    store = SqlCycleStore(database.engine)
    store.register_agents([AgentIdentity("hodl", "baseline", "buy_and_hold")], at=second)
    strategies = {"hodl": object()}
    restore_slots(store, strategies, costs=PaperCosts(), interval=timedelta(minutes=3))  # type: ignore[arg-type]
