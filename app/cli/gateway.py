"""`arena gateway`: the OpenAI-compatible gateway in front of the model pools."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.context import get_settings


def gateway_command(
    host: Annotated[
        str | None, typer.Option("--host", help="Address to bind (default: GATEWAY_HOST).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", min=0, max=65_535, help="Port (default: GATEWAY_PORT, 8001)."),
    ] = None,
) -> None:
    """Serve the pools as an OpenAI-compatible API (/v1/chat/completions), with /status."""
    from app.gateway.app import check_bind
    from app.web.command import bind_socket, dashboard_url, make_server
    from app.wiring import build_gateway

    settings = get_settings()
    gateway = settings.gateway.model_copy(
        update={
            "host": host if host is not None else settings.gateway.host,
            "port": port if port is not None else settings.gateway.port,
        }
    )
    token = gateway.token.get_secret_value() if gateway.token else None
    check_bind(gateway.host, token)
    app = build_gateway(settings, reload_settings=get_settings)
    sock = bind_socket(gateway.host, gateway.port, what="the gateway", setting="GATEWAY_PORT")
    url = dashboard_url(gateway.host, sock.getsockname()[1])
    pools = ", ".join(app.state.services.pools.router.pools)
    typer.echo(f"gateway: {url}v1 (pools: {pools}; status: {url}status; Ctrl+C to stop)")
    server = make_server(app, own_signals=True)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
