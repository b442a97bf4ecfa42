"""Database growth per agent-day of live-like operation.

The live path exactly as `arena run` takes it (ccxt against the fake exchange, the openai SDK
against the fake OpenAI-compatible server, the engine, the SQLite store), on a simulated clock:
one day of 3-minute cycles (480) for one or two LLM agents. Agents asked in the same cycle share
one stored copy of the market section, so one agent alone is the worst case per agent. Each
answer carries reasoning as long as a real Alpha Arena chain of thought (Season 1's `cot_trace`,
median about 2.2k characters) and a six-coin JSON decision, so prompts, reasoning, decisions,
fills, snapshots, quota rows and the response cache all grow as they would live.

    .venv/bin/python benchmarks/bench_db_growth.py [--cycles 480] [--agents 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.config import AgentConfig, load_settings
from app.wiring import build_live_arena
from tests.fakes.exchange import FakeExchange, synthetic_candles
from tests.fakes.openai_server import UNLIMITED_QUOTA, FakeOpenAIServer, Reply, answer
from tests.fakes.traders import contrarian_trader, trend_trader

S1_CONVERSATIONS = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "alpha-arena-s1"
    / "conversations.json"
)
START = datetime(2026, 1, 10, 0, 0, tzinfo=UTC)
STEP = timedelta(minutes=3)
MODELS = {"Qwen/Growth-A-Instruct": trend_trader, "Qwen/Growth-B-Instruct": contrarian_trader}


def reasoning_texts() -> list[str]:
    if not S1_CONVERSATIONS.is_file():
        return ["Checking each coin's trend, momentum and my open positions. " * 36]
    conversations = json.loads(S1_CONVERSATIONS.read_text(encoding="utf-8"))["conversations"]
    texts = [c["cot_trace"] for c in conversations if isinstance(c["cot_trace"], str)]
    return texts or ["(no reasoning)"]


def table_sizes(path: Path) -> dict[str, int]:
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        try:
            rows = connection.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")
            return {name: int(size) for name, size in rows}
        except sqlite3.OperationalError:  # SQLite built without the dbstat table
            return {"(all)": path.stat().st_size}
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=480, help="3-minute cycles (480 = a day)")
    parser.add_argument("--agents", type=int, choices=(1, 2), default=2, help="LLM agents")
    args = parser.parse_args()
    texts = reasoning_texts()
    calls = [0]

    def respond(request: dict[str, Any]) -> Reply:
        calls[0] += 1
        trader = MODELS[str(request["model"])]
        return answer(trader(request), reasoning=texts[calls[0] % len(texts)])

    now = [START]
    candles = synthetic_candles(start=START - timedelta(days=40), end=START + timedelta(days=2))
    with (
        tempfile.TemporaryDirectory() as folder,
        FakeExchange(candles, clock=lambda: now[0].timestamp()) as exchange,
        FakeOpenAIServer(
            "modelscope",
            responder=respond,
            requests_limit=UNLIMITED_QUOTA,
            model_requests_limit=UNLIMITED_QUOTA,
        ) as llm,
    ):
        database = Path(folder) / "growth.db"
        os.environ.update(
            DATABASE_URL=f"sqlite:///{database}",
            EXCHANGE_ID="binanceusdm",
            EXCHANGE_API_URL=exchange.url,
            MODELSCOPE_API_KEY="ms-benchmark",
            MODELSCOPE_BASE_URL=llm.base_url,
            LOG_LEVEL="WARNING",
        )
        settings = load_settings(env_file=None)
        agents = [
            AgentConfig.from_spec(f"a{i}=modelscope:{m}")
            for i, m in enumerate(list(MODELS)[: args.agents])
        ]

        async def operate() -> tuple[dict[str, int], dict[str, int]]:
            async with build_live_arena(settings, agents, feed_clock=lambda: now[0]) as arena:
                now[0] = START + timedelta(seconds=5)
                await arena.run_once(START)
                before = table_sizes(database)
                for i in range(1, args.cycles + 1):
                    scheduled = START + i * STEP
                    now[0] = scheduled + timedelta(seconds=5)
                    await arena.run_once(scheduled)
                return before, table_sizes(database)

        began = time.perf_counter()
        before, after = asyncio.run(operate())
        elapsed = time.perf_counter() - began

    days = args.cycles * STEP / timedelta(days=1)
    per_table = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    candles_bytes = sum(size for name, size in per_table.items() if "candle" in name)
    total = sum(per_table.values())
    per_agent_day = (total - candles_bytes) / len(agents) / days
    print(f"{args.cycles} cycles ({days:g} days) x {len(agents)} agents in {elapsed:.0f} s")
    for name, grown in sorted(per_table.items(), key=lambda item: -item[1])[:10]:
        print(f"  {name:40s} {grown / 1e6:7.3f} MB")
    print(f"growth per agent-day (candle cache excluded): {per_agent_day / 1e6:.2f} MB")
    print(f"candle cache (shared by all agents): {candles_bytes / 1e6 / days:.2f} MB per day")


if __name__ == "__main__":
    main()
