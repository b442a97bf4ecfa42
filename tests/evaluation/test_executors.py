"""The same plan gives the same numbers on every executor: in process, a pool of 1 or 2, Ray."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import pytest

from app.config import AgentConfig, Settings, load_settings
from app.errors import ConfigError
from app.evaluation.executors import (
    InlineExecutor,
    LocalExecutor,
    RayExecutor,
    WindowTask,
    build_executor,
)
from app.evaluation.results import WindowResult
from app.evaluation.window_run import WindowJob, data_range
from app.evaluation.windows import Window, plan_windows
from app.wiring import open_database
from tests.conftest import shared_data

AGENTS = ("hodl=baseline:buy_and_hold", "ema=baseline:ema_trend", "luck=baseline:random@3")


def plan(tmp_path: Path) -> tuple[Settings, list[WindowTask]]:
    """Three one-day windows every hour (25 cycles each) on the real data."""
    settings = load_settings(env_file=None, database={"url": f"sqlite:///{tmp_path / 'e.db'}"})
    job = WindowJob(
        data=(shared_data("market"),),
        agents=tuple(AgentConfig.from_spec(spec) for spec in AGENTS),
        interval="1h",
        keep="summary",
    )
    found, _ = data_range(settings, job, database=open_database(settings))
    windows: tuple[Window, ...] = plan_windows(found, days=1, count=3)
    return settings, [WindowTask(settings=settings, job=job, window=w) for w in windows]


def figures(results: list[WindowResult]) -> list[WindowResult]:
    """The results in window order, without the run ids (new for every run)."""
    return sorted((replace(result, run_id=None) for result in results), key=lambda r: r.index)


def test_local_pools_of_one_and_two_give_the_numbers_of_a_run_in_process(tmp_path: Path) -> None:
    _, tasks = plan(tmp_path)
    inline = figures(list(InlineExecutor().run(tasks)))
    assert [result.index for result in inline] == [0, 1, 2]
    assert all(result.cycles == 25 for result in inline)
    assert inline[0].agent("luck").trades >= 0
    assert figures(list(LocalExecutor(1).run(tasks))) == inline
    assert figures(list(LocalExecutor(2).run(tasks))) == inline


@pytest.mark.skipif(
    importlib.util.find_spec("ray") is None,
    reason="Ray is not installed: pip install -e '.[cluster]' (the optional extra) to run it",
)
def test_local_ray_on_two_cpus_gives_the_same_numbers(tmp_path: Path) -> None:
    """A local Ray with 2 CPUs, started and stopped by the executor."""
    import ray

    _, tasks = plan(tmp_path)
    inline = figures(list(InlineExecutor().run(tasks)))
    assert figures(list(RayExecutor(workers=2).run(tasks))) == inline
    assert not ray.is_initialized()


def test_executor_options_are_checked() -> None:
    assert isinstance(build_executor("local", workers=0), InlineExecutor)
    assert build_executor("local", workers=3).workers == 3
    with pytest.raises(ConfigError, match="--ray-address needs --executor ray"):
        build_executor("local", address="ray://head:10001")
    with pytest.raises(ConfigError, match="--executor must be local or ray"):
        build_executor("dask")
    with pytest.raises(ConfigError, match="--workers must be at least 1"):
        LocalExecutor(-1)
