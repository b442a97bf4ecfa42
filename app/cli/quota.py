"""`arena quota`: each configured model's calls today, last-seen limits and runway."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.console import print_json, stderr, stdout
from app.cli.context import get_settings, migrate_database
from app.cli.views import probe_lines, quota_json, quota_table
from app.logs import mask_secrets


def show_quota(
    probe: Annotated[
        bool,
        typer.Option(
            "--probe",
            help="Spend one minimal request per model to read fresh limits (this SPENDS quota).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show each configured model's calls today, last-seen limits and calls left at the cadence."""
    import asyncio
    from datetime import UTC, datetime

    from app.db.session import make_engine, make_session_factory
    from app.llm import quota_report as quota

    settings = get_settings()
    migrate_database(settings)
    session_factory = make_session_factory(make_engine(settings.database.url))
    probes: list[quota.ProbeResult] = []
    if probe:
        count = len(quota.configured_models(settings.agents))
        stderr.print(
            f"[yellow]--probe spends quota:[/] one request to each of {count} model(s) "
            "(on ModelScope even a rejected request counts)."
        )
        probes = asyncio.run(quota.probe_models(settings, session_factory, now=datetime.now(UTC)))
    report = quota.quota_report(settings, session_factory, now=datetime.now(UTC))
    interval = settings.schedule.interval
    if as_json:
        print_json(quota_json(interval, report, probes))
        return
    for line in probe_lines(probes):
        stderr.print(mask_secrets(line), highlight=False)
    stdout.print(quota_table(interval, report))
