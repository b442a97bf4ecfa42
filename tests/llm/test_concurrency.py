"""Six agents asked at once overlap fully: every request is in flight before any is answered."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from app.config import AgentConfig, Settings
from app.domain import ChatResult
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.runtime import LlmHarness
from tests.llm.conftest import MESSAGES

Server = Callable[..., FakeOpenAIServer]
AGENTS = 6


def test_six_agents_share_one_client_and_are_all_in_flight_together(fake_server: Server) -> None:
    # The fake answers only once all six requests are waiting at the barrier; calls made one
    # after another would break it (and the answers would be 500s).
    barrier = threading.Barrier(AGENTS, timeout=10)

    def together(body: dict[str, Any]) -> str:
        barrier.wait()
        return '{"BTC": {"coin": "BTC", "signal": "hold"}}'

    server = fake_server("modelscope", responder=together)
    settings = Settings(
        modelscope={"api_key": "key", "base_url": server.base_url}, llm={"max_retries": 0}
    )
    agents = [
        AgentConfig(name=f"agent{i}", provider="modelscope", model=f"Qwen/M{i}")
        for i in range(AGENTS)
    ]

    async def run() -> tuple[list[ChatResult], int]:
        runtime = LlmHarness(settings)
        try:
            chains = [runtime.chat_model(agent) for agent in agents]
            results = await asyncio.gather(*(chain.complete(MESSAGES) for chain in chains))
            return list(results), len(runtime.clients._clients)
        finally:
            await runtime.aclose()

    results, clients = asyncio.run(run())

    assert [r.model for r in results] == [f"Qwen/M{i}" for i in range(AGENTS)]
    assert clients == 1
    assert not barrier.broken
