"""The gateway's ASGI app: OpenAI-compatible chat over the pools, status, reload, quota query.

Without a token the app is open, which is only allowed on a loopback address (`check_bind`); with
one, every route but `/health` and the quota page asks for `Authorization: Bearer <token>`.
Upstream keys are the server's own; a client's key is used only by the quota query, for that
request, and is never stored, logged or echoed. Every 4xx/5xx body is OpenAI's error envelope.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from openai.types.chat import ChatCompletionChunk
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from app.bind import refuse_open_bind
from app.errors import ConfigError, ModelCallError, NoModelAvailableError
from app.gateway.page import QUOTA_PAGE
from app.gateway.services import GatewayServices, model_entries, pool_entries, status_body
from app.gateway.shapes import (
    BadRequest,
    ChatRequest,
    completion_body,
    error_body,
    parse_chat_request,
    routing_note,
)
from app.llm.complexity import pick_tier
from app.llm.openai_compat import ChunkRelay
from app.llm.pool import POOL_PREFIX, PoolMember, PoolRouter, Routed, tier_order

log = logging.getLogger(__name__)

POOL_HEADER: Final = "x-gateway-pool"
TIER_HEADER: Final = "x-gateway-tier"
SERVED_HEADER: Final = "x-gateway-model"
PROVIDER_HEADER: Final = "x-gateway-provider"
PASSED_HEADER: Final = "x-gateway-passed-over"
_OPEN_PATHS: Final = ("/health", "/quota")
MAX_QUOTA_MODELS: Final = 50


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve a non-loopback address without `GATEWAY_TOKEN`."""
    refuse_open_bind(host, token, server="the gateway", setting="GATEWAY_TOKEN")


def _error(
    status: int, message: str, *, kind: str, code: str | None = None, param: str | None = None
) -> JSONResponse:
    return JSONResponse(error_body(message, kind=kind, code=code, param=param), status_code=status)


async def _read_json(request: Request, limit_bytes: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit_bytes:
        raise BadRequest(
            f"the request body is over {limit_bytes} bytes", status=413, code="body_too_large"
        )
    pieces, size = [], 0
    async for piece in request.stream():
        size += len(piece)
        if size > limit_bytes:
            raise BadRequest(
                f"the request body is over {limit_bytes} bytes", status=413, code="body_too_large"
            )
        pieces.append(piece)
    try:
        return json.loads(b"".join(pieces) or b"null")
    except (ValueError, UnicodeDecodeError) as error:
        raise BadRequest(f"the request body is not valid JSON ({error})") from None


def _members_for(
    services: GatewayServices, chat: ChatRequest, header_pool: str | None
) -> tuple[list[PoolMember], str | None]:
    pools = services.pools
    router = pools.router
    name: str | None = None
    if header_pool:
        name = header_pool
    elif chat.model == "pool":
        name = pools.default_pool
    elif chat.model.startswith(POOL_PREFIX):
        name = chat.model[len(POOL_PREFIX) :]
    if name is not None:
        pool = router.pools.get(name)
        if pool is None:
            known = ", ".join(router.pools) or "none configured"
            raise BadRequest(
                f"no pool {name!r} (pools: {known})",
                status=404,
                code="model_not_found",
                param="model",
            )
        return pool.enabled(), name
    member = router.find_model(chat.model)
    if member is None:
        raise BadRequest(
            f"the model {chat.model!r} is in no pool: name a pool (pool:NAME) or one of "
            "GET /v1/models",
            status=404,
            code="model_not_found",
            param="model",
        )
    if not member.enabled:
        raise BadRequest(
            f"the model {chat.model!r} is disabled in its pool",
            status=404,
            code="model_not_found",
            param="model",
        )
    return [member], None


def _tier_override(value: str | None) -> int | None:
    if value is None:
        return None
    if value.strip() not in ("1", "2", "3", "4"):
        raise BadRequest(f"{TIER_HEADER} must be 1, 2, 3 or 4", param=TIER_HEADER)
    return int(value)


def _headers(routed: Routed) -> dict[str, str]:
    model = routed.member.model
    headers = {SERVED_HEADER: model.model, PROVIDER_HEADER: model.provider}
    if routed.tried:
        headers[PASSED_HEADER] = ", ".join(t.model for t in routed.tried)
    return headers


def _failure_response(error: ModelCallError) -> JSONResponse:
    if isinstance(error, NoModelAvailableError) and error.until is not None:
        return _error(429, str(error), kind="rate_limit_error", code="no_model_available")
    return _error(502, str(error), kind="upstream_error", code="no_model_answered")


def _chunk_json(chunk: ChatCompletionChunk, served_model: str) -> bytes:
    payload = chunk.to_dict(mode="json", exclude_unset=True)
    payload["model"] = served_model
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


class _Routing:
    """One streamed request's routing in a task of its own, its chunks queued for the answer."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[ChatCompletionChunk | None] = asyncio.Queue()
        self.relay = ChunkRelay(self.queue.put)
        self.task: asyncio.Task[Routed] | None = None


def _services(request: Request) -> GatewayServices:
    services: GatewayServices = request.app.state.services
    return services


class _TokenCheck:
    """Ask every request but the open paths for the gateway token (a plain ASGI middleware:
    starlette's `BaseHTTPMiddleware` costs a task and a stream copy per request)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in _OPEN_PATHS:
            given = Headers(scope=scope).get("authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                value.strip().encode(), self.token
            ):
                refusal = _error(
                    401,
                    "send the gateway token as Authorization: Bearer <GATEWAY_TOKEN>",
                    kind="invalid_request_error",
                    code="invalid_api_key",
                )
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _bad_request(_: Request, error: Exception) -> Response:
    assert isinstance(error, BadRequest)
    return _error(error.status, str(error), kind=error.kind, code=error.code, param=error.param)


async def _http_error(_: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    return _error(error.status_code, str(error.detail), kind="invalid_request_error")


async def health() -> dict[str, str]:
    """Answer that the gateway is up."""
    return {"status": "healthy"}


async def list_models(request: Request) -> dict[str, Any]:
    """List the pools and their models with tier, switch, today's calls and what is left."""
    services = _services(request)
    quota = services.pools.router.quota
    now = quota.clock()
    entries = await asyncio.to_thread(model_entries, services, now, quota.skips(now))
    return {"object": "list", "data": [*pool_entries(services.pools.router.pools), *entries]}


async def status(request: Request) -> dict[str, Any]:
    """Show today's usage, the limits seen, the skips and when they end."""
    services = _services(request)
    quota = services.pools.router.quota
    now = quota.clock()
    return await asyncio.to_thread(status_body, services, now, quota.skips(now))


async def reload(request: Request) -> JSONResponse:
    """Re-read the pool settings; refuse invalid ones and keep the pools in force."""
    services = _services(request)
    try:
        pools = await asyncio.to_thread(services.reload)
    except ConfigError as error:
        return _error(
            400,
            f"settings refused, the old pools stay: {error}",
            kind="invalid_request_error",
            code="invalid_settings",
        )
    services.pools = pools
    summary = {
        name: [{"model": m.model.model, "tier": m.tier, "enabled": m.enabled} for m in pool.members]
        for name, pool in pools.router.pools.items()
    }
    return JSONResponse({"reloaded": True, "pools": summary})


async def chat_completions(request: Request) -> Response:
    """Answer an OpenAI chat-completions request from the first pool model that can."""
    services = _services(request)
    chat = parse_chat_request(
        await _read_json(request, services.max_body_bytes), budget_s=services.budget_s
    )
    pools = services.pools  # a reload during the request does not change it midway
    members, pool_name = _members_for(services, chat, request.headers.get(POOL_HEADER))
    tier = _tier_override(request.headers.get(TIER_HEADER))
    score = None
    if tier is None and pools.scorer is not None and pool_name is not None:
        choice = await pick_tier(pools.scorer, chat.messages, default_tier=pools.default_tier)
        tier, score = choice.tier, choice.score
    ordered = tier_order(members, tier)
    if chat.stream:
        return await _stream(pools.router, ordered, chat)
    try:
        routed = await pools.router.route(ordered, chat.messages, chat.options)
    except ModelCallError as error:
        return _failure_response(error)
    served = routed.member.model
    note = routing_note(
        provider=served.provider,
        model=served.model,
        tier=routed.member.tier,
        pool=pool_name,
        tried=routed.tried,
        score=score,
    )
    body = completion_body(routed.result, served_model=served.model, extra=note)
    return JSONResponse(body, headers=_headers(routed))


async def _stream(router: PoolRouter, ordered: list[PoolMember], chat: ChatRequest) -> Response:
    routing = _Routing()

    async def run() -> Routed:
        try:
            return await router.route(ordered, chat.messages, chat.options, relay=routing.relay)
        finally:
            await routing.queue.put(None)

    routing.task = asyncio.create_task(run())
    first = await routing.queue.get()
    if first is None:
        # Ended before any chunk: an error the client gets as JSON, with its status.
        try:
            routed = await routing.task
        except ModelCallError as error:
            return _failure_response(error)
        return _error(
            502, f"{routed.member.model.model} sent an empty stream", kind="upstream_error"
        )
    member = next((m for m in ordered if m.model.model == routing.relay.label), ordered[0])
    served = member.model.model
    task = routing.task

    async def events() -> AsyncIterator[bytes]:
        try:
            yield _chunk_json(first, served)
            while (chunk := await routing.queue.get()) is not None:
                yield _chunk_json(chunk, served)
            try:
                await task
            except ModelCallError as error:
                body = error_body(str(error), kind="upstream_error", code="stream_failed")
                yield f"data: {json.dumps(body, ensure_ascii=False)}\n\n".encode()
                return
            yield b"data: [DONE]\n\n"
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ModelCallError):
                    await task

    headers = {
        SERVED_HEADER: served,
        PROVIDER_HEADER: member.model.provider,
        "cache-control": "no-cache",
    }
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


async def quota_page() -> HTMLResponse:
    """Serve the quota query page."""
    return HTMLResponse(QUOTA_PAGE)


async def quota_query(request: Request) -> JSONResponse:
    """Ask the listed models with the caller's key (`X-API-Key`, this request only)."""
    services = _services(request)
    key = request.headers.get("x-api-key", "").strip()
    if not key:
        raise BadRequest(
            "send the ModelScope key to query in the X-API-Key header",
            status=401,
            code="missing_api_key",
        )
    body = await _read_json(request, services.max_body_bytes)
    models = body.get("models") if isinstance(body, dict) else body
    if (
        not isinstance(models, list)
        or not models
        or not all(isinstance(m, str) and m.strip() for m in models)
    ):
        raise BadRequest('send a JSON list of model ids (or {"models": [...]})', param="models")
    if len(models) > MAX_QUOTA_MODELS:
        raise BadRequest(f"at most {MAX_QUOTA_MODELS} models per query", param="models")
    probes = await services.quota_query(key, [m.strip() for m in models])
    return JSONResponse(
        {
            "results": [probe.as_json() for probe in probes],
            "note": "each probe spent one request of that model's daily quota",
        }
    )


def create_gateway_app(services: GatewayServices) -> FastAPI:
    """Return the gateway app over `services` (see the module docstring)."""
    app = FastAPI(title="Alpha Arena gateway", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.services = services
    if services.token:
        app.add_middleware(_TokenCheck, token=services.token)
    app.add_exception_handler(BadRequest, _bad_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/v1/models", list_models, methods=["GET"])
    app.add_api_route("/status", status, methods=["GET"])
    app.add_api_route("/reload", reload, methods=["POST"])
    app.add_api_route("/v1/chat/completions", chat_completions, methods=["POST"])
    app.add_api_route("/quota", quota_page, methods=["GET"], response_class=HTMLResponse)
    app.add_api_route("/api/quota/query", quota_query, methods=["POST"])
    return app
