"""The candle cache in the `candle` table: round trip, upsert, windows."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

from app.db.candles import CandleCache
from app.db.migrate import upgrade
from app.db.session import make_engine
from app.domain import candles_from_rows


def frame(start_ms: int, count: int, close: float = 1.0) -> pd.DataFrame:
    times = np.arange(start_ms, start_ms + count * 60_000, 60_000, dtype=np.int64)
    values = np.column_stack([np.full(count, v) for v in (1.0, 2.0, 0.5, close, 10.0)])
    return candles_from_rows(times, values)


def test_saved_candles_come_back_identical_and_only_inside_the_window(db_url: str) -> None:
    upgrade(db_url)
    cache = CandleCache(make_engine(db_url))
    candles = frame(1_700_000_000_000, 10)
    assert (
        cache.save(exchange="binanceusdm", symbol="BTC/USDT:USDT", timeframe="1m", frame=candles)
        == 10
    )
    loaded = cache.load(
        exchange="binanceusdm",
        symbol="BTC/USDT:USDT",
        timeframe="1m",
        start=datetime.fromtimestamp(1_700_000_060, tz=UTC),
        end=datetime.fromtimestamp(1_700_000_300, tz=UTC),
    )
    pd.testing.assert_frame_equal(loaded, candles.iloc[1:5])
    other = cache.load(
        exchange="okx",
        symbol="BTC/USDT:USDT",
        timeframe="1m",
        start=datetime(2000, 1, 1, tzinfo=UTC),
        end=datetime(2100, 1, 1, tzinfo=UTC),
    )
    assert other.empty and list(other.columns) == ["open", "high", "low", "close", "volume"]


def test_saving_a_candle_again_replaces_it(db_url: str) -> None:
    upgrade(db_url)
    cache = CandleCache(make_engine(db_url))
    cache.save(
        exchange="x", symbol="S", timeframe="1m", frame=frame(1_700_000_000_000, 3, close=1.0)
    )
    cache.save(
        exchange="x", symbol="S", timeframe="1m", frame=frame(1_700_000_060_000, 3, close=7.0)
    )
    assert cache.count(exchange="x", symbol="S", timeframe="1m") == 4
    loaded = cache.load(
        exchange="x",
        symbol="S",
        timeframe="1m",
        start=datetime(2000, 1, 1, tzinfo=UTC),
        end=datetime(2100, 1, 1, tzinfo=UTC),
    )
    assert loaded["close"].tolist() == [1.0, 7.0, 7.0, 7.0]
