"""The one adapter on the real `openai` SDK against a fake provider on loopback, habit by habit."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import pytest

from app.domain import ChatMessage, ChatOptions, ChatResult
from app.errors import (
    ConfigError,
    EmptyAnswerError,
    ModelAuthError,
    ModelBillingError,
    ModelNotServedError,
    ModelQuotaError,
    ModelRequestError,
    ModelTimeoutError,
    ModelUnavailableError,
    RateLimitedError,
    TemporaryError,
    TruncatedAnswerError,
)
from app.llm import (
    CallDefaults,
    ClientPool,
    DeepSeekProvider,
    OpenAIChatModel,
    OpenAICompatibleProvider,
    QwenProvider,
    QwQProvider,
)
from app.ports import ChatModel
from tests.fakes.openai_server import (
    FakeOpenAIServer,
    answer,
    bad_gateway,
    choices_null,
    cut_body,
    error,
    hang,
    insufficient_balance,
    not_served,
    rate_limited,
    raw_body,
    server_error,
    truncated,
    unauthorized,
    whitespace,
)
from tests.llm.conftest import MESSAGES, no_sleep

QWEN = "Qwen/Qwen3-235B-A22B-Instruct-2507"
QWEN_THINKING = "Qwen/Qwen3-235B-A22B-Thinking-2507"
HOLD = '{"BTC": {"coin": "BTC", "signal": "hold"}}'

Server = Callable[..., FakeOpenAIServer]


def ask(
    cls: type[OpenAIChatModel],
    server: FakeOpenAIServer,
    model: str,
    *,
    options: ChatOptions | None = None,
    messages: tuple[ChatMessage, ...] = MESSAGES,
    defaults: CallDefaults | None = None,
    api_key: str | None = "test-key",
    base_url: str | None = None,
) -> ChatResult:
    """Ask `model` through a fresh client pool (clients belong to one event loop)."""

    async def run() -> ChatResult:
        clients = ClientPool()
        try:
            chat = cls(
                api_key,
                model,
                base_url=base_url or server.base_url,
                defaults=defaults or CallDefaults(max_retries=2, retry_backoff_s=0),
                clients=clients,
                sleep=no_sleep,
            )
            return await chat.complete(messages, options)
        finally:
            await clients.aclose()

    return asyncio.run(run())


def test_modelscope_plain_answer_reads_text_usage_and_the_four_rate_limit_headers(
    fake_server: Server,
) -> None:
    server = fake_server("modelscope")
    server.script(
        QWEN,
        answer(HOLD, usage={"prompt_tokens": 120, "completion_tokens": 14, "total_tokens": 134}),
    )

    result = ask(QwenProvider, server, QWEN)

    assert result.text == HOLD
    assert (result.provider, result.model, result.finish_reason) == ("modelscope", QWEN, "stop")
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (120, 14)
    assert result.rate_limit_headers == {
        "modelscope-ratelimit-requests-limit": "2000",
        "modelscope-ratelimit-requests-remaining": "1999",
        "modelscope-ratelimit-model-requests-limit": "500",
        "modelscope-ratelimit-model-requests-remaining": "499",
    }
    assert [a.outcome for a in result.attempts] == ["ok"]
    assert result.attempts[0].rate_limit_headers == result.rate_limit_headers
    sent = server.requests[0]
    assert sent.body["stream"] is False
    assert sent.body["temperature"] == 0.7 and sent.body["max_tokens"] == 4096
    # Our retries, not the SDK's: it never retried on its own.
    assert sent.headers["x-stainless-retry-count"] == "0"


def test_modelscope_thinking_model_is_streamed_with_reasoning_and_usage(
    fake_server: Server,
) -> None:
    server = fake_server("modelscope")
    server.script(QWEN_THINKING, answer(HOLD, reasoning="RSI is neutral, so hold."))

    result = ask(QwenProvider, server, QWEN_THINKING, options=ChatOptions(stream=False))

    sent = server.requests[0].body
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert result.text == HOLD
    assert result.reasoning == "RSI is neutral, so hold."
    assert result.usage.total_tokens > 0 and result.usage.reasoning_tokens > 0
    assert result.rate_limit_headers["modelscope-ratelimit-model-requests-remaining"] == "499"


def test_dashscope_qwq_streams_folds_the_system_message_and_drops_sampling(
    fake_server: Server,
) -> None:
    server = fake_server("dashscope")
    server.script(
        "qwq-plus",
        answer(
            HOLD,
            reasoning="Check the trend.",
            usage={
                "prompt_tokens": 30,
                "completion_tokens": 12,
                "total_tokens": 42,
                "completion_tokens_details": {"reasoning_tokens": 6},
            },
        ),
    )

    result = ask(QwQProvider, server, "qwq-plus", options=ChatOptions(temperature=0.2))

    sent = server.requests[0].body
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert [m["role"] for m in sent["messages"]] == ["user"]
    assert sent["messages"][0]["content"].startswith(MESSAGES[0].content)
    assert sent["messages"][0]["content"].endswith(MESSAGES[1].content)
    assert "temperature" not in sent and "response_format" not in sent
    # Reasoning arrives first and stays apart; usage comes from the choices-less last chunk.
    assert (result.reasoning, result.text) == ("Check the trend.", HOLD)
    assert (result.usage.prompt_tokens, result.usage.reasoning_tokens) == (30, 6)
    assert result.usage.total_tokens == 42


def test_qwq_waits_at_least_sixty_seconds_whatever_the_settings_say() -> None:
    qwq = QwQProvider("key", "qwq-32b", defaults=CallDefaults(timeout_s=10))
    qwen = QwenProvider("key", QWEN, defaults=CallDefaults(timeout_s=10))

    assert qwq.prepare(MESSAGES).timeout_s == 60
    assert qwen.prepare(MESSAGES).timeout_s == 10


def test_deepseek_thinking_off_json_mode_and_no_reasoning(fake_server: Server) -> None:
    server = fake_server("deepseek")

    result = ask(
        DeepSeekProvider,
        server,
        "deepseek-flash",
        options=ChatOptions(json_mode=True, thinking=False),
    )

    sent = server.requests[0].body
    assert sent["thinking"] == {"type": "disabled"}
    assert sent["response_format"] == {"type": "json_object"}
    assert result.reasoning == ""


def test_deepseek_thinking_on_returns_reasoning_streamed_with_usage_on_the_final_chunk(
    fake_server: Server,
) -> None:
    server = fake_server("deepseek")
    server.script("deepseek-v4-pro", answer(HOLD, reasoning="Volume is falling."))

    result = ask(
        DeepSeekProvider,
        server,
        "deepseek-v4-pro",
        options=ChatOptions(thinking=True, stream=True),
    )

    assert server.requests[0].body["thinking"] == {"type": "enabled"}
    assert result.reasoning == "Volume is falling."
    assert result.text == HOLD and result.usage.total_tokens > 0


def test_deepseek_json_mode_is_not_sent_when_the_prompt_never_says_json(
    fake_server: Server,
) -> None:
    server = fake_server("deepseek")
    plain = (ChatMessage("user", "Say hold."),)

    result = ask(
        DeepSeekProvider,
        server,
        "deepseek-flash",
        messages=plain,
        options=ChatOptions(json_mode=True),
    )

    assert "response_format" not in server.requests[0].body
    assert result.text


def test_deepseek_402_is_a_configuration_error_about_the_balance(fake_server: Server) -> None:
    server = fake_server("deepseek")
    server.script("deepseek-flash", insufficient_balance())

    with pytest.raises(ModelBillingError) as caught:
        ask(DeepSeekProvider, server, "deepseek-flash")

    assert isinstance(caught.value, ConfigError)
    assert "top up" in str(caught.value) and "Insufficient Balance" in str(caught.value)
    assert [a.outcome for a in caught.value.attempts] == ["billing_error"]
    assert server.request_count == 1


@pytest.mark.parametrize("flavor", ["modelscope", "dashscope", "deepseek"])
def test_401_stops_with_a_message_about_the_key_and_no_retry(
    fake_server: Server, flavor: str
) -> None:
    server = fake_server(flavor)
    server.script("some-model", unauthorized())
    cls = {"modelscope": QwenProvider, "dashscope": QwQProvider, "deepseek": DeepSeekProvider}

    with pytest.raises(ModelAuthError) as caught:
        ask(cls[flavor], server, "some-model")

    assert isinstance(caught.value, ConfigError)
    assert f"{flavor.upper()}_API_KEY" in str(caught.value)
    assert caught.value.attempts[0].status_code == 401
    assert server.request_count == 1


def test_modelscope_429_with_errors_body_is_a_quota_error_keeping_the_headers(
    fake_server: Server,
) -> None:
    server = fake_server("modelscope")
    server.script(QWEN, rate_limited())

    with pytest.raises(ModelQuotaError) as caught:
        ask(QwenProvider, server, QWEN)

    err = caught.value
    assert isinstance(err, RateLimitedError) and isinstance(err, TemporaryError)
    assert "Request limit exceeded." in str(err)
    assert "model calls left today 0/500" in str(err)
    (attempt,) = err.attempts
    assert (attempt.outcome, attempt.status_code) == ("rate_limited", 429)
    assert attempt.rate_limit_headers["modelscope-ratelimit-model-requests-remaining"] == "0"
    # A 429 is never retried on the same model: on ModelScope a retry spends quota too.
    assert server.request_count == 1


def test_modelscope_model_not_served_is_its_own_error(fake_server: Server) -> None:
    server = fake_server("modelscope")
    server.script("Qwen/Gone", not_served())

    with pytest.raises(ModelNotServedError, match="has no provider supported"):
        ask(QwenProvider, server, "Qwen/Gone")


def test_5xx_is_retried_with_backoff_then_the_answer_is_used(fake_server: Server) -> None:
    server = fake_server("deepseek")
    server.script("deepseek-flash", server_error(503), answer(HOLD))

    result = ask(DeepSeekProvider, server, "deepseek-flash")

    assert result.text == HOLD
    assert [a.outcome for a in result.attempts] == ["server_error", "ok"]
    assert result.attempts[0].status_code == 503
    assert server.request_count == 2


def test_non_json_502_outliving_the_retries_is_a_temporary_error(fake_server: Server) -> None:
    server = fake_server("openai")
    server.script("llama3", bad_gateway(), bad_gateway(), bad_gateway())

    with pytest.raises(ModelUnavailableError, match="Bad Gateway") as caught:
        ask(OpenAICompatibleProvider, server, "llama3", api_key=None)

    assert [a.outcome for a in caught.value.attempts] == ["server_error"] * 3
    assert server.request_count == 3  # 1 + LLM_MAX_RETRIES (2)


@pytest.mark.parametrize("how", ["clean", "cut"])
def test_a_stream_cut_short_is_a_truncated_answer_not_a_valid_one(
    fake_server: Server, how: str
) -> None:
    server = fake_server("dashscope")
    server.script("qwq-plus", truncated(how=how), truncated(how=how))

    with pytest.raises(TruncatedAnswerError) as caught:
        ask(
            QwQProvider, server, "qwq-plus", defaults=CallDefaults(max_retries=1, retry_backoff_s=0)
        )

    assert [a.outcome for a in caught.value.attempts] == ["truncated", "truncated"]


def test_a_truncated_stream_is_retried_and_the_full_answer_used(fake_server: Server) -> None:
    server = fake_server("modelscope")
    server.script(QWEN_THINKING, truncated(how="cut"), answer(HOLD, reasoning="ok"))

    result = ask(QwenProvider, server, QWEN_THINKING)

    assert result.text == HOLD
    assert [a.outcome for a in result.attempts] == ["truncated", "ok"]


def test_garbled_and_in_band_error_stream_events_become_app_errors(fake_server: Server) -> None:
    server = fake_server("deepseek")
    server.script("deepseek-flash", truncated(how="bad_json"), truncated(how="error_event"))
    once = CallDefaults(max_retries=0)

    with pytest.raises(TruncatedAnswerError, match="garbled"):
        ask(
            DeepSeekProvider,
            server,
            "deepseek-flash",
            options=ChatOptions(stream=True),
            defaults=once,
        )
    with pytest.raises(ModelUnavailableError, match="Internal error"):
        ask(
            DeepSeekProvider,
            server,
            "deepseek-flash",
            options=ChatOptions(stream=True),
            defaults=once,
        )


def test_a_slow_answer_past_the_timeout_is_a_timeout_error(fake_server: Server) -> None:
    server = fake_server("modelscope")
    server.script(QWEN, hang())

    with pytest.raises(ModelTimeoutError, match="LLM_TIMEOUT_S") as caught:
        ask(QwenProvider, server, QWEN, defaults=CallDefaults(timeout_s=0.3, max_retries=0))

    assert isinstance(caught.value, TemporaryError)
    assert [a.outcome for a in caught.value.attempts] == ["timeout"]


def test_a_stream_that_stalls_past_the_timeout_is_a_timeout_error(fake_server: Server) -> None:
    server = fake_server("deepseek")
    server.script("deepseek-flash", answer(HOLD, stall_s=math.inf))

    with pytest.raises(ModelTimeoutError):
        ask(
            DeepSeekProvider,
            server,
            "deepseek-flash",
            options=ChatOptions(stream=True),
            defaults=CallDefaults(timeout_s=0.3, max_retries=0),
        )


def test_choices_null_is_an_error_and_not_retried(fake_server: Server) -> None:
    server = fake_server("modelscope")
    server.script(QWEN, choices_null())

    with pytest.raises(EmptyAnswerError, match="choices: null"):
        ask(QwenProvider, server, QWEN)

    assert server.request_count == 1


def test_whitespace_only_json_content_is_retried(fake_server: Server) -> None:
    server = fake_server("deepseek")
    server.script("deepseek-flash", whitespace(), answer(HOLD))

    result = ask(DeepSeekProvider, server, "deepseek-flash", options=ChatOptions(json_mode=True))

    assert result.text == HOLD
    assert [a.outcome for a in result.attempts] == ["empty_text", "ok"]


def test_other_400s_are_request_errors_with_the_providers_message(fake_server: Server) -> None:
    server = fake_server("openai")
    server.script("llama3", error(400, {"error": {"message": "max_tokens is too large"}}))

    with pytest.raises(ModelRequestError, match="max_tokens is too large"):
        ask(OpenAICompatibleProvider, server, "llama3")

    assert server.request_count == 1


def test_a_refused_connection_is_a_network_error_naming_the_base_url(refused_port: int) -> None:
    url = f"http://127.0.0.1:{refused_port}/v1"

    async def run() -> Any:
        clients = ClientPool()
        try:
            chat = QwenProvider(
                "key", QWEN, base_url=url, clients=clients, defaults=CallDefaults(max_retries=0)
            )
            return await chat.complete(MESSAGES)
        finally:
            await clients.aclose()

    with pytest.raises(ModelUnavailableError, match="could not reach ModelScope") as caught:
        asyncio.run(run())
    assert url in str(caught.value)
    assert caught.value.attempts[0].outcome == "network_error"


@pytest.mark.parametrize("inactive", ["null", "empty", "absent"])
def test_the_inactive_stream_field_may_be_null_empty_or_absent(
    fake_server: Server, inactive: str
) -> None:
    server = fake_server("dashscope")
    server.script("qwq-plus", answer(HOLD, reasoning="Think.", inactive=inactive))

    result = ask(QwQProvider, server, "qwq-plus")

    assert (result.reasoning, result.text) == ("Think.", HOLD)


def test_hybrid_qwen3_asked_without_streaming_has_thinking_switched_off() -> None:
    hybrid = QwenProvider("key", "Qwen/Qwen3-32B")
    instruct = QwenProvider("key", QWEN)

    plain = hybrid.prepare(MESSAGES)
    thinking = hybrid.prepare(MESSAGES, ChatOptions(thinking=True))

    assert (plain.stream, dict(plain.extra_body)) == (False, {"enable_thinking": False})
    assert (thinking.stream, dict(thinking.extra_body)) == (True, {"enable_thinking": True})
    assert dict(instruct.prepare(MESSAGES).extra_body) == {}


def test_any_openai_compatible_server_works_without_a_key(fake_server: Server) -> None:
    server = fake_server("openai")

    result = ask(OpenAICompatibleProvider, server, "llama3", api_key=None)

    assert result.provider == "openai" and result.model == "llama3"
    assert server.requests[0].headers["authorization"] == "Bearer not-needed"


def test_hosted_providers_refuse_to_start_without_a_key() -> None:
    with pytest.raises(ConfigError, match="MODELSCOPE_API_KEY"):
        QwenProvider(None)
    with pytest.raises(ConfigError, match="DEEPSEEK_API_KEY"):
        DeepSeekProvider("")


def test_every_provider_is_a_chat_model_with_the_default_model_of_its_seed() -> None:
    providers = [
        QwenProvider("k"),
        DeepSeekProvider("k"),
        QwQProvider("k"),
        OpenAICompatibleProvider(None, "llama3", base_url="http://127.0.0.1:1/v1"),
    ]

    assert all(isinstance(p, ChatModel) for p in providers)
    assert [p.model for p in providers] == [
        "Qwen/Qwen3-235B-A22B-Instruct-2507",
        "deepseek-flash",
        "qwq-plus",
        "llama3",
    ]
    assert QwQProvider("k").base_url == "https://dashscope.aliyuncs.com/compatible-mode/v1"


def test_one_sdk_client_per_endpoint_and_key_is_shared() -> None:
    clients = ClientPool()

    a = QwenProvider("k", "Qwen/A", clients=clients)
    b = QwenProvider("k", "Qwen/B", clients=clients)
    c = QwenProvider("other", "Qwen/A", clients=clients)

    assert a._client is b._client
    assert a._client is not c._client
    assert a._client.max_retries == 0


def test_under_a_deadline_a_request_needs_the_models_minimum_time_capped_by_its_timeout() -> None:
    """QwQ thinks (minimum timeout 60 s); others need 10 s, or their whole timeout if shorter."""
    qwq = QwQProvider("key", "qwq-32b", defaults=CallDefaults(timeout_s=120))
    qwen = QwenProvider("key", QWEN, defaults=CallDefaults(timeout_s=120))
    quick = QwenProvider("key", QWEN, defaults=CallDefaults(timeout_s=4))

    assert qwq.needed_s(qwq.prepare(MESSAGES)) == 60
    assert qwen.needed_s(qwen.prepare(MESSAGES)) == 10
    assert quick.needed_s(quick.prepare(MESSAGES)) == 4


@pytest.mark.parametrize(
    ("reply", "says"),
    [
        (
            raw_body(b"<html><body>Welcome to nginx</body></html>", content_type="text/html"),
            "not JSON (text/html)",
        ),
        (
            raw_body(b'{"id": "x", "choices": [{"message": {"content": "\xff\xfe"}}]}'),
            "not UTF-8 JSON",
        ),
    ],
    ids=["html", "invalid-utf8"],
)
def test_a_200_that_is_not_a_json_answer_is_not_retried(
    fake_server: Server, reply: Any, says: str
) -> None:
    """Asked again, the same page comes back: each retry would only spend quota.

    Before the fix the HTML page was retried twice (3 requests) and the invalid UTF-8 was
    reported as "a garbled stream chunk" and retried twice too.
    """
    server = fake_server("modelscope")
    server.script("Qwen/A", reply, reply, reply)

    with pytest.raises(ModelUnavailableError, match="answered status 200") as caught:
        ask(QwenProvider, server, "Qwen/A")

    assert says in str(caught.value)
    assert [a.outcome for a in caught.value.attempts] == ["bad_answer"]
    assert server.request_count == 1


def test_a_plain_answer_cut_short_is_truncated_not_a_server_out_of_reach(
    fake_server: Server,
) -> None:
    """The body stops after 60 of its bytes: the server was reached, its answer was cut.

    Before the fix this said "could not reach ModelScope ... check the network".
    """
    server = fake_server("modelscope")
    server.script("Qwen/A", cut_body(), answer(HOLD))

    result = ask(QwenProvider, server, "Qwen/A")

    assert result.text == HOLD
    (cut, ok) = result.attempts
    assert (cut.outcome, ok.outcome) == ("truncated", "ok")
    assert "closed in the middle of the answer" in (cut.error or "")
    assert "could not reach" not in (cut.error or "")
