"""The evaluation's statistics: how often the intervals cover the truth, and how fast they are.

Coverage: for each number of windows n, `--trials` samples of n window values are drawn from a
known distribution (normal; Student's t with 3 degrees of freedom, heavy-tailed; log-normal,
skewed); each gets the report's 95% interval (expanded percentile bootstrap, 10,000 resamples)
on the mean and on the median, and the script counts how often the interval covers the true
mean or median. The plain percentile interval (no expansion) is shown beside the mean's.
Speed: `build_report` on 12 and on 50 windows of 8 lines (7 agents and buy-and-hold), every
figure and every paired difference included.

    .venv/bin/python benchmarks/bench_evaluation_stats.py [--trials 2000] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.evaluation.report import build_report
from app.evaluation.results import CURVE_POINTS, AgentWindowResult, WindowResult
from app.evaluation.stats import RESAMPLES, expanded_level

SIZES = (3, 4, 5, 6, 8, 12, 20, 50)
LOGNORMAL_SIGMA = 0.5


def draw(kind: str, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    if kind == "normal":
        return rng.normal(0.0, 1.0, shape)
    if kind == "t3":
        return rng.standard_t(3, shape)
    return rng.lognormal(0.0, LOGNORMAL_SIGMA, shape)


def truth(kind: str, statistic: str) -> float:
    if kind == "lognormal":
        return float(np.exp(LOGNORMAL_SIGMA**2 / 2)) if statistic == "mean" else 1.0
    return 0.0


def coverage(kind: str, n: int, statistic: str, *, trials: int, expanded: bool) -> float:
    rng = np.random.default_rng(1_000 + n)
    samples = draw(kind, rng, (trials, n))
    level = expanded_level(n) if expanded else 0.95
    tail = (1.0 - level) / 2
    hits = 0
    chunk = max(1, 2_000_000 // (RESAMPLES * n))
    for first in range(0, trials, chunk):
        block = samples[first : first + chunk]
        indices = rng.integers(0, n, size=(block.shape[0], RESAMPLES, n))
        resampled = np.take_along_axis(block[:, None, :], indices, axis=2)
        stats = resampled.mean(axis=2) if statistic == "mean" else np.median(resampled, axis=2)
        low, high = np.quantile(stats, [tail, 1.0 - tail], axis=1)
        value = truth(kind, statistic)
        hits += int(np.count_nonzero((low <= value) & (value <= high)))
    return hits / trials


def coverage_table(trials: int) -> None:
    print(f"coverage of the 95% interval, {trials} trials per cell, {RESAMPLES:,} resamples")
    print("| data | statistic | " + " | ".join(f"n={n}" for n in SIZES) + " |")
    print("|---|---|" + "---:|" * len(SIZES))
    rows = [
        ("normal", "mean", True),
        ("normal", "mean", False),
        ("normal", "median", True),
        ("t3", "mean", True),
        ("t3", "median", True),
        ("lognormal", "mean", True),
        ("lognormal", "median", True),
    ]
    for kind, statistic, expanded in rows:
        label = statistic if expanded else f"{statistic}, plain percentile"
        cells = [
            f"{coverage(kind, n, statistic, trials=trials, expanded=expanded):.1%}" for n in SIZES
        ]
        print(f"| {kind} | {label} | " + " | ".join(cells) + " |", flush=True)


def synthetic_windows(count: int, lines: int) -> list[WindowResult]:
    rng = np.random.default_rng(0)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    found = []
    for i in range(count):
        agents = []
        for j in range(lines):
            value = float(rng.normal(0, 5))
            agents.append(
                AgentWindowResult(
                    name=f"agent{j}" if j else "hodl",
                    provider="baseline" if j == 0 else "modelscope",
                    model="buy_and_hold" if j == 0 else f"m{j}",
                    group=f"agent{j}" if j else "hodl",
                    return_pct=value,
                    sharpe=value / 3,
                    max_drawdown_pct=abs(value),
                    win_rate=0.5,
                    trades=5,
                    curve=tuple(np.linspace(1, 1 + value / 100, CURVE_POINTS)),
                )
            )
        found.append(
            WindowResult(
                index=i,
                start=start + i * timedelta(days=7),
                end=start + (i + 1) * timedelta(days=7),
                interval="5m",
                cycles=2017,
                buy_and_hold_return_pct=0.0,
                agents=tuple(agents),
            )
        )
    return found


def report_speed(runs: int) -> None:
    for count in (12, 50):
        windows = synthetic_windows(count, 8)
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            build_report(windows)
            times.append(time.perf_counter() - started)
        print(
            f"build_report, {count} windows x 8 lines (40 figures, 56 paired differences): "
            f"median {statistics.median(times) * 1000:.0f} ms (max {max(times) * 1000:.0f} ms)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-coverage", action="store_true")
    args = parser.parse_args()
    report_speed(args.runs)
    if not args.skip_coverage:
        coverage_table(args.trials)


if __name__ == "__main__":
    main()
