"""`arena config`: check the settings and show them."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.console import print_json, stdout
from app.cli.context import get_settings
from app.cli.views import config_json


def show_config(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Check the settings and print them (secrets masked)."""
    payload = config_json(get_settings())
    if as_json:
        print_json(payload)
        return
    stdout.print_json(data=payload)
