"""`arena config`: check the settings and show them."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.console import print_json, stdout
from app.cli.context import get_settings
from app.cli.views import config_json, config_verdict_lines


def show_config(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Check the settings, print them (secrets masked) and say which agents can run."""
    payload = config_json(get_settings())
    if as_json:
        print_json(payload)
        return
    verdict = payload.pop("verdict")
    stdout.print_json(data=payload)
    for line in config_verdict_lines(verdict):
        stdout.print(line, highlight=False)
