"""Drive `arena run` through faults and SIGKILLs, then hand the database to the checker.

The daemon runs as users run it (`python -m app run`, real ccxt and the real openai SDK over
loopback) against `ExchangeFaultProxy` and `FaultyModelServer`, which sit in front of the fake
exchange and the fake model server of `tests/fakes/`. Each life of the daemon lasts a seeded
random time, then ends by SIGKILL and a restart; the last life ends by SIGTERM. A life that ends
on its own is a crash. Used by `tests/faults/test_fault_run.py` (bounded) and
`benchmarks/soak_faults.py` (long).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.fakes.exchange import FakeExchange, synthetic_candles
from tests.fakes.openai_server import UNLIMITED_QUOTA, FakeOpenAIServer
from tests.fakes.traders import contrarian_trader, trend_trader
from tests.faults.checker import Checker, RunRecord, summary
from tests.faults.exchange_proxy import ExchangeFaultProxy
from tests.faults.model_server import FaultyModelServer
from tests.faults.plan import FaultLog, FaultPlan

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEFRAME = "1m"


@dataclass(frozen=True)
class RunOptions:
    """One fault run: how many kills and faults at least, how many agents, which seed.

    The run ends once `kills` SIGKILLs are done and `min_faults` faults served, and, with
    `duration_s`, not before that many seconds. Each life is killed after a seeded number of
    exchange requests (`kill_after_requests`, a state of the daemon, so a slow machine only makes
    the run longer), or with `life_s`, after a seeded time around it.
    """

    kills: int = 10
    min_faults: int = 300
    duration_s: float = 0.0
    agents: int = 6
    seed: int = 17
    interval: str = "5s"
    plan: FaultPlan = field(default_factory=FaultPlan)
    kill_after_requests: tuple[int, int] = (25, 140)
    life_s: float | None = None
    exchange_timeout_s: float = 3.0
    sample_memory_s: float = 5.0
    # Only keeps a broken run from hanging: the run itself ends on the states above.
    limit_s: float = 1800.0


@dataclass
class RunResult:
    """What happened: the record the checker read, its violations and the figures."""

    record: RunRecord
    violations: dict[str, list[str]]
    figures: dict[str, Any]
    fault_counts: dict[str, int]
    memory_kb: list[tuple[float, int]]
    tracebacks: int
    log_path: Path


def agent_specs(count: int) -> dict[str, str]:
    """Return {agent spec: model}: two baselines, then models on ModelScope and on OpenAI."""
    specs = {"hodl=baseline:buy_and_hold": "", "ema=baseline:ema_trend": ""}
    for i in range(max(0, count - 2)):
        if i % 2 == 0:
            model = f"Qwen/Fault{i}-Instruct-2507"
            specs[f"ms{i}=modelscope:{model}"] = model
        else:
            model = f"fault-llama-{i}"
            specs[f"oa{i}=openai:{model}"] = model
    return specs


def _seconds(interval: str) -> float:
    unit = {"s": 1, "m": 60, "h": 3600}[interval[-1]]
    return float(interval[:-1]) * unit


def _rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class _Daemon:
    """One life of `arena run`, its stderr appended to the run's log file."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.log = log.open("a")
        self.started_at = time.time()
        self.process = subprocess.Popen(
            args, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=self.log, text=True
        )

    def end(self, how: signal.Signals, timeout_s: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(how)
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.log.close()
        return code


def honest_bands(
    candles: dict[str, Any], start: datetime, end: datetime
) -> dict[str, list[list[float]]]:
    """Return per coin [[minute open ms, low, high], ...] between `start` and `end`."""
    out: dict[str, list[list[float]]] = {}
    for coin, frame in candles.items():
        part = frame[(frame.index >= start) & (frame.index <= end)]
        ms = part.index.as_unit("ms").asi8
        out[coin] = [
            [int(t), float(lo), float(hi)]
            for t, lo, hi in zip(ms, part["low"], part["high"], strict=True)
        ]
    return out


def _life(daemon: _Daemon, ended_at: float, how: str, code: int) -> dict[str, Any]:
    return {"started_at": daemon.started_at, "ended_at": ended_at, "ended_by": how, "rc": code}


def run_faults(options: RunOptions, workdir: Path) -> RunResult:
    """Run the daemon through the plan's faults and `options.kills` SIGKILLs; check the books."""
    workdir.mkdir(parents=True, exist_ok=True)
    database = workdir / "arena.db"
    log_path = workdir / "daemon.log"
    now = datetime.now(UTC)
    candles = synthetic_candles(start=now - timedelta(days=40), end=now + timedelta(days=1))
    specs = agent_specs(options.agents)
    models = [model for model in specs.values() if model]
    traders = {m: (trend_trader if i % 2 == 0 else contrarian_trader) for i, m in enumerate(models)}

    def respond(request: dict[str, Any]) -> str:
        return traders.get(str(request.get("model")), trend_trader)(request)

    faults = FaultLog()
    rng = random.Random(f"{options.seed}:kills")
    interval_s = _seconds(options.interval)
    lives: list[dict[str, Any]] = []
    memory: list[tuple[float, int]] = []
    with (
        FakeExchange(candles) as upstream_exchange,
        # The upstream's own daily quota is not a planned fault: it never runs out here.
        FakeOpenAIServer(
            "modelscope",
            responder=respond,
            requests_limit=UNLIMITED_QUOTA,
            model_requests_limit=UNLIMITED_QUOTA,
        ) as upstream_model,
        ExchangeFaultProxy(
            upstream_exchange.url,
            options.plan,
            faults,
            timeframe=TIMEFRAME,
            slow_s=options.exchange_timeout_s + 1.5,
        ) as exchange,
        FaultyModelServer(upstream_model.url, options.plan, faults) as model_server,
    ):
        base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
        env = {
            **base,
            "PYTHONPATH": str(REPO_ROOT),
            "EXCHANGE_ID": "binanceusdm",
            "EXCHANGE_API_URL": exchange.url,
            "EXCHANGE_TIMEOUT_S": str(options.exchange_timeout_s),
            "DATABASE_URL": f"sqlite:///{database}",
            "MODELSCOPE_API_KEY": "ms-test-not-a-real-key",
            "MODELSCOPE_BASE_URL": f"{model_server.url}/v1",
            "OPENAI_API_KEY": "sk-test-not-a-real-key",
            "OPENAI_BASE_URL": f"{model_server.url}/v1",
            "LLM_MAX_RETRIES": "1",
            # The fake exchange's candles close as fast as the run needs.
            "SCHEDULE_MIN_CADENCE": options.interval,
            "SCHEDULE_INTERVAL": options.interval,
            "SCHEDULE_MONITOR_INTERVAL": options.interval,
            "SCHEDULE_INTRADAY_TIMEFRAME": TIMEFRAME,
            "LOG_LEVEL": "INFO",
        }
        args = [sys.executable, "-m", "app", "run", "--no-serve"]
        args += [arg for spec in specs for arg in ("--agent", spec)]
        started = time.time()
        limit_at = started + options.limit_s
        kills_left = options.kills

        def served() -> int:
            # A frozen ticker rides along a frozen candle: it does not count as a fault of its own.
            return sum(1 for event in faults.events if event["kind"] != "frozen_price")

        def done() -> bool:
            return (
                kills_left == 0
                and served() >= options.min_faults
                and time.time() >= started + options.duration_s
            )

        while time.time() < limit_at:
            exchange.life = len(lives)
            daemon = _Daemon(args, env, workdir, log_path)
            first_request = exchange.request_count
            kill_after = rng.randint(*options.kill_after_requests)
            life_end = (
                time.time() + options.life_s * rng.uniform(0.5, 1.5)
                if options.life_s is not None
                else None
            )

            def due(
                life_end: float | None = life_end,
                kill_after: int = kill_after,
                first_request: int = first_request,
                kills_left: int = kills_left,
            ) -> bool:
                if kills_left == 0:
                    # The last life too runs a while before its SIGTERM, whatever is served by then.
                    return done() and exchange.request_count - first_request >= kill_after
                if life_end is not None:
                    return time.time() >= life_end
                return exchange.request_count - first_request >= kill_after

            next_sample = time.time()
            try:
                while not due() and daemon.process.poll() is None and time.time() < limit_at:
                    if time.time() >= next_sample:
                        rss = _rss_kb(daemon.process.pid)
                        if rss is not None:
                            memory.append((round(time.time() - started, 1), rss))
                        next_sample += options.sample_memory_s
                    time.sleep(0.05)
            except BaseException:
                daemon.end(signal.SIGKILL)  # never leave a daemon behind (Ctrl+C, a bug here)
                raise
            ended_at = time.time()
            if daemon.process.poll() is not None:
                code = daemon.end(signal.SIGTERM)
                lives.append(_life(daemon, ended_at, "exit", code))
                continue
            if kills_left:
                lives.append(_life(daemon, ended_at, "kill", daemon.end(signal.SIGKILL)))
                kills_left -= 1
                continue
            lives.append(_life(daemon, ended_at, "stop", daemon.end(signal.SIGTERM, 90)))
            break
        exchange.enabled = model_server.enabled = False
        record = RunRecord(
            interval_s=interval_s,
            timeframe_s=60.0,
            agents={spec.split("=", 1)[0]: model for spec, model in specs.items()},
            lives=lives,
            events=faults.to_json()["events"],
            llm_requests=faults.to_json()["llm_requests"],
            honest=honest_bands(candles, now - timedelta(hours=2), datetime.now(UTC)),
        )
    record.write(workdir / "record.json")
    violations = Checker(database, record).run()
    figures = summary(database, record)
    tracebacks = log_path.read_text(errors="replace").count("Traceback")
    return RunResult(
        record=record,
        violations=violations,
        figures=figures,
        fault_counts=faults.counts(),
        memory_kb=memory,
        tracebacks=tracebacks,
        log_path=log_path,
    )
