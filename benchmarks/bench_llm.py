"""LLM providers: concurrency of six agents, per-call overhead, event-loop stalls, cache hits.

    .venv/bin/python benchmarks/bench_llm.py [--rounds 5] [--calls 200]

The fake OpenAI-compatible server runs in its own process (as a real provider would), so its
work does not share this process's interpreter lock. Every call goes through the daemon's path:
the chain `app.wiring` builds -> `FallbackChain` -> `OpenAIChatModel` -> `AsyncOpenAI`, with quota
rows written to a SQLite file. Prints medians.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy.orm import Session, sessionmaker

from app.config import AgentConfig, Settings
from app.db.migrate import upgrade
from app.db.session import make_engine, make_session_factory
from app.domain import ChatMessage
from tests.fakes.runtime import LlmHarness

ROOT = Path(__file__).resolve().parents[1]
AGENTS = 6
MESSAGES = (
    ChatMessage("system", "You trade crypto perpetuals. Answer with one JSON object." * 40),
    ChatMessage("user", "BTC is at 100000. ETH is at 3400. Decide as json." * 80),
)


@contextmanager
def fake_server(delay_s: float) -> Iterator[str]:
    """Run the fake in a subprocess; yield its base URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_server", "--delay-s", str(delay_s)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.startswith("READY "):
            raise RuntimeError(f"the fake did not start: {line!r}")
        yield line.removeprefix("READY ")
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=10)


def database(folder: Path, name: str) -> sessionmaker[Session]:
    url = f"sqlite:///{folder / name}"
    engine = make_engine(url)
    upgrade(url, engine=engine)
    return make_session_factory(engine)


def settings_for(base_url: str) -> Settings:
    return Settings(
        modelscope={"api_key": "bench", "base_url": base_url},
        llm={"max_retries": 0},
        agents=[f"agent{i}=modelscope:Qwen/M{i}" for i in range(AGENTS)],
    )


async def lag_probe(stop: asyncio.Event, lags_s: list[float], step_s: float = 0.005) -> None:
    """Record how late the event loop wakes a 5 ms sleeper (its stall)."""
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(step_s)
        lags_s.append(time.perf_counter() - started - step_s)


async def concurrent_rounds(
    settings: Settings, factory: sessionmaker[Session] | None, rounds: int
) -> tuple[list[float], float]:
    runtime = LlmHarness(settings, session_factory=factory)
    chains = [runtime.chat_model(agent) for agent in settings.agents]
    walls: list[float] = []
    lags: list[float] = []
    try:
        await asyncio.gather(*(chain.complete(MESSAGES) for chain in chains))  # warm-up
        for _ in range(rounds):
            stop = asyncio.Event()
            probe = asyncio.create_task(lag_probe(stop, lags))
            started = time.perf_counter()
            await asyncio.gather(*(chain.complete(MESSAGES) for chain in chains))
            walls.append(time.perf_counter() - started)
            stop.set()
            await probe
    finally:
        await runtime.aclose()
    return walls, max(lags) if lags else 0.0


async def sequential_calls(
    settings: Settings, factory: sessionmaker[Session] | None, calls: int
) -> list[float]:
    runtime = LlmHarness(settings, session_factory=factory)
    chain = runtime.chat_model(settings.agents[0])
    times: list[float] = []
    try:
        for _ in range(10):
            await chain.complete(MESSAGES)
        for _ in range(calls):
            started = time.perf_counter()
            await chain.complete(MESSAGES)
            times.append(time.perf_counter() - started)
    finally:
        await runtime.aclose()
    return times


async def cache_hits(settings: Settings, factory: sessionmaker[Session], calls: int) -> list[float]:
    agent = AgentConfig(name="replay", provider="modelscope", model="Qwen/M0")
    live = LlmHarness(settings, session_factory=factory, cache_mode="live")
    prompts = [
        (MESSAGES[0], ChatMessage("user", f"{MESSAGES[1].content} cycle {i}")) for i in range(calls)
    ]
    try:
        chain = live.chat_model(agent)
        for prompt in prompts:
            await chain.complete(prompt)
    finally:
        await live.aclose()
    replay = LlmHarness(settings, session_factory=factory, cache_mode="replay")
    times: list[float] = []
    try:
        chain = replay.chat_model(agent)
        for prompt in prompts:
            started = time.perf_counter()
            result = await chain.complete(prompt)
            times.append(time.perf_counter() - started)
            assert result.cache_hit
    finally:
        await replay.aclose()
    return times


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def main() -> None:
    """Run every measurement and print the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        with fake_server(1.0) as url:
            for label, factory in (
                ("with quota rows", database(tmp, "a.db")),
                ("no database", None),
            ):
                walls, worst_lag_s = asyncio.run(
                    concurrent_rounds(settings_for(url), factory, args.rounds)
                )
                print(
                    f"6 agents at once, fake answering in 1 s, {label}: median "
                    f"{statistics.median(walls):.3f} s, max {max(walls):.3f} s over "
                    f"{args.rounds} rounds (worst event-loop stall {ms(worst_lag_s)})"
                )
        with fake_server(0.0) as url:
            settings = settings_for(url)
            with_db = asyncio.run(sequential_calls(settings, database(tmp, "b.db"), args.calls))
            without_db = asyncio.run(sequential_calls(settings, None, args.calls))
            hits = asyncio.run(cache_hits(settings, database(tmp, "c.db"), args.calls))
        print(
            f"per call, instant fake, with quota rows: median {ms(statistics.median(with_db))}, "
            f"p95 {ms(statistics.quantiles(with_db, n=20)[-1])} ({args.calls} calls)"
        )
        print(
            f"per call, instant fake, no database: median {ms(statistics.median(without_db))}, "
            f"p95 {ms(statistics.quantiles(without_db, n=20)[-1])}"
        )
        print(
            f"cache hit in replay mode (SQLite): median {ms(statistics.median(hits))}, "
            f"p95 {ms(statistics.quantiles(hits, n=20)[-1])} ({len(hits)} prompts), "
            f"i.e. {1 / statistics.median(hits):,.0f} lookups/s"
        )


if __name__ == "__main__":
    main()
