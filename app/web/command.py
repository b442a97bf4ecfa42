"""`arena serve`, and the dashboard `arena run` serves from its own event loop.

FastAPI and uvicorn are imported when a server starts, not when the command line loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable, Generator
from typing import Annotated, Any

import typer

from app.config import Settings
from app.errors import ConfigError

log = logging.getLogger(__name__)


def dashboard_url(host: str, port: int) -> str:
    """Return the address to open in a browser."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 - only for display
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


def build_app(settings: Settings, *, run: str = "live") -> Any:
    """Return the dashboard app over the configured database (opened read-only)."""
    from app.web.app import create_app
    from app.web.readmodel import ReadModel, open_read_engine

    token = settings.serve.token.get_secret_value() if settings.serve.token else None
    model = ReadModel(open_read_engine(settings.database.url))
    return create_app(model, default_run=run, token=token or None)


def bind_socket(host: str, port: int) -> socket.socket:
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
            f"the dashboard cannot listen on {host}:{port} ({error.strerror}): set SERVE_PORT "
            "to a free port (or --port)"
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve a non-loopback address without a token."""
    from app.web.app import check_bind as check

    check(host, token)


def _server(app: Any, *, own_signals: bool) -> Any:
    import uvicorn

    class QuietServer(uvicorn.Server):
        """uvicorn minus its signal handlers: in `arena run` the daemon owns SIGINT/SIGTERM."""

        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            yield

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    return uvicorn.Server(config) if own_signals else QuietServer(config)


@contextlib.asynccontextmanager
async def serving(settings: Settings, *, run: str = "live") -> AsyncIterator[str | None]:
    """Serve the dashboard in the running event loop until the block ends; yield its URL.

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
    server = _server(build_app(settings, run=run), own_signals=False)
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


def serve_command_for(get_settings: Callable[..., Settings]) -> Callable[..., None]:
    """Return the `arena serve` command, reading settings the way the other commands do."""

    def serve(
        host: Annotated[
            str | None, typer.Option("--host", help="Address to bind (default: SERVE_HOST).")
        ] = None,
        port: Annotated[
            int | None,
            typer.Option("--port", min=0, max=65_535, help="Port (default: SERVE_PORT)."),
        ] = None,
        run: Annotated[
            str, typer.Option("--run", help="Run shown by default: 'live' or a backtest's id.")
        ] = "live",
    ) -> None:
        """Serve the dashboard and the nof1-compatible read API (read-only)."""
        settings = get_settings()
        serve_settings = settings.serve.model_copy(
            update={
                "host": host if host is not None else settings.serve.host,
                "port": port if port is not None else settings.serve.port,
            }
        )
        from app.db.migrate import upgrade

        settings = settings.model_copy(update={"serve": serve_settings})
        token = settings.serve.token.get_secret_value() if settings.serve.token else None
        check_bind(serve_settings.host, token)
        upgrade(settings.database.url)
        app = build_app(settings, run=run)
        model = app.state.read_model
        if run != "live" and model.run(run) is None:
            known = ", ".join(r.run_id for r in model.runs()[:10]) or "none yet"
            raise ConfigError(f"--run {run!r}: no such run in the database (runs: {known})")
        sock = bind_socket(serve_settings.host, serve_settings.port)
        url = dashboard_url(serve_settings.host, sock.getsockname()[1])
        typer.echo(f"dashboard: {url}{'' if run == 'live' else '?run=' + run} (Ctrl+C to stop)")
        server = _server(app, own_signals=True)
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()

    return serve
