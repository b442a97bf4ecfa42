"""The store writes agent-cycles whole, once, and gives accounts back exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select

from app.db import models
from app.db.repository import AgentIdentity, SqlCycleStore
from app.decisions import TradeDecision
from app.domain import ChatMessage, ChatResult, ExitPlan, Fill, OrderIntent, PaperCosts
from app.ports import AccountEventsRecord, AgentCycleRecord, DecisionRecord, StrategyAnswer
from app.trading.paper import Execution, PaperAccount

AT = datetime(2025, 10, 18, 0, 0, tzinfo=UTC)
COSTS = PaperCosts(fee_rate=0.0005, slippage_rate=0.001, maintenance_margin_rate=0.005)


def store_for(engine: Engine) -> SqlCycleStore:
    store = SqlCycleStore(engine, run_id="test")
    store.register_agents(
        [AgentIdentity(name="a", provider="fake", model="m", starting_cash_usd=1_000.0)], at=AT
    )
    return store


def record(at: datetime, account: PaperAccount, fills: tuple[Fill, ...] = ()) -> AgentCycleRecord:
    return AgentCycleRecord(
        agent="a",
        scheduled_at=at,
        started_at=at,
        finished_at=at,
        invocation=1,
        status="ok",
        books=account.state(),
        view=account.view({"BTC": 100.0}, at),
        messages=(ChatMessage("user", "prompt at " + at.isoformat()),),
        answer=StrategyAnswer(
            decisions=(TradeDecision(coin="BTC", signal="hold"),),
            chat=ChatResult(text="{}", provider="fake", model="m"),
        ),
        decisions=(DecisionRecord(TradeDecision(coin="BTC", signal="hold"), "held"),),
        fills=fills,
    )


def count(engine: Engine, table: type[models.Base]) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def test_a_recorded_agent_cycle_is_never_written_twice(engine: Engine) -> None:
    store = store_for(engine)
    account = PaperAccount(1_000.0, costs=COSTS)
    assert store.record_cycles([record(AT, account)]) == 1
    # A batch holding the same agent-cycle again and a new one: only the new one lands.
    later = AT + timedelta(minutes=3)
    assert store.record_cycles([record(AT, account), record(later, account)]) == 1
    assert count(engine, models.Cycle) == 2
    assert count(engine, models.Decision) == 2
    assert count(engine, models.AccountSnapshot) == 2
    assert count(engine, models.LlmCall) == 2


def test_restore_gives_back_the_books_and_open_positions_exactly(engine: Engine) -> None:
    """Open 0.5 BTC long at 100 x 1.001 = 100.1 with 5x leverage: margin 10.01, fee 0.025025."""
    store = store_for(engine)
    account = PaperAccount(1_000.0, costs=COSTS)
    intent = OrderIntent(
        coin="BTC",
        action="open",
        side="long",
        quantity=0.5,
        leverage=5,
        exit_plan=ExitPlan(profit_target=120.0, stop_loss=90.0, invalidation_condition="x"),
        justification="why not",
    )
    execution = account.execute(intent, reference_price=100.0, at=AT)
    assert isinstance(execution, Execution)
    store.record_cycles([record(AT, account, fills=(execution.fill,))])

    restored = SqlCycleStore(engine, run_id="test")
    restored.register_agents(
        [AgentIdentity(name="a", provider="fake", model="m", starting_cash_usd=1_000.0)], at=AT
    )
    books = restored.restore("a").books
    assert books == account.state()
    assert books.positions["BTC"].margin_usd == pytest.approx(10.01)
    assert books.cash_usd == pytest.approx(1_000.0 - 10.01 - 0.025025)


def _entry_then_exit() -> tuple[PaperAccount, PaperAccount, Fill, Execution]:
    """Open 0.5 BTC long at 100 (5x), then close it at 110; returns the books after each step."""
    account = PaperAccount(1_000.0, costs=COSTS)
    plan = ExitPlan(profit_target=120.0, stop_loss=90.0, invalidation_condition="x")
    opened = account.execute(
        OrderIntent(
            coin="BTC", action="open", side="long", quantity=0.5, leverage=5, exit_plan=plan
        ),
        reference_price=100.0,
        at=AT + timedelta(minutes=3),
    )
    assert isinstance(opened, Execution)
    after_entry = PaperAccount.restore(account.state(), costs=COSTS)
    closed = account.execute(
        OrderIntent(coin="BTC", action="close", side="long", quantity=0.5, leverage=5),
        reference_price=110.0,
        at=AT + timedelta(minutes=4),
    )
    assert isinstance(closed, Execution) and closed.closed_trade is not None
    return after_entry, account, opened.fill, closed


def _events(account: PaperAccount, closed: Execution) -> AccountEventsRecord:
    at = AT + timedelta(minutes=4)
    assert closed.closed_trade is not None
    return AccountEventsRecord(
        agent="a",
        at=at,
        books=account.state(),
        view=account.view({"BTC": 110.0}, at),
        fills=(closed.fill,),
        closed_trades=(closed.closed_trade,),
    )


@pytest.mark.parametrize("with_duplicate", [False, True], ids=["one-pass", "one-by-one"])
def test_a_batch_writes_cycles_and_monitor_events_in_their_order(
    engine: Engine, with_duplicate: bool
) -> None:
    """A backtest's batch: the cycle that opens a position, the monitor's exit that closes it,
    then a later cycle. The exit must find the position its entry opened in the same batch;
    with an already-recorded cycle in front, the records go one by one and still keep order."""
    store = store_for(engine)
    assert store.record_cycles([record(AT, PaperAccount(1_000.0, costs=COSTS))]) == 1
    after_entry, after_exit, entry, closed = _entry_then_exit()
    batch: list[AgentCycleRecord | AccountEventsRecord] = [
        record(AT + timedelta(minutes=3), after_entry, fills=(entry,)),
        _events(after_exit, closed),
        record(AT + timedelta(minutes=6), after_exit),
    ]
    if with_duplicate:
        batch.insert(0, record(AT, PaperAccount(1_000.0, costs=COSTS)))

    assert store.record_cycles(batch) == 2

    with engine.connect() as connection:
        positions = connection.execute(select(models.Position.id, models.Position.status)).all()
        fills = connection.execute(
            select(models.Fill.reason, models.Fill.position_id, models.Fill.cycle_id).order_by(
                models.Fill.id
            )
        ).all()
    assert len(positions) == 1 and positions[0].status == "closed"
    assert [(f.reason, f.position_id) for f in fills] == [
        ("entry", positions[0].id),
        (closed.fill.reason, positions[0].id),
    ]
    assert fills[0].cycle_id is not None and fills[1].cycle_id is None
    assert count(engine, models.Cycle) == 3
    assert count(engine, models.AccountSnapshot) == 4
    assert store.restore("a").books == after_exit.state()
