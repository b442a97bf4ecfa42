"""A test hook that commits one more cycle for every agent of a run, through the real store."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, select

from app.db import models
from app.db.repository import AgentIdentity, SqlCycleStore
from app.domain import AccountView
from app.ports import AgentCycleRecord


def commit_cycle(engine: Engine, run_id: str, at: datetime) -> int:
    """Record an agent-cycle at `at` for each agent (holding, books unchanged); return how many."""
    with engine.connect() as connection:
        agents = connection.execute(
            select(
                models.Agent.name,
                models.Agent.provider,
                models.Agent.model,
                models.Agent.starting_cash_usd,
            ).where(models.Agent.run_id == run_id)
        ).all()
    store = SqlCycleStore(engine, run_id=run_id)
    store.register_agents(
        [AgentIdentity(name, provider, model, (), cash) for name, provider, model, cash in agents],
        at=at,
    )
    records = []
    for name, *_ in agents:
        restored = store.restore(name)
        books = restored.books
        view = AccountView(
            at=at,
            starting_cash_usd=books.starting_cash_usd,
            cash_usd=books.cash_usd,
            margin_usd=sum(p.margin_usd for p in books.positions.values()),
            unrealized_pnl_usd=0.0,
            realized_pnl_usd=books.realized_pnl_usd,
            fees_paid_usd=books.fees_paid_usd,
            funding_paid_usd=books.funding_paid_usd,
            positions=books.positions,
        )
        records.append(
            AgentCycleRecord(
                agent=name,
                scheduled_at=at,
                started_at=at,
                finished_at=at,
                invocation=restored.invocations + 1,
                status="ok",
                books=books,
                view=view,
            )
        )
    return store.record_cycles(records)
