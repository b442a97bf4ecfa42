"""Market data: a six-coin live snapshot through real ccxt against a fake exchange with latency.

    .venv/bin/python benchmarks/bench_market_snapshot.py [--latency-ms 50] [--runs 7]

The fake exchange (tests/fakes/exchange.py, Binance USD-M payloads) runs in its own process, so
its work does not share this process's interpreter lock, and adds `--latency-ms` to every
request. Its clock is shared with this process, so "the next cycle" can be simulated: the clock
moves 3 minutes and one more 3m candle per coin closes. Prints medians over `--runs`.

Measured:
- cold: a new feed's first snapshot (markets, then 200 candles of both timeframes per coin,
  ticker, funding, open interest and its history: 37 requests);
- full: a snapshot that refetches every candle window (markets already loaded: 36 requests);
- next cycle: the steady state of the daemon (only the candle that closed since: 30 requests);
- the same full snapshot with ccxt's own rate limiter (one token, 50 ms apart), for contrast.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.market.ccxt_feed import CcxtMarketData
from tests.fakes.exchange import FakeExchange, synthetic_candles

COINS = ("BTC", "ETH", "SOL", "BNB", "XRP", "DOGE")
START = datetime(2026, 1, 15, 12, 0, 30, tzinfo=UTC)


def serve(latency_s: float, offset: Any, ready: Any, stop: Any) -> None:
    """Run the fake exchange in this (child) process until `stop` is set."""
    candles = synthetic_candles(
        COINS, start=START - timedelta(days=36), end=START + timedelta(days=2)
    )
    base = START.timestamp()
    clock: Callable[[], float] = lambda: base + offset.value  # noqa: E731
    fake = FakeExchange(candles, latency_s=latency_s, clock=clock).start()
    ready.send(fake.url)
    stop.wait()
    fake.stop()


def feed_for(url: str, **options: Any) -> CcxtMarketData:
    return CcxtMarketData(
        coins=COINS,
        exchange_id="binanceusdm",
        api_url=url,
        exchange_config={"timeout_on_exit": 0},
        **options,
    )


async def timed(coroutine: Any) -> float:
    started = time.perf_counter()
    await coroutine
    return time.perf_counter() - started


async def measure(url: str, offset: Any, runs: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"cold": [], "full": [], "next": [], "ccxt_limiter": []}
    for run in range(runs):
        offset.value = run * 600.0
        at = START + timedelta(seconds=offset.value)
        feed = feed_for(url)
        try:
            results["cold"].append(await timed(feed.snapshot(at)))
            await asyncio.sleep(2.5)  # let the rate-limit bucket refill, as between cycles
            feed._windows.clear()  # forget the candles: refetch every window
            results["full"].append(await timed(feed.snapshot(at)))
            await asyncio.sleep(2.5)
            offset.value += 180.0
            results["next"].append(await timed(feed.snapshot(at + timedelta(seconds=180))))
        finally:
            await feed.close()
    slow = feed_for(url, burst_tokens=None)
    try:
        await slow.load_markets()
        for _ in range(max(1, runs // 3)):
            slow._windows.clear()
            at = START + timedelta(seconds=offset.value)
            results["ccxt_limiter"].append(await timed(slow.snapshot(at)))
    finally:
        await slow.close()
    return results


def main() -> None:
    """Start the fake exchange in a child process, measure, print medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    context = multiprocessing.get_context("fork")
    offset = context.Value("d", 0.0, lock=False)
    receive, send = context.Pipe(duplex=False)
    stop = context.Event()
    child = context.Process(target=serve, args=(args.latency_ms / 1000, offset, send, stop))
    child.start()
    try:
        url = receive.recv()
        results = asyncio.run(measure(url, offset, args.runs))
    finally:
        stop.set()
        child.join(timeout=10)
    latency = args.latency_ms
    print(
        f"six coins, binanceusdm payloads, {latency:.0f} ms latency per request, {args.runs} runs"
    )
    labels = {
        "cold": "cold (new feed: markets + 200 candles x 2 timeframes, 37 requests)",
        "full": "full refetch, markets loaded (36 requests)",
        "next": "next cycle (one new 3m candle per coin, 30 requests)",
        "ccxt_limiter": "full refetch with ccxt's own limiter (no burst)",
    }
    for key, label in labels.items():
        values = results[key]
        median_ms = statistics.median(values) * 1000
        print(
            f"{label}: median {median_ms:.0f} ms, max {max(values) * 1000:.0f} ms "
            f"({median_ms / latency:.1f}x latency)"
        )


if __name__ == "__main__":
    main()
