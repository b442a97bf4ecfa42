"""The arena's agents and the gateway share one quota: the same rules, the same `quota_usage` rows.

Each side has its own quota tracker, as two processes would; they meet in the database only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx2

from app.db.session import Database
from app.domain import ChatMessage
from app.llm.quota import DEFAULT_REFRESH_S
from app.wiring import build_chat_model, build_llm_runtime
from tests.fakes.openai_server import FakeOpenAIServer, rate_limited
from tests.gateway.conftest import TIERS, FrozenClock, Gateway, make_settings

T1, T2, T3 = TIERS
MESSAGES = [ChatMessage("user", "BTC is at 100000. Decide as json.")]


def test_an_agent_on_the_pool_and_a_gateway_client_skip_what_the_other_spent(
    upstream: FakeOpenAIServer,
    start_gateway: Callable[..., Gateway],
    database: Database,
    clock: FrozenClock,
    db_url: str,
) -> None:
    """The agent finds tier 1 out: the gateway skips it; the gateway finds tier 2 out: so does
    the agent (once each has read the ledger again, `DEFAULT_REFRESH_S` later).

    Requests: tier 1: gateway answer + agent's 429 = 2; tier 2: agent answer + gateway answer +
    gateway's 429 = 3; tier 3: gateway answer + agent answer = 2. Nobody asks a model twice
    after it ran out.
    """
    settings = make_settings(upstream, db_url)
    gateway = start_gateway()
    client = gateway.client()
    runtime = build_llm_runtime(settings, database=database, clock=clock)
    agent = build_chat_model(settings.agents[0], settings, runtime)

    def ask_gateway() -> str:
        hello: list[Any] = [{"role": "user", "content": "hi"}]
        return client.chat.completions.create(model="pool", messages=hello).model

    async def scenario() -> None:
        try:
            assert await asyncio.to_thread(ask_gateway) == T1
            upstream.script(T1, rate_limited())
            assert (await agent.complete(MESSAGES)).model == T2
            clock.at += timedelta(seconds=DEFAULT_REFRESH_S)
            assert await asyncio.to_thread(ask_gateway) == T2
            assert len(upstream.requests_for(T1)) == 2

            upstream.script(T2, rate_limited())
            assert await asyncio.to_thread(ask_gateway) == T3
            clock.at += timedelta(seconds=DEFAULT_REFRESH_S)
            assert (await agent.complete(MESSAGES)).model == T3
        finally:
            await runtime.clients.aclose()

    asyncio.run(scenario())
    assert [len(upstream.requests_for(m)) for m in TIERS] == [2, 3, 2]

    status = httpx2.get(f"{gateway.url}/status").json()
    calls = {row["model"]: row["calls_today"] for row in status["pools"][0]["models"]}
    assert calls == {T1: 2, T2: 3, T3: 2}
    assert status["pools"][0]["models"][0]["arena_agents_first"] == 1
