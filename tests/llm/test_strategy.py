"""`LLMStrategy`: prompt in, parsed decisions out, through the fallback chain and the cache."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.config import AgentConfig, Settings
from app.domain import AccountView, CallAttempt, ChatMessage, CoinSnapshot, MarketSnapshot
from app.errors import ConfigError, ModelAuthError, ModelTimeoutError, ReplayMissError
from app.llm import LLMStrategy
from app.ports import DecisionRequest, ReportsAttempts, Strategy, StrategyAnswer
from tests.fakes.clock import FakeMonotonic
from tests.fakes.openai_server import (
    FakeOpenAIServer,
    answer,
    hang,
    rate_limited,
    server_error,
    unauthorized,
)
from tests.fakes.runtime import LlmHarness
from tests.llm.conftest import no_sleep, until

Server = Callable[..., FakeOpenAIServer]
AT = datetime(2026, 3, 14, 10, 0, tzinfo=UTC)


def request_for(prices: dict[str, float]) -> DecisionRequest:
    """Return a decision request whose user message states the prices."""
    empty = pd.DataFrame(columns=["open", "high", "low", "close", "volume"])
    coins = {
        coin: CoinSnapshot(
            coin=coin, symbol=f"{coin}/USDC:USDC", last_price=price, intraday=empty, context=empty
        )
        for coin, price in prices.items()
    }
    snapshot = MarketSnapshot(at=AT, intraday_timeframe="3m", context_timeframe="4h", coins=coins)
    account = AccountView(
        at=AT,
        starting_cash_usd=10_000.0,
        cash_usd=10_000.0,
        margin_usd=0.0,
        unrealized_pnl_usd=0.0,
        realized_pnl_usd=0.0,
        fees_paid_usd=0.0,
        funding_paid_usd=0.0,
        positions={},
    )
    lines = ", ".join(f"{coin} price = {price}" for coin, price in prices.items())
    messages = (
        ChatMessage("system", "Answer with one JSON object keyed by coin."),
        ChatMessage("user", f"It is {AT.isoformat()}. {lines}. Decide."),
    )
    return DecisionRequest(
        at=AT, snapshot=snapshot, account=account, coins=tuple(prices), messages=messages
    )


def decide(
    settings: Settings,
    agents: list[AgentConfig],
    request: DecisionRequest,
    session_factory: sessionmaker[Session] | None = None,
    mode: str | None = None,
) -> list[StrategyAnswer | BaseException]:
    """Ask every agent concurrently through one runtime; failures are returned, not raised."""

    async def run() -> list[StrategyAnswer | BaseException]:
        runtime = LlmHarness(
            settings,
            session_factory=session_factory,
            cache_mode=mode,  # type: ignore[arg-type]
            sleep=no_sleep,
            # Budgets are read on a clock that stands still: no verdict races the machine.
            monotonic=FakeMonotonic(),
        )
        try:
            strategies = [runtime.strategy(agent) for agent in agents]
            return await asyncio.gather(
                *(s.decide(request) for s in strategies), return_exceptions=True
            )
        finally:
            await runtime.aclose()

    return asyncio.run(run())


def settings_for(server: FakeOpenAIServer) -> Settings:
    return Settings(
        modelscope={"api_key": "key", "base_url": server.base_url}, llm={"retry_backoff_s": 0}
    )


def contrarian_and_follower(body: dict[str, Any]) -> str:
    """Two fake agents: each reads the BTC price from its prompt and answers its own way."""
    prompt = body["messages"][-1]["content"]
    price = float(re.search(r"BTC price = (\d+(?:\.\d+)?)", prompt).group(1))  # type: ignore[union-attr]
    buy = body["model"] == "Qwen/Follower"
    decision = {
        "coin": "BTC",
        "signal": "buy_to_enter" if buy else "sell_to_enter",
        "quantity": 0.01,
        "leverage": 5,
        "profit_target": round(price * (1.02 if buy else 0.98), 2),
        "stop_loss": round(price * (0.99 if buy else 1.01), 2),
        "invalidation_condition": "price crosses the stop",
        "confidence": 0.6,
        "risk_usd": 10.0,
        "justification": f"saw {price}",
    }
    return "<think>quick look</think>\n```json\n" + json.dumps({"BTC": decision}) + "\n```"


def test_two_agents_answer_with_decisions_computed_from_their_prompt(
    fake_server: Server,
) -> None:
    server = fake_server("modelscope", responder=contrarian_and_follower)
    agents = [
        AgentConfig(name="follower", provider="modelscope", model="Qwen/Follower"),
        AgentConfig(name="contrarian", provider="modelscope", model="Qwen/Contrarian"),
    ]

    follower, contrarian = decide(settings_for(server), agents, request_for({"BTC": 100_000.0}))

    assert isinstance(follower, StrategyAnswer) and isinstance(contrarian, StrategyAnswer)
    (buy,) = follower.decisions
    (sell,) = contrarian.decisions
    assert (buy.signal, buy.profit_target, buy.stop_loss) == ("buy_to_enter", 102_000.0, 99_000.0)
    assert (sell.signal, sell.stop_loss) == ("sell_to_enter", 101_000.0)
    assert follower.chat is not None and follower.chat.model == "Qwen/Follower"
    assert [a.outcome for a in follower.attempts] == ["ok"]
    assert follower.parse_error is None


def test_an_answer_that_cannot_be_parsed_is_a_parse_error_not_an_exception(
    fake_server: Server,
) -> None:
    server = fake_server("modelscope")
    server.script("Qwen/A", answer("I would rather not trade today."))
    agent = AgentConfig(name="qwen", provider="modelscope", model="Qwen/A")

    (result,) = decide(settings_for(server), [agent], request_for({"BTC": 100_000.0}))

    assert isinstance(result, StrategyAnswer)
    assert result.decisions == ()
    assert result.parse_error and "JSON" in result.parse_error
    assert result.chat is not None and result.chat.text == "I would rather not trade today."


def test_the_answer_records_the_fallback_model_and_every_attempt(fake_server: Server) -> None:
    server = fake_server("modelscope")
    server.script("Qwen/A", rate_limited())
    agent = AgentConfig(
        name="qwen", provider="modelscope", model="Qwen/A", fallback_models=["Qwen/B"]
    )

    (result,) = decide(settings_for(server), [agent], request_for({"BTC": 100_000.0}))

    assert isinstance(result, StrategyAnswer) and result.chat is not None
    assert result.chat.model == "Qwen/B"
    assert [(a.model, a.outcome) for a in result.attempts] == [
        ("Qwen/A", "rate_limited"),
        ("Qwen/B", "ok"),
    ]


def test_no_answer_raises_an_app_error_carrying_the_attempts(fake_server: Server) -> None:
    server = fake_server("modelscope")
    server.script("Qwen/A", unauthorized())
    agents = [
        AgentConfig(name="bad", provider="modelscope", model="Qwen/A"),
        AgentConfig(name="good", provider="modelscope", model="Qwen/B"),
    ]

    bad, good = decide(settings_for(server), agents, request_for({"BTC": 100_000.0}))

    # One agent's failure never touches another's answer.
    assert isinstance(bad, ModelAuthError) and isinstance(bad, ConfigError)
    assert [a.outcome for a in bad.attempts] == ["auth_error"]
    assert isinstance(good, StrategyAnswer) and good.decisions


def test_a_replay_miss_says_which_cycle_it_was(session_factory: sessionmaker[Session]) -> None:
    settings = Settings(modelscope={"base_url": "http://127.0.0.1:9/v1"})
    agent = AgentConfig(name="qwen", provider="modelscope", model="Qwen/A")

    (result,) = decide(settings, [agent], request_for({"BTC": 1.0}), session_factory, mode="replay")

    assert isinstance(result, ReplayMissError)
    assert "cycle at 2026-03-14T10:00:00+00:00" in str(result)


def test_llm_strategy_is_a_strategy_that_reads_the_prompt() -> None:
    strategy = LLMStrategy("qwen", chat_model=object())  # type: ignore[arg-type]

    assert isinstance(strategy, Strategy)
    assert strategy.uses_prompt is True and strategy.name == "qwen"


def test_the_runtime_builds_chains_from_settings_and_refuses_baselines() -> None:
    settings = Settings(
        modelscope={"api_key": "key"},
        deepseek={"api_key": "key"},
        agents=[
            "qwen=modelscope:Qwen/A|Qwen/B|Qwen/C",
            "ds=deepseek:deepseek-flash",
            "hodl=baseline:buy_and_hold",
        ],
    )
    runtime = LlmHarness(settings)
    qwen, ds, hodl = settings.agents

    chain = runtime.chat_model(qwen)

    assert [m.model for m in chain.models] == ["Qwen/A", "Qwen/B", "Qwen/C"]
    assert len({id(m._client) for m in chain.models}) == 1
    assert runtime.strategy(ds).chat_model.provider == "deepseek"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="baseline"):
        runtime.chat_model(hodl)
    with pytest.raises(ConfigError, match="DASHSCOPE_API_KEY"):
        runtime.chat_model(AgentConfig(name="q", provider="dashscope", model="qwq-plus"))


def test_a_decide_cancelled_by_the_engine_still_reports_the_requests_it_made(
    fake_server: Server,
) -> None:
    """The engine's timeout cancels a retry in flight: the 503 and the cancelled retry remain.

    The retry is never answered; the call is cancelled once the server holds it."""
    server = fake_server("modelscope")
    server.script("Qwen/A", server_error(503), hang())
    agent = AgentConfig(name="qwen", provider="modelscope", model="Qwen/A")
    request = request_for({"BTC": 100_000.0})

    async def run() -> tuple[LLMStrategy, tuple[CallAttempt, ...], tuple[CallAttempt, ...]]:
        runtime = LlmHarness(settings_for(server), sleep=no_sleep)
        strategy = runtime.strategy(agent)
        try:
            deciding = asyncio.ensure_future(strategy.decide(request))
            await until(lambda: server.request_count == 2)
            deciding.cancel()
            with pytest.raises(asyncio.CancelledError):
                await deciding
            return (
                strategy,
                strategy.attempts_made(request),
                strategy.attempts_made(replace(request)),
            )
        finally:
            await runtime.aclose()

    strategy, made, other = asyncio.run(run())

    assert isinstance(strategy, ReportsAttempts)
    assert [a.outcome for a in made] == ["server_error", "cancelled"]
    assert made[1].error and "cancelled" in made[1].error
    assert other == ()


def test_the_decision_requests_budget_bounds_the_model_call(fake_server: Server) -> None:
    """LLM_TIMEOUT_S 5 s with 2 retries, but the engine gives the agent 1 s: one cut request.

    The model never answers; the budget is read on a clock that stands still (see `decide`)."""
    server = fake_server("modelscope")
    server.script("Qwen/A", hang(), hang(), hang())
    settings = Settings(
        modelscope={"api_key": "key", "base_url": server.base_url},
        llm={"retry_backoff_s": 0, "timeout_s": 5},
    )
    agent = AgentConfig(name="qwen", provider="modelscope", model="Qwen/A")
    request = replace(request_for({"BTC": 100_000.0}), budget_s=1.0)

    (result,) = decide(settings, [agent], request)

    assert isinstance(result, ModelTimeoutError) and "time budget" in str(result)
    assert [a.outcome for a in result.attempts] == ["timeout"]
    assert server.request_count == 1
