"""Market data: indicators over a year of 5m candles for six coins, and backtest snapshots.

    .venv/bin/python benchmarks/bench_market_indicators.py [--runs 5]

Uses the real Binance candles in ../shared/data/market (calendar year 2025, 105,120 5m candles
per coin) when present, else a synthetic random walk of the same size. Prints medians of:
- every prompt indicator (`add_intraday_indicators` + `add_context_indicators`) computed on the
  5m candles of six coins;
- building `HistoricalMarketData` for six coins (resampling to 3m-equivalent 15m and 4h, then
  the indicators once), which is what a backtest pays up front;
- `snapshot_at` for six coins at successive 15-minute cycles (what it pays per cycle);
- loading the 24 files of ../shared/data/market.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd

from app.indicators import add_context_indicators, add_intraday_indicators
from app.market import HistoricalMarketData, load_data_set
from tests.fakes.exchange import synthetic_candles

ROOT = Path(__file__).resolve().parents[1]
MARKET = ROOT.parent / "shared" / "data" / "market"
COINS = ("BTC", "ETH", "SOL", "BNB", "XRP", "DOGE")


def year_of_candles() -> tuple[dict[str, pd.DataFrame], str]:
    if MARKET.is_dir():
        data = load_data_set([MARKET])
        year = slice(
            pd.Timestamp("2025-01-01", tz="UTC"), pd.Timestamp("2025-12-31 23:55", tz="UTC")
        )
        return {coin: data.candles[coin].loc[year] for coin in COINS}, "real Binance 5m, 2025"
    start = datetime(2025, 1, 1, tzinfo=UTC)
    frames = synthetic_candles(COINS, start=start, end=start + timedelta(days=365), timeframe="5m")
    return frames, "synthetic 5m random walk"


def median_s(action: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    candles, source = year_of_candles()
    rows = len(next(iter(candles.values())))
    print(f"six coins x {rows:,} candles ({source}), {args.runs} runs")

    def indicators() -> None:
        for frame in candles.values():
            add_intraday_indicators(frame)
            add_context_indicators(frame)

    print(f"all prompt indicators on the 5m candles: {median_s(indicators, args.runs):.3f} s")

    def build() -> HistoricalMarketData:
        return HistoricalMarketData(candles, intraday_timeframe="15m", context_timeframe="4h")

    print(f"HistoricalMarketData for six coins (15m + 4h): {median_s(build, args.runs):.3f} s")

    market = build()
    first = market.first_ready_at()
    cycles = 20_000
    moments = [first + timedelta(minutes=15 * i) for i in range(cycles)]

    def snapshots() -> None:
        for moment in moments:
            market.snapshot_at(moment)

    per_cycle = median_s(snapshots, max(1, args.runs // 2)) / cycles
    print(
        f"snapshot_at, six coins, successive 15m cycles: {per_cycle * 1e6:.0f} us "
        f"({1 / per_cycle:,.0f} snapshots/s)"
    )
    if MARKET.is_dir():
        loading = median_s(lambda: load_data_set([MARKET]), 3)
        print(f"load_data_set of the market folder (24 files): {loading:.2f} s")


if __name__ == "__main__":
    main()
