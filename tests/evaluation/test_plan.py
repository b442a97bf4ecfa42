"""Plans: the baselines added, the plan's name, and resuming after a kill."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from app.config import AgentConfig, Settings, load_settings
from app.errors import ConfigError
from app.evaluation.executors import InlineExecutor, WindowTask
from app.evaluation.plan import EvaluationPlan, open_plan, run_plan, with_baselines
from app.evaluation.results import WindowResult
from app.evaluation.window_run import WindowJob, data_range
from app.evaluation.windows import plan_windows
from app.wiring import evaluation_plan_store, open_database
from tests.conftest import shared_data


def test_baselines_are_added_after_the_agents_once() -> None:
    qwen = AgentConfig.from_spec("qwen=modelscope:Qwen/Qwen3")
    agents = with_baselines([qwen], random_seeds=2)
    assert [(a.name, a.provider, a.model) for a in agents] == [
        ("qwen", "modelscope", "Qwen/Qwen3"),
        ("buy_and_hold", "baseline", "buy_and_hold"),
        ("ema_trend", "baseline", "ema_trend"),
        ("random-1", "baseline", "random@1"),
        ("random-2", "baseline", "random@2"),
    ]
    hodl = AgentConfig.from_spec("hodl=baseline:buy_and_hold")
    assert [a.name for a in with_baselines([hodl], random_seeds=0)] == ["hodl", "ema_trend"]
    with pytest.raises(ConfigError, match="'ema_trend' is the evaluation's baseline"):
        with_baselines([AgentConfig.from_spec("ema_trend=baseline:random@9")], random_seeds=0)


class Counting:
    """Runs windows in process, counts them, and can stop (as a kill would) after `stop_after`."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.ran: list[int] = []
        self.stop_after = stop_after

    @property
    def workers(self) -> int:
        return 1

    def run(
        self, tasks: Sequence[WindowTask], *, call_limits: object = None
    ) -> Iterator[WindowResult]:
        for result in InlineExecutor().run(tasks):
            self.ran.append(result.index)
            yield result
            if self.stop_after is not None and len(self.ran) >= self.stop_after:
                raise KeyboardInterrupt


def evaluation(tmp_path: Path, name: str) -> tuple[Settings, EvaluationPlan]:
    settings = load_settings(env_file=None, database={"url": f"sqlite:///{tmp_path / name}"})
    agents = with_baselines([], random_seeds=1)
    job = WindowJob(data=(shared_data("market"),), agents=agents, interval="1h", keep="summary")
    found, interval = data_range(settings, job, database=open_database(settings))
    windows = plan_windows(found, days=1, count=4)
    return settings, EvaluationPlan(job=job, windows=windows, window_days=1, interval=interval)


def test_a_killed_plan_resumes_with_the_windows_left_and_the_same_numbers(tmp_path: Path) -> None:
    """Four one-day windows at 1h. The first run stops after two windows (a KeyboardInterrupt
    from inside the executor, where a kill would land); the second runs windows 2 and 3 only;
    a third runs nothing. The figures equal an uninterrupted run in another database."""
    settings, plan = evaluation(tmp_path, "a.db")
    store = evaluation_plan_store(open_database(settings))
    first = Counting(stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        run_plan(settings, plan, open_plan(plan, store), store=store, executor=first)
    assert first.ran == [0, 1]

    status = open_plan(plan, store)
    assert sorted(status.finished) == [0, 1]
    second = Counting()
    resumed = run_plan(settings, plan, status, store=store, executor=second)
    assert second.ran == [2, 3]
    third = Counting()
    again = run_plan(settings, plan, open_plan(plan, store), store=store, executor=third)
    assert third.ran == []
    assert again == resumed

    other_settings, other_plan = evaluation(tmp_path, "b.db")
    other_store = evaluation_plan_store(open_database(other_settings))
    whole = run_plan(
        other_settings,
        other_plan,
        open_plan(other_plan, other_store),
        store=other_store,
        executor=Counting(),
    )
    assert [replace(r, run_id=None) for r in resumed] == [replace(r, run_id=None) for r in whole]


def test_the_plan_is_named_by_what_it_runs(tmp_path: Path) -> None:
    _, plan = evaluation(tmp_path, "a.db")
    assert plan.key == evaluation(tmp_path, "a.db")[1].key
    assert replace(plan, windows=plan.windows[:3]).key != plan.key
    assert replace(plan, job=replace(plan.job, cash_usd=5_000.0)).key != plan.key
