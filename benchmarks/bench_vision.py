"""A vision agent end to end: render time, bytes per request, storage per agent-day, replay speed.

    .venv/bin/python benchmarks/bench_vision.py [--cycles 240] [--data DIR]

Over the six coins of ../shared/data/market (the synthetic sample data when it is absent), at a
5-minute cadence:
1. render time of all of a cycle's charts for six coins through `MarketCharts` (what the engine
   uses): `cold` with a new renderer each cycle, `steady` with the engine's one (the 4h chart is
   drawn once per 4h candle); medians of wall time over the cycles;
2. a `cached` backtest of one Qwen3-VL agent against the local fake OpenAI server: bytes of
   images per request (PNG and base64) as the server received them, and the database's growth:
   the images stored (deduplicated by content hash, kept compacted) and the whole file (grown
   from the migrated empty database, both sizes taken after a WAL checkpoint), per cycle and
   per agent-day at a 3-minute cadence (480 cycles), with the new pages of each table;
3. the same backtest replayed with `--llm-mode replay` in this process: cycles per second, and
   no request sent.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from app.backtest import BacktestOptions
from app.charts.render import ChartRenderer
from app.charts.source import MarketCharts
from app.config import AgentConfig, load_settings
from app.db import models
from app.domain import ExitPlan, MarketSnapshot, Position
from app.errors import DatabaseError
from app.market.dataset import load_data_set
from app.market.historical import HistoricalMarketData
from app.market.sample import write_sample_data
from app.wiring import open_database, run_backtest
from tests.fakes.openai_server import UNLIMITED_QUOTA, FakeOpenAIServer
from tests.fakes.traders import by_model, trend_trader

COINS = ("BTC", "ETH", "SOL", "BNB", "XRP", "DOGE")
MARKET = Path(__file__).resolve().parents[2] / "shared" / "data" / "market"
VL_MODEL = "Qwen/Qwen3-VL-30B-A3B-Instruct"
CYCLES_PER_DAY = 480  # a 3-minute cadence
STEP = timedelta(minutes=5)


def render_times(data: Path, cycles: int) -> dict[str, float]:
    """Return the median ms of drawing every chart of a cycle: wall and CPU, cold and steady."""
    dataset = load_data_set([data], coins=list(COINS))
    market = HistoricalMarketData(
        {coin: dataset.candles[coin] for coin in COINS},
        intraday_timeframe="5m",
        context_timeframe="4h",
    )
    first = market.first_ready_at()
    steady_source = MarketCharts(coins=COINS)
    found: dict[str, list[float]] = {}

    def timed(name: str, source: MarketCharts, snapshot: MarketSnapshot, held: Any) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        for part in source.charts(snapshot, held):
            part.image()
        found.setdefault(f"{name} wall", []).append(time.perf_counter() - wall)
        found.setdefault(f"{name} CPU", []).append(time.process_time() - cpu)

    for i in range(cycles):
        snapshot = market.snapshot_at(first + i * STEP)
        btc = snapshot.coins["BTC"].last_price
        held = {
            "BTC": Position(
                coin="BTC",
                side="long",
                quantity=0.1,
                entry_price=btc,
                leverage=5,
                margin_usd=btc * 0.1 / 5,
                liquidation_price=btc * 0.8,
                opened_at=first,
                exit_plan=ExitPlan(profit_target=btc * 1.03, stop_loss=btc * 0.98),
            )
        }
        timed("cold", MarketCharts(coins=COINS, renderer=ChartRenderer()), snapshot, held)
        timed("steady", steady_source, snapshot, held)
    return {name: statistics.median(values[1:]) * 1000 for name, values in found.items()}


def checkpointed_size(engine: Any, path: Path) -> int:
    """Return the database file's size once the WAL's pages are in it (every record counted)."""
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size


def table_pages(engine: Any) -> dict[str, int]:
    """Return the pages each table and index holds (empty when SQLite lacks `dbstat`)."""
    try:
        with engine.connect() as connection:
            rows = connection.exec_driver_sql(
                "SELECT name, count(*) FROM dbstat GROUP BY name"
            ).all()
    except (DatabaseError, SQLAlchemyError):  # a SQLite built without the dbstat table
        return {}
    return {str(name): int(pages) for name, pages in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cycles", type=int, default=240)
    parser.add_argument("--data", type=Path, default=MARKET)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data = args.data
        if not (data / "BTC_USDT-5m.csv.gz").is_file():
            data = write_sample_data(Path(folder) / "sample", days=14)
            print(f"{args.data} absent: synthetic sample data")
        times = render_times(data, min(args.cycles, 60))
        print(
            "render, six coins, both charts (median ms): "
            + ", ".join(f"{name} {ms:.0f}" for name, ms in times.items())
        )

        dataset = load_data_set([data], coins=list(COINS))
        end = min(frame.index[-1] for frame in dataset.candles.values()).to_pydatetime()
        start = end - (args.cycles - 1) * STEP

        def options(mode: str) -> BacktestOptions:
            return BacktestOptions(
                data=(data,),
                agents=(AgentConfig.from_spec(f"vl=modelscope:{VL_MODEL}"),),
                symbols=COINS,
                start=start,
                end=end,
                interval="5m",
                llm_mode=mode,  # type: ignore[arg-type]
            )

        with FakeOpenAIServer(
            "modelscope",
            responder=by_model({VL_MODEL: trend_trader}),
            requests_limit=UNLIMITED_QUOTA,
            model_requests_limit=UNLIMITED_QUOTA,
        ) as llm:
            db_path = Path(folder) / "bench.db"
            os.environ.update(
                DATABASE_URL=f"sqlite:///{db_path}",
                MODELSCOPE_API_KEY="ms-benchmark",
                MODELSCOPE_BASE_URL=llm.base_url,
                LOG_LEVEL="WARNING",
            )
            settings = load_settings(env_file=None)
            database = open_database(settings)
            # The schema's pages into the file first: growth counts the records, not the tables.
            empty_bytes = checkpointed_size(database.engine, db_path)
            empty_pages = table_pages(database.engine)
            began = time.perf_counter()
            first = asyncio.run(run_backtest(settings, options("cached"), database=database))
            filled_s = time.perf_counter() - began
            requests = llm.requests_for(VL_MODEL)
            png = [sum(image.size_bytes for image in r.images) for r in requests]
            b64 = [sum(4 * -(-image.size_bytes // 3) for image in r.images) for r in requests]
            with database.engine.connect() as connection:
                images, stored = connection.execute(
                    select(func.count(), func.sum(func.length(models.ChartImage.data)))
                ).one()
                raw = sum(len(r.images) for r in requests)
            file_bytes = checkpointed_size(database.engine, db_path) - empty_bytes
            grown = {
                name: pages - empty_pages.get(name, 0)
                for name, pages in table_pages(database.engine).items()
            }
            cycles = first.cycles
            print(
                f"cached run: {cycles} cycles in {filled_s:.0f} s, {len(requests)} requests; "
                f"images per request {statistics.median([len(r.images) for r in requests]):.0f}, "
                f"PNG {statistics.median(png) / 1000:.1f} kB "
                f"(base64 {statistics.median(b64) / 1000:.1f} kB) per request"
            )
            print(
                f"stored: {images} distinct images of {raw} sent, {stored / 1000:.0f} kB "
                f"({stored / cycles / 1000:.1f} kB a cycle, "
                f"{stored / cycles * CYCLES_PER_DAY / 1e6:.1f} MB per agent-day at 3 min); "
                f"database file +{file_bytes / 1e6:.1f} MB "
                f"({file_bytes / cycles * CYCLES_PER_DAY / 1e6:.1f} MB per agent-day, "
                "records and images)"
            )
            if grown:
                page_kb = file_bytes / max(sum(grown.values()), 1) / 1000
                print(
                    "new pages by table (share of the growth): "
                    + ", ".join(
                        f"{name} {pages} ({pages / sum(grown.values()):.0%})"
                        for name, pages in sorted(grown.items(), key=lambda item: -item[1])
                        if pages
                    )
                    + f"; {page_kb:.1f} kB a page"
                )
            asked = llm.request_count
            rates = []
            for _ in range(3):
                result = asyncio.run(run_backtest(settings, options("replay"), database=database))
                rates.append(result.cycles / result.elapsed_s)
            assert llm.request_count == asked, "a replay must not call the model"
            print(
                f"replay: {result.cycles} cycles, median {statistics.median(rates):.0f} cycles/s "
                f"(runs {', '.join(f'{rate:.0f}' for rate in rates)}), no request sent"
            )
            database.engine.dispose()


if __name__ == "__main__":
    main()
