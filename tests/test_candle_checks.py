"""The candle checks (app/candle_checks.py) on hand-made candles, one rule at a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from app.candle_checks import check_candles, price_gap_pct, staleness

START = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)


def candles(closes: list[float], **changes: dict[int, float]) -> pd.DataFrame:
    """Candles with open = previous close, high/low 0.1 % beyond the body; `changes` sets one
    column's value at some rows, e.g. low={3: 1.0}."""
    close = np.asarray(closes, dtype=float)
    open_ = np.r_[close[0], close[:-1]]
    frame = pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * 1.001,
            "low": np.minimum(open_, close) * 0.999,
            "close": close,
            "volume": 1.0,
        },
        index=pd.date_range(START, periods=len(close), freq="1min", name="open_time"),
    )
    for column, rows in changes.items():
        for row, value in rows.items():
            frame.iloc[row, frame.columns.get_loc(column)] = value
    return frame


FLAT = [100.0] * 20


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"low": {7: 1.0}}, "low 1 is 99.0 % below the median close 100"),
        ({"high": {7: 400.0}}, "high 400 is 300.0 % above the median close 100"),
        ({"low": {7: 0.0}}, "a price is not above 0"),
        ({"close": {7: -5.0}}, "a price is not above 0"),
        ({"low": {7: 100.5}}, "prices out of order"),
        ({"open": {7: float("nan")}}, "a price is missing or not a number"),
    ],
)
def test_an_implausible_candle_is_dropped_with_its_reason(
    changes: dict[str, dict[int, float]], reason: str
) -> None:
    checked = check_candles(candles(FLAT, **changes))
    assert len(checked.kept) == 19
    ((flag,),) = [checked.flagged]
    assert flag.open_at == START + timedelta(minutes=7)
    assert reason in flag.reason


def test_a_real_crash_and_its_recovery_pass() -> None:
    """The price halves over three candles and stays there: within the default band (a third
    to three times the median close of the neighbours), nothing is dropped."""
    closes = [100.0] * 10 + [80.0, 60.0, 50.0] + [50.0] * 10
    assert check_candles(candles(closes)).flagged == ()


def test_the_mark_price_vouches_for_a_jump_in_the_newest_candles() -> None:
    """The last two candles close at four times the earlier price: beyond the band of their
    neighbours, which are all before them. The venue's mark agrees, so they stay; with a mark
    that does not, they go."""
    closes = [100.0] * 15 + [400.0, 400.0]
    assert check_candles(candles(closes), mark_price=401.0).flagged == ()
    assert len(check_candles(candles(closes), mark_price=100.0).flagged) == 2


def test_a_narrower_band_flags_smaller_moves() -> None:
    frame = candles(FLAT, low={5: 60.0})
    assert check_candles(frame).flagged == ()
    assert len(check_candles(frame, max_move_pct=50.0).flagged) == 1


def test_freshness_allows_one_period_of_lag_and_no_more() -> None:
    """3m candles whose newest opened 08:54: it closed 08:57, 3 min before a 09:00 cycle (one
    period: fresh) and 6 min before a 09:03 cycle (stale)."""
    frame = pd.DataFrame(
        {"close": [1.0, 1.0]},
        index=pd.DatetimeIndex([START - timedelta(minutes=9), START - timedelta(minutes=6)]),
    )
    step = timedelta(minutes=3)
    assert staleness(frame, step, START) is None
    late = staleness(frame, step, START + timedelta(minutes=3))
    assert late is not None and "closed 6 min before the cycle" in late
    assert staleness(frame.iloc[:0], step, START) == "no closed candle"


def test_price_gap_is_in_percent_of_the_reference() -> None:
    assert price_gap_pct(105.0, 100.0) == pytest.approx(5.0)
    assert price_gap_pct(0.0, 100.0) == float("inf")
