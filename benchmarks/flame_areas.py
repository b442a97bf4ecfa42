"""Where a replay's wall time goes: a py-spy sample file summed into areas of the code.

A sampling profile, unlike cProfile, costs the replay almost nothing and includes start-up (the
imports, loading the files). Record a replay from a cache that `bench_backtest.py --keep-cache
FILE` filled, then sum it:

    DATABASE_URL=sqlite:///FILE py-spy record -r 200 -f raw -o replay.txt -- \\
        .venv/bin/python benchmarks/bench_backtest.py --replay-agents 1 --days 30
    .venv/bin/python benchmarks/flame_areas.py replay.txt

Each sample counts once, for the first area (in the order below) named anywhere on its stack.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

# (area, fragments of a frame's text); the first area with a fragment on the stack takes it.
AREAS = (
    ("start-up: imports", ("<frozen importlib",)),
    ("start-up: loading the files, indicators", ("load_market_data", "plan_backtest")),
    ("recording (SQLite, SQLAlchemy, prompt storage)", ("BatchRecorder.flush",)),
    ("answer cache lookup", ("FallbackChain._stored",)),
    ("parsing the answers", ("parse_decisions_report",)),
    ("cache key (request and hash)", ("FallbackChain.complete.<locals>.<listcomp>",)),
    ("market snapshot and data checks", ("HistoricalMarketData.snapshot_at", "snapshot_problems")),
    ("market section of the prompt", ("render_market_section", "render_context_blocks")),
    ("account section and the rest of the prompt", ("CycleEngine._request",)),
    ("exit checks between cycles", ("CycleEngine._catch_up",)),
    ("settling the decisions (risk, paper account)", ("CycleEngine._settle",)),
    ("leaderboard and result", ("Backtest._result",)),
)
OTHER = "other (event loop, engine glue, garbage collection)"


def areas(lines: list[str]) -> tuple[Counter[str], int]:
    """Return the samples per area of py-spy's raw lines ("frame;...;frame count") and the total."""
    counts: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        name = next(
            (name for name, fragments in AREAS if any(f in stack for f in fragments)), OTHER
        )
        counts[name] += count
    return counts, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", type=Path, help="py-spy record -f raw output")
    args = parser.parse_args()
    counts, total = areas(args.samples.read_text().splitlines())
    if not total:
        raise SystemExit(f"{args.samples}: no samples")
    print(f"{total} samples")
    print("| area | share |\n|---|---:|")
    for name, count in counts.most_common():
        print(f"| {name} | {100 * count / total:.1f}% |")


if __name__ == "__main__":
    main()
