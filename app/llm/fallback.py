"""An agent's fallback chain: its ordered models behind the cache and the quota skips.

`FallbackChain` is the `ChatModel` an agent asks. In `cached` and `replay` modes it first looks
for a stored answer of any of its models; otherwise it asks the models in order. A model that
answers 429 ("limit exceeded") or is not served is skipped (by every agent) until the next quota
day, or for the provider's short cooldown where a 429 only means "too fast", and the next model
is asked. A 401, a 402 or a failure that outlived its retries ends the call. Every request is
recorded in `quota_usage`; every answer says which model gave it and lists each request made.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from app.config import LlmMode
from app.db.llm_rows import prompt_hash
from app.errors import (
    ModelCallError,
    ModelNotServedError,
    ModelQuotaError,
    ReplayMissError,
)
from app.llm.cache import ResponseCache, cache_key
from app.llm.openai_compat import OpenAIChatModel, is_day_quota
from app.llm.quota import QuotaTracker
from app.llm.traits import next_quota_day_at
from app.ports import CallAttempt, ChatMessage, ChatOptions, ChatResult

log = logging.getLogger(__name__)


class FallbackChain:
    """The `ChatModel` port over an agent's ordered models, with cache and quota skips."""

    def __init__(
        self,
        models: Sequence[OpenAIChatModel],
        *,
        agent: str = "",
        quota: QuotaTracker | None = None,
        cache: ResponseCache | None = None,
        mode: LlmMode = "live",
    ) -> None:
        if not models:
            raise ValueError("a fallback chain needs at least one model")
        if mode != "live" and cache is None:
            raise ValueError(f"cache mode {mode!r} needs a response cache (a database)")
        self.models = tuple(models)
        self.agent = agent
        self.quota = quota or QuotaTracker()
        self.cache = cache
        self.mode = mode

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
        self, messages: Sequence[ChatMessage], options: ChatOptions | None = None
    ) -> ChatResult:
        """Return a stored answer or the first model's answer that can be had; see the module."""
        requests = [(model, model.prepare(messages, options)) for model in self.models]
        keys = [cache_key(model.provider, request) for model, request in requests]
        if self.cache is not None and self.mode in ("cached", "replay"):
            for key in keys:
                hit = self.cache.get(key)
                if hit is not None:
                    return hit
            if self.mode == "replay":
                raise ReplayMissError(self._miss_message(messages))
        attempts: list[CallAttempt] = []
        reasons: list[str] = []
        quota_only = False
        for (model, request), key in zip(requests, keys, strict=True):
            now = self.quota.clock()
            skip = self.quota.skipped(model.provider, model.model, now)
            if skip is not None:
                reasons.append(f"{model.model}: skipped until {_when(skip.until)} ({skip.message})")
                quota_only = quota_only or skip.reason == "rate_limited"
                continue
            try:
                result = await model.send(request)
            except (ModelQuotaError, ModelNotServedError) as error:
                attempts.extend(error.attempts)
                until, day_long = self._skip(model, error, now)
                # A day-long skip marks the row, so a restart keeps skipping the model.
                await self.quota.record(
                    error.attempts, at=now, exhausted_at=now if day_long else None
                )
                reasons.append(f"{model.model}: {error} (skipped until {_when(until)})")
                quota_only = quota_only or isinstance(error, ModelQuotaError)
                continue
            except ModelCallError as error:
                await self.quota.record(error.attempts, at=now)
                error.attempts = (*attempts, *error.attempts)
                raise
            await self.quota.record(result.attempts, at=now)
            result = replace(result, attempts=(*attempts, *result.attempts))
            if self.cache is not None:
                await self.cache.put(key, model=model.model, answer=result)
            return result
        who = f"agent {self.agent}" if self.agent else "this agent"
        summary = "; ".join(reasons)
        if quota_only:
            raise ModelQuotaError(
                f"no model of {who} can answer now: {summary}. Add fallback models or wait "
                "for the quota to reset (arena quota shows what is left)",
                attempts=tuple(attempts),
            )
        raise ModelNotServedError(
            f"no model of {who} is served: {summary}. Pick model ids the provider serves",
            attempts=tuple(attempts),
        )

    def _skip(
        self, model: OpenAIChatModel, error: ModelCallError, now: datetime
    ) -> tuple[datetime, bool]:
        traits = model.traits
        cooldown_s = traits.rate_limit_cooldown_s
        day_long = (
            isinstance(error, ModelNotServedError)
            or cooldown_s is None
            or is_day_quota(error, traits)
        )
        until = next_quota_day_at(now) if day_long else now + timedelta(seconds=cooldown_s or 0)
        reason = "rate_limited" if isinstance(error, ModelQuotaError) else "not_served"
        self.quota.skip(model.provider, model.model, until=until, reason=reason, message=str(error))
        log.warning(
            "%s: %s:%s %s; skipped until %s, asking the next model",
            self.agent or "chain",
            model.provider,
            model.model,
            reason.replace("_", " "),
            _when(until),
        )
        return until, day_long

    def _miss_message(self, messages: Sequence[ChatMessage]) -> str:
        user = next((m.content for m in messages if m.role == "user"), "")
        first_line = user.strip().splitlines()[0] if user.strip() else ""
        if len(first_line) > 120:
            first_line = first_line[:119] + "…"
        models = ", ".join(f"{m.provider}:{m.model}" for m in self.models)
        who = f"agent {self.agent}" if self.agent else "the agent"
        return (
            f"replay mode: no stored answer for {who} ({models}), prompt hash "
            f"{prompt_hash(messages)[:16]}, user message starting {first_line!r}; run once with "
            "--llm-mode cached (or live) to record the answers"
        )


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")
