"""`arena quota`: each configured model's calls today, last-seen limits and runway."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.console import print_json, stderr, stdout
from app.cli.context import get_settings
from app.cli.options import WideOption
from app.cli.views import probe_lines, quota_json, quota_table
from app.errors import AppError, ConfigError
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
    wide: WideOption = False,
) -> None:
    """Show each configured model's calls today, last-seen limits and calls left at the cadence."""
    import asyncio
    from datetime import UTC, datetime

    from app import quota_report as quota
    from app.llm.openai_compat import ClientPool
    from app.wiring import open_database, quota_targets, quota_tracker

    settings = get_settings()
    database = open_database(settings)
    probes: list[quota.ProbeResult] = []
    if probe:
        count = len(quota.configured_models(settings.agents, chain=settings.agent_chain))
        stderr.print(
            f"[yellow]--probe spends quota:[/] one request to each of {count} model(s) "
            "(on ModelScope even a rejected request counts)."
        )

        async def spend_probes() -> list[quota.ProbeResult]:
            clients = ClientPool()
            try:
                targets = quota_targets(settings, clients)
                return await quota.probe_models(
                    targets, quota_tracker(database), now=datetime.now(UTC)
                )
            finally:
                await clients.aclose()

        probes = asyncio.run(spend_probes())
    report = quota.quota_report(settings, database.sessions, now=datetime.now(UTC))
    interval = settings.schedule.interval
    if as_json:
        print_json(quota_json(interval, report, probes))
    else:
        for line in probe_lines(probes):
            stderr.print(mask_secrets(line), highlight=False)
        stdout.print(quota_table(interval, report, wide=wide))
    if probes and not any(item.outcome == "ok" for item in probes):
        if all(item.outcome == "no_key" for item in probes):
            raise ConfigError(
                "no probe succeeded: no API key for any model; set the key in .env "
                "(see .env.example) and probe again"
            )
        outcomes = ", ".join(sorted({item.outcome for item in probes}))
        raise AppError(f"no probe succeeded ({len(probes)} tried: {outcomes})")
