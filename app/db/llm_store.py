"""SQL of the LLM side: usage from `llm_call`, and the `quota_usage` and `llm_cache` rows.

Every function takes a `Session` and never commits: the caller owns the transaction (a short one
of its own for quota and cache; `llm_call` rows are written by the repository with their cycle).

An `llm_cache` row is an answer, or a failure marker: a call that got no answer (timeout, 5xx,
cut stream, every model skipped...) so a replay fails the same way. A marker has
`finish_reason` `error:<kind>` (no provider sends a finish reason of that shape), an empty
`response_text`, no `response_z`, no `model_answered`, and `usage` `{"error": "<the error
message>"}`. An answer is kept zlib-compressed in `response_z` (`response_text` empty), cut to
`MAX_STORED_ANSWER_CHARS` like its `llm_call` row.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final, NamedTuple

from sqlalchemy import Row, Table, bindparam, case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Insert

from app.db import models
from app.db.llm_rows import capped_text, compress_text, decompress_text
from app.domain import (
    HELD_NOT_SERVED,
    HELD_QUOTA,
    INTERRUPTED,
    NOT_SENT_OUTCOMES,
    PENDING,
    ChatResult,
    ExhaustedModel,
    QuotaDelta,
    RecordedFailure,
    TokenUsage,
    quota_day,
)

RATE_LIMIT_COLUMNS: Final[Mapping[str, str]] = {
    "modelscope-ratelimit-requests-limit": "requests_limit",
    "modelscope-ratelimit-requests-remaining": "requests_remaining",
    "modelscope-ratelimit-model-requests-limit": "model_requests_limit",
    "modelscope-ratelimit-model-requests-remaining": "model_requests_remaining",
}


def rate_limit_values(headers: Mapping[str, str]) -> dict[str, int | None]:
    """Return the four ModelScope rate-limit headers as `quota_usage` column values."""
    values: dict[str, int | None] = {}
    for header, column in RATE_LIMIT_COLUMNS.items():
        raw = headers.get(header)
        try:
            values[column] = int(raw) if raw is not None else None
        except ValueError:
            values[column] = None
    return values


# -- llm_call ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentLlmUsage:
    """Tokens, latency and calls of one agent's `llm_call` rows."""

    agent_id: int
    calls: int
    requests: int
    cache_hits: int
    failures: int
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    total_tokens: int
    latency_ms: int
    held_quota: int = 0
    held_not_served: int = 0

    @property
    def mean_latency_ms(self) -> float:
        """Return the mean latency per request (0 without requests)."""
        return self.latency_ms / self.requests if self.requests else 0.0


def usage_by_agent(
    session: Session,
    *,
    agent_ids: Iterable[int] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[int, AgentLlmUsage]:
    """Return tokens, latency and call counts summed per agent over `[since, until)`.

    `calls` counts answers and failed calls (rows), `requests` the requests sent to a provider
    (cache hits, held calls and calls that reached no model excluded), `failures` the rows whose
    outcome is not ok/cache_hit/parse_error, `held_quota` and `held_not_served` the calls held
    with no request sent because every model of the chain was skipped.
    """
    call = models.LlmCall
    ok_outcomes = ("ok", "cache_hit", "parse_error")
    sent = call.cache_hit.is_(False) & call.outcome.not_in(sorted(NOT_SENT_OUTCOMES))
    query = (
        select(
            call.agent_id,
            func.count(call.id),
            func.sum(case((sent, 1), else_=0)),
            func.sum(case((call.cache_hit.is_(True), 1), else_=0)),
            func.sum(case((call.outcome.not_in(ok_outcomes), 1), else_=0)),
            func.sum(call.prompt_tokens),
            func.sum(call.completion_tokens),
            func.sum(call.reasoning_tokens),
            func.sum(call.total_tokens),
            func.sum(case((sent, call.latency_ms), else_=0)),
            func.sum(case((call.outcome == HELD_QUOTA, 1), else_=0)),
            func.sum(case((call.outcome == HELD_NOT_SERVED, 1), else_=0)),
        )
        .where(call.agent_id.is_not(None))
        .group_by(call.agent_id)
    )
    if agent_ids is not None:
        query = query.where(call.agent_id.in_(list(agent_ids)))
    if since is not None:
        query = query.where(call.created_at >= since)
    if until is not None:
        query = query.where(call.created_at < until)
    result: dict[int, AgentLlmUsage] = {}
    for row in session.execute(query):
        agent_id = int(row[0])
        numbers = [int(value or 0) for value in row[1:]]
        result[agent_id] = AgentLlmUsage(agent_id, *numbers)
    return result


# -- requests recorded before they are sent ---------------------------------------------------

_IN_FLIGHT_PREFIX: Final = "in flight in process "


def begin_request(
    session: Session,
    *,
    provider: str,
    model: str,
    agent_id: int | None,
    at: datetime,
    pid: int,
) -> int:
    """Count one request in `quota_usage` and write its `pending` call row; return the row id.

    Called before the request is sent: the row is replaced by the finished one when the
    agent-cycle is recorded, or marked `interrupted` by `interrupt_pending_calls` when the
    process (`pid`) died first. The quota count stays: the request was sent (or about to be).
    """
    add_quota_usage(
        session,
        QuotaDelta(provider=provider, model=model, day=quota_day(at), at=at, calls=1),
    )
    row = models.LlmCall(
        agent_id=agent_id,
        provider=provider,
        model_requested=model,
        outcome=PENDING,
        error=f"{_IN_FLIGHT_PREFIX}{pid}",
        created_at=at,
    )
    session.add(row)
    session.flush()
    return int(row.id)


def interrupt_pending_calls(session: Session, *, alive: Callable[[int], bool]) -> int:
    """Mark the `pending` call rows of processes no longer alive as `interrupted`; count them."""
    rows = session.scalars(select(models.LlmCall).where(models.LlmCall.outcome == PENDING))
    marked = 0
    for row in rows:
        pid_text = (row.error or "").removeprefix(_IN_FLIGHT_PREFIX)
        if pid_text.isdigit() and alive(int(pid_text)):
            continue
        row.outcome = INTERRUPTED
        row.error = (
            f"the process ({pid_text or '?'}) stopped while this request was in flight "
            "(killed, or stopped before the answer came): counted once in quota_usage"
        )
        marked += 1
    return marked


# -- quota_usage -------------------------------------------------------------------------------


def add_quota_usage(session: Session, delta: QuotaDelta) -> None:
    """Add `delta` to its (provider, model, day) row, keeping the last-seen limits."""
    limits = rate_limit_values(delta.headers or {})
    values: dict[str, Any] = {
        "provider": delta.provider,
        "model": delta.model,
        "day": delta.day,
        "calls": delta.calls,
        "successes": delta.successes,
        "failures": delta.failures,
        "rate_limited": delta.rate_limited,
        "last_status": delta.last_status,
        "last_error": delta.last_error,
        "exhausted_at": delta.exhausted_at,
        "updated_at": delta.at,
        **limits,
    }
    dialect = session.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        session.execute(_quota_upsert(dialect), values)
        return
    _add_quota_usage_portably(session, values, limits)


@functools.cache
def _quota_upsert(dialect: str) -> Insert:
    """Return the `quota_usage` upsert of `dialect`, its values bound at execution.

    Built once, on the table rather than the ORM class: building it with the values in (an ORM
    insert, its `excluded` columns, a cache key over every value) took about 0.65 ms of the
    0.77 ms a write cost, and every gateway request and arena call makes one or two.
    """
    insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
    table = models.QuotaUsage.__table__
    assert isinstance(table, Table)
    statement = insert(table)
    excluded = statement.excluded
    current = table.c
    changes: dict[str, Any] = {
        name: current[name] + excluded[name]
        for name in ("calls", "successes", "failures", "rate_limited")
    }
    # Headers, status and exhaustion keep their last known value when this delta has none.
    for name in (*RATE_LIMIT_COLUMNS.values(), "last_status", "last_error", "exhausted_at"):
        changes[name] = func.coalesce(excluded[name], current[name])
    changes["updated_at"] = excluded["updated_at"]
    upsert: Insert = statement.on_conflict_do_update(
        index_elements=["provider", "model", "day"], set_=changes
    )
    return upsert


def _add_quota_usage_portably(
    session: Session, values: dict[str, Any], limits: Mapping[str, int | None]
) -> None:
    row = session.scalars(
        select(models.QuotaUsage).where(
            models.QuotaUsage.provider == values["provider"],
            models.QuotaUsage.model == values["model"],
            models.QuotaUsage.day == values["day"],
        )
    ).first()
    if row is None:
        session.add(models.QuotaUsage(**values))
        return
    for name in ("calls", "successes", "failures", "rate_limited"):
        setattr(row, name, getattr(row, name) + values[name])
    for name in (*limits, "last_status", "last_error", "exhausted_at"):
        if values[name] is not None:
            setattr(row, name, values[name])
    row.updated_at = values["updated_at"]


def exhausted_models(session: Session, day: date) -> list[ExhaustedModel]:
    """Return the models marked out of quota (or not served) on `day`."""
    return [
        ExhaustedModel(
            provider=row.provider,
            model=row.model,
            not_served="not_served" in (row.last_status or ""),
            message=row.last_error or "quota exhausted earlier today",
        )
        for row in quota_rows(session, day)
        if row.exhausted_at is not None
    ]


def quota_rows(session: Session, day: date) -> list[models.QuotaUsage]:
    """Return the `quota_usage` rows of `day`."""
    return list(
        session.scalars(
            select(models.QuotaUsage)
            .where(models.QuotaUsage.day == day)
            .order_by(models.QuotaUsage.provider, models.QuotaUsage.model)
        )
    )


def latest_quota_rows(session: Session) -> dict[tuple[str, str], models.QuotaUsage]:
    """Return the most recent `quota_usage` row of every (provider, model)."""
    latest = (
        select(
            models.QuotaUsage.provider,
            models.QuotaUsage.model,
            func.max(models.QuotaUsage.day).label("day"),
        )
        .group_by(models.QuotaUsage.provider, models.QuotaUsage.model)
        .subquery()
    )
    rows = session.scalars(
        select(models.QuotaUsage).join(
            latest,
            (models.QuotaUsage.provider == latest.c.provider)
            & (models.QuotaUsage.model == latest.c.model)
            & (models.QuotaUsage.day == latest.c.day),
        )
    )
    return {(row.provider, row.model): row for row in rows}


# -- llm_cache ---------------------------------------------------------------------------------

FAILURE_PREFIX: Final = "error:"


def is_failure_marker(finish_reason: str | None) -> bool:
    """Return True when an `llm_cache` row's `finish_reason` marks a failure, not an answer."""
    return finish_reason is not None and finish_reason.startswith(FAILURE_PREFIX)


def save_cached_answer(
    session: Session, *, key: str, model: str, answer: ChatResult, created_at: datetime
) -> None:
    """Store `answer` under `key` unless an answer is there already; replace a failure marker.

    The first answer stored for a key is kept: a replay of the run that stored it must give it
    back whatever later runs were answered.
    """
    usage = answer.usage
    values: dict[str, Any] = {
        "key": key,
        "provider": answer.provider,
        "model": model,
        "model_answered": answer.model,
        # Compressed, and capped like the `llm_call` row (whose text is the run's record).
        "response_text": "",
        "response_z": compress_text(capped_text(answer.text)),
        "reasoning_z": compress_text(capped_text(answer.reasoning)),
        "finish_reason": answer.finish_reason,
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
            "total_tokens": usage.total_tokens,
        },
        "latency_ms": round(answer.latency_s * 1000),
        "created_at": created_at,
    }
    _put_cache_row(session, values, replace_marker=True)


def save_failure_marker(
    session: Session,
    *,
    key: str,
    failure: RecordedFailure,
    latency_s: float,
    created_at: datetime,
) -> None:
    """Store `failure` under `key` (see the module docstring) only where nothing is stored.

    A failure never replaces what is there: not an answer (a transient 429 must not erase a good
    answer another run got), and not an older marker (the replay of the run that left it fails
    the same way it did).
    """
    values: dict[str, Any] = {
        "key": key,
        "provider": failure.provider,
        "model": failure.model,
        "model_answered": None,
        "response_text": "",
        "response_z": None,
        "reasoning_z": None,
        "finish_reason": FAILURE_PREFIX + failure.kind,
        "usage": {"error": failure.message},
        "latency_ms": round(latency_s * 1000),
        "created_at": created_at,
    }
    _put_cache_row(session, values, replace_marker=False)


def _put_cache_row(session: Session, values: dict[str, Any], *, replace_marker: bool) -> None:
    key = values["key"]
    row = session.get(models.LlmCache, key)
    if row is None:
        session.add(models.LlmCache(hits=0, **values))
        return
    if not (replace_marker and is_failure_marker(row.finish_reason)):
        return
    for name, value in values.items():
        setattr(row, name, value)


def add_cache_hits(session: Session, hits: Mapping[str, int]) -> None:
    """Add counted hits to their `llm_cache` rows (one statement for all of them)."""
    if not hits:
        return
    cache = models.LlmCache
    statement = (
        update(cache)
        .where(cache.key == bindparam("hit_key"))
        .values(hits=cache.hits + bindparam("hit_count"))
    )
    session.connection().execute(
        statement, [{"hit_key": key, "hit_count": count} for key, count in hits.items()]
    )


class StoredRow(NamedTuple):
    """An `llm_cache` row's columns a lookup reads, as the driver gave them (`ResponseCache`)."""

    response_text: str
    response_z: bytes | None
    provider: str
    model: str
    model_answered: str | None
    reasoning_z: bytes | None
    finish_reason: str | None
    usage: dict[str, Any] | None


def cached_entry(
    row: models.LlmCache | Row[Any] | StoredRow, *, latency_s: float
) -> ChatResult | RecordedFailure:
    """Return a stored row as an answer (`cache_hit` set) or as the failure it marks."""
    finish_reason: str | None = row.finish_reason
    if finish_reason is not None and is_failure_marker(finish_reason):
        usage = row.usage or {}
        return RecordedFailure(
            kind=finish_reason.removeprefix(FAILURE_PREFIX),
            message=str(usage.get("error", "")),
            provider=row.provider,
            model=row.model,
        )
    return cached_answer_result(row, latency_s=latency_s)


def cached_answer_result(
    row: models.LlmCache | Row[Any] | StoredRow, *, latency_s: float
) -> ChatResult:
    """Return a stored answer as a `ChatResult` with `cache_hit` set."""
    usage = row.usage or {}
    # Rows written before answers were compressed keep their text in `response_text`.
    text = decompress_text(row.response_z) if row.response_z is not None else row.response_text
    return ChatResult(
        text=text,
        provider=row.provider,
        model=row.model_answered or row.model,
        reasoning=decompress_text(row.reasoning_z),
        finish_reason=row.finish_reason,
        usage=TokenUsage(
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            reasoning_tokens=int(usage.get("reasoning_tokens", 0)),
            total_tokens=int(usage.get("total_tokens", 0)),
        ),
        latency_s=latency_s,
        cache_hit=True,
    )
