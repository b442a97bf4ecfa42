"""Statistics over windows: bootstrap intervals, a binomial interval, paired differences.

Pure numpy (and the standard library's `NormalDist`). docs/evaluation.md explains the choices:

- Intervals on a mean or a median over windows are **expanded percentile bootstrap** intervals
  (Hesterberg 2015): the percentile interval of 10,000 resamples, taken at the level
  `alpha'` with `z(alpha'/2) = sqrt(n / (n - 1)) x t(alpha/2, n - 1)`. The plain percentile
  interval is too narrow with few windows (about 91% instead of 95% at n = 12, on normal data);
  the expansion gives it the width of Student's t-interval while keeping the bootstrap's shape.
- Every bootstrap is seeded: the same values and the same seed give the same interval, and the
  same seed with the same number of windows resamples the same windows for every statistic, so
  the intervals of one report come from one joint resampling.
- A fraction of windows (e.g. "beats buy-and-hold") gets a Wilson score interval.
- A paired difference (A minus B on the same windows) is one sample of differences; A and B are
  "indistinguishable" when the interval on the mean difference covers 0 (or there is none).
- Missing values (None, NaN: a Sharpe ratio of a flat account, a win rate without trades) are
  left out and counted.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Final, Literal

import numpy as np

CONFIDENCE: Final = 0.95
RESAMPLES: Final = 10_000
# With fewer windows no interval is given: a bootstrap interval cannot reach beyond the range of
# the values, and on normal data the "95%" interval covers the mean 76% of the time with 3
# windows, 87% with 4 (docs/evaluation.md has the measured coverage).
MIN_WINDOWS_FOR_INTERVAL: Final = 5
# From 5 to 7 windows the interval covers about 92-94% instead of 95%: said in a note.
FEW_WINDOWS: Final = 8

Statistic = Literal["mean", "median"]
_NORMAL: Final = NormalDist()


@dataclass(frozen=True, slots=True)
class Interval:
    """A confidence interval [low, high]."""

    low: float
    high: float

    def covers(self, value: float) -> bool:
        """Return True when `value` lies in the interval (ends included)."""
        return self.low <= value <= self.high

    def as_list(self) -> list[float]:
        """Return [low, high]."""
        return [self.low, self.high]


@dataclass(frozen=True, slots=True)
class Estimate:
    """Mean and median of one figure over windows, each with its interval.

    `n` windows had a value, `missing` had none. Intervals are None below
    `MIN_WINDOWS_FOR_INTERVAL` windows; `note` then says why, or warns when there are few.
    """

    n: int
    missing: int
    mean: float | None
    mean_ci: Interval | None
    median: float | None
    median_ci: Interval | None
    std: float | None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Proportion:
    """How many of `n` windows had some property, with a Wilson interval on the fraction."""

    successes: int
    n: int
    fraction: float | None
    ci: Interval | None


@dataclass(frozen=True, slots=True)
class PairedDifference:
    """A minus B over the windows where both have a value.

    `a_better` counts the windows where A's value is higher. `indistinguishable` is True when the
    interval on the mean difference covers 0, or when there is no interval.
    """

    n: int
    missing: int
    mean: float | None
    ci: Interval | None
    median: float | None
    a_better: int
    indistinguishable: bool
    note: str | None = None


# -- distributions --------------------------------------------------------------------------


def normal_quantile(p: float) -> float:
    """Return the standard normal quantile of `p` in (0, 1)."""
    return _NORMAL.inv_cdf(p)


def t_cdf(x: float, df: int) -> float:
    """Return Student's t distribution function with integer `df` >= 1 at `x`.

    Closed forms for integer degrees of freedom (Abramowitz and Stegun 26.7.3 and 26.7.4): a
    finite series in powers of cos(theta), theta = atan(x / sqrt(df)).
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    if math.isinf(x):
        return 1.0 if x > 0 else 0.0
    theta = math.atan(abs(x) / math.sqrt(df))
    sin_t, cos_t = math.sin(theta), math.cos(theta)
    cos2 = cos_t * cos_t
    if df % 2 == 1:
        series, term = 0.0, cos_t
        if df > 1:
            series = term
            for k in range(2, df - 1, 2):
                term *= cos2 * k / (k + 1)
                series += term
        central = 2.0 / math.pi * (theta + sin_t * series)
    else:
        series, term = 1.0, 1.0
        for k in range(1, df - 2, 2):
            term *= cos2 * k / (k + 1)
            series += term
        central = sin_t * series
    central = min(1.0, max(0.0, central))
    return 0.5 + 0.5 * central if x >= 0 else 0.5 - 0.5 * central


def t_quantile(p: float, df: int) -> float:
    """Return the quantile of Student's t with integer `df` at `p` in (0, 1) (bisection)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"a quantile needs 0 < p < 1, got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    high = 1.0
    while t_cdf(high, df) < p:
        high *= 2.0
    low = 0.0
    for _ in range(200):
        middle = 0.5 * (low + high)
        if t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
        if high - low <= 1e-12 * max(1.0, high):
            break
    return 0.5 * (low + high)


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval | None:
    """Return Student's t-interval on the mean (the closed form, for normal data)."""
    sample = np.asarray(values, dtype=np.float64)
    n = sample.size
    if n < 2:
        return None
    half = t_quantile(0.5 + confidence / 2, n - 1) * float(sample.std(ddof=1)) / math.sqrt(n)
    mean = float(sample.mean())
    return Interval(mean - half, mean + half)


# -- the bootstrap --------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def expanded_level(n: int, confidence: float = CONFIDENCE) -> float:
    """Return the coverage at which to read the percentile interval so it is as wide as t's.

    Hesterberg's expanded percentile interval: z(1 - a'/2) = sqrt(n / (n - 1)) t(1 - a/2, n - 1).
    It grows towards 1 as n shrinks (0.979 at n = 12, 0.9996 at n = 4).
    """
    if n < 2:
        raise ValueError("the expanded level needs at least two values")
    t_value = t_quantile(0.5 + confidence / 2, n - 1)
    z_value = math.sqrt(n / (n - 1)) * t_value
    return 1.0 - 2.0 * (1.0 - _NORMAL.cdf(z_value))


def resample_indices(n: int, *, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """Return a (resamples, n) matrix of window indices drawn with replacement.

    The same (n, resamples, seed) always gives the same matrix (read-only: it is shared).
    """
    return _resampling(n, resamples, seed)[0]


@functools.lru_cache(maxsize=16)
def _resampling(n: int, resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the resampled indices and how often each resample drew each window.

    A report bootstraps dozens of figures over the same windows: drawing once and working from
    the counts (a mean is counts @ values / n, a median a walk up the sorted values) is several
    times faster than gathering every resample every time. einsum, not BLAS: BLAS splits sums
    across threads and its last digits may change from one run to the next.
    """
    indices = np.random.default_rng(seed).integers(0, n, size=(resamples, n), dtype=np.intp)
    counts = np.zeros((resamples, n))
    np.add.at(counts, (np.arange(resamples)[:, None], indices), 1.0)
    indices.flags.writeable = False
    counts.flags.writeable = False
    return indices, counts


def resampled_means(sample: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Return the mean of every resample, given how often each drew each value."""
    means: np.ndarray = np.einsum("ij,j->i", counts, sample) / sample.size
    return means


def resampled_medians(sample: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Return the median of every resample (numpy's median: the middle order statistic, or the
    mean of the two middle ones), from the counts instead of the resampled values."""
    n = sample.size
    order = np.argsort(sample, kind="stable")
    ordered = sample[order]
    reached = np.cumsum(counts[:, order], axis=1)
    # The k-th smallest value of a resample is the first sorted value whose running count
    # reaches k (counts are whole numbers; 0.5 keeps the comparison clear of rounding).
    low = ordered[np.argmax(reached >= (n + 1) // 2 - 0.5, axis=1)]
    high = ordered[np.argmax(reached >= n // 2 + 1 - 0.5, axis=1)]
    medians: np.ndarray = (low + high) / 2
    return medians


def bootstrap_interval(
    values: Sequence[float] | np.ndarray,
    statistic: Statistic = "mean",
    *,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Interval | None:
    """Return the expanded percentile bootstrap interval of the mean or median of `values`.

    None with fewer than `MIN_WINDOWS_FOR_INTERVAL` values. `values` must be finite.
    """
    sample = np.asarray(values, dtype=np.float64)
    n = sample.size
    if n < MIN_WINDOWS_FOR_INTERVAL:
        return None
    counts = _resampling(n, resamples, seed)[1]
    if statistic == "mean":
        stats = resampled_means(sample, counts)
    else:
        stats = resampled_medians(sample, counts)
    tail = (1.0 - expanded_level(n, confidence)) / 2
    low, high = np.quantile(stats, [tail, 1.0 - tail])
    return Interval(float(low), float(high))


def bootstrap_mean_intervals(
    samples: np.ndarray,
    *,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seeds: Iterable[int] | None = None,
) -> np.ndarray:
    """Return the (rows, 2) interval ends of the mean of each row of `samples` (rows, n).

    For simulations: the same intervals as `bootstrap_interval` row by row (row i uses seed i
    unless `seeds` says otherwise), with one expanded level for all rows.
    """
    matrix = np.asarray(samples, dtype=np.float64)
    rows, n = matrix.shape
    if n < MIN_WINDOWS_FOR_INTERVAL:
        raise ValueError(f"an interval needs at least {MIN_WINDOWS_FOR_INTERVAL} values")
    tail = (1.0 - expanded_level(n, confidence)) / 2
    seed_list = list(range(rows)) if seeds is None else list(seeds)
    ends = np.empty((rows, 2))
    for row, seed in zip(range(rows), seed_list, strict=True):
        means = resampled_means(matrix[row], _resampling(n, resamples, seed)[1])
        ends[row] = np.quantile(means, [tail, 1.0 - tail])
    return ends


# -- what the report uses -------------------------------------------------------------------


def finite_values(values: Iterable[float | None]) -> tuple[np.ndarray, int]:
    """Return the finite values as an array and how many were missing (None or NaN)."""
    kept: list[float] = []
    missing = 0
    for value in values:
        if value is None or not math.isfinite(value):
            missing += 1
        else:
            kept.append(float(value))
    return np.asarray(kept, dtype=np.float64), missing


def small_sample_note(n: int) -> str | None:
    """Return what a reader must know about an interval over `n` windows, or None."""
    if n == 0:
        return "no window has a value"
    if n < MIN_WINDOWS_FOR_INTERVAL:
        return (
            f"{n} window{'s' if n > 1 else ''}: too few for an interval (it needs at least "
            f"{MIN_WINDOWS_FOR_INTERVAL}; with fewer, no bootstrap interval reaches 90% coverage)"
        )
    if n < FEW_WINDOWS:
        return (
            f"only {n} windows: the intervals cover somewhat less than they say (about 92-94% "
            f"for a 95% interval); {FEW_WINDOWS} or more windows are better"
        )
    return None


def estimate(
    values: Iterable[float | None],
    *,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Estimate:
    """Return the mean and median of the finite `values` with their bootstrap intervals."""
    sample, missing = finite_values(values)
    n = sample.size
    if n == 0:
        return Estimate(0, missing, None, None, None, None, None, small_sample_note(0))
    options = {"confidence": confidence, "resamples": resamples, "seed": seed}
    return Estimate(
        n=n,
        missing=missing,
        mean=float(sample.mean()),
        mean_ci=bootstrap_interval(sample, "mean", **options),  # type: ignore[arg-type]
        median=float(np.median(sample)),
        median_ci=bootstrap_interval(sample, "median", **options),  # type: ignore[arg-type]
        std=float(sample.std(ddof=1)) if n > 1 else None,
        note=small_sample_note(n),
    )


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> Interval | None:
    """Return the Wilson score interval of a binomial fraction (None when n is 0)."""
    if n <= 0:
        return None
    if not 0 <= successes <= n:
        raise ValueError(f"{successes} successes out of {n}")
    z = normal_quantile(0.5 + confidence / 2)
    fraction = successes / n
    denominator = 1.0 + z * z / n
    centre = (fraction + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(fraction * (1 - fraction) / n + z * z / (4 * n * n))
    # The ends are exactly 0 and 1 at 0 and n successes; rounding would leave 1e-17 there.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return Interval(low, high)


def proportion(successes: int, n: int, confidence: float = CONFIDENCE) -> Proportion:
    """Return the fraction `successes / n` with its Wilson interval."""
    return Proportion(
        successes=successes,
        n=n,
        fraction=successes / n if n else None,
        ci=wilson_interval(successes, n, confidence),
    )


def paired_difference(
    a: Sequence[float | None],
    b: Sequence[float | None],
    *,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> PairedDifference:
    """Return A minus B over the windows where both have a value (same order, same windows)."""
    if len(a) != len(b):
        raise ValueError(f"paired values need the same windows: {len(a)} and {len(b)} values")
    kept_a: list[float] = []
    kept_b: list[float] = []
    for value_a, value_b in zip(a, b, strict=True):
        if _finite(value_a) and _finite(value_b):
            kept_a.append(float(value_a))  # type: ignore[arg-type]
            kept_b.append(float(value_b))  # type: ignore[arg-type]
    differences = np.asarray(kept_a) - np.asarray(kept_b)
    n = differences.size
    missing = len(a) - n
    if n == 0:
        return PairedDifference(0, missing, None, None, None, 0, True, small_sample_note(0))
    ci = bootstrap_interval(
        differences, "mean", confidence=confidence, resamples=resamples, seed=seed
    )
    return PairedDifference(
        n=n,
        missing=missing,
        mean=float(differences.mean()),
        ci=ci,
        median=float(np.median(differences)),
        a_better=int(np.count_nonzero(differences > 0)),
        indistinguishable=ci is None or ci.covers(0.0),
        note=small_sample_note(n),
    )


def indistinguishable_groups(
    names: Sequence[str], distinguishable: Iterable[tuple[str, str]]
) -> list[list[str]]:
    """Return the largest sets of names in which no two can be told apart.

    `distinguishable` lists the pairs whose difference is significant; every other pair is
    indistinguishable. The groups are the maximal cliques of the indistinguishability graph (as
    in a compact letter display): a name may sit in several groups, and two names share a group
    only if they are indistinguishable. Groups keep the order of `names`, and come in the order
    of their first member.
    """
    apart: set[frozenset[str]] = {frozenset(pair) for pair in distinguishable}
    neighbours: Mapping[str, set[str]] = {
        name: {other for other in names if other != name and frozenset((name, other)) not in apart}
        for name in names
    }
    cliques: list[set[str]] = []

    def extend(clique: set[str], candidates: set[str], excluded: set[str]) -> None:
        if not candidates and not excluded:
            cliques.append(clique)
            return
        pivot = max(candidates | excluded, key=lambda name: len(neighbours[name] & candidates))
        for name in sorted(candidates - neighbours[pivot], key=names.index):
            extend(clique | {name}, candidates & neighbours[name], excluded & neighbours[name])
            candidates = candidates - {name}
            excluded = excluded | {name}

    extend(set(), set(names), set())
    ordered = [sorted(clique, key=names.index) for clique in cliques]
    return sorted(ordered, key=lambda group: [names.index(name) for name in group])


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
