"""Serving the dashboard: the socket, the uvicorn server, and serving inside `arena run`'s loop.

FastAPI and uvicorn are imported when a server starts, not when the command line loads. The app
itself is built by the composition root (`app.wiring.build_dashboard`) and handed in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Generator
from typing import Any

from app.config import Settings
from app.errors import ConfigError

log = logging.getLogger(__name__)


def dashboard_url(host: str, port: int) -> str:
    """Return the address to open in a browser."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 - only for display
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


def bind_socket(
    host: str, port: int, *, what: str = "the dashboard", setting: str = "SERVE_PORT"
) -> socket.socket:
    """Bind the listening socket ourselves, so a busy port is an error we can word."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, so that asyncio turns Nagle off on accepted connections (without it a
    # small answer written in two parts waits out the client's 40 ms delayed ACK).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as error:
        sock.close()
        raise ConfigError(
            f"{what} cannot listen on {host}:{port} ({error.strerror}): set {setting} "
            "to a free port (or --port)"
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve a non-loopback address without a token."""
    from app.web.app import check_bind as check

    check(host, token)


def make_server(app: Any, *, own_signals: bool) -> Any:
    """Return a uvicorn server for `app` (without its signal handlers inside `arena run`)."""
    import uvicorn

    class QuietServer(uvicorn.Server):
        """uvicorn minus its signal handlers: in `arena run` the daemon owns SIGINT/SIGTERM."""

        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            yield

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    return uvicorn.Server(config) if own_signals else QuietServer(config)


@contextlib.asynccontextmanager
async def serving(settings: Settings, app: Any) -> AsyncIterator[str | None]:
    """Serve the dashboard `app` in the running event loop until the block ends; yield its URL.

    A port already in use is a warning, not a stop: the arena matters more than its dashboard.
    """
    host, port = settings.serve.host, settings.serve.port
    token = settings.serve.token.get_secret_value() if settings.serve.token else None
    check_bind(host, token)
    try:
        sock = bind_socket(host, port)
    except ConfigError as error:
        log.warning("%s; the arena runs without its dashboard (--no-serve hides this)", error)
        yield None
        return
    server = make_server(app, own_signals=False)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    url = dashboard_url(host, sock.getsockname()[1])
    log.info("dashboard: %s", url)
    try:
        yield url
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)
        sock.close()
