"""Dashboard speed: latency of the busiest endpoints and pages, and a 200 requests/s load while a
writer commits cycles.

    .venv/bin/python benchmarks/bench_web.py [--db PATH] [--days 30] [--agents 6]

1. Builds (once; kept at --db) a database of `--days` of `--agents` agents at a 3-minute cadence
   (30 days x 6 agents = 86,400 agent-cycles) through the real write path, `SqlCycleStore.
   record_cycles`, with synthetic records: four model agents with prompts (system prompt and
   market section shared, as the engine stores them), reasoning, six decisions per call and a
   trade every two hours; two baselines without prompts.
2. Starts `arena serve` on it (its own process) and times sequential requests: warm (between two
   commits, from the read model's cache) and cold (the first request after a commit).
3. A writer process commits one cycle of every agent every 2 s; first alone for 30 s, then for
   30 s under a load client sending 200 requests/s (open loop, mixed endpoints) from a third
   process. Reports the load's errors and latencies and the writer's commit times in both phases.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from app.db.migrate import upgrade  # noqa: E402
from app.db.repository import AgentIdentity, SqlCycleStore  # noqa: E402
from app.db.session import make_engine  # noqa: E402
from app.decisions import TradeDecision  # noqa: E402
from app.domain import (  # noqa: E402
    AccountState,
    AccountView,
    ChatMessage,
    ChatResult,
    ClosedTrade,
    ExitPlan,
    Fill,
    Position,
    TokenUsage,
)
from app.ports import AgentCycleRecord, DecisionRecord, StrategyAnswer  # noqa: E402

COINS = ("BTC", "ETH", "SOL", "BNB", "XRP", "DOGE")
STEP = timedelta(minutes=3)
START = datetime(2025, 10, 1, tzinfo=UTC)
CASH = 10_000.0
SYSTEM = "You are a trading agent on Hyperliquid perpetuals. " * 60
ENDPOINTS = (
    "/api/leaderboard",
    "/api/account-totals",
    "/api/conversations",
    "/",
)
LOAD_MIX = (
    "/api/leaderboard",
    "/api/account-totals?lastHourlyMarker=700",
    "/api/conversations",
    "/",
    "/api/crypto-prices",
    "/api/v1/version",
    "/api/v1/runs/live/chart",
    "/api/positions",
)


class SyntheticAgent:
    """One agent's books, moving on a shared random walk; a trade every 40 cycles."""

    def __init__(self, name: str, *, model: bool, seed: int) -> None:
        self.name = name
        self.model = model
        self.rng = random.Random(seed)
        self.cash = CASH
        self.realized = 0.0
        self.fees = 0.0
        self.position: Position | None = None
        self.invocation = 0

    def identity(self) -> AgentIdentity:
        if self.model:
            return AgentIdentity(self.name, "modelscope", f"Qwen/{self.name}", (), CASH)
        return AgentIdentity(self.name, "baseline", "ema_trend", (), CASH)

    def books(self) -> AccountState:
        positions = {} if self.position is None else {self.position.coin: self.position}
        return AccountState(CASH, self.cash, self.realized, self.fees, 0.0, positions)

    def record(self, at: datetime, prices: dict[str, float], market: str) -> AgentCycleRecord:
        self.invocation += 1
        price = prices["BTC"]
        fills: list[Fill] = []
        closed: list[ClosedTrade] = []
        decisions = [TradeDecision(coin=coin, signal="hold") for coin in COINS]
        if self.position is None and self.invocation % 40 == 0:
            quantity = round(2_000.0 / price, 5)
            fee = quantity * price * 0.00045
            self.position = Position(
                coin="BTC",
                side="long",
                quantity=quantity,
                entry_price=price,
                leverage=5,
                margin_usd=quantity * price / 5,
                liquidation_price=price * 0.805,
                opened_at=at,
                exit_plan=ExitPlan(price * 1.02, price * 0.99, "4h close below EMA20"),
                confidence=0.6,
                risk_usd=20.0,
                entry_fee_usd=fee,
            )
            self.cash -= self.position.margin_usd + fee
            self.fees += fee
            decisions[0] = TradeDecision(
                coin="BTC", signal="buy_to_enter", quantity=quantity, leverage=5, confidence=0.6
            )
            fills.append(Fill("BTC", "buy", quantity, price, price, fee, "entry", at))
        elif self.position is not None and self.invocation % 40 == 20:
            held = self.position
            fee = held.quantity * price * 0.00045
            gross = (price - held.entry_price) * held.quantity
            self.cash += held.margin_usd + gross - fee
            self.fees += fee
            self.realized += gross
            closed.append(
                ClosedTrade(
                    coin="BTC",
                    side="long",
                    quantity=held.quantity,
                    leverage=held.leverage,
                    entry_price=held.entry_price,
                    exit_price=price,
                    opened_at=held.opened_at,
                    closed_at=at,
                    entry_fee_usd=held.entry_fee_usd,
                    exit_fee_usd=fee,
                    funding_usd=0.0,
                    gross_pnl_usd=gross,
                    net_pnl_usd=gross - held.entry_fee_usd - fee,
                    exit_reason="close_position",
                )
            )
            fills.append(
                Fill("BTC", "sell", held.quantity, price, price, fee, "close_position", at, gross)
            )
            decisions[0] = TradeDecision(coin="BTC", signal="close_position")
            self.position = None
        unrealized = (
            0.0
            if self.position is None
            else (price - self.position.entry_price) * self.position.quantity
        )
        margin = 0.0 if self.position is None else self.position.margin_usd
        books = self.books()
        view = AccountView(
            at, CASH, self.cash, margin, unrealized, self.realized, self.fees, 0.0, books.positions
        )
        messages: tuple[ChatMessage, ...] = ()
        answer = StrategyAnswer(decisions=tuple(decisions))
        if self.model:
            account = (
                f"Account value {view.equity_usd:.2f}; cash {self.cash:.2f}; "
                f"invocation {self.invocation}."
            )
            messages = (ChatMessage("system", SYSTEM), ChatMessage("user", market + "\n" + account))
            text = json.dumps({d.coin: d.model_dump(exclude_none=True) for d in decisions})
            reasoning = f"BTC at {price:.1f}; trend intact, holding the book. " * 12
            chat = ChatResult(
                text=text,
                provider="modelscope",
                model=f"Qwen/{self.name}",
                reasoning=reasoning,
                finish_reason="stop",
                usage=TokenUsage(4_000, 300, 0, 4_300),
                latency_s=self.rng.uniform(2, 20),
            )
            answer = StrategyAnswer(decisions=tuple(decisions), chat=chat)
        return AgentCycleRecord(
            agent=self.name,
            scheduled_at=at,
            started_at=at,
            finished_at=at + timedelta(seconds=5),
            invocation=self.invocation,
            status="ok",
            books=books,
            view=view,
            prompt_version="v1",
            messages=messages,
            answer=answer,
            decisions=tuple(
                DecisionRecord(
                    d,
                    "executed" if d.signal != "hold" else "held",
                    filled_quantity=d.quantity if d.signal == "buy_to_enter" else None,
                )
                for d in decisions
            ),
            fills=tuple(fills),
            closed_trades=tuple(closed),
            shared_texts=(SYSTEM, market),
        )


class Market:
    """Six coins on a seeded random walk, and the market section a prompt would show."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.prices = {
            "BTC": 100_000.0,
            "ETH": 4_000.0,
            "SOL": 200.0,
            "BNB": 1_000.0,
            "XRP": 2.5,
            "DOGE": 0.2,
        }

    def step(self) -> tuple[dict[str, float], str]:
        for coin in COINS:
            self.prices[coin] *= math.exp(self.rng.gauss(0, 0.002))
        lines = [
            f"### ALL {coin} DATA\ncurrent_price = {price:.6g}, "
            f"current_ema20 = {price * 0.999:.6g}\n"
            + "Intraday series: "
            + ", ".join(f"{price * (1 + i / 1000):.6g}" for i in range(10))
            for coin, price in self.prices.items()
        ]
        return dict(self.prices), "\n\n".join(lines) * 2


def make_agents(count: int) -> list[SyntheticAgent]:
    return [SyntheticAgent(f"agent{i + 1}", model=i < count - 2, seed=i) for i in range(count)]


def build_database(path: Path, *, days: int, agents: int) -> None:
    url = f"sqlite:///{path}"
    upgrade(url)
    engine = make_engine(url)
    store = SqlCycleStore(engine)
    crew = make_agents(agents)
    store.register_agents([agent.identity() for agent in crew], at=START)
    market = Market()
    cycles = int(timedelta(days=days) / STEP)
    started = time.perf_counter()
    batch: list[AgentCycleRecord] = []
    for index in range(cycles):
        at = START + index * STEP
        prices, section = market.step()
        batch.extend(agent.record(at, prices, section) for agent in crew)
        if len(batch) >= 600 or index == cycles - 1:
            store.record_cycles(batch)
            batch = []
        if index % 2000 == 0:
            print(
                f"  {index:,}/{cycles:,} cycles ({time.perf_counter() - started:.0f} s)",
                file=sys.stderr,
            )
    engine.dispose()
    print(
        f"built {cycles * agents:,} agent-cycles in {time.perf_counter() - started:.0f} s: "
        f"{path.stat().st_size / 1e6:.0f} MB",
        file=sys.stderr,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(path: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    env.update(PYTHONPATH=str(REPO_ROOT), DATABASE_URL=f"sqlite:///{path}", LOG_LEVEL="WARNING")
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port)],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("arena serve did not start")


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def time_requests(base: str, path: str, count: int) -> list[float]:
    import httpx

    timings = []
    with httpx.Client(base_url=base, timeout=30) as client:
        for _ in range(count):
            started = time.perf_counter()
            response = client.get(path)
            timings.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
    return timings


class Writer:
    """The daemon's write path: one cycle of every agent per call, timed."""

    def __init__(self, path: Path, agents: int) -> None:
        self.engine = make_engine(f"sqlite:///{path}")
        self.store = SqlCycleStore(self.engine)
        self.crew = make_agents(agents)
        ids = self.store.register_agents([agent.identity() for agent in self.crew], at=START)
        for agent in self.crew:
            restored = self.store.restore(agent.name)
            agent.invocation = restored.invocations
            agent.cash = restored.books.cash_usd
            agent.realized = restored.books.realized_pnl_usd
            agent.fees = restored.books.fees_paid_usd
            agent.position = restored.books.positions.get("BTC")
        del ids
        with self.engine.connect() as connection:
            from sqlalchemy import func, select

            from app.db import models

            last = connection.execute(select(func.max(models.Cycle.scheduled_at))).scalar_one()
        self.at = last.replace(tzinfo=UTC) if last.tzinfo is None else last
        self.market = Market(seed=int(self.at.timestamp()))

    def commit(self) -> float:
        self.at += STEP
        prices, section = self.market.step()
        records = [agent.record(self.at, prices, section) for agent in self.crew]
        started = time.perf_counter()
        for record in records:  # the daemon writes each agent's cycle as it finishes
            self.store.record_cycle(record)
        return (time.perf_counter() - started) * 1000


def writer_main(path: Path, agents: int, seconds: float, every_s: float, out: Path) -> None:
    writer = Writer(path, agents)
    timings = []
    deadline = time.monotonic() + seconds
    next_at = time.monotonic()
    while time.monotonic() < deadline:
        timings.append(writer.commit())
        next_at += every_s
        time.sleep(max(0.0, next_at - time.monotonic()))
    out.write_text(json.dumps(timings))


async def load_main(base: str, rate: float, seconds: float, out: Path) -> None:
    import aiohttp

    results: list[tuple[float, int]] = []
    errors: list[str] = []
    connector = aiohttp.TCPConnector(limit=64)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(base, connector=connector, timeout=timeout) as session:

        async def one(path: str) -> None:
            started = time.perf_counter()
            try:
                async with session.get(path) as response:
                    await response.read()
                    results.append(((time.perf_counter() - started) * 1000, response.status))
                    if response.status != 200:
                        errors.append(f"{path}: {response.status}")
            except (aiohttp.ClientError, TimeoutError) as error:
                errors.append(f"{path}: {type(error).__name__}")

        tasks = []
        began = time.monotonic()
        total = int(rate * seconds)
        for index in range(total):
            # Open loop: requests leave on schedule whether or not earlier ones have returned.
            delay = began + index / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(LOAD_MIX[index % len(LOAD_MIX)])))
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - began
    payload = {"results": results, "errors": errors, "elapsed_s": elapsed, "sent": total}
    out.write_text(json.dumps(payload))


def summary(values: Sequence[float]) -> str:
    p50, p95 = percentile(values, 0.5), percentile(values, 0.95)
    return f"p50 {p50:.1f} ms, p95 {p95:.1f} ms (n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--db", type=Path, default=Path("/tmp/arena-bench-web.db"))
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--agents", type=int, default=6)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--role", choices=("main", "writer", "load"), default="main")
    parser.add_argument("--base", default="")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.role == "writer":
        writer_main(args.db, args.agents, args.seconds, 2.0, args.out)
        return
    if args.role == "load":
        asyncio.run(load_main(args.base, args.rate, args.seconds, args.out))
        return

    if not args.db.exists():
        print(f"building {args.db} ...", file=sys.stderr)
        build_database(args.db, days=args.days, agents=args.agents)
    port = free_port()
    server = start_server(args.db, port)
    base = f"http://127.0.0.1:{port}"
    try:
        print(f"database: {args.db} ({args.db.stat().st_size / 1e6:.0f} MB)")
        print("warm (between commits):")
        for path in (*ENDPOINTS, "/api/v1/runs/live/chart"):
            time_requests(base, path, 3)
            print(f"  {path:28s} {summary(time_requests(base, path, args.requests))}")
        print("cold (first request after a commit):")
        writer = Writer(args.db, args.agents)
        cold: dict[str, list[float]] = {path: [] for path in ENDPOINTS}
        for _ in range(10):
            for path in ENDPOINTS:
                writer.commit()
                cold[path].extend(time_requests(base, path, 1))
        writer.engine.dispose()
        for path, values in cold.items():
            print(f"  {path:28s} {summary(values)}")

        here = Path(__file__).resolve()
        alone_out, loaded_out, load_out = (
            args.db.with_suffix(f".{n}.json") for n in ("alone", "loaded", "load")
        )
        common = [sys.executable, str(here), "--db", str(args.db), "--agents", str(args.agents)]
        subprocess.run(
            [*common, "--role", "writer", "--seconds", str(args.seconds), "--out", str(alone_out)],
            check=True,
        )
        writer_proc = subprocess.Popen(
            [*common, "--role", "writer", "--seconds", str(args.seconds), "--out", str(loaded_out)]
        )
        load_proc = subprocess.Popen(
            [
                *common,
                "--role",
                "load",
                "--base",
                base,
                "--rate",
                str(args.rate),
                "--seconds",
                str(args.seconds),
                "--out",
                str(load_out),
            ]
        )
        load_proc.wait()
        writer_proc.wait()
        alone = json.loads(alone_out.read_text())
        loaded = json.loads(loaded_out.read_text())
        load = json.loads(load_out.read_text())
        latencies = [ms for ms, _ in load["results"]]
        print(
            f"load: {load['sent']:,} requests in {load['elapsed_s']:.1f} s "
            f"({load['sent'] / load['elapsed_s']:.0f}/s), {len(load['errors'])} errors; "
            f"{summary(latencies)}"
        )
        if load["errors"]:
            print("  errors:", load["errors"][:10])
        print(f"writer alone:     one cycle of {args.agents} agents committed in {summary(alone)}")
        print(
            f"writer under load: one cycle of {args.agents} agents committed in {summary(loaded)}"
        )
        print(
            f"  (means {statistics.mean(alone):.1f} ms alone, "
            f"{statistics.mean(loaded):.1f} ms under load)"
        )
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
