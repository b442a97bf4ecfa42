"""An evaluation's plan: the agents and baselines it runs, its windows, and resuming it.

The driver of `arena evaluate`: it adds the baselines to the user's agents, names the plan by a
hash of what it runs (so the same command finds it again), hands the windows not yet finished to
an executor and records each result as it arrives. Killed halfway, the plan keeps what finished;
run again, it runs the rest only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from app.config import AgentConfig, Settings
from app.errors import ConfigError
from app.evaluation.executors import WindowExecutor, WindowTask
from app.evaluation.results import WindowResult
from app.evaluation.window_run import WindowJob
from app.evaluation.windows import Window
from app.llm.baselines import random_model
from app.wiring import window_database_url

PLAN_VERSION = 1
BUY_AND_HOLD_NAME = "buy_and_hold"
EMA_TREND_NAME = "ema_trend"
RANDOM_PREFIX = "random-"


class PlanStore(Protocol):
    """Where plans and their finished windows are kept (`app.db.evaluation_plans`)."""

    def open_plan(self, key: str, spec: Mapping[str, Any], *, window_count: int) -> int:
        """Return the id of the plan called `key`, recording it first when it is new."""
        ...

    def finished(self, plan_id: int) -> dict[int, dict[str, Any]]:
        """Return the results of the plan's finished windows by window number."""
        ...

    def record(
        self,
        plan_id: int,
        *,
        window_index: int,
        window_key: str,
        result: Mapping[str, Any],
        run_id: str | None,
    ) -> None:
        """Record a finished window."""
        ...


def with_baselines(agents: Sequence[AgentConfig], *, random_seeds: int) -> tuple[AgentConfig, ...]:
    """Return the agents followed by buy-and-hold, ema_trend and `random_seeds` seeds of random.

    A baseline the user listed already (same provider and model) is not added twice.
    """
    if random_seeds < 0:
        raise ConfigError(f"--random-seeds must be 0 or more, got {random_seeds}")
    wanted = [
        (BUY_AND_HOLD_NAME, "buy_and_hold"),
        (EMA_TREND_NAME, "ema_trend"),
        *((f"{RANDOM_PREFIX}{seed}", random_model(seed)) for seed in range(1, random_seeds + 1)),
    ]
    have = {(agent.provider, agent.model) for agent in agents}
    names = {agent.name for agent in agents}
    added = []
    for name, model in wanted:
        if ("baseline", model) in have:
            continue
        if name in names:
            raise ConfigError(
                f"--agent: the name {name!r} is the evaluation's baseline {model}; rename the agent"
            )
        added.append(AgentConfig(name=name, provider="baseline", model=model))
    return (*agents, *added)


@dataclass(frozen=True, slots=True)
class EvaluationPlan:
    """What an evaluation runs: the job (data, agents, costs) and its windows."""

    job: WindowJob
    windows: tuple[Window, ...]
    window_days: float
    interval: str
    seed: int | None = None

    def spec(self) -> dict[str, Any]:
        """Return what names the plan, as JSON: changing any of it makes another plan."""
        job = self.job
        return {
            "version": PLAN_VERSION,
            "data": [str(path) for path in job.data],
            "agents": [agent.model_dump(mode="json") for agent in job.agents],
            "interval": self.interval,
            "symbols": None if job.symbols is None else list(job.symbols),
            "llm_mode": str(job.llm_mode),
            "cash_usd": job.cash_usd,
            "fee_bps": job.fee_bps,
            "slippage_bps": job.slippage_bps,
            "window_days": self.window_days,
            "seed": self.seed,
            "windows": [window.key for window in self.windows],
        }

    @property
    def key(self) -> str:
        """Return the plan's name: a hash of `spec()`."""
        text = json.dumps(self.spec(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class PlanStatus:
    """A plan found in the store: its id and the windows already finished."""

    plan_id: int
    finished: dict[int, WindowResult]

    def remaining(self, windows: Iterable[Window]) -> list[Window]:
        """Return the windows still to run, in order."""
        return [window for window in windows if window.index not in self.finished]


def open_plan(plan: EvaluationPlan, store: PlanStore) -> PlanStatus:
    """Find (or record) the plan and return what of it already finished."""
    plan_id = store.open_plan(plan.key, plan.spec(), window_count=len(plan.windows))
    finished = {
        index: WindowResult.from_json(result) for index, result in store.finished(plan_id).items()
    }
    return PlanStatus(plan_id=plan_id, finished=finished)


def run_plan(
    settings: Settings,
    plan: EvaluationPlan,
    status: PlanStatus,
    *,
    store: PlanStore,
    executor: WindowExecutor,
    on_window: Callable[[WindowResult], None] | None = None,
    call_limits: Mapping[tuple[str, str], int] | None = None,
) -> list[WindowResult]:
    """Run the windows not finished yet, recording each as it finishes; return all, in order.

    `call_limits`: the calls each model may be sent (today's quota), one budget for all workers.
    """
    by_key = {window.index: window for window in plan.windows}
    results = dict(status.finished)
    tasks = [
        WindowTask(
            settings=settings,
            job=plan.job,
            window=window,
            run_database_url=window_database_url(settings, plan_key=plan.key, index=window.index),
        )
        for window in status.remaining(plan.windows)
    ]
    for result in executor.run(tasks, call_limits=call_limits):
        window = by_key[result.index]
        store.record(
            status.plan_id,
            window_index=result.index,
            window_key=window.key,
            result=result.to_json(),
            run_id=result.run_id,
        )
        results[result.index] = result
        if on_window is not None:
            on_window(result)
    return [results[index] for index in sorted(results)]
