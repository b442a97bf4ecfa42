"""Model pools: named, tiered lists of models, and the router the gateway asks them through.

A pool's models are ordered by tier (1 = strongest ... 4 = lightest), then as listed. An arena
agent on a pool (`qwen=pool:default`) gets a `FallbackChain` over the enabled models in that
order. The gateway's `PoolRouter` follows the same quota rules on the same `QuotaTracker` (and so
the same `quota_usage` rows): a model skipped for the day by one is skipped by the other. The
router differs where a gateway must: a 401, a 5xx that outlived its retries or a timeout moves
on to the next model (and is reported) instead of ending the call, and a streamed answer is
passed on chunk by chunk; once a chunk went out the answer is committed to that model.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from app.domain import CallAttempt, ChatMessage, ChatOptions, ChatResult
from app.errors import (
    ModelAuthError,
    ModelCallError,
    ModelNotServedError,
    ModelQuotaError,
    NoModelAvailableError,
)
from app.llm.fallback import skip_after_error, skip_if_spent
from app.llm.openai_compat import ChunkRelay, Monotonic, OpenAIChatModel
from app.llm.quota import QuotaTracker

log = logging.getLogger(__name__)

POOL_PREFIX: Final = "pool:"
LIGHTEST_TIER: Final = 4


@dataclass(frozen=True, slots=True)
class PoolMember:
    """One model of a pool with its tier and switch."""

    model: OpenAIChatModel
    tier: int
    enabled: bool = True
    name: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        """Return (provider, model id): how quota rows and skips name the model."""
        return (self.model.provider, self.model.model)


@dataclass(frozen=True, slots=True)
class ModelPool:
    """A named pool; `members` are in routing order (tier, then as listed), disabled ones too."""

    name: str
    members: tuple[PoolMember, ...]

    def enabled(self) -> list[PoolMember]:
        """Return the members that may be asked, in routing order."""
        return [member for member in self.members if member.enabled]

    def find(self, model_id: str) -> PoolMember | None:
        """Return the member serving `model_id` (its id, or its display name), or None."""
        for member in self.members:
            if model_id in (member.model.model, member.name):
                return member
        return None


def tier_order(members: Sequence[PoolMember], tier: int | None) -> list[PoolMember]:
    """Return `members` for a request wanting `tier`: that tier, lighter ones, then stronger.

    Without a wanted tier the pool's own order stands. A simple request (tier 4) starts on the
    light models and reaches a strong one only when every lighter one is out.
    """
    if tier is None:
        return list(members)
    wanted = [m for m in members if m.tier == tier]
    lighter = [m for m in members if m.tier > tier]
    stronger = sorted((m for m in members if m.tier < tier), key=lambda m: -m.tier)
    return [*wanted, *lighter, *stronger]


@dataclass(frozen=True, slots=True)
class Tried:
    """A model the router passed over for one request, and why."""

    provider: str
    model: str
    reason: str
    skipped_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Routed:
    """An answer of the router: the result, who served it, and what was passed over first."""

    result: ChatResult
    member: PoolMember
    tried: tuple[Tried, ...] = ()
    attempts: tuple[CallAttempt, ...] = field(default=())


class PoolRouter:
    """Answer a request from the first model of a pool that can (see the module docstring)."""

    def __init__(
        self,
        pools: Mapping[str, ModelPool],
        *,
        quota: QuotaTracker,
        monotonic: Monotonic | None = None,
    ) -> None:
        self.pools = dict(pools)
        self.quota = quota
        self._monotonic = monotonic

    def find_model(self, model_id: str) -> PoolMember | None:
        """Return the first pool member serving `model_id`, or None."""
        for pool in self.pools.values():
            member = pool.find(model_id)
            if member is not None:
                return member
        return None

    async def route(
        self,
        members: Sequence[PoolMember],
        messages: Sequence[ChatMessage],
        options: ChatOptions,
        *,
        relay: ChunkRelay | None = None,
    ) -> Routed:
        """Ask `members` in order until one answers; raise `NoModelAvailableError` otherwise."""
        if not members:
            raise NoModelAvailableError("no enabled model to ask (every one is disabled)")
        monotonic = self._monotonic or members[0].model.monotonic
        deadline_at = None if options.budget_s is None else monotonic() + options.budget_s
        tried: list[Tried] = []
        every: list[CallAttempt] = []
        for member in members:
            model = member.model
            now = self.quota.clock()
            skip = self.quota.skipped(model.provider, model.model, now)
            if skip is not None:
                tried.append(Tried(model.provider, model.model, skip.message, skip.until))
                continue
            journal: list[CallAttempt] = []
            if relay is not None:
                relay.label = model.model
            try:
                result = await model.send(
                    model.prepare(messages, options),
                    deadline_at=deadline_at,
                    journal=journal,
                    relay=relay,
                )
            except (ModelQuotaError, ModelNotServedError) as error:
                until, day_long = skip_after_error(self.quota, model, error, now, who="gateway")
                await self.quota.record(journal, at=now, exhausted_at=now if day_long else None)
                every.extend(journal)
                tried.append(Tried(model.provider, model.model, str(error), until))
                continue
            except ModelCallError as error:
                await self.quota.record(journal, at=now)
                every.extend(journal)
                tried.append(Tried(model.provider, model.model, str(error)))
                if relay is not None and relay.started:
                    error.attempts = tuple(every)
                    raise
                if isinstance(error, ModelAuthError):
                    log.warning("gateway: %s (asking the next model)", error)
                continue
            spent = skip_if_spent(self.quota, model, result.rate_limit_headers, now)
            await self.quota.record(journal, at=now, exhausted_at=now if spent else None)
            self.quota.answered(model.provider, model.model)
            every.extend(journal)
            return Routed(result=result, member=member, tried=tuple(tried), attempts=tuple(every))
        untils = [t.skipped_until for t in tried if t.skipped_until is not None]
        reasons = "; ".join(f"{t.model}: {t.reason}" for t in tried)
        raise NoModelAvailableError(
            f"no model could answer: {reasons}",
            attempts=tuple(every),
            until=min(untils) if untils else None,
        )
