"""Where a replayed backtest spends its time: cProfile over one replay, grouped by area.

The bench_backtest.py setup on a shorter window: `--days` of the real six-coin 5m data at a
5-minute cadence; the cache is filled by a `cached` run against the local fake OpenAI server,
then one replay with `--agents` LLM agents runs under cProfile (in this process). Prints the
share of the replay's time per area (the flame summary in docs/BENCHMARKS.md) and the top
functions by cumulative time.

    .venv/bin/python benchmarks/profile_replay.py [--days 2] [--agents 1]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.config import load_settings
from app.wiring import open_database, run_backtest
from benchmarks.bench_backtest import MARKET, MODELS, options
from tests.fakes.openai_server import UNLIMITED_QUOTA, FakeOpenAIServer
from tests.fakes.traders import by_model, contrarian_trader, trend_trader

# Areas by the first matching path fragment of a function's file (own time, not cumulative).
AREAS = (
    ("SQLite and SQLAlchemy (records, cache lookups)", ("sqlalchemy", "sqlite3", "app/db/")),
    ("answer cache and parsing", ("app/llm/", "app/decisions.py", "json/")),
    ("prompt rendering", ("app/prompts/",)),
    ("market snapshot and indicators", ("app/market/", "app/indicators.py")),
    ("engine, risk, paper account, exits", ("app/trading/",)),
    ("pandas and numpy", ("pandas", "numpy")),
    ("asyncio", ("asyncio",)),
)


def area_of(filename: str) -> str:
    for name, fragments in AREAS:
        if any(fragment in filename for fragment in fragments):
            return name
    return "other (compression, hashing, Python)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--agents", type=int, default=1)
    parser.add_argument("--own", action="store_true", help="also list functions by own time")
    parser.add_argument(
        "--callers", metavar="NAME", help="also list who calls the functions matching NAME"
    )
    args = parser.parse_args()
    traders = {m: (trend_trader if i % 2 == 0 else contrarian_trader) for i, m in enumerate(MODELS)}
    with (
        tempfile.TemporaryDirectory() as folder,
        FakeOpenAIServer(
            "modelscope",
            responder=by_model(traders),
            requests_limit=UNLIMITED_QUOTA,
            model_requests_limit=UNLIMITED_QUOTA,
        ) as llm,
    ):
        os.environ.update(
            DATABASE_URL=f"sqlite:///{folder}/profile.db",
            MODELSCOPE_API_KEY="ms-benchmark",
            MODELSCOPE_BASE_URL=llm.base_url,
            LOG_LEVEL="WARNING",
        )
        settings = load_settings(env_file=None)
        database = open_database(settings)
        asyncio.run(
            run_backtest(
                settings, options(MARKET, args.days, args.agents, "cached"), database=database
            )
        )
        profile = cProfile.Profile()
        began = time.process_time()
        profile.enable()
        result = asyncio.run(
            run_backtest(
                settings, options(MARKET, args.days, args.agents, "replay"), database=database
            )
        )
        profile.disable()
        cpu_s = time.process_time() - began
    print(
        f"replay: {result.cycles} cycles x {args.agents} agent(s), {cpu_s:.2f} s CPU "
        f"({result.cycles / cpu_s:,.0f} cycles per CPU second)"
    )
    stats = pstats.Stats(profile)
    own: dict[str, float] = {}
    total = 0.0
    for (filename, _, _), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        own[area_of(filename)] = own.get(area_of(filename), 0.0) + tottime
        total += tottime
    for name, seconds in sorted(own.items(), key=lambda item: -item[1]):
        print(f"{100 * seconds / total:5.1f}%  {name}")
    stats.sort_stats("cumulative").print_stats(25)
    if args.own:
        stats.sort_stats("tottime").print_stats(30)
    if args.callers:
        stats.sort_stats("cumulative").print_callers(args.callers)


if __name__ == "__main__":
    main()
