"""Complexity routing: the score-to-tier map, the heuristic, the LLM scorer, and the fallbacks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from app.domain import ChatMessage
from app.llm.complexity import HeuristicScorer, heuristic_score, pick_tier, tier_for_score
from app.llm.fallback import FallbackChain
from app.llm.openai_compat import CallDefaults, ClientPool
from app.llm.providers import make_provider
from tests.fakes.openai_server import FakeOpenAIServer, answer, server_error
from tests.gateway.conftest import TIERS, Gateway

T1, T2, T3 = TIERS


@pytest.mark.parametrize(
    ("score", "tier"),
    [(1, 4), (3, 4), (4, 3), (5, 3), (6, 2), (7, 2), (8, 1), (10, 1)],
)
def test_scores_map_to_tiers_at_every_boundary(score: int, tier: int) -> None:
    """The seed's map: 1-3 -> 4, 4-5 -> 3, 6-7 -> 2, 8-10 -> 1."""
    assert tier_for_score(score) == tier


@pytest.mark.parametrize("score", [0, 11, -1])
def test_a_score_outside_1_to_10_is_refused(score: int) -> None:
    with pytest.raises(ValueError, match="1-10"):
        tier_for_score(score)


def test_the_heuristic_scores_by_length_reasoning_code_and_turns() -> None:
    """ "hi": 1. 1,000 characters: 1 + 2 steps = 3. Prove + analyse + a code block + 8 turns at
    12,000 characters: 1 + 4 + 2 + 1 + 1 = 9."""
    assert heuristic_score([ChatMessage("user", "hi")]) == 1
    assert heuristic_score([ChatMessage("user", "a" * 1_000)]) == 3
    hard = [ChatMessage("user", "prove it, then analyse ```code``` " + "b" * 12_000)] * 8
    assert heuristic_score(hard) == 9
    assert asyncio.run(HeuristicScorer().score(hard)) == 9


class _Broken:
    async def score(self, messages: Sequence[ChatMessage]) -> int:
        raise RuntimeError("scorer down")


class _Silly:
    async def score(self, messages: Sequence[ChatMessage]) -> int:
        return 42


@pytest.mark.parametrize("scorer", [_Broken(), _Silly()])
def test_a_failing_scorer_gives_the_default_tier(scorer: Any) -> None:
    choice = asyncio.run(pick_tier(scorer, [ChatMessage("user", "hi")], default_tier=2))
    assert (choice.tier, choice.score) == (2, None)
    assert choice.error


def _llm_scorer(server: FakeOpenAIServer) -> Any:
    from app.llm.complexity import LlmScorer

    model = make_provider(
        "openai",
        model="qwen2.5:1.5b",
        api_key=None,
        base_url=server.base_url,
        defaults=CallDefaults(max_retries=0),
        clients=ClientPool(),
    )
    return LlmScorer(FallbackChain([model]), timeout_s=10)


def test_the_llm_scorer_reads_the_models_number_and_falls_back_on_nonsense(
    fake_openai: Callable[..., FakeOpenAIServer],
) -> None:
    """ "7" -> tier 2; "Score: 9/10" -> 9 -> tier 1; prose -> default; a 503 -> default."""
    server = fake_openai("openai")
    server.script("qwen2.5:1.5b", answer("7"), answer("Score: 9/10"), answer("quite hard"))
    server.script("qwen2.5:1.5b", server_error(503))
    scorer = _llm_scorer(server)
    messages = [ChatMessage("user", "Design a lock-free queue")]

    async def picks() -> list[tuple[int, int | None]]:
        found = []
        for _ in range(4):
            choice = await pick_tier(scorer, messages, default_tier=1)
            found.append((choice.tier, choice.score))
        return found

    assert asyncio.run(picks()) == [(2, 7), (1, 9), (1, None), (1, None)]
    asked = server.requests_for("qwen2.5:1.5b")[0].body
    assert "Design a lock-free queue" in asked["messages"][0]["content"]


def test_the_gateway_starts_simple_requests_on_the_light_tier_and_obeys_the_override(
    start_gateway: Callable[..., Gateway],
) -> None:
    """Heuristic routing: "hi" scores 1 -> tier 4, which the pool lacks, so the lighter-first
    order gives tier 3; the tier header forces tier 1."""
    gateway = start_gateway(gateway={"routing": "heuristic"})
    client = gateway.client()
    hello: Any = [{"role": "user", "content": "hi"}]
    simple = client.chat.completions.create(model="pool", messages=hello)
    assert simple.model == T3
    assert simple.model_extra["gateway"]["complexity_score"] == 1  # type: ignore[index]
    forced = client.chat.completions.create(
        model="pool", messages=hello, extra_headers={"x-gateway-tier": "1"}
    )
    assert forced.model == T1
