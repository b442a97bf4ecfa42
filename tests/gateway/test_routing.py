"""The gateway end to end: the real `openai` SDK as its client, a fake ModelScope upstream.

The pool lists three models, one per tier (1 strongest). Tier 1 answers 429 "Request limit
exceeded.", tier 2 a 429 whose rate-limit headers say 0 calls left, tier 3 answers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx2
import openai
import pytest

from app.errors import ConfigError
from tests.fakes.openai_server import (
    DEFAULT_CONTENT,
    FakeOpenAIServer,
    answer,
    error,
    rate_limited,
    unauthorized,
)
from tests.gateway.conftest import TIERS, Gateway, make_settings, pool_models

T1, T2, T3 = TIERS
MESSAGES: list[Any] = [{"role": "user", "content": "BTC is at 100000. Decide as json."}]
SPENT_HEADERS = {
    "modelscope-ratelimit-requests-limit": "2000",
    "modelscope-ratelimit-requests-remaining": "1500",
    "modelscope-ratelimit-model-requests-limit": "500",
    "modelscope-ratelimit-model-requests-remaining": "0",
}
APP_CAP = {
    "error": {
        "code": "too_many_requests",
        "message": "AppId:**wP34 达到使用量上限",
        "type": "rate_limit_error",
    },
    "request_id": "7c1e9c56-0000-4000-8000-000000000000",
}


def _status(gateway: Gateway) -> dict[str, Any]:
    return dict(httpx2.get(f"{gateway.url}/status").json())


def _row(status: dict[str, Any], model: str) -> dict[str, Any]:
    rows = [row for pool in status["pools"] for row in pool["models"] if row["model"] == model]
    return rows[0]


def _stream_text(gateway: Gateway) -> tuple[str, str, str, list[Any]]:
    client = gateway.client()
    raw = client.chat.completions.with_raw_response.create(
        model="pool:default",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasoning = "".join(
        getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices
    )
    return raw.headers["x-gateway-model"], text, reasoning, chunks


def test_pool_falls_through_tiers_then_goes_straight_to_the_one_left(
    upstream: FakeOpenAIServer, start_gateway: Callable[..., Gateway]
) -> None:
    """429 on tier 1, 0 left on tier 2: tier 3 answers, and the next request asks only it."""
    upstream.script(T1, rate_limited())
    upstream.script(T2, error(429, APP_CAP, headers=SPENT_HEADERS))
    upstream.script(T3, answer(DEFAULT_CONTENT), answer("{}", reasoning="Check the trend."))
    gateway = start_gateway()

    raw = gateway.client().chat.completions.with_raw_response.create(
        model="pool:default", messages=MESSAGES
    )
    completion = raw.parse()
    assert raw.headers["x-gateway-model"] == T3
    assert raw.headers["x-gateway-passed-over"] == f"{T1}, {T2}"
    assert completion.model == T3
    assert completion.choices[0].message.content == DEFAULT_CONTENT
    assert completion.usage is not None and completion.usage.total_tokens > 0
    passed = [p["model"] for p in completion.model_extra["gateway"]["passed_over"]]  # type: ignore[index]
    assert passed == [T1, T2]
    assert [len(upstream.requests_for(m)) for m in TIERS] == [1, 1, 1]

    served, text, reasoning, chunks = _stream_text(gateway)
    assert served == T3
    assert (text, reasoning) == ("{}", "Check the trend.")
    assert all(c.model == T3 for c in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    assert [len(upstream.requests_for(m)) for m in TIERS] == [1, 1, 2]

    status = _status(gateway)
    tomorrow = "2026-03-15T00:00:00+00:00"
    assert [_row(status, m)["back_at"] for m in TIERS] == [tomorrow, tomorrow, None]
    assert [_row(status, m)["calls_today"] for m in TIERS] == [1, 1, 2]
    assert _row(status, T2)["model_requests_remaining"] == 0
    assert status["total_calls_today"] == 4
    models = httpx2.get(f"{gateway.url}/v1/models").json()["data"]
    by_id = {m["id"]: m for m in models}
    assert by_id["pool:default"]["models"] == [T1, T2, T3]
    assert by_id[T1]["skipped_until"] == tomorrow
    assert (by_id[T2]["tier"], by_id[T2]["calls_today"], by_id[T2]["remaining"]) == (2, 1, 0)
    assert by_id[T3]["skipped_until"] is None


def test_the_strongest_tier_is_used_again_after_the_quota_day_rolls_over(
    upstream: FakeOpenAIServer, start_gateway: Callable[..., Gateway]
) -> None:
    """Skips last until 00:00 UTC: at 00:01 the next day tier 1 answers again."""
    upstream.script(T1, rate_limited())
    upstream.script(T2, rate_limited())
    gateway = start_gateway()
    client = gateway.client()
    first = client.chat.completions.create(model="pool:default", messages=MESSAGES)
    assert first.model == T3

    gateway.clock.at = datetime(2026, 3, 15, 0, 1, tzinfo=UTC)
    second = client.chat.completions.create(model="pool:default", messages=MESSAGES)
    assert second.model == T1
    assert _status(gateway)["day"] == "2026-03-15"


def test_reload_disables_a_model_from_the_next_request_and_refuses_bad_settings(
    upstream: FakeOpenAIServer, start_gateway: Callable[..., Gateway], db_url: str
) -> None:
    """A reload with tier 1 disabled sends the next request to tier 2; a bad one keeps both."""
    gateway = start_gateway()
    client = gateway.client()
    assert client.chat.completions.create(model="pool:default", messages=MESSAGES).model == T1

    gateway.next_settings.append(ConfigError("Invalid setting POOLS: tier must be 1-4"))
    refused = httpx2.post(f"{gateway.url}/reload")
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "invalid_settings"
    assert "tier must be 1-4" in refused.json()["error"]["message"]
    assert client.chat.completions.create(model="pool:default", messages=MESSAGES).model == T1

    disabled = make_settings(
        upstream, db_url, pools=[{"name": "default", "models": pool_models(disabled=(T1,))}]
    )
    gateway.next_settings.append(disabled)
    reloaded = httpx2.post(f"{gateway.url}/reload")
    assert reloaded.status_code == 200
    assert [m["enabled"] for m in reloaded.json()["pools"]["default"]] == [False, True, True]
    assert client.chat.completions.create(model="pool:default", messages=MESSAGES).model == T2
    assert len(upstream.requests_for(T1)) == 2
    with pytest.raises(openai.NotFoundError, match="disabled"):
        client.chat.completions.create(model=T1, messages=MESSAGES)


def test_a_401_on_one_model_moves_on_and_is_reported(
    upstream: FakeOpenAIServer, start_gateway: Callable[..., Gateway]
) -> None:
    """Tier 1 refuses the key: tier 2 answers, the answer and /status say why tier 1 did not."""
    upstream.script(T1, unauthorized())
    gateway = start_gateway()
    completion = gateway.client().chat.completions.create(model="pool:default", messages=MESSAGES)
    assert completion.model == T2
    passed = completion.model_extra["gateway"]["passed_over"]  # type: ignore[index]
    assert [p["model"] for p in passed] == [T1]
    assert "refused the API key (401" in passed[0]["reason"]
    row = _row(_status(gateway), T1)
    assert row["last_status"] == "401 auth_error"
    assert row["skipped"] is False


def test_a_concrete_model_is_asked_alone_and_every_model_out_is_a_429(
    upstream: FakeOpenAIServer, start_gateway: Callable[..., Gateway]
) -> None:
    """Naming a model asks only it; when it is out, the client gets OpenAI's 429 shape."""
    upstream.script(T2, rate_limited())
    gateway = start_gateway()
    client = gateway.client()
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model=T2, messages=MESSAGES)
    assert raised.value.code == "no_model_available"
    assert len(upstream.requests_for(T1)) == 0
    assert client.chat.completions.create(model=T3, messages=MESSAGES).model == T3


def test_streamed_chunks_are_passed_on_before_the_upstream_stream_ends(
    upstream: FakeOpenAIServer, start_gateway: Callable[..., Gateway]
) -> None:
    """The upstream stalls forever halfway: the client still gets the chunks sent before it."""
    upstream.script(T1, answer("one two three four five six", stall_s=math.inf))
    gateway = start_gateway()
    client = gateway.client(timeout=30)
    stream = client.chat.completions.create(model="pool", messages=MESSAGES, stream=True)
    first = next(iter(stream))
    assert first.model == T1
    assert first.choices[0].delta.role == "assistant"
    stream.close()


def test_an_answer_leaving_no_quota_skips_the_model_without_spending_a_request_on_a_429(
    upstream: FakeOpenAIServer, start_gateway: Callable[..., Gateway]
) -> None:
    """Tier 1 answers, but its headers say 0 calls left today: the next request goes to tier 2
    and tier 1 is not asked again (on ModelScope a refused request still costs quota)."""
    upstream.script(T1, answer(DEFAULT_CONTENT, headers=SPENT_HEADERS))
    gateway = start_gateway()
    client = gateway.client()
    assert client.chat.completions.create(model="pool", messages=MESSAGES).model == T1
    assert client.chat.completions.create(model="pool", messages=MESSAGES).model == T2
    assert len(upstream.requests_for(T1)) == 1
    assert _row(_status(gateway), T1)["back_at"] == "2026-03-15T00:00:00+00:00"


def test_a_stream_that_no_model_can_start_is_an_error_before_any_chunk(
    upstream: FakeOpenAIServer, start_gateway: Callable[..., Gateway]
) -> None:
    """Every tier answers 429: the streamed request gets OpenAI's 429, naming each model."""
    for model in TIERS:
        upstream.script(model, rate_limited())
    gateway = start_gateway()
    with pytest.raises(openai.RateLimitError) as raised:
        gateway.client().chat.completions.create(model="pool", messages=MESSAGES, stream=True)
    assert all(model in str(raised.value.message) for model in TIERS)
    assert [len(upstream.requests_for(m)) for m in TIERS] == [1, 1, 1]
