"""The daemon: APScheduler (3.x, asyncio) runs decision cycles and the exit monitor.

- The decision cycle runs at start, then on the interval aligned to the clock (a 3m interval fires
  at :00, :03, :06...). Its scheduled time (the boundary) is the agent-cycles' idempotency key.
- The exit monitor (take-profit, stop-loss, liquidation, funding) runs at its faster cadence.
- `max_instances=1` and coalesced misfires: a slow cycle is never overlapped by the next one, and
  after a pause only one catch-up run happens.
- SIGINT/SIGTERM: the whole stop takes at most `STOP_BUDGET_S` (30 s) from the signal: the running
  cycle gets what is left of it minus `TEARDOWN_RESERVE_S` to finish, then is cancelled, and the
  rest closes the connections. Should anything still hold the process at the budget's end, a
  watchdog ends it there. Each agent-cycle is written in one transaction, so either way nothing
  is half-written. Exit code 0. A SIGTERM that came before the daemon could handle it
  (`app.early_stop`) stops it before its first cycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from app.domain import floor_time
from app.early_stop import arm_watchdog, take_pending_stop

log = logging.getLogger(__name__)

# Fire a little after each boundary so the exchange has closed the candle that ends there.
BOUNDARY_DELAY: Final = timedelta(seconds=2)
# The promise: from a stop signal to the process's end, at most this long.
STOP_BUDGET_S: Final = 30.0
# Of the budget, what closing the exchange, the models' clients and the dashboard may take.
TEARDOWN_RESERVE_S: Final = 5.0
# The watchdog fires this much before the budget ends (the exit itself takes a moment).
WATCHDOG_MARGIN_S: Final = 0.5


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
        stop_budget_s: float = STOP_BUDGET_S,
        teardown_reserve_s: float = TEARDOWN_RESERVE_S,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        start_watchdog: Callable[[float, Callable[[], None]], object] | None = None,
    ) -> None:
        self.runner = runner
        self.interval = interval
        self.monitor_interval = monitor_interval
        self.stop_budget_s = stop_budget_s
        self.teardown_reserve_s = teardown_reserve_s
        self.clock = clock
        self.monotonic = monotonic
        self.start_watchdog = start_watchdog or arm_watchdog
        # When the first stop was asked (on `monotonic`); None while running.
        self.stop_asked_at: float | None = None
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
        log.info(
            "%s received: finishing the running cycle, then exiting (within %g s)",
            name,
            self.stop_budget_s,
        )
        self.stop_asked_at = self.monotonic()
        self._stop.set()

    def stop_remaining_s(self) -> float:
        """Return what is left of the stop budget (all of it while no stop was asked)."""
        if self.stop_asked_at is None:
            return self.stop_budget_s
        return max(0.0, self.stop_budget_s - (self.monotonic() - self.stop_asked_at))

    def drain_timeout_s(self) -> float:
        """Return how long the running cycle may still take: the budget minus the teardown's."""
        return max(0.0, self.stop_remaining_s() - self.teardown_reserve_s)

    async def run_forever(self) -> int:
        """Run until SIGINT/SIGTERM; return the exit code (0)."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, self.request_stop, signum)
        early = take_pending_stop()
        if early is not None:  # asked while the arena was being built: no cycle runs
            self.request_stop(early)
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
            # Whatever holds the process past the budget (a write stuck behind another
            # process's lock, a server that will not close), it ends there.
            self.start_watchdog(self.stop_remaining_s() - WATCHDOG_MARGIN_S, _exit_now)
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
        _, still = await asyncio.wait(pending, timeout=self.drain_timeout_s())
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


def _exit_now() -> None:
    """End the process at the stop budget's end, whatever still holds it."""
    log.error(
        "the stop took %g s: exiting now (agent-cycles not recorded will rerun at the next start)",
        STOP_BUDGET_S,
    )
    logging.shutdown()
    os._exit(0)


def _describe(step: timedelta) -> str:
    seconds = int(step.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"
