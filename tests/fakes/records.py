"""Model calls recorded the way the engine records them: one agent-cycle through the repository."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Engine

from app.db.repository import AgentIdentity, SqlCycleStore
from app.domain import AccountState, AccountView, CallAttempt, ChatMessage, ChatResult
from app.ports import AgentCycleRecord, StrategyAnswer

CASH_USD = 10_000.0


def record_call(
    engine: Engine,
    agent: str,
    *,
    messages: Sequence[ChatMessage],
    answer: ChatResult | None,
    at: datetime,
    attempts: Sequence[CallAttempt] = (),
    error: str | None = None,
    run_id: str = "live",
) -> None:
    """Record one agent-cycle holding this call, as `SqlCycleStore.record_cycle` writes it."""
    store = SqlCycleStore(engine, run_id=run_id)
    store.register_agents(
        [AgentIdentity(agent, "modelscope", "Qwen/A", starting_cash_usd=CASH_USD)], at=at
    )
    view = AccountView(
        at=at,
        starting_cash_usd=CASH_USD,
        cash_usd=CASH_USD,
        margin_usd=0.0,
        unrealized_pnl_usd=0.0,
        realized_pnl_usd=0.0,
        fees_paid_usd=0.0,
        funding_paid_usd=0.0,
        positions={},
    )
    spent = tuple(attempts) or (answer.attempts if answer is not None else ())
    record = AgentCycleRecord(
        agent=agent,
        scheduled_at=at,
        started_at=at,
        finished_at=at,
        invocation=1,
        status="ok" if answer is not None else "failed",
        books=AccountState(starting_cash_usd=CASH_USD, cash_usd=CASH_USD),
        view=view,
        error=error,
        prompt_version="v1",
        messages=tuple(messages),
        answer=StrategyAnswer(decisions=(), chat=answer, attempts=spent),
    )
    assert store.record_cycle(record), f"agent {agent}'s cycle at {at} was already recorded"
