"""`arena evaluate` in process: the plan, the report, resuming, the model-call budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.config import AgentConfig
from app.evaluation.budget import ModelBudget, call_budget
from app.evaluation.windows import Window
from tests.arena_cli import arena
from tests.conftest import shared_data


def test_evaluate_reports_every_line_and_a_second_run_has_nothing_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five one-day windows at 1h (25 cycles each) in this process: buy-and-hold, ema_trend and
    two seeds of random pooled into one line; the report folder holds the four files."""
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'arena.db'}")
    market = shared_data("market")
    args = (
        "evaluate", "--data", str(market), "--windows", "5", "--window-days", "1",
        "--interval", "1h", "--random-seeds", "2", "--workers", "0",
        "--agent", "hodl=baseline:buy_and_hold",
    )  # fmt: skip
    first = arena(*args, "--report", str(tmp_path / "report"), "--json")
    assert first.exit_code == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["window_count"] == 5 and report["interval"] == "1h"
    assert [line["name"] for line in report["agents"]] == ["ema_trend", "random", "hodl"]
    assert report["agents"][1]["members"] == ["random-1", "random-2"]
    assert report["agents"][0]["metrics"]["return_pct"]["mean_ci"] is not None
    assert "0 finished before, 5 to run on local (in this process)" in first.stderr
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == [
        "account_value_fan.png", "evaluation.json", "returns.png", "summary.md",
    ]  # fmt: skip

    again = arena(*args, "--wide")
    assert again.exit_code == 0, again.stderr
    assert "5 finished before, 0 to run" in again.stderr
    assert "Evaluation over 5 windows of 1 days, every 1h" in again.stdout
    mean = report["agents"][0]["metrics"]["return_pct"]["mean"]
    assert f"{mean:+.2f}%" in again.stdout


def test_bad_options_are_one_line_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'arena.db'}")
    market = str(shared_data("market"))
    found = arena("evaluate", "--data", market, "--keep", "nothing")
    assert found.exit_code == 2
    assert "--keep must be one of summary, trades, full" in found.stderr
    found = arena("evaluate", "--data", market, "--executor", "dask")
    assert found.exit_code == 2 and "--executor must be local or ray" in found.stderr
    found = arena(
        "evaluate", "--data", market, "--windows", "500", "--agent", "h=baseline:buy_and_hold"
    )
    assert found.exit_code == 2 and "do not fit without overlapping" in found.stderr


def test_the_budget_counts_calls_per_model_and_days_at_todays_quota() -> None:
    """Two model agents on one model and one on another, two windows of 3 cycles at 1h:
    6 cycles, so 12 calls for the shared model and 6 for the other."""
    from datetime import UTC, datetime, timedelta

    start = datetime(2025, 1, 1, tzinfo=UTC)
    windows = [
        Window(0, start, start + timedelta(hours=2)),
        Window(1, start + timedelta(days=1), start + timedelta(days=1, hours=2)),
    ]
    agents = [
        AgentConfig.from_spec("a=modelscope:Qwen/Q"),
        AgentConfig.from_spec("b=modelscope:Qwen/Q"),
        AgentConfig.from_spec("c=deepseek:deepseek-chat"),
        AgentConfig.from_spec("h=baseline:buy_and_hold"),
    ]
    budgets = call_budget(
        agents,
        windows,
        step_cycles=lambda window: window.cycles(timedelta(hours=1)),
        stored=lambda provider, model: 2 if provider == "modelscope" else 0,
        calls_left={("modelscope", "Qwen/Q"): 4},
    )
    shared, other = budgets
    assert (shared.calls_needed, shared.answers_stored, shared.calls_to_make) == (12, 2, 10)
    assert shared.agents == ("a", "b") and shared.exceeds_today
    assert shared.days_at_quota == pytest.approx(2.5)
    assert shared.describe() == (
        "modelscope:Qwen/Q (a, b): 12 calls, 2 may be cached; 4 left today on modelscope: "
        "about 3 days"
    )
    assert (other.calls_needed, other.calls_left_today, other.exceeds_today) == (6, None, False)
    assert "quota left today unknown" in other.describe()
    assert ModelBudget("p", "m", ("x",), 48_960, 0, 1_840).describe().endswith("about 27 days")


def test_a_plan_beyond_todays_quota_is_refused_without_yes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five one-day windows at 1h: 5 x 25 = 125 calls for the model agent, 40 left today (the
    last rate-limit headers seen, recorded now): refused, saying so, before any window runs."""
    from datetime import UTC, datetime

    from tests.llm.test_quota_cli import record

    db_url = f"sqlite:///{tmp_path / 'arena.db'}"
    record(db_url, datetime.now(UTC), calls=3, model_left=40)
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("MODELSCOPE_API_KEY", "ms-test-not-a-real-key")
    found = arena(
        "evaluate", "--data", str(shared_data("market")), "--windows", "5",
        "--window-days", "1", "--interval", "1h", "--agent", "qwen=modelscope:Qwen/A",
    )  # fmt: skip
    assert found.exit_code == 2
    assert (
        "model calls: modelscope:Qwen/A (qwen): 125 calls, 0 may be cached; 40 left today on "
        "modelscope: about 4 days"
    ) in found.stderr
    assert "needs more calls than today's quota leaves on modelscope:Qwen/A" in found.stderr
    assert "--yes" in found.stderr and "finished before" not in found.stderr
