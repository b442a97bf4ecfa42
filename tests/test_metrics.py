"""Performance metrics: hand-worked figures and the edge cases that must not give NaN."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from app.domain import ClosedTrade, Position
from app.metrics import (
    NO_MINIMUM,
    SHARPE_MINIMUM,
    RunningSharpe,
    SampleMinimum,
    compute_metrics,
    exposure_pct,
    max_drawdown_pct,
    periods_per_year,
    sharpe_note,
    sharpe_ratio,
    sortino_ratio,
)

T0 = datetime(2025, 10, 18, tzinfo=UTC)
HOUR = timedelta(hours=1)


def series(values: list[float], step: timedelta = HOUR) -> pd.Series:
    return pd.Series(values, index=pd.DatetimeIndex([T0 + i * step for i in range(len(values))]))


def trade(net: float, opened: timedelta, held: timedelta, funding: float = 0.0) -> ClosedTrade:
    """A trade with 1 USD fee each way, so gross = net + 2 + funding."""
    return ClosedTrade(
        coin="BTC",
        side="long",
        quantity=1.0,
        leverage=10,
        entry_price=100.0,
        exit_price=100.0,
        opened_at=T0 + opened,
        closed_at=T0 + opened + held,
        entry_fee_usd=1.0,
        exit_fee_usd=1.0,
        funding_usd=funding,
        gross_pnl_usd=net + 2.0 + funding,
        net_pnl_usd=net,
        exit_reason="close_position",
    )


EQUITY = series([100.0, 110.0, 99.0, 108.9])
TRADES = [
    trade(30.0, timedelta(0), HOUR, funding=0.5),
    trade(-10.0, timedelta(minutes=30), timedelta(minutes=30), funding=-0.2),
    trade(20.0, 2 * HOUR, 2 * HOUR, funding=0.1),
]


def test_compute_metrics_on_a_worked_example() -> None:
    """Hourly values 100, 110, 99, 108.9: returns +10%, -10%, +10%; mean 1/30, sample std
    sqrt(((1/15)^2 x 2 + (2/15)^2) / 2) = 0.1154701; periods a year 8,760, sqrt 93.59487.
    Sharpe = 0.0333333 / 0.1154701 x 93.59487 = 27.01851. Downside deviation sqrt(0.01 / 3) =
    0.0577350, Sortino = 54.03703. Drawdown 110 -> 99 = 10%. Return 8.9%.
    Trades: net +30, -10, +20: win rate 2/3, profit factor 50 / 10 = 5, expectancy 40 / 3.
    Held 1 h, 30 min, 2 h: average 70 min. Open [0, 1 h] and [0:30, 1 h] and [2 h, 4 h] cut at
    the 3 h end: 2 h of 3 h = 66.67% exposure. 3 trades in 0.125 day = 24 a day. Fees 6 USD,
    funding 0.5 - 0.2 + 0.1 = 0.4 USD. (Three returns are far below the minimum sample the
    ratios are shown from: the definition is checked here without it.)
    """
    m = compute_metrics(EQUITY, TRADES, minimum=NO_MINIMUM)

    assert m.total_return_pct == pytest.approx(8.9)
    assert m.periods_per_year == pytest.approx(8760.0)
    assert m.sharpe == pytest.approx(27.01851, rel=1e-6)
    assert m.sortino == pytest.approx(54.03703, rel=1e-6)
    assert m.max_drawdown_pct == pytest.approx(10.0)
    assert (m.trades, m.wins, m.losses) == (3, 2, 1)
    assert m.win_rate_pct == pytest.approx(200 / 3)
    assert m.profit_factor == pytest.approx(5.0)
    assert m.expectancy_usd == pytest.approx(40 / 3)
    assert m.avg_holding_time == timedelta(minutes=70)
    assert m.exposure_pct == pytest.approx(200 / 3)
    assert m.trades_per_day == pytest.approx(24.0)
    assert m.fees_paid_usd == pytest.approx(6.0)
    assert m.funding_paid_usd == pytest.approx(0.4)
    assert (m.start_at, m.end_at) == (T0, T0 + 3 * HOUR)
    assert (m.start_equity_usd, m.final_equity_usd) == (100.0, 108.9)


def test_compute_metrics_counts_open_positions_and_account_totals() -> None:
    """A position open since 2:30 adds 30 min of exposure before the 3 h end (2.5 h of 3 h) and
    its 1.5 USD entry fee; explicit account totals replace the sums."""
    position = Position(
        coin="ETH",
        side="short",
        quantity=1.0,
        entry_price=2000.0,
        leverage=5,
        margin_usd=400.0,
        liquidation_price=2390.0,
        opened_at=T0 + timedelta(hours=1, minutes=30),
        entry_fee_usd=1.5,
        funding_usd=0.25,
    )

    m = compute_metrics(EQUITY, TRADES, open_positions=[position])
    given = compute_metrics(
        EQUITY, TRADES, open_positions=[position], fees_paid_usd=9.0, funding_paid_usd=-1.0
    )

    assert m.exposure_pct == pytest.approx(2.5 / 3 * 100)
    assert m.fees_paid_usd == pytest.approx(7.5)
    assert m.funding_paid_usd == pytest.approx(0.65)
    assert (given.fees_paid_usd, given.funding_paid_usd) == (9.0, -1.0)


def test_total_return_is_measured_from_the_starting_cash_when_given() -> None:
    """108.9 against a start of 90: (108.9 / 90 - 1) x 100 = 21%."""
    assert compute_metrics(EQUITY, [], starting_cash_usd=90.0).total_return_pct == pytest.approx(
        21.0
    )


@pytest.mark.parametrize(
    ("step", "expected"),
    [(timedelta(minutes=3), 175_200.0), (HOUR, 8_760.0), (timedelta(days=1), 365.0)],
)
def test_periods_per_year_follow_the_series_spacing(step: timedelta, expected: float) -> None:
    """365 days of 3-minute cycles: 365 x 480 = 175,200; of hours 8,760; of days 365."""
    assert periods_per_year(series([1.0, 2.0, 3.0], step).index) == pytest.approx(expected)


def test_periods_per_year_use_the_median_spacing() -> None:
    """Spacings 3, 3, 3 and 9 min (one skipped cycle): the median, 3 min, sets the cadence."""
    index = pd.DatetimeIndex([T0 + timedelta(minutes=m) for m in (0, 3, 6, 9, 18)])

    assert periods_per_year(index) == pytest.approx(175_200.0)


def test_metrics_of_an_empty_series_are_none_and_zero() -> None:
    m = compute_metrics(pd.Series([], dtype=float, index=pd.DatetimeIndex([], tz=UTC)), [])

    assert m.trades == 0 and m.fees_paid_usd == 0.0 and m.funding_paid_usd == 0.0
    for name in (
        "start_at",
        "total_return_pct",
        "sharpe",
        "sortino",
        "max_drawdown_pct",
        "periods_per_year",
        "win_rate_pct",
        "profit_factor",
        "expectancy_usd",
        "exposure_pct",
        "avg_holding_time",
        "trades_per_day",
    ):
        assert getattr(m, name) is None, name


def test_metrics_of_one_point_have_no_ratios() -> None:
    m = compute_metrics(series([100.0]), [])

    assert m.total_return_pct == 0.0
    assert m.max_drawdown_pct == 0.0
    assert (m.sharpe, m.sortino, m.periods_per_year) == (None, None, None)
    assert (m.exposure_pct, m.trades_per_day) == (None, None)


def test_metrics_of_a_flat_series_have_no_sharpe() -> None:
    flat = series([100.0, 100.0, 100.0, 100.0])

    assert sharpe_ratio(flat, minimum=NO_MINIMUM) is None
    assert sortino_ratio(flat, minimum=NO_MINIMUM) is None
    assert max_drawdown_pct(flat) == 0.0
    assert compute_metrics(flat, []).total_return_pct == 0.0


def test_sortino_without_a_losing_period_is_none() -> None:
    """Returns +10%, +10%: no downside, so the ratio is undefined (not infinity)."""
    rising = series([100.0, 110.0, 121.0])

    assert sortino_ratio(rising, minimum=NO_MINIMUM) is None
    assert sharpe_ratio(rising, minimum=NO_MINIMUM) is None  # no spread either
    assert sharpe_ratio(series([100.0, 110.0, 120.0]), minimum=NO_MINIMUM) is not None


def test_profit_factor_without_losses_is_none_and_without_wins_is_zero() -> None:
    wins_only = [trade(5.0, timedelta(0), HOUR)]
    losses_only = [trade(-5.0, timedelta(0), HOUR)]

    assert compute_metrics(EQUITY, wins_only).profit_factor is None
    assert compute_metrics(EQUITY, losses_only).profit_factor == 0.0
    assert compute_metrics(EQUITY, losses_only).win_rate_pct == 0.0


def test_ratios_skip_missing_values_and_refuse_a_wiped_out_account() -> None:
    """NaN points are dropped; a zero account value has no defined return after it."""
    with_gap = series([100.0, math.nan, 110.0, 99.0, 108.9])
    wiped = series([100.0, 50.0, 0.0, 10.0])

    assert sharpe_ratio(with_gap, minimum=NO_MINIMUM) is not None
    assert max_drawdown_pct(with_gap) == pytest.approx(10.0)
    assert sharpe_ratio(wiped, minimum=NO_MINIMUM) is None
    assert max_drawdown_pct(wiped) == pytest.approx(100.0)


def test_exposure_merges_overlapping_positions() -> None:
    """[0, 2 h] and [1 h, 3 h] overlap: 3 h covered out of 4 h = 75%."""
    trades = [trade(1.0, timedelta(0), 2 * HOUR), trade(1.0, HOUR, 2 * HOUR)]

    assert exposure_pct(trades, [], start_at=T0, end_at=T0 + 4 * HOUR) == pytest.approx(75.0)


def test_metrics_need_a_time_index() -> None:
    with pytest.raises(ValueError, match="DatetimeIndex"):
        compute_metrics(pd.Series([1.0, 2.0]), [])


def running(
    values: list[float], step: timedelta = HOUR, *, minimum: SampleMinimum = SHARPE_MINIMUM
) -> float | None:
    sharpe = RunningSharpe(step, minimum=minimum)
    for value in values:
        sharpe.add(value)
    return sharpe.value()


def walk(length: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(10_000.0 * np.cumprod(1.0 + rng.normal(0.0001, 0.004, length)))


@pytest.mark.parametrize("seed", range(20))
def test_the_running_sharpe_equals_sharpe_ratio_on_random_series(seed: int) -> None:
    """The prompt's Sharpe (updated per cycle) and the leaderboard's (from the series) agree."""
    rng = np.random.default_rng(seed)
    length = int(rng.integers(3, 400))
    values = walk(length, seed)
    step = timedelta(minutes=int(rng.choice([1, 3, 5, 60])))
    expected = sharpe_ratio(series(values, step), minimum=NO_MINIMUM)
    assert expected is not None
    assert running(values, step, minimum=NO_MINIMUM) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("seed", range(12))
def test_the_running_sharpe_and_sharpe_ratio_apply_the_same_minimum(seed: int) -> None:
    """Series covering 3 to 14 days at the daemon's and backtests' cadences: below 7 days both
    give None, above it both give the same number."""
    rng = np.random.default_rng(seed)
    step = timedelta(minutes=int(rng.choice([3, 5, 60])))
    covered = timedelta(days=float(rng.uniform(3.0, 14.0)))
    returns = int(covered / step)
    values = walk(returns + 1, seed)

    expected = sharpe_ratio(series(values, step))

    assert (expected is None) == (returns < 30 or returns * step < timedelta(days=7))
    if expected is None:
        assert running(values, step) is None
    else:
        assert running(values, step) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("returns", "step", "shown", "note"),
    [
        # Hourly: 168 returns cover 7 days; 167 cover 6.96.
        (168, HOUR, True, None),
        (167, HOUR, False, "needs 7 days of returns, has 6.96 days"),
        # Daily: 29 returns cover 29 days but are too few; 30 are enough.
        (29, timedelta(days=1), False, "needs 30 returns, has 29"),
        (30, timedelta(days=1), True, None),
        # The figures: 5 live cycles of 3 minutes, a 6-hour backtest at 5 minutes.
        (5, timedelta(minutes=3), False, "needs 7 days of returns, has 15 minutes"),
        (72, timedelta(minutes=5), False, "needs 7 days of returns, has 6 hours"),
    ],
)
def test_the_sharpe_ratio_needs_thirty_returns_covering_seven_days(
    returns: int, step: timedelta, shown: bool, note: str | None
) -> None:
    values = walk(returns + 1, seed=returns)

    m = compute_metrics(series(values, step), [])

    assert (m.sharpe is not None) == shown and (m.sortino is not None) == shown
    assert m.sharpe_note == note
    assert (running(values, step) is not None) == shown


def test_above_the_minimum_the_sharpe_ratio_is_annualised_as_without_it() -> None:
    """17 days of 5-minute returns (Season 1's length): the minimum changes nothing."""
    values = walk(17 * 288 + 1, seed=1)
    equity = series(values, timedelta(minutes=5))

    assert sharpe_ratio(equity) == sharpe_ratio(equity, minimum=NO_MINIMUM) is not None
    assert sharpe_note(equity) is None


@pytest.mark.parametrize(
    ("values", "note"),
    [
        ([], "no cycle yet"),
        ([10_000.0] * 200, "the account value did not move"),
        ([10_000.0, 10_100.0, 0.0] + [10_000.0] * 200, "the account value reached zero"),
    ],
)
def test_the_sharpe_note_says_why_there_is_no_ratio(values: list[float], note: str) -> None:
    equity = series(values) if values else pd.Series([], dtype=float)

    assert sharpe_ratio(equity) is None
    assert sharpe_note(equity) == note


@pytest.mark.parametrize(
    "values",
    [
        [],
        [10_000.0],
        [10_000.0, 10_100.0],
        [10_000.0, 10_000.0, 10_000.0, 10_000.0],
        [10_000.0, 10_100.0, 0.0, 10_200.0],
        [10_000.0, -5.0, 10_100.0, 10_050.0],
    ],
    ids=["empty", "one value", "one return", "no spread", "zero value", "negative value"],
)
def test_the_running_sharpe_has_the_same_edge_cases_as_sharpe_ratio(values: list[float]) -> None:
    assert sharpe_ratio(series(values), minimum=NO_MINIMUM) is None
    assert running(values, minimum=NO_MINIMUM) is None
