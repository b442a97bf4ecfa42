"""Exit monitor: scan 1,000,000 one-minute candles against a position's stop, target, liquidation.

Run: .venv/bin/python benchmarks/bench_exit_monitor.py

The worst case is measured: no level is touched, so every candle is compared. Figures are the
median of several runs (the target in the issue: under 0.5 s for 1,000,000 candles).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from app.domain import ExitPlan, OrderIntent, PaperCosts
from app.trading.paper import Execution, PaperAccount, find_first_exit

CANDLES = 1_000_000
RUNS = 7
START = datetime(2024, 1, 1, tzinfo=UTC)


def random_walk(n: int, seed: int = 7) -> pd.DataFrame:
    """Return n one-minute candles of a random walk around 60,000 that stays within +-20%."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0, 0.0004, n)
    close = 60_000.0 * np.exp(np.clip(np.cumsum(steps), -0.2, 0.2))
    open_ = np.concatenate(([60_000.0], close[:-1]))
    spread = np.abs(rng.normal(0.0, 0.0003, n))
    high = np.maximum(open_, close) * (1 + spread)
    low = np.minimum(open_, close) * (1 - spread)
    index = pd.date_range(START, periods=n, freq="1min")
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close}, index=index)


def median_s(action: Callable[[], object]) -> float:
    timings = []
    for _ in range(RUNS):
        began = time.perf_counter()
        action()
        timings.append(time.perf_counter() - began)
    return statistics.median(timings)


def account_with_long() -> PaperAccount:
    account = PaperAccount(10_000.0, costs=PaperCosts())
    intent = OrderIntent(
        coin="BTC",
        action="open",
        side="long",
        quantity=0.05,
        leverage=3,
        # Out of the walk's reach (+-20%), liquidation at ~0.67 x entry: no exit fires.
        exit_plan=ExitPlan(profit_target=80_000.0, stop_loss=45_000.0),
    )
    result = account.execute(intent, reference_price=60_000.0, at=START)
    assert isinstance(result, Execution)
    return account


def main() -> None:
    candles = random_walk(CANDLES)
    o, h, lo = (candles[c].to_numpy() for c in ("open", "high", "low"))
    levels = {"stop_loss": 45_000.0, "take_profit": 80_000.0, "liquidation": 40_000.0}
    short_levels = {"stop_loss": 80_000.0, "take_profit": 45_000.0, "liquidation": 90_000.0}

    scan_long = median_s(lambda: find_first_exit(o, h, lo, side="long", **levels))
    scan_short = median_s(lambda: find_first_exit(o, h, lo, side="short", **short_levels))

    def monitor() -> None:
        # A fresh copy each run: apply_candles closes the position when an exit fires.
        account = PaperAccount.restore(template.state(), costs=template.costs)
        assert account.apply_candles("BTC", candles).exit is None

    template = account_with_long()
    whole = median_s(monitor)

    # Backtest shape: one call per 3-minute cycle over three 1-minute candles.
    window = candles.iloc[:3]
    calls = 10_000

    def many_small() -> None:
        account = PaperAccount.restore(template.state(), costs=template.costs)
        for _ in range(calls):
            account.apply_candles("BTC", window)

    small = median_s(many_small)

    print(f"candles: {CANDLES:,} one-minute, no level touched (worst case), median of {RUNS}")
    print(f"find_first_exit long  (numpy arrays):       {scan_long * 1000:8.1f} ms")
    print(f"find_first_exit short (numpy arrays):       {scan_short * 1000:8.1f} ms")
    print(f"PaperAccount.apply_candles (DataFrame):     {whole * 1000:8.1f} ms")
    print(f"  = {CANDLES / whole / 1e6:.0f} M candles/s; target < 500 ms")
    print(f"apply_candles on 3 candles, per call:       {small / calls * 1e6:8.1f} us")


if __name__ == "__main__":
    main()
