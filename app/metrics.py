"""Performance metrics from an account-value series and closed trades.

Conventions (docs/simulation.md has the details):

- Returns are simple per-period returns of the account-value series; the risk-free rate is 0.
- Annualisation: periods per year = 365 days / the median spacing of the series (crypto trades
  every day), so a 3-minute series has 175,200 periods a year and an hourly one 8,760.
- Sharpe = mean / sample standard deviation (ddof 1) x sqrt(periods per year). Sortino = mean /
  downside deviation x sqrt(periods per year), the downside deviation being
  sqrt(mean(min(r, 0)^2)) over every period.
- Percentages are in percent (12.5 means 12.5%); the max drawdown is a positive number.
- A ratio needs a minimum sample (`SHARPE_MINIMUM`: 30 returns covering 7 days, counted as
  returns x the median spacing): below it the estimate is noise (docs/simulation.md says why), so
  the ratio is None and `sharpe_note` says what is missing. The prompt's running Sharpe
  (`RunningSharpe`) follows the same rule.
- Edge cases return None, never NaN or infinity: a ratio needs two returns and a spread (a flat
  series has no Sharpe), a profit factor needs a losing trade, per-trade figures need a trade,
  per-time figures need a series spanning some time. Counts and totals are 0 when empty.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import numpy as np
import pandas as pd

from app.domain import ClosedTrade, Position, ensure_utc

DAYS_PER_YEAR: Final = 365.0
_SECONDS_PER_YEAR: Final = DAYS_PER_YEAR * 86_400.0
_NOISE: Final = 1e-9


@dataclass(frozen=True, slots=True)
class SampleMinimum:
    """The least sample a Sharpe or Sortino ratio is computed from.

    `span` is measured as the number of returns times their (median) spacing, the time the
    returns cover: the annualised ratio's standard error is about 1 / sqrt(that span in years).
    """

    returns: int
    span: timedelta

    def shortfall(self, returns: int, spacing_s: float) -> str | None:
        """Return what a sample of `returns` returns `spacing_s` apart lacks, or None if enough."""
        covered = timedelta(seconds=returns * spacing_s)
        if returns >= self.returns and covered >= self.span:
            return None
        if covered < self.span:
            return f"needs {_duration(self.span)} of returns, has {_duration(covered)}"
        return f"needs {self.returns} returns, has {returns}"


# 30 returns: below that the sample standard deviation itself is unreliable (its relative error,
# 1/sqrt(2(n-1)), passes 13%). 7 days: the annualised ratio's standard error, about
# 1/sqrt(years covered), is ±19 after a day and ±7 after a week (±187 after 15 minutes of
# 3-minute cycles), and a week holds every weekday once. Reasons in docs/simulation.md.
SHARPE_MINIMUM: Final = SampleMinimum(returns=30, span=timedelta(days=7))
# No minimum beyond the two returns a standard deviation needs (hand-worked checks, research).
NO_MINIMUM: Final = SampleMinimum(returns=2, span=timedelta(0))


@dataclass(frozen=True, slots=True)
class PerformanceMetrics:
    """One agent's results over an account-value series (see the module docstring for units)."""

    start_at: datetime | None
    end_at: datetime | None
    start_equity_usd: float | None
    final_equity_usd: float | None
    total_return_pct: float | None
    sharpe: float | None
    sortino: float | None
    max_drawdown_pct: float | None
    periods_per_year: float | None
    trades: int
    wins: int
    losses: int
    win_rate_pct: float | None
    profit_factor: float | None
    expectancy_usd: float | None
    exposure_pct: float | None
    fees_paid_usd: float
    funding_paid_usd: float
    avg_holding_time: timedelta | None
    trades_per_day: float | None
    # Why `sharpe` is None ("needs 7 days of returns, has 6 hours: ..."); None when it is a number.
    sharpe_note: str | None = None


def periods_per_year(index: pd.DatetimeIndex) -> float | None:
    """Return how many periods of the index's median spacing fit in a year, or None."""
    if len(index) < 2:
        return None
    spacing_ns = np.diff(index.sort_values().as_unit("ns").asi8)
    median_s = float(np.median(spacing_ns)) / 1e9
    if median_s <= 0:
        return None
    return _SECONDS_PER_YEAR / median_s


def sharpe_ratio(equity: pd.Series, *, minimum: SampleMinimum = SHARPE_MINIMUM) -> float | None:
    """Return the annualised Sharpe ratio of the series (risk-free rate 0), or None.

    None below `minimum` and in the edge cases of the module docstring; `sharpe_note` says why.
    """
    returns, per_year = _returns_and_periods(equity)
    if returns is None or per_year is None or len(returns) < 2:
        return None
    if minimum.shortfall(len(returns), _SECONDS_PER_YEAR / per_year) is not None:
        return None
    mean = float(np.mean(returns))
    spread = float(np.std(returns, ddof=1))
    # Returns equal up to float noise have no spread: no ratio rather than an absurd one.
    if not spread > _NOISE * abs(mean):
        return None
    return _finite(mean / spread * math.sqrt(per_year))


def sharpe_note(equity: pd.Series, *, minimum: SampleMinimum = SHARPE_MINIMUM) -> str | None:
    """Return why `sharpe_ratio(equity)` is None, in a few words, or None when it is a number."""
    clean = _clean(equity)
    if clean.empty:
        return "no cycle yet"
    if (clean <= 0).any():
        return "the account value reached zero"
    returns, per_year = _returns_and_periods(clean)
    if returns is None or per_year is None or len(returns) < 2:
        return f"needs {minimum.returns} returns, has {0 if returns is None else len(returns)}"
    shortfall = minimum.shortfall(len(returns), _SECONDS_PER_YEAR / per_year)
    if shortfall is not None:
        return shortfall
    if sharpe_ratio(clean, minimum=minimum) is None:
        return "the account value did not move"
    return None


class RunningSharpe:
    """`sharpe_ratio` of an evenly spaced account-value series, updated in O(1) per value.

    The prompt shows each agent its Sharpe ratio every cycle; recomputing it from the whole series
    would cost a long run more each cycle. The definition and the edge cases are `sharpe_ratio`'s
    (a test checks them against each other on random series): simple returns, sample standard
    deviation, annualised by the periods of `interval` in a year, risk-free rate 0; None below
    `minimum` (returns x `interval` is the span), without spread, or once a value was zero or
    negative.
    """

    def __init__(self, interval: timedelta, *, minimum: SampleMinimum = SHARPE_MINIMUM) -> None:
        self.periods_per_year = _SECONDS_PER_YEAR / interval.total_seconds()
        self._spacing_s = interval.total_seconds()
        self._minimum = minimum
        self._last: float | None = None
        self._count = 0
        self._mean = 0.0
        self._m2 = 0.0
        self._broken = False

    def add(self, equity_usd: float) -> None:
        """Record the account value at the end of one more period (a non-finite one is skipped)."""
        if not math.isfinite(equity_usd):
            return
        if equity_usd <= 0:
            self._broken = True
        if self._last is not None and not self._broken:
            change = equity_usd / self._last - 1.0
            self._count += 1
            delta = change - self._mean
            self._mean += delta / self._count
            self._m2 += delta * (change - self._mean)
        self._last = equity_usd

    def value(self) -> float | None:
        """Return the annualised Sharpe ratio so far, or None (see the class docstring)."""
        if self._broken or self._count < 2:
            return None
        if self._minimum.shortfall(self._count, self._spacing_s) is not None:
            return None
        spread = math.sqrt(max(self._m2, 0.0) / (self._count - 1))
        if not spread > _NOISE * abs(self._mean):
            return None
        return _finite(self._mean / spread * math.sqrt(self.periods_per_year))


def sortino_ratio(equity: pd.Series, *, minimum: SampleMinimum = SHARPE_MINIMUM) -> float | None:
    """Return the annualised Sortino ratio of the series (target 0), or None (as Sharpe's)."""
    returns, per_year = _returns_and_periods(equity)
    if returns is None or per_year is None or len(returns) < 2:
        return None
    if minimum.shortfall(len(returns), _SECONDS_PER_YEAR / per_year) is not None:
        return None
    downside = float(np.sqrt(np.mean(np.minimum(returns, 0.0) ** 2)))
    if not downside > 0:
        return None
    return _finite(float(np.mean(returns)) / downside * math.sqrt(per_year))


def max_drawdown_pct(equity: pd.Series) -> float | None:
    """Return the largest fall from a running peak, in percent of that peak (>= 0), or None."""
    values = _clean(equity).to_numpy(dtype=np.float64)
    if len(values) == 0:
        return None
    peaks = np.maximum.accumulate(values)
    with np.errstate(divide="ignore", invalid="ignore"):
        drawdowns = np.where(peaks > 0, 1.0 - values / peaks, 0.0)
    return _finite(float(np.max(drawdowns)) * 100.0)


def exposure_pct(
    trades: Iterable[ClosedTrade],
    open_positions: Iterable[Position],
    *,
    start_at: datetime,
    end_at: datetime,
) -> float | None:
    """Return the share of [start_at, end_at] with at least one position open, in percent."""
    start_at, end_at = ensure_utc(start_at), ensure_utc(end_at)
    span = (end_at - start_at).total_seconds()
    if span <= 0:
        return None
    intervals = [(ensure_utc(t.opened_at), ensure_utc(t.closed_at)) for t in trades]
    intervals += [(ensure_utc(p.opened_at), end_at) for p in open_positions]
    clipped = sorted(
        (max(a, start_at), min(b, end_at)) for a, b in intervals if b > start_at and a < end_at
    )
    covered = 0.0
    current_start: datetime | None = None
    current_end: datetime | None = None
    for a, b in clipped:
        if current_end is None or current_start is None or a > current_end:
            if current_end is not None and current_start is not None:
                covered += (current_end - current_start).total_seconds()
            current_start, current_end = a, b
        else:
            current_end = max(current_end, b)
    if current_end is not None and current_start is not None:
        covered += (current_end - current_start).total_seconds()
    return covered / span * 100.0


def compute_metrics(
    equity: pd.Series,
    trades: Sequence[ClosedTrade],
    *,
    starting_cash_usd: float | None = None,
    open_positions: Sequence[Position] = (),
    fees_paid_usd: float | None = None,
    funding_paid_usd: float | None = None,
    minimum: SampleMinimum = SHARPE_MINIMUM,
) -> PerformanceMetrics:
    """Compute every metric from the account-value series and the closed trades.

    `equity` is indexed by UTC time. The total return is measured from `starting_cash_usd` when
    given (the account's start), else from the series' first value. Fees and funding default to
    the sums over the trades plus the open positions' entry fees and funding; pass the account's
    totals to use those instead. The Sharpe and Sortino ratios need `minimum`.
    """
    clean = _clean(equity)
    start_at = _to_datetime(clean.index[0]) if len(clean) else None
    end_at = _to_datetime(clean.index[-1]) if len(clean) else None
    first = float(clean.iloc[0]) if len(clean) else None
    final = float(clean.iloc[-1]) if len(clean) else None
    base = starting_cash_usd if starting_cash_usd is not None else first
    total_return = (
        (final / base - 1.0) * 100.0
        if final is not None and base is not None and base > 0
        else None
    )

    net = [t.net_pnl_usd for t in trades]
    wins = [x for x in net if x > 0]
    losses = [x for x in net if x < 0]
    count = len(net)
    span_days = (end_at - start_at).total_seconds() / 86_400.0 if start_at and end_at else 0.0

    exposure = (
        exposure_pct(trades, open_positions, start_at=start_at, end_at=end_at)
        if start_at is not None and end_at is not None
        else None
    )
    fees = (
        fees_paid_usd
        if fees_paid_usd is not None
        else sum(t.entry_fee_usd + t.exit_fee_usd for t in trades)
        + sum(p.entry_fee_usd for p in open_positions)
    )
    funding = (
        funding_paid_usd
        if funding_paid_usd is not None
        else sum(t.funding_usd for t in trades) + sum(p.funding_usd for p in open_positions)
    )
    holding = [t.holding_time for t in trades]
    return PerformanceMetrics(
        start_at=start_at,
        end_at=end_at,
        start_equity_usd=first,
        final_equity_usd=final,
        total_return_pct=_finite(total_return),
        sharpe=sharpe_ratio(clean, minimum=minimum),
        sortino=sortino_ratio(clean, minimum=minimum),
        max_drawdown_pct=max_drawdown_pct(clean),
        periods_per_year=periods_per_year(pd.DatetimeIndex(clean.index)),
        trades=count,
        wins=len(wins),
        losses=len(losses),
        win_rate_pct=len(wins) / count * 100.0 if count else None,
        profit_factor=sum(wins) / -sum(losses) if losses else None,
        expectancy_usd=sum(net) / count if count else None,
        exposure_pct=exposure,
        fees_paid_usd=fees,
        funding_paid_usd=funding,
        avg_holding_time=sum(holding, timedelta()) / count if count else None,
        trades_per_day=count / span_days if span_days > 0 else None,
        sharpe_note=sharpe_note(clean, minimum=minimum),
    )


def _clean(equity: pd.Series) -> pd.Series:
    if equity.empty:
        # No point at all (an agent before its first cycle): nothing to index, nothing to compute.
        return pd.Series([], index=pd.DatetimeIndex([], tz="UTC"), dtype=np.float64)
    if not isinstance(equity.index, pd.DatetimeIndex):
        raise ValueError("the account-value series must be indexed by UTC time (DatetimeIndex)")
    clean = equity.astype(np.float64)
    clean = clean[np.isfinite(clean.to_numpy())]
    return clean.sort_index()


def _returns_and_periods(equity: pd.Series) -> tuple[np.ndarray | None, float | None]:
    clean = _clean(equity)
    if (clean <= 0).any():
        # A return from a zero or negative account value is meaningless.
        return None, None
    returns = clean.pct_change().iloc[1:].to_numpy(dtype=np.float64)
    return returns, periods_per_year(pd.DatetimeIndex(clean.index))


def _duration(span: timedelta) -> str:
    """Return a span in the largest unit that keeps it readable: 7 days, 6.0 hours, 15 minutes."""
    seconds = span.total_seconds()
    units = (("day", 86_400.0), ("hour", 3_600.0))
    unit, unit_s = next(((u, size) for u, size in units if seconds >= size), ("minute", 60.0))
    amount = seconds / unit_s
    return f"{amount:.3g} {unit}{'' if amount == 1 else 's'}"


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _to_datetime(moment: pd.Timestamp) -> datetime:
    stamp = pd.Timestamp(moment)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime()
