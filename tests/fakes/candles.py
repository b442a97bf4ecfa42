"""Generated candles for tests that need a market, not a particular one (seeded, reproducible)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def random_walk_candles(
    *,
    start: datetime = T0,
    periods: int = 3000,
    step: timedelta = timedelta(minutes=5),
    price: float = 100.0,
    seed: int = 1,
    volatility: float = 0.002,
) -> pd.DataFrame:
    """Return OHLCV candles shaped like `load_candles` output: a seeded geometric random walk."""
    rng = np.random.default_rng(seed)
    closes = price * np.exp(np.cumsum(rng.normal(0.0, volatility, periods)))
    opens = np.concatenate(([price], closes[:-1]))
    spread = np.abs(rng.normal(0.0, volatility, periods)) * closes
    highs = np.maximum(opens, closes) + spread
    lows = np.minimum(opens, closes) - spread
    volumes = rng.uniform(10.0, 100.0, periods)
    index = pd.DatetimeIndex([start + i * step for i in range(periods)], name="open_time")
    return pd.DataFrame(
        {"open": opens, "high": highs, "low": lows, "close": closes, "volume": volumes},
        index=index,
    )


def six_coin_market(
    coins: Sequence[str] = ("BTC", "ETH"), *, periods: int = 3000, seed: int = 7
) -> dict[str, pd.DataFrame]:
    """Return one random-walk frame per coin, at different price levels."""
    levels = {
        "BTC": 100_000.0,
        "ETH": 4_000.0,
        "SOL": 200.0,
        "BNB": 1_000.0,
        "XRP": 2.5,
        "DOGE": 0.2,
    }
    return {
        coin: random_walk_candles(periods=periods, price=levels.get(coin, 50.0), seed=seed + i)
        for i, coin in enumerate(coins)
    }


def integer_walk_candles(
    *,
    start: datetime = T0,
    periods: int = 3000,
    step: timedelta = timedelta(minutes=5),
    price: float = 100.0,
    seed: int = 1,
) -> pd.DataFrame:
    """Return OHLCV candles from integer arithmetic only: the same floats on every machine.

    A Lehmer generator moves the close by -20..+20 ticks of 1/10000 of `price` (with a slow
    swing, so charts show trends), wicks reach 0-14 ticks beyond the body, volume is 10-99.
    For golden files, where a numpy generator's stream may change between versions.
    """
    state = seed % 2147483647 or 1

    def draw(modulus: int) -> int:
        nonlocal state
        state = state * 48271 % 2147483647
        return state % modulus

    tick = price / 10000.0
    level = 10000
    rows = []
    for i in range(periods):
        swing = 6 if (i // 240) % 2 == 0 else -6
        open_ticks = level
        level += draw(41) - 20 + (swing if draw(4) == 0 else 0)
        high_ticks = max(open_ticks, level) + draw(15)
        low_ticks = min(open_ticks, level) - draw(15)
        rows.append((open_ticks, high_ticks, low_ticks, level, 10 + draw(90)))
    ticks = np.array(rows, dtype=np.int64)
    index = pd.DatetimeIndex([start + i * step for i in range(periods)], name="open_time")
    return pd.DataFrame(
        {
            "open": ticks[:, 0] * tick,
            "high": ticks[:, 1] * tick,
            "low": ticks[:, 2] * tick,
            "close": ticks[:, 3] * tick,
            "volume": ticks[:, 4].astype(float),
        },
        index=index,
    )
