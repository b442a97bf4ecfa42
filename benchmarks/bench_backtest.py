"""Backtest speed on the real six-coin data: cycles per second with LLM answers from the cache.

A 30-day window of Binance USD-M 5m candles (with the funding and mark files) at a 5-minute
cadence: 8,640 cycles. The cache is first filled by a `cached` run whose six LLM agents answer
from the local fake OpenAI server (prompt-dependent answers, so agents trade); then the same
backtest is replayed with `--llm-mode replay` for one agent and for six agents, each replay in a
fresh process as `arena backtest` runs it, on the same growing database. Every SQLite write
(cycles, calls, decisions, fills, positions, account snapshots) is included in the timing. Two
rates per replay: the whole process (start to exit: imports, loading the files, indicators, the
cycles, the leaderboard) and the cycle loop alone (what `arena backtest` prints).

    .venv/bin/python benchmarks/bench_backtest.py [--days 30] [--runs 3]
        [--keep-cache FILE | --cache-from FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.backtest import BacktestOptions
from app.config import AgentConfig, load_settings
from app.wiring import open_database, run_backtest
from tests.fakes.openai_server import UNLIMITED_QUOTA, FakeOpenAIServer
from tests.fakes.traders import by_model, contrarian_trader, trend_trader

MARKET = Path(__file__).resolve().parents[2] / "shared" / "data" / "market"
END = datetime(2025, 11, 3, 22, 0, tzinfo=UTC)
MODELS = [f"Qwen/Bench-{i}-Instruct" for i in range(6)]


def agents(count: int) -> tuple[AgentConfig, ...]:
    return tuple(
        AgentConfig.from_spec(f"agent{i}=modelscope:{model}")
        for i, model in enumerate(MODELS[:count])
    )


def options(data: Path, days: int, count: int, mode: str) -> BacktestOptions:
    return BacktestOptions(
        data=(data,),
        agents=agents(count),
        start=END - timedelta(days=days) + timedelta(minutes=5),
        end=END,
        interval="5m",
        llm_mode=mode,  # type: ignore[arg-type]
    )


def replay_once(data: Path, days: int, count: int) -> None:
    """Run one replay in this (fresh) process and print its cycles per second."""
    settings = load_settings(env_file=None)
    database = open_database(settings)
    result = asyncio.run(
        run_backtest(settings, options(data, days, count, "replay"), database=database)
    )
    trades = sum(row.trades for row in result.rows)
    print(f"{result.cycles} {result.cycles / result.elapsed_s:.3f} {trades}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--data", type=Path, default=MARKET)
    parser.add_argument(
        "--cache-from",
        type=Path,
        help="start from a copy of this database, whose cache an earlier run of this benchmark "
        "(same --days) filled, instead of filling it again (about ten minutes for 30 days); "
        "before/after comparisons then replay the very same cache",
    )
    parser.add_argument("--keep-cache", type=Path, help="save the filled database here")
    parser.add_argument("--replay-agents", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replay_agents:
        replay_once(args.data, args.days, args.replay_agents)
        return
    if not args.data.is_dir():
        sys.exit(f"{args.data} not found: this benchmark needs ../shared/data/market")
    if args.cache_from is not None and not args.cache_from.is_file():
        sys.exit(f"{args.cache_from} not found: fill one first with --keep-cache {args.cache_from}")
    traders = {
        model: (trend_trader if i % 2 == 0 else contrarian_trader) for i, model in enumerate(MODELS)
    }
    with (
        tempfile.TemporaryDirectory() as folder,
        FakeOpenAIServer(
            "modelscope",
            responder=by_model(traders),
            requests_limit=UNLIMITED_QUOTA,
            model_requests_limit=UNLIMITED_QUOTA,
        ) as llm,
    ):
        os.environ.update(
            DATABASE_URL=f"sqlite:///{folder}/bench.db",
            MODELSCOPE_API_KEY="ms-benchmark",
            MODELSCOPE_BASE_URL=llm.base_url,
            LOG_LEVEL="WARNING",
        )
        if args.cache_from is not None:
            shutil.copyfile(args.cache_from, f"{folder}/bench.db")
            print(f"cache copied from {args.cache_from}", flush=True)
        else:
            settings = load_settings(env_file=None)
            database = open_database(settings)
            began = time.perf_counter()
            warm = asyncio.run(
                run_backtest(
                    settings, options(args.data, args.days, 6, "cached"), database=database
                )
            )
            database.engine.dispose()
            print(
                f"cache filled: {warm.cycles} cycles x 6 agents, {llm.request_count} HTTP calls, "
                f"{time.perf_counter() - began:.0f} s",
                flush=True,
            )
            if args.keep_cache is not None:
                shutil.copyfile(f"{folder}/bench.db", args.keep_cache)
        for count in (1, 6):
            rates, whole_rates = [], []
            for _ in range(args.runs):
                calls_before = llm.request_count
                # Each replay in a process of its own, as `arena backtest --llm-mode replay` runs;
                # the whole process (interpreter, imports, data, indicators, report) is timed too.
                process_began = time.perf_counter()
                done = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--replay-agents",
                        str(count),
                        "--days",
                        str(args.days),
                        "--data",
                        str(args.data),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                    env=os.environ.copy(),
                )
                process_s = time.perf_counter() - process_began
                assert llm.request_count == calls_before, "a replay must not call the model"
                cycles, rate, trades = done.stdout.split()[-3:]
                rates.append(float(rate))
                whole_rates.append(int(cycles) / process_s)
            print(
                f"{count} agent{'s' if count > 1 else ''} from the cache: {cycles} cycles, "
                f"whole process median {statistics.median(whole_rates):,.0f} cycles/s "
                f"(runs: {', '.join(f'{rate:,.0f}' for rate in whole_rates)}); "
                f"the cycle loop alone median {statistics.median(rates):,.0f} cycles/s "
                f"(runs: {', '.join(f'{rate:,.0f}' for rate in rates)}); "
                f"trades in the last run: {trades}",
                flush=True,
            )
        size_mb = Path(f"{folder}/bench.db").stat().st_size / 1e6
        print(f"database after all runs: {size_mb:.1f} MB")


if __name__ == "__main__":
    main()
