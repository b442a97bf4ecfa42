"""Quota accounting: calls per provider, model and UTC day, and which models to skip for now.

Every request's outcome and rate-limit headers go to the `QuotaLedger` port (the `quota_usage`
table), run in a worker thread so a busy database never stalls the other agents' calls. Skips are
shared by every agent (ModelScope's quota is per account, not per agent) and survive a restart:
a model exhausted for the day is marked so in the ledger. Another process on the same database
(the gateway beside the arena) marks models there too, so the marks are read again every
`refresh_s` seconds: neither spends a request on a model the other found exhausted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

from app.domain import CallAttempt, QuotaDelta, next_quota_day_at, quota_day, was_sent
from app.errors import TemporaryError
from app.ports import QuotaLedger

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

# How often the exhausted marks of other processes are read again from the ledger.
DEFAULT_REFRESH_S: Final = 30.0


def utc_now() -> datetime:
    """Return the current UTC time (the live clock of the LLM adapters)."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Skip:
    """A model left out of its chains until `until`, and why."""

    until: datetime
    reason: str
    message: str


class CallBudget(Protocol):
    """Calls a model may still be sent, shared by every process of an evaluation.

    `take` spends one and returns True, or returns False when none is left. Models it has no
    figure for are not limited.
    """

    def take(self, provider: str, model: str) -> bool:
        """Spend one call of `model`; False when the budget is spent."""
        ...


BUDGET_SPENT = "the calls left today, shared by every worker of this evaluation, are spent"


class QuotaTracker:
    """Record requests per (provider, model, UTC day) and remember models to skip.

    With a `budget` (an evaluation's workers share one), every request first takes a call from it;
    a model whose budget is spent is skipped until the next quota day.
    """

    def __init__(
        self,
        ledger: QuotaLedger | None = None,
        *,
        clock: Clock = utc_now,
        refresh_s: float = DEFAULT_REFRESH_S,
        budget: CallBudget | None = None,
    ) -> None:
        self.ledger = ledger
        self.clock = clock
        self.refresh_s = refresh_s
        self.budget = budget
        self._skips: dict[tuple[str, str], Skip] = {}
        self._loaded_at: datetime | None = None
        # 429s in a row per model that were only "too fast": each doubles the next cooldown.
        self._streaks: dict[tuple[str, str], int] = {}

    def take(self, provider: str, model: str, at: datetime) -> Skip | None:
        """Take one call of `model` from the shared budget; the skip in force when none is left."""
        if self.budget is None or self.budget.take(provider, model):
            return None
        skip = Skip(until=next_quota_day_at(at), reason="rate_limited", message=BUDGET_SPENT)
        self._skips[(provider, model)] = skip
        return skip

    def cooldown_s(self, provider: str, model: str, *, base_s: float, max_s: float) -> float:
        """Count one more "too fast" 429 of `model`; return how long to skip it (backoff)."""
        streak = self._streaks.get((provider, model), 0) + 1
        self._streaks[(provider, model)] = streak
        return min(base_s * 2.0 ** (streak - 1), max(base_s, max_s))

    def answered(self, provider: str, model: str) -> None:
        """Note that `model` answered: its next 429 starts the backoff over."""
        self._streaks.pop((provider, model), None)

    def skip(
        self, provider: str, model: str, *, until: datetime, reason: str, message: str
    ) -> None:
        """Leave `model` out of every chain until `until`."""
        self._skips[(provider, model)] = Skip(until=until, reason=reason, message=message)

    def skipped(self, provider: str, model: str, at: datetime) -> Skip | None:
        """Return the skip in force for `model` at `at`, or None when it may be asked."""
        self._load_day(at)
        skip = self._skips.get((provider, model))
        if skip is None:
            return None
        if at >= skip.until:
            del self._skips[(provider, model)]
            return None
        return skip

    def skips(self, at: datetime) -> dict[tuple[str, str], Skip]:
        """Return every skip in force at `at`, by (provider, model)."""
        self._load_day(at)
        return {key: skip for key, skip in self._skips.items() if at < skip.until}

    def _load_day(self, at: datetime) -> None:
        # After a restart, models marked exhausted earlier today stay skipped; marks written by
        # another process are picked up every `refresh_s`.
        if self.ledger is None:
            return
        loaded_at = self._loaded_at
        if (
            loaded_at is not None
            and quota_day(loaded_at) == quota_day(at)
            and timedelta(0) <= at - loaded_at < timedelta(seconds=self.refresh_s)
        ):
            return
        self._loaded_at = at
        day = quota_day(at)
        try:
            found_models = self.ledger.exhausted_on(day)
        except TemporaryError as error:
            log.warning("could not read the exhausted models: %s", error)
            return
        for found in found_models:
            if (found.provider, found.model) not in self._skips:
                self._skips[(found.provider, found.model)] = Skip(
                    until=next_quota_day_at(at),
                    reason="not_served" if found.not_served else "rate_limited",
                    message=found.message,
                )

    async def begin(self, provider: str, model: str, *, agent: str) -> int | None:
        """Count a request about to be sent, before it is (see `QuotaLedger.begin`).

        A process killed while the request is in flight has then still counted it, and its
        pending `llm_call` row is marked interrupted at the next start.
        """
        if self.ledger is None:
            return None
        try:
            return await asyncio.to_thread(
                self.ledger.begin, provider, model, agent=agent, at=self.clock()
            )
        except TemporaryError as error:
            log.warning("could not record an LLM request before sending it: %s", error)
            return None

    async def record(
        self,
        attempts: Sequence[CallAttempt],
        *,
        at: datetime,
        exhausted_at: datetime | None = None,
    ) -> None:
        """Add `attempts` (requests to one model) to today's `quota_usage` row of each model."""
        if self.ledger is None or not attempts:
            return
        deltas = quota_deltas(attempts, at=at, exhausted_at=exhausted_at)
        if not deltas:
            return
        try:
            await asyncio.to_thread(self.ledger.record, deltas)
        except TemporaryError as error:
            # Bookkeeping must not cost the agent its answer: the call itself went through.
            log.warning("could not record LLM quota usage: %s", error)


def quota_deltas(
    attempts: Sequence[CallAttempt], *, at: datetime, exhausted_at: datetime | None = None
) -> list[QuotaDelta]:
    """Return one `QuotaDelta` per model named in `attempts` (headers: the last ones seen)."""
    by_model: dict[tuple[str, str], list[CallAttempt]] = {}
    # A held or replayed call sent nothing, so it spent no quota.
    for attempt in (a for a in attempts if was_sent(a.outcome)):
        by_model.setdefault((attempt.provider, attempt.model), []).append(attempt)
    deltas = []
    for (provider, model), group in by_model.items():
        headers: dict[str, str] = {}
        for attempt in group:
            headers.update(attempt.rate_limit_headers)
        last = group[-1]
        deltas.append(
            QuotaDelta(
                provider=provider,
                model=model,
                day=quota_day(at),
                at=at,
                # A request begun in the ledger was counted before it was sent.
                calls=sum(1 for a in group if a.pending_id is None),
                successes=sum(1 for a in group if a.outcome == "ok"),
                failures=sum(1 for a in group if a.outcome != "ok"),
                rate_limited=sum(1 for a in group if a.outcome == "rate_limited"),
                headers=headers,
                last_status=last.outcome
                if last.status_code is None
                else f"{last.status_code} {last.outcome}",
                last_error=last.error,
                exhausted_at=exhausted_at,
            )
        )
    return deltas
