"""Which windows of the data an evaluation replays: pure arithmetic on cycle times.

A window is `days` long and inclusive of both ends, like `arena backtest --start --end`: its
first cycle is at `start`, its last at `end = start + days`, so it holds `days x cycles per day
+ 1` cycles. Every time is on the cycle grid (multiples of the interval since the epoch), the
grid `arena backtest` itself uses, so a window's backtest runs exactly these cycles.

- Evenly spaced (the default): `count` windows that do not overlap, the first at the start of the
  usable data, the last at its end, the gaps between them equal to within one cycle. A window may
  start at the cycle where the previous one ends: their price paths share no interval.
- Random starts (`seed` given): `count` distinct starts drawn uniformly from every cycle where a
  whole window fits. Windows may then overlap; overlapping windows share price moves, so their
  results are not independent and intervals computed over them are too narrow (docs/evaluation.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import numpy as np

from app.domain import ensure_utc
from app.errors import ConfigError

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_DAY: Final = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class DataRange:
    """Where cycles can run: the first and last possible cycle times and the cycle interval.

    `first_at` is the first time with warmed-up indicators (`first_ready_at`), `last_at` the last
    time a decision can still fill (a candle starts there).
    """

    first_at: datetime
    last_at: datetime
    step: timedelta

    def __post_init__(self) -> None:
        if self.step <= timedelta(0):
            raise ConfigError(f"the cycle interval must be positive, got {self.step}")


@dataclass(frozen=True, slots=True)
class Window:
    """One window: its number in the plan and its first and last cycle times (both run)."""

    index: int
    start: datetime
    end: datetime

    @property
    def days(self) -> float:
        """Return the window's length in days."""
        return (self.end - self.start) / _DAY

    @property
    def key(self) -> str:
        """Return a stable name for the window (what a plan records to resume)."""
        return f"{self.start:%Y-%m-%dT%H:%M}Z/{self.end:%Y-%m-%dT%H:%M}Z"

    def cycles(self, step: timedelta) -> int:
        """Return how many cycles of `step` the window runs."""
        return int((self.end - self.start) / step) + 1


def _grid_index(moment: datetime, step: timedelta, *, up: bool) -> int:
    buckets = (ensure_utc(moment) - _EPOCH) / step
    return math.ceil(buckets) if up else math.floor(buckets)


def window_steps(days: float, step: timedelta) -> int:
    """Return a window of `days` in cycles of `step` (rounded to the nearest whole cycle)."""
    if not math.isfinite(days) or days <= 0:
        raise ConfigError(f"--window-days must be a positive number of days, got {days:g}")
    steps = round(days * _DAY / step)
    if steps < 1:
        raise ConfigError(
            f"a window of {days:g} days is shorter than one cycle ({step}): give more days"
        )
    return steps


def windows_that_fit(data: DataRange, days: float) -> int:
    """Return how many non-overlapping windows of `days` fit in the usable data."""
    first = _grid_index(data.first_at, data.step, up=True)
    last = _grid_index(data.last_at, data.step, up=False)
    span = last - first
    steps = window_steps(days, data.step)
    return span // steps if span >= steps else 0


def plan_windows(
    data: DataRange, *, days: float, count: int | None = None, seed: int | None = None
) -> tuple[Window, ...]:
    """Return the windows to replay, in time order (numbered from 0).

    `count` None takes as many non-overlapping windows as fit. With `seed`, starts are random
    (reproducible from the seed) and may overlap. Raise `ConfigError` when they do not fit.
    """
    if count is not None and count < 1:
        raise ConfigError(f"--windows must be at least 1, got {count}")
    step = data.step
    first = _grid_index(data.first_at, step, up=True)
    last = _grid_index(data.last_at, step, up=False)
    span = last - first
    steps = window_steps(days, step)
    usable = (
        f"the usable data runs from {data.first_at:%Y-%m-%d %H:%M} to "
        f"{data.last_at:%Y-%m-%d %H:%M} UTC ({max(span, 0) * step / _DAY:.1f} days after the "
        "indicators' warm-up)"
    )
    if span < steps:
        raise ConfigError(
            f"no window of {days:g} days fits: {usable}; give shorter --window-days or more data"
        )
    fit = span // steps
    wanted = fit if count is None else count
    if seed is None:
        if wanted > fit:
            raise ConfigError(
                f"{wanted} windows of {days:g} days do not fit without overlapping: {usable}, "
                f"room for {fit}; ask for --windows {fit} or fewer, shorter --window-days, or "
                "random starts that may overlap with --seed S"
            )
        starts = _even_starts(first, span, steps, wanted)
    else:
        positions = span - steps + 1
        if wanted > positions:
            raise ConfigError(
                f"{wanted} windows of {days:g} days need {wanted} different starts but only "
                f"{positions} cycles can start one: {usable}"
            )
        rng = np.random.default_rng(seed)
        offsets = rng.choice(positions, size=wanted, replace=False)
        starts = sorted(first + int(offset) for offset in offsets)
    return tuple(
        Window(index=i, start=_EPOCH + start * step, end=_EPOCH + (start + steps) * step)
        for i, start in enumerate(starts)
    )


def _even_starts(first: int, span: int, steps: int, count: int) -> list[int]:
    """Spread `count` starts from `first` to `first + span - steps`, gaps equal within a cycle.

    The gap between starts is (span - steps) / (count - 1) >= steps whenever count windows fit,
    and floor((i + 1) x) - floor(i x) >= floor(x), so no two windows overlap. One window is the
    most recent one, like `arena backtest --window-days`.
    """
    room = span - steps
    if count == 1:
        return [first + room]
    return [first + (i * room) // (count - 1) for i in range(count)]
