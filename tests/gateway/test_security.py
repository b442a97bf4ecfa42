"""The gateway's edges: loopback by default, a token elsewhere, size limits, OpenAI error shapes."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx2
import openai
import pytest

from app.errors import ConfigError
from app.gateway.app import check_bind
from tests.arena_cli import arena
from tests.gateway.conftest import Gateway

TOKEN = "gw-token-0123456789abcdef"
HELLO = [{"role": "user", "content": "hi"}]


def _is_openai_error(response: httpx2.Response, status: int) -> dict[str, object]:
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    return dict(error)


def test_a_non_loopback_address_needs_the_gateway_token() -> None:
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    check_bind("0.0.0.0", TOKEN)
    with pytest.raises(ConfigError, match="GATEWAY_TOKEN"):
        check_bind("0.0.0.0", None)


def test_arena_gateway_refuses_to_listen_beyond_loopback_without_a_token() -> None:
    run = arena("gateway", "--host", "0.0.0.0")
    assert run.exit_code == 2
    assert "set GATEWAY_TOKEN" in run.stderr


def test_with_a_token_every_route_but_health_and_the_page_asks_for_it(
    start_gateway: Callable[..., Gateway],
) -> None:
    gateway = start_gateway(gateway={"token": TOKEN})
    with pytest.raises(openai.AuthenticationError):
        gateway.client().chat.completions.create(model="pool", messages=HELLO)  # type: ignore[arg-type]
    _is_openai_error(httpx2.get(f"{gateway.url}/status"), 401)
    assert httpx2.get(f"{gateway.url}/health").json() == {"status": "healthy"}
    assert httpx2.get(f"{gateway.url}/quota").status_code == 200
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=TOKEN, max_retries=0)
    assert client.chat.completions.create(model="pool", messages=HELLO).choices  # type: ignore[arg-type]


def test_an_oversized_body_is_refused_with_413(start_gateway: Callable[..., Gateway]) -> None:
    gateway = start_gateway(gateway={"max_body_bytes": 1_000})
    big = {"model": "pool", "messages": [{"role": "user", "content": "x" * 2_000}]}
    error = _is_openai_error(httpx2.post(f"{gateway.url}/v1/chat/completions", json=big), 413)
    assert error["code"] == "body_too_large"

    def chunks() -> Iterator[bytes]:  # no content-length: counted as it arrives
        yield b'{"model": "pool", "messages": [{"role": "user", "content": "'
        yield b"x" * 2_000
        yield b'"}]}'

    response = httpx2.post(f"{gateway.url}/v1/chat/completions", content=chunks())
    _is_openai_error(response, 413)
    assert len(gateway.upstream.requests) == 0


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b'["a list"]', None),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "model"),
        (b'{"model": "pool", "messages": []}', "messages"),
        (
            b'{"model": "pool", "messages": [{"role": "robot", "content": "hi"}]}',
            "messages[0].role",
        ),
        (
            b'{"model": "pool", "messages": [{"role": "user", "content": "hi"}], "temperature": 9}',
            "temperature",
        ),
        (
            b'{"model": "pool", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}',
            "stream",
        ),
    ],
)
def test_a_malformed_request_gets_a_400_in_openai_shape(
    start_gateway: Callable[..., Gateway], body: bytes, param: str | None
) -> None:
    gateway = start_gateway()
    response = httpx2.post(
        f"{gateway.url}/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
    )
    error = _is_openai_error(response, 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert len(gateway.upstream.requests) == 0


def test_unknown_pools_models_and_routes_are_404s_in_openai_shape(
    start_gateway: Callable[..., Gateway],
) -> None:
    gateway = start_gateway()
    client = gateway.client()
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="pool:nope", messages=HELLO)  # type: ignore[arg-type]
    assert raised.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="Qwen/Unlisted", messages=HELLO)  # type: ignore[arg-type]
    _is_openai_error(httpx2.get(f"{gateway.url}/nowhere"), 404)
    _is_openai_error(httpx2.get(f"{gateway.url}/v1/chat/completions"), 405)
