"""Read models over the records: what the listing commands and the reports show."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import Engine, Select, func, or_, select
from sqlalchemy.orm import Session

from app.charts.png import expand_png
from app.db import models
from app.db.llm_rows import decode_messages, decode_segments, decompress_text
from app.db.repository import position_from_row
from app.db.text_delta import expand_text
from app.domain import ChatMessage, ClosedTrade, Fill, FundingPayment, Position


@dataclass(frozen=True, slots=True)
class AgentRow:
    """An agent of a run and its latest recorded books."""

    agent_id: int
    name: str
    provider: str
    model: str
    starting_cash_usd: float
    equity_usd: float
    cash_usd: float
    fees_paid_usd: float
    funding_paid_usd: float
    realized_pnl_usd: float
    last_at: datetime | None


@dataclass(frozen=True, slots=True)
class CallCounts:
    """What became of an agent's answers and decisions."""

    parse_failures: int = 0
    failed_cycles: int = 0
    rejected_decisions: int = 0


@dataclass(frozen=True, slots=True)
class ChatEntry:
    """One recent model call: when, which model, its reasoning, its decisions and their fate."""

    agent: str
    at: datetime
    model: str | None
    outcome: str
    reasoning: str
    response_text: str
    error: str | None
    decisions: tuple[tuple[str, str, str, str | None], ...]  # coin, signal, outcome, reason
    call_id: int | None = None
    cycle_id: int | None = None
    # False for a failed request or a held call: `model` is then the model it was for.
    answered: bool = True


@dataclass(frozen=True, slots=True)
class DecisionDetail:
    """One decision of a cycle as the model gave it, what became of it and the fill it made."""

    coin: str
    signal: str
    outcome: str
    reason: str | None
    quantity: float | None
    leverage: int | None
    confidence: float | None
    profit_target: float | None
    stop_loss: float | None
    justification: str | None
    filled_quantity: float | None
    fill_price: float | None


def run_ids(engine: Engine) -> list[str]:
    """Return every run the database holds, the live one first."""
    with engine.connect() as connection:
        found = list(connection.scalars(select(models.Agent.run_id).distinct()))
    return sorted(found, key=lambda run: (run != models.LIVE_RUN_ID, run))


def agents(engine: Engine, run_id: str) -> list[AgentRow]:
    """Return the run's agents with their latest account snapshot."""
    latest = (
        select(models.AccountSnapshot.agent_id, func.max(models.AccountSnapshot.id).label("sid"))
        .group_by(models.AccountSnapshot.agent_id)
        .subquery()
    )
    query = (
        select(models.Agent, models.AccountSnapshot)
        .outerjoin(latest, latest.c.agent_id == models.Agent.id)
        .outerjoin(models.AccountSnapshot, models.AccountSnapshot.id == latest.c.sid)
        .where(models.Agent.run_id == run_id)
        .order_by(models.Agent.id)
    )
    rows = []
    with Session(engine) as session:
        for agent, snapshot in session.execute(query):
            start = agent.starting_cash_usd
            rows.append(
                AgentRow(
                    agent_id=agent.id,
                    name=agent.name,
                    provider=agent.provider,
                    model=agent.model,
                    starting_cash_usd=start,
                    equity_usd=start if snapshot is None else snapshot.equity_usd,
                    cash_usd=start if snapshot is None else snapshot.cash_usd,
                    fees_paid_usd=0.0 if snapshot is None else snapshot.fees_paid_usd,
                    funding_paid_usd=0.0 if snapshot is None else snapshot.funding_paid_usd,
                    realized_pnl_usd=0.0 if snapshot is None else snapshot.realized_pnl_usd,
                    last_at=None if snapshot is None else snapshot.at,
                )
            )
    return rows


def equity_series(engine: Engine, agent_id: int) -> pd.Series:
    """Return the agent's account value over time (one point per recorded snapshot)."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(models.AccountSnapshot.at, models.AccountSnapshot.equity_usd)
            .where(models.AccountSnapshot.agent_id == agent_id)
            .order_by(models.AccountSnapshot.at, models.AccountSnapshot.id)
        ).all()
    if not rows:
        # An agent registered before its first cycle: an empty series, still indexed by time.
        return pd.Series(
            [], index=pd.DatetimeIndex([], tz="UTC", name="at"), dtype="float64", name="equity_usd"
        )
    index = pd.DatetimeIndex([row[0] for row in rows], name="at")
    series = pd.Series([row[1] for row in rows], index=index, name="equity_usd", dtype="float64")
    # Several snapshots can share a time (a cycle right after a monitor event): keep the last.
    return series[~series.index.duplicated(keep="last")]


def closed_trades(engine: Engine, agent_id: int) -> list[ClosedTrade]:
    """Return the agent's closed positions as trades, oldest first."""
    with Session(engine) as session:
        rows = session.scalars(
            select(models.Position)
            .where(models.Position.agent_id == agent_id, models.Position.status == "closed")
            .order_by(models.Position.closed_at, models.Position.id)
        ).all()
    trades = []
    for row in rows:
        assert row.closed_at is not None and row.exit_price is not None
        trades.append(
            ClosedTrade(
                coin=row.coin,
                side=row.side,  # type: ignore[arg-type]
                quantity=row.quantity,
                leverage=row.leverage,
                entry_price=row.entry_price,
                exit_price=row.exit_price,
                opened_at=row.opened_at,
                closed_at=row.closed_at,
                entry_fee_usd=row.entry_fee_usd,
                exit_fee_usd=row.exit_fee_usd or 0.0,
                funding_usd=row.funding_usd,
                gross_pnl_usd=row.gross_pnl_usd or 0.0,
                net_pnl_usd=row.net_pnl_usd or 0.0,
                exit_reason=row.exit_reason,  # type: ignore[arg-type]
            )
        )
    return trades


def open_positions(engine: Engine, agent_id: int) -> list[Position]:
    """Return the agent's open positions."""
    with Session(engine) as session:
        rows = session.scalars(
            select(models.Position)
            .where(models.Position.agent_id == agent_id, models.Position.status == "open")
            .order_by(models.Position.opened_at)
        ).all()
    return [position_from_row(row) for row in rows]


def call_counts(engine: Engine, agent_id: int) -> CallCounts:
    """Return how many answers could not be read, cycles failed and decisions were refused."""
    with engine.connect() as connection:
        parse_failures = connection.execute(
            select(func.count(models.LlmCall.id)).where(
                models.LlmCall.agent_id == agent_id, models.LlmCall.outcome == "parse_error"
            )
        ).scalar_one()
        failed = connection.execute(
            select(func.count(models.Cycle.id)).where(
                models.Cycle.agent_id == agent_id, models.Cycle.status == "failed"
            )
        ).scalar_one()
        rejected = connection.execute(
            select(func.count(models.Decision.id))
            .join(models.Cycle, models.Cycle.id == models.Decision.cycle_id)
            .where(models.Cycle.agent_id == agent_id, models.Decision.outcome == "rejected")
        ).scalar_one()
    return CallCounts(
        parse_failures=int(parse_failures or 0),
        failed_cycles=int(failed or 0),
        rejected_decisions=int(rejected or 0),
    )


def recent_chat(
    engine: Engine,
    run_id: str,
    *,
    agent: str | None = None,
    limit: int = 5,
    coin: str | None = None,
    outcome: str | None = None,
) -> list[ChatEntry]:
    """Return the last `limit` calls per agent (or of one agent), newest first.

    Failed requests and held calls are entries too, with the model they were for and their
    error; only an answered call carries its cycle's decisions.

    `coin` keeps the calls that decided on that coin; `outcome` those whose call outcome
    (`ok`, `parse_error`...) or one of whose decisions' outcome (`executed`, `rejected`,
    `held`) is that.
    """
    entries: list[ChatEntry] = []
    with Session(engine) as session:
        agent_rows: Sequence[models.Agent] = session.scalars(
            select(models.Agent).where(models.Agent.run_id == run_id).order_by(models.Agent.id)
        ).all()
        for row in agent_rows:
            if agent is not None and row.name != agent:
                continue
            # Failed and held calls too (their `model` is NULL): a failure must not be hidden.
            query = select(models.LlmCall).where(models.LlmCall.agent_id == row.id)
            query = _chat_filters(query, coin=coin, outcome=outcome)
            calls = session.scalars(query.order_by(models.LlmCall.id.desc()).limit(limit)).all()
            for call in calls:
                decisions: tuple[tuple[str, str, str, str | None], ...] = ()
                answered = call.model is not None
                if call.cycle_id is not None and answered:
                    decisions = tuple(
                        (d.coin, d.signal, d.outcome, d.reason)
                        for d in session.scalars(
                            select(models.Decision)
                            .where(models.Decision.cycle_id == call.cycle_id)
                            .order_by(models.Decision.id)
                        )
                    )
                entries.append(
                    ChatEntry(
                        agent=row.name,
                        at=call.created_at,
                        # A failed request's row names the model it was for.
                        model=call.model if answered else call.model_requested,
                        outcome=call.outcome,
                        reasoning=decompress_text(call.reasoning_z),
                        response_text=call.response_text or "",
                        error=call.error,
                        decisions=decisions,
                        call_id=call.id,
                        cycle_id=call.cycle_id if answered else None,
                        answered=answered,
                    )
                )
    return entries


def _chat_filters(query: Select[Any], *, coin: str | None, outcome: str | None) -> Select[Any]:
    """Narrow a query of calls to those deciding on `coin` and having `outcome`."""
    if coin is not None:
        query = query.where(
            models.LlmCall.cycle_id.in_(
                select(models.Decision.cycle_id).where(models.Decision.coin == coin.upper())
            )
        )
    if outcome is not None:
        query = query.where(
            or_(
                models.LlmCall.outcome == outcome,
                models.LlmCall.cycle_id.in_(
                    select(models.Decision.cycle_id).where(models.Decision.outcome == outcome)
                ),
            )
        )
    return query


def decision_details(engine: Engine, cycle_ids: Sequence[int]) -> dict[int, list[DecisionDetail]]:
    """Return each cycle's decisions in full, with the price of the fill each one made."""
    details: dict[int, list[DecisionDetail]] = {}
    if not cycle_ids:
        return details
    with Session(engine) as session:
        fills: dict[tuple[int, str], float] = {}
        for cycle_id, fill_coin, price in session.execute(
            select(models.Fill.cycle_id, models.Fill.coin, models.Fill.price)
            .where(models.Fill.cycle_id.in_(cycle_ids))
            .order_by(models.Fill.id)
        ):
            if cycle_id is not None:
                fills.setdefault((cycle_id, fill_coin), price)
        for d in session.scalars(
            select(models.Decision)
            .where(models.Decision.cycle_id.in_(cycle_ids))
            .order_by(models.Decision.id)
        ):
            details.setdefault(d.cycle_id, []).append(
                DecisionDetail(
                    coin=d.coin,
                    signal=d.signal,
                    outcome=d.outcome,
                    reason=d.reason,
                    quantity=d.quantity,
                    leverage=d.leverage,
                    confidence=d.confidence,
                    profit_target=d.profit_target,
                    stop_loss=d.stop_loss,
                    justification=d.justification,
                    filled_quantity=d.filled_quantity,
                    fill_price=fills.get((d.cycle_id, d.coin)) if d.outcome == "executed" else None,
                )
            )
    return details


def summarize_reasoning(text: str, limit: int = 240) -> str:
    """Return the first sentences of a model's reasoning, at most `limit` characters."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[:limit]
    stop = max(cut.rfind(". "), cut.rfind("。"))
    return (cut[: stop + 1] if stop > limit // 3 else cut.rstrip()) + " …"


def cycle_equity_values(engine: Engine, agent_id: int) -> list[float]:
    """Return the account value recorded at the end of each of the agent's cycles, in order."""
    with engine.connect() as connection:
        return list(
            connection.scalars(
                select(models.AccountSnapshot.equity_usd)
                .where(
                    models.AccountSnapshot.agent_id == agent_id,
                    models.AccountSnapshot.cycle_id.is_not(None),
                )
                .order_by(models.AccountSnapshot.id)
            )
        )


def call_messages(engine: Engine, call_id: int) -> list[ChatMessage]:
    """Return exactly the prompt a recorded model call was sent."""
    with engine.connect() as connection:
        blob = connection.execute(
            select(models.LlmCall.messages_z).where(models.LlmCall.id == call_id)
        ).scalar_one_or_none()
        loaded: dict[str, tuple[str, str]] = {}

        def load_stored(key: str) -> tuple[str, str]:
            # A part's encoding and payload; a delta's keyframe is one more row.
            if key not in loaded:
                encoding, text_z = connection.execute(
                    select(models.PromptPart.encoding, models.PromptPart.text_z).where(
                        models.PromptPart.hash == key
                    )
                ).one()
                loaded[key] = (encoding, expand_text(text_z, load_payload))
            return loaded[key]

        def load_payload(key: str) -> str:
            return load_stored(key)[1]

        def load_part(key: str) -> str:
            encoding, payload = load_stored(key)
            if encoding == "segments":
                return decode_segments(json.loads(payload), load_part)
            return payload

        return decode_messages(blob, load_part, load_payload)


@dataclass(frozen=True, slots=True)
class SentImage:
    """A chart image a recorded call sent: its place in the prompt and the stored PNG."""

    position: int
    sha256: str
    kind: str
    caption: str
    width_px: int
    height_px: int
    png: bytes


def call_images(engine: Engine, call_ids: Sequence[int]) -> dict[int, list[SentImage]]:
    """Return the chart images each of `call_ids` sent (a vision agent's calls), in order."""
    if not call_ids:
        return {}
    link, image = models.LlmCallImage, models.ChartImage
    statement = (
        select(
            link.llm_call_id,
            link.position,
            image.sha256,
            image.kind,
            image.caption,
            image.width_px,
            image.height_px,
            image.encoding,
            image.data,
        )
        .join(image, image.sha256 == link.image_sha256)
        .where(link.llm_call_id.in_(list(call_ids)))
        .order_by(link.llm_call_id, link.position)
    )
    found: dict[int, list[SentImage]] = {}
    with engine.connect() as connection:
        for row in connection.execute(statement):
            png = expand_png(row.data) if row.encoding == "compact" else row.data
            found.setdefault(row[0], []).append(SentImage(*row[1:7], png=png))
    return found


def ledger(engine: Engine, agent_id: int) -> tuple[list[Fill], list[FundingPayment]]:
    """Return every fill and funding payment of an agent, oldest first (the books' ledgers)."""
    with Session(engine) as session:
        fills = [
            Fill(
                coin=row.coin,
                side=row.side,  # type: ignore[arg-type]
                quantity=row.quantity,
                price=row.price,
                reference_price=row.reference_price,
                fee_usd=row.fee_usd,
                reason=row.reason,  # type: ignore[arg-type]
                filled_at=row.filled_at,
                realized_pnl_usd=row.realized_pnl_usd,
            )
            for row in session.scalars(
                select(models.Fill).where(models.Fill.agent_id == agent_id).order_by(models.Fill.id)
            )
        ]
        payments = [
            FundingPayment(
                coin=row.coin,
                rate=row.rate,
                mark_price=row.mark_price,
                quantity=row.quantity,
                amount_usd=row.amount_usd,
                settled_at=row.settled_at,
            )
            for row in session.scalars(
                select(models.FundingPayment)
                .where(models.FundingPayment.agent_id == agent_id)
                .order_by(models.FundingPayment.id)
            )
        ]
    return fills, payments


def stored_answers(engine: Engine, provider: str, model: str) -> int:
    """Return how many answers of `provider`'s `model` the answer cache holds."""
    with engine.connect() as connection:
        found = connection.scalar(
            select(func.count())
            .select_from(models.LlmCache)
            .where(models.LlmCache.provider == provider, models.LlmCache.model == model)
        )
    return int(found or 0)
