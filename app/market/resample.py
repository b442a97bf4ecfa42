"""Resample candles to a longer timeframe on clock boundaries, keeping only complete candles."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd

from app.domain import CANDLE_COLUMNS, CANDLE_INDEX_NAME, index_ns
from app.errors import ConfigError
from app.market.files import step_of


def step_ns(timeframe: str) -> int:
    """Return the length of `timeframe` in nanoseconds."""
    return int(step_of(timeframe) / timedelta(microseconds=1)) * 1000


def check_multiple(timeframe: str, base_timeframe: str, *, what: str) -> int:
    """Return how many base candles make one `timeframe` candle; `ConfigError` unless whole.

    A timeframe finer than the data cannot be made from it: 3m candles do not come out of 5m ones.
    """
    target, base = step_ns(timeframe), step_ns(base_timeframe)
    if target < base:
        raise ConfigError(
            f"the {what} timeframe {timeframe} is finer than the data's {base_timeframe} candles; "
            f"use {base_timeframe} or a multiple of it, or give {timeframe} (or finer) data"
        )
    if target % base:
        raise ConfigError(
            f"the {what} timeframe {timeframe} is not a whole number of the data's "
            f"{base_timeframe} candles; use a multiple of {base_timeframe}"
        )
    return target // base


def resample_candles(frame: pd.DataFrame, timeframe: str, base_timeframe: str) -> pd.DataFrame:
    """Aggregate `base_timeframe` candles into `timeframe` candles aligned to the Unix epoch.

    open = first open, high = max, low = min, close = last close, volume = sum. A bucket at either
    end of the data that lacks its first or last base candle is dropped: it is not a whole candle
    (at the end it has not closed yet). Buckets with holes inside keep what they have; the loader
    has already reported the gap.
    """
    factor = check_multiple(timeframe, base_timeframe, what="resampled")
    if factor == 1 or frame.empty:
        return frame
    size, base = step_ns(timeframe), step_ns(base_timeframe)
    times = index_ns(frame)
    buckets = times - np.mod(times, size)
    starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
    ends = np.r_[starts[1:], len(times)] - 1
    values = {name: frame[name].to_numpy(dtype=float) for name in CANDLE_COLUMNS}
    out = pd.DataFrame(
        {
            "open": values["open"][starts],
            "high": np.maximum.reduceat(values["high"], starts),
            "low": np.minimum.reduceat(values["low"], starts),
            "close": values["close"][ends],
            "volume": np.add.reduceat(values["volume"], starts),
        },
        index=pd.DatetimeIndex(pd.to_datetime(buckets[starts], utc=True), name=CANDLE_INDEX_NAME),
    )
    keep = np.ones(len(out), dtype=bool)
    if times[starts[0]] != buckets[starts[0]]:
        keep[0] = False
    if times[ends[-1]] != buckets[ends[-1]] + size - base:
        keep[-1] = False
    return out[keep]
