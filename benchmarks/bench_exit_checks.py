"""Between-cycle exit checks of the live daemon: 12 agents holding the same 6 coins.

    .venv/bin/python benchmarks/bench_exit_checks.py [--latency-ms 50] [--passes 5]

The daemon is built as `arena run` builds it (`build_live_arena`: SQLite database, candle cache,
real ccxt `binanceusdm`) against the fake exchange (tests/fakes/exchange.py) in its own process,
which adds `--latency-ms` to every request. Twelve buy_and_hold agents each open the six coins
at the first cycle; then the exit monitor runs at `--passes` successive minute boundaries, as
the daemon does between cycles. Prints, per pass, the median time and the requests it made
(one-minute candles and funding history).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.config import AgentConfig, load_settings
from app.wiring import build_live_arena
from tests.fakes.exchange import FakeExchange, synthetic_candles

COINS = ("BTC", "ETH", "SOL", "BNB", "XRP", "DOGE")
AGENTS = 12
# The fake exchange's clock; the cycle and the monitor passes are an hour before it.
NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
CYCLE = datetime(2026, 1, 15, 11, 0, tzinfo=UTC)


def serve(latency_s: float, ready: Any, stop: Any, counts: Any) -> None:
    """Run the fake exchange in this (child) process until `stop` is set."""
    candles = synthetic_candles(COINS, start=NOW - timedelta(days=3), end=NOW + timedelta(hours=1))
    fake = FakeExchange(candles, latency_s=latency_s, now=NOW).start()
    ready.send(fake.url)
    while not stop.wait(0.05):
        counts["klines"] = len(fake.requests_to("/fapi/v1/klines"))
        counts["funding"] = len(fake.requests_to("/fapi/v1/fundingRate"))
    fake.stop()


async def measure(
    url: str, passes: int, counted: Callable[[], tuple[int, int]]
) -> list[tuple[float, int, int]]:
    with tempfile.TemporaryDirectory() as folder:
        os.environ.update(
            EXCHANGE_ID="binanceusdm",
            EXCHANGE_API_URL=url,
            EXCHANGE_TIMEOUT_S="60",
            DATABASE_URL=f"sqlite:///{Path(folder) / 'arena.db'}",
            SERVE_PORT="0",
            LOG_LEVEL="WARNING",
        )
        settings = load_settings(env_file=None)
        agents = [AgentConfig.from_spec(f"hodl{i}=baseline:buy_and_hold") for i in range(AGENTS)]
        results = []
        async with build_live_arena(settings, agents) as live:
            await live.run_once(CYCLE)
            for minute in range(1, passes + 1):
                await asyncio.sleep(0.2)  # the child's request counts catch up
                klines0, funding0 = counted()
                started = time.perf_counter()
                await live.engine.run_monitor(CYCLE + timedelta(minutes=minute))
                elapsed = time.perf_counter() - started
                await asyncio.sleep(0.2)
                klines1, funding1 = counted()
                results.append((elapsed, klines1 - klines0, funding1 - funding0))
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()
    manager = multiprocessing.Manager()
    counts = manager.dict(klines=0, funding=0)
    receive, send = multiprocessing.Pipe(duplex=False)
    stop = multiprocessing.Event()
    child = multiprocessing.Process(
        target=serve, args=(args.latency_ms / 1000, send, stop, counts), daemon=True
    )
    child.start()
    url = receive.recv()
    try:
        results = asyncio.run(
            measure(url, args.passes, lambda: (counts["klines"], counts["funding"]))
        )
    finally:
        stop.set()
        child.join(timeout=10)
    times = [elapsed for elapsed, _, _ in results]
    print(
        f"{AGENTS} agents x {len(COINS)} coins, {args.latency_ms:g} ms latency, "
        f"{len(results)} monitor passes"
    )
    print(
        f"median pass: {statistics.median(times) * 1000:,.0f} ms (max {max(times) * 1000:,.0f} ms)"
    )
    for elapsed, klines, funding in results:
        print(
            f"  {elapsed * 1000:8,.0f} ms  {klines:3d} candle requests  "
            f"{funding:3d} funding requests"
        )


if __name__ == "__main__":
    main()
