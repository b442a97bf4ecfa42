"""`arena serve`: the dashboard and the nof1-compatible read API, read-only."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.context import get_settings
from app.errors import ConfigError


def serve_command(
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
    from app.web.command import bind_socket, check_bind, dashboard_url, make_server
    from app.wiring import build_dashboard, open_database

    settings = get_settings()
    serve_settings = settings.serve.model_copy(
        update={
            "host": host if host is not None else settings.serve.host,
            "port": port if port is not None else settings.serve.port,
        }
    )
    settings = settings.model_copy(update={"serve": serve_settings})
    token = settings.serve.token.get_secret_value() if settings.serve.token else None
    check_bind(serve_settings.host, token)
    open_database(settings).engine.dispose()  # created and migrated, then only read
    app = build_dashboard(settings, run=run)
    model = app.state.read_model
    if run != "live" and model.run(run) is None:
        known = ", ".join(r.run_id for r in model.runs()[:10]) or "none yet"
        raise ConfigError(f"--run {run!r}: no such run in the database (runs: {known})")
    sock = bind_socket(serve_settings.host, serve_settings.port)
    url = dashboard_url(serve_settings.host, sock.getsockname()[1])
    typer.echo(f"dashboard: {url}{'' if run == 'live' else '?run=' + run} (Ctrl+C to stop)")
    server = make_server(app, own_signals=True)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
