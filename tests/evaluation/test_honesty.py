"""Are the intervals honest? Synthetic markets where the truth is known, generated here.

Each trial is one evaluation: 12 windows of 7 days of 5-minute returns (2,016 a window), a
driftless market (simple returns with mean 0, sd 0.2%, so the price is a martingale), and
strategies that trade it without costs:
- buy-and-hold: always long 1x;
- a planted edge: long or short 1x each period, on the right side of the coming move 52.5% of
  the time (it peeks; 47.5% it is wrong). Its expected excess is 2 x 0.025 x E|r| = 0.00016 a
  period, about 16 points a window: roughly 4.5 standard errors of a 12-window mean difference;
- random: enters at random (8 times per flat day), long or short, leaves at random (once a
  day on average), never looking at prices.
Without costs every strategy that cannot see the future earns a martingale, so the truth of
"random minus buy-and-hold" is exactly 0, and the truth of "edge minus buy-and-hold" is positive.
"""

from __future__ import annotations

import numpy as np

from app.evaluation.stats import (
    bootstrap_interval,
    bootstrap_mean_intervals,
    paired_difference,
    t_interval,
)

SEEDS = 50
WINDOWS = 12
PERIODS = 7 * 288
SIGMA = 0.002
EDGE = 0.025


def market(seed: int) -> tuple[np.random.Generator, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng, rng.normal(0.0, SIGMA, size=(WINDOWS, PERIODS))


def window_returns_pct(positions: np.ndarray, returns: np.ndarray) -> np.ndarray:
    """Compounded return of each window, in percent, holding `positions` (x1 of the account)."""
    return (np.prod(1.0 + positions * returns, axis=1) - 1.0) * 100.0


def planted_edge(rng: np.random.Generator, returns: np.ndarray) -> np.ndarray:
    right = rng.random(returns.shape) < 0.5 + EDGE
    return np.where(right, np.sign(returns), -np.sign(returns))


def random_positions(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    enter, leave = 8 / 288, 1 / 288
    draws = rng.random(shape)
    sides = np.where(rng.random(shape) < 0.5, 1.0, -1.0)
    positions = np.zeros(shape)
    held = np.zeros(shape[0])
    for t in range(shape[1]):
        flat = held == 0.0
        entered = np.where(draws[:, t] < enter, sides[:, t], 0.0)
        held = np.where(flat, entered, np.where(draws[:, t] < leave, 0.0, held))
        positions[:, t] = held
    return positions


def test_a_planted_edge_is_found_in_at_least_90_percent_of_seeds() -> None:
    """Observed: the interval on the paired difference excludes 0 in 49 of 50 seeds, and says
    the same as Student's t-test on the same numbers in all 50."""
    found = 0
    agree_with_t = 0
    for seed in range(SEEDS):
        rng, returns = market(seed)
        edge = window_returns_pct(planted_edge(rng, returns), returns)
        hodl = window_returns_pct(np.ones_like(returns), returns)
        difference = paired_difference(list(edge), list(hodl), seed=seed)
        assert difference.ci is not None
        found += not difference.indistinguishable
        closed_form = t_interval(edge - hodl)
        assert closed_form is not None
        agree_with_t += difference.indistinguishable == closed_form.covers(0.0)
    assert found >= 0.9 * SEEDS, f"the edge was found in only {found} of {SEEDS} seeds"
    assert agree_with_t >= SEEDS - 2


def test_random_against_buy_and_hold_on_a_driftless_market_covers_zero() -> None:
    """Observed: the interval covers the true difference (0) in 47 of 50 seeds, 94%, for a
    nominal 95%; a fixed, wide interval would pass too, which the test above rules out."""
    covered = 0
    for seed in range(SEEDS):
        rng, returns = market(1_000 + seed)
        luck = window_returns_pct(random_positions(rng, returns.shape), returns)
        hodl = window_returns_pct(np.ones_like(returns), returns)
        difference = paired_difference(list(luck), list(hodl), seed=seed)
        assert difference.ci is not None
        covered += difference.indistinguishable
    assert covered >= 0.9 * SEEDS, f"zero covered in only {covered} of {SEEDS} seeds"


def test_the_bootstrap_agrees_with_the_t_interval_on_normal_data() -> None:
    """On normal samples of 12 the expanded percentile interval should be Student's t-interval
    up to the bootstrap's own noise. What that noise is:
    - the bootstrap distribution of the mean follows the sample's skewness, which for normal
      samples of 12 has a spread of sqrt(6/12) = 0.71; by Cornish-Fisher that moves both ends
      together by about 5% of the half-width (one spread), so each end must lie within 25% of
      the half-width of t's (5 spreads; 18% is the largest seen in 200 seeds);
    - the width depends on the sample's kurtosis and on 10,000 resamples (1.6% of the half-width
      at the 1% quantile): widths within 8% (observed spread 1.3%, largest 4%);
    - on average over the 50 samples, the width within 3% of t's (observed -0.9%) and the
      midpoints centred within 3% of the half-width."""
    ends, widths, shifts = [], [], []
    for seed in range(SEEDS):
        values = np.random.default_rng(5_000 + seed).normal(0.4, 3.0, size=WINDOWS)
        boot = bootstrap_interval(values, seed=seed)
        exact = t_interval(values)
        assert boot is not None and exact is not None
        half = (exact.high - exact.low) / 2
        ends += [(boot.low - exact.low) / half, (boot.high - exact.high) / half]
        widths.append((boot.high - boot.low) / (exact.high - exact.low))
        shifts.append(((boot.low + boot.high) - (exact.low + exact.high)) / 2 / half)
    assert max(abs(end) for end in ends) <= 0.25
    assert max(abs(width - 1.0) for width in widths) <= 0.08
    assert abs(float(np.mean(widths)) - 1.0) <= 0.03
    assert abs(float(np.mean(shifts))) <= 0.03


def test_the_95_percent_interval_covers_the_mean_about_95_percent_of_the_time() -> None:
    """400 normal samples of 12 windows: the interval covers the true mean in 94.25% of them
    (the plain percentile interval: about 90%). With 400 trials the count has a spread of
    sqrt(400 x 0.05 x 0.95) = 4.4, so 92% to 97.5% is where an honest 95% interval lands."""
    samples = np.random.default_rng(77).normal(1.0, 2.0, size=(400, WINDOWS))
    ends = bootstrap_mean_intervals(samples)
    coverage = float(np.mean((ends[:, 0] <= 1.0) & (1.0 <= ends[:, 1])))
    assert 0.92 <= coverage <= 0.975, coverage
