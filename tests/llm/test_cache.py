"""The response cache: live stores, cached reuses, replay never calls and names a missing prompt."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.config import AgentConfig, LlmMode, Settings
from app.db import models
from app.errors import ConfigError, ReplayMissError
from app.llm import LlmRuntime, QwenProvider, cache_key
from app.ports import ChatMessage, ChatResult
from tests.fakes.openai_server import FakeOpenAIServer, answer, rate_limited
from tests.llm.conftest import MESSAGES, no_sleep

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
        runtime = LlmRuntime(
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


def test_live_mode_always_calls_and_stores_the_answer(
    fake_server: Server, session_factory: sessionmaker[Session]
) -> None:
    server = fake_server("modelscope")
    server.script(A, answer(HOLD), answer(HOLD))

    results = ask_agent(settings_for(server), session_factory, "live", calls=2)

    assert server.request_count == 2
    assert [r.cache_hit for r in results] == [False, False]
    (row,) = cache_rows(session_factory)
    assert (row.provider, row.model, row.model_answered, row.response_text) == (
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
        LlmRuntime(settings_for(None), cache_mode="replay")
