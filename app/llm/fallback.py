"""An agent's fallback chain: its ordered models behind the cache and the quota skips.

`FallbackChain` is the `ChatModel` an agent asks. In `cached` and `replay` modes it first looks
for a stored answer of any of its models; otherwise it asks the models in order. A model that
answers 429 ("limit exceeded") or is not served is skipped (by every agent) until the next quota
day when the answer says the day's quota is used up (or the model is not served), otherwise for
the provider's short cooldown, doubled for each 429 in a row ("too fast"), and the next model
is asked. When every model is skipped the call raises `NoModelAvailableError`, a temporary error:
the agent holds and tries again next cycle. A 401, a 402 or a failure that outlived its retries
ends the call. Every request is recorded in `quota_usage`, also when the call is cancelled; every
answer says which model gave it and lists each request made.

A call that ends without an answer for a temporary reason leaves a failure marker in the cache
(`live` and `cached` modes), so `replay` raises the same kind of error and the agent holds where
it held in the recorded run; `cached` treats a marker as a miss and asks again.
A replay of one recorded run (`recorded`, `--replay-run`) takes every answer and failure from that
run's own calls, by agent and prompt hash, and never reads the cache.
`ChatOptions.budget_s` bounds the whole call, retries and fallback models included.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Final

from app.domain import (
    HELD_NOT_SERVED,
    HELD_QUOTA,
    REPLAYED_FAILURE,
    CallAttempt,
    ChatMessage,
    ChatOptions,
    ChatResult,
    LlmMode,
    RecordedFailure,
    next_quota_day_at,
    prompt_hash,
)
from app.errors import (
    EmptyAnswerError,
    ModelAuthError,
    ModelBillingError,
    ModelCallError,
    ModelImagesRefusedError,
    ModelNotServedError,
    ModelQuotaError,
    ModelRequestError,
    ModelTimeoutError,
    ModelUnavailableError,
    NoModelAvailableError,
    ReplayMissError,
    TemporaryError,
    TruncatedAnswerError,
)
from app.llm.cache import cache_key
from app.llm.openai_compat import (
    BeforeRequest,
    Monotonic,
    OpenAIChatModel,
    PreparedRequest,
    is_day_quota,
)
from app.llm.quota import QuotaTracker
from app.ports import AnswerCache, RecordedAnswers

log = logging.getLogger(__name__)

# The kind written in a failure marker for each temporary error (first match wins: subclasses
# first), and the error a replay raises for it.
FAILURE_KINDS: Final[tuple[tuple[str, type[ModelCallError]], ...]] = (
    ("no_model", NoModelAvailableError),
    ("quota", ModelQuotaError),
    ("timeout", ModelTimeoutError),
    ("unavailable", ModelUnavailableError),
    ("truncated", TruncatedAnswerError),
    ("empty", EmptyAnswerError),
    ("images_refused", ModelImagesRefusedError),
    ("rejected", ModelRequestError),
)
# The caller cancelled the call (the engine's own timeout): replayed as a timeout.
CANCELLED_KIND: Final = "cancelled"
# Kinds only a recorded run's calls have (a 401 or 402 leaves no marker): replayed as the
# error that stopped the agent, so it stops at the same cycle.
STOPPING_KINDS: Final[dict[str, type[ModelCallError]]] = {
    "auth": ModelAuthError,
    "billing": ModelBillingError,
}


def failure_kind(error: ModelCallError) -> str:
    """Return the failure-marker kind of a temporary model error."""
    for kind, error_type in FAILURE_KINDS:
        if isinstance(error, error_type):
            return kind
    return "unavailable"


def replayed_error_type(kind: str) -> type[ModelCallError]:
    """Return the error a replay raises for a failure marker of `kind`."""
    if kind == CANCELLED_KIND:
        return ModelTimeoutError
    if kind in STOPPING_KINDS:
        return STOPPING_KINDS[kind]
    return dict(FAILURE_KINDS).get(kind, ModelUnavailableError)


@dataclass(slots=True)
class _Call:
    """One call in progress: its requests so far, how many are in `quota_usage`, the model asked."""

    attempts: list[CallAttempt]
    model: OpenAIChatModel
    key: str
    recorded: int = 0
    started_s: float = field(default_factory=time.perf_counter)


class FallbackChain:
    """The `ChatModel` port over an agent's ordered models, with cache and quota skips."""

    def __init__(
        self,
        models: Sequence[OpenAIChatModel],
        *,
        agent: str = "",
        quota: QuotaTracker | None = None,
        cache: AnswerCache | None = None,
        mode: LlmMode = LlmMode.LIVE,
        monotonic: Monotonic | None = None,
        recorded: RecordedAnswers | None = None,
    ) -> None:
        if not models:
            raise ValueError("a fallback chain needs at least one model")
        if recorded is not None and mode != "replay":
            raise ValueError(f"a recorded run is replayed in mode 'replay', not {mode!r}")
        if mode != "live" and cache is None and recorded is None:
            raise ValueError(f"cache mode {mode!r} needs a response cache (a database)")
        self.models = tuple(models)
        self.agent = agent
        self.quota = quota or QuotaTracker()
        self.cache = cache
        self.mode = mode
        self.recorded = recorded
        # The call's deadline is handed to the models, so it is read on their clock.
        self.monotonic: Monotonic = monotonic or self.models[0].monotonic

    @property
    def provider(self) -> str:
        """Return the provider of the first model."""
        return self.models[0].provider

    @property
    def model(self) -> str:
        """Return the first model of the chain (the one the agent wants)."""
        return self.models[0].model

    def __repr__(self) -> str:
        chain = " | ".join(f"{m.provider}:{m.model}" for m in self.models)
        return f"FallbackChain(agent={self.agent!r}, models={chain!r}, mode={self.mode!r})"

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        options: ChatOptions | None = None,
        *,
        journal: list[CallAttempt] | None = None,
    ) -> ChatResult:
        """Return a stored answer or the first model's answer that can be had; see the module.

        `journal`, when given, receives each request as it ends: the caller keeps what was spent
        even if it cancels the call.
        """
        journal = [] if journal is None else journal
        budget_s = options.budget_s if options is not None else None
        deadline_at = None if budget_s is None else self.monotonic() + budget_s
        if self.recorded is not None:
            return self._from_recorded(self.recorded, messages)
        requests = [(model, model.prepare(messages, options)) for model in self.models]
        keys = [cache_key(model.provider, request) for model, request in requests]
        if self.cache is not None and self.mode in ("cached", "replay"):
            answer, marker = self._stored(keys)
            if answer is not None:
                return answer
            if self.mode == "replay":
                if marker is not None:
                    self.cache.count_hit(marker[0])
                    raise self._replayed(marker[1], messages)
                raise ReplayMissError(self._miss_message(messages))
        call = _Call(attempts=journal, model=self.models[0], key=keys[0])
        try:
            return await self._ask(requests, keys, call, deadline_at)
        except ModelCallError as error:
            if isinstance(error, TemporaryError):
                await self._mark(call, failure_kind(error), str(error))
            raise
        except asyncio.CancelledError:
            await self._after_cancel(call)
            raise

    def _from_recorded(
        self, recorded: RecordedAnswers, messages: Sequence[ChatMessage]
    ) -> ChatResult:
        # The recorded run's own call for this prompt: no request, no cache, no key needed.
        found = recorded.lookup(self.agent, prompt_hash(messages))
        if isinstance(found, ChatResult):
            return found
        if found is not None:
            raise self._replayed(found, messages, source=f"run {recorded.run_id}")
        raise ReplayMissError(self._run_miss_message(recorded.run_id, messages))

    def _stored(
        self, keys: Sequence[str]
    ) -> tuple[ChatResult | None, tuple[str, RecordedFailure] | None]:
        # Any model's answer wins over a marker: a later run may have answered where one failed.
        assert self.cache is not None
        marker: tuple[str, RecordedFailure] | None = None
        for key in keys:
            found = self.cache.lookup(key)
            if isinstance(found, ChatResult):
                self.cache.count_hit(key)
                return found, None
            if found is not None and marker is None:
                marker = (key, found)
        return None, marker

    async def _ask(
        self,
        requests: Sequence[tuple[OpenAIChatModel, PreparedRequest]],
        keys: Sequence[str],
        call: _Call,
        deadline_at: float | None,
    ) -> ChatResult:
        reasons: list[str] = []
        returns_at: list[datetime] = []
        rate_limited = not_served = False
        for (model, request), key in zip(requests, keys, strict=True):
            now = self.quota.clock()
            skip = self.quota.skipped(model.provider, model.model, now) or self.quota.take(
                model.provider, model.model, now
            )
            if skip is not None:
                reasons.append(f"{model.model}: skipped until {_when(skip.until)} ({skip.message})")
                returns_at.append(skip.until)
                rate_limited = rate_limited or skip.reason == "rate_limited"
                not_served = not_served or skip.reason != "rate_limited"
                continue
            call.model, call.key = model, key
            try:
                result = await model.send(
                    request,
                    deadline_at=deadline_at,
                    journal=call.attempts,
                    before_request=self._begin_for(model),
                )
            except (ModelQuotaError, ModelNotServedError) as error:
                until, day_long = self._skip(model, error, now)
                # A day-long skip marks the row, so a restart keeps skipping the model.
                await self._record(call, at=now, exhausted_at=now if day_long else None)
                reasons.append(f"{model.model}: {error} (skipped until {_when(until)})")
                returns_at.append(until)
                rate_limited = rate_limited or isinstance(error, ModelQuotaError)
                not_served = not_served or isinstance(error, ModelNotServedError)
                continue
            except ModelCallError as error:
                await self._record(call, at=now)
                error.attempts = tuple(call.attempts)
                raise
            # An answer that leaves no quota today: skip the model now rather than spend a
            # request on a sure 429.
            spent = skip_if_spent(self.quota, model, result.rate_limit_headers, now)
            await self._record(call, at=now, exhausted_at=now if spent else None)
            self.quota.answered(model.provider, model.model)
            result = replace(result, attempts=tuple(call.attempts))
            if self.cache is not None:
                await self.cache.put(key, model=model.model, answer=result)
            return result
        until = min(returns_at)
        who = f"agent {self.agent}'s chain" if self.agent else "this chain"
        hints = ["This cycle holds"]
        if rate_limited:
            hints.append(
                "add fallback models or wait for the quota to reset (arena quota shows what is "
                "left)"
            )
        if not_served:
            hints.append("if a model stays unserved past that, pick a model id the provider serves")
        message = (
            f"every model of {who} is skipped until {_when(until)}: {'; '.join(reasons)}. "
            + "; ".join(hints)
        )
        if not call.attempts:
            # No request was sent: the call is held, and its row names the model it was for.
            first = self.models[0]
            call.attempts.append(
                CallAttempt(
                    provider=first.provider,
                    model=first.model,
                    outcome=HELD_QUOTA if rate_limited else HELD_NOT_SERVED,
                    error=message,
                )
            )
            call.recorded = len(call.attempts)
        raise NoModelAvailableError(message, attempts=tuple(call.attempts), until=until)

    def _begin_for(self, model: OpenAIChatModel) -> BeforeRequest:
        # Each request is counted (and its pending row written) before it is sent, so a kill
        # while it is in flight still leaves it counted once.
        async def begin() -> int | None:
            return await self.quota.begin(model.provider, model.model, agent=self.agent)

        return begin

    async def _record(
        self, call: _Call, *, at: datetime, exhausted_at: datetime | None = None
    ) -> None:
        # Marked as recorded before the write: a write cancelled midway still finishes in its
        # thread, so counting the same requests again on cancellation would count them twice.
        pending = call.attempts[call.recorded :]
        call.recorded = len(call.attempts)
        await self.quota.record(pending, at=at, exhausted_at=exhausted_at)

    async def _mark(self, call: _Call, kind: str, message: str) -> None:
        if self.cache is None or self.mode == "replay":
            return
        failure = RecordedFailure(
            kind=kind, message=message, provider=call.model.provider, model=call.model.model
        )
        latency_s = sum(attempt.latency_s for attempt in call.attempts)
        await self.cache.put_failure(call.key, failure, latency_s=latency_s)

    async def _after_cancel(self, call: _Call) -> None:
        # The requests already sent spent quota: record them (and leave a marker, so a replay
        # holds here as this run did) before the cancellation goes on.
        try:
            await self._record(call, at=self.quota.clock())
            await self._mark(
                call,
                CANCELLED_KIND,
                f"the call was cancelled after {time.perf_counter() - call.started_s:.1f} s "
                "(the agent's time ran out)",
            )
        except Exception:  # never let bookkeeping replace the cancellation itself
            log.exception("%s: could not record a cancelled call", self.agent or "chain")

    def _replayed(
        self,
        failure: RecordedFailure,
        messages: Sequence[ChatMessage],
        *,
        source: str = "the recorded run",
    ) -> ModelCallError:
        who = f"agent {self.agent}" if self.agent else "the agent"
        error_type = replayed_error_type(failure.kind)
        message = (
            f"replay: {source} got no answer for {who} "
            f"({failure.provider}:{failure.model}, prompt hash {prompt_hash(messages)[:16]}): "
            f"{failure.message}"
        )
        # No request is sent; the row still says which model the recorded call was for.
        attempt = CallAttempt(
            provider=failure.provider,
            model=failure.model,
            outcome=REPLAYED_FAILURE,
            error=message,
        )
        return error_type(message, attempts=(attempt,))

    def _skip(
        self, model: OpenAIChatModel, error: ModelCallError, now: datetime
    ) -> tuple[datetime, bool]:
        return skip_after_error(self.quota, model, error, now, who=self.agent or "chain")

    def _miss_message(self, messages: Sequence[ChatMessage]) -> str:
        models = ", ".join(f"{m.provider}:{m.model}" for m in self.models)
        who = f"agent {self.agent}" if self.agent else "the agent"
        return (
            f"replay mode: no stored answer for {who} ({models}), prompt hash "
            f"{prompt_hash(messages)[:16]}, user message starting {_first_line(messages)!r}; "
            "run once with --llm-mode cached (or live) to record the answers"
        )

    def _run_miss_message(self, run_id: str, messages: Sequence[ChatMessage]) -> str:
        who = f"agent {self.agent}" if self.agent else "the agent"
        return (
            f"replay of run {run_id}: that run never sent {who}'s prompt (prompt hash "
            f"{prompt_hash(messages)[:16]}, user message starting {_first_line(messages)!r}); "
            "replay it with the same data, window, interval, agents and options it ran with"
        )


def _first_line(messages: Sequence[ChatMessage]) -> str:
    user = next((m.content for m in messages if m.role == "user"), "")
    first_line = user.strip().splitlines()[0] if user.strip() else ""
    if len(first_line) > 120:
        first_line = first_line[:119] + "…"
    return first_line


# Rate-limit headers whose value 0 means no call is left today (for the model, the account).
SPENT_HEADERS: Final = (
    "modelscope-ratelimit-model-requests-remaining",
    "modelscope-ratelimit-requests-remaining",
)


def quota_spent(headers: Mapping[str, str]) -> bool:
    """Return True when the rate-limit headers say no request is left today."""
    for name in SPENT_HEADERS:
        value = headers.get(name)
        if value is not None and value.strip().isdigit() and int(value) <= 0:
            return True
    return False


def skip_if_spent(
    quota: QuotaTracker, model: OpenAIChatModel, headers: Mapping[str, str], now: datetime
) -> bool:
    """Skip `model` until the next quota day when `headers` leave it no call; return whether."""
    if not quota_spent(headers):
        return False
    until = next_quota_day_at(now)
    quota.skip(
        model.provider,
        model.model,
        until=until,
        reason="rate_limited",
        message="the quota headers say no call is left today",
    )
    log.info(
        "%s:%s has no call left today; skipped until %s", model.provider, model.model, _when(until)
    )
    return True


def skip_after_error(
    quota: QuotaTracker, model: OpenAIChatModel, error: ModelCallError, now: datetime, *, who: str
) -> tuple[datetime, bool]:
    """Skip `model` after a quota or not-served error; return until when, and if day-long.

    The one rule for agents' chains and the gateway: not served, or a quota that is gone for the
    day, skips until the next quota day; a 429 that only means "too fast" skips for the
    provider's cooldown, doubled for each such 429 in a row.
    """
    traits = model.traits
    base_s = traits.rate_limit_cooldown_s
    day_long = (
        isinstance(error, ModelNotServedError) or base_s is None or is_day_quota(error, traits)
    )
    day_end = next_quota_day_at(now)
    if day_long or base_s is None:
        until = day_end
    else:
        # "Too fast": a short cooldown, doubled for each 429 in a row (never past the day).
        cooldown_s = quota.cooldown_s(
            model.provider, model.model, base_s=base_s, max_s=traits.rate_limit_max_cooldown_s
        )
        until = min(now + timedelta(seconds=cooldown_s), day_end)
    reason = "rate_limited" if isinstance(error, ModelQuotaError) else "not_served"
    quota.skip(model.provider, model.model, until=until, reason=reason, message=str(error))
    log.warning(
        "%s: %s:%s %s; skipped until %s, asking the next model",
        who,
        model.provider,
        model.model,
        reason.replace("_", " "),
        _when(until),
    )
    return until, day_long


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")
