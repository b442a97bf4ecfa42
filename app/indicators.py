"""Technical indicators (EMA, MACD, RSI, ATR, volume vs average): pure pandas, vectorised.

Definitions follow TA-Lib's defaults, so numbers agree with what traders and charting tools show:

- EMA: `k = 2 / (period + 1)`, seeded by the simple mean of the first `period` values.
- MACD: fast and slow EMAs both seeded on the bar where the slow one first exists (the fast seed is
  the mean of the `fast` values ending there, as TA-Lib does), the signal an EMA of the MACD line
  seeded the same way; all three columns start together, at bar `slow + signal - 2`.
- RSI and ATR: Wilder smoothing (`alpha = 1 / period`) seeded by the simple mean of the first
  `period` gains/losses or true ranges, first value at bar `period`.

Every function takes pandas and returns pandas on the same index, with NaN during the warm-up. The
recursions run in pandas' compiled `ewm` with the seed put in place of the first input, so a whole
year of 5m candles takes milliseconds. Nothing here looks at a later row to compute an earlier one:
values on a history cut at `t` equal the values on the full history up to `t` (a test proves it).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pandas as pd

EMA20: Final = "ema20"
EMA50: Final = "ema50"
MACD: Final = "macd"
MACD_SIGNAL: Final = "macd_signal"
MACD_HIST: Final = "macd_hist"
RSI7: Final = "rsi7"
RSI14: Final = "rsi14"
ATR3: Final = "atr3"
ATR14: Final = "atr14"
VOLUME_AVG: Final = "volume_avg"

# Columns `add_intraday_indicators` and `add_context_indicators` add, in this order.
# EMA50 is not in the text prompt's intraday series; the charts for vision agents draw it.
INTRADAY_INDICATOR_COLUMNS: Final[tuple[str, ...]] = (
    EMA20,
    EMA50,
    MACD,
    MACD_SIGNAL,
    MACD_HIST,
    RSI7,
    RSI14,
)
CONTEXT_INDICATOR_COLUMNS: Final[tuple[str, ...]] = (
    EMA20,
    EMA50,
    ATR3,
    ATR14,
    MACD,
    MACD_SIGNAL,
    MACD_HIST,
    RSI14,
    VOLUME_AVG,
)
VOLUME_AVG_PERIOD: Final = 20
OHLCV_COLUMNS: Final[tuple[str, ...]] = ("open", "high", "low", "close", "volume")


def _check_period(period: int) -> None:
    if period < 1:
        raise ValueError(f"period must be at least 1, got {period}")


# Below this length a plain loop beats pandas' ewm, whose fixed cost is ~0.1 ms a call; a live
# snapshot smooths a dozen 200-candle series per coin.
_LOOP_MAX_LENGTH: Final = 2000


def _seeded_recursion(values: np.ndarray, seed_at: int, seed: float, alpha: float) -> np.ndarray:
    """Run `y[t] = (1 - alpha) * y[t-1] + alpha * x[t]` from `y[seed_at] = seed`; NaN before it."""
    out = np.full(values.shape[0], np.nan)
    if seed_at >= values.shape[0]:
        return out
    tail = values[seed_at:].copy()
    tail[0] = seed
    if tail.shape[0] <= _LOOP_MAX_LENGTH and not np.isnan(tail).any():
        keep = 1.0 - alpha
        total = keep + alpha
        current = seed
        smoothed = [current]
        for value in tail[1:].tolist():
            # pandas' ewm(adjust=False) step; the two paths agree to ~1e-15 relative.
            current = (keep * current + alpha * value) / total
            smoothed.append(current)
        out[seed_at:] = smoothed
        return out
    # ewm(adjust=False) is exactly this recursion with its first input as the start value.
    out[seed_at:] = pd.Series(tail).ewm(alpha=alpha, adjust=False).mean().to_numpy()
    return out


def _first_valid(values: np.ndarray) -> int:
    valid = np.flatnonzero(~np.isnan(values))
    return int(valid[0]) if valid.size else values.shape[0]


def _ema_array(values: np.ndarray, period: int, *, seed_end: int | None = None) -> np.ndarray:
    """EMA of `values` (leading NaN skipped), seeded by the mean of the `period` values ending at
    `seed_end` (default: the first `period` valid values)."""
    start = _first_valid(values)
    seed_at = start + period - 1 if seed_end is None else seed_end
    if seed_at >= values.shape[0] or seed_at - period + 1 < start:
        return np.full(values.shape[0], np.nan)
    seed = float(values[seed_at - period + 1 : seed_at + 1].mean())
    return _seeded_recursion(values, seed_at, seed, 2.0 / (period + 1))


def _as_float_array(series: pd.Series) -> np.ndarray:
    return np.asarray(series.to_numpy(dtype=float, na_value=np.nan), dtype=float)


def ema(s: pd.Series, period: int) -> pd.Series:
    """Return the exponential moving average of `s` (TA-Lib seeding), NaN for the first values."""
    _check_period(period)
    values = _as_float_array(s)
    return pd.Series(_ema_array(values, period), index=s.index, name=f"ema{period}")


def _macd_arrays(
    values: np.ndarray, fast: int, slow: int, signal: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    _check_period(fast)
    _check_period(signal)
    if slow <= fast:
        raise ValueError(f"the slow period ({slow}) must be longer than the fast one ({fast})")
    start = _first_valid(values)
    seed_at = start + slow - 1
    slow_ema = _ema_array(values, slow, seed_end=seed_at)
    fast_ema = _ema_array(values, fast, seed_end=seed_at)
    line = fast_ema - slow_ema
    signal_line = _ema_array(line, signal)
    # TA-Lib reports the three together, from the first bar that has a signal value.
    line[np.isnan(signal_line)] = np.nan
    return line, signal_line, line - signal_line


def macd(close: pd.Series, fast: int = 12, slow: int = 26, signal: int = 9) -> pd.DataFrame:
    """Return MACD as TA-Lib computes it: columns `macd`, `signal`, `hist`, same index."""
    line, signal_line, hist = _macd_arrays(_as_float_array(close), fast, slow, signal)
    return pd.DataFrame({"macd": line, "signal": signal_line, "hist": hist}, index=close.index)


def _wilder(values: np.ndarray, period: int, first: int) -> np.ndarray:
    """Wilder-smooth `values[first:]`, seeded by the mean of its first `period` values."""
    seed_at = first + period - 1
    if seed_at >= values.shape[0]:
        return np.full(values.shape[0], np.nan)
    seed = float(values[first : seed_at + 1].mean())
    return _seeded_recursion(values, seed_at, seed, 1.0 / period)


def rsi(close: pd.Series, period: int = 14) -> pd.Series:
    """Return Wilder's RSI (0-100) as TA-Lib computes it; the first value is at bar `period`."""
    return pd.Series(
        _rsi_array(_as_float_array(close), period), index=close.index, name=f"rsi{period}"
    )


def _rsi_array(values: np.ndarray, period: int) -> np.ndarray:
    _check_period(period)
    start = _first_valid(values)
    change = np.full(values.shape[0], np.nan)
    change[1:] = np.diff(values)
    gain = np.where(change > 0, change, 0.0)
    loss = np.where(change < 0, -change, 0.0)
    avg_gain = _wilder(gain, period, start + 1)
    avg_loss = _wilder(loss, period, start + 1)
    total = avg_gain + avg_loss
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(total > 0, 100.0 * avg_gain / total, 0.0)
    # TA-Lib answers 0 when nothing moved over the whole window; keep its convention.
    out[np.isnan(avg_gain) | np.isnan(avg_loss)] = np.nan
    return out


def _true_range_array(high_v: np.ndarray, low_v: np.ndarray, close_v: np.ndarray) -> np.ndarray:
    previous = np.full(close_v.shape[0], np.nan)
    previous[1:] = close_v[:-1]
    ranges = np.vstack([high_v - low_v, np.abs(high_v - previous), np.abs(low_v - previous)])
    out: np.ndarray = ranges.max(axis=0)
    if out.shape[0]:
        out[0] = np.nan
    return out


def _atr_array(ranges: np.ndarray, close_v: np.ndarray, period: int) -> np.ndarray:
    _check_period(period)
    return _wilder(ranges, period, _first_valid(close_v) + 1)


def atr(high: pd.Series, low: pd.Series, close: pd.Series, period: int = 14) -> pd.Series:
    """Return Wilder's average true range as TA-Lib computes it; first value at bar `period`."""
    close_v = _as_float_array(close)
    ranges = _true_range_array(_as_float_array(high), _as_float_array(low), close_v)
    return pd.Series(_atr_array(ranges, close_v, period), index=close.index, name=f"atr{period}")


def _volume_average_array(volume: np.ndarray, period: int) -> np.ndarray:
    _check_period(period)
    out = np.full(volume.shape[0], np.nan)
    if volume.shape[0] >= period:
        sums = np.cumsum(np.r_[0.0, volume])
        out[period - 1 :] = (sums[period:] - sums[:-period]) / period
    return out


def volume_average(volume: pd.Series, period: int = VOLUME_AVG_PERIOD) -> pd.Series:
    """Return the mean volume of the last `period` candles, the current one included."""
    out = _volume_average_array(_as_float_array(volume), period)
    return pd.Series(out, index=volume.index, name=VOLUME_AVG)


def volume_ratio(volume: pd.Series, period: int = VOLUME_AVG_PERIOD) -> pd.Series:
    """Return each volume divided by its `period`-candle average (1.0 = an average candle)."""
    values = _as_float_array(volume)
    average = _volume_average_array(values, period)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(average > 0, values / average, np.nan)
    return pd.Series(ratio, index=volume.index, name="volume_ratio")


def _check_ohlcv(frame: pd.DataFrame, needed: tuple[str, ...]) -> None:
    missing = [name for name in needed if name not in frame.columns]
    if missing:
        raise ValueError(f"candles lack the column(s) {', '.join(missing)}")


def _with_columns(frame: pd.DataFrame, columns: dict[str, np.ndarray]) -> pd.DataFrame:
    # One concat instead of one assignment per column: a live snapshot does this 12 times.
    added = pd.DataFrame(columns, index=frame.index)
    kept = frame.drop(columns=[name for name in columns if name in frame.columns])
    return pd.concat([kept, added], axis=1)


def add_intraday_indicators(frame: pd.DataFrame) -> pd.DataFrame:
    """Return a copy of OHLCV `frame` with `ema20, ema50, macd, macd_signal, macd_hist, rsi7,
    rsi14`."""
    _check_ohlcv(frame, ("close",))
    close = _as_float_array(frame["close"])
    line, signal_line, hist = _macd_arrays(close, 12, 26, 9)
    return _with_columns(
        frame,
        {
            EMA20: _ema_array(close, 20),
            EMA50: _ema_array(close, 50),
            MACD: line,
            MACD_SIGNAL: signal_line,
            MACD_HIST: hist,
            RSI7: _rsi_array(close, 7),
            RSI14: _rsi_array(close, 14),
        },
    )


def add_context_indicators(frame: pd.DataFrame) -> pd.DataFrame:
    """Return a copy of OHLCV `frame` with EMA 20/50, ATR 3/14, MACD, RSI 14 and `volume_avg`."""
    _check_ohlcv(frame, OHLCV_COLUMNS)
    close = _as_float_array(frame["close"])
    ranges = _true_range_array(_as_float_array(frame["high"]), _as_float_array(frame["low"]), close)
    line, signal_line, hist = _macd_arrays(close, 12, 26, 9)
    return _with_columns(
        frame,
        {
            EMA20: _ema_array(close, 20),
            EMA50: _ema_array(close, 50),
            ATR3: _atr_array(ranges, close, 3),
            ATR14: _atr_array(ranges, close, 14),
            MACD: line,
            MACD_SIGNAL: signal_line,
            MACD_HIST: hist,
            RSI14: _rsi_array(close, 14),
            VOLUME_AVG: _volume_average_array(_as_float_array(frame["volume"]), VOLUME_AVG_PERIOD),
        },
    )


def warmup_candles(columns: tuple[str, ...]) -> int:
    """Return how many candles the given indicator columns need before all of them have a value."""
    needs = {
        EMA20: 20,
        EMA50: 50,
        MACD: 26 + 9 - 1,
        MACD_SIGNAL: 26 + 9 - 1,
        MACD_HIST: 26 + 9 - 1,
        RSI7: 8,
        RSI14: 15,
        ATR3: 4,
        ATR14: 15,
        VOLUME_AVG: VOLUME_AVG_PERIOD,
    }
    return max((needs[name] for name in columns if name in needs), default=1)
