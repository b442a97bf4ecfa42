"""What the gateway app is handed by the composition root, and its status and model listings."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from app.domain import ModelUsage, next_quota_day_at, quota_day
from app.llm.complexity import ComplexityScorer
from app.llm.pool import ModelPool, PoolRouter
from app.llm.quota import Skip
from app.llm.quota_query import QuotaProbe


@dataclass(slots=True)
class Pools:
    """The pools in force: replaced as a whole by a reload."""

    router: PoolRouter
    default_pool: str
    scorer: ComplexityScorer | None = None
    default_tier: int = 1


@dataclass(slots=True)
class GatewayServices:
    """Everything the gateway's routes use; built by `app.wiring.build_gateway`."""

    pools: Pools
    # Re-read the settings and build new pools; raise `ConfigError` (the old ones stay).
    reload: Callable[[], Pools]
    usage_on: Callable[[date], list[ModelUsage]]
    quota_query: Callable[[str, Sequence[str]], Awaitable[list[QuotaProbe]]]
    token: str | None = None
    max_body_bytes: int = 1_000_000
    budget_s: float = 300.0
    # The arena's decision cadence and, per (provider, model), the agents asking it first.
    interval_s: float = 180.0
    agents_first: Mapping[tuple[str, str], int] = field(default_factory=dict)


def _left(usage: ModelUsage | None) -> int | None:
    if usage is None:
        return None
    values = [
        v for v in (usage.model_requests_remaining, usage.requests_remaining) if v is not None
    ]
    return min(values) if values else None


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def model_entries(
    services: GatewayServices, now: datetime, skips: Mapping[tuple[str, str], Skip]
) -> list[dict[str, Any]]:
    """Return every pool model with tier, switch, today's calls, what is left, and any skip."""
    router = services.pools.router
    usage = {(u.provider, u.model): u for u in services.usage_on(quota_day(now))}
    entries = []
    for pool in router.pools.values():
        for position, member in enumerate(pool.members):
            row = usage.get(member.key)
            skip = skips.get(member.key)
            entries.append(
                {
                    "id": member.model.model,
                    "object": "model",
                    "created": 0,
                    "owned_by": member.model.provider,
                    "name": member.name,
                    "pool": pool.name,
                    "position": position,
                    "tier": member.tier,
                    "enabled": member.enabled,
                    "calls_today": row.calls if row is not None else 0,
                    "remaining": _left(row),
                    "skipped_until": None if skip is None else _iso(skip.until),
                    "skip_reason": None if skip is None else skip.message,
                }
            )
    return entries


def pool_entries(pools: Mapping[str, ModelPool]) -> list[dict[str, Any]]:
    """Return each pool as a model a client may name (`pool:NAME`)."""
    return [
        {
            "id": f"pool:{pool.name}",
            "object": "model",
            "created": 0,
            "owned_by": "gateway",
            "models": [member.model.model for member in pool.enabled()],
        }
        for pool in pools.values()
    ]


def status_body(
    services: GatewayServices, now: datetime, skips: Mapping[tuple[str, str], Skip]
) -> dict[str, Any]:
    """Return today's usage per model and in total, limits seen, skips, and calls left.

    `skips` is read on the event loop (the tracker is not shared across threads); the rows are
    read here, in a worker thread.
    """
    day = quota_day(now)
    resets_at = next_quota_day_at(now)
    cycles_left = math.ceil((resets_at - now).total_seconds() / services.interval_s)
    usage = {(u.provider, u.model): u for u in services.usage_on(day)}
    router = services.pools.router
    pools = []
    for pool in router.pools.values():
        rows = []
        for member in pool.members:
            row = usage.get(member.key)
            skip = skips.get(member.key)
            first = services.agents_first.get(member.key, 0)
            rows.append(
                {
                    "model": member.model.model,
                    "provider": member.model.provider,
                    "name": member.name,
                    "tier": member.tier,
                    "enabled": member.enabled,
                    "calls_today": row.calls if row is not None else 0,
                    "successes_today": row.successes if row is not None else 0,
                    "failures_today": row.failures if row is not None else 0,
                    "requests_limit": row.requests_limit if row is not None else None,
                    "requests_remaining": row.requests_remaining if row is not None else None,
                    "model_requests_limit": row.model_requests_limit if row is not None else None,
                    "model_requests_remaining": row.model_requests_remaining
                    if row is not None
                    else None,
                    "calls_left": _left(row),
                    "last_status": row.last_status if row is not None else None,
                    "last_error": row.last_error if row is not None else None,
                    "skipped": skip is not None,
                    "back_at": None if skip is None else _iso(skip.until),
                    "skip_reason": None if skip is None else skip.message,
                    "arena_agents_first": first,
                    "arena_calls_needed_today": first * cycles_left,
                }
            )
        pools.append({"name": pool.name, "models": rows})
    return {
        "day": day.isoformat(),
        "now": now.isoformat(),
        "quota_resets_at": resets_at.isoformat(),
        "total_calls_today": sum(u.calls for u in usage.values()),
        "arena_interval_s": services.interval_s,
        "arena_cycles_left_today": cycles_left,
        "default_pool": services.pools.default_pool,
        "pools": pools,
    }
