"""`arena run`: the live arena (built by `app.wiring.build_live_arena`) and its cycle log lines."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from app.domain import floor_time
from app.scheduler import Daemon, utc_now
from app.trading.engine import CycleEngine, CycleReport

log = logging.getLogger(__name__)


def describe_report(report: CycleReport) -> list[str]:
    """Return the cycle's log lines: one per agent (status, fills or reason), then its exits."""
    when = f"cycle {report.scheduled_at:%Y-%m-%d %H:%M} UTC"
    lines = []
    for agent in report.agents:
        detail = f"{agent.fills} fill{'s' if agent.fills != 1 else ''}"
        if agent.error:
            detail = agent.error
        unrecorded = "" if agent.recorded or agent.status == "stopped" else "; NOT RECORDED"
        lines.append(f"{when}: {agent.agent} {agent.status} ({detail}{unrecorded})")
    if not lines:
        lines.append(f"{when}: nothing to do (already recorded)")
    if report.exit_fills:
        lines.append(f"{when}: {report.exit_fills} exits before the decisions")
    return lines


class LoggingRunner:
    """The engine, with a log line per cycle for the daemon's output.

    `guard` runs before each job and raises when the daemon may no longer write (its lock on a
    server database was lost and could not be taken back): the job is then skipped, not run.
    """

    def __init__(self, engine: CycleEngine, *, guard: Callable[[], None] | None = None) -> None:
        self.engine = engine
        self.guard = guard

    async def run_cycle(self, scheduled_at: datetime) -> CycleReport:
        """Run the cycle and log what it did."""
        if self.guard is not None:
            self.guard()
        report = await self.engine.run_cycle(scheduled_at)
        for line in describe_report(report):
            log.info("%s", line)
        return report

    async def run_monitor(self, now: datetime) -> int:
        """Apply exits up to `now` and log them."""
        if self.guard is not None:
            self.guard()
        exits = await self.engine.run_monitor(now)
        if exits:
            log.info("exit monitor: %d position%s closed", exits, "s" if exits != 1 else "")
        return exits


class ArenaClock:
    """The live clock, which a replayed cycle (`--once --at`) pins to its scheduled time."""

    def __init__(self) -> None:
        self.pinned: datetime | None = None

    def __call__(self) -> datetime:
        return self.pinned if self.pinned is not None else utc_now()


@dataclass
class LiveArena:
    """The live arena, built and ready: its engine, the daemon around it and their clock."""

    engine: CycleEngine
    daemon: Daemon
    clock: ArenaClock

    async def run_once(self, at: datetime | None = None) -> int:
        """Run one cycle: now's, or the one scheduled at `at` as if it were that time."""
        if at is None:
            return await self.daemon.run_once()
        scheduled_at = floor_time(at, self.daemon.interval)
        self.clock.pinned = scheduled_at
        try:
            return await self.daemon.run_once(scheduled_at)
        finally:
            self.clock.pinned = None

    async def run(self, *, once: bool = False, at: datetime | None = None) -> int:
        """Run until a signal (or one cycle with `once`); return the exit code."""
        if once:
            return await self.run_once(at)
        return await self.daemon.run_forever()
