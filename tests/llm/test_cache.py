"""The response cache: live stores, cached reuses, replay never calls and names a missing prompt."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.config import AgentConfig, Settings
from app.db import models
from app.db.llm_rows import decompress_text
from app.domain import CallAttempt, ChatMessage, ChatResult, LlmMode, TokenUsage
from app.errors import (
    ConfigError,
    ModelTimeoutError,
    ModelUnavailableError,
    NoModelAvailableError,
    ReplayMissError,
    TemporaryError,
)
from app.llm import QwenProvider, cache_key
from tests.fakes.openai_server import FakeOpenAIServer, answer, hang, rate_limited, server_error
from tests.fakes.runtime import LlmHarness
from tests.llm.conftest import MESSAGES, no_sleep, until

Server = Callable[..., FakeOpenAIServer]
A, B = "Qwen/Qwen3-235B-A22B-Instruct-2507", "Qwen/Qwen3-32B"
HOLD = '{"BTC": {"coin": "BTC", "signal": "hold"}}'


def settings_for(server: FakeOpenAIServer | None, key: str | None = "key") -> Settings:
    base_url = server.base_url if server is not None else "http://127.0.0.1:9/v1"
    return Settings(
        modelscope={"api_key": key, "base_url": base_url},
        llm={"retry_backoff_s": 0},
    )


def ask_agent(
    settings: Settings,
    session_factory: sessionmaker[Session],
    mode: LlmMode,
    *,
    models: Sequence[str] = (A,),
    messages: tuple[ChatMessage, ...] = MESSAGES,
    calls: int = 1,
) -> list[ChatResult]:
    """Ask the agent `calls` times through one runtime in `mode`, then close it."""
    agent = AgentConfig(
        name="qwen", provider="modelscope", model=models[0], fallback_models=list(models[1:])
    )

    async def run() -> list[ChatResult]:
        runtime = LlmHarness(
            settings, session_factory=session_factory, cache_mode=mode, sleep=no_sleep
        )
        try:
            chain = runtime.chat_model(agent)
            return [await chain.complete(messages) for _ in range(calls)]
        finally:
            await runtime.aclose()

    return asyncio.run(run())


def cache_rows(session_factory: sessionmaker[Session]) -> list[models.LlmCache]:
    with session_factory() as session:
        return list(session.scalars(select(models.LlmCache)))


def stored_text(row: models.LlmCache) -> str:
    """Return the answer a cache row keeps (compressed in `response_z`, `response_text` empty)."""
    assert row.response_text == ""
    return decompress_text(row.response_z)


def test_live_mode_always_calls_and_stores_the_answer(
    fake_server: Server, session_factory: sessionmaker[Session]
) -> None:
    server = fake_server("modelscope")
    server.script(A, answer(HOLD), answer(HOLD))

    results = ask_agent(settings_for(server), session_factory, "live", calls=2)

    assert server.request_count == 2
    assert [r.cache_hit for r in results] == [False, False]
    (row,) = cache_rows(session_factory)
    assert (row.provider, row.model, row.model_answered, stored_text(row)) == (
        "modelscope",
        A,
        A,
        HOLD,
    )


def test_cached_mode_reuses_the_stored_answer_without_a_request(
    fake_server: Server, session_factory: sessionmaker[Session]
) -> None:
    server = fake_server("modelscope")
    server.script(A, answer(HOLD, reasoning="Trend is flat."))

    first, second, third = ask_agent(settings_for(server), session_factory, "cached", calls=3)

    assert server.request_count == 1
    assert (first.cache_hit, second.cache_hit, third.cache_hit) == (False, True, True)
    assert (second.text, second.reasoning, second.model) == (HOLD, "Trend is flat.", A)
    assert second.usage == first.usage and second.attempts == ()
    (row,) = cache_rows(session_factory)
    assert row.hits == 2  # counted in memory, written when the runtime closed


def test_replay_mode_answers_from_the_cache_with_no_request_and_no_key(
    fake_server: Server, session_factory: sessionmaker[Session]
) -> None:
    server = fake_server("modelscope")
    ask_agent(settings_for(server), session_factory, "live")
    server.clear()

    (result,) = ask_agent(settings_for(None, key=None), session_factory, "replay")

    assert result.cache_hit and result.text
    assert server.request_count == 0


def test_replay_miss_names_the_agent_models_prompt_hash_and_first_line(
    session_factory: sessionmaker[Session],
) -> None:
    with pytest.raises(ReplayMissError) as caught:
        ask_agent(settings_for(None, key=None), session_factory, "replay", models=(A, B))

    message = str(caught.value)
    assert isinstance(caught.value, ConfigError)
    assert "agent qwen" in message and A in message and B in message
    assert "prompt hash" in message and "BTC is at 100000" in message
    assert "--llm-mode cached" in message


def test_cached_mode_finds_the_answer_a_fallback_model_gave(
    fake_server: Server, session_factory: sessionmaker[Session]
) -> None:
    server = fake_server("modelscope")
    server.script(A, rate_limited())
    server.script(B, answer(HOLD))
    ask_agent(settings_for(server), session_factory, "live", models=(A, B))
    server.clear()

    (result,) = ask_agent(settings_for(server), session_factory, "cached", models=(A, B))

    assert (result.cache_hit, result.model) == (True, B)
    assert server.request_count == 0


def test_cache_key_changes_with_what_changes_the_answer_only() -> None:
    model = QwenProvider("key", A)
    base = model.prepare(MESSAGES)

    def key(**changes: object) -> str:
        return cache_key("modelscope", replace(base, **changes))

    assert key() == cache_key("modelscope", model.prepare(MESSAGES))
    assert key(model=B) != key()
    assert key(temperature=0.1) != key()
    assert key(messages=(*base.messages, {"role": "user", "content": "again"})) != key()
    assert cache_key("deepseek", base) != key()
    assert key(stream=True, timeout_s=5.0, stream_usage=True) == key()


def test_cache_and_replay_modes_need_a_database() -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        LlmHarness(settings_for(None), cache_mode="replay")


# -- failure markers ------------------------------------------------------------------------------


def prompt(price: int) -> tuple[ChatMessage, ...]:
    """Return a prompt that differs from the others by its BTC price."""
    return (MESSAGES[0], ChatMessage("user", f"BTC is at {price}. Decide as json."))


PROMPTS = (prompt(100_000), prompt(101_000), prompt(102_000))


def ask_prompts(
    settings: Settings,
    session_factory: sessionmaker[Session],
    mode: LlmMode,
    prompts: Sequence[tuple[ChatMessage, ...]] = PROMPTS,
) -> list[ChatResult | BaseException]:
    """Ask the agent each prompt in turn through one runtime; failures are returned."""
    agent = AgentConfig(name="qwen", provider="modelscope", model=A)

    async def run() -> list[ChatResult | BaseException]:
        runtime = LlmHarness(
            settings, session_factory=session_factory, cache_mode=mode, sleep=no_sleep
        )
        chain = runtime.chat_model(agent)
        outcomes: list[ChatResult | BaseException] = []
        try:
            for messages in prompts:
                try:
                    outcomes.append(await chain.complete(messages))
                except TemporaryError as error:
                    outcomes.append(error)
        finally:
            await runtime.aclose()
        return outcomes

    return asyncio.run(run())


def test_a_failed_call_of_a_cached_run_replays_as_the_same_temporary_error_without_a_request(
    fake_server: Server, session_factory: sessionmaker[Session]
) -> None:
    """The second prompt gets a 503 three times (2 retries) in the cached run; the agent held."""
    server = fake_server("modelscope")
    server.script(A, answer(HOLD), *[server_error(503)] * 3, answer(HOLD))

    recorded = ask_prompts(settings_for(server), session_factory, "cached")

    assert isinstance(recorded[1], ModelUnavailableError)
    assert server.request_count == 5
    (marker,) = [row for row in cache_rows(session_factory) if row.response_z is None]
    assert (marker.finish_reason, marker.model, marker.model_answered) == (
        "error:unavailable",
        A,
        None,
    )
    assert marker.usage is not None and "503" in marker.usage["error"]
    server.clear()

    first, failed, third = ask_prompts(settings_for(None, key=None), session_factory, "replay")

    assert server.request_count == 0
    assert isinstance(first, ChatResult) and first.cache_hit and first.text == HOLD
    assert isinstance(third, ChatResult) and third.cache_hit
    assert isinstance(failed, ModelUnavailableError) and not isinstance(failed, ConfigError)
    assert "recorded run got no answer for agent qwen" in str(failed)
    assert "Server Overloaded" in str(failed)
    # No request: one attempt naming the recorded model, kept as a cache hit (`llm_call` row).
    assert [(a.model, a.outcome) for a in failed.attempts] == [(A, "replayed_failure")]


def test_cached_mode_asks_again_after_a_failure_and_replaces_its_marker_with_the_answer(
    fake_server: Server, session_factory: sessionmaker[Session]
) -> None:
    server = fake_server("modelscope")
    server.script(A, *[server_error(503)] * 3)
    (failed,) = ask_prompts(settings_for(server), session_factory, "cached", PROMPTS[:1])
    assert isinstance(failed, ModelUnavailableError)

    (answered,) = ask_prompts(settings_for(server), session_factory, "cached", PROMPTS[:1])
    (replayed,) = ask_prompts(settings_for(None, key=None), session_factory, "replay", PROMPTS[:1])

    assert isinstance(answered, ChatResult) and not answered.cache_hit
    assert server.request_count == 4
    (row,) = cache_rows(session_factory)
    assert (stored_text(row), row.finish_reason) == (answered.text, "stop")
    assert isinstance(replayed, ChatResult) and replayed.text == answered.text


def test_a_chain_with_every_model_skipped_replays_as_skipped(
    fake_server: Server, session_factory: sessionmaker[Session]
) -> None:
    server = fake_server("modelscope")
    server.script(A, rate_limited())
    (skipped,) = ask_prompts(settings_for(server), session_factory, "cached", PROMPTS[:1])
    server.clear()

    (replayed,) = ask_prompts(settings_for(None, key=None), session_factory, "replay", PROMPTS[:1])

    assert isinstance(skipped, NoModelAvailableError)
    assert isinstance(replayed, NoModelAvailableError) and "replay" in str(replayed)
    assert server.request_count == 0


def test_a_cancelled_call_counts_its_requests_in_quota_and_replays_as_a_timeout(
    fake_server: Server, session_factory: sessionmaker[Session]
) -> None:
    """A 503, then a retry still waiting when the caller gives up: both spent quota.

    The retry is never answered; the caller cancels once the server holds it."""
    server = fake_server("modelscope")
    server.script(A, server_error(503), hang())
    agent = AgentConfig(name="qwen", provider="modelscope", model=A)

    async def cancelled() -> tuple[CallAttempt, ...]:
        runtime = LlmHarness(
            settings_for(server),
            session_factory=session_factory,
            cache_mode="cached",
            sleep=no_sleep,
        )
        chain = runtime.chat_model(agent)
        journal: list[CallAttempt] = []
        try:
            asking = asyncio.ensure_future(chain.complete(MESSAGES, journal=journal))
            await until(lambda: server.request_count == 2)
            asking.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asking
            return tuple(journal)
        finally:
            await runtime.aclose()

    attempts = asyncio.run(cancelled())

    assert [(a.model, a.outcome) for a in attempts] == [(A, "server_error"), (A, "cancelled")]
    with session_factory() as session:
        (row,) = session.scalars(select(models.QuotaUsage))
        assert (row.model, row.calls, row.successes, row.failures) == (A, 2, 0, 2)
    (marker,) = cache_rows(session_factory)
    assert marker.finish_reason == "error:cancelled"
    server.clear()

    with pytest.raises(ModelTimeoutError, match="cancelled"):
        ask_agent(settings_for(None, key=None), session_factory, "replay")
    assert server.request_count == 0


def test_lookups_on_the_kept_connection_read_as_the_pool_does_and_see_later_writes(
    session_factory: sessionmaker[Session],
) -> None:
    """The event loop's lookups keep one connection in autocommit; another thread's use the pool.

    Both read an answer and a failure marker alike; a row written after the kept connection's
    first read is found by its next one; `close()` gives the connection back to the pool.
    """
    from concurrent.futures import ThreadPoolExecutor

    from app.db.answer_cache import ResponseCache
    from app.domain import RecordedFailure

    engine = session_factory.kw["bind"]
    cache = ResponseCache(session_factory)
    answered = ChatResult(
        text=HOLD,
        provider="modelscope",
        model=A,
        reasoning="flat",
        finish_reason="stop",
        usage=TokenUsage(prompt_tokens=120, completion_tokens=30, total_tokens=150),
    )
    failure = RecordedFailure(
        kind="timeout", message="no answer in 120 s", provider="modelscope", model=A
    )
    assert cache.lookup("answer") is None  # the kept connection's first read: nothing yet
    cache.save("answer", model=A, answer=answered)  # written by another connection
    cache.save_failure("marker", failure, latency_s=120.0)

    def both(key: str) -> object:
        found = cache.lookup(key)
        return replace(found, latency_s=0.0) if isinstance(found, ChatResult) else found

    here = [both(key) for key in ("answer", "marker", "absent")]
    with ThreadPoolExecutor(max_workers=1) as pool:
        elsewhere = list(pool.map(both, ("answer", "marker", "absent")))

    expected = replace(answered, latency_s=0.0, cache_hit=True)
    assert here == elsewhere == [expected, failure, None]
    assert engine.pool.checkedout() == 1, "the event loop's connection is kept between lookups"
    cache.close()
    assert engine.pool.checkedout() == 0


def test_a_kept_connection_that_broke_is_replaced_and_the_lookup_still_answers(
    session_factory: sessionmaker[Session],
) -> None:
    """A dropped connection (a server restart, an idle timeout) costs no lookup: the pool reads."""
    from app.db.answer_cache import ResponseCache

    engine = session_factory.kw["bind"]
    cache = ResponseCache(session_factory)
    cache.save("answer", model=A, answer=ChatResult(text=HOLD, provider="modelscope", model=A))
    assert isinstance(cache.lookup("answer"), ChatResult)
    reader = cache._reader
    assert reader is not None and reader.connection is not None
    dbapi_connection = reader.connection.connection.dbapi_connection
    assert dbapi_connection is not None
    dbapi_connection.close()  # what a dropped connection does to the next read

    found = cache.lookup("answer")

    assert isinstance(found, ChatResult) and found.text == HOLD
    assert isinstance(cache.lookup("answer"), ChatResult), "a new connection is kept"
    assert reader.connection is not None
    cache.close()
    assert engine.pool.checkedout() == 0
