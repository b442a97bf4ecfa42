"""Composition root: the only place that picks concrete adapters for the entry points."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.config import AgentConfig, LlmMode, Settings
from app.db.migrate import upgrade
from app.db.repository import AgentIdentity, SqlCycleStore
from app.db.session import make_engine, make_session_factory
from app.domain import timeframe_to_timedelta
from app.errors import ConfigError, InvariantError
from app.llm.baselines import build_baseline
from app.llm.runtime import LlmRuntime
from app.market.candle_cache import CandleCache, load_cached_data_set
from app.market.ccxt_feed import CcxtMarketData
from app.market.dataset import DataSet, load_data_set
from app.market.historical import HistoricalMarketData
from app.ports import Strategy
from app.trading.engine import AgentSlot, EngineConfig, RunningSharpe
from app.trading.paper import AccountState, PaperAccount, PaperCosts
from app.trading.risk import RiskLimits

KEY_NAMES = {
    "modelscope": "MODELSCOPE_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "dashscope": "DASHSCOPE_API_KEY",
    "openai": "OPENAI_API_KEY",
}


@dataclass(frozen=True, slots=True)
class Database:
    """A migrated database: its engine and a session factory."""

    url: str
    engine: Engine
    sessions: sessionmaker[Session]


def open_database(settings: Settings) -> Database:
    """Migrate the configured database to the latest schema and open it."""
    url = settings.database.url
    engine = make_engine(url)
    upgrade(url, engine=engine)
    return Database(url=url, engine=engine, sessions=make_session_factory(engine))


def llm_agents(agents: Sequence[AgentConfig]) -> list[AgentConfig]:
    """Return the agents asked through a model provider (not the rule-based baselines)."""
    return [agent for agent in agents if agent.provider != "baseline"]


def missing_keys(settings: Settings, agents: Sequence[AgentConfig]) -> dict[str, list[str]]:
    """Return, per missing key name, the agents that need it."""
    missing: dict[str, list[str]] = {}
    for agent in llm_agents(agents):
        endpoint = settings.provider_settings(agent.provider)
        has_key = endpoint.api_key is not None and bool(endpoint.api_key.get_secret_value())
        # A local OpenAI-compatible server (Ollama, vLLM) usually needs no key.
        if not has_key and not (agent.provider == "openai" and endpoint.base_url):
            missing.setdefault(KEY_NAMES[agent.provider], []).append(agent.name)
    return missing


def require_keys(settings: Settings, agents: Sequence[AgentConfig], *, hint: str) -> None:
    """Raise `ConfigError` naming every missing API key and the agents that need it."""
    missing = missing_keys(settings, agents)
    if not missing:
        return
    parts = [
        f"{key} (agent{'s' if len(names) > 1 else ''} {', '.join(names)})"
        for key, names in missing.items()
    ]
    raise ConfigError(
        f"no API key: set {'; '.join(parts)} in .env or the environment (see .env.example); {hint}"
    )


def agent_identities(agents: Sequence[AgentConfig], *, cash_usd: float) -> list[AgentIdentity]:
    """Return what the store records about each agent."""
    return [
        AgentIdentity(
            name=agent.name,
            provider=agent.provider,
            model=agent.model,
            fallback_models=tuple(agent.fallback_models),
            starting_cash_usd=agent.starting_cash_usd or cash_usd,
        )
        for agent in agents
    ]


def build_strategies(
    agents: Sequence[AgentConfig],
    settings: Settings,
    *,
    database: Database | None,
    llm_mode: LlmMode,
) -> tuple[dict[str, Strategy], LlmRuntime | None]:
    """Return each agent's strategy (LLM or baseline) and the shared LLM runtime, if any."""
    runtime = None
    if llm_agents(agents):
        runtime = LlmRuntime(
            settings,
            session_factory=None if database is None else database.sessions,
            cache_mode=llm_mode,
        )
    strategies: dict[str, Strategy] = {}
    for agent in agents:
        if agent.provider == "baseline":
            strategies[agent.name] = build_baseline(
                agent.name,
                agent.model,
                max_position_margin_pct=settings.risk.max_position_margin_pct,
            )
        else:
            assert runtime is not None
            strategies[agent.name] = runtime.strategy(agent)
    return strategies, runtime


def paper_costs(settings: Settings, *, fee_bps: float, slippage_bps: float) -> PaperCosts:
    """Return the simulated exchange's costs."""
    return PaperCosts(
        fee_rate=fee_bps / 10_000,
        slippage_rate=slippage_bps / 10_000,
        maintenance_margin_rate=settings.risk.maintenance_margin_rate,
    )


def risk_limits(settings: Settings, costs: PaperCosts) -> RiskLimits:
    """Return the risk limits of the settings, with the costs the cash check must predict."""
    risk = settings.risk
    return RiskLimits(
        max_leverage=risk.max_leverage,
        max_position_margin_pct=risk.max_position_margin_pct,
        max_open_positions=risk.max_open_positions,
        max_entries_per_hour=risk.max_entries_per_hour,
        fee_rate=costs.fee_rate,
        slippage_rate=costs.slippage_rate,
        maintenance_margin_rate=costs.maintenance_margin_rate,
    )


def engine_config(
    settings: Settings,
    *,
    coins: Sequence[str],
    interval: timedelta,
    exit_timeframe: str,
    fee_bps: float | None = None,
    slippage_bps: float | None = None,
) -> EngineConfig:
    """Return the engine's configuration for these coins and this cadence."""
    costs = paper_costs(
        settings,
        fee_bps=settings.risk.fee_bps if fee_bps is None else fee_bps,
        slippage_bps=settings.risk.slippage_bps if slippage_bps is None else slippage_bps,
    )
    return EngineConfig(
        coins=tuple(coins),
        interval=interval,
        limits=risk_limits(settings, costs),
        costs=costs,
        # Each agent's own ceiling per cycle: the model call fits its retries and fallback models
        # inside it, and never runs into the next cycle.
        agent_timeout_s=interval.total_seconds() * 0.9,
        exit_timeframe=exit_timeframe,
    )


def interval_of(settings: Settings) -> timedelta:
    """Return the decision cadence."""
    return timeframe_to_timedelta(settings.schedule.interval)


def restore_slots(
    store: SqlCycleStore,
    strategies: dict[str, Strategy],
    *,
    costs: PaperCosts,
    interval: timedelta,
) -> list[AgentSlot]:
    """Rebuild every agent's engine state from the database (accounts, counters, checkpoints)."""
    from app.db import queries

    slots = []
    for name, strategy in strategies.items():
        restored = store.restore(name)
        sharpe = RunningSharpe(interval)
        for equity in queries.cycle_equity_values(store.engine, restored.agent_id):
            sharpe.add(equity)
        recent: deque[datetime] = deque()
        if restored.last_cycle_at is not None:
            recent.extend(store.recent_entries(name, restored.last_cycle_at - timedelta(hours=1)))
        _check_against_ledger(store, name, restored.agent_id, restored.books)
        slots.append(
            AgentSlot(
                name=name,
                strategy=strategy,
                account=PaperAccount.restore(restored.books, costs=costs),
                sharpe=sharpe,
                invocations=restored.invocations,
                started_at=restored.first_cycle_at,
                checked_until=restored.last_snapshot_at,
                recent_entries_at=recent,
            )
        )
    return slots


def cycle_store(database: Database, *, run_id: str) -> SqlCycleStore:
    """Return the store of one run (the live arena or a backtest) in the database."""
    return SqlCycleStore(database.engine, run_id=run_id)


def live_market(
    settings: Settings, database: Database, *, clock: Callable[[], datetime]
) -> CcxtMarketData:
    """Return the exchange feed of the settings, caching closed candles in the database."""
    return CcxtMarketData.from_settings(settings, cache=CandleCache(database.engine), clock=clock)


CACHE_PREFIX = "cache:"


def load_market_data(
    data: Sequence[Path], *, coins: Sequence[str] | None, database: Database | None
) -> DataSet:
    """Load `--data`: candle files and folders, or `cache:EXCHANGE` (the `candle` table)."""
    cached = [str(path) for path in data if str(path).startswith(CACHE_PREFIX)]
    if not cached:
        return load_data_set(list(data), coins=list(coins) if coins else None)
    if len(cached) != len(data) or len(cached) > 1:
        raise ConfigError(
            "--data cache:EXCHANGE replays the candle cache on its own: give it once, "
            "without candle files"
        )
    exchange = cached[0].removeprefix(CACHE_PREFIX).strip()
    if not exchange or database is None:
        raise ConfigError("--data cache: needs an exchange id, e.g. --data cache:binanceusdm")
    return load_cached_data_set(database.engine, exchange, coins=coins)


def historical_market(
    data: DataSet, *, intraday_timeframe: str, context_timeframe: str
) -> HistoricalMarketData:
    """Return the replayed market over loaded candles."""
    return HistoricalMarketData.from_data_set(
        data, intraday_timeframe=intraday_timeframe, context_timeframe=context_timeframe
    )


def _check_against_ledger(
    store: SqlCycleStore, name: str, agent_id: int, books: AccountState
) -> None:
    """Refuse to go on when the last snapshot disagrees with the fill and funding ledgers."""
    from app.db import queries

    fills, payments = queries.ledger(store.engine, agent_id)
    derived = AccountState.from_ledger(
        books.starting_cash_usd,
        fills=fills,
        funding_payments=payments,
        open_positions=books.positions.values(),
    )
    scale = max(1.0, abs(books.starting_cash_usd))
    for field_name in ("cash_usd", "realized_pnl_usd", "fees_paid_usd", "funding_paid_usd"):
        recorded, expected = getattr(books, field_name), getattr(derived, field_name)
        if abs(recorded - expected) > 1e-6 * scale:
            raise InvariantError(
                f"agent {name}: the recorded {field_name} ({recorded:.6f}) does not match its "
                f"fills and funding ({expected:.6f}); the database was changed or damaged, "
                "so the account is not resumed (restore a backup, or start a new DATABASE_URL)"
            )
