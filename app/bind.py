"""Which addresses other machines can reach, and the refusal to serve one without a token.

Shared by the dashboard (`arena serve`, `SERVE_TOKEN`) and the gateway (`arena gateway`,
`GATEWAY_TOKEN`): both bind 127.0.0.1 by default and need a token for any other address.
"""

from __future__ import annotations

import ipaddress

from app.errors import ConfigError


def is_loopback(host: str) -> bool:
    """Return True when `host` only listens on this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def refuse_open_bind(host: str, token: str | None, *, server: str, setting: str) -> None:
    """Raise `ConfigError` when `server` would listen on a non-loopback `host` without a token."""
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"{server} would listen on {host}, which other machines can reach, without a "
            f"token: set {setting} (e.g. {setting}=$(openssl rand -hex 24)) or bind "
            "127.0.0.1"
        )
