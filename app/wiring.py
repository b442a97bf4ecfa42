"""The composition root: the only place that picks and builds concrete adapters.

Entry points (the CLI, the connectivity script, benchmarks) ask it for what they run:

- `open_database(settings)`: the migrated database;
- `build_live_arena(settings, agents)`: the daemon with its lock, accounts restored, exchange feed
  and agents (`run_arena` runs it);
- `build_backtest(settings, options, database=...)`: a planned backtest over loaded candles
  (`run_backtest` runs it);
- `build_llm_runtime` / `build_strategies` / `build_chat_model`: agents' models over one shared
  set of SDK clients, quota tracker and answer cache (`recorded_run`: one run's own answers,
  for `--replay-run`);
- `build_exchange_feed` / `download`: the ccxt feed with its candle cache;
- `quota_targets`, `quota_tracker`: what `arena quota --probe` asks and records.

Everything below these functions (`app.live`, `app.backtest`, the engine, the adapters) receives
built objects and never reads the settings to pick an implementation.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.backtest import (
    Backtest,
    BacktestOptions,
    BacktestResult,
    Progress,
    SimulatedClock,
    fill_prices_of,
    new_run_id,
    plan_backtest,
)
from app.candle_checks import DEFAULT_MAX_MOVE_PCT
from app.charts.source import MarketCharts
from app.charts.spec import ChartLimits
from app.config import AgentConfig, Settings
from app.db import queries
from app.db.answer_cache import ResponseCache
from app.db.candles import CandleCache, load_cached_candles
from app.db.evaluation_plans import EvaluationPlanStore
from app.db.lock import daemon_lock_for
from app.db.migrate import upgrade
from app.db.models import LIVE_RUN_ID
from app.db.quota_ledger import SqlQuotaLedger
from app.db.repository import AgentIdentity, SqlCycleStore
from app.db.run_answers import RunAnswers
from app.db.session import Database, make_engine, make_session_factory, sqlite_path
from app.db.writer import DatabaseWriter
from app.domain import AccountState, LlmMode, PaperCosts, timeframe_to_timedelta
from app.errors import ConfigError, InvariantError
from app.gateway.services import GatewayServices, Pools
from app.live import ArenaClock, LiveArena, LoggingRunner
from app.llm.baselines import build_baseline
from app.llm.complexity import ComplexityScorer, HeuristicScorer, LlmScorer
from app.llm.fallback import FallbackChain
from app.llm.openai_compat import CallDefaults, ClientPool, Monotonic, OpenAIChatModel, Sleep
from app.llm.pool import ModelPool, PoolMember, PoolRouter
from app.llm.providers import make_provider
from app.llm.quota import CallBudget, Clock, QuotaTracker, utc_now
from app.llm.quota_query import QuotaProbe, query_quota
from app.llm.runtime import LlmRuntime
from app.llm.strategy import DEFAULT_OPTIONS, LLMStrategy
from app.market.dataset import DataSet, drop_implausible, expand_paths, load_data_set
from app.market.download import ProgressFactory, download_candles
from app.market.sample import is_synthetic
from app.metrics import RunningSharpe
from app.ports import RecordedAnswers, Strategy
from app.providers import BASELINE, PROVIDERS, takes_images
from app.quota_report import ProbeTarget, configured_models
from app.scheduler import Daemon
from app.trading.engine import AgentSlot, CycleEngine, EngineConfig
from app.trading.paper import PaperAccount
from app.trading.recording import BatchRecorder, ImmediateRecorder
from app.trading.risk import ENTRY_WINDOW, RiskLimits

if TYPE_CHECKING:
    from app.market.ccxt_feed import CcxtMarketData, DownloadResult

log = logging.getLogger(__name__)

BASELINES_HINT = (
    "or run the rule-based baselines, which need no key: "
    "arena run --agent hodl=baseline:buy_and_hold --agent trend=baseline:ema_trend"
)
CACHE_PREFIX = "cache:"


# -- the database -------------------------------------------------------------------------------


def open_database(settings: Settings) -> Database:
    """Migrate the configured database to the latest schema and open it."""
    url = settings.database.url
    engine = make_engine(url)
    upgrade(url, engine=engine)
    return Database(url=url, engine=engine, sessions=make_session_factory(engine))


# -- agents and their keys ----------------------------------------------------------------------


def evaluation_plan_store(database: Database) -> EvaluationPlanStore:
    """Return the store of `arena evaluate`'s plans and finished windows."""
    return EvaluationPlanStore(database.sessions)


def window_database_url(settings: Settings, *, plan_key: str, index: int) -> str | None:
    """Return where an evaluation's window records its run: a SQLite file of its own beside the
    database file (`arena.db.windows/PLAN/window-NNN.db`), or None (the database itself) for a
    server database, which takes concurrent writers."""
    path = sqlite_path(settings.database.url)
    if path is None:
        return None
    folder = path.parent / f"{path.name}.windows" / plan_key[:16]
    return f"sqlite:///{folder / f'window-{index:03d}.db'}"


def llm_agents(agents: Sequence[AgentConfig]) -> list[AgentConfig]:
    """Return the agents asked through a model provider (not the rule-based baselines)."""
    return [agent for agent in agents if agent.provider != BASELINE]


def missing_keys(settings: Settings, agents: Sequence[AgentConfig]) -> dict[str, list[str]]:
    """Return, per missing key setting, the agents that need it (a pool agent: every one)."""
    missing: dict[str, list[str]] = {}
    for agent in llm_agents(agents):
        for provider in dict.fromkeys(p for p, _ in settings.agent_chain(agent)):
            traits = PROVIDERS[provider]
            key = settings.provider_settings(provider).api_key
            # A local OpenAI-compatible server (Ollama, vLLM) usually needs no key.
            if traits.key_required and (key is None or not key.get_secret_value()):
                missing.setdefault(traits.key_env, []).append(agent.name)
    return missing


def _describe_missing(missing: Mapping[str, list[str]]) -> str:
    return "; ".join(
        f"{key} (agent{'s' if len(names) > 1 else ''} {', '.join(names)})"
        for key, names in missing.items()
    )


def require_keys(settings: Settings, agents: Sequence[AgentConfig], *, hint: str) -> None:
    """Raise `ConfigError` naming every missing API key and the agents that need it."""
    missing = missing_keys(settings, agents)
    if missing:
        raise ConfigError(
            f"no API key: set {_describe_missing(missing)} in .env or the environment "
            f"(see .env.example); {hint}"
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
    if not ready:
        raise ConfigError(
            f"no API key: set {_describe_missing(missing)} in .env or the environment "
            f"(cp .env.example .env, then fill in the key); {BASELINES_HINT}"
        )
    if missing:
        log.warning(
            "not starting %s: no API key (%s); the other agents run",
            ", ".join(sorted(lacking)),
            _describe_missing(missing),
        )
    return ready


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


# -- models ------------------------------------------------------------------------------------


def call_defaults(settings: Settings) -> CallDefaults:
    """Return the per-call defaults of `settings.llm`."""
    llm = settings.llm
    return CallDefaults(
        timeout_s=llm.timeout_s,
        temperature=llm.temperature,
        max_tokens=llm.max_tokens,
        max_retries=llm.max_retries,
        retry_backoff_s=llm.retry_backoff_s,
    )


def quota_tracker(
    database: Database | None,
    *,
    clock: Clock = utc_now,
    budget: CallBudget | None = None,
    run_id: str | None = None,
) -> QuotaTracker:
    """Return a quota tracker recording into the database (or in memory only, without one).

    With `budget`, calls are also taken from that shared budget (an evaluation's workers). With
    `run_id` (the run whose agents ask), each request is recorded before it is sent; the pending
    rows of processes that died mid-request are marked interrupted first.
    """
    if database is None:
        return QuotaTracker(None, clock=clock, budget=budget)
    ledger = SqlQuotaLedger(database.sessions, run_id=run_id)
    if run_id is not None:
        interrupted = ledger.interrupt_pending()
        if interrupted:
            log.warning(
                "%d LLM request(s) were in flight when an earlier process stopped: "
                "recorded as interrupted (each counted once in quota_usage)",
                interrupted,
            )
    return QuotaTracker(ledger, clock=clock, budget=budget)


def build_llm_runtime(
    settings: Settings,
    *,
    database: Database | None,
    mode: LlmMode | None = None,
    clock: Clock = utc_now,
    budget: CallBudget | None = None,
    run_id: str | None = None,
    recorded: RecordedAnswers | None = None,
) -> LlmRuntime:
    """Return the SDK clients, quota tracker and answer cache every agent's calls share.

    `run_id` names the run whose agents ask: their requests are recorded before they are sent.
    `recorded` (replay mode only) is the recorded run whose own answers the agents get.
    """
    mode = mode or settings.llm.cache_mode
    if mode != "live" and database is None:
        raise ConfigError(f"LLM cache mode {mode!r} needs the database (DATABASE_URL)")
    if recorded is not None and mode != "replay":
        raise ConfigError(
            f"--replay-run {recorded.run_id} replays a run: it goes with --llm-mode replay, "
            f"not {mode}"
        )
    cache = None if database is None else ResponseCache(database.sessions, clock=clock)
    return LlmRuntime(
        clients=ClientPool(),
        quota=quota_tracker(database, clock=clock, budget=budget, run_id=run_id),
        cache=cache,
        mode=mode,
        recorded=recorded,
    )


def recorded_run(database: Database, run_id: str, agents: Sequence[AgentConfig]) -> RecordedAnswers:
    """Return run `run_id`'s own answers, for replaying it; every LLM agent must be one of its.

    A name the run never had would miss at its first cycle: say so now, with the run's names.
    """
    recorded = RunAnswers(database.engine, run_id)
    unknown = [agent.name for agent in llm_agents(agents) if agent.name not in recorded.agents()]
    if unknown:
        raise ConfigError(
            f"--replay-run {run_id}: that run has no agent {', '.join(unknown)} "
            f"(its agents: {', '.join(sorted(recorded.agents()))})"
        )
    return recorded


def build_model(
    provider: str,
    model: str,
    settings: Settings,
    *,
    clients: ClientPool,
    require_key: bool = True,
    sleep: Sleep | None = None,
    monotonic: Monotonic | None = None,
) -> OpenAIChatModel:
    """Return the adapter for `model` on `provider`, with its key and base URL from settings."""
    if provider == BASELINE:
        raise ConfigError(
            f"provider 'baseline' ({model}) is a rule-based agent, not a model provider"
        )
    endpoint = settings.provider_settings(provider)
    return make_provider(
        provider,
        model=model,
        api_key=endpoint.api_key,
        base_url=endpoint.base_url,
        defaults=call_defaults(settings),
        clients=clients,
        sleep=sleep,
        monotonic=monotonic,
        require_key=require_key,
    )


def build_chat_model(
    agent: AgentConfig,
    settings: Settings,
    runtime: LlmRuntime,
    *,
    sleep: Sleep | None = None,
    monotonic: Monotonic | None = None,
) -> FallbackChain:
    """Return `agent`'s fallback chain (its model, then its fallback models; or its pool's)."""
    chain = settings.agent_chain(agent)
    if not chain:
        raise ConfigError(f"agent {agent.name}: pool {agent.model!r} has no enabled model")
    models = [
        build_model(
            provider,
            model,
            settings,
            clients=runtime.clients,
            require_key=runtime.mode != "replay",
            sleep=sleep,
            monotonic=monotonic,
        )
        for provider, model in chain
    ]
    return FallbackChain(
        models,
        agent=agent.name,
        quota=runtime.quota,
        cache=runtime.cache,
        mode=runtime.mode,
        recorded=runtime.recorded,
    )


def build_llm_strategy(
    agent: AgentConfig,
    settings: Settings,
    runtime: LlmRuntime,
    *,
    sleep: Sleep | None = None,
    monotonic: Monotonic | None = None,
) -> LLMStrategy:
    """Return `agent` as an `LLMStrategy` over its fallback chain."""
    options = replace(DEFAULT_OPTIONS, thinking=agent.thinking)
    chain = build_chat_model(agent, settings, runtime, sleep=sleep, monotonic=monotonic)
    vision = is_vision_agent(agent, settings)
    if vision:
        log.info("agent %s: a vision agent (chart images in its prompt)", agent.name)
    return LLMStrategy(agent.name, chain, options=options, wants_images=vision)


def is_vision_agent(agent: AgentConfig, settings: Settings) -> bool:
    """Return True when `agent` is shown chart images: its `vision` setting, or else whether
    its first model takes images (the Qwen-VL family, or a model in `[vision] models`)."""
    if agent.provider == BASELINE:
        return False
    if agent.vision is not None:
        return agent.vision
    return takes_images(agent.model, settings.vision.models)


def chart_limits(settings: Settings) -> ChartLimits:
    """Return the `[vision]` size limits of each request's images."""
    vision = settings.vision
    return ChartLimits(
        max_width_px=vision.max_image_width_px,
        max_height_px=vision.max_image_height_px,
        max_image_bytes=vision.max_image_bytes,
        max_images=vision.max_images_per_request,
    )


def build_chart_source(
    settings: Settings, agents: Sequence[AgentConfig], *, coins: Sequence[str]
) -> MarketCharts | None:
    """Return the chart images of vision agents' prompts (None when no agent is one)."""
    if not any(is_vision_agent(agent, settings) for agent in agents):
        return None
    return MarketCharts(chart_limits(settings), coins=coins)


def build_strategies(
    agents: Sequence[AgentConfig],
    settings: Settings,
    *,
    database: Database | None,
    llm_mode: LlmMode,
    budget: CallBudget | None = None,
    run_id: str | None = None,
    recorded: RecordedAnswers | None = None,
) -> tuple[dict[str, Strategy], LlmRuntime | None]:
    """Return each agent's strategy (LLM or baseline) and the shared LLM runtime, if any."""
    runtime = None
    if llm_agents(agents):
        runtime = build_llm_runtime(
            settings,
            database=database,
            mode=llm_mode,
            budget=budget,
            run_id=run_id,
            recorded=recorded,
        )
    strategies: dict[str, Strategy] = {}
    for agent in agents:
        if agent.provider == BASELINE:
            strategies[agent.name] = build_baseline(
                agent.name,
                agent.model,
                max_position_margin_pct=settings.risk.max_position_margin_pct,
            )
        else:
            assert runtime is not None
            strategies[agent.name] = build_llm_strategy(agent, settings, runtime)
    return strategies, runtime


def quota_targets(settings: Settings, clients: ClientPool) -> list[ProbeTarget]:
    """Return every configured model with its adapter (or why it has none) for `--probe`."""
    targets = []
    for provider, model, _agents, _primary in configured_models(
        settings.agents, chain=settings.agent_chain
    ):
        try:
            adapter = build_model(provider, model, settings, clients=clients)
        except ConfigError as error:
            targets.append(ProbeTarget(provider, model, None, str(error)))
            continue
        targets.append(ProbeTarget(provider, model, adapter))
    return targets


# -- the engine --------------------------------------------------------------------------------


def paper_costs(settings: Settings, *, fee_bps: float, slippage_bps: float) -> PaperCosts:
    """Return the simulated exchange's costs."""
    return PaperCosts(
        fee_rate=fee_bps / 10_000,
        slippage_rate=slippage_bps / 10_000,
        maintenance_margin_rate=settings.risk.maintenance_margin_rate,
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
    risk = settings.risk
    costs = paper_costs(
        settings,
        fee_bps=risk.fee_bps if fee_bps is None else fee_bps,
        slippage_bps=risk.slippage_bps if slippage_bps is None else slippage_bps,
    )
    return EngineConfig(
        coins=tuple(coins),
        interval=interval,
        limits=RiskLimits(
            max_leverage=risk.max_leverage,
            max_position_margin_pct=risk.max_position_margin_pct,
            max_open_positions=risk.max_open_positions,
            max_entries_per_hour=risk.max_entries_per_hour,
            costs=costs,
        ),
        # Each agent's own ceiling per cycle: the model call fits its retries and fallback models
        # inside it, and never runs into the next cycle.
        agent_timeout_s=interval.total_seconds() * 0.9,
        exit_timeframe=exit_timeframe,
        max_price_gap_pct=settings.exchange.max_price_gap_pct,
    )


def restore_slots(
    store: SqlCycleStore,
    strategies: Mapping[str, Strategy],
    *,
    costs: PaperCosts,
    interval: timedelta,
) -> list[AgentSlot]:
    """Rebuild every agent's engine state from the database (accounts, counters, checkpoints)."""
    return [
        restore_slot(store, name, strategy, costs=costs, interval=interval)
        for name, strategy in strategies.items()
    ]


def restore_slot(
    store: SqlCycleStore,
    name: str,
    strategy: Strategy,
    *,
    costs: PaperCosts,
    interval: timedelta,
) -> AgentSlot:
    """Rebuild one agent's engine state from the database, checked against its ledgers."""
    restored = store.restore(name)
    sharpe = RunningSharpe(interval)
    for equity in queries.cycle_equity_values(store.engine, restored.agent_id):
        sharpe.add(equity)
    recent: deque[datetime] = deque()
    if restored.last_cycle_at is not None:
        recent.extend(store.recent_entries(name, restored.last_cycle_at - ENTRY_WINDOW))
    _check_against_ledger(store, name, restored.agent_id, restored.books)
    return AgentSlot(
        name=name,
        strategy=strategy,
        account=PaperAccount.restore(restored.books, costs=costs),
        sharpe=sharpe,
        invocations=restored.invocations,
        started_at=restored.first_cycle_at,
        checked_until=restored.last_snapshot_at,
        recent_entries_at=recent,
    )


def _check_against_ledger(
    store: SqlCycleStore, name: str, agent_id: int, books: AccountState
) -> None:
    """Refuse to go on when the last snapshot disagrees with the fill and funding ledgers."""
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


# -- market data -------------------------------------------------------------------------------


def build_exchange_feed(
    settings: Settings,
    *,
    database: Database | None,
    clock: Callable[[], datetime] | None = None,
    coins: Sequence[str] | None = None,
    exchange_id: str | None = None,
    startup_retry_s: float = 0.0,
) -> CcxtMarketData:
    """Return the exchange feed of the settings, caching closed candles in the database.

    `startup_retry_s`: how long the first market load waits for an unreachable exchange (the
    daemon's `EXCHANGE_STARTUP_RETRY_S`; commands fail at once).
    """
    # ccxt takes about a second to import: only the commands that reach an exchange pay for it.
    from app.market.ccxt_feed import CcxtMarketData

    exchange = settings.exchange
    schedule = settings.schedule
    return CcxtMarketData(
        coins=list(coins or settings.symbols),
        exchange_id=exchange_id or exchange.id,
        api_url=exchange.api_url,
        sandbox=exchange.sandbox,
        quote=exchange.quote,
        intraday_timeframe=schedule.intraday_timeframe,
        context_timeframe=schedule.context_timeframe,
        history_candles=schedule.history_candles,
        timeout_s=exchange.timeout_s,
        cache=None if database is None else CandleCache(database.engine),
        clock=clock,
        max_candle_move_pct=exchange.max_candle_move_pct,
        startup_retry_s=startup_retry_s,
    )


# The data files last loaded in this process, by name, size and modification time: an
# evaluation's worker runs many windows over the same files, and parsing them (gzipped CSV) took
# about a third of a short window's replay (docs/BENCHMARKS.md). Nothing changes a loaded set.
_LOADED_FILES: dict[tuple[object, ...], DataSet] = {}


def _load_files(data: list[Path], *, coins: list[str] | None, max_move_pct: float) -> DataSet:
    files = expand_paths(data)
    key = (
        tuple(
            (str(path.resolve()), path.stat().st_mtime_ns, path.stat().st_size) for path in files
        ),
        tuple(coins or ()),
        max_move_pct,
    )
    found = _LOADED_FILES.get(key)
    if found is None:
        found = load_data_set(data, coins=coins, max_move_pct=max_move_pct)
        _LOADED_FILES.clear()
        _LOADED_FILES[key] = found
    return found


def load_market_data(
    data: Sequence[Path],
    *,
    coins: Sequence[str] | None,
    database: Database | None,
    cache_timeframe: str | None = None,
    max_move_pct: float = DEFAULT_MAX_MOVE_PCT,
) -> DataSet:
    """Load `--data`: candle files and folders, or `cache:EXCHANGE` (the `candle` table, at
    `cache_timeframe` or the finest timeframe held); implausible candles are dropped."""
    if not data:
        raise ConfigError("give the candle files or folders to replay with --data PATH")
    cached = [str(path) for path in data if str(path).startswith(CACHE_PREFIX)]
    if not cached:
        return _load_files(
            list(data), coins=list(coins) if coins else None, max_move_pct=max_move_pct
        )
    if len(cached) != len(data) or len(cached) > 1:
        raise ConfigError(
            "--data cache:EXCHANGE replays the candle cache on its own: give it once, "
            "without candle files"
        )
    exchange = cached[0].removeprefix(CACHE_PREFIX).strip()
    if not exchange or database is None:
        raise ConfigError("--data cache: needs an exchange id, e.g. --data cache:binanceusdm")
    candles, timeframe = load_cached_candles(
        database.engine, exchange, coins=coins, timeframe=cache_timeframe
    )
    return drop_implausible(
        DataSet(candles=candles, timeframe=timeframe), max_move_pct=max_move_pct
    )


def last_prices(
    settings: Settings, database: Database, *, coins: Sequence[str]
) -> dict[str, tuple[float, datetime]]:
    """Return each coin's last close the live feed cached, and when that candle closed.

    Read from the candle cache only (the daemon refreshes it every cycle): no exchange call.
    """
    from app.market.ccxt_feed import cache_source

    exchange = settings.exchange
    source = cache_source(exchange.id, sandbox=exchange.sandbox, api_url=exchange.api_url)
    return CandleCache(database.engine).latest_closes(exchange=source, coins=coins)


async def download(
    settings: Settings,
    database: Database,
    *,
    coins: Sequence[str],
    timeframe: str,
    start: datetime,
    end: datetime,
    exchange_id: str | None = None,
    progress: ProgressFactory | None = None,
) -> list[DownloadResult]:
    """Download closed candles into the database's candle cache (`arena data download`)."""
    feed = build_exchange_feed(settings, database=database, coins=coins, exchange_id=exchange_id)
    return await download_candles(
        feed, coins=coins, timeframe=timeframe, start=start, end=end, progress=progress
    )


# -- the live arena ----------------------------------------------------------------------------


@asynccontextmanager
async def build_live_arena(
    settings: Settings,
    agents: Sequence[AgentConfig],
    *,
    feed_clock: Callable[[], datetime] = utc_now,
) -> AsyncIterator[LiveArena]:
    """Build the live arena (lock, database, accounts restored, exchange) and tear it down.

    `feed_clock` is the exchange's "now" (the real clock; a simulation passes its own).
    """
    agents = runnable_agents(settings, agents)
    lock = daemon_lock_for(settings.database.url)
    lock.acquire()
    try:
        database = open_database(settings)
        interval = timeframe_to_timedelta(settings.schedule.interval)
        config = engine_config(
            settings, coins=settings.symbols, interval=interval, exit_timeframe="1m"
        )
        store = SqlCycleStore(database.engine, run_id=LIVE_RUN_ID)
        store.register_agents(
            agent_identities(agents, cash_usd=settings.risk.starting_cash_usd), at=utc_now()
        )
        strategies, runtime = build_strategies(
            agents,
            settings,
            database=database,
            llm_mode=settings.llm.cache_mode,
            run_id=LIVE_RUN_ID,
        )
        slots = restore_slots(store, strategies, costs=config.costs, interval=interval)
        coins = _coins_in_play(settings.symbols, slots)
        config = replace(config, coins=coins)
        clock = ArenaClock()
        market = build_exchange_feed(
            settings,
            database=database,
            clock=feed_clock,
            coins=coins,
            startup_retry_s=settings.exchange.startup_retry_s,
        )
        writer = DatabaseWriter()
        try:

            def restore_from_database(name: str) -> AgentSlot:
                # Another writer recorded this agent's cycle: its books are the database's now,
                # and so are the open position rows the store's index points at.
                store.reload_open_positions()
                return restore_slot(
                    store, name, strategies[name], costs=config.costs, interval=interval
                )

            async def reload_slot(name: str) -> AgentSlot:
                return await writer.run(lambda: restore_from_database(name))

            async def fresh_prices() -> Mapping[str, float] | None:
                # A replayed past cycle fills at its own prices, never at today's.
                return None if clock.pinned is not None else await market.current_prices()

            engine = CycleEngine(
                market=market,
                # Writes on their own thread: a locked database delays records, not the models.
                recorder=ImmediateRecorder(
                    store, write=writer.run, read=asyncio.to_thread, sleep=asyncio.sleep
                ),
                agents=slots,
                config=config,
                clock=clock,
                rules=await market.market_rules(),
                fresh_prices=fresh_prices,
                charts=build_chart_source(settings, agents, coins=coins),
                reload_slot=reload_slot,
                record_market_failures=True,
            )
            daemon = Daemon(
                LoggingRunner(engine, guard=lock.check),
                interval=interval,
                monitor_interval=timeframe_to_timedelta(settings.schedule.monitor_interval),
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
            writer.close()
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
    async with build_live_arena(settings, agents) as arena:
        if once or not serve:
            return await arena.run(once=once, at=at)
        from app.web.command import serving

        async with serving(settings, build_dashboard(settings)):
            return await arena.run()


# -- the dashboard -----------------------------------------------------------------------------


def build_dashboard(settings: Settings, *, run: str = "live") -> Any:
    """Return the dashboard's ASGI app over the configured database, opened read-only."""
    from app.web.app import create_app
    from app.web.readmodel import ReadModel, open_read_engine

    token = settings.serve.token.get_secret_value() if settings.serve.token else None
    model = ReadModel(open_read_engine(settings.database.url))
    return create_app(model, default_run=run, token=token or None)


# -- the gateway ---------------------------------------------------------------------------------


def build_pools(
    settings: Settings,
    *,
    clients: ClientPool,
    sleep: Sleep | None = None,
    monotonic: Monotonic | None = None,
) -> dict[str, ModelPool]:
    """Return every configured pool with its models' adapters, disabled ones included."""
    pools: dict[str, ModelPool] = {}
    for pool in settings.pools:
        members = [
            PoolMember(
                build_model(
                    config.provider,
                    config.id,
                    settings,
                    clients=clients,
                    # A disabled model is listed, never asked: it needs no key.
                    require_key=config.enabled,
                    sleep=sleep,
                    monotonic=monotonic,
                ),
                tier=config.tier,
                enabled=config.enabled,
                name=config.name,
            )
            for config in pool.ordered(enabled_only=False)
        ]
        pools[pool.name] = ModelPool(pool.name, tuple(members))
    return pools


def build_scorer(
    settings: Settings, *, clients: ClientPool, quota: QuotaTracker
) -> ComplexityScorer | None:
    """Return the gateway's complexity scorer (`GATEWAY_ROUTING`), or None when it is off."""
    gateway = settings.gateway
    if gateway.routing == "off":
        return None
    if gateway.routing == "heuristic":
        return HeuristicScorer()
    if not gateway.scorer_model:
        raise ConfigError(
            "GATEWAY_ROUTING=llm needs GATEWAY_SCORER_MODEL=PROVIDER:MODEL "
            "(e.g. openai:qwen2.5:1.5b for a local Ollama)"
        )
    provider, _, model = gateway.scorer_model.partition(":")
    scorer = build_model(provider.strip().lower(), model, settings, clients=clients)
    chain = FallbackChain([scorer], agent="scorer", quota=quota)
    return LlmScorer(chain, timeout_s=gateway.scorer_timeout_s)


def build_gateway(
    settings: Settings,
    *,
    reload_settings: Callable[[], Settings],
    database: Database | None = None,
    clock: Clock = utc_now,
    sleep: Sleep | None = None,
    monotonic: Monotonic | None = None,
) -> Any:
    """Return the gateway's ASGI app over the pools, recording into the arena's quota rows.

    `reload_settings` reads the settings again for `POST /reload`; what it raises (a
    `ConfigError`) refuses the reload and the pools in force stay.
    """
    from app.gateway.app import create_gateway_app

    database = database or open_database(settings)
    clients = ClientPool()
    ledger = SqlQuotaLedger(database.sessions)
    quota = QuotaTracker(ledger, clock=clock)

    def make_pools(current: Settings) -> Pools:
        if not current.pools:
            raise ConfigError(
                "no model pools configured: add [[pools]] with [[pools.models]] to arena.toml "
                "(see arena.example.toml) or set POOLS"
            )
        names = [pool.name for pool in current.pools]
        if current.gateway.default_pool not in names:
            raise ConfigError(
                f"GATEWAY_DEFAULT_POOL={current.gateway.default_pool!r} is not a pool "
                f"(pools: {', '.join(names)})"
            )
        pools = build_pools(current, clients=clients, sleep=sleep, monotonic=monotonic)
        return Pools(
            router=PoolRouter(pools, quota=quota, monotonic=monotonic),
            default_pool=current.gateway.default_pool,
            scorer=build_scorer(current, clients=clients, quota=quota),
            default_tier=current.gateway.default_tier,
        )

    base_url = (
        settings.provider_settings("modelscope").base_url
        or PROVIDERS["modelscope"].default_base_url
        or ""
    )

    async def quota_query(key: str, models: Sequence[str]) -> list[QuotaProbe]:
        return await query_quota(base_url=base_url, api_key=key, models=models)

    token = settings.gateway.token.get_secret_value() if settings.gateway.token else None
    agents_first = {
        (provider, model): primary
        for provider, model, _names, primary in configured_models(
            settings.agents, chain=settings.agent_chain
        )
    }
    services = GatewayServices(
        pools=make_pools(settings),
        reload=lambda: make_pools(reload_settings()),
        usage_on=ledger.usage_on,
        quota_query=quota_query,
        token=token or None,
        max_body_bytes=settings.gateway.max_body_bytes,
        budget_s=settings.gateway.request_budget_s,
        interval_s=timeframe_to_timedelta(settings.schedule.interval).total_seconds(),
        agents_first=agents_first,
    )
    return create_gateway_app(services)


def _coins_in_play(symbols: Sequence[str], slots: Sequence[AgentSlot]) -> tuple[str, ...]:
    """Keep coins removed from SYMBOLS in play while an agent still holds them.

    Their positions need prices, exits and a way to be closed; once closed they drop out at the
    next start.
    """
    held = {coin for slot in slots for coin in slot.account.positions}
    extra = sorted(held - set(symbols))
    if extra:
        log.warning(
            "%s no longer in SYMBOLS but still held: kept in play until those positions close",
            ", ".join(extra),
        )
    return (*symbols, *extra)


# -- backtests ---------------------------------------------------------------------------------


async def build_backtest(
    settings: Settings,
    options: BacktestOptions,
    *,
    database: Database,
    run_id: str | None = None,
    source: Database | None = None,
    budget: CallBudget | None = None,
) -> Backtest:
    """Load the data, plan the cycles, register the run and build its engine.

    The run is recorded in `database`; the answer cache, the quota ledger and the candle cache
    are `source`'s (default: the same database). An evaluation's worker records each window in a
    file of its own and shares the driver's caches this way, and takes its model calls from the
    evaluation's shared `budget`.
    """
    source = source or database
    if not options.agents:
        raise ConfigError(
            "no agents: pass --agent NAME=PROVIDER:MODEL or list agents in arena.toml"
        )
    if options.replay_run is not None and options.llm_mode != "replay":
        raise ConfigError(
            f"--replay-run {options.replay_run} replays a run: it goes with --llm-mode replay, "
            f"not {options.llm_mode}"
        )
    if options.llm_mode != "replay":
        require_keys(
            settings,
            options.agents,
            hint="or re-run with --llm-mode replay to use only answers stored by an earlier run",
        )
    data = load_market_data(
        options.data,
        coins=options.symbols,
        database=source,
        cache_timeframe=options.cache_timeframe,
        max_move_pct=settings.exchange.max_candle_move_pct,
    )
    # Checked before the run is registered: a wrong run id leaves no empty run behind.
    recorded = (
        None
        if options.replay_run is None
        else recorded_run(database, options.replay_run, options.agents)
    )
    plan = plan_backtest(settings, options, data)
    synthetic = options.synthetic or is_synthetic(options.data)
    run_id = run_id or new_run_id(datetime.now(UTC), synthetic=synthetic)
    store = SqlCycleStore(database.engine, run_id=run_id)
    first = plan.times[0]
    store.register_agents(agent_identities(options.agents, cash_usd=options.cash_usd), at=first)
    config = engine_config(
        settings,
        coins=plan.market.coins,
        interval=plan.step,
        exit_timeframe=plan.data.timeframe,
        fee_bps=options.fee_bps,
        slippage_bps=options.slippage_bps,
    )
    strategies, runtime = build_strategies(
        options.agents,
        settings,
        database=source,
        llm_mode=options.llm_mode,
        budget=budget,
        # Requests are recorded before they are sent only where the run's rows live: a worker
        # whose caches are another database's records them when they finish.
        run_id=run_id if source is database else None,
        recorded=recorded,
    )
    slots = [
        AgentSlot(
            name=agent.name,
            strategy=strategies[agent.name],
            account=PaperAccount(agent.starting_cash_usd or options.cash_usd, costs=config.costs),
            sharpe=RunningSharpe(plan.step),
            checked_until=first,
        )
        for agent in options.agents
    ]
    clock = SimulatedClock(first)
    engine = CycleEngine(
        market=plan.market,
        # A backtest's run is new and has one writer: its records go in large batches.
        recorder=BatchRecorder(store),
        agents=slots,
        config=config,
        clock=clock,
        fill_prices=fill_prices_of(plan.market),
        rules=await plan.market.market_rules(),
        charts=build_chart_source(settings, options.agents, coins=plan.market.coins),
    )
    return Backtest(
        run_id=run_id,
        options=options,
        plan=plan,
        engine=engine,
        slots=slots,
        database=database,
        clock=clock,
        runtime=runtime,
    )


async def run_backtest(
    settings: Settings,
    options: BacktestOptions,
    *,
    database: Database,
    progress: Progress | None = None,
    run_id: str | None = None,
    source: Database | None = None,
    budget: CallBudget | None = None,
) -> BacktestResult:
    """Build the backtest and replay it; return the leaderboard (`source`: see build_backtest)."""
    backtest = await build_backtest(
        settings, options, database=database, run_id=run_id, source=source, budget=budget
    )
    return await backtest.run(progress)
