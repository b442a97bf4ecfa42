"""Indicators agree with TA-Lib's definitions and never look ahead.

The expected numbers come from the plain loops below, written from TA-Lib's C sources
(ta_EMA.c, ta_MACD.c, ta_RSI.c, ta_ATR.c) without pandas, so they share no code with the
vectorised implementation they check.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from app import indicators as ind
from tests.conftest import shared_data

NAN = float("nan")


# Independent reference implementations: one value at a time, as TA-Lib's C code does it.


def ref_ema(values: list[float], period: int, seed_end: int | None = None) -> list[float]:
    out = [NAN] * len(values)
    start = next((i for i, v in enumerate(values) if not math.isnan(v)), len(values))
    seed_at = start + period - 1 if seed_end is None else seed_end
    if seed_at >= len(values):
        return out
    total = 0.0
    for value in values[seed_at - period + 1 : seed_at + 1]:
        total += value
    previous = total / period
    out[seed_at] = previous
    k = 2.0 / (period + 1)
    for i in range(seed_at + 1, len(values)):
        previous = (values[i] - previous) * k + previous
        out[i] = previous
    return out


def ref_macd(
    values: list[float], fast: int = 12, slow: int = 26, signal: int = 9
) -> tuple[list[float], list[float], list[float]]:
    # TA-Lib seeds both EMAs on the bar where the slow one starts (ta_MACD.c, "the fast and
    # slow seed windows end on the same bar"), then the signal EMA on the MACD line.
    slow_ema = ref_ema(values, slow, seed_end=slow - 1)
    fast_ema = ref_ema(values, fast, seed_end=slow - 1)
    line = [f - s for f, s in zip(fast_ema, slow_ema, strict=True)]
    signal_line = ref_ema(line, signal)
    first = slow + signal - 2
    line = [v if i >= first else NAN for i, v in enumerate(line)]
    hist = [m - s for m, s in zip(line, signal_line, strict=True)]
    return line, signal_line, hist


def ref_rsi(values: list[float], period: int) -> list[float]:
    out = [NAN] * len(values)
    if len(values) <= period:
        return out
    gain = loss = 0.0
    for i in range(1, period + 1):
        change = values[i] - values[i - 1]
        if change > 0:
            gain += change
        else:
            loss -= change
    gain /= period
    loss /= period
    out[period] = 100.0 * gain / (gain + loss) if gain + loss != 0 else 0.0
    for i in range(period + 1, len(values)):
        change = values[i] - values[i - 1]
        gain = (gain * (period - 1) + max(change, 0.0)) / period
        loss = (loss * (period - 1) + max(-change, 0.0)) / period
        out[i] = 100.0 * gain / (gain + loss) if gain + loss != 0 else 0.0
    return out


def ref_atr(high: list[float], low: list[float], close: list[float], period: int) -> list[float]:
    out = [NAN] * len(close)
    ranges = [NAN] + [
        max(high[i] - low[i], abs(high[i] - close[i - 1]), abs(low[i] - close[i - 1]))
        for i in range(1, len(close))
    ]
    if len(close) <= period:
        return out
    previous = sum(ranges[1 : period + 1]) / period
    out[period] = previous
    for i in range(period + 1, len(close)):
        previous = (previous * (period - 1) + ranges[i]) / period
        out[i] = previous
    return out


def assert_matches(actual: pd.Series, expected: list[float], first_valid: int) -> None:
    values = actual.to_numpy()
    assert np.isnan(values[:first_valid]).all(), "values before the warm-up must be NaN"
    reference = np.array(expected)
    assert not np.isnan(reference[first_valid:]).any()
    np.testing.assert_allclose(values[first_valid:], reference[first_valid:], rtol=1e-6, atol=0)


@pytest.fixture(scope="module")
def btc_5m() -> pd.DataFrame:
    path = shared_data("freqtrade-testdata", "orderflow", "candles.json")
    return pd.read_json(path).set_index("date")


# Small hand-worked series.


def test_ema_of_a_ramp_is_seeded_by_the_mean_then_smoothed() -> None:
    """Closes 1, 2, 3, 4, 5 with period 3: the seed at bar 2 is (1+2+3)/3 = 2; k = 2/4 = 0.5,
    so bar 3 is 2 + 0.5*(4-2) = 3 and bar 4 is 3 + 0.5*(5-3) = 4."""
    result = ind.ema(pd.Series([1.0, 2.0, 3.0, 4.0, 5.0]), 3)
    assert np.isnan(result.iloc[:2]).all()
    assert result.iloc[2:].tolist() == [2.0, 3.0, 4.0]


def test_rsi_uses_wilder_smoothing_seeded_by_the_first_average() -> None:
    """Closes 10, 11, 10, 12, 13 with period 2: changes +1, -1, +2, +1.
    Seed at bar 2: gain (1+0)/2 = 0.5, loss (0+1)/2 = 0.5 -> RSI 50.
    Bar 3: gain (0.5*1 + 2)/2 = 1.25, loss (0.5*1 + 0)/2 = 0.25 -> 100*1.25/1.5 = 83.33.
    Bar 4: gain (1.25 + 1)/2 = 1.125, loss 0.25/2 = 0.125 -> 100*1.125/1.25 = 90."""
    result = ind.rsi(pd.Series([10.0, 11.0, 10.0, 12.0, 13.0]), 2)
    assert np.isnan(result.iloc[:2]).all()
    np.testing.assert_allclose(result.iloc[2:].to_numpy(), [50.0, 250.0 / 3.0, 90.0])


def test_rsi_of_a_flat_window_is_zero_as_in_ta_lib() -> None:
    result = ind.rsi(pd.Series([5.0] * 6), 3)
    assert result.iloc[3:].tolist() == [0.0, 0.0, 0.0]


def test_atr_averages_true_ranges_from_the_second_bar() -> None:
    """Bars (high, low, close): (10, 8, 9), (11, 9, 10), (12, 9, 9), (10, 7, 8).
    True ranges from bar 1: max(2, 2, 0) = 2, max(3, 2, 1) = 3, max(3, 1, 2) = 3.
    Period 2: seed at bar 2 = (2+3)/2 = 2.5; bar 3 = (2.5*1 + 3)/2 = 2.75."""
    high = pd.Series([10.0, 11.0, 12.0, 10.0])
    low = pd.Series([8.0, 9.0, 9.0, 7.0])
    close = pd.Series([9.0, 10.0, 9.0, 8.0])
    result = ind.atr(high, low, close, 2)
    assert np.isnan(result.iloc[:2]).all()
    assert result.iloc[2:].tolist() == [2.5, 2.75]


def test_macd_starts_all_three_columns_together_after_slow_plus_signal_bars() -> None:
    close = pd.Series(np.linspace(100.0, 140.0, 40))
    result = ind.macd(close)
    assert list(result.columns) == ["macd", "signal", "hist"]
    first = result.dropna().index[0]
    assert first == 26 + 9 - 2
    assert result.index.equals(close.index)


def test_volume_average_is_the_mean_of_the_last_twenty_including_the_current() -> None:
    """Volumes 1..25: at bar 19 the mean of 1..20 is 10.5; at bar 24 the mean of 6..25 is 15.5."""
    volume = pd.Series(np.arange(1.0, 26.0))
    result = ind.volume_average(volume)
    assert np.isnan(result.iloc[:19]).all()
    assert result.iloc[19] == 10.5
    assert result.iloc[24] == 15.5
    assert ind.volume_ratio(volume).iloc[24] == pytest.approx(25.0 / 15.5)


def test_too_short_input_gives_all_nan_not_an_error() -> None:
    close = pd.Series([1.0, 2.0, 3.0])
    assert ind.ema(close, 20).isna().all()
    assert ind.macd(close).isna().all().all()
    assert ind.rsi(close, 14).isna().all()


# The real candles: BTC/USDT 5m, 10,999 bars.


def test_ema_matches_ta_lib_on_real_btc_candles(btc_5m: pd.DataFrame) -> None:
    """First closes 16726.1, 16707.5, 16704.1, ... sum to 334164.5 over 20 bars, so EMA20 starts
    at bar 19 with 334164.5 / 20 = 16708.225; bar 20 (close 16708.0) gives
    16708.225 + (16708.0 - 16708.225) * 2/21 = 16708.2036."""
    close = btc_5m["close"]
    result = ind.ema(close, 20)
    assert result.iloc[19] == pytest.approx(16708.225, rel=1e-12)
    assert result.iloc[20] == pytest.approx(16708.203571, rel=1e-9)
    assert_matches(result, ref_ema(close.tolist(), 20), 19)
    assert_matches(ind.ema(close, 50), ref_ema(close.tolist(), 50), 49)


def test_macd_matches_ta_lib_on_real_btc_candles(btc_5m: pd.DataFrame) -> None:
    close = btc_5m["close"].tolist()
    line, signal_line, hist = ref_macd(close)
    result = ind.macd(btc_5m["close"])
    assert_matches(result["macd"], line, 33)
    assert_matches(result["signal"], signal_line, 33)
    # The histogram crosses zero, so compare it absolutely, at the scale of the price.
    np.testing.assert_allclose(result["hist"].to_numpy()[33:], np.array(hist)[33:], atol=1e-6)


def test_rsi_matches_ta_lib_on_real_btc_candles(btc_5m: pd.DataFrame) -> None:
    """Over the first 14 changes the gains add up to 18.3 and the losses to 34.3, so RSI14 starts
    at bar 14 with 100 * 18.3 / (18.3 + 34.3) = 34.7909."""
    close = btc_5m["close"]
    result = ind.rsi(close, 14)
    assert result.iloc[14] == pytest.approx(34.790875, rel=1e-6)
    assert_matches(result, ref_rsi(close.tolist(), 14), 14)
    assert_matches(ind.rsi(close, 7), ref_rsi(close.tolist(), 7), 7)


def test_atr_matches_ta_lib_on_real_btc_candles(btc_5m: pd.DataFrame) -> None:
    """The first 14 true ranges (from bar 1: 21.8, 7.8, 7.3, 0.4, ...) add up to 85.6, so ATR14
    starts at bar 14 with 85.6 / 14 = 6.1143."""
    high, low, close = (btc_5m[name] for name in ("high", "low", "close"))
    result = ind.atr(high, low, close, 14)
    assert result.iloc[14] == pytest.approx(6.114286, rel=1e-6)
    expected = ref_atr(high.tolist(), low.tolist(), close.tolist(), 14)
    assert_matches(result, expected, 14)
    assert_matches(
        ind.atr(high, low, close, 3), ref_atr(high.tolist(), low.tolist(), close.tolist(), 3), 3
    )


def test_prompt_indicator_columns_have_the_contract_names(btc_5m: pd.DataFrame) -> None:
    frame = btc_5m.iloc[:300]
    intraday = ind.add_intraday_indicators(frame)
    context = ind.add_context_indicators(frame)
    assert ind.INTRADAY_INDICATOR_COLUMNS == (
        "ema20",
        "ema50",
        "macd",
        "macd_signal",
        "macd_hist",
        "rsi7",
        "rsi14",
    )
    assert ind.CONTEXT_INDICATOR_COLUMNS == (
        "ema20",
        "ema50",
        "atr3",
        "atr14",
        "macd",
        "macd_signal",
        "macd_hist",
        "rsi14",
        "volume_avg",
    )
    assert list(intraday.columns) == [*frame.columns, *ind.INTRADAY_INDICATOR_COLUMNS]
    assert list(context.columns) == [*frame.columns, *ind.CONTEXT_INDICATOR_COLUMNS]
    assert intraday.index.equals(frame.index)
    assert "ema20" not in frame.columns, "the input frame must not be modified"
    last = context.iloc[-1]
    assert last["volume_avg"] == pytest.approx(frame["volume"].iloc[-20:].mean())
    assert last["macd_hist"] == pytest.approx(last["macd"] - last["macd_signal"])


@pytest.mark.parametrize("cut", [40, 150, 1999, 2001, 5000, 10998])
def test_indicators_on_the_full_history_sliced_at_t_equal_those_on_the_history_cut_at_t(
    btc_5m: pd.DataFrame, cut: int
) -> None:
    """The no-look-ahead proof: nothing after bar t changes any value at or before t."""
    full_intraday = ind.add_intraday_indicators(btc_5m)
    full_context = ind.add_context_indicators(btc_5m)
    cut_frame = btc_5m.iloc[:cut]
    pd.testing.assert_frame_equal(
        ind.add_intraday_indicators(cut_frame), full_intraday.iloc[:cut], rtol=1e-12, atol=1e-9
    )
    pd.testing.assert_frame_equal(
        ind.add_context_indicators(cut_frame), full_context.iloc[:cut], rtol=1e-12, atol=1e-9
    )


def test_warmup_candles_cover_the_slowest_indicator() -> None:
    assert ind.warmup_candles(ind.CONTEXT_INDICATOR_COLUMNS) == 50
    assert ind.warmup_candles(ind.INTRADAY_INDICATOR_COLUMNS) == 50
