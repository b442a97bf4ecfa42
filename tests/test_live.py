"""`arena run` as users run it: real ccxt and the real openai SDK over loopback.

What only a real process shows (the daemon, its signals, SIGKILL mid-cycle, a second instance
refused) runs `python -m app` in subprocesses, marked `slow`; the rest runs `arena` in-process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from app.config import AgentConfig, load_settings
from app.db import models
from app.db.models import LIVE_RUN_ID
from app.db.repository import SqlCycleStore
from app.db.session import make_engine
from app.reports import leaderboard
from app.wiring import build_live_arena
from tests.arena_cli import arena as arena_in_process
from tests.fakes.exchange import FakeExchange, synthetic_candles
from tests.fakes.openai_server import FakeOpenAIServer, hang
from tests.fakes.traders import by_model, contrarian_trader, trend_trader

REPO_ROOT = Path(__file__).resolve().parents[1]
# The fake exchange's clock stands still at this time; cycles are replayed before it.
EXCHANGE_NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
FIRST_CYCLE = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
TREND_MODEL = "Qwen/Qwen3-235B-A22B-Instruct-2507"
CONTRA_MODEL = "Qwen/Qwen3-Next-80B-A3B-Instruct"
AGENT_SPECS = (
    f"trend=modelscope:{TREND_MODEL}",
    f"contra=modelscope:{CONTRA_MODEL}",
    "hodl=baseline:buy_and_hold",
    "ema=baseline:ema_trend",
)


@pytest.fixture(scope="module")
def exchange() -> Iterator[FakeExchange]:
    candles = synthetic_candles(
        start=EXCHANGE_NOW - timedelta(days=40), end=EXCHANGE_NOW + timedelta(hours=1)
    )
    with FakeExchange(candles, now=EXCHANGE_NOW) as fake:
        yield fake


@pytest.fixture
def llm() -> Iterator[FakeOpenAIServer]:
    responder = by_model({TREND_MODEL: trend_trader, CONTRA_MODEL: contrarian_trader})
    with FakeOpenAIServer("modelscope", responder=responder) as server:
        yield server


def arena_env(exchange: FakeExchange, llm: FakeOpenAIServer, database: str) -> dict[str, str]:
    """Return a subprocess's whole environment: the system's basics and the arena's settings."""
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "SYSTEMROOT")}
    return {**base, "PYTHONPATH": str(REPO_ROOT), **settings_env(exchange, llm, database)}


def settings_env(exchange: FakeExchange, llm: FakeOpenAIServer, database: str) -> dict[str, str]:
    """Return the arena's settings for the fakes and the database at URL `database`."""
    return {
        "EXCHANGE_ID": "binanceusdm",
        "EXCHANGE_API_URL": exchange.url,
        # The fake answers at once; a loaded machine must not turn a slow reply into a failure.
        "EXCHANGE_TIMEOUT_S": "60",
        "DATABASE_URL": database,
        "MODELSCOPE_API_KEY": "ms-test-not-a-real-key",
        "MODELSCOPE_BASE_URL": llm.base_url,
        "LLM_MAX_RETRIES": "0",
        "LOG_LEVEL": "INFO",
        # The daemon serves its dashboard: on any free port, so parallel runs never collide.
        "SERVE_PORT": "0",
    }


def agent_args(specs: tuple[str, ...] = AGENT_SPECS) -> list[str]:
    return [arg for spec in specs for arg in ("--agent", spec)]


def arena(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def books_by_agent(database: str) -> dict[str, object]:
    engine = make_engine(database)
    store = SqlCycleStore(engine)
    with engine.connect() as connection:
        names = list(connection.scalars(select(models.Agent.name).order_by(models.Agent.name)))
    store.agent_ids = {}
    with engine.connect() as connection:
        for name, agent_id in connection.execute(select(models.Agent.name, models.Agent.id)):
            store.agent_ids[name] = agent_id
    return {name: store.restore(name).books for name in names}


def count_rows(database: str, table: type[models.Base]) -> int:
    engine = make_engine(database)
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def test_several_once_runs_give_the_accounts_of_one_longer_run(
    exchange: FakeExchange,
    llm: FakeOpenAIServer,
    tmp_path: Path,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Six cycles three minutes apart: six `arena run --once --at` runs against one database
    (each builds the arena afresh and restores the accounts from it), and one arena that runs
    the six cycles in a row (on a SQLite file), end with identical books."""
    times = [FIRST_CYCLE + i * timedelta(minutes=3) for i in range(6)]
    once_db = db_url
    env = settings_env(exchange, llm, once_db)
    for moment in times:
        at = moment.isoformat()
        result = arena_in_process("run", "--once", "--at", at, *agent_args(), env=env)
        assert result.exit_code == 0, result.stderr
        assert "Traceback" not in result.stderr

    long_db = f"sqlite:///{tmp_path / 'long.db'}"
    for key, value in settings_env(exchange, llm, long_db).items():
        monkeypatch.setenv(key, value)
    settings = load_settings(env_file=None)
    agents = [AgentConfig.from_spec(spec) for spec in AGENT_SPECS]

    async def longer_run() -> None:
        async with build_live_arena(settings, agents) as live:
            for moment in times:
                await live.run_once(moment)

    asyncio.run(longer_run())

    once_books, long_books = books_by_agent(once_db), books_by_agent(long_db)
    assert once_books == long_books
    assert count_rows(once_db, models.Fill) == count_rows(long_db, models.Fill)
    assert count_rows(once_db, models.Cycle) == len(times) * len(AGENT_SPECS)
    # Not a trivial equality: the model agents traded and the baselines bought.
    engine = make_engine(once_db)
    with engine.connect() as connection:
        traders = set(
            connection.scalars(
                select(models.Agent.name)
                .join(models.Fill, models.Fill.agent_id == models.Agent.id)
                .distinct()
            )
        )
    assert {"trend", "contra", "hodl"} <= traders


@pytest.mark.slow
def test_sigkill_mid_cycle_leaves_no_partial_agent_cycle_and_the_next_start_continues(
    exchange: FakeExchange, llm: FakeOpenAIServer, tmp_path: Path, db_url: str
) -> None:
    """The `trend` model never answers; the other agents' cycles are recorded as soon as they
    are done. SIGKILL while `trend` is still thinking, then start again."""
    database = db_url
    env = arena_env(exchange, llm, database)
    llm.script(TREND_MODEL, hang())
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app",
            "run",
            "--once",
            "--at",
            FIRST_CYCLE.isoformat(),
            *agent_args(),
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # A state to reach, not a race: the limit only keeps a broken run from hanging.
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if llm.requests_for(TREND_MODEL) and _cycles(database) >= 3:
                break
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            time.sleep(0.1)
        else:
            pytest.fail("the other agents' cycles were not recorded while trend was thinking")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL

    engine = make_engine(database)
    with engine.connect() as connection:
        recorded = dict(
            connection.execute(
                select(models.Agent.name, func.count(models.Cycle.id))
                .join(models.Cycle, models.Cycle.agent_id == models.Agent.id)
                .group_by(models.Agent.name)
            ).all()
        )
        # Every recorded agent-cycle is whole: its account snapshot is there with it.
        orphans = connection.execute(
            select(func.count(models.Cycle.id)).where(
                ~select(models.AccountSnapshot.id)
                .where(models.AccountSnapshot.cycle_id == models.Cycle.id)
                .exists()
            )
        ).scalar_one()
    assert recorded == {"contra": 1, "hodl": 1, "ema": 1}
    assert orphans == 0
    fills_before = fills_by_agent(database)
    assert fills_before["hodl"] == 6  # buy-and-hold bought all six coins in the killed run

    # The next start finds the lock free, skips what was done and finishes trend's cycle.
    result = arena(
        "run", "--once", "--at", FIRST_CYCLE.isoformat(), *agent_args(), env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    with engine.connect() as connection:
        recorded = dict(
            connection.execute(
                select(models.Agent.name, func.count(models.Cycle.id))
                .join(models.Cycle, models.Cycle.agent_id == models.Agent.id)
                .group_by(models.Agent.name)
            ).all()
        )
    assert recorded == {"trend": 1, "contra": 1, "hodl": 1, "ema": 1}
    fills_after = fills_by_agent(database)
    # What was recorded before the kill stands as it was: nothing traded twice.
    assert {agent: fills_after.get(agent, 0) for agent in fills_before} == fills_before
    assert len(llm.requests_for(CONTRA_MODEL)) == 1, "contra's cycle must not be asked twice"


@pytest.mark.slow
def test_a_request_in_flight_at_sigkill_is_counted_once_and_recorded_as_interrupted(
    exchange: FakeExchange, llm: FakeOpenAIServer, tmp_path: Path, db_url: str
) -> None:
    """The server holds `trend`'s answer; SIGKILL once it has the request; start again.

    Before the kill the request is already in `quota_usage` (1 call) with a `pending` call row.
    The next start marks that row `interrupted` and asks again (the server then has 2 requests):
    quota_usage says 2 calls and llm_call has 2 rows for trend (interrupted, ok), so the
    records agree with what the server received. Before the fix the killed request was in
    neither table (1 call and 1 row after the restart, for 2 requests received).
    """
    database = db_url
    env = arena_env(exchange, llm, database)
    llm.script(TREND_MODEL, hang())
    specs = (f"trend=modelscope:{TREND_MODEL}",)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app",
            "run",
            "--once",
            "--at",
            FIRST_CYCLE.isoformat(),
            *agent_args(specs),
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # A state to reach, not a race: the limit only keeps a broken run from hanging.
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not llm.requests_for(TREND_MODEL):
            assert process.poll() is None, "the daemon ended before asking the model"
            time.sleep(0.1)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert len(llm.requests_for(TREND_MODEL)) == 1

    def records() -> tuple[int, list[str]]:
        engine = make_engine(database)
        with engine.connect() as connection:
            calls = connection.execute(
                select(func.sum(models.QuotaUsage.calls)).where(
                    models.QuotaUsage.model == TREND_MODEL
                )
            ).scalar_one()
            outcomes = connection.execute(
                select(models.LlmCall.outcome)
                .where(models.LlmCall.model_requested == TREND_MODEL)
                .order_by(models.LlmCall.id)
            ).scalars()
            return int(calls or 0), list(outcomes)

    assert records() == (1, ["pending"])

    result = arena(
        "run", "--once", "--at", FIRST_CYCLE.isoformat(), *agent_args(specs), env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert len(llm.requests_for(TREND_MODEL)) == 2
    assert records() == (2, ["interrupted", "ok"])
    assert "in flight when an earlier process stopped" in result.stderr


def fills_by_agent(database: str) -> dict[str, int]:
    engine = make_engine(database)
    with engine.connect() as connection:
        return dict(
            connection.execute(
                select(models.Agent.name, func.count(models.Fill.id))
                .join(models.Fill, models.Fill.agent_id == models.Agent.id)
                .group_by(models.Agent.name)
            ).all()
        )


def _cycles(database: str) -> int:
    try:
        return count_rows(database, models.Cycle)
    except Exception:  # the schema may not exist yet while the daemon migrates
        return 0


class _Lines:
    """Collect a process's stderr lines in the background."""

    def __init__(self, stream: object) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.append(line)

    def wait_for(self, text: str, timeout_s: float, process: subprocess.Popen[str]) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if process.poll() is not None:
                break
            time.sleep(0.05)
        pytest.fail(f"{text!r} not seen; stderr so far:\n{''.join(self.lines)}")


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_second_daemon_is_refused_and_a_signal_stops_the_first_cleanly(
    llm: FakeOpenAIServer, tmp_path: Path, db_url: str, stop_signal: signal.Signals
) -> None:
    with FakeExchange() as live_exchange:  # follows the real clock, as a daemon needs
        env = arena_env(live_exchange, llm, db_url)
        daemon = subprocess.Popen(
            [sys.executable, "-m", "app", "run", "--agent", "hodl=baseline:buy_and_hold"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines = _Lines(daemon.stderr)
        try:
            lines.wait_for("hodl ok", 600, daemon)  # the first cycle runs at start

            second = arena(
                "run", "--once", "--agent", "hodl=baseline:buy_and_hold", env=env, cwd=tmp_path
            )
            assert second.returncode == 2
            message = [line for line in second.stderr.splitlines() if line.strip()]
            assert len(message) == 1, second.stderr
            assert "another `arena run` already uses this database" in message[0]
            assert f"pid {daemon.pid}" in message[0]

            daemon.send_signal(stop_signal)
            assert daemon.wait(timeout=300) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
        assert any("arena stopped" in line for line in lines.lines), "".join(lines.lines)
        assert not any("Traceback" in line for line in lines.lines), "".join(lines.lines)


def test_no_key_and_no_baseline_exits_2_saying_how_to_set_one() -> None:
    result = arena_in_process("run", "--once")
    assert result.exit_code == 2
    message = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(message) == 1, result.stderr
    assert "MODELSCOPE_API_KEY" in message[0]
    assert "baseline:buy_and_hold" in message[0]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_daemon_and_a_reader_polling_the_leaderboard_every_100_ms_share_postgres(
    llm: FakeOpenAIServer, tmp_path: Path, postgres_url: str
) -> None:
    """`arena run` writes a PostgreSQL arena (a 5 s cadence against the fake exchange, which
    follows the real clock) while a reader computes the leaderboard every 100 ms, as the
    dashboard and scripts do. Once the daemon has recorded four cycles of each agent (a state,
    not a time) it is stopped: the reader never failed, the daemon exits 0 with no traceback and
    no deadlock, and every cycle is whole (one snapshot each)."""
    with FakeExchange() as live_exchange:
        env = {
            **arena_env(live_exchange, llm, postgres_url),
            "SCHEDULE_MIN_CADENCE": "5s",
            "SCHEDULE_INTERVAL": "5s",
            "SCHEDULE_MONITOR_INTERVAL": "5s",
            "SCHEDULE_INTRADAY_TIMEFRAME": "1m",
        }
        specs = ("hodl=baseline:buy_and_hold", "ema=baseline:ema_trend")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "app", "run", "--no-serve", *agent_args(specs)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines = _Lines(daemon.stderr)
        engine = make_engine(postgres_url)
        stop = threading.Event()
        reads: list[int] = []
        errors: list[str] = []

        def poll() -> None:
            while not stop.is_set():
                try:
                    reads.append(len(leaderboard(engine, LIVE_RUN_ID)))
                except Exception as error:  # any failure is the finding
                    errors.append(repr(error))
                stop.wait(0.1)

        reader = threading.Thread(target=poll)
        try:
            lines.wait_for("hodl ok", 600, daemon)  # migrated, agents registered
            reader.start()
            # A state to reach, not a race: four cycles of each agent written and ten leaderboards
            # read beside them; the limit only keeps a broken run from hanging.
            limit_at = time.monotonic() + 600
            while count_rows(postgres_url, models.Cycle) < 2 * 4 or len(reads) + len(errors) < 10:
                assert daemon.poll() is None, "".join(lines.lines)
                assert time.monotonic() < limit_at, "".join(lines.lines)
                time.sleep(0.2)
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=300) == 0
        finally:
            stop.set()
            if reader.is_alive():
                reader.join(60)
            if daemon.poll() is None:
                daemon.kill()
        engine.dispose()
    log = "".join(lines.lines)
    assert errors == []
    assert len(reads) >= 10 and set(reads) == {2}
    assert "Traceback" not in log and "deadlock" not in log.lower(), log
    with make_engine(postgres_url).connect() as connection:
        whole = connection.execute(
            text(
                "SELECT c.status, (SELECT count(*) FROM account_snapshot s "
                "WHERE s.cycle_id = c.id) FROM cycle c"
            )
        ).all()
    assert len(whole) >= 8
    assert all(snapshots == 1 for status, snapshots in whole if status == "ok"), whole
    assert sum(status == "ok" for status, _ in whole) >= 6, whole
