"""PostgreSQL next to SQLite, same session: backtest replay speed and the daemon's commit time.

1. Backtest replay (as `benchmarks/bench_backtest.py`, on a shorter window): the real six-coin
   5m candles, the cache filled once per database by a `cached` run of six LLM agents against
   the local fake OpenAI server, then replays from the cache with one and with six agents, in
   this process, every write inside the timing.
2. The daemon's commit per agent-cycle: `SqlCycleStore.record_cycles` with one agent-cycle (a
   cycle row, its model call with the compressed prompt, decision and account snapshot), as the
   daemon's `ImmediateRecorder` writes each agent's cycle the moment it is done.

The PostgreSQL server is BENCH_POSTGRES_URL or the local one on 127.0.0.1:5432 (user postgres);
the script creates a database of its own and drops it at the end.

    .venv/bin/python benchmarks/bench_postgres.py [--days 2] [--runs 2] [--commits 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.config import load_settings
from app.db.migrate import upgrade
from app.db.repository import SqlCycleStore
from app.db.session import make_engine
from app.trading.paper import PaperAccount
from app.wiring import open_database, run_backtest
from benchmarks.bench_backtest import MARKET, MODELS, options
from tests.db.test_repository import AT, COSTS, record, store_for
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.traders import by_model, contrarian_trader, trend_trader

SERVER = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@contextmanager
def postgres_database() -> Iterator[str]:
    """Create a database for the benchmark, yield its URL, drop it afterwards."""
    admin = make_url(SERVER)
    name = f"arena_bench_{os.getpid()}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        engine.dispose()


def replay_rates(url: str, data: Path, days: int, runs: int) -> dict[int, list[float]]:
    """Fill the cache on `url`, then replay with 1 and 6 agents; return cycles/s per run."""
    os.environ["DATABASE_URL"] = url
    settings = load_settings(env_file=None)
    database = open_database(settings)
    began = time.perf_counter()
    warm = asyncio.run(run_backtest(settings, options(data, days, 6, "cached"), database=database))
    print(f"  cache filled: {warm.cycles} cycles x 6 agents, {time.perf_counter() - began:.0f} s")
    rates: dict[int, list[float]] = {}
    for count in (1, 6):
        for _ in range(runs):
            result = asyncio.run(
                run_backtest(settings, options(data, days, count, "replay"), database=database)
            )
            rates.setdefault(count, []).append(result.cycles / result.elapsed_s)
    database.engine.dispose()
    return rates


def commit_times_ms(url: str, commits: int) -> list[float]:
    """Return the time of each one-agent-cycle commit, as the daemon makes them."""
    engine = make_engine(url)
    upgrade(url, engine=engine)
    store: SqlCycleStore = store_for(engine)
    account = PaperAccount(1_000.0, costs=COSTS)
    times = []
    for step in range(commits):
        cycle = record(AT + step * timedelta(minutes=3), account)
        began = time.perf_counter()
        assert store.record_cycles([cycle]) == 1
        times.append((time.perf_counter() - began) * 1000)
    engine.dispose()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--commits", type=int, default=200)
    parser.add_argument("--data", type=Path, default=MARKET)
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"{args.data} not found: this benchmark needs ../shared/data/market")
    traders = {
        model: (trend_trader if i % 2 == 0 else contrarian_trader) for i, model in enumerate(MODELS)
    }
    with (
        tempfile.TemporaryDirectory() as folder,
        FakeOpenAIServer("modelscope", responder=by_model(traders)) as llm,
        postgres_database() as postgres,
    ):
        os.environ.update(
            MODELSCOPE_API_KEY="ms-benchmark", MODELSCOPE_BASE_URL=llm.base_url, LOG_LEVEL="WARNING"
        )
        backends = {"sqlite": f"sqlite:///{folder}/bench.db", "postgresql": postgres}
        for name, url in backends.items():
            print(f"{name}:", flush=True)
            for count, rates in replay_rates(url, args.data, args.days, args.runs).items():
                print(
                    f"  replay, {count} agent{'s' if count > 1 else ''}: median "
                    f"{statistics.median(rates):,.0f} cycles/s "
                    f"(runs: {', '.join(f'{rate:,.0f}' for rate in rates)})",
                    flush=True,
                )
            commit_url = url.replace("bench.db", "commits.db") if name == "sqlite" else url
            times = sorted(commit_times_ms(commit_url, args.commits))
            print(
                f"  commit per agent-cycle: median {statistics.median(times):.2f} ms, "
                f"p95 {times[int(0.95 * (len(times) - 1))]:.2f} ms ({len(times)} commits)",
                flush=True,
            )


if __name__ == "__main__":
    main()
