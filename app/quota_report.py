"""What `arena quota` shows: per configured model, today's calls, last-seen limits and runway.

`quota_report` reads `quota_usage` only (free); `probe_models` spends one minimal request per model
to read fresh rate-limit headers (on ModelScope even a rejected request spends quota).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.config import AgentConfig, Settings
from app.db.llm_store import latest_quota_rows, quota_rows, rate_limit_values
from app.domain import (
    ChatMessage,
    ChatOptions,
    next_quota_day_at,
    quota_day,
    timeframe_to_timedelta,
)
from app.errors import ModelCallError
from app.llm.openai_compat import OpenAIChatModel
from app.llm.quota import QuotaTracker
from app.providers import BASELINE

PROBE_MESSAGES = (ChatMessage("user", "Reply with the single word OK."),)
PROBE_MAX_TOKENS = 16


@dataclass(frozen=True, slots=True)
class ModelQuota:
    """One configured model's quota picture (see `quota_report`)."""

    provider: str
    model: str
    agents: tuple[str, ...]
    primary_for: int
    calls_today: int
    successes_today: int
    failures_today: int
    rate_limited_today: int
    requests_limit: int | None
    requests_remaining: int | None
    model_requests_limit: int | None
    model_requests_remaining: int | None
    limits_seen_on: str | None
    calls_left: int | None
    calls_left_estimated: bool
    cycles_left_today: int
    calls_needed_today: int
    enough_for_today: bool | None
    runs_out_at: str | None
    exhausted: bool
    last_status: str | None
    last_error: str | None

    def as_json(self) -> dict[str, Any]:
        """Return the figures as a JSON-ready dict."""
        payload = asdict(self)
        payload["agents"] = list(self.agents)
        return payload


def configured_models(
    agents: Sequence[AgentConfig],
    *,
    chain: Callable[[AgentConfig], list[tuple[str, str]]] | None = None,
) -> list[tuple[str, str, list[str], int]]:
    """Return (provider, model, agent names, agents asking it first) for each model in a chain.

    `chain` gives an agent's (provider, model) pairs (`Settings.agent_chain`, which expands
    pools); without it, the agent's own provider and models.
    """
    found: dict[tuple[str, str], tuple[list[str], int]] = {}
    for agent in agents:
        if agent.provider == BASELINE:
            continue
        pairs = chain(agent) if chain is not None else [(agent.provider, m) for m in agent.models]
        for position, key in enumerate(pairs):
            names, primary = found.get(key, ([], 0))
            if agent.name not in names:
                names.append(agent.name)
            found[key] = (names, primary + (position == 0))
    return [(p, m, names, primary) for (p, m), (names, primary) in found.items()]


def quota_report(
    settings: Settings, session_factory: sessionmaker[Session], *, now: datetime
) -> list[ModelQuota]:
    """Return the quota picture of every configured model at `now` (reads the database only).

    Calls needed today = cycles left before the quota day ends (at `schedule.interval`) x the
    agents asking the model first. Calls left = the smaller of the model's and the account's
    last-seen remainders; when those were seen on an earlier day, the limit minus today's calls
    (flagged as an estimate).
    """
    interval_s = timeframe_to_timedelta(settings.schedule.interval).total_seconds()
    reset_at = next_quota_day_at(now)
    cycles_left = math.ceil((reset_at - now).total_seconds() / interval_s)
    day = quota_day(now)
    with session_factory() as session:
        today = {(row.provider, row.model): row for row in quota_rows(session, day)}
        latest = latest_quota_rows(session)
    report = []
    for provider, model, agents, primary in configured_models(
        settings.agents, chain=settings.agent_chain
    ):
        row = today.get((provider, model))
        seen = row if row is not None and row.requests_limit is not None else None
        seen = seen or latest.get((provider, model))
        limits = _limits(seen)
        calls_today = row.calls if row is not None else 0
        fresh = seen is not None and seen.day == day
        remaining = [
            value
            for value in (limits["model_requests_remaining"], limits["requests_remaining"])
            if value is not None
        ]
        estimated = False
        if fresh and remaining:
            calls_left: int | None = min(remaining)
        else:
            caps = [v for v in (limits["model_requests_limit"], limits["requests_limit"]) if v]
            calls_left = max(0, min(caps) - calls_today) if caps else None
            estimated = calls_left is not None
        needed = cycles_left * primary
        runs_out_at = None
        if calls_left is not None and primary and calls_left < needed:
            runs_out_at = (now + (calls_left // primary) * (reset_at - now) / cycles_left).strftime(
                "%H:%M UTC"
            )
        report.append(
            ModelQuota(
                provider=provider,
                model=model,
                agents=tuple(agents),
                primary_for=primary,
                calls_today=calls_today,
                successes_today=row.successes if row is not None else 0,
                failures_today=row.failures if row is not None else 0,
                rate_limited_today=row.rate_limited if row is not None else 0,
                limits_seen_on=seen.day.isoformat() if seen is not None else None,
                calls_left=calls_left,
                calls_left_estimated=estimated,
                cycles_left_today=cycles_left,
                calls_needed_today=needed,
                enough_for_today=None if calls_left is None else calls_left >= needed,
                runs_out_at=runs_out_at,
                exhausted=row is not None and row.exhausted_at is not None,
                last_status=row.last_status if row is not None else None,
                last_error=row.last_error if row is not None else None,
                **limits,
            )
        )
    return report


def _limits(row: Any) -> dict[str, int | None]:
    if row is None:
        return dict.fromkeys(
            (
                "requests_limit",
                "requests_remaining",
                "model_requests_limit",
                "model_requests_remaining",
            )
        )
    return {
        "requests_limit": row.requests_limit,
        "requests_remaining": row.requests_remaining,
        "model_requests_limit": row.model_requests_limit,
        "model_requests_remaining": row.model_requests_remaining,
    }


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The outcome of one probe request."""

    provider: str
    model: str
    outcome: str
    detail: str
    headers: dict[str, int | None]


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    """A configured model to probe: its adapter, or why it cannot be asked (e.g. no key)."""

    provider: str
    model: str
    adapter: OpenAIChatModel | None
    problem: str = ""


async def probe_models(
    targets: Sequence[ProbeTarget], tracker: QuotaTracker, *, now: datetime
) -> list[ProbeResult]:
    """Spend one minimal request per model to read fresh limits; record each in the tracker.

    A target without an adapter is reported as `no_key` without a request.
    """
    results = []
    for target in targets:
        if target.adapter is None:
            results.append(ProbeResult(target.provider, target.model, "no_key", target.problem, {}))
            continue
        request = target.adapter.prepare(
            PROBE_MESSAGES, ChatOptions(max_tokens=PROBE_MAX_TOKENS, thinking=False)
        )
        try:
            answer = await target.adapter.send(request, max_retries=0)
        except ModelCallError as error:
            attempts = error.attempts
            detail = str(error)
        else:
            attempts = answer.attempts
            detail = "answered"
        await tracker.record(attempts, at=now)
        last = attempts[-1] if attempts else None
        results.append(
            ProbeResult(
                target.provider,
                target.model,
                last.outcome if last is not None else "error",
                detail,
                rate_limit_values(last.rate_limit_headers if last is not None else {}),
            )
        )
    return results
