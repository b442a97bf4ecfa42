"""An agent's fallback chain: quota skips until the next quota day, recorded in `quota_usage`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db import models
from app.db.quota_ledger import SqlQuotaLedger
from app.domain import ChatOptions, ChatResult
from app.errors import (
    ConfigError,
    ModelAuthError,
    ModelQuotaError,
    ModelTimeoutError,
    ModelUnavailableError,
    NoModelAvailableError,
    RateLimitedError,
    TemporaryError,
)
from app.llm import CallDefaults, ClientPool, FallbackChain, QuotaTracker, make_provider
from tests.fakes.clock import FakeMonotonic
from tests.fakes.openai_server import (
    FakeOpenAIServer,
    answer,
    error,
    hang,
    not_served,
    rate_limited,
    server_error,
    too_fast,
    unauthorized,
)
from tests.llm.conftest import MESSAGES, FrozenClock, no_sleep

Server = Callable[..., FakeOpenAIServer]
A, B, C = "Qwen/Qwen3-235B-A22B-Instruct-2507", "Qwen/Qwen3-Next-80B-A3B-Instruct", "Qwen/Qwen3-32B"
HOLD = '{"BTC": {"coin": "BTC", "signal": "hold"}}'


def ask_chain(
    server: FakeOpenAIServer,
    models: Sequence[str],
    quota: QuotaTracker,
    *,
    provider: str = "modelscope",
    defaults: CallDefaults | None = None,
    options: ChatOptions | None = None,
    monotonic: FakeMonotonic | None = None,
) -> ChatResult:
    """Ask a chain of `models` on the fake through a fresh client pool.

    Deadlines are read on `monotonic` (default: a fake clock that stands still), never on the
    machine's clock, so a budget's verdict does not depend on how fast this machine is.
    """
    clock = monotonic or FakeMonotonic()

    async def run() -> ChatResult:
        clients = ClientPool()
        try:
            chain = FallbackChain(
                [
                    make_provider(
                        provider,
                        model=model,
                        api_key="key",
                        base_url=server.base_url,
                        clients=clients,
                        defaults=defaults or CallDefaults(retry_backoff_s=0),
                        sleep=no_sleep,
                        monotonic=clock,
                    )
                    for model in models
                ],
                agent="qwen",
                quota=quota,
            )
            return await chain.complete(MESSAGES, options)
        finally:
            await clients.aclose()

    return asyncio.run(run())


def quota_table(session_factory: sessionmaker[Session]) -> dict[str, models.QuotaUsage]:
    with session_factory() as session:
        return {row.model: row for row in session.scalars(select(models.QuotaUsage))}


def test_three_model_chain_429_then_not_served_then_answer_skips_the_first_two_all_day(
    fake_server: Server, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    server = fake_server("modelscope")
    server.script(A, rate_limited())
    server.script(B, not_served())
    server.script(C, answer(HOLD), answer(HOLD), answer(HOLD))
    quota = QuotaTracker(SqlQuotaLedger(session_factory), clock=clock)

    result = ask_chain(server, [A, B, C], quota)

    assert (result.text, result.model) == (HOLD, C)
    assert [(a.model, a.outcome) for a in result.attempts] == [
        (A, "rate_limited"),
        (B, "not_served"),
        (C, "ok"),
    ]
    rows = quota_table(session_factory)
    assert set(rows) == {A, B, C}
    assert (rows[A].calls, rows[A].rate_limited, rows[A].failures) == (1, 1, 1)
    assert (rows[A].model_requests_remaining, rows[A].model_requests_limit) == (0, 500)
    assert rows[A].requests_limit == 2000 and rows[A].exhausted_at is not None
    assert (rows[B].calls, rows[B].failures, rows[B].rate_limited) == (1, 1, 0)
    assert "has no provider supported" in (rows[B].last_error or "")
    assert (rows[C].calls, rows[C].successes, rows[C].exhausted_at) == (1, 1, None)
    assert rows[C].day == clock.at.date()

    # Later the same UTC day the first two are not asked at all.
    clock.at = datetime(2026, 3, 14, 23, 59, tzinfo=UTC)
    again = ask_chain(server, [A, B, C], quota)

    assert again.model == C and [a.model for a in again.attempts] == [C]
    assert [len(server.requests_for(m)) for m in (A, B, C)] == [1, 1, 2]

    # A new quota day asks the first model again.
    clock.at = datetime(2026, 3, 15, 0, 0, tzinfo=UTC)
    server.script(A, answer(HOLD))
    fresh = ask_chain(server, [A, B, C], quota)

    assert fresh.model == A
    assert len(server.requests_for(A)) == 2


def test_a_restart_keeps_skipping_models_exhausted_earlier_that_day(
    fake_server: Server, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    server = fake_server("modelscope")
    server.script(A, rate_limited())
    ask_chain(server, [A, C], QuotaTracker(SqlQuotaLedger(session_factory), clock=clock))

    restarted = QuotaTracker(SqlQuotaLedger(session_factory), clock=clock)
    result = ask_chain(server, [A, C], restarted)

    assert result.model == C
    assert len(server.requests_for(A)) == 1


def test_every_model_out_of_quota_is_a_rate_limit_error_listing_each(
    fake_server: Server, clock: FrozenClock
) -> None:
    server = fake_server("modelscope")
    server.script(A, rate_limited())
    server.script(B, not_served())
    quota = QuotaTracker(clock=clock)

    with pytest.raises(ModelQuotaError) as caught:
        ask_chain(server, [A, B], quota)

    err = caught.value
    assert isinstance(err, RateLimitedError)
    assert A in str(err) and B in str(err) and "2026-03-15 00:00 UTC" in str(err)
    assert [a.outcome for a in err.attempts] == ["rate_limited", "not_served"]

    # Asked again while both are skipped: no request at all, same kind of error.
    with pytest.raises(ModelQuotaError, match="skipped until") as again:
        ask_chain(server, [A, B], quota)
    # One held attempt, sent to nobody, for the chain's first model (its `llm_call` row).
    assert [(a.model, a.outcome) for a in again.value.attempts] == [(A, "held_quota")]
    assert server.request_count == 2


def test_a_one_model_chain_not_served_holds_until_the_next_quota_day_without_asking_again(
    fake_server: Server, clock: FrozenClock
) -> None:
    """ModelScope's "has no provider supported" comes and goes: the agent holds, it is not stopped.

    Asked at 2026-03-14 10:00 UTC, the model is skipped until the next quota day, 03-15 00:00 UTC.
    """
    server = fake_server("modelscope")
    server.script("Qwen/Old", not_served())
    quota = QuotaTracker(clock=clock)

    with pytest.raises(NoModelAvailableError, match="pick a model id") as caught:
        ask_chain(server, ["Qwen/Old"], quota)

    err = caught.value
    assert isinstance(err, TemporaryError) and not isinstance(err, ConfigError)
    assert err.until == datetime(2026, 3, 15, 0, 0, tzinfo=UTC)
    assert [a.outcome for a in err.attempts] == ["not_served"]

    clock.at = datetime(2026, 3, 14, 18, 0, tzinfo=UTC)
    with pytest.raises(NoModelAvailableError, match="skipped until 2026-03-15 00:00 UTC") as again:
        ask_chain(server, ["Qwen/Old"], quota)
    assert [(a.model, a.outcome) for a in again.value.attempts] == [("Qwen/Old", "held_not_served")]
    assert server.request_count == 1


def test_a_401_stops_the_agent_without_trying_the_next_model(
    fake_server: Server, clock: FrozenClock
) -> None:
    server = fake_server("modelscope")
    server.script(A, unauthorized())

    with pytest.raises(ModelAuthError, match="MODELSCOPE_API_KEY"):
        ask_chain(server, [A, C], QuotaTracker(clock=clock))

    assert server.requests_for(C) == []


def test_a_timeout_after_its_retries_ends_the_call_with_every_attempt(
    fake_server: Server, clock: FrozenClock
) -> None:
    server = fake_server("modelscope")
    server.script(A, hang(), hang())

    with pytest.raises(ModelTimeoutError) as caught:
        ask_chain(
            server,
            [A, C],
            QuotaTracker(clock=clock),
            defaults=CallDefaults(timeout_s=0.2, max_retries=1, retry_backoff_s=0),
        )

    assert [(a.model, a.outcome) for a in caught.value.attempts] == [(A, "timeout")] * 2
    assert server.requests_for(C) == []


def test_deepseek_429_means_too_fast_so_the_model_only_cools_down_for_a_minute(
    fake_server: Server, clock: FrozenClock
) -> None:
    server = fake_server("deepseek")
    server.script("deepseek-v4-pro", rate_limited())
    quota = QuotaTracker(clock=clock)

    first = ask_chain(server, ["deepseek-v4-pro", "deepseek-flash"], quota, provider="deepseek")
    clock.at += timedelta(seconds=61)
    later = ask_chain(server, ["deepseek-v4-pro", "deepseek-flash"], quota, provider="deepseek")

    assert (first.model, later.model) == ("deepseek-flash", "deepseek-v4-pro")


def test_skips_are_shared_by_every_agent_on_the_same_tracker(
    fake_server: Server, clock: FrozenClock
) -> None:
    server = fake_server("modelscope")
    server.script(A, rate_limited())
    quota = QuotaTracker(clock=clock)

    ask_chain(server, [A, C], quota)
    other_agent = ask_chain(server, [A, B], quota)

    assert other_agent.model == B
    assert len(server.requests_for(A)) == 1


@pytest.mark.parametrize(
    ("code", "asked_again_after_61_s"), [("limit_requests", True), ("insufficient_quota", False)]
)
def test_dashscope_429_cools_down_but_a_spent_free_quota_waits_for_the_next_day(
    fake_server: Server, clock: FrozenClock, code: str, asked_again_after_61_s: bool
) -> None:
    server = fake_server("dashscope")
    body = {"error": {"message": "You have exceeded your quota.", "type": code, "code": code}}
    server.script("qwen-max", error(429, body))
    quota = QuotaTracker(clock=clock)

    ask_chain(server, ["qwen-max", "qwen-plus"], quota, provider="dashscope")
    clock.at += timedelta(seconds=61)
    later = ask_chain(server, ["qwen-max", "qwen-plus"], quota, provider="dashscope")

    assert (later.model == "qwen-max") is asked_again_after_61_s


def test_an_unknown_model_on_a_local_server_moves_to_the_next_model(
    fake_server: Server, clock: FrozenClock
) -> None:
    server = fake_server("openai")
    missing = {"error": {"message": 'model "llama9" not found, try pulling it first'}}
    server.script("llama9", error(404, missing))

    result = ask_chain(server, ["llama9", "llama3"], QuotaTracker(clock=clock), provider="openai")

    assert result.model == "llama3"
    assert [a.outcome for a in result.attempts] == ["not_served", "ok"]


# -- the call's time budget (ChatOptions.budget_s) --------------------------------------------

# A request needs min(timeout 60 s, 10 s) = 10 s of the budget left to start (after the first).
SLOW_DEFAULTS = CallDefaults(timeout_s=60.0, max_retries=2, retry_backoff_s=0)


def test_a_budget_cuts_the_first_requests_timeout_and_starts_no_retry_after_it(
    fake_server: Server, clock: FrozenClock
) -> None:
    """Timeout 60 s and 2 retries would take 3 minutes; a 1 s budget allows one request, cut to
    1 s. The model never answers; the deadline is read on a clock that stands still, so the
    first request starts with exactly 1 s left however slow this machine is."""
    server = fake_server("modelscope")
    server.script(A, hang(), hang(), hang())

    with pytest.raises(ModelTimeoutError, match="time budget") as caught:
        ask_chain(
            server,
            [A, C],
            QuotaTracker(clock=clock),
            defaults=SLOW_DEFAULTS,
            options=ChatOptions(budget_s=1.0),
        )

    assert [(a.model, a.outcome) for a in caught.value.attempts] == [(A, "timeout")]
    assert len(server.requests_for(A)) == 1 and server.requests_for(C) == []


def test_a_retry_that_cannot_finish_within_the_budget_is_not_started(
    fake_server: Server, clock: FrozenClock
) -> None:
    """After a quick 503 a retry needs min(timeout 60 s, 10 s) = 10 s; a 9 s budget is too short."""
    server = fake_server("modelscope")
    server.script(A, server_error(503), answer(HOLD))

    with pytest.raises(ModelUnavailableError, match="not retried") as caught:
        ask_chain(
            server,
            [A],
            QuotaTracker(clock=clock),
            defaults=SLOW_DEFAULTS,
            options=ChatOptions(budget_s=9.0),
        )

    assert [a.outcome for a in caught.value.attempts] == ["server_error"]
    assert len(server.requests_for(A)) == 1

    # Without a budget the same failure is retried and answered.
    server.clear()
    server.script(A, server_error(503), answer(HOLD))
    result = ask_chain(server, [A], QuotaTracker(clock=clock), defaults=SLOW_DEFAULTS)
    assert result.text == HOLD and [a.outcome for a in result.attempts] == ["server_error", "ok"]


def test_a_fallback_model_is_not_asked_when_the_budget_left_cannot_cover_a_request(
    fake_server: Server, clock: FrozenClock
) -> None:
    """A 429 that took 52 s of a 55 s budget leaves 3 s; the next model needs 10 s.

    The 52 s pass on a fake clock the server moves as it answers, not in real time."""
    monotonic = FakeMonotonic()
    server = fake_server("modelscope", clock=monotonic)
    server.script(A, replace(rate_limited(), delay_s=52.0))
    quota = QuotaTracker(clock=clock)

    with pytest.raises(ModelTimeoutError, match=f"{C} not asked: only 3.0 s") as caught:
        ask_chain(
            server,
            [A, C],
            quota,
            defaults=SLOW_DEFAULTS,
            options=ChatOptions(budget_s=55.0),
            monotonic=monotonic,
        )

    assert isinstance(caught.value, TemporaryError)
    assert [(a.model, a.outcome) for a in caught.value.attempts] == [(A, "rate_limited")]
    assert server.requests_for(C) == []
    assert quota.skipped("modelscope", A, clock.at) is not None


def test_modelscope_per_minute_429_cools_down_with_backoff_and_does_not_bench_for_the_day(
    fake_server: Server, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    """A 429 whose headers still show quota left is "too fast": 60 s, then 120 s (backoff).

    The same body with the model's daily remainder at 0 is the day's quota: skipped until
    00:00 UTC and marked in `quota_usage`, so a restart keeps skipping it. The per-minute one
    is not marked (before the fix every ModelScope 429 benched the model for the day).
    """
    server = fake_server("modelscope")
    server.script(A, too_fast(), too_fast())
    quota = QuotaTracker(SqlQuotaLedger(session_factory), clock=clock)

    first = ask_chain(server, [A, B], quota)
    clock.at += timedelta(seconds=61)
    second = ask_chain(server, [A, B], quota)  # A asked again: too fast again, now 120 s
    clock.at += timedelta(seconds=61)
    third = ask_chain(server, [A, B], quota)  # 61 s < 120 s: A still cooling down
    clock.at += timedelta(seconds=60)
    fourth = ask_chain(server, [A, B], quota)  # 121 s: A answers, the backoff starts over

    assert [r.model for r in (first, second, third, fourth)] == [B, B, B, A]
    assert len(server.requests_for(A)) == 3
    row = quota_table(session_factory)[A]
    assert row.exhausted_at is None and row.rate_limited == 2
    assert (row.model_requests_remaining or 0) > 0

    server.script(A, rate_limited())
    clock.at += timedelta(seconds=1)
    ask_chain(server, [A, B], quota)
    clock.at += timedelta(hours=2)
    after_two_hours = ask_chain(server, [A, B], quota)
    assert after_two_hours.model == B, "the day's quota is gone: skipped until 00:00 UTC"
    assert quota_table(session_factory)[A].exhausted_at is not None
