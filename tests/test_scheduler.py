"""The daemon's schedule: aligned jobs that never overlap themselves, and a clean stop."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.triggers.interval import IntervalTrigger

from app.scheduler import BOUNDARY_DELAY, Daemon

NOW = datetime(2025, 10, 20, 10, 4, 30, tzinfo=UTC)


class RecordingRunner:
    """Records the jobs run; `endless` cycles start (setting `cycle_started`) and never end."""

    def __init__(self, fail: bool = False, endless: bool = False) -> None:
        self.cycles: list[datetime] = []
        self.monitors: list[datetime] = []
        self.fail = fail
        self.endless = endless
        self.cycle_started: asyncio.Event | None = None

    async def run_cycle(self, scheduled_at: datetime) -> None:
        self.cycles.append(scheduled_at)
        if self.endless:
            assert self.cycle_started is not None
            self.cycle_started.set()
            await asyncio.Event().wait()
        if self.fail:
            raise RuntimeError("exchange down")

    async def run_monitor(self, now: datetime) -> None:
        self.monitors.append(now)


def daemon(runner: RecordingRunner, **options: object) -> Daemon:
    return Daemon(
        runner,
        interval=timedelta(minutes=3),
        monitor_interval=timedelta(minutes=1),
        clock=lambda: NOW,
        **options,  # type: ignore[arg-type]
    )


def test_jobs_are_aligned_to_the_clock_and_never_overlap_themselves() -> None:
    """At 10:04:30 with a 3m interval the next boundary is 10:06; the monitor's is 10:05."""
    scheduler = daemon(RecordingRunner()).build_scheduler()
    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert set(jobs) == {"cycle", "monitor"}
    for job_id, step, first in (
        ("cycle", timedelta(minutes=3), datetime(2025, 10, 20, 10, 6, tzinfo=UTC)),
        ("monitor", timedelta(minutes=1), datetime(2025, 10, 20, 10, 5, tzinfo=UTC)),
    ):
        job = jobs[job_id]
        assert isinstance(job.trigger, IntervalTrigger)
        assert job.trigger.interval == step
        assert job.trigger.start_date == first + BOUNDARY_DELAY
        assert job.max_instances == 1
        assert job.coalesce is True


def test_the_cycle_job_runs_the_latest_boundary_and_survives_a_failure() -> None:
    runner = RecordingRunner(fail=True)
    arena = daemon(runner)
    asyncio.run(arena.cycle_job())  # the failure is logged, not raised
    assert runner.cycles == [datetime(2025, 10, 20, 10, 3, tzinfo=UTC)]


def test_a_second_stop_request_abandons_the_running_cycle() -> None:
    runner = RecordingRunner(endless=True)
    arena = daemon(runner, stop_budget_s=60.0)

    async def scenario() -> bool:
        runner.cycle_started = asyncio.Event()
        job = asyncio.create_task(arena.cycle_job())
        await runner.cycle_started.wait()
        arena.request_stop()
        arena.request_stop()  # the second one cancels
        await asyncio.gather(job, return_exceptions=True)
        return job.cancelled()

    assert asyncio.run(scenario()) is True
    # Once stopping, no new job starts (were one to start, it would record a cycle and end).
    runner.endless = False
    asyncio.run(arena.cycle_job())
    assert len(runner.cycles) == 1


def test_run_once_checks_exits_then_runs_the_cycle_of_the_given_time() -> None:
    runner = RecordingRunner()
    at = datetime(2025, 10, 20, 9, 0, 40, tzinfo=UTC)
    assert asyncio.run(daemon(runner).run_once(at)) == 0
    boundary = datetime(2025, 10, 20, 9, 0, tzinfo=UTC)
    assert runner.monitors == [boundary] and runner.cycles == [boundary]


def test_the_stop_budget_covers_everything_from_the_signal() -> None:
    """A stop asked at t=100 s (on the daemon's monotonic clock) when 3 s pass before the drain
    starts: the running cycle may take 30 - 5 - 3 = 22 s more, the teardown the 5 s left, and
    the watchdog is armed for the 27 s left minus its 0.5 s margin."""
    now = [100.0]
    armed: list[float] = []
    arena = daemon(
        RecordingRunner(),
        monotonic=lambda: now[0],
        start_watchdog=lambda delay_s, action: armed.append(delay_s),
    )
    assert arena.drain_timeout_s() == 25.0  # nothing asked yet: the whole budget
    arena.request_stop()
    now[0] = 103.0
    assert arena.stop_remaining_s() == 27.0
    assert arena.drain_timeout_s() == 22.0
    now[0] = 140.0
    assert arena.stop_remaining_s() == 0.0 and arena.drain_timeout_s() == 0.0


def test_the_daemon_arms_its_watchdog_and_stops_at_once_on_an_early_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A SIGTERM remembered before the daemon took the signal over (`app.early_stop`) stops it
    before its first cycle, and the watchdog is armed with what is left of the budget."""
    import app.scheduler as scheduler

    monkeypatch.setattr(scheduler, "take_pending_stop", lambda: signal.SIGTERM)
    armed: list[float] = []
    runner = RecordingRunner()
    arena = daemon(
        runner, monotonic=lambda: 50.0, start_watchdog=lambda delay_s, action: armed.append(delay_s)
    )
    assert asyncio.run(arena.run_forever()) == 0
    assert runner.cycles == []
    assert armed == [29.5]
