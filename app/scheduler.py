"""The daemon: APScheduler (3.x, asyncio) runs decision cycles and the exit monitor.

- The decision cycle runs at start, then on the interval aligned to the clock (a 3m interval fires
  at :00, :03, :06...). Its scheduled time (the boundary) is the agent-cycles' idempotency key.
- The exit monitor (take-profit, stop-loss, liquidation, funding) runs at its faster cadence.
- `max_instances=1` and coalesced misfires: a slow cycle is never overlapped by the next one, and
  after a pause only one catch-up run happens.
- SIGINT/SIGTERM: the running cycle gets a grace period to finish, then is cancelled. Each
  agent-cycle is written in one transaction, so either way nothing is half-written. Exit code 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from app.domain import floor_time

log = logging.getLogger(__name__)

# Fire a little after each boundary so the exchange has closed the candle that ends there.
BOUNDARY_DELAY: Final = timedelta(seconds=2)


def utc_now() -> datetime:
    """Return the current time in UTC (the daemon's only clock read)."""
    return datetime.now(UTC)


class CycleRunner(Protocol):
    """What the daemon drives: the engine with its market, agents and store."""

    async def run_cycle(self, scheduled_at: datetime) -> object:
        """Run every agent's cycle scheduled at `scheduled_at` (skipping those already done)."""
        ...

    async def run_monitor(self, now: datetime) -> object:
        """Apply exits and funding up to `now` for every agent with open positions."""
        ...


class Daemon:
    """Schedule decision cycles and the exit monitor until a signal arrives."""

    def __init__(
        self,
        runner: CycleRunner,
        *,
        interval: timedelta,
        monitor_interval: timedelta,
        grace_s: float = 30.0,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.runner = runner
        self.interval = interval
        self.monitor_interval = monitor_interval
        self.grace_s = grace_s
        self.clock = clock
        self._stop = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self.scheduler: AsyncIOScheduler | None = None

    # -- jobs ---------------------------------------------------------------------------------

    async def _guarded(self, name: str, work: Callable[[], Awaitable[object]]) -> None:
        if self._stop.is_set():
            return
        task = asyncio.current_task()
        assert task is not None
        self._running.add(task)
        try:
            await work()
        except asyncio.CancelledError:
            log.warning(
                "%s abandoned at shutdown; the agent-cycles not yet recorded will rerun", name
            )
            raise
        except Exception:
            # One failed cycle must not stop the daemon; the next one starts fresh.
            log.exception("%s failed", name)
        finally:
            self._running.discard(task)

    async def cycle_job(self) -> None:
        """Run the decision cycle for the latest boundary."""
        scheduled_at = floor_time(self.clock(), self.interval)
        await self._guarded(
            f"cycle {scheduled_at:%Y-%m-%d %H:%M}", lambda: self.runner.run_cycle(scheduled_at)
        )

    async def monitor_job(self) -> None:
        """Apply exits and funding up to now."""
        now = self.clock()
        await self._guarded("exit monitor", lambda: self.runner.run_monitor(now))

    # -- lifecycle ----------------------------------------------------------------------------

    def build_scheduler(self) -> AsyncIOScheduler:
        """Create the scheduler with both jobs registered (not started)."""
        now = self.clock()
        scheduler = AsyncIOScheduler(timezone=UTC)
        scheduler.add_job(
            self.cycle_job,
            IntervalTrigger(
                seconds=self.interval.total_seconds(),
                start_date=floor_time(now, self.interval) + self.interval + BOUNDARY_DELAY,
                timezone=UTC,
            ),
            id="cycle",
            name="decision cycle",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(1, int(self.interval.total_seconds() // 2)),
        )
        scheduler.add_job(
            self.monitor_job,
            IntervalTrigger(
                seconds=self.monitor_interval.total_seconds(),
                start_date=floor_time(now, self.monitor_interval)
                + self.monitor_interval
                + BOUNDARY_DELAY,
                timezone=UTC,
            ),
            id="monitor",
            name="exit monitor",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(1, int(self.monitor_interval.total_seconds() // 2)),
        )
        return scheduler

    def request_stop(self, signum: int | None = None) -> None:
        """Ask the daemon to stop after the running job (a second request cancels it)."""
        if self._stop.is_set():
            log.warning("second stop request: abandoning the running cycle")
            for task in list(self._running):
                task.cancel()
            return
        name = signal.Signals(signum).name if signum is not None else "stop"
        log.info("%s received: finishing the running cycle, then exiting", name)
        self._stop.set()

    async def run_forever(self) -> int:
        """Run until SIGINT/SIGTERM; return the exit code (0)."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, self.request_stop, signum)
        self.scheduler = self.build_scheduler()
        self.scheduler.start()
        log.info(
            "arena running: a decision cycle every %s, exits checked every %s (Ctrl+C to stop)",
            _describe(self.interval),
            _describe(self.monitor_interval),
        )
        try:
            # The first cycle runs at start (for the latest boundary), as the README promises.
            first = asyncio.create_task(self.cycle_job())
            await self._stop.wait()
            self.scheduler.pause()
            await self._drain(first)
        finally:
            self.scheduler.shutdown(wait=False)
            for signum in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(signum)
        log.info("arena stopped")
        return 0

    async def _drain(self, *extra: asyncio.Task[Any]) -> None:
        pending = {task for task in (*self._running, *extra) if not task.done()}
        if not pending:
            return
        _, still = await asyncio.wait(pending, timeout=self.grace_s)
        for task in still:
            task.cancel()
        if still:
            await asyncio.gather(*still, return_exceptions=True)

    async def run_once(self, at: datetime | None = None) -> int:
        """Run the monitor and one decision cycle (for `at`, default the latest boundary)."""
        scheduled_at = floor_time(at or self.clock(), self.interval)
        await self.runner.run_monitor(scheduled_at)
        await self.runner.run_cycle(scheduled_at)
        return 0


def _describe(step: timedelta) -> str:
    seconds = int(step.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"
