"""Evaluation speed: 12 windows on the real data with 1 and 2 local workers, and Ray on 2 CPUs.

Each executor runs the same plan (buy-and-hold, ema_trend and random seeds over `--windows`
windows of `--window-days` days every `--interval`) in a fresh database, through the same code
as `arena evaluate` (plan, executor, recording each window); the wall time includes starting the
workers. The figures of every executor must be identical (the script checks it).

    .venv/bin/python benchmarks/bench_evaluate.py [--windows 12] [--window-days 7] \\
        [--interval 5m] [--random-seeds 5] [--executors local1,local2,ray2]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.config import load_settings
from app.evaluation.executors import LocalExecutor, RayExecutor, WindowExecutor
from app.evaluation.plan import EvaluationPlan, open_plan, run_plan, with_baselines
from app.evaluation.window_run import WindowJob, data_range
from app.evaluation.windows import plan_windows
from app.wiring import evaluation_plan_store, open_database

MARKET = Path(__file__).resolve().parents[2] / "shared" / "data" / "market"


def executor(name: str) -> WindowExecutor:
    if name.startswith("local"):
        return LocalExecutor(int(name.removeprefix("local")))
    return RayExecutor(workers=int(name.removeprefix("ray")))


def run(name: str, args: argparse.Namespace, folder: Path) -> tuple[float, list[object]]:
    settings = load_settings(env_file=None, database={"url": f"sqlite:///{folder / name}.db"})
    database = open_database(settings)
    job = WindowJob(
        data=(MARKET,),
        agents=with_baselines([], random_seeds=args.random_seeds),
        interval=args.interval,
        keep="summary",
    )
    found, interval = data_range(settings, job, database=database)
    windows = plan_windows(found, days=args.window_days, count=args.windows)
    plan = EvaluationPlan(job=job, windows=windows, window_days=args.window_days, interval=interval)
    store = evaluation_plan_store(database)
    started = time.perf_counter()
    results = run_plan(settings, plan, open_plan(plan, store), store=store, executor=executor(name))
    elapsed_s = time.perf_counter() - started
    return elapsed_s, [replace(result, run_id=None) for result in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--windows", type=int, default=12)
    parser.add_argument("--window-days", type=float, default=7.0)
    parser.add_argument("--interval", default="5m")
    parser.add_argument("--random-seeds", type=int, default=5)
    parser.add_argument("--executors", default="local1,local2,ray2")
    args = parser.parse_args()
    names = [name for name in args.executors.split(",") if name]
    if "ray2" in names and importlib.util.find_spec("ray") is None:
        print("ray is not installed (pip install -e '.[cluster]'): leaving it out")
        names.remove("ray2")
    timings: dict[str, float] = {}
    reference: list[object] | None = None
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            elapsed_s, figures = run(name, args, Path(folder))
            timings[name] = elapsed_s
            reference = reference if reference is not None else figures
            same = "same figures" if figures == reference else "FIGURES DIFFER"
            print(f"{name}: {elapsed_s:.1f} s ({same})", flush=True)
    base = timings.get("local1")
    if base:
        for name, elapsed_s in timings.items():
            print(f"{name}: {base / elapsed_s:.2f}x the speed of local1")


if __name__ == "__main__":
    main()
