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
