"""The cycle engine over real parts: historical market, paper accounts, a migrated SQLite store."""

from __future__ import annotations

import asyncio
import itertools
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta

import pandas as pd
import pytest
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from app.db import models
from app.db.migrate import upgrade
from app.db.queries import call_messages
from app.db.repository import AgentIdentity, SqlCycleStore
from app.db.session import make_engine
from app.db.text_delta import delta_base, is_delta
from app.decisions import DecisionProblem, TradeDecision
from app.domain import CallAttempt, ChatMessage, PaperCosts
from app.errors import InvariantError
from app.market.historical import HistoricalMarketData
from app.metrics import RunningSharpe
from app.ports import DecisionRequest
from app.trading.engine import AgentSlot, CycleEngine, EngineConfig, TimeLimit
from app.trading.paper import PaperAccount
from app.trading.recording import BatchRecorder, ImmediateRecorder
from app.trading.risk import RiskLimits
from app.wiring import restore_slots
from tests.fakes.candles import six_coin_market
from tests.fakes.strategies import ScriptedStrategy

COINS = ("BTC", "ETH")
STEP = timedelta(minutes=5)
COSTS = PaperCosts(fee_rate=0.00045, slippage_rate=0.0001, maintenance_margin_rate=0.005)


def enter_long_btc_once(request: DecisionRequest, *, band: float = 0.05) -> list[TradeDecision]:
    """Go long 0.01 BTC at 2x with a stop and a target `band` away, when flat."""
    if "BTC" in request.account.positions:
        return [TradeDecision(coin="BTC", signal="hold")]
    price = request.snapshot.price("BTC")
    return [
        TradeDecision(
            coin="BTC",
            signal="buy_to_enter",
            quantity=0.01,
            leverage=2,
            stop_loss=price * (1 - band),
            profit_target=price * (1 + band),
            invalidation_condition="close below the stop",
            confidence=0.6,
            risk_usd=50.0,
            justification="test entry",
        )
    ]


@pytest.fixture(scope="module")
def market() -> HistoricalMarketData:
    return HistoricalMarketData(
        six_coin_market(COINS, periods=3500), intraday_timeframe="5m", context_timeframe="4h"
    )


@pytest.fixture
def database(db_url: str) -> Engine:
    engine = make_engine(db_url)
    upgrade(db_url, engine=engine)
    return engine


def build_engine(
    market: HistoricalMarketData,
    database: Engine,
    strategies: list[ScriptedStrategy],
    *,
    timeout_s: float = 5.0,
    restore: bool = False,
    run_id: str = "test",
    batch: bool = False,
    time_limit: TimeLimit = asyncio.timeout,
) -> tuple[CycleEngine, SqlCycleStore, list[datetime]]:
    store = SqlCycleStore(database, run_id=run_id)
    first = market.first_ready_at()
    store.register_agents(
        [AgentIdentity(name=s.name, provider="fake", model="fake-1") for s in strategies], at=first
    )
    if restore:
        slots = restore_slots(store, {s.name: s for s in strategies}, costs=COSTS, interval=STEP)
    else:
        slots = [
            AgentSlot(
                name=s.name,
                strategy=s,
                account=PaperAccount(10_000.0, costs=COSTS),
                sharpe=RunningSharpe(STEP),
            )
            for s in strategies
        ]
    clock = [first]

    def fill_prices(snapshot):  # type: ignore[no-untyped-def]
        return {coin: market.next_open(coin, snapshot.at)[1] for coin in snapshot.coins}

    config = EngineConfig(
        coins=COINS,
        interval=STEP,
        limits=RiskLimits(costs=COSTS),
        agent_timeout_s=timeout_s,
        exit_timeframe="5m",
    )
    engine = CycleEngine(
        market=market,
        # As the daemon records (each agent-cycle at once) or as a backtest does (batches).
        recorder=BatchRecorder(store) if batch else ImmediateRecorder(store),
        agents=slots,
        config=config,
        clock=lambda: clock[0],
        fill_prices=fill_prices,
        time_limit=time_limit,
    )
    return engine, store, clock


def count(database: Engine, table: type[models.Base], **where: object) -> int:
    query = select(func.count()).select_from(table)
    for column, value in where.items():
        query = query.where(getattr(table, column) == value)
    with database.connect() as connection:
        return int(connection.execute(query).scalar_one())


def test_one_agent_timing_out_does_not_stop_another_from_trading(market, database) -> None:
    """`slow` never answers, so only the 0.3 s limit ends its turn; `trader` answers at once
    (without awaiting anything), so no limit can cut it."""
    slow = ScriptedStrategy("slow", enter_long_btc_once, never_answers=True)
    trader = ScriptedStrategy("trader", enter_long_btc_once)
    engine, _, clock = build_engine(market, database, [slow, trader], timeout_s=0.3)

    report = asyncio.run(engine.run_cycle(clock[0]))

    by_agent = {summary.agent: summary for summary in report.agents}
    assert by_agent["slow"].status == "failed"
    assert "no answer within 0.3 s" in (by_agent["slow"].error or "")
    assert by_agent["trader"].status == "ok"
    assert by_agent["trader"].fills == 1
    with database.connect() as connection:
        cycles = dict(
            connection.execute(
                select(models.Agent.name, models.Cycle.status).join(models.Cycle.agent)
            ).all()
        )
    assert cycles == {"slow": "failed", "trader": "ok"}
    assert count(database, models.Fill, reason="entry") == 1
    assert count(database, models.Position, status="open") == 1
    slot = {s.name: s for s in engine.slots}
    assert "BTC" in slot["trader"].account.positions
    assert not slot["slow"].account.positions


def test_running_a_scheduled_cycle_twice_never_trades_twice(market, database) -> None:
    trader = ScriptedStrategy("trader", enter_long_btc_once)
    engine, _, clock = build_engine(market, database, [trader])
    asyncio.run(engine.run_cycle(clock[0]))
    again = asyncio.run(engine.run_cycle(clock[0]))

    assert again.agents == ()
    assert len(trader.requests) == 1
    # A second process (a restarted daemon) sees the agent-cycle as done, too.
    other = ScriptedStrategy("trader", enter_long_btc_once)
    engine2, _, _ = build_engine(market, database, [other], restore=True)
    assert asyncio.run(engine2.run_cycle(clock[0])).agents == ()
    assert other.requests == []
    assert count(database, models.Cycle) == 1
    assert count(database, models.Fill) == 1


def test_unreadable_answer_is_recorded_with_its_reason_and_the_agent_holds(
    market, database
) -> None:
    confused = ScriptedStrategy("confused", enter_long_btc_once, parse_error="no JSON object found")
    engine, _, clock = build_engine(market, database, [confused])
    report = asyncio.run(engine.run_cycle(clock[0]))

    assert report.agents[0].status == "failed"
    assert report.agents[0].parse_failed
    with Session(database) as session:
        call = session.scalars(select(models.LlmCall)).one()
        cycle = session.scalars(select(models.Cycle)).one()
    assert call.outcome == "parse_error"
    assert call.error == "no JSON object found"
    assert call.response_text  # the raw answer is kept
    assert "no JSON object found" in (cycle.error or "")
    assert count(database, models.Fill) == 0


def test_restored_engine_continues_with_identical_accounts(market, database) -> None:
    """Forty cycles in one engine equal the same forty run across five restarts.

    Stops and targets 0.3% away make the monitor close positions (and the script re-enter)
    across the restart, so exits replayed from the database are part of what must match.
    """
    first = market.first_ready_at()
    times = [first + i * STEP for i in range(40)]

    def tight(request: DecisionRequest) -> list[TradeDecision]:
        return enter_long_btc_once(request, band=0.003)

    def run(engine: CycleEngine, clock: list[datetime], moments: list[datetime]) -> None:
        for moment in moments:
            clock[0] = moment
            asyncio.run(engine.run_cycle(moment))

    # One uninterrupted run in its own run id.
    strategy = ScriptedStrategy("trader", tight)
    engine, _, clock = build_engine(market, database, [strategy], run_id="one-run")
    run(engine, clock, times)
    expected = engine.slots[0].account.state()
    exits = count(database, models.Fill) - count(database, models.Fill, reason="entry")
    assert exits >= 2, "the scenario must close positions between cycles"

    # The same, stopped five times and restored from the database each time. Restarts land
    # both just before exits and between them (the exit checkpoint must survive a restart).
    splits = [0, 5, 12, 20, 27, 35, 40]
    segments: list[ScriptedStrategy] = []
    for begin, end in itertools.pairwise(splits):
        segment = ScriptedStrategy("trader", tight)
        engine_n, _, clock_n = build_engine(market, database, [segment], restore=begin > 0)
        run(engine_n, clock_n, times[begin:end])
        segments.append(segment)

    assert engine_n.slots[0].account.state() == expected
    assert engine_n.slots[0].invocations == 40
    requests = [request for segment in segments for request in segment.requests]
    assert [r.invocation for r in requests] == list(range(1, 41))
    # The restarted agents saw exactly the prompts the uninterrupted one did.
    assert [r.messages for r in requests] == [r.messages for r in strategy.requests]


def test_malformed_entries_are_stored_as_rejected_while_the_valid_ones_trade(
    market, database
) -> None:
    problem = DecisionProblem(coin="ETH", signal="buy_to_enter", reason="leverage: not a number")
    mixed = ScriptedStrategy("mixed", enter_long_btc_once, problems=(problem,))
    engine, _, clock = build_engine(market, database, [mixed])
    report = asyncio.run(engine.run_cycle(clock[0]))

    assert report.agents[0].status == "ok"
    with Session(database) as session:
        rows = {
            d.coin: (d.signal, d.outcome, d.reason)
            for d in session.scalars(select(models.Decision))
        }
    assert rows["BTC"][:2] == ("buy_to_enter", "executed")
    assert rows["ETH"] == ("buy_to_enter", "rejected", "unreadable entry: leverage: not a number")


def test_prompts_are_stored_exactly_with_shared_texts_kept_once(market, database) -> None:
    """Three agents over two cycles: 6 calls, but the system prompt once, each cycle's market
    section once, and each coin's 4h context block once for both cycles (1 + 2 + 2 prompt
    parts, and the keyframes the calls' messages are compressed against); every call's prompt
    reads back byte for byte."""
    strategies = [ScriptedStrategy(name, enter_long_btc_once) for name in ("a", "b", "c")]
    engine, _, clock = build_engine(market, database, strategies)
    for moment in (clock[0], clock[0] + STEP):
        clock[0] = moment
        asyncio.run(engine.run_cycle(moment))

    with Session(database) as session:
        keyframes = {
            delta_base(blob)
            for blob in session.scalars(select(models.LlmCall.messages_z))
            if blob is not None and is_delta(blob)
        }
    # Calls whose messages a delta would not shrink are compressed alone: no keyframe then.
    assert count(database, models.PromptPart) == 5 + len(keyframes)
    with Session(database) as session:
        calls = session.execute(
            select(models.LlmCall.id, models.Agent.name)
            .join(models.Agent, models.Agent.id == models.LlmCall.agent_id)
            .order_by(models.LlmCall.id)
        ).all()
    sent = {s.name: [r.messages for r in s.requests] for s in strategies}
    seen: dict[str, list[tuple[ChatMessage, ...]]] = {}
    for call_id, name in calls:
        seen.setdefault(name, []).append(tuple(call_messages(database, call_id)))
    assert seen == sent


def test_batched_records_keep_positions_and_trades_consistent_with_the_books(
    market, database
) -> None:
    """A backtest batches cycle records while the monitor writes exits at once: the exits must
    still close the positions those (unflushed) entries opened."""

    def tight(request: DecisionRequest) -> list[TradeDecision]:
        return enter_long_btc_once(request, band=0.003)

    strategy = ScriptedStrategy("trader", tight)
    engine, _, clock = build_engine(market, database, [strategy], batch=True)
    for i in range(40):
        clock[0] = market.first_ready_at() + i * STEP
        asyncio.run(engine.run_cycle(clock[0]))
    engine.flush()

    books = engine.slots[0].account.state()
    with Session(database) as session:
        open_rows = session.scalars(
            select(models.Position.coin).where(models.Position.status == "open")
        ).all()
        closed_rows = session.scalar(
            select(func.count())
            .select_from(models.Position)
            .where(models.Position.status == "closed")
        )
        exits = session.scalar(
            select(func.count()).select_from(models.Fill).where(models.Fill.reason != "entry")
        )
        entries = session.scalar(
            select(func.count()).select_from(models.Fill).where(models.Fill.reason == "entry")
        )
    assert exits >= 2, "the scenario must close positions between cycles"
    assert sorted(open_rows) == sorted(books.positions)
    assert closed_rows == exits
    assert entries == closed_rows + len(open_rows)


class SlowMarket:
    """The historical market behind awaits, like a live feed: lets the monitor and a cycle
    interleave (no array fast path)."""

    def __init__(self, inner: HistoricalMarketData) -> None:
        self.inner = inner

    async def snapshot(self, at):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.01)
        return await self.inner.snapshot(at)

    async def candles(self, coin, timeframe, start, end):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.01)
        return await self.inner.candles(coin, timeframe, start, end)

    async def funding(self, coin, start, end):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.01)
        return await self.inner.funding(coin, start, end)

    async def market_rules(self):  # type: ignore[no-untyped-def]
        return await self.inner.market_rules()

    async def close(self) -> None:
        return None


def test_monitor_and_cycle_running_together_settle_funding_once(database) -> None:
    """Hourly funding of 0.01%: a long opened at the first cycle pays the 1h-later settlement
    exactly once, although the monitor and the next cycle both catch up to the same time."""
    candles = six_coin_market(COINS, periods=3500)
    hourly = {
        coin: pd.Series(
            0.0001,
            index=frame.index[(frame.index.minute == 0)].rename("settled_at"),
        )
        for coin, frame in candles.items()
    }
    inner = HistoricalMarketData(
        candles, intraday_timeframe="5m", context_timeframe="4h", funding=hourly
    )
    trader = ScriptedStrategy("trader", enter_long_btc_once)
    engine, store, clock = build_engine(inner, database, [trader])
    engine.market = SlowMarket(inner)
    engine._bar_source = None  # the live path: awaits between reads
    first = inner.first_ready_at()
    asyncio.run(engine.run_cycle(first))
    later = first + timedelta(hours=1, minutes=5)
    clock[0] = later

    async def together() -> None:
        await asyncio.gather(engine.run_monitor(later), engine.run_cycle(later))

    asyncio.run(together())

    with Session(database) as session:
        payments = session.scalars(select(models.FundingPayment)).all()
    assert len(payments) == 1
    books = engine.slots[0].account.state()
    assert books.funding_paid_usd == pytest.approx(payments[0].amount_usd)
    assert store.restore("trader").books == books


def test_live_fills_use_the_price_when_the_answer_is_ready(market, database) -> None:
    """The model answered after the market moved 1%: the entry fills at the fresh 101% price
    (plus 1 bp of slippage), not at the snapshot's."""
    trader = ScriptedStrategy("trader", enter_long_btc_once)
    engine, _, clock = build_engine(market, database, [trader])
    snapshot_price = asyncio.run(market.snapshot(clock[0])).price("BTC")

    async def fresh() -> dict[str, float]:
        return {"BTC": snapshot_price * 1.01}

    engine.fresh_prices = fresh
    engine.fill_prices = lambda snapshot: snapshot.prices()  # live: the snapshot's last prices
    asyncio.run(engine.run_cycle(clock[0]))

    with Session(database) as session:
        fill = session.scalars(select(models.Fill)).one()
    assert fill.reference_price == pytest.approx(snapshot_price * 1.01)
    assert fill.price == pytest.approx(snapshot_price * 1.01 * (1 + COSTS.slippage_rate))


def test_a_slow_model_is_cut_at_the_agents_budget_and_its_request_recorded(
    market, database, db_url, monkeypatch
) -> None:
    """The model never answers; the agent has 4 s per cycle, so the call gets a budget of
    max(4 - 3, 4 / 2) = 2 s, and its request is cut at that (2 s, not less, so that the request
    reaches the server on a loaded machine before it is cut). The cycle holds with the
    reason, and the request it made (which spent quota) is an `llm_call` row with the prompt.

    No real durations race: the call's deadline is read on a clock that stands still (its one
    request starts with exactly 2 s left), and the engine's own 4 s limit, the safety net
    behind the budget, is held off by the test, so the budget's cut is the only one."""
    from app.config import AgentConfig, load_settings
    from app.db.session import make_session_factory
    from tests.fakes.clock import FakeMonotonic
    from tests.fakes.openai_server import FakeOpenAIServer, hang
    from tests.fakes.runtime import LlmHarness

    model = "Qwen/Qwen3-235B-A22B-Instruct-2507"
    limits = HeldOffLimit()
    with FakeOpenAIServer("modelscope") as llm:
        llm.script(model, hang())
        monkeypatch.setenv("MODELSCOPE_API_KEY", "ms-test")
        monkeypatch.setenv("MODELSCOPE_BASE_URL", llm.base_url)
        settings = load_settings(env_file=None)

        async def run() -> None:
            runtime = LlmHarness(
                settings, session_factory=make_session_factory(database), monotonic=FakeMonotonic()
            )
            strategy = runtime.strategy(AgentConfig.from_spec(f"qwen=modelscope:{model}"))
            engine, _, clock = build_engine(
                market,
                database,
                [strategy],  # type: ignore[list-item]
                timeout_s=4.0,
                time_limit=limits,
            )
            try:
                await engine.run_cycle(clock[0])
            finally:
                await runtime.aclose()

        asyncio.run(run())
        assert len(llm.requests_for(model)) == 1
    assert limits.asked_s == [4.0]

    with Session(database) as session:
        cycle = session.scalars(select(models.Cycle)).one()
        calls = session.scalars(select(models.LlmCall)).all()
    assert cycle.status == "failed" and "time budget" in (cycle.error or "")
    assert [(c.model_requested, c.outcome) for c in calls] == [(model, "timeout")]
    assert calls[0].messages_z is not None  # the prompt of the unanswered call is kept


class HeldOffLimit:
    """An agent time limit that never runs out; it remembers the seconds it was given."""

    def __init__(self) -> None:
        self.asked_s: list[float] = []

    def __call__(self, seconds: float) -> AbstractAsyncContextManager[object]:
        self.asked_s.append(seconds)
        return asyncio.timeout(None)


class StuckStrategy(ScriptedStrategy):
    """A strategy that never answers but knows the request it has made so far."""

    def attempts_made(self, request: DecisionRequest) -> tuple[CallAttempt, ...]:
        return (CallAttempt(provider="fake", model="stuck-1", outcome="cancelled"),)


def test_the_agent_timeout_records_the_attempts_a_cancelled_call_made(market, database) -> None:
    stuck = StuckStrategy("stuck", enter_long_btc_once, never_answers=True)
    engine, _, clock = build_engine(market, database, [stuck], timeout_s=0.3)
    asyncio.run(engine.run_cycle(clock[0]))
    with Session(database) as session:
        calls = session.scalars(select(models.LlmCall)).all()
        cycle = session.scalars(select(models.Cycle)).one()
    assert "no answer within 0.3 s" in (cycle.error or "")
    assert [(c.model_requested, c.outcome) for c in calls] == [("stuck-1", "cancelled")]


def test_restore_refuses_books_that_disagree_with_their_ledger(market, database) -> None:
    """After trading, the snapshot's cash is raised by 100 USD behind the arena's back: the
    fills and funding no longer explain it, so the account is not resumed."""
    trader = ScriptedStrategy("trader", enter_long_btc_once)
    engine, _, clock = build_engine(market, database, [trader])
    asyncio.run(engine.run_cycle(clock[0]))
    # Untouched, the books and the ledgers agree.
    build_engine(market, database, [ScriptedStrategy("trader")], restore=True)

    with database.begin() as connection:
        connection.execute(
            update(models.AccountSnapshot).values(cash_usd=models.AccountSnapshot.cash_usd + 100)
        )
    with pytest.raises(InvariantError, match="does not match its fills and funding"):
        build_engine(market, database, [ScriptedStrategy("trader")], restore=True)
