"""One decision cycle, shared by the daemon and the backtests.

A cycle at time `t`:
1. the market snapshot at `t` (closed candles only);
2. exits and funding up to `t` for every open position (the same code as the between-cycles
   monitor), so no decision is taken on a position that a stop already closed;
3. one prompt per agent that reads prompts (the market part rendered once, the account part per
   agent), then all agents asked concurrently, each with its own timeout;
4. each answer parsed (by the strategy), checked by the risk rules and filled on a copy of the
   agent's paper account;
5. each agent-cycle handed to the recorder (`app.trading.recording`: written at once, or queued
   for a batch); only once it is accepted does the copy become the agent's account. An
   agent-cycle already recorded (same agent, same scheduled time) is skipped: running a
   scheduled cycle twice never trades twice.
A failed agent (timeout, quota, unusable answer, a record the database refused) is recorded
`failed` with the reason and holds; the others trade. An agent that sits a cycle out without
being asked (no market data, exits that could not be checked, no prompt) is recorded `skipped`
with the reason. An agent-cycle another writer recorded first makes the engine reload that agent
from the database before it trades again. Time is an input: the engine reads no clock but the
one it is given.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from app.candle_checks import DEFAULT_MAX_PRICE_GAP_PCT, snapshot_problems
from app.decisions import TradeDecision
from app.domain import (
    Bars,
    CallAttempt,
    ChatMessage,
    ClosedTrade,
    Fill,
    FundingPayment,
    ImagePart,
    MarketRules,
    MarketSnapshot,
    PaperCosts,
    Position,
    Rejection,
    Settlements,
    datetime_to_ns,
    ensure_utc,
    ns_to_datetime,
    prompt_hash,
    timeframe_to_timedelta,
    was_sent,
)
from app.errors import (
    AppError,
    ConfigError,
    DataUnavailableError,
    ModelAuthError,
    ModelBillingError,
    ModelCallError,
    ReplayMissError,
)
from app.metrics import RunningSharpe
from app.ports import (
    AccountEventsRecord,
    AgentCycleRecord,
    BarSource,
    ChartSource,
    DecisionRecord,
    DecisionRequest,
    MarketData,
    ReportsAttempts,
    SeesCharts,
    Strategy,
    StrategyAnswer,
)
from app.prompts import (
    PROMPT_VERSION,
    build_messages,
    render_context_blocks,
    render_market_section,
)
from app.trading import risk
from app.trading.paper import PaperAccount
from app.trading.recording import Recorder

log = logging.getLogger(__name__)

FillPrices = Callable[[MarketSnapshot], Mapping[str, float | None]]
FreshPrices = Callable[[], Awaitable[Mapping[str, float] | None]]
# Rebuilds an agent's slot from the database (the live arena; a backtest has one writer).
ReloadSlot = Callable[[str], Awaitable["AgentSlot"]]
Clock = Callable[[], datetime]
# Given seconds, a context that cancels its body and raises TimeoutError once they have passed.
TimeLimit = Callable[[float], AbstractAsyncContextManager[object]]


@dataclass
class AgentSlot:
    """One agent's live state in the engine: its strategy, its account, its counters."""

    name: str
    strategy: Strategy
    account: PaperAccount
    sharpe: RunningSharpe
    invocations: int = 0
    started_at: datetime | None = None
    checked_until: datetime | None = None
    recent_entries_at: deque[datetime] = field(default_factory=deque)
    disabled_reason: str | None = None
    # The monitor and a cycle both move the account: one at a time.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """What every cycle needs besides the market, the agents and the store."""

    coins: tuple[str, ...]
    interval: timedelta
    limits: risk.RiskLimits
    agent_timeout_s: float = 120.0
    exit_timeframe: str = "1m"
    # Ticker and newest close further apart than this: the cycle is skipped (app.candle_checks).
    max_price_gap_pct: float = DEFAULT_MAX_PRICE_GAP_PCT

    @property
    def costs(self) -> PaperCosts:
        """Return the paper exchange's costs (the ones the risk checks predict fills with)."""
        return self.limits.costs

    @property
    def fee_bps(self) -> float:
        """Return the taker fee in basis points."""
        return self.costs.fee_rate * 10_000

    @property
    def slippage_bps(self) -> float:
        """Return the slippage in basis points."""
        return self.costs.slippage_rate * 10_000


@dataclass(frozen=True, slots=True)
class AgentCycleSummary:
    """How one agent's cycle went (for logs and progress bars)."""

    agent: str
    status: str
    recorded: bool
    llm_calls: int = 0
    cache_hits: int = 0
    parse_failed: bool = False
    fills: int = 0
    error: str | None = None


@dataclass(frozen=True, slots=True)
class CycleReport:
    """What one cycle did."""

    scheduled_at: datetime
    agents: tuple[AgentCycleSummary, ...] = ()
    exit_fills: int = 0


@dataclass
class _SharedMarket:
    """Candles and funding fetched once per coin for every agent of one monitor pass."""

    # coin -> (from when, bars from then on)
    bars: dict[str, tuple[datetime, Bars]] = field(default_factory=dict)
    settlements: dict[str, Settlements | None] = field(default_factory=dict)

    def bars_from(self, coin: str, start: datetime) -> Bars | None:
        """Return the coin's bars opening at or after `start` (None: not fetched from there)."""
        found = self.bars.get(coin)
        if found is None or found[0] > start:
            return None
        bars = found[1]
        first = int(bars.open_ns.searchsorted(datetime_to_ns(start), side="left"))
        if first == 0:
            return bars
        return Bars(
            open_ns=bars.open_ns[first:],
            open=bars.open[first:],
            high=bars.high[first:],
            low=bars.low[first:],
            close=bars.close[first:],
        )


@dataclass(frozen=True, slots=True)
class _Answer:
    slot: AgentSlot
    request: DecisionRequest
    answer: StrategyAnswer | None
    error: str | None
    attempts: tuple[CallAttempt, ...]
    started_at: datetime
    finished_at: datetime


def _with_charts(
    messages: tuple[ChatMessage, ...], images: tuple[ImagePart, ...]
) -> tuple[ChatMessage, ...]:
    """Return `messages` with `images` on the last user message (its text unchanged)."""
    if not images:
        return messages
    last = max(index for index, message in enumerate(messages) if message.role == "user")
    changed = list(messages)
    changed[last] = replace(messages[last], images=images)
    return tuple(changed)


class CycleEngine:
    """Runs cycles and the exit monitor for a set of agents over one market and one recorder."""

    def __init__(
        self,
        *,
        market: MarketData,
        agents: Sequence[AgentSlot],
        config: EngineConfig,
        clock: Clock,
        recorder: Recorder,
        fill_prices: FillPrices | None = None,
        rules: Mapping[str, MarketRules] | None = None,
        fresh_prices: FreshPrices | None = None,
        time_limit: TimeLimit = asyncio.timeout,
        charts: ChartSource | None = None,
        reload_slot: ReloadSlot | None = None,
        record_market_failures: bool = False,
    ) -> None:
        self.market = market
        # Chart images for vision agents' prompts (None: no agent is shown charts).
        self.charts = charts
        self.recorder = recorder
        self.slots = list(agents)
        self.config = config
        self.clock = clock
        self.fill_prices = fill_prices or (lambda snapshot: snapshot.prices())
        self.rules: Mapping[str, MarketRules] = rules or {}
        # Live: prices fetched when an answer is ready to fill (the model may have taken minutes).
        self.fresh_prices = fresh_prices
        # The agent's time limit on the event loop's clock; a test gives one it controls.
        self.time_limit = time_limit
        self.reload_slot = reload_slot
        # Live: a cycle without market data is recorded `skipped` for every agent. A backtest's
        # history missing a moment is an error in its data, which stops the run.
        self.record_market_failures = record_market_failures
        self._in_flight: set[tuple[str, datetime]] = set()
        self._exit_step_ns = int(
            timeframe_to_timedelta(config.exit_timeframe).total_seconds() * 1e9
        )
        # Historical markets hand out arrays at their own timeframe: the monitor's fast path.
        self._bar_source: BarSource | None = (
            market
            if isinstance(market, BarSource) and market.base_timeframe == config.exit_timeframe
            else None
        )

    # -- the monitor ------------------------------------------------------------------------

    async def run_monitor(self, now: datetime) -> int:
        """Apply exits and funding up to `now` to every open position; return the exit count."""
        now = ensure_utc(now)
        shared = await self._shared_market(self.slots, now)
        exits = 0
        for slot in self.slots:
            try:
                exits += await self._catch_up(slot, now, shared)
            except Exception:  # one agent's trouble must not stop the others' stops
                log.exception("agent %s: exits could not be checked up to %s", slot.name, now)
        return exits

    async def _shared_market(self, slots: Sequence[AgentSlot], now: datetime) -> _SharedMarket:
        """Fetch, concurrently and once per coin, the candles and funding every agent's catch-up
        up to `now` needs: from the earliest point any agent holding the coin was checked to.

        A coin whose fetch fails is left out; the agents holding it then ask for it themselves
        (and sit out with the reason if it fails again).
        """
        shared = _SharedMarket()
        if self._bar_source is not None:
            return shared  # in memory already: nothing to share
        starts: dict[str, datetime] = {}
        for slot in slots:
            start = slot.checked_until
            if start is None or start >= now:
                continue
            for coin in slot.account.positions:
                starts[coin] = min(starts.get(coin, start), start)
        if not starts:
            return shared
        coins = list(starts)
        bars_found, settlements_found = await asyncio.gather(
            asyncio.gather(
                *(self._bars(coin, starts[coin], now) for coin in coins), return_exceptions=True
            ),
            asyncio.gather(
                *(self._settlements(coin, starts[coin], now) for coin in coins),
                return_exceptions=True,
            ),
        )
        for coin, bars, settlements in zip(coins, bars_found, settlements_found, strict=True):
            if not isinstance(bars, BaseException):
                shared.bars[coin] = (starts[coin], bars)
            if not isinstance(settlements, BaseException):
                shared.settlements[coin] = settlements
        return shared

    async def _catch_up(
        self, slot: AgentSlot, now: datetime, shared: _SharedMarket | None = None
    ) -> int:
        async with slot.lock:
            return await self._catch_up_locked(slot, now, shared or _SharedMarket())

    async def _catch_up_locked(self, slot: AgentSlot, now: datetime, shared: _SharedMarket) -> int:
        start = slot.checked_until
        if start is None or not slot.account.positions:
            # Nothing open (or never run): there is nothing to catch up on before `now`.
            slot.checked_until = now if start is None else max(start, now)
            return 0
        if start >= now:
            return 0
        bars = await self._held_bars(slot, start, now, shared)
        horizon_ns = _common_horizon(bars.values(), datetime_to_ns(now), self._exit_step_ns)
        if horizon_ns is None or horizon_ns <= datetime_to_ns(start):
            return 0
        horizon = ns_to_datetime(horizon_ns)
        trial: PaperAccount | None = None
        fills: list[Fill] = []
        closed: list[ClosedTrade] = []
        funding: list[FundingPayment] = []
        last_prices: dict[str, float] = {}
        for coin, block in bars.items():
            block = _before(block, horizon_ns)
            if len(block) == 0:
                continue  # this coin's candles all start after the common horizon
            last_prices[coin] = float(block.close[-1])
            if coin in shared.settlements:
                settlements = _settlements_within(shared.settlements[coin], start, horizon)
            else:
                settlements = await self._settlements(coin, start, horizon)
            position = slot.account.positions[coin]
            if settlements is None and not _may_exit(position, block):
                continue
            # Work on a copy: the account changes only once the recorder has the events.
            trial = trial or PaperAccount.restore(slot.account.state(), costs=slot.account.costs)
            result = trial.apply_bars(coin, block, settlements)
            funding.extend(result.funding)
            if result.exit is not None:
                fills.append(result.exit.fill)
                if result.exit.closed_trade is not None:
                    closed.append(result.exit.closed_trade)
        if trial is not None and (fills or funding):
            for coin in slot.account.positions:
                last_prices.setdefault(coin, slot.account.positions[coin].entry_price)
            events = AccountEventsRecord(
                agent=slot.name,
                at=horizon,
                books=trial.state(),
                view=trial.view(last_prices, horizon),
                fills=tuple(fills),
                closed_trades=tuple(closed),
                funding=tuple(funding),
            )
            # The account moves on only once the recorder has the events.
            await self.recorder.accept_events(events)
            slot.account = trial
        slot.checked_until = horizon
        return len(fills)

    async def _held_bars(
        self, slot: AgentSlot, start: datetime, end: datetime, shared: _SharedMarket
    ) -> dict[str, Bars]:
        """Return the bars of each coin `slot` holds, from `shared` where it has them."""
        bars: dict[str, Bars] = {}
        for coin in slot.account.positions:
            fetched = shared.bars_from(coin, start)
            bars[coin] = fetched if fetched is not None else await self._bars(coin, start, end)
        return bars

    async def _bars(self, coin: str, start: datetime, end: datetime) -> Bars:
        if self._bar_source is not None:
            return self._bar_source.bars_between(coin, start, end)
        frame = await self.market.candles(coin, self.config.exit_timeframe, start, end)
        return Bars.from_frame(frame)

    async def _settlements(self, coin: str, start: datetime, end: datetime) -> Settlements | None:
        if self._bar_source is not None:
            found = self._bar_source.settlements_between(coin, start, end)
        else:
            frame = await self.market.funding(coin, start, end)
            if frame.empty:
                return None
            found = Settlements.from_frame(frame)
        return found if len(found) else None

    # -- the cycle --------------------------------------------------------------------------

    async def run_cycle(self, scheduled_at: datetime) -> CycleReport:
        """Run the cycle scheduled at `scheduled_at` for every agent that has not run it yet."""
        at = ensure_utc(scheduled_at)
        stopped = tuple(
            AgentCycleSummary(
                agent=slot.name, status="stopped", recorded=False, error=slot.disabled_reason
            )
            for slot in self.slots
            if slot.disabled_reason is not None
        )
        pending = [
            slot
            for slot in self.slots
            if slot.disabled_reason is None
            and (slot.name, at) not in self._in_flight
            and not await self._done(slot, at)
        ]
        if not pending:
            return CycleReport(scheduled_at=at, agents=stopped)
        self._in_flight.update((slot.name, at) for slot in pending)
        try:
            report = await self._run_cycle(at, pending)
        finally:
            self._in_flight.difference_update((slot.name, at) for slot in pending)
        return replace(report, agents=report.agents + stopped)

    async def _done(self, slot: AgentSlot, at: datetime) -> bool:
        try:
            return await self.recorder.cycle_done(slot.name, at)
        except Exception as error:  # the unique key still refuses a second record
            log.warning("agent %s: could not tell whether %s is recorded: %s", slot.name, at, error)
            return False

    async def _run_cycle(self, at: datetime, pending: list[AgentSlot]) -> CycleReport:
        try:
            snapshot = await self.market.snapshot(at)
        except Exception as error:
            if not self.record_market_failures:
                raise
            # Exchange down, slow, or answering garbage: every agent sits the cycle out, on record.
            return await self._skip_cycle(at, pending, f"no market data: {_describe(error)}")
        problems = snapshot_problems(snapshot, max_price_gap_pct=self.config.max_price_gap_pct)
        if problems:
            # Stale or contradictory data: no model is asked and nothing fills this cycle.
            return await self._skip_cycle(
                at, pending, "market data unusable: " + "; ".join(problems)
            )
        exit_fills = 0
        skipped: list[AgentCycleSummary] = []
        ready: list[AgentSlot] = []
        fetched = await self._shared_market(pending, at)
        for slot in pending:
            try:
                exit_fills += await self._catch_up(slot, at, fetched)
            except Exception as error:  # this agent sits the cycle out; the others trade
                log.warning(
                    "agent %s: exits could not be checked before the cycle: %s",
                    slot.name,
                    _describe(error),
                )
                skipped.append(
                    await self._record_skip(
                        slot, at, f"exits could not be checked: {_describe(error)}"
                    )
                )
                continue
            ready.append(slot)
        market_section: str | None = None
        shared: tuple[str, ...] = ()
        if any(slot.strategy.uses_prompt for slot in ready):
            market_section = render_market_section(snapshot)
            # Texts every prompt of this cycle (or of many cycles) repeats: stored once.
            shared = (market_section, *render_context_blocks(snapshot))
        asking: list[tuple[AgentSlot, DecisionRequest]] = []
        for slot in ready:
            try:
                asking.append((slot, self._request(slot, snapshot, market_section, shared)))
            except (AppError, ValueError) as error:
                log.warning("agent %s: no prompt this cycle: %s", slot.name, error)
                skipped.append(await self._record_skip(slot, at, f"no prompt: {error}"))
        fill_prices = self.fill_prices(snapshot)
        # Each agent's cycle is settled and recorded as soon as its answer is in, so a slow model
        # delays nobody's fills and a crash keeps the agent-cycles already finished. One agent's
        # error never ends the others' cycle: `return_exceptions` keeps every outcome.
        outcomes = await asyncio.gather(
            *(self._ask_and_record(slot, req, snapshot, fill_prices) for slot, req in asking),
            return_exceptions=True,
        )
        summaries: list[AgentCycleSummary] = []
        for (slot, _), outcome in zip(asking, outcomes, strict=True):
            if isinstance(outcome, AgentCycleSummary):
                summaries.append(outcome)
                continue
            if not isinstance(outcome, Exception):
                raise outcome  # cancelled: the daemon is stopping
            log.error("agent %s: cycle %s lost: %s", slot.name, at.isoformat(), _describe(outcome))
            summaries.append(
                AgentCycleSummary(
                    agent=slot.name, status="failed", recorded=False, error=_describe(outcome)
                )
            )
        return CycleReport(
            scheduled_at=at, agents=tuple(summaries) + tuple(skipped), exit_fills=exit_fills
        )

    async def _ask_and_record(
        self,
        slot: AgentSlot,
        request: DecisionRequest,
        snapshot: MarketSnapshot,
        fill_prices: Mapping[str, float | None],
    ) -> AgentCycleSummary:
        answer = await self._ask(slot, request)
        if self.fresh_prices is not None and _has_orders(answer.answer):
            fresh = await self._fresh_prices()
            if fresh is not None:
                # Never the snapshot's older price: a coin without a current price is not filled.
                fill_prices = {coin: fresh.get(coin) for coin in fill_prices}
        async with slot.lock:
            try:
                trial, record, summary = self._settle(answer, snapshot, fill_prices)
            except Exception as error:  # a bug in one agent's settling: on record, holding
                log.exception("agent %s: the answer could not be settled", slot.name)
                return await self._record_failure(
                    answer, f"the answer could not be settled: {_describe(error)}"
                )
            try:
                accepted = await self.recorder.accept(record)
            except Exception as error:  # the database refused it, even after retries
                log.error(
                    "agent %s: cycle %s could not be recorded: %s",
                    slot.name,
                    record.scheduled_at.isoformat(),
                    _describe(error),
                )
                return await self._record_failure(
                    answer, f"could not be recorded: {_describe(error)}"
                )
            if accepted:
                self._advance(slot, trial, record)
                return summary
            await self._lost_race(slot, record.scheduled_at)
            return replace(summary, recorded=False, fills=0, error="recorded by another writer")

    async def _skip_cycle(
        self, at: datetime, pending: Sequence[AgentSlot], reason: str
    ) -> CycleReport:
        """Record every pending agent-cycle as `skipped` with `reason`; the accounts stay."""
        log.warning("cycle %s skipped: %s", at.isoformat(), reason)
        skips = await asyncio.gather(*(self._record_skip(slot, at, reason) for slot in pending))
        return CycleReport(scheduled_at=at, agents=tuple(skips))

    def flush(self) -> None:
        """Write what the recorder still holds back (a backtest's last step)."""
        self.recorder.flush()

    async def _record_skip(self, slot: AgentSlot, at: datetime, reason: str) -> AgentCycleSummary:
        """Record that the agent sat this cycle out (never asked, nothing filled) and why."""
        now = self.clock()
        record = AgentCycleRecord(
            agent=slot.name,
            scheduled_at=at,
            started_at=now,
            finished_at=now,
            # The model was not asked: its invocations stay where they were.
            invocation=slot.invocations,
            status="skipped",
            books=slot.account.state(),
            # No valuation and no account snapshot: the exits were not checked up to `at`.
            view=None,
            error=reason,
        )
        summary = AgentCycleSummary(agent=slot.name, status="skipped", recorded=True, error=reason)
        async with slot.lock:
            try:
                accepted = await self.recorder.accept(record)
            except Exception as error:
                log.error(
                    "agent %s: the skipped cycle %s could not be recorded: %s",
                    slot.name,
                    at.isoformat(),
                    _describe(error),
                )
                return replace(summary, recorded=False)
            if not accepted:
                await self._lost_race(slot, at)
                return replace(summary, recorded=False)
        return summary

    async def _record_failure(self, asked: _Answer, reason: str) -> AgentCycleSummary:
        """Record the agent-cycle as failed with the account unchanged (called under its lock)."""
        slot, request = asked.slot, asked.request
        record = AgentCycleRecord(
            agent=slot.name,
            scheduled_at=request.at,
            started_at=asked.started_at,
            finished_at=self.clock(),
            invocation=request.invocation,
            status="failed",
            books=slot.account.state(),
            view=None,
            error=reason,
            prompt_version=request.prompt_version,
        )
        summary = AgentCycleSummary(agent=slot.name, status="failed", recorded=True, error=reason)
        try:
            accepted = await self.recorder.accept(record)
        except Exception as error:
            log.error(
                "agent %s: the failed cycle %s could not be recorded either: %s",
                slot.name,
                request.at.isoformat(),
                _describe(error),
            )
            return replace(summary, recorded=False)
        if not accepted:
            await self._lost_race(slot, request.at)
            return replace(summary, recorded=False)
        slot.invocations = record.invocation
        return summary

    async def _lost_race(self, slot: AgentSlot, at: datetime) -> None:
        """Another writer recorded this agent-cycle first: its books are the database's now."""
        if self.reload_slot is None:
            slot.disabled_reason = (
                f"another writer recorded its cycle {at.isoformat()}; its account in memory is "
                "out of date: stop the other writer and restart"
            )
            log.error("agent %s stopped: %s", slot.name, slot.disabled_reason)
            return
        try:
            fresh = await self.reload_slot(slot.name)
        except Exception as error:
            slot.disabled_reason = (
                f"another writer recorded its cycle {at.isoformat()} and the account could not "
                f"be reloaded ({_describe(error)}): stop the other writer and restart"
            )
            log.error("agent %s stopped: %s", slot.name, slot.disabled_reason)
            return
        slot.account = fresh.account
        slot.sharpe = fresh.sharpe
        slot.invocations = fresh.invocations
        slot.started_at = fresh.started_at
        slot.checked_until = fresh.checked_until
        slot.recent_entries_at = fresh.recent_entries_at
        log.warning(
            "agent %s: cycle %s was already recorded by another writer; account reloaded from "
            "the database (cash %.2f USD, %s)",
            slot.name,
            at.isoformat(),
            slot.account.cash_usd,
            ", ".join(slot.account.positions) or "no positions",
        )

    async def _fresh_prices(self) -> Mapping[str, float] | None:
        """Return the current prices; None when this cycle fills at its own (a replay's)."""
        assert self.fresh_prices is not None
        try:
            return await self.fresh_prices()
        except Exception as error:  # the orders are rejected for want of a price, and say so
            log.warning("current prices unavailable (%s): this cycle's orders do not fill", error)
            return {}

    @staticmethod
    def _advance(slot: AgentSlot, trial: PaperAccount, record: AgentCycleRecord) -> None:
        slot.account = trial
        slot.invocations = record.invocation
        if slot.started_at is None:
            slot.started_at = record.scheduled_at
        if record.view is not None:
            slot.sharpe.add(record.view.equity_usd)
        slot.recent_entries_at.extend(
            fill.filled_at for fill in record.fills if fill.reason == "entry"
        )
        risk.forget_old_entries(slot.recent_entries_at, record.scheduled_at)

    def _request(
        self,
        slot: AgentSlot,
        snapshot: MarketSnapshot,
        market_section: str | None,
        shared: tuple[str, ...] = (),
    ) -> DecisionRequest:
        at = snapshot.at
        view = slot.account.view(snapshot.prices(), at)
        invocation = slot.invocations + 1
        messages: tuple[ChatMessage, ...] = ()
        if slot.strategy.uses_prompt:
            messages = tuple(
                build_messages(
                    snapshot,
                    view,
                    started_at=slot.started_at or at,
                    invocation=invocation,
                    fee_bps=self.config.fee_bps,
                    slippage_bps=self.config.slippage_bps,
                    max_leverage=self.config.limits.max_leverage,
                    max_position_margin_pct=self.config.limits.max_position_margin_pct,
                    sharpe=slot.sharpe.value(),
                    market_section=market_section,
                )
            )
            if self.charts is not None and isinstance(slot.strategy, SeesCharts):
                if slot.strategy.wants_images:
                    messages = _with_charts(
                        messages, self.charts.charts(snapshot, slot.account.positions)
                    )
        return DecisionRequest(
            at=at,
            snapshot=snapshot,
            account=view,
            coins=self.config.coins,
            messages=messages,
            prompt_version=PROMPT_VERSION if messages else None,
            invocation=invocation,
            shared_texts=(messages[0].content, *shared) if messages else (),
            # The model call plans its retries inside this; `time_limit` in _ask is the safety net.
            budget_s=max(self.config.agent_timeout_s - 3.0, self.config.agent_timeout_s * 0.5),
        )

    async def _ask(self, slot: AgentSlot, request: DecisionRequest) -> _Answer:
        started_at = self.clock()
        answer: StrategyAnswer | None = None
        error: str | None = None
        attempts: tuple[CallAttempt, ...] = ()
        try:
            async with self.time_limit(self.config.agent_timeout_s):
                answer = await slot.strategy.decide(request)
            attempts = answer.attempts
        except TimeoutError:
            error = f"no answer within {self.config.agent_timeout_s:g} s: holding this cycle"
            if isinstance(slot.strategy, ReportsAttempts):
                # The requests made before the cut still count (and spent quota).
                attempts = slot.strategy.attempts_made(request)
        except ModelCallError as exc:
            error = str(exc)
            attempts = exc.attempts
            # Only what a person must fix stops the agent; a model not served today, a quota
            # or a timeout is held through and tried again next cycle.
            if isinstance(exc, ModelAuthError | ModelBillingError | ReplayMissError):
                slot.disabled_reason = str(exc)
                log.error("agent %s stopped: %s", slot.name, exc)
        except ConfigError as exc:
            error = str(exc)
            slot.disabled_reason = error
            log.error("agent %s stopped: %s", slot.name, exc)
        except (DataUnavailableError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # one agent's bug must not take the others' cycle down
            log.exception("agent %s failed", slot.name)
            error = f"{type(exc).__name__}: {exc}"
        return _Answer(
            slot=slot,
            request=request,
            answer=answer,
            error=error,
            attempts=attempts,
            started_at=started_at,
            finished_at=self.clock(),
        )

    def _settle(
        self,
        asked: _Answer,
        snapshot: MarketSnapshot,
        fill_prices: Mapping[str, float | None],
    ) -> tuple[PaperAccount, AgentCycleRecord, AgentCycleSummary]:
        slot, request = asked.slot, asked.request
        trial = PaperAccount.restore(slot.account.state(), costs=slot.account.costs)
        decisions: list[DecisionRecord] = []
        fills: list[Fill] = []
        closed: list[ClosedTrade] = []
        answer = asked.answer
        error = asked.error
        if answer is not None and answer.parse_error is not None:
            error = f"unusable answer: {answer.parse_error}"
        if answer is not None:
            decisions.extend(
                DecisionRecord(
                    None,
                    "rejected",
                    f"unreadable entry: {problem.reason}",
                    coin=problem.coin,
                    signal=problem.signal or "",
                )
                for problem in answer.problems
            )
        if answer is not None and answer.decisions:
            traded, fills, closed = self._trade(
                trial, answer.decisions, request, snapshot, fill_prices, slot.recent_entries_at
            )
            decisions = traded + decisions
        status: Literal["ok", "failed"] = "ok" if error is None else "failed"
        view = trial.view(snapshot.prices(), snapshot.at)
        # What the adapter did to the data (implausible candles dropped) stays with the record.
        noted = "; ".join((*([error] if error else []), *snapshot.notes)) or None
        chat = None if answer is None else answer.chat
        if answer is None and asked.attempts:
            answer = StrategyAnswer(decisions=(), attempts=asked.attempts)
        record = AgentCycleRecord(
            agent=slot.name,
            scheduled_at=snapshot.at,
            started_at=asked.started_at,
            finished_at=asked.finished_at,
            invocation=request.invocation,
            status=status,
            books=trial.state(),
            view=view,
            error=noted,
            prompt_version=request.prompt_version,
            messages=request.messages,
            answer=answer,
            decisions=tuple(decisions),
            fills=tuple(fills),
            closed_trades=tuple(closed),
            shared_texts=request.shared_texts,
            prompt_hash=prompt_hash(request.messages) if request.messages else None,
        )
        cache_hit = chat is not None and chat.cache_hit
        # Requests sent: a held call (no model could be asked) or a replayed failure sent none.
        sent = sum(1 for attempt in asked.attempts if was_sent(attempt.outcome))
        calls = sent or (0 if chat is None or cache_hit or asked.attempts else 1)
        summary = AgentCycleSummary(
            agent=slot.name,
            status=status,
            recorded=True,
            llm_calls=calls,
            cache_hits=1 if cache_hit else 0,
            parse_failed=answer is not None and answer.parse_error is not None,
            fills=len(fills),
            error=error,
        )
        return trial, record, summary

    def _trade(
        self,
        account: PaperAccount,
        decisions: Sequence[TradeDecision],
        request: DecisionRequest,
        snapshot: MarketSnapshot,
        fill_prices: Mapping[str, float | None],
        entries_at: Sequence[datetime],
    ) -> tuple[list[DecisionRecord], list[Fill], list[ClosedTrade]]:
        now = snapshot.at
        outcome = risk.check(
            decisions,
            account=request.account,
            prices=snapshot.prices(),
            rules=self.rules,
            limits=self.config.limits,
            now=now,
            recent_entries_at=entries_at,
        )
        records: list[DecisionRecord] = []
        fills: list[Fill] = []
        closed: list[ClosedTrade] = []
        fill_at = self.clock()
        for item in outcome.outcomes:
            if item.status == "hold":
                records.append(DecisionRecord(item.decision, "held"))
                continue
            if item.intent is None:
                records.append(DecisionRecord(item.decision, "rejected", item.reason))
                continue
            price = fill_prices.get(item.intent.coin)
            if price is None or not math.isfinite(price):
                records.append(
                    DecisionRecord(
                        item.decision, "rejected", "no current price to fill at this cycle"
                    )
                )
                continue
            executed = account.execute(item.intent, reference_price=price, at=fill_at)
            if isinstance(executed, Rejection):
                records.append(DecisionRecord(item.decision, "rejected", executed.reason))
                continue
            fills.append(executed.fill)
            if executed.closed_trade is not None:
                closed.append(executed.closed_trade)
            records.append(
                DecisionRecord(
                    item.decision,
                    "executed",
                    item.reason,
                    filled_quantity=executed.fill.quantity,
                )
            )
        return records, fills, closed


def _common_horizon(blocks: Iterable[Bars], now_ns: int, step_ns: int) -> int | None:
    """Return the end of the newest candle every block has closed (None if one has none).

    One horizon for every coin, so a coin whose candle is late is not skipped, and funding is
    never settled twice.
    """
    horizon_ns = now_ns
    for block in blocks:
        if len(block) == 0:
            return None
        horizon_ns = min(horizon_ns, int(block.open_ns[-1]) + step_ns)
    return horizon_ns


def _settlements_within(
    found: Settlements | None, start: datetime, end: datetime
) -> Settlements | None:
    """Return the settlements in (`start`, `end`] of `found` (None when there are none)."""
    if found is None:
        return None
    times = found.settled_ns
    keep = (times > datetime_to_ns(start)) & (times <= datetime_to_ns(end))
    if not keep.any():
        return None
    if keep.all():
        return found
    return Settlements(settled_ns=times[keep], rates=found.rates[keep], marks=found.marks[keep])


def _has_orders(answer: StrategyAnswer | None) -> bool:
    """Return True when the answer holds a decision that may trade (not only holds)."""
    return answer is not None and any(d.signal != "hold" for d in answer.decisions)


def _describe(error: BaseException) -> str:
    """Return an error as a reason: its message, with its type when the message says little."""
    text = str(error).strip()
    if isinstance(error, AppError) and text:
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _before(bars: Bars, end_ns: int) -> Bars:
    """Return the bars opening before `end_ns`."""
    stop = int(bars.open_ns.searchsorted(end_ns, side="left"))
    if stop == len(bars):
        return bars
    return Bars(
        open_ns=bars.open_ns[:stop],
        open=bars.open[:stop],
        high=bars.high[:stop],
        low=bars.low[:stop],
        close=bars.close[:stop],
    )


def _may_exit(position: Position, bars: Bars) -> bool:
    """Return False when no bar reaches the position's stop, target or liquidation price.

    Two reductions let most cycles skip the exit scan. A gap through a level also shows here,
    since a bar's open lies within its low and high.
    """
    if len(bars.low) == 1:
        # The usual case between two cycles: one bar, and numpy's reductions cost more than it.
        low, high = float(bars.low[0]), float(bars.high[0])
    else:
        low, high = float(bars.low.min()), float(bars.high.max())
    plan = position.exit_plan
    stop, target = plan.stop_loss, plan.profit_target
    liquidation = position.liquidation_price
    if position.side == "long":
        return (
            low <= liquidation
            or (stop is not None and low <= stop)
            or (target is not None and high >= target)
        )
    return (
        high >= liquidation
        or (stop is not None and high >= stop)
        or (target is not None and low <= target)
    )
