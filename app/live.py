"""`arena run`: the live arena, from settings to a running daemon (or one cycle with `--once`)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from app.config import AgentConfig, Settings
from app.db.lock import DaemonLock, lock_path_for
from app.db.models import LIVE_RUN_ID
from app.domain import floor_time, timeframe_to_timedelta
from app.errors import ConfigError
from app.scheduler import Daemon, utc_now
from app.trading.engine import AgentSlot, CycleEngine, CycleReport, EngineConfig
from app.wiring import (
    agent_identities,
    build_strategies,
    cycle_store,
    engine_config,
    interval_of,
    live_market,
    missing_keys,
    open_database,
    restore_slots,
)

log = logging.getLogger(__name__)

BASELINES_HINT = (
    "or run the rule-based baselines, which need no key: "
    "arena run --agent hodl=baseline:buy_and_hold --agent trend=baseline:ema_trend"
)


def runnable_agents(settings: Settings, agents: Sequence[AgentConfig]) -> list[AgentConfig]:
    """Return the agents that can run; refuse to start when none can (no key, no baseline)."""
    if not agents:
        raise ConfigError(
            "no agents configured: list them in arena.toml ([[agents]]) or pass "
            "--agent NAME=PROVIDER:MODEL; " + BASELINES_HINT
        )
    missing = missing_keys(settings, agents)
    lacking = {name for names in missing.values() for name in names}
    ready = [agent for agent in agents if agent.name not in lacking]
    parts = [
        f"{key} (agent{'s' if len(names) > 1 else ''} {', '.join(names)})"
        for key, names in missing.items()
    ]
    if not ready:
        raise ConfigError(
            f"no API key: set {'; '.join(parts)} in .env or the environment "
            f"(cp .env.example .env, then fill in the key); {BASELINES_HINT}"
        )
    if missing:
        log.warning(
            "not starting %s: no API key (%s); the other agents run",
            ", ".join(sorted(lacking)),
            "; ".join(parts),
        )
    return ready


def describe_report(report: CycleReport) -> str:
    """Return one log line for a cycle: each agent's status and fills."""
    parts = []
    for agent in report.agents:
        detail = f"{agent.fills} fill{'s' if agent.fills != 1 else ''}"
        if agent.error:
            detail = agent.error
        parts.append(f"{agent.agent} {agent.status} ({detail})")
    exits = f"; {report.exit_fills} exits" if report.exit_fills else ""
    agents = ", ".join(parts) or "nothing to do (already recorded)"
    return f"cycle {report.scheduled_at:%Y-%m-%d %H:%M} UTC: {agents}{exits}"


class LoggingRunner:
    """The engine, with a log line per cycle for the daemon's output."""

    def __init__(self, engine: CycleEngine) -> None:
        self.engine = engine

    async def run_cycle(self, scheduled_at: datetime) -> CycleReport:
        """Run the cycle and log what it did."""
        report = await self.engine.run_cycle(scheduled_at)
        log.info("%s", describe_report(report))
        return report

    async def run_monitor(self, now: datetime) -> int:
        """Apply exits up to `now` and log them."""
        exits = await self.engine.run_monitor(now)
        if exits:
            log.info("exit monitor: %d position%s closed", exits, "s" if exits != 1 else "")
        return exits


class ArenaClock:
    """The live clock, which a replayed cycle (`--once --at`) pins to its scheduled time."""

    def __init__(self) -> None:
        self.pinned: datetime | None = None

    def __call__(self) -> datetime:
        return self.pinned if self.pinned is not None else utc_now()


@dataclass
class LiveArena:
    """The live arena, built and ready: its engine, the daemon around it and their clock."""

    engine: CycleEngine
    daemon: Daemon
    clock: ArenaClock

    async def run_once(self, at: datetime | None = None) -> int:
        """Run one cycle: now's, or the one scheduled at `at` as if it were that time."""
        if at is None:
            return await self.daemon.run_once()
        scheduled_at = floor_time(at, self.daemon.interval)
        self.clock.pinned = scheduled_at
        try:
            return await self.daemon.run_once(scheduled_at)
        finally:
            self.clock.pinned = None


@asynccontextmanager
async def open_arena(
    settings: Settings,
    agents: Sequence[AgentConfig],
    *,
    feed_clock: Callable[[], datetime] = utc_now,
) -> AsyncIterator[LiveArena]:
    """Build the live arena (lock, database, accounts restored, exchange) and tear it down.

    `feed_clock` is the exchange's "now" (the real clock; a simulation passes its own).
    """
    agents = runnable_agents(settings, agents)
    lock = DaemonLock(lock_path_for(settings.database.url))
    lock.acquire()
    try:
        database = open_database(settings)
        interval = interval_of(settings)
        config = engine_config(
            settings, coins=settings.symbols, interval=interval, exit_timeframe="1m"
        )
        store = cycle_store(database, run_id=LIVE_RUN_ID)
        store.register_agents(
            agent_identities(agents, cash_usd=settings.risk.starting_cash_usd), at=utc_now()
        )
        strategies, runtime = build_strategies(
            agents, settings, database=database, llm_mode=settings.llm.cache_mode
        )
        slots = restore_slots(store, strategies, costs=config.costs, interval=interval)
        settings, config = _keep_held_coins(settings, config, slots)
        clock = ArenaClock()
        market = live_market(settings, database, clock=feed_clock)
        try:

            async def fresh_prices() -> Mapping[str, float] | None:
                # A replayed past cycle fills at its own prices, never at today's.
                return None if clock.pinned is not None else await market.current_prices()

            engine = CycleEngine(
                market=market,
                store=store,
                agents=slots,
                config=config,
                clock=clock,
                rules=await market.market_rules(),
                fresh_prices=fresh_prices,
            )
            daemon = Daemon(
                LoggingRunner(engine),
                interval=interval,
                monitor_interval=_monitor_interval(settings),
            )
            for slot in slots:
                positions = ", ".join(slot.account.positions) or "no positions"
                log.info(
                    "agent %s: account restored (cash %.2f USD, %s, %d cycles so far)",
                    slot.name,
                    slot.account.cash_usd,
                    positions,
                    slot.invocations,
                )
            yield LiveArena(engine=engine, daemon=daemon, clock=clock)
        finally:
            await market.close()
            if runtime is not None:
                await runtime.aclose()
    finally:
        lock.release()


async def run_arena(
    settings: Settings,
    agents: Sequence[AgentConfig],
    *,
    once: bool = False,
    at: datetime | None = None,
    serve: bool = False,
) -> int:
    """Run the live arena until a signal (or one cycle with `once`); return the exit code.

    With `serve`, the daemon also serves the dashboard from its event loop (started once the
    lock is held, stopped with the daemon); a single `once` cycle serves nothing.
    """
    async with open_arena(settings, agents) as arena:
        if once:
            return await arena.run_once(at)
        if not serve:
            return await arena.daemon.run_forever()
        from app.web.command import serving

        async with serving(settings):
            return await arena.daemon.run_forever()


def _keep_held_coins(
    settings: Settings, config: EngineConfig, slots: Sequence[AgentSlot]
) -> tuple[Settings, EngineConfig]:
    """Keep coins removed from SYMBOLS in play while an agent still holds them.

    Their positions need prices, exits and a way to be closed; once closed they drop out at the
    next start.
    """
    held = {coin for slot in slots for coin in slot.account.positions}
    extra = sorted(held - set(settings.symbols))
    if not extra:
        return settings, config
    log.warning(
        "%s no longer in SYMBOLS but still held: kept in play until those positions close",
        ", ".join(extra),
    )
    coins = [*settings.symbols, *extra]
    return settings.model_copy(update={"symbols": coins}), replace(config, coins=tuple(coins))


def _monitor_interval(settings: Settings) -> timedelta:
    return timeframe_to_timedelta(settings.schedule.monitor_interval)
