"""Tables: typed SQLAlchemy 2.0 models. Times are UTC, money in the quote currency.

Schema changes go through a new Alembic revision in `migrations/versions/`; a test checks that the
models and the migrations agree.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db.base import Base, UTCDateTime

LIVE_RUN_ID = "live"


class Agent(Base):
    """A competitor in one run: the live arena (`run_id` = "live") or one backtest."""

    __tablename__ = "agent"
    __table_args__ = (UniqueConstraint("run_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64), default=LIVE_RUN_ID, index=True)
    name: Mapped[str] = mapped_column(String(64))
    provider: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(200))
    fallback_models: Mapped[list[str]] = mapped_column(JSON, default=list)
    starting_cash_usd: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    cycles: Mapped[list[Cycle]] = relationship(back_populates="agent", passive_deletes=True)


class Cycle(Base):
    """One agent's part of one scheduled cycle; (agent, scheduled time) is its idempotency key."""

    __tablename__ = "cycle"
    __table_args__ = (UniqueConstraint("agent_id", "scheduled_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agent.id", ondelete="CASCADE"))
    scheduled_at: Mapped[datetime] = mapped_column(UTCDateTime)
    invocation: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    prompt_version: Mapped[str | None] = mapped_column(String(32), nullable=True)

    agent: Mapped[Agent] = relationship(back_populates="cycles")


class LlmCall(Base):
    """One request to a model (or one cache hit): what was asked, answered, and what it cost.

    Prompts and reasoning are stored zlib-compressed JSON/text: they are most of the bytes.
    """

    __tablename__ = "llm_call"
    __table_args__ = (Index("ix_llm_call_agent_id_created_at", "agent_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    cycle_id: Mapped[int | None] = mapped_column(
        ForeignKey("cycle.id", ondelete="CASCADE"), nullable=True, index=True
    )
    agent_id: Mapped[int | None] = mapped_column(
        ForeignKey("agent.id", ondelete="CASCADE"), nullable=True
    )
    provider: Mapped[str] = mapped_column(String(32))
    model_requested: Mapped[str] = mapped_column(String(200))
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    prompt_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    prompt_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    messages_z: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    response_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    reasoning_z: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    finish_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(Integer, default=0)
    total_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    rate_limit_headers: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    outcome: Mapped[str] = mapped_column(String(24))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cache_hit: Mapped[bool] = mapped_column(Boolean, default=False)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PromptPart(Base):
    """A long text many prompts share (a system prompt, one cycle's market section), kept once.

    `llm_call.messages_z` refers to these by hash, so six agents asked in one cycle store the
    market section once instead of six times.
    """

    __tablename__ = "prompt_part"

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    # "text": `text_z` is the compressed text; "segments": compressed JSON segments over
    # shorter parts (a market section over each coin's context block). `text_z` is zlib, or a
    # delta naming the part it was compressed against (`app.db.text_delta`).
    encoding: Mapped[str] = mapped_column(String(8), default="text")
    text_z: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ChartImage(Base):
    """A chart image a vision agent was shown, kept once by the sha256 of its PNG bytes.

    `spec_key` names what it draws (known before drawing), so a replayed run links the image
    an earlier run stored without drawing it again.
    """

    __tablename__ = "chart_image"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    spec_key: Mapped[str] = mapped_column(String(64), unique=True)
    # "png": `data` is the PNG as sent; "compact": the chart PNG's rows in LZMA (a quarter
    # smaller; `app.charts.png.expand_png` gives back the identical bytes).
    encoding: Mapped[str] = mapped_column(String(8), default="png")
    data: Mapped[bytes] = mapped_column(LargeBinary)
    width_px: Mapped[int] = mapped_column(Integer)
    height_px: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    caption: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LlmCallImage(Base):
    """Which images one `llm_call` row sent, in their order in the prompt."""

    __tablename__ = "llm_call_image"

    llm_call_id: Mapped[int] = mapped_column(
        ForeignKey("llm_call.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_sha256: Mapped[str] = mapped_column(ForeignKey("chart_image.sha256"), index=True)


class Decision(Base):
    """One per-coin decision of one agent-cycle, with what became of it."""

    __tablename__ = "decision"

    id: Mapped[int] = mapped_column(primary_key=True)
    cycle_id: Mapped[int] = mapped_column(ForeignKey("cycle.id", ondelete="CASCADE"), index=True)
    coin: Mapped[str] = mapped_column(String(16))
    signal: Mapped[str] = mapped_column(String(16))
    quantity: Mapped[float | None] = mapped_column(Float, nullable=True)
    leverage: Mapped[int | None] = mapped_column(Integer, nullable=True)
    profit_target: Mapped[float | None] = mapped_column(Float, nullable=True)
    stop_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    invalidation_condition: Mapped[str | None] = mapped_column(Text, nullable=True)
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    risk_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    justification: Mapped[str | None] = mapped_column(Text, nullable=True)
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    filled_quantity: Mapped[float | None] = mapped_column(Float, nullable=True)


class Position(Base):
    """A position from entry to exit; open ones are live state, closed ones are trades."""

    __tablename__ = "position"
    __table_args__ = (Index("ix_position_agent_id_status", "agent_id", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agent.id", ondelete="CASCADE"))
    coin: Mapped[str] = mapped_column(String(16))
    side: Mapped[str] = mapped_column(String(8))
    quantity: Mapped[float] = mapped_column(Float)
    entry_price: Mapped[float] = mapped_column(Float)
    leverage: Mapped[int] = mapped_column(Integer)
    margin_usd: Mapped[float] = mapped_column(Float)
    liquidation_price: Mapped[float] = mapped_column(Float)
    profit_target: Mapped[float | None] = mapped_column(Float, nullable=True)
    stop_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    invalidation_condition: Mapped[str | None] = mapped_column(Text, nullable=True)
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    risk_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    justification: Mapped[str | None] = mapped_column(Text, nullable=True)
    entry_fee_usd: Mapped[float] = mapped_column(Float, default=0.0)
    funding_usd: Mapped[float] = mapped_column(Float, default=0.0)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(8), default="open")
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    exit_price: Mapped[float | None] = mapped_column(Float, nullable=True)
    exit_fee_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    exit_reason: Mapped[str | None] = mapped_column(String(16), nullable=True)
    gross_pnl_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    net_pnl_usd: Mapped[float | None] = mapped_column(Float, nullable=True)


class Fill(Base):
    """One simulated execution: entries and closes from cycles, exits from the monitor."""

    __tablename__ = "fill"
    __table_args__ = (Index("ix_fill_agent_id_filled_at", "agent_id", "filled_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agent.id", ondelete="CASCADE"))
    cycle_id: Mapped[int | None] = mapped_column(
        ForeignKey("cycle.id", ondelete="SET NULL"), nullable=True
    )
    position_id: Mapped[int | None] = mapped_column(
        ForeignKey("position.id", ondelete="SET NULL"), nullable=True
    )
    coin: Mapped[str] = mapped_column(String(16))
    side: Mapped[str] = mapped_column(String(8))
    quantity: Mapped[float] = mapped_column(Float)
    price: Mapped[float] = mapped_column(Float)
    reference_price: Mapped[float] = mapped_column(Float)
    fee_usd: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(String(16))
    realized_pnl_usd: Mapped[float] = mapped_column(Float, default=0.0)
    filled_at: Mapped[datetime] = mapped_column(UTCDateTime)


class FundingPayment(Base):
    """Funding settled on an open position: a ledger row per settlement (> 0 means paid)."""

    __tablename__ = "funding_payment"
    # One payment per position's coin and settlement: a second one would be a double charge.
    __table_args__ = (UniqueConstraint("agent_id", "settled_at", "coin"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agent.id", ondelete="CASCADE"))
    position_id: Mapped[int | None] = mapped_column(
        ForeignKey("position.id", ondelete="SET NULL"), nullable=True
    )
    coin: Mapped[str] = mapped_column(String(16))
    rate: Mapped[float] = mapped_column(Float)
    mark_price: Mapped[float] = mapped_column(Float)
    quantity: Mapped[float] = mapped_column(Float)
    amount_usd: Mapped[float] = mapped_column(Float)
    settled_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AccountSnapshot(Base):
    """The account's books at one moment: enough to rebuild it after a restart."""

    __tablename__ = "account_snapshot"
    __table_args__ = (Index("ix_account_snapshot_agent_id_at", "agent_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agent.id", ondelete="CASCADE"))
    cycle_id: Mapped[int | None] = mapped_column(
        ForeignKey("cycle.id", ondelete="SET NULL"), nullable=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    cash_usd: Mapped[float] = mapped_column(Float)
    margin_usd: Mapped[float] = mapped_column(Float)
    unrealized_pnl_usd: Mapped[float] = mapped_column(Float)
    equity_usd: Mapped[float] = mapped_column(Float)
    realized_pnl_usd: Mapped[float] = mapped_column(Float)
    fees_paid_usd: Mapped[float] = mapped_column(Float)
    funding_paid_usd: Mapped[float] = mapped_column(Float)
    open_positions: Mapped[int] = mapped_column(Integer, default=0)


class QuotaUsage(Base):
    """Calls and last-seen rate-limit headers per provider, model and UTC day."""

    __tablename__ = "quota_usage"
    __table_args__ = (UniqueConstraint("provider", "model", "day"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(200))
    day: Mapped[date] = mapped_column(Date)
    calls: Mapped[int] = mapped_column(Integer, default=0)
    successes: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    rate_limited: Mapped[int] = mapped_column(Integer, default=0)
    requests_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    requests_remaining: Mapped[int | None] = mapped_column(Integer, nullable=True)
    model_requests_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    model_requests_remaining: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    exhausted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LlmCache(Base):
    """Stored answers keyed by a hash of (provider, model, messages, parameters)."""

    __tablename__ = "llm_cache"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(200))
    model_answered: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # "" for rows written with `response_z` (the answer compressed) and for failure markers.
    response_text: Mapped[str] = mapped_column(Text)
    reasoning_z: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    finish_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    hits: Mapped[int] = mapped_column(Integer, default=0)
    response_z: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Candle(Base):
    """Cached exchange candles; integer-millisecond open times keep it compact."""

    __tablename__ = "candle"

    # The source: the exchange id, plus `@sandbox` or `@host` for a testnet or a mirror.
    exchange: Mapped[str] = mapped_column(String(64), primary_key=True)
    symbol: Mapped[str] = mapped_column(String(64), primary_key=True)
    timeframe: Mapped[str] = mapped_column(String(8), primary_key=True)
    open_time_ms: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    open: Mapped[float] = mapped_column(Float)
    high: Mapped[float] = mapped_column(Float)
    low: Mapped[float] = mapped_column(Float)
    close: Mapped[float] = mapped_column(Float)
    volume: Mapped[float] = mapped_column(Float)


class EvaluationPlan(Base):
    """An `arena evaluate` plan: what it runs (a JSON spec) under the hash of that spec.

    Running the same command again finds the plan by its key and skips its finished windows.
    """

    __tablename__ = "evaluation_plan"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    window_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class EvaluationWindow(Base):
    """One finished window of a plan and its result (`WindowResult.to_json()`)."""

    __tablename__ = "evaluation_window"
    __table_args__ = (UniqueConstraint("plan_id", "window_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    plan_id: Mapped[int] = mapped_column(
        ForeignKey("evaluation_plan.id", ondelete="CASCADE"), index=True
    )
    window_index: Mapped[int] = mapped_column(Integer)
    window_key: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    result: Mapped[dict[str, Any]] = mapped_column(JSON)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime)
