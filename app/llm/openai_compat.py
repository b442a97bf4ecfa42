"""The one adapter on the official `openai` SDK (`AsyncOpenAI`) for every compatible provider.

`OpenAIChatModel` asks one model of one provider; the provider's `ProviderTraits` (data) decide
what is sent. Retries are ours: the SDK client is built with `max_retries=0`, because on ModelScope
a rejected retry still spends quota. Timeouts, 5xx, network failures, truncated streams and
whitespace-only answers are retried with exponential backoff; everything else is translated into
an `app.errors.ModelCallError` subclass at once. The API key never leaves this module in any
message: every error text is masked.

A call may have a deadline (`ChatOptions.budget_s`): a request starts only when the time left is
at least what the model needs (`needed_s`), except the call's first request, which always starts;
a request's timeout is cut to the time left. A 200 whose body is not a JSON answer (an HTML page,
invalid UTF-8) is `bad_answer` and not retried: asked again it would come back the same, and
each retry spends quota. Each request is appended to the caller's `journal`
as soon as it ends (a cancelled one as `cancelled`), so a caller cancelled mid-call still knows
what was spent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Final, Protocol, cast

import openai
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageParam
from pydantic import SecretStr

from app.domain import CallAttempt, ChatMessage, ChatOptions, ChatResult, ImagePart, TokenUsage
from app.errors import (
    ConfigError,
    EmptyAnswerError,
    ModelAuthError,
    ModelBillingError,
    ModelCallError,
    ModelImagesRefusedError,
    ModelNotServedError,
    ModelQuotaError,
    ModelRequestError,
    ModelTimeoutError,
    ModelUnavailableError,
    TruncatedAnswerError,
)
from app.logs import mask_secrets
from app.providers import ModelTraits, ProviderTraits

log = logging.getLogger(__name__)

# A local server ignores the key, but the SDK refuses to build a client without one.
_PLACEHOLDER_KEY: Final = "not-needed"
_MAX_ERROR_CHARS: Final = 300
_CONNECT_TIMEOUT_S: Final = 10.0
# Lowercase fragments of a 400 that refuses a request's images (ModelScope "is not a multimodal
# model", DashScope and DeepSeek "does not support image input", OpenAI "image_url is only
# supported by certain models"); read only when the request carried images.
IMAGE_REFUSAL_MARKERS: Final = ("image", "multimodal", "vision")
# Outcomes worth another try of the same model (anything else is final for this model).
RETRYABLE_OUTCOMES: Final = frozenset(
    {"timeout", "server_error", "network_error", "truncated", "empty_text"}
)
# Under a deadline, a retry or a fallback model starts only with at least this long left (or the
# model's own minimum timeout, 60 s for thinking models, when larger): a shorter try would
# rarely answer, and on ModelScope it would still spend a request of the daily quota.
MIN_ATTEMPT_S: Final = 10.0

Sleep = Callable[[float], Awaitable[None]]
ChunkConsumer = Callable[[ChatCompletionChunk], Awaitable[None]]
# Called before each request is sent; returns the id of the request's pending record, if any.
BeforeRequest = Callable[[], Awaitable[int | None]]
# Seconds on a monotonic clock: what call deadlines are measured on.
Monotonic = Callable[[], float]


@dataclass(frozen=True, slots=True)
class CallDefaults:
    """Settings every call starts from (`settings.llm`), before options and traits apply."""

    timeout_s: float = 120.0
    temperature: float | None = 0.7
    max_tokens: int | None = 4096
    max_retries: int = 2
    retry_backoff_s: float = 1.0


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """The exact request for one model: what is sent, and what identifies the answer."""

    model: str
    messages: tuple[dict[str, str], ...]
    stream: bool
    timeout_s: float
    temperature: float | None = None
    max_tokens: int | None = None
    json_mode: bool = False
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    stream_usage: bool = False
    # Chart images by the index of the message they follow (sent as content parts after its
    # text); empty for a text-only prompt, whose request is exactly as before.
    images: tuple[tuple[int, tuple[ImagePart, ...]], ...] = ()

    def answer_parameters(self) -> dict[str, Any]:
        """Return the parameters that change the answer (not streaming or timeouts)."""
        return {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "json_mode": self.json_mode,
            "extra_body": dict(self.extra_body),
        }


class ChunkRelay:
    """Hands each streamed chunk on as it arrives (the gateway streams answers through)."""

    def __init__(self, consumer: ChunkConsumer) -> None:
        self.consumer = consumer
        # Once a chunk went out the answer is committed: no retry, no other model.
        self.started = False
        # The model being asked (set by whoever routes the request), to name the answer's source.
        self.label = ""

    async def put(self, chunk: ChatCompletionChunk) -> None:
        """Pass `chunk` on."""
        self.started = True
        await self.consumer(chunk)


class ClientPool:
    """One `AsyncOpenAI` client per endpoint and key, shared by every agent (one event loop)."""

    def __init__(self, *, connect_timeout_s: float = _CONNECT_TIMEOUT_S) -> None:
        self._clients: dict[tuple[str, str], AsyncOpenAI] = {}
        self._connect_timeout_s = connect_timeout_s

    def client(self, base_url: str, api_key: str) -> AsyncOpenAI:
        """Return the client for `base_url` and `api_key`, creating it on first use."""
        # Hash the key so the pool's index never holds it in clear next to the URL.
        index = (base_url.rstrip("/"), hashlib.sha256(api_key.encode()).hexdigest())
        client = self._clients.get(index)
        if client is None:
            client = AsyncOpenAI(
                api_key=api_key or _PLACEHOLDER_KEY,
                base_url=base_url,
                max_retries=0,
                timeout=openai.Timeout(None, connect=self._connect_timeout_s),
            )
            self._clients[index] = client
        return client

    async def aclose(self) -> None:
        """Close every client's connections."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()


def secret_text(value: str | SecretStr | None) -> str:
    """Return the clear text of a key given as text or `SecretStr` ("" when missing)."""
    if value is None:
        return ""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value


def fold_system_messages(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """Return `messages` with the system text moved to the front of the first user message."""
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    rest = [m for m in messages if m.role != "system"]
    if not system:
        return rest
    for index, message in enumerate(rest):
        if message.role == "user":
            rest[index] = ChatMessage("user", f"{system}\n\n{message.content}", message.images)
            return rest
    return [ChatMessage("user", system), *rest]


class _Response(Protocol):
    """The parts of the SDK's HTTP response read here."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...


@dataclass(slots=True)
class _Progress:
    """What one attempt learned before it ended, so a failure can still report it."""

    started_s: float
    status_code: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    request_id: str | None = None
    in_stream: bool = False


class OpenAIChatModel:
    """The `ChatModel` port for one model of one OpenAI-compatible provider."""

    # Subclasses (`QwenProvider`...) name their provider and default model here.
    TRAITS: ClassVar[ProviderTraits | None] = None
    DEFAULT_MODEL: ClassVar[str | None] = None

    def __init__(
        self,
        api_key: str | SecretStr | None = None,
        model: str | None = None,
        *,
        traits: ProviderTraits | None = None,
        base_url: str | None = None,
        defaults: CallDefaults | None = None,
        clients: ClientPool | None = None,
        sleep: Sleep | None = None,
        monotonic: Monotonic | None = None,
        require_key: bool = True,
    ) -> None:
        traits = traits or self.TRAITS
        if traits is None:
            raise TypeError("OpenAIChatModel needs provider traits (or use QwenProvider...)")
        model = model or self.DEFAULT_MODEL
        if not model:
            raise ConfigError(f"{traits.label}: name the model to ask")
        key = secret_text(api_key)
        # `require_key=False` serves replays, which never send a request.
        if not key and traits.key_required and require_key:
            raise ConfigError(
                f"{traits.label} needs an API key: set {traits.key_env} in .env ({traits.key_help})"
            )
        url = base_url or traits.default_base_url
        if not url:
            raise ConfigError(
                f"{traits.label} needs a base URL: set {traits.name.upper()}_BASE_URL in .env"
            )
        self.traits = traits
        self.model = model
        self.base_url = url
        self.defaults = defaults or CallDefaults()
        self.model_traits: ModelTraits = traits.model_traits(model)
        self._secrets = (key,) if key else ()
        # The SDK client is made on the first request: a replay never sends one, and making a
        # client (with its TLS context and lazy imports) was a tenth of a replay's start-up.
        self._clients = clients or ClientPool()
        self._key = key
        self._sleep = sleep or asyncio.sleep
        # Deadlines are read on this clock (a test gives its own, so no budget races real time).
        self.monotonic: Monotonic = monotonic or time.monotonic

    @property
    def _client(self) -> AsyncOpenAI:
        return self._clients.client(self.base_url, self._key)

    @property
    def provider(self) -> str:
        """Return the provider id (`modelscope`, `deepseek`, `dashscope`, `openai`)."""
        return self.traits.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(provider={self.provider!r}, model={self.model!r})"

    # -- building the request ------------------------------------------------------------------

    def prepare(
        self, messages: Sequence[ChatMessage], options: ChatOptions | None = None
    ) -> PreparedRequest:
        """Return the request this model gets for `messages`, with its traits applied."""
        options = options or ChatOptions()
        traits = self.model_traits
        if traits.fold_system:
            messages = fold_system_messages(messages)
        stream = bool(options.stream) or traits.stream_only
        extra_body: dict[str, Any] = {}
        if options.thinking is True and traits.thinking_on is not None:
            extra_body.update(traits.thinking_on)
            stream = stream or traits.thinking_needs_stream
        elif options.thinking is False and traits.thinking_off is not None:
            extra_body.update(traits.thinking_off)
        elif traits.thinking_needs_stream and not stream and traits.thinking_off is not None:
            # The model would think by default and then refuse the non-stream call.
            extra_body.update(traits.thinking_off)
        temperature = options.temperature
        if temperature is None:
            temperature = self.defaults.temperature
        timeout_s = options.timeout_s or self.defaults.timeout_s
        # DeepSeek refuses JSON mode (400) when no message says "json"; such a prompt is sent
        # without it and relies on its own wording.
        # Lower-casing a long prompt costs more than looking for "json" as written first.
        says_json = any("json" in m.content for m in messages) or any(
            "json" in m.content.lower() for m in messages
        )
        return PreparedRequest(
            model=self.model,
            messages=tuple({"role": m.role, "content": m.content} for m in messages),
            stream=stream,
            timeout_s=max(timeout_s, traits.min_timeout_s),
            temperature=temperature if traits.sampling else None,
            max_tokens=options.max_tokens or self.defaults.max_tokens,
            json_mode=options.json_mode and traits.json_mode and says_json,
            extra_body=extra_body,
            stream_usage=stream and traits.stream_usage,
            images=tuple((index, m.images) for index, m in enumerate(messages) if m.images),
        )

    # -- the call ------------------------------------------------------------------------------

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        options: ChatOptions | None = None,
        *,
        journal: list[CallAttempt] | None = None,
    ) -> ChatResult:
        """Ask the model, retrying timeouts, 5xx, cut streams and blank answers with backoff."""
        budget_s = options.budget_s if options is not None else None
        deadline_at = None if budget_s is None else self.monotonic() + budget_s
        return await self.send(
            self.prepare(messages, options), deadline_at=deadline_at, journal=journal
        )

    def needed_s(self, request: PreparedRequest) -> float:
        """Return the least time worth starting a request with, under a deadline."""
        return min(request.timeout_s, max(self.model_traits.min_timeout_s, MIN_ATTEMPT_S))

    async def send(
        self,
        request: PreparedRequest,
        *,
        max_retries: int | None = None,
        deadline_at: float | None = None,
        journal: list[CallAttempt] | None = None,
        relay: ChunkRelay | None = None,
        before_request: BeforeRequest | None = None,
    ) -> ChatResult:
        """Send a prepared request with our retries; raise a `ModelCallError` carrying attempts.

        `deadline_at` (seconds on `self.monotonic`) ends the call: see the module docstring.
        `journal` receives every request as it ends; an empty one means this is the call's first.
        `relay`, for a streamed request, receives the chunks as they come; once one went out a
        failure is not retried.
        """
        retries = self.defaults.max_retries if max_retries is None else max_retries
        journal = [] if journal is None else journal
        start = len(journal)
        last_error: ModelCallError | None = None
        for number in range(retries + 1):
            sent = request
            if deadline_at is not None:
                left_s = deadline_at - self.monotonic()
                first_of_call = not journal
                if left_s <= 0 or (not first_of_call and left_s < self.needed_s(request)):
                    raise self._out_of_time(
                        request, left_s, last_error, journal[start:]
                    ) from last_error
                if left_s < request.timeout_s:
                    sent = replace(request, timeout_s=left_s)
            try:
                result = await self._attempt(
                    sent,
                    journal,
                    cut=sent is not request,
                    relay=relay,
                    before_request=before_request,
                )
            except ModelCallError as error:
                last_error = error
                outcome = error.attempts[-1].outcome if error.attempts else ""
                error.attempts = tuple(journal[start:])
                committed = relay is not None and relay.started
                if outcome not in RETRYABLE_OUTCOMES or number == retries or committed:
                    raise
                delay_s = self.defaults.retry_backoff_s * (2**number)
                if deadline_at is not None:
                    left_s = deadline_at - self.monotonic()
                    if left_s - delay_s < self.needed_s(request):
                        raise self._out_of_time(request, left_s, error, journal[start:]) from error
                log.warning(
                    "%s %s: %s; retrying in %.1f s (%d/%d)",
                    self.provider,
                    self.model,
                    error,
                    delay_s,
                    number + 1,
                    retries,
                )
                await self._sleep(delay_s)
                continue
            return replace(result, attempts=tuple(journal[start:]))
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def _out_of_time(
        self,
        request: PreparedRequest,
        left_s: float,
        last_error: ModelCallError | None,
        attempts: Sequence[CallAttempt],
    ) -> ModelCallError:
        left = f"{max(left_s, 0.0):.1f} s of the call's time budget left"
        if last_error is None:
            return ModelTimeoutError(
                f"{self._who()} not asked: only {left}, and a request needs "
                f"{self.needed_s(request):g} s",
                attempts=tuple(attempts),
            )
        # The failure that ended the call is the one to report, with why it was not retried.
        return type(last_error)(f"{last_error}; not retried: only {left}", attempts=tuple(attempts))

    async def _attempt(
        self,
        request: PreparedRequest,
        journal: list[CallAttempt],
        *,
        cut: bool = False,
        relay: ChunkRelay | None = None,
        before_request: BeforeRequest | None = None,
    ) -> ChatResult:
        """Make one request; append how it ended to `journal`, even when cancelled.

        `before_request` is awaited first (the request is recorded before it is sent); the id
        it returns goes on the request's attempt.
        """
        pending_id = None if before_request is None else await before_request()
        progress = _Progress(started_s=time.perf_counter())
        try:
            result = await self._request(request, progress, cut=cut, relay=relay)
        except ModelCallError as error:
            error.attempts = _pending(error.attempts, pending_id)
            journal.extend(error.attempts)
            raise
        except asyncio.CancelledError:
            # The request was sent (and counts against the quota) but its answer never came.
            attempt = self._record(
                "cancelled",
                f"{self._who()}: request cancelled by the caller before the answer came",
                progress,
            )
            journal.append(replace(attempt, pending_id=pending_id))
            raise
        result = replace(result, attempts=_pending(result.attempts, pending_id))
        journal.extend(result.attempts)
        return result

    async def _request(
        self,
        request: PreparedRequest,
        progress: _Progress,
        *,
        cut: bool,
        relay: ChunkRelay | None = None,
    ) -> ChatResult:
        try:
            # The SDK's timeout is per read; this one bounds the whole answer, stream included.
            async with asyncio.timeout(request.timeout_s):
                if request.stream:
                    return await self._streamed(request, progress, relay)
                return await self._plain(request, progress)
        except (TimeoutError, openai.APITimeoutError) as error:
            if cut:
                within = f"{request.timeout_s:.1f} s (the rest of the call's time budget)"
            else:
                within = f"{request.timeout_s:g} s (raise LLM_TIMEOUT_S if the model is just slow)"
            raise self._failure(
                ModelTimeoutError,
                "timeout",
                f"{self._who()} did not answer within {within}",
                progress,
            ) from error
        except openai.APIStatusError as error:
            raise self._status_failure(error, progress, images=bool(request.images)) from error
        except openai.APIConnectionError as error:
            cause = str(error.__cause__ or "").strip()
            if progress.in_stream or "complete message body" in cause:
                # The server answered, then the body stopped short: not a network outage.
                why = f" ({_clip(cause)})" if cause else ""
                raise self._failure(
                    TruncatedAnswerError,
                    "truncated",
                    f"{self._who()}: the connection closed in the middle of the answer{why}",
                    progress,
                ) from error
            if "without sending a response" in cause or "disconnected" in cause.lower():
                raise self._failure(
                    ModelUnavailableError,
                    "network_error",
                    f"{self._who()}: the server closed the connection without answering "
                    f"({_clip(cause)})",
                    progress,
                ) from error
            detail = f"{error.message} ({_clip(cause)})" if cause else error.message
            raise self._failure(
                ModelUnavailableError,
                "network_error",
                f"could not reach {self.traits.label} at {self.base_url}: {detail} "
                f"(check the network and {self.traits.name.upper()}_BASE_URL)",
                progress,
            ) from error
        except openai.APIError as error:
            # An error event inside a stream (no HTTP status).
            raise self._failure(
                ModelUnavailableError,
                "server_error",
                f"{self._who()} reported an error in the stream: {_error_message(error.body)}",
                progress,
            ) from error
        except ValueError as error:
            # The SDK lets a chunk that is not JSON escape as a JSONDecodeError.
            raise self._failure(
                TruncatedAnswerError,
                "truncated",
                f"{self._who()} sent a garbled stream chunk ({error})",
                progress,
            ) from error

    async def _plain(self, request: PreparedRequest, progress: _Progress) -> ChatResult:
        raw = await self._client.chat.completions.with_raw_response.create(
            **self._arguments(request), stream=False
        )
        self._note_response(raw.http_response, progress)
        # A 200 whose body is not a JSON answer (an HTML page, bytes that are not UTF-8) would
        # come back the same if asked again: it is not retried, since each retry spends quota.
        try:
            completion = cast(ChatCompletion | str, raw.parse())
        except ValueError as error:
            raise self._failure(
                ModelUnavailableError,
                "bad_answer",
                f"{self._who()} answered status {progress.status_code} with a body that is not "
                f"UTF-8 JSON ({_clip(str(error))})",
                progress,
            ) from error
        if not isinstance(completion, ChatCompletion):
            content_type = raw.http_response.headers.get("content-type", "?")
            raise self._failure(
                ModelUnavailableError,
                "bad_answer",
                f"{self._who()} answered status {progress.status_code} with something that is "
                f"not JSON ({content_type}): {_clip(str(completion))!r}",
                progress,
            )
        if not completion.choices:
            raise self._failure(
                EmptyAnswerError,
                "no_choices",
                f"{self._who()} answered without any choice (choices: null)",
                progress,
            )
        choice = completion.choices[0]
        message = choice.message
        text = message.content or ""
        reasoning = _reasoning_of(message)
        usage = _usage_of(completion.usage)
        return self._success(
            request, progress, text, reasoning, choice.finish_reason, usage, completion.id
        )

    async def _streamed(
        self, request: PreparedRequest, progress: _Progress, relay: ChunkRelay | None = None
    ) -> ChatResult:
        raw = await self._client.chat.completions.with_raw_response.create(
            **self._arguments(request),
            stream=True,
            stream_options={"include_usage": True} if request.stream_usage else openai.omit,
        )
        self._note_response(raw.http_response, progress)
        stream = cast(openai.AsyncStream[ChatCompletionChunk], raw.parse())
        text: list[str] = []
        reasoning: list[str] = []
        finish_reason: str | None = None
        usage = TokenUsage()
        answer_id: str | None = None
        progress.in_stream = True
        try:
            async for chunk in stream:
                if relay is not None:
                    await relay.put(chunk)
                answer_id = answer_id or chunk.id
                if chunk.usage is not None:
                    usage = _usage_of(chunk.usage)
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                delta = choice.delta
                if delta is not None:
                    piece = _reasoning_of(delta)
                    if piece:
                        reasoning.append(piece)
                    if delta.content:
                        text.append(delta.content)
                if choice.finish_reason:
                    finish_reason = choice.finish_reason
        finally:
            await stream.close()
        if finish_reason is None:
            raise self._failure(
                TruncatedAnswerError,
                "truncated",
                f"{self._who()}: the stream ended before the answer did (no finish reason)",
                progress,
                usage=usage,
            )
        return self._success(
            request, progress, "".join(text), "".join(reasoning), finish_reason, usage, answer_id
        )

    def _arguments(self, request: PreparedRequest) -> dict[str, Any]:
        messages = cast(list[ChatCompletionMessageParam], _with_images(request))
        return {
            "model": request.model,
            "messages": messages,
            "temperature": openai.omit if request.temperature is None else request.temperature,
            "max_tokens": openai.omit if request.max_tokens is None else request.max_tokens,
            "response_format": {"type": "json_object"} if request.json_mode else openai.omit,
            "extra_body": dict(request.extra_body) or None,
            "timeout": openai.Timeout(
                request.timeout_s, connect=min(request.timeout_s, _CONNECT_TIMEOUT_S)
            ),
        }

    # -- results and failures ------------------------------------------------------------------

    def _who(self) -> str:
        return f"{self.traits.label} model {self.model}"

    def _note_response(self, response: _Response, progress: _Progress) -> None:
        progress.status_code = response.status_code
        progress.headers = self._rate_limit_headers(response.headers)
        progress.request_id = response.headers.get("x-request-id")

    def _rate_limit_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        prefixes = self.traits.rate_limit_header_prefixes
        return {
            name.lower(): value
            for name, value in headers.items()
            if name.lower().startswith(prefixes)
        }

    def _success(
        self,
        request: PreparedRequest,
        progress: _Progress,
        text: str,
        reasoning: str,
        finish_reason: str | None,
        usage: TokenUsage,
        answer_id: str | None,
    ) -> ChatResult:
        if not text.strip():
            # DeepSeek's JSON mode can answer only spaces; another try usually works.
            raise self._failure(
                EmptyAnswerError,
                "empty_text",
                f"{self._who()} answered only whitespace (finish reason {finish_reason})",
                progress,
                usage=usage,
            )
        latency_s = time.perf_counter() - progress.started_s
        attempt = CallAttempt(
            provider=self.provider,
            model=self.model,
            outcome="ok",
            latency_s=latency_s,
            status_code=progress.status_code,
            rate_limit_headers=dict(progress.headers),
            usage=usage,
        )
        return ChatResult(
            text=text,
            provider=self.provider,
            model=self.model,
            reasoning=reasoning,
            finish_reason=finish_reason,
            usage=usage,
            latency_s=latency_s,
            rate_limit_headers=dict(progress.headers),
            attempts=(attempt,),
            request_id=progress.request_id or answer_id,
        )

    def _failure(
        self,
        kind: type[ModelCallError],
        outcome: str,
        message: str,
        progress: _Progress,
        *,
        usage: TokenUsage | None = None,
    ) -> ModelCallError:
        attempt = self._record(outcome, message, progress, usage=usage)
        return kind(attempt.error or "", attempts=(attempt,))

    def _record(
        self, outcome: str, message: str, progress: _Progress, *, usage: TokenUsage | None = None
    ) -> CallAttempt:
        return CallAttempt(
            provider=self.provider,
            model=self.model,
            outcome=outcome,
            error=mask_secrets(message, self._secrets),
            latency_s=time.perf_counter() - progress.started_s,
            status_code=progress.status_code,
            rate_limit_headers=dict(progress.headers),
            usage=usage or TokenUsage(),
        )

    def _status_failure(
        self, error: openai.APIStatusError, progress: _Progress, *, images: bool = False
    ) -> ModelCallError:
        self._note_response(error.response, progress)
        status = error.status_code
        detail = _error_message(error.body) or error.response.reason_phrase
        request_id = _request_id(error.body) or progress.request_id
        where = f"({status} {detail}" + (f"; request id {request_id})" if request_id else ")")
        text = detail.lower()
        traits = self.traits
        if status in (401, 403):
            return self._failure(
                ModelAuthError,
                "auth_error",
                f"{traits.label} refused the API key {where}: check {traits.key_env} "
                f"({traits.key_help})",
                progress,
            )
        if status == 402 or any(marker in text for marker in traits.billing_markers):
            return self._failure(
                ModelBillingError,
                "billing_error",
                f"{traits.label} says the account cannot pay for calls {where}: top up the "
                f"balance or give this agent another provider",
                progress,
            )
        if images and status == 400 and any(marker in text for marker in IMAGE_REFUSAL_MARKERS):
            return self._failure(
                ModelImagesRefusedError,
                "images_refused",
                f"{self._who()} takes no images {where}: the agent goes on with the text prompt "
                "only (leave vision off for this model, or list only vision models in "
                "VISION_MODELS)",
                progress,
            )
        # Ollama and OpenAI answer 404 for an unknown model; any other 404 is a wrong URL.
        unknown_model = status == 404 and "model" in text
        if unknown_model or any(marker in text for marker in traits.not_served_markers):
            return self._failure(
                ModelNotServedError,
                "not_served",
                f"{traits.label} does not serve model {self.model} {where}: pick a model id "
                "the provider serves",
                progress,
            )
        if status == 429 or any(marker in text for marker in traits.quota_markers):
            quota = _quota_summary(progress.headers)
            return self._failure(
                ModelQuotaError,
                "rate_limited",
                f"{self._who()} is rate-limited or out of quota {where}{quota}",
                progress,
            )
        if status >= 500 or status == 408:
            return self._failure(
                ModelUnavailableError,
                "server_error",
                f"{self._who()} failed on the provider's side {where}",
                progress,
            )
        hint = (
            f": check {traits.name.upper()}_BASE_URL (requests go to <base URL>/chat/completions)"
            if status == 404
            else ""
        )
        return self._failure(
            ModelRequestError,
            "bad_request",
            f"{self._who()} rejected the request {where}{hint}",
            progress,
        )


def _with_images(request: PreparedRequest) -> list[dict[str, Any]]:
    """Return the messages as sent: a message with images becomes a list of content parts
    (its text, then each image's caption and the image as a data URL)."""
    messages: list[dict[str, Any]] = [dict(m) for m in request.messages]
    for index, images in request.images:
        parts: list[dict[str, Any]] = [{"type": "text", "text": messages[index]["content"]}]
        for image in images:
            parts.append({"type": "text", "text": f"Chart: {image.caption}"})
            parts.append({"type": "image_url", "image_url": {"url": image.image().data_url()}})
        messages[index] = {**messages[index], "content": parts}
    return messages


def is_day_quota(error: ModelCallError, traits: ProviderTraits) -> bool:
    """Return True when a rate-limit error says the quota is gone for the day.

    Either its message carries a day-quota marker (DashScope's `insufficient_quota`), or the
    429's rate-limit headers show a daily remainder of 0 (ModelScope, whose per-minute limit and
    daily quota answer the same body).
    """
    text = str(error).lower()
    if any(marker in text for marker in traits.day_quota_markers):
        return True
    headers = error.attempts[-1].rate_limit_headers if error.attempts else {}
    return any(headers.get(name, "").strip() == "0" for name in traits.day_quota_headers)


def _pending(attempts: tuple[CallAttempt, ...], pending_id: int | None) -> tuple[CallAttempt, ...]:
    """Return `attempts` (one request's) carrying the id of its pending record."""
    if pending_id is None:
        return attempts
    return tuple(replace(attempt, pending_id=pending_id) for attempt in attempts)


def _reasoning_of(message: object) -> str:
    # Providers name it `reasoning_content` (DeepSeek, DashScope, ModelScope) or `reasoning`
    # (vLLM, Ollama); an absent, null or empty field all mean "no reasoning here".
    for name in ("reasoning_content", "reasoning"):
        value = getattr(message, name, None)
        if isinstance(value, str) and value:
            return value
    return ""


def _usage_of(usage: object | None) -> TokenUsage:
    if usage is None:
        return TokenUsage()
    details = getattr(usage, "completion_tokens_details", None)
    reasoning = getattr(details, "reasoning_tokens", None) if details is not None else None
    prompt = getattr(usage, "prompt_tokens", 0) or 0
    completion = getattr(usage, "completion_tokens", 0) or 0
    return TokenUsage(
        prompt_tokens=int(prompt),
        completion_tokens=int(completion),
        reasoning_tokens=int(reasoning or 0),
        total_tokens=int(getattr(usage, "total_tokens", 0) or prompt + completion),
    )


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"


def _error_message(body: object) -> str:
    """Return the provider's error message (and code) from any body shape seen in the wild."""
    if isinstance(body, Mapping):
        for container in (body, body.get("errors"), body.get("error")):
            if isinstance(container, Mapping) and isinstance(container.get("message"), str):
                message = str(container["message"]).strip()
                code = container.get("code")
                # Codes such as DashScope's `insufficient_quota` say more than the message.
                if isinstance(code, str) and code and code.lower() not in message.lower():
                    message = f"{message} [{code}]"
                return _clip(message)
        return _clip(json.dumps(body, ensure_ascii=False, default=str))
    if isinstance(body, str):
        return _clip(body)
    return ""


def _request_id(body: object) -> str | None:
    if isinstance(body, Mapping):
        for container in (body, body.get("errors"), body.get("error")):
            if isinstance(container, Mapping) and isinstance(container.get("request_id"), str):
                return str(container["request_id"])
    return None


def _quota_summary(headers: Mapping[str, str]) -> str:
    model_left = headers.get("modelscope-ratelimit-model-requests-remaining")
    model_limit = headers.get("modelscope-ratelimit-model-requests-limit")
    user_left = headers.get("modelscope-ratelimit-requests-remaining")
    user_limit = headers.get("modelscope-ratelimit-requests-limit")
    parts = []
    if model_left is not None:
        parts.append(f"model calls left today {model_left}/{model_limit or '?'}")
    if user_left is not None:
        parts.append(f"account calls left today {user_left}/{user_limit or '?'}")
    return f"; {', '.join(parts)}" if parts else ""
