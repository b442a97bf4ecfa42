"""The quota query: ask models with a caller's key and read the four rate-limit headers back.

ModelScope says what is left only in the `modelscope-ratelimit-*` headers of an answer, so each
model costs one real request (max_tokens 1) of that model's daily quota. All models are asked at
once, each within the timeout. The key is used for these requests only: it is never stored, and
every error text is masked before it leaves this module.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

import openai
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

from app.logs import mask_secrets

QUERY_TIMEOUT_S: Final = 30.0
HEADER_FIELDS: Final[Mapping[str, str]] = {
    "request_limit": "modelscope-ratelimit-requests-limit",
    "request_remaining": "modelscope-ratelimit-requests-remaining",
    "model_request_limit": "modelscope-ratelimit-model-requests-limit",
    "model_request_remaining": "modelscope-ratelimit-model-requests-remaining",
}
_PROBE_MESSAGE: Final[list[ChatCompletionMessageParam]] = [{"role": "user", "content": "hi"}]


@dataclass(frozen=True, slots=True)
class QuotaProbe:
    """What one model's headers said, or why they could not be read."""

    model: str
    request_limit: int | None = None
    request_remaining: int | None = None
    model_request_limit: int | None = None
    model_request_remaining: int | None = None
    status_code: int | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        """Return the probe as a JSON-ready dict."""
        return asdict(self)


def _limits(headers: Mapping[str, str]) -> dict[str, int | None]:
    values: dict[str, int | None] = {}
    for field_name, header in HEADER_FIELDS.items():
        raw = headers.get(header)
        values[field_name] = int(raw) if raw is not None and raw.strip().isdigit() else None
    return values


def _message_of(body: object) -> str:
    if isinstance(body, Mapping):
        for container in (body, body.get("errors"), body.get("error")):
            if isinstance(container, Mapping) and isinstance(container.get("message"), str):
                return str(container["message"])
        return json.dumps(body, ensure_ascii=False, default=str)[:300]
    return str(body)[:300]


async def _probe(client: AsyncOpenAI, model: str, key: str, timeout_s: float) -> QuotaProbe:
    try:
        async with asyncio.timeout(timeout_s):
            raw = await client.chat.completions.with_raw_response.create(
                model=model,
                messages=_PROBE_MESSAGE,
                max_tokens=1,
                stream=False,
            )
            headers = raw.http_response.headers
            limits = _limits(headers)
            error = None
            try:
                parsed: object = raw.parse()
            except ValueError as problem:  # json.JSONDecodeError included
                parsed, error = None, f"the answer is not valid JSON ({problem})"
            if error is None and not isinstance(parsed, ChatCompletion):
                error = "the answer is not a chat completion (not JSON)"
            if all(value is None for value in limits.values()) and error is None:
                error = "the answer carried no rate-limit headers (not a ModelScope endpoint?)"
            return QuotaProbe(
                model, **limits, status_code=raw.http_response.status_code, error=error
            )
    except openai.APIStatusError as problem:
        limits = _limits(problem.response.headers)
        message = f"HTTP {problem.status_code}: {_message_of(problem.body)}"
        return QuotaProbe(
            model, **limits, status_code=problem.status_code, error=mask_secrets(message, (key,))
        )
    except (TimeoutError, openai.APITimeoutError):
        return QuotaProbe(model, error=f"no answer within {timeout_s:g} s")
    except openai.APIConnectionError as problem:
        return QuotaProbe(model, error=mask_secrets(f"network error: {problem.message}", (key,)))
    except ValueError as problem:
        return QuotaProbe(
            model, error=mask_secrets(f"invalid JSON in the answer: {problem}", (key,))
        )


async def query_quota(
    *,
    base_url: str,
    api_key: str,
    models: Sequence[str],
    timeout_s: float = QUERY_TIMEOUT_S,
) -> list[QuotaProbe]:
    """Ask every model in `models` at once with `api_key`; return what each one's headers say."""
    client = AsyncOpenAI(
        api_key=api_key, base_url=base_url, max_retries=0, timeout=openai.Timeout(timeout_s)
    )
    try:
        return list(
            await asyncio.gather(*(_probe(client, model, api_key, timeout_s) for model in models))
        )
    finally:
        await client.close()
