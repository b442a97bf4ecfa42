"""The statistics: distributions against printed tables, the bootstrap's mechanics, Wilson's
interval, paired differences, small and missing samples, and the indistinguishable groups."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.evaluation.stats import (
    FEW_WINDOWS,
    MIN_WINDOWS_FOR_INTERVAL,
    Interval,
    bootstrap_interval,
    bootstrap_mean_intervals,
    estimate,
    expanded_level,
    indistinguishable_groups,
    paired_difference,
    proportion,
    resample_indices,
    resampled_means,
    resampled_medians,
    t_cdf,
    t_quantile,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("p", "df", "table"),
    [
        # Student's t table (e.g. Abramowitz and Stegun, table 26.10), to the digits printed.
        (0.975, 1, 12.7062),
        (0.975, 2, 4.3027),
        (0.975, 4, 2.7764),
        (0.975, 11, 2.2010),
        (0.975, 30, 2.0423),
        (0.95, 5, 2.0150),
        (0.995, 10, 3.1693),
        (0.9, 120, 1.2886),
    ],
)
def test_t_quantiles_match_the_printed_table(p: float, df: int, table: float) -> None:
    assert t_quantile(p, df) == pytest.approx(table, abs=6e-5)
    assert t_quantile(1 - p, df) == pytest.approx(-table, abs=6e-5)


def test_t_distribution_function_has_the_closed_forms() -> None:
    """df 1 is Cauchy: F(x) = 1/2 + atan(x)/pi; df 2: F(x) = 1/2 + x / (2 sqrt(x^2 + 2))."""
    for x in (-3.0, -0.5, 0.0, 0.7, 4.0):
        assert t_cdf(x, 1) == pytest.approx(0.5 + math.atan(x) / math.pi)
        assert t_cdf(x, 2) == pytest.approx(0.5 + x / (2 * math.sqrt(x * x + 2)))
    assert t_cdf(math.inf, 3) == 1.0 and t_cdf(-math.inf, 3) == 0.0
    with pytest.raises(ValueError, match="at least 1"):
        t_cdf(1.0, 0)


def test_the_expanded_level_gives_the_t_intervals_width() -> None:
    """At n = 12: z(1 - a'/2) = sqrt(12/11) x 2.2010 = 2.2988, so a' = 2 x (1 - Phi(2.2988))
    = 0.0215 and the percentile interval is read at 97.85%. It widens as n shrinks."""
    assert expanded_level(12) == pytest.approx(0.97849, abs=1e-4)
    levels = [expanded_level(n) for n in (3, 5, 8, 12, 30, 100, 1000)]
    assert levels == sorted(levels, reverse=True)
    assert levels[-1] == pytest.approx(0.95, abs=5e-4)


def test_the_bootstrap_is_seeded_and_resamples_jointly() -> None:
    values = np.random.default_rng(0).normal(size=20)
    assert bootstrap_interval(values, seed=3) == bootstrap_interval(values, seed=3)
    assert bootstrap_interval(values, seed=3) != bootstrap_interval(values, seed=4)
    # One seed and one n: the same windows are drawn for every statistic.
    assert np.array_equal(resample_indices(20, seed=3), resample_indices(20, seed=3))
    # The batch form gives the row-by-row answer.
    rows = np.random.default_rng(1).normal(size=(3, 12))
    batch = bootstrap_mean_intervals(rows, seeds=[5, 6, 7])
    for row, seed, ends in zip(rows, (5, 6, 7), batch, strict=True):
        single = bootstrap_interval(row, seed=seed)
        assert single is not None
        assert ends.tolist() == pytest.approx([single.low, single.high])


def test_a_constant_sample_has_a_point_interval() -> None:
    assert bootstrap_interval([2.5] * 10) == Interval(2.5, 2.5)
    assert bootstrap_interval([2.5] * 10, "median") == Interval(2.5, 2.5)


def test_the_median_interval_brackets_the_sample_median() -> None:
    values = np.random.default_rng(2).standard_t(3, size=25)
    found = bootstrap_interval(values, "median")
    assert found is not None and found.covers(float(np.median(values)))
    assert found.low >= values.min() and found.high <= values.max()


def test_wilson_interval_matches_worked_values() -> None:
    """Wilson, z = 1.95996: 0 of 10 gives [0, z^2 / (10 + z^2)] = [0, 0.2775]; 5 of 10 gives
    0.5 +- z / (1 + z^2/10) x sqrt(0.025 + z^2/400) = [0.2366, 0.7634]; 12 of 12 mirrors 0/12."""
    zero = wilson_interval(0, 10)
    assert zero is not None
    assert zero.low == 0.0 and zero.high == pytest.approx(0.27753, abs=1e-5)
    five = wilson_interval(5, 10)
    assert five is not None
    assert (five.low, five.high) == pytest.approx((0.23659, 0.76341), abs=1e-5)
    every = wilson_interval(12, 12)
    none = wilson_interval(0, 12)
    assert every is not None and none is not None
    assert every.low == pytest.approx(1 - none.high) and every.high == 1.0
    assert wilson_interval(0, 0) is None
    found = proportion(7, 12)
    assert (found.successes, found.n, found.fraction) == (7, 12, pytest.approx(7 / 12))


@pytest.mark.parametrize("n", [0, 1, 2, MIN_WINDOWS_FOR_INTERVAL - 1])
def test_too_few_windows_give_no_interval_and_say_why(n: int) -> None:
    found = estimate([1.0 + i for i in range(n)])
    assert found.n == n
    assert found.mean_ci is None and found.median_ci is None
    assert found.note is not None
    assert ("too few" in found.note) if n else ("no window" in found.note)


def test_few_windows_give_an_interval_with_a_warning_and_enough_windows_none() -> None:
    few = estimate([1.0, 2.0, 4.0, 3.0, 5.0])
    assert few.mean_ci is not None and few.note is not None and "only 5 windows" in few.note
    enough = estimate(list(np.linspace(0, 1, FEW_WINDOWS)))
    assert enough.mean_ci is not None and enough.note is None


def test_missing_values_are_left_out_and_counted() -> None:
    """Sharpe is None on a flat account and NaN never enters: the mean of 1, 2, 3, 4, 5, 6 is
    3.5 whatever the two missing windows were."""
    found = estimate([1.0, None, 2.0, float("nan"), 3.0, 4.0, 5.0, 6.0])
    assert (found.n, found.missing) == (6, 2)
    assert found.mean == pytest.approx(3.5)
    assert found.median == pytest.approx(3.5)
    assert found.std == pytest.approx(np.std([1, 2, 3, 4, 5, 6], ddof=1))


def test_paired_differences_use_only_windows_where_both_have_a_value() -> None:
    """A - B on windows 0, 2, 3, 4, 5, 6, 7 (window 1 has no B): 1 each, so mean 1, interval
    [1, 1]: told apart. A against itself: 0, [0, 0], indistinguishable."""
    a = [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    b: list[float | None] = [1.0, None, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    found = paired_difference(a, b)
    assert (found.n, found.missing, found.a_better) == (7, 1, 7)
    assert found.mean == pytest.approx(1.0) and found.ci == Interval(1.0, 1.0)
    assert not found.indistinguishable
    same = paired_difference(a, a)
    assert same.mean == 0.0 and same.ci == Interval(0.0, 0.0) and same.indistinguishable
    with pytest.raises(ValueError, match="same windows"):
        paired_difference(a, b[:-1])


def test_pairing_removes_the_shared_market_move() -> None:
    """Two agents that both follow the market, one 0.5 points a window better: unpaired their
    intervals overlap widely, paired the difference is plainly 0.5."""
    market = np.random.default_rng(9).normal(0.0, 8.0, size=12)
    noise = np.random.default_rng(10).normal(0.0, 0.1, size=12)
    better = market + 0.5 + noise
    found = paired_difference(list(better), list(market))
    assert found.ci is not None and 0.3 < found.ci.low < found.ci.high < 0.7
    separate_a, separate_b = estimate(better).mean_ci, estimate(market).mean_ci
    assert separate_a is not None and separate_b is not None
    assert separate_a.low < separate_b.high  # the unpaired intervals overlap


def test_too_few_paired_windows_cannot_tell_lines_apart() -> None:
    found = paired_difference([5.0, 6.0], [1.0, 2.0])
    assert found.ci is None and found.indistinguishable and found.note is not None


def test_indistinguishable_groups_are_the_maximal_cliques() -> None:
    names = ["qwen", "deepseek", "ema_trend", "random", "buy_and_hold"]
    # Everyone apart from everyone: one group each.
    apart = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    assert indistinguishable_groups(names, apart) == [[name] for name in names]
    # Nobody apart: one group.
    assert indistinguishable_groups(names, []) == [names]
    # A chain: qwen ~ deepseek ~ ema_trend but qwen is better than ema_trend; random and
    # buy_and_hold sit together, apart from the models.
    apart = [
        ("qwen", "ema_trend"),
        ("qwen", "random"),
        ("qwen", "buy_and_hold"),
        ("deepseek", "random"),
        ("deepseek", "buy_and_hold"),
        ("ema_trend", "buy_and_hold"),
    ]
    assert indistinguishable_groups(names, apart) == [
        ["qwen", "deepseek"],
        ["deepseek", "ema_trend"],
        ["ema_trend", "random"],
        ["random", "buy_and_hold"],
    ]


@pytest.mark.parametrize("n", [5, 6, 12, 13, 50])
def test_means_and_medians_from_counts_equal_those_of_the_resampled_values(n: int) -> None:
    """The fast path (counts per resample) against the plain one (gather every resample), with
    ties (values rounded to 0.1) and both parities of n: medians exactly, means to rounding."""
    values = np.round(np.random.default_rng(n).normal(size=n), 1)
    indices = resample_indices(n, resamples=2_000, seed=3)
    counts = np.zeros((2_000, n))
    np.add.at(counts, (np.arange(2_000)[:, None], indices), 1.0)
    assert np.array_equal(resampled_medians(values, counts), np.median(values[indices], axis=1))
    assert resampled_means(values, counts) == pytest.approx(values[indices].mean(axis=1))
