"""One window through the real backtest code, on the real data beside the project."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from app.config import AgentConfig, load_settings
from app.evaluation.report import build_report
from app.evaluation.window_run import WindowJob, data_range, run_windows_in_process
from app.evaluation.windows import plan_windows
from app.wiring import open_database
from tests.conftest import shared_data

AGENTS = (
    "hodl=baseline:buy_and_hold",
    "ema=baseline:ema_trend",
    "random-1=baseline:random@1",
    "random-2=baseline:random@2",
)


def job(market: Path) -> WindowJob:
    return WindowJob(
        data=(market,),
        agents=tuple(AgentConfig.from_spec(spec) for spec in AGENTS),
        interval="15m",
    )


def without_run_ids(results):  # type: ignore[no-untyped-def]
    return [replace(result, run_id=None) for result in results]


def test_windows_run_through_the_backtest_and_do_not_depend_on_each_other(
    tmp_path: Path,
) -> None:
    """Two one-day windows at 15 minutes (97 cycles each). Running the second on its own, in
    another database, gives the same figures: nothing carries from one window to the next, and
    random's draws depend on the cycle times only."""
    market = shared_data("market")
    settings = load_settings(env_file=None, database={"url": f"sqlite:///{tmp_path / 'a.db'}"})
    database = open_database(settings)
    found, interval = data_range(settings, job(market), database=database)
    assert interval == "15m"
    windows = plan_windows(found, days=1, count=2)
    both = run_windows_in_process(settings, job(market), windows, database=database)

    for window, result in zip(windows, both, strict=True):
        assert (result.index, result.start, result.end) == (window.index, window.start, window.end)
        assert result.cycles == 97 and result.interval == "15m"
        assert result.symbols == ("BTC", "ETH", "SOL", "BNB", "XRP", "DOGE")
        assert [agent.name for agent in result.agents] == [s.split("=")[0] for s in AGENTS]
        groups = {agent.name: agent.group for agent in result.agents}
        assert groups == {"hodl": "hodl", "ema": "ema", "random-1": "random", "random-2": "random"}
        for agent in result.agents:
            assert agent.curve[-1] == pytest.approx(agent.final_equity / 10_000)
            assert agent.return_pct == pytest.approx((agent.final_equity / 10_000 - 1) * 100)
            assert agent.llm_calls == 0
        # Buy-and-hold as an agent: 99.5% of the cash at 1x, paying 5.5 bps to enter and a day
        # of funding: within 0.2 points of 0.995 x the fee-free series.
        hodl = result.agent("hodl")
        assert hodl.return_pct == pytest.approx(0.995 * result.buy_and_hold_return_pct, abs=0.2)
        assert hodl.curve[0] == pytest.approx(1.0, abs=0.001)
    assert both[0].agent("random-1") != both[0].agent("random-2")

    alone_settings = load_settings(
        env_file=None, database={"url": f"sqlite:///{tmp_path / 'b.db'}"}
    )
    alone = run_windows_in_process(
        alone_settings, job(market), windows[1:], database=open_database(alone_settings)
    )
    assert without_run_ids(alone) == without_run_ids(both[1:])

    report = build_report(both)
    assert [line["name"] for line in report["agents"]] == ["ema", "random", "hodl"]
    assert report["benchmark"] == "hodl"
