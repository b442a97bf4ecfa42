"""Where an evaluation's windows run: a local process pool or a Ray cluster, behind one interface.

Each window is one task: the worker opens the database of the settings it is handed, runs the
window with the backtest code (`run_window_sync`) and returns the window's result as JSON. The
driver gets the results back as they finish, in any order, and records and aggregates them. A
window's numbers depend only on the window (the backtest starts flat, `random` draws from the
cycle times), so the executor and the number of workers change the speed, never the figures.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from app.config import Settings
from app.errors import ConfigError
from app.evaluation.limiter import BudgetManager, SharedCallBudget, ray_budget
from app.evaluation.results import WindowResult
from app.evaluation.window_run import WindowJob, run_window_sync
from app.evaluation.windows import Window
from app.llm.quota import CallBudget

ExecutorName = Literal["local", "ray"]


@dataclass(frozen=True, slots=True)
class WindowTask:
    """One window to run and everything the worker needs for it (all picklable values)."""

    settings: Settings
    job: WindowJob
    window: Window
    # Where the window's run is recorded (None: the settings' database); see `run_window_sync`.
    run_database_url: str | None = None
    # The model calls every worker shares (set by the executor from the plan's limits).
    budget: CallBudget | None = None


CallLimits = Mapping[tuple[str, str], int]


def run_window_task(task: WindowTask) -> dict[str, Any]:
    """Run one window in this process and return its result as JSON (the worker's entry)."""
    result = run_window_sync(
        task.settings,
        task.job,
        task.window,
        run_database_url=task.run_database_url,
        budget=task.budget,
    )
    return result.to_json()


def _with_budget(tasks: Sequence[WindowTask], budget: CallBudget | None) -> list[WindowTask]:
    return [replace(task, budget=budget) for task in tasks]


class WindowExecutor(Protocol):
    """Runs window tasks and yields their results as they finish."""

    @property
    def workers(self) -> int:
        """Return how many windows run at once."""
        ...

    def run(
        self, tasks: Sequence[WindowTask], *, call_limits: CallLimits | None = None
    ) -> Iterator[WindowResult]:
        """Run `tasks` and yield each window's result when it finishes (any order).

        `call_limits`: the calls each model may be sent, shared by every worker (one budget).
        """
        ...


def default_workers() -> int:
    """Return the number of CPUs this process may use (the local pool's default)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # pragma: no cover - not on Linux
        return max(os.cpu_count() or 1, 1)


class InlineExecutor:
    """Every window in this process, one after the other (`--workers 0`; no pool to start)."""

    @property
    def workers(self) -> int:
        return 1

    def run(
        self, tasks: Sequence[WindowTask], *, call_limits: CallLimits | None = None
    ) -> Iterator[WindowResult]:
        budget = None if not call_limits else SharedCallBudget(call_limits)
        for task in _with_budget(tasks, budget):
            yield WindowResult.from_json(run_window_task(task))


class LocalExecutor:
    """A pool of worker processes on this machine (started fresh: spawn, not fork).

    Spawned workers import the project themselves instead of inheriting the driver's open
    database connections and event loop, which a forked child must not use.
    """

    def __init__(self, workers: int | None = None) -> None:
        if workers is not None and workers < 1:
            raise ConfigError(f"--workers must be at least 1 (0: in this process), got {workers}")
        self._workers = workers or default_workers()

    @property
    def workers(self) -> int:
        return self._workers

    def run(
        self, tasks: Sequence[WindowTask], *, call_limits: CallLimits | None = None
    ) -> Iterator[WindowResult]:
        if not tasks:
            return
        context = multiprocessing.get_context("spawn")
        manager = None
        budget: CallBudget | None = None
        if call_limits:
            # One budget in a manager process; the workers call it through picklable proxies.
            manager = BudgetManager(ctx=context)
            manager.start()
            budget = manager.SharedCallBudget(dict(call_limits))  # type: ignore[attr-defined]
        pool = ProcessPoolExecutor(max_workers=min(self._workers, len(tasks)), mp_context=context)
        try:
            pending: set[Future[dict[str, Any]]] = {
                pool.submit(run_window_task, task) for task in _with_budget(tasks, budget)
            }
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield WindowResult.from_json(future.result())
        finally:
            # Interrupted or failed: drop the windows not started; the finished ones are recorded.
            pool.shutdown(wait=True, cancel_futures=True)
            if manager is not None:
                manager.shutdown()


class RayExecutor:
    """Ray's task API: a cluster at `address`, or a local Ray started (and stopped) here.

    Every node must reach the data at the same path and the database of `DATABASE_URL`
    (docs/evaluation.md, "Where workers write").
    """

    def __init__(self, *, address: str | None = None, workers: int | None = None) -> None:
        try:
            import ray  # noqa: F401  (the optional `cluster` extra)
        except ImportError:
            raise ConfigError(
                "--executor ray needs Ray: pip install 'alpha-arena[cluster]' (or pip install ray)"
            ) from None
        if workers is not None and workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        self._address = address
        self._workers = workers

    @property
    def workers(self) -> int:
        return self._workers or 0

    def run(
        self, tasks: Sequence[WindowTask], *, call_limits: CallLimits | None = None
    ) -> Iterator[WindowResult]:
        import ray

        if not tasks:
            return
        started_here = not ray.is_initialized()
        if started_here:
            if self._address is None:
                # A local Ray: as many CPUs as asked (all by default), no dashboard.
                ray.init(
                    num_cpus=self._workers or default_workers(),
                    include_dashboard=False,
                    log_to_driver=False,
                )
            else:
                ray.init(address=self._address, log_to_driver=False)
        try:
            # One budget for the whole cluster: an actor every task calls.
            budget = ray_budget(call_limits) if call_limits else None
            remote = ray.remote(num_cpus=1, max_retries=0)(run_window_task)
            pending = [remote.remote(task) for task in _with_budget(tasks, budget)]
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    yield WindowResult.from_json(ray.get(ref))
            pending = []
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
            if started_here:
                ray.shutdown()


def build_executor(
    name: str, *, workers: int | None = None, address: str | None = None
) -> WindowExecutor:
    """Return the executor called `name` ("local" or "ray")."""
    if name == "local":
        if address is not None:
            raise ConfigError("--ray-address needs --executor ray")
        return InlineExecutor() if workers == 0 else LocalExecutor(workers)
    if name == "ray":
        return RayExecutor(address=address, workers=workers)
    raise ConfigError(f"--executor must be local or ray, got {name!r}")
