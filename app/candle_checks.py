"""Plausibility and freshness checks on candles, before they reach a prompt or the books.

Pure functions over candle frames (float `open, high, low, close` on a UTC open-time index);
the live feed, the candle files and the engine call them, and decide what to do with the answer
(docs/simulation.md, "Market data you can trust").

A candle is implausible when
- a price is not a finite number above 0, or `low <= min(open, close) <= max(open, close) <= high`
  does not hold (a small relative tolerance allows for rounding in files);
- or one of its prices lies beyond `max_move_pct` of the reference around it: the median close
  of the sound candles up to `NEIGHBOURS` on each side (its own close among them). A median of
  eleven is not moved by the bad candle itself, nor by a few others next to it. For the last
  `NEIGHBOURS` candles, which have few neighbours after them, a price within the band of the
  venue's mark price (when given) is accepted: a real move shows there too, a bad print does not.
The band is a ratio either way: with 200 %, a price is plausible from a third to three times
the reference.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import numpy as np
import pandas as pd

from app.domain import (
    CandleRows,
    CoinSnapshot,
    MarketSnapshot,
    PrecomputedCoinSnapshot,
    index_ns,
    ns_to_datetime,
    timeframe_to_timedelta,
)

# The default band: a price from a third to three times the median close of its neighbours. The
# real 2025-10-10 crash in the sample data (Binance perpetuals, DOGE's 1h low 60 % under its
# neighbours, XRP's 52 %) stays inside it and so still reaches stops; a wick to 1 % of the price,
# a zero, or a price in the wrong unit is far beyond it.
DEFAULT_MAX_MOVE_PCT: Final = 200.0
# Ticker against the newest intraday close: more than this apart, one of them is wrong.
DEFAULT_MAX_PRICE_GAP_PCT: Final = 5.0
# Sound candles on each side whose median close is a candle's reference.
NEIGHBOURS: Final = 5
# Rounding allowed in `low <= open, close <= high` (files written with fewer digits).
_ORDER_TOLERANCE: Final = 1e-9
_PRICES: Final = ("open", "high", "low", "close")


@dataclass(frozen=True, slots=True)
class FlaggedCandle:
    """One candle found implausible, and why."""

    open_at: datetime
    reason: str

    def describe(self) -> str:
        """Return e.g. `2026-01-15 11:57 UTC: low 950 is 99.0 % below the reference 95000`."""
        return f"{self.open_at:%Y-%m-%d %H:%M} UTC: {self.reason}"


@dataclass(frozen=True, slots=True)
class CandleCheck:
    """The sound candles of a frame and the ones left out."""

    kept: pd.DataFrame
    flagged: tuple[FlaggedCandle, ...] = ()

    def summary(self, what: str) -> str:
        """Return one line: how many candles of `what` were dropped, and the first reasons."""
        count = len(self.flagged)
        shown = "; ".join(flag.describe() for flag in self.flagged[:3])
        more = f"; and {count - 3} more" if count > 3 else ""
        return (
            f"{count} implausible {what} candle{'s' if count != 1 else ''} dropped ({shown}{more})"
        )


def _band_ratio(max_move_pct: float) -> float:
    if not max_move_pct > 0 or not math.isfinite(max_move_pct):
        raise ValueError(f"max_move_pct must be a number above 0, not {max_move_pct!r}")
    return 1.0 + max_move_pct / 100.0


def _structural_problems(prices: np.ndarray) -> dict[int, str]:
    """Return {row: what makes it impossible} for the rows of [open, high, low, close]."""
    problems: dict[int, str] = {}
    finite = np.isfinite(prices).all(axis=1)
    positive = finite & (np.where(np.isfinite(prices), prices, 1.0) > 0).all(axis=1)
    open_, high, low, close = (prices[:, i] for i in range(4))
    slack = _ORDER_TOLERANCE * np.abs(np.where(np.isfinite(high), high, 0.0))
    with np.errstate(invalid="ignore"):
        ordered = (low <= np.minimum(open_, close) + slack) & (
            np.maximum(open_, close) <= high + slack
        )
    for i in np.flatnonzero(~(finite & positive & ordered)).tolist():
        o, h, lo, c = (float(v) for v in prices[i])
        if not finite[i]:
            problems[i] = "a price is missing or not a number"
        elif not positive[i]:
            problems[i] = (
                f"a price is not above 0 (open {o:g}, high {h:g}, low {lo:g}, close {c:g})"
            )
        else:
            problems[i] = (
                f"prices out of order (open {o:g}, high {h:g}, low {lo:g}, close {c:g}): "
                "low <= open, close <= high does not hold"
            )
    return problems


def _neighbour_reference(closes: np.ndarray, sound: np.ndarray) -> np.ndarray:
    """Return each candle's reference: the median close of the sound candles within NEIGHBOURS
    on each side (NaN when there is none). Its own close counts as one of up to 11: a bad
    price among them cannot move a median of the rest."""
    values = pd.Series(np.where(sound, closes, np.nan))
    window = values.rolling(2 * NEIGHBOURS + 1, center=True, min_periods=1)
    return window.median().to_numpy(dtype=float)


def check_candles(
    frame: pd.DataFrame,
    *,
    max_move_pct: float = DEFAULT_MAX_MOVE_PCT,
    mark_price: float | None = None,
) -> CandleCheck:
    """Return the plausible candles of `frame` and the implausible ones with their reasons.

    `mark_price` (the venue's current mark, when known) vouches for the last candles' prices
    that lie within the band of it. The kept frame is `frame` itself when nothing is flagged.
    """
    ratio = _band_ratio(max_move_pct)
    if frame.empty:
        return CandleCheck(kept=frame)
    prices = frame[list(_PRICES)].to_numpy(dtype=float)
    problems = _structural_problems(prices)
    sound = np.ones(len(frame), dtype=bool)
    sound[list(problems)] = False
    reference = _neighbour_reference(prices[:, 3], sound)
    with np.errstate(invalid="ignore"):
        beyond = (prices < (reference / ratio)[:, None]) | (prices > (reference * ratio)[:, None])
        usable_mark = mark_price is not None and math.isfinite(mark_price) and mark_price > 0
        if usable_mark:
            assert mark_price is not None
            # The last candles have few neighbours after them: the mark speaks for them.
            vouched = (prices >= mark_price / ratio) & (prices <= mark_price * ratio)
            vouched[: max(0, len(frame) - NEIGHBOURS)] = False
            beyond &= ~vouched
    beyond &= (sound & np.isfinite(reference))[:, None]
    for i in np.flatnonzero(beyond.any(axis=1)).tolist():
        column = int(np.argmax(beyond[i]))
        ref, value = float(reference[i]), float(prices[i, column])
        direction = "above" if value > ref else "below"
        problems[i] = (
            f"{_PRICES[column]} {value:g} is {abs(value / ref - 1) * 100:.1f} % {direction} "
            f"the median close {ref:g} of its neighbours"
        )
    flagged_rows = sorted(problems)
    if not flagged_rows:
        return CandleCheck(kept=frame)
    opens_ns = index_ns(frame)
    flags = tuple(
        FlaggedCandle(ns_to_datetime(int(opens_ns[i])), str(problems[i])) for i in flagged_rows
    )
    keep = np.ones(len(frame), dtype=bool)
    keep[flagged_rows] = False
    return CandleCheck(kept=frame[keep], flagged=flags)


def candle_age(frame: pd.DataFrame, step: timedelta, at: datetime) -> timedelta | None:
    """Return how long before `at` the newest candle of `frame` closed (None: no candle)."""
    if frame.empty:
        return None
    return at - (_newest_open(frame) + step)


_NS_PER_UNIT: Final = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}


def _newest_open(frame: pd.DataFrame) -> datetime:
    # The last open time read straight from the index's integers: this runs for every coin and
    # timeframe every cycle, and boxing timestamps or converting the whole index cost more.
    index = frame.index
    if isinstance(index, pd.DatetimeIndex):
        return ns_to_datetime(int(index.asi8[-1]) * _NS_PER_UNIT[index.unit])
    return ns_to_datetime(int(pd.Timestamp(index[-1]).value))


def staleness(frame: pd.DataFrame, step: timedelta, at: datetime) -> str | None:
    """Return why `frame` is too old for a decision at `at`, or None when it is fresh.

    Fresh means the newest closed candle closed at most one candle period before `at`: the one
    closing at `at` itself may lag by a few seconds at the exchange, the one before may not be
    missing too.
    """
    if frame.empty:
        return _NO_CANDLE
    return _stale_since(_newest_open(frame), step, at)


_NO_CANDLE: Final = "no closed candle"


def _stale_since(newest_open: datetime, step: timedelta, at: datetime) -> str | None:
    age = at - (newest_open + step)
    if age > step:
        return (
            f"the newest closed candle opened {newest_open:%Y-%m-%d %H:%M} UTC and closed "
            f"{_minutes(age)} before the cycle (more than one {_minutes(step)} period)"
        )
    return None


def _rows_staleness(rows: CandleRows, step: timedelta, at: datetime) -> str | None:
    """Return `staleness` of the frame `rows` stand for, without building it."""
    if rows.end <= rows.start:
        return _NO_CANDLE
    return _stale_since(_open_at(int(rows.table.open_ns[rows.end - 1])), step, at)


# A replay asks for the same few open times, coin after coin and cycle after cycle.
@functools.lru_cache(maxsize=1024)
def _open_at(open_ns: int) -> datetime:
    return ns_to_datetime(open_ns)


def price_gap_pct(price: float, reference: float) -> float:
    """Return how far `price` is from `reference`, in percent of `reference` (inf if unusable)."""
    if not (math.isfinite(price) and math.isfinite(reference)) or reference <= 0 or price <= 0:
        return math.inf
    return abs(price / reference - 1.0) * 100.0


def _minutes(delta: timedelta) -> str:
    minutes = delta.total_seconds() / 60
    if minutes >= 120 and minutes % 60 == 0:
        return f"{minutes / 60:g} h"
    return f"{minutes:g} min"


def snapshot_problems(snapshot: MarketSnapshot, *, max_price_gap_pct: float) -> list[str]:
    """Return why no decision may be taken on `snapshot` (empty when it may).

    Each coin's newest closed candle of both timeframes must be fresh (`staleness`), and its last
    price (the ticker, when the venue gave one) within `max_price_gap_pct` of the newest close.
    """
    problems: list[str] = []
    steps = (
        (snapshot.intraday_timeframe, timeframe_to_timedelta(snapshot.intraday_timeframe)),
        (snapshot.context_timeframe, timeframe_to_timedelta(snapshot.context_timeframe)),
    )
    for coin, data in snapshot.coins.items():
        newest = _newest_checks(data, steps, snapshot.at)
        for (timeframe, _), stale in zip(steps, newest[:2], strict=True):
            if stale is not None:
                problems.append(f"{coin} {timeframe} data is stale: {stale}")
        close = newest[2]
        if close is None:
            continue
        gap_pct = price_gap_pct(data.last_price, close)
        if gap_pct > max_price_gap_pct:
            problems.append(
                f"{coin} ticker {data.last_price:g} and newest {snapshot.intraday_timeframe} close "
                f"{close:g} disagree by {gap_pct:.1f} % (more than {max_price_gap_pct:g} %)"
            )
    return problems


def _newest_checks(
    data: CoinSnapshot, steps: tuple[tuple[str, timedelta], ...], at: datetime
) -> tuple[str | None, str | None, float | None]:
    """Return the staleness of both timeframes and the newest intraday close (None: no candle).

    A replayed snapshot's rows are read as they are, without building their frames: this runs
    every cycle of a backtest.
    """
    (_, intraday_step), (_, context_step) = steps
    if isinstance(data, PrecomputedCoinSnapshot):
        intraday, context = data.intraday_rows, data.context_rows
        close_at = intraday.table.positions.get("close")
        if close_at is not None:
            close = (
                float(intraday.table.values[intraday.end - 1, close_at]) if len(intraday) else None
            )
            return (
                _rows_staleness(intraday, intraday_step, at),
                _rows_staleness(context, context_step, at),
                close,
            )
    frame = data.intraday
    return (
        staleness(frame, intraday_step, at),
        staleness(data.context, context_step, at),
        None if frame.empty else float(frame["close"].to_numpy()[-1]),
    )
