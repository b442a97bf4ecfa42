"""The ASGI app: pages, the JSON APIs, the token check and JSON errors.

Read-only by construction: every route is a GET (the login form aside, which only sets a cookie)
and the read model's connections refuse writes. Without a token the app is open, which is only
allowed on a loopback address (`check_bind`); with one, every route but the login asks for it, as
`Authorization: Bearer <token>` or the cookie the login sets.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import __version__
from app.bind import refuse_open_bind
from app.web import pages
from app.web.api import nof1_router, v1_router
from app.web.readmodel import ReadModel

log = logging.getLogger(__name__)

STATIC_DIR: Final = Path(__file__).parent / "static"
COOKIE_NAME: Final = "arena_token"
_OPEN_PATHS: Final = ("/login", "/static/", "/health")


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve a non-loopback address without a token (anyone could read the arena)."""
    refuse_open_bind(host, token, server="the dashboard", setting="SERVE_TOKEN")


def create_app(
    read_model: ReadModel, *, default_run: str = "live", token: str | None = None
) -> FastAPI:
    """Build the dashboard over `read_model`; `token`, if given, guards every route."""
    app = FastAPI(
        title="Alpha Arena",
        version=__version__,
        description=(
            "The arena's dashboard and read-only API. `/api/*` answers in the paths and field "
            "names of nof1's Alpha Arena API, with this arena's data; `/api/v1/*` is the richer "
            "API the pages use. Every endpoint takes `?run=` (default: the live run)."
        ),
    )
    app.state.read_model = read_model
    app.state.default_run = default_run
    app.include_router(nof1_router)
    app.include_router(v1_router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _add_errors(app)
    _add_login(app, token)
    if token:
        _add_token_check(app, token)
    return app


def _json_error(status: int, message: str, detail: object = None) -> JSONResponse:
    body: dict[str, object] = {"error": message}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(status_code=status, content=body)


def _add_errors(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            {
                "loc": [str(part) for part in item.get("loc", ())],
                "msg": str(item.get("msg", "invalid")),
            }
            for item in error.errors()
        ]
        return _json_error(422, "invalid request parameters", problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> Response:
        message = str(error.detail)
        if error.status_code == 404 and pages.wants_html(request):
            return pages.error_page(request, 404, message)
        return _json_error(error.status_code, message)

    @app.exception_handler(Exception)
    async def _crash(_request: Request, error: Exception) -> JSONResponse:
        # Logged with its type only: a message could quote data, never a secret (none is read).
        log.error("dashboard request failed: %s", type(error).__name__, exc_info=error)
        return _json_error(500, "internal error")


def _add_login(app: FastAPI, token: str | None) -> None:
    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_form(request: Request) -> Response:
        if not token:
            return RedirectResponse("/", status_code=303)
        return pages.login_page(request, failed=False)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        if not token:
            return RedirectResponse("/", status_code=303)
        # A one-field form: parsed here rather than with a multipart library.
        body = (await request.body())[:4096].decode("utf-8", errors="replace")
        password = (parse_qs(body).get("password") or [""])[0]
        if not hmac.compare_digest(password.encode(), token.encode()):
            return pages.login_page(request, failed=True, status_code=401)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            COOKIE_NAME, token, httponly=True, samesite="strict", max_age=30 * 86_400
        )
        return response

    @app.get("/health", include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}


def _add_token_check(app: FastAPI, token: str) -> None:
    expected = token.encode()

    @app.middleware("http")
    async def _check(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        path = request.url.path
        if path.startswith(_OPEN_PATHS):
            return await call_next(request)
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else ""
        given = given or request.cookies.get(COOKIE_NAME, "")
        if given and hmac.compare_digest(given.encode(), expected):
            return await call_next(request)
        if pages.wants_html(request):
            return RedirectResponse("/login", status_code=303)
        return _json_error(401, "a token is required: Authorization: Bearer <SERVE_TOKEN>")
