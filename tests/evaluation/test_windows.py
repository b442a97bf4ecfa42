"""Window planning: evenly spaced without overlap, or random starts from a seed; clear refusals."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.errors import ConfigError
from app.evaluation.windows import DataRange, Window, plan_windows, windows_that_fit

FIVE = timedelta(minutes=5)
DAY = timedelta(days=1)
FIRST = datetime(2025, 1, 9, 4, 0, tzinfo=UTC)
# 100 days of 5-minute cycles after the warm-up.
DATA = DataRange(first_at=FIRST, last_at=FIRST + 100 * DAY, step=FIVE)


def assert_apart(windows: tuple[Window, ...]) -> None:
    for before, after in itertools.pairwise(windows):
        assert before.end <= after.start


def test_even_windows_span_the_data_without_overlap() -> None:
    """100 days, 12 windows of 7 days: starts (100 - 7) / 11 = 8.4545 days apart, floored to the
    5-minute grid; the first at the first usable cycle, the last ending at the last one."""
    windows = plan_windows(DATA, days=7, count=12)
    assert [w.index for w in windows] == list(range(12))
    assert windows[0].start == FIRST
    assert windows[-1].end == DATA.last_at
    assert all(w.end - w.start == 7 * DAY for w in windows)
    assert all(w.cycles(FIVE) == 7 * 288 + 1 for w in windows)
    assert_apart(windows)
    gaps = {(b.start - a.start) for a, b in itertools.pairwise(windows)}
    assert max(gaps) - min(gaps) <= FIVE
    step = (93 * 288) / 11
    assert windows[5].start == FIRST + int(5 * step) * FIVE
    assert windows[5].key == f"{windows[5].start:%Y-%m-%dT%H:%M}Z/{windows[5].end:%Y-%m-%dT%H:%M}Z"


def test_windows_that_exactly_fill_the_data_touch_and_one_more_is_refused() -> None:
    """100 days hold 14 windows of 7 days (98 days) but not 15 (105)."""
    assert windows_that_fit(DATA, 7) == 14
    tight = plan_windows(DATA, days=10, count=10)
    assert all(a.end == b.start for a, b in itertools.pairwise(tight))
    with pytest.raises(ConfigError) as refused:
        plan_windows(DATA, days=7, count=15)
    message = str(refused.value)
    assert "15 windows of 7 days" in message
    assert "room for 14" in message
    assert "--seed" in message


def test_no_count_takes_as_many_as_fit_and_one_window_is_the_latest() -> None:
    assert len(plan_windows(DATA, days=7)) == 14
    (only,) = plan_windows(DATA, days=7, count=1)
    assert only.end == DATA.last_at


def test_times_snap_to_the_cycle_grid_and_days_round_to_whole_cycles() -> None:
    """A first usable time of 04:02 starts at 04:05; 0.1 days is 28.8 cycles of 5 minutes, so
    a window of 29 cycles (2 h 25 min)."""
    data = DataRange(FIRST + timedelta(minutes=2), FIRST + 2 * DAY + timedelta(minutes=3), FIVE)
    windows = plan_windows(data, days=0.1, count=3)
    assert windows[0].start == FIRST + FIVE
    assert windows[-1].end == FIRST + 2 * DAY
    assert all(w.end - w.start == 29 * FIVE for w in windows)


def test_random_starts_are_reproducible_distinct_and_inside_the_data() -> None:
    one = plan_windows(DATA, days=30, count=8, seed=7)
    assert one == plan_windows(DATA, days=30, count=8, seed=7)
    assert one != plan_windows(DATA, days=30, count=8, seed=8)
    starts = [w.start for w in one]
    assert starts == sorted(starts) and len(set(starts)) == 8
    assert all(FIRST <= w.start and w.end <= DATA.last_at for w in one)
    assert all((w.start - FIRST) % FIVE == timedelta(0) for w in one)
    # 8 windows of 30 days in 100 days: random starts must overlap somewhere (documented).
    assert any(a.end > b.start for a, b in itertools.pairwise(one))


def test_random_starts_may_overlap_but_need_distinct_starts() -> None:
    small = DataRange(FIRST, FIRST + 10 * FIVE, FIVE)
    assert len(plan_windows(small, days=8 * FIVE / DAY, count=3, seed=1)) == 3
    with pytest.raises(ConfigError, match="need 4 different starts but only 3"):
        plan_windows(small, days=8 * FIVE / DAY, count=4, seed=1)


@pytest.mark.parametrize(
    ("days", "count", "message"),
    [
        (0, 2, "positive number of days"),
        (-1, 2, "positive number of days"),
        (0.001, 2, "shorter than one cycle"),
        (7, 0, "at least 1"),
        (101, 1, "no window of 101 days fits"),
    ],
)
def test_impossible_plans_are_refused_with_the_reason(
    days: float, count: int, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        plan_windows(DATA, days=days, count=count)


@settings(max_examples=200, deadline=None)
@given(
    span_cycles=st.integers(min_value=1, max_value=20_000),
    window_cycles=st.integers(min_value=1, max_value=5_000),
    count=st.integers(min_value=1, max_value=60),
)
def test_even_windows_always_fit_and_never_overlap(
    span_cycles: int, window_cycles: int, count: int
) -> None:
    data = DataRange(FIRST, FIRST + span_cycles * FIVE, FIVE)
    days = window_cycles * FIVE / DAY
    fit = windows_that_fit(data, days)
    if count > fit:
        with pytest.raises(ConfigError):
            plan_windows(data, days=days, count=count)
        return
    windows = plan_windows(data, days=days, count=count)
    assert len(windows) == count
    assert all(w.end - w.start == window_cycles * FIVE for w in windows)
    assert windows[0].start >= FIRST and windows[-1].end == data.last_at
    assert_apart(windows)
