"""How often `baseline:random` trades at each rate, beside ema_trend, on the real data.

Closed trades per day (six coins together) over evenly spaced windows of the real Binance data
(`../shared/data/market`), each window a backtest through the real engine. `random` runs with
three seeds at each rate; its `entries_per_day` is the rate while a coin is flat, so the trades
it makes depend on how long its positions last (they end at a stop or target of 2 or 3 ATR14 on
4h candles). The default rate is chosen from this table.

    .venv/bin/python benchmarks/bench_random_frequency.py [--windows 8] [--days 7] [--interval 15m]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.config import AgentConfig, load_settings
from app.evaluation.window_run import WindowJob, data_range, run_windows_in_process
from app.evaluation.windows import plan_windows
from app.wiring import open_database

MARKET = Path(__file__).resolve().parents[2] / "shared" / "data" / "market"
RATES = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
SEEDS = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--interval", default="15m")
    args = parser.parse_args()
    specs = ["ema_trend=baseline:ema_trend"]
    specs += [
        f"r{rate:g}-{seed}=baseline:random@{seed}/{rate:g}"
        for rate in RATES
        for seed in range(SEEDS)
    ]
    job = WindowJob(
        data=(MARKET,),
        agents=tuple(AgentConfig.from_spec(spec) for spec in specs),
        interval=args.interval,
    )
    with tempfile.TemporaryDirectory() as folder:
        settings = load_settings(
            env_file=None, database={"url": f"sqlite:///{Path(folder) / 'arena.db'}"}
        )
        database = open_database(settings)
        found, interval = data_range(settings, job, database=database)
        windows = plan_windows(found, days=args.days, count=args.windows)
        started = time.perf_counter()
        results = run_windows_in_process(settings, job, windows, database=database)
        elapsed = time.perf_counter() - started
    print(
        f"{len(windows)} windows of {args.days:g} days every {interval}, six coins, {elapsed:.0f} s"
    )
    print("| agent | entries per flat coin-day | closed trades per day | mean return per window |")
    print("|---|---:|---:|---:|")
    lines = [("ema_trend", "-", ["ema_trend"])]
    lines += [
        ("random", f"{rate:g}", [f"r{rate:g}-{seed}" for seed in range(SEEDS)]) for rate in RATES
    ]
    for label, rate, names in lines:
        trades = [w.agent(name).trades / args.days for w in results for name in names]
        returns = [w.agent(name).return_pct for w in results for name in names]
        print(
            f"| {label} | {rate} | {statistics.mean(trades):.2f} | "
            f"{statistics.mean(returns):+.2f}% |"
        )


if __name__ == "__main__":
    main()
