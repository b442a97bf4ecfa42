"""OpenAI's wire shapes on the gateway side: the request read, the answers and errors written."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

from app.domain import ChatMessage, ChatOptions, ChatResult, Role
from app.llm.pool import Tried

ROLES: Final = ("system", "user", "assistant")


class BadRequest(ValueError):
    """A request the gateway refuses: answered with a 4xx in OpenAI's error shape."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        kind: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.code = code
        self.param = param


def error_body(
    message: str, *, kind: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """Return OpenAI's error envelope."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """What a client asked for, read from its JSON."""

    model: str
    messages: tuple[ChatMessage, ...]
    options: ChatOptions
    stream: bool


def _text_of(content: Any, index: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            else:
                raise BadRequest(
                    f"messages[{index}].content: only text parts are passed through",
                    param=f"messages[{index}].content",
                )
        return "".join(parts)
    if content is None:
        return ""
    raise BadRequest(
        f"messages[{index}].content must be a string or a list of text parts",
        param=f"messages[{index}].content",
    )


def _number(body: Mapping[str, Any], name: str, *, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise BadRequest(f"{name} must be a number from {low:g} to {high:g}", param=name)
    return float(value)


def parse_chat_request(body: Any, *, budget_s: float) -> ChatRequest:
    """Read an OpenAI chat-completions request body; raise `BadRequest` naming what is wrong."""
    if not isinstance(body, Mapping):
        raise BadRequest("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("model is required: a pool (pool:NAME) or a model id", param="model")
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise BadRequest("messages must be a non-empty list", param="messages")
    messages = []
    for index, item in enumerate(raw_messages):
        if not isinstance(item, Mapping) or item.get("role") not in ROLES:
            raise BadRequest(
                f"messages[{index}] needs a role among {', '.join(ROLES)}",
                param=f"messages[{index}].role",
            )
        role = cast(Role, item["role"])
        messages.append(ChatMessage(role, _text_of(item.get("content"), index)))
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("stream must be true or false", param="stream")
    temperature = _number(body, "temperature", low=0, high=2)
    max_tokens = _number(body, "max_completion_tokens", low=1, high=1_000_000)
    if max_tokens is None:
        max_tokens = _number(body, "max_tokens", low=1, high=1_000_000)
    response_format = body.get("response_format")
    json_mode = isinstance(response_format, Mapping) and response_format.get("type") in (
        "json_object",
        "json_schema",
    )
    thinking = body.get("enable_thinking")
    options = ChatOptions(
        temperature=temperature,
        max_tokens=None if max_tokens is None else int(max_tokens),
        json_mode=json_mode,
        stream=stream,
        thinking=thinking if isinstance(thinking, bool) else None,
        budget_s=budget_s,
    )
    return ChatRequest(model.strip(), tuple(messages), options, stream)


def completion_body(
    result: ChatResult, *, served_model: str, extra: Mapping[str, Any]
) -> dict[str, Any]:
    """Return a non-streamed answer as OpenAI's `chat.completion` (reasoning and usage kept)."""
    message: dict[str, Any] = {"role": "assistant", "content": result.text}
    if result.reasoning:
        message["reasoning_content"] = result.reasoning
    usage = result.usage
    usage_body: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.reasoning_tokens:
        usage_body["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return {
        "id": result.request_id or f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": served_model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": result.finish_reason or "stop",
                "logprobs": None,
            }
        ],
        "usage": usage_body,
        **extra,
    }


def routing_note(
    *,
    provider: str,
    model: str,
    tier: int,
    pool: str | None,
    tried: Sequence[Tried],
    score: int | None = None,
) -> dict[str, Any]:
    """Return the `gateway` field of an answer: who served it and what was passed over."""
    return {
        "gateway": {
            "served_by": model,
            "provider": provider,
            "tier": tier,
            "pool": pool,
            "complexity_score": score,
            "passed_over": [
                {
                    "model": t.model,
                    "provider": t.provider,
                    "reason": t.reason,
                    "skipped_until": None
                    if t.skipped_until is None
                    else t.skipped_until.isoformat(),
                }
                for t in tried
            ],
        }
    }
