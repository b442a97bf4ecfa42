"""The report layer on synthetic window results: the JSON object, the Markdown, the charts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from app.evaluation.report import (
    FEE_FREE_BENCHMARK,
    build_report,
    fan_bands,
    render_markdown,
    report_lines,
    write_evaluation_report,
)
from app.evaluation.results import CURVE_POINTS, AgentWindowResult, WindowResult, sample_curve

T0 = datetime(2025, 3, 1, tzinfo=UTC)
TOP_KEYS = {
    "version",
    "method",
    "windows",
    "window_count",
    "window_days",
    "interval",
    "symbols",
    "benchmark",
    "agents",
    "comparisons",
    "indistinguishable_groups",
    "notes",
}


def curve(final: float) -> tuple[float, ...]:
    return tuple(np.linspace(1.0, final, CURVE_POINTS))


def agent(
    name: str,
    ret: float,
    *,
    provider: str = "baseline",
    model: str | None = None,
    group: str | None = None,
    sharpe: float | None = 1.0,
    win_rate: float | None = 0.5,
    trades: int = 4,
) -> AgentWindowResult:
    return AgentWindowResult(
        name=name,
        provider=provider,
        model=model or name,
        group=group or name,
        return_pct=ret,
        sharpe=sharpe,
        max_drawdown_pct=abs(ret) / 2,
        win_rate=win_rate,
        trades=trades,
        final_equity=10_000 * (1 + ret / 100),
        curve=curve(1 + ret / 100),
    )


def windows(count: int = 12, seed: int = 0) -> list[WindowResult]:
    """A model 3 points a window better than buy-and-hold (plus a little noise), ema_trend
    a noisy copy of the market, and two seeds of random near 0."""
    rng = np.random.default_rng(seed)
    found = []
    for i in range(count):
        market = float(rng.normal(0.0, 6.0))
        found.append(
            WindowResult(
                index=i,
                start=T0 + i * timedelta(days=7),
                end=T0 + (i + 1) * timedelta(days=7),
                interval="5m",
                cycles=2017,
                buy_and_hold_return_pct=market + 0.1,
                symbols=("BTC", "ETH"),
                run_id=f"run-{i}",
                agents=(
                    agent("hodl", market, model="buy_and_hold", win_rate=None, trades=0),
                    agent("ema", market * 0.5 + float(rng.normal(0, 4)), model="ema_trend"),
                    agent(
                        "random-1",
                        float(rng.normal(0, 2)),
                        model="random@1",
                        group="random",
                        sharpe=None if i == 0 else 0.5,
                    ),
                    agent("random-2", float(rng.normal(0, 2)), model="random@2", group="random"),
                    agent(
                        "qwen",
                        market + 3.0 + float(rng.normal(0, 0.5)),
                        provider="modelscope",
                        model="Qwen/Qwen3",
                    ),
                ),
            )
        )
    return found


def by_name(report: dict, name: str) -> dict:  # type: ignore[type-arg]
    return next(line for line in report["agents"] if line["name"] == name)


def comparison(report: dict, a: str, b: str, metric: str = "return_pct") -> dict:  # type: ignore[type-arg]
    return next(
        item
        for item in report["comparisons"]
        if (item["a"], item["b"], item["metric"]) == (a, b, metric)
    )


def test_lines_put_agents_first_buy_and_hold_last_and_pool_the_random_seeds() -> None:
    """random's value in a window is the mean of its two seeds: window 0 has Sharpe only from
    seed 2 (seed 1 had none), so its Sharpe there is seed 2's 1.0."""
    data = windows()
    lines = report_lines(data)
    assert [line.name for line in lines] == ["qwen", "ema", "random", "hodl"]
    pooled = lines[2]
    assert pooled.members == ("random-1", "random-2")
    first = data[0]
    assert pooled.values["return_pct"][0] == pytest.approx(
        (first.agent("random-1").return_pct + first.agent("random-2").return_pct) / 2
    )
    assert pooled.values["sharpe"][0] == 1.0
    assert pooled.values["sharpe"][1] == pytest.approx(0.75)


def test_the_json_object_has_the_documented_shape_and_is_strict_json() -> None:
    report = build_report(windows())
    assert set(report) == TOP_KEYS
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text) == report
    assert report["window_count"] == 12 and report["window_days"] == 7.0
    assert report["symbols"] == ["BTC", "ETH"] and report["benchmark"] == "hodl"
    assert report["method"] == {
        "interval": "expanded percentile bootstrap over windows",
        "confidence": 0.95,
        "resamples": 10_000,
        "seed": 0,
    }
    qwen = by_name(report, "qwen")
    assert set(qwen) == {
        "name",
        "kind",
        "members",
        "models",
        "metrics",
        "beats_benchmark",
        "per_window",
    }
    assert qwen["kind"] == "agent" and by_name(report, "ema")["kind"] == "baseline"
    assert set(qwen["metrics"]) == {
        "return_pct",
        "sharpe",
        "max_drawdown_pct",
        "win_rate",
        "trades",
    }
    assert set(qwen["metrics"]["return_pct"]) == {
        "n",
        "missing",
        "mean",
        "mean_ci",
        "median",
        "median_ci",
        "std",
        "note",
    }
    # Four lines: 6 pairs, each on return and on Sharpe.
    assert len(report["comparisons"]) == 12
    assert report == build_report(windows()), "the same input and seed give the same report"


def test_figures_are_the_ones_worked_by_hand() -> None:
    data = windows()
    report = build_report(data)
    qwen_returns = [w.agent("qwen").return_pct for w in data]
    hodl_returns = [w.agent("hodl").return_pct for w in data]
    found = by_name(report, "qwen")["metrics"]["return_pct"]
    assert found["mean"] == pytest.approx(np.mean(qwen_returns), abs=1e-6)
    assert found["median"] == pytest.approx(np.median(qwen_returns), abs=1e-6)
    low, high = found["mean_ci"]
    assert low < found["mean"] < high
    # Beats buy-and-hold: qwen is ~3 points better in every window.
    wins = sum(q > h for q, h in zip(qwen_returns, hodl_returns, strict=True))
    beats = by_name(report, "qwen")["beats_benchmark"]
    assert (beats["windows"], beats["of"]) == (wins, 12)
    assert by_name(report, "hodl")["beats_benchmark"] is None
    # The paired difference is ~3 with a narrow interval; unpaired returns swing by ~6.
    diff = comparison(report, "qwen", "hodl")
    assert diff["mean_difference"] == pytest.approx(
        np.mean(np.subtract(qwen_returns, hodl_returns)), abs=1e-6
    )
    assert 2.0 < diff["ci"][0] < diff["ci"][1] < 4.0
    assert not diff["indistinguishable"]
    # Sharpe: window 0 of random-1 is missing but random-2 has one, so random has 12.
    assert by_name(report, "random")["metrics"]["sharpe"]["n"] == 12
    # Buy-and-hold never closes a trade: no win rate anywhere, counted as missing.
    assert by_name(report, "hodl")["metrics"]["win_rate"]["missing"] == 12
    assert any("hodl: no win rate in 12 of 12" in note for note in report["notes"])
    assert any("random: each window's value is the mean of 2 runs" in n for n in report["notes"])


def test_indistinguishable_groups_follow_the_return_differences() -> None:
    report = build_report(windows())
    groups = report["indistinguishable_groups"]
    # qwen moves with the market, 3 points above buy-and-hold: paired, that is plain. random
    # does not move with the market, so the difference to it carries the market's whole swing
    # (sd ~6 points over 12 windows) and cannot be told apart: qwen and random share a group.
    assert not any({"qwen", "hodl"} <= set(group) for group in groups)
    assert any({"qwen", "random"} <= set(group) for group in groups)
    assert {name for group in groups for name in group} == {"qwen", "ema", "random", "hodl"}
    for group in groups:
        for i, a in enumerate(group):
            for b in group[i + 1 :]:
                pair = [
                    item
                    for item in report["comparisons"]
                    if {item["a"], item["b"]} == {a, b} and item["metric"] == "return_pct"
                ]
                assert pair[0]["indistinguishable"]


def test_without_a_buy_and_hold_line_the_fee_free_series_is_the_benchmark() -> None:
    data = [
        WindowResult(
            index=w.index,
            start=w.start,
            end=w.end,
            interval=w.interval,
            cycles=w.cycles,
            buy_and_hold_return_pct=w.buy_and_hold_return_pct,
            agents=tuple(a for a in w.agents if a.name != "hodl"),
        )
        for w in windows()
    ]
    report = build_report(data)
    assert report["benchmark"] == FEE_FREE_BENCHMARK
    series = [w.buy_and_hold_return_pct for w in data]
    ema = [w.agent("ema").return_pct for w in data]
    assert by_name(report, "ema")["beats_benchmark"]["windows"] == sum(
        e > s for e, s in zip(ema, series, strict=True)
    )
    assert build_report(windows(), benchmark="ema")["benchmark"] == "ema"
    with pytest.raises(ValueError, match="no agent 'nobody'"):
        build_report(windows(), benchmark="nobody")


@pytest.mark.parametrize("count", [1, 2])
def test_one_or_two_windows_report_without_intervals(count: int) -> None:
    report = build_report(windows(count))
    found = by_name(report, "qwen")["metrics"]["return_pct"]
    assert found["mean_ci"] is None and "too few" in found["note"]
    assert all(item["ci"] is None and item["indistinguishable"] for item in report["comparisons"])
    assert report["notes"][0].startswith(f"{count} window")
    markdown = render_markdown(report)
    assert "no interval" in markdown and "too few windows to tell" in markdown


def test_the_markdown_has_every_table() -> None:
    report = build_report(windows())
    markdown = render_markdown(report, title="Evaluation of qwen")
    assert markdown.startswith("# Evaluation of qwen\n")
    for heading in (
        "## Return per window",
        "## Sharpe ratio",
        "## Max drawdown (%)",
        "## Win rate",
        "## Closed trades",
        "## Paired differences in return (A minus B, same windows)",
        "## Lines that cannot be told apart on return",
        "## Notes",
        "## Windows",
    ):
        assert heading in markdown
    assert "| qwen | hodl | 12 |" in markdown and "qwen better" in markdown
    assert "random (baseline) (2 seeds)" in markdown
    assert "12 windows of 7 days on BTC, ETH, a cycle every 5m" in markdown
    assert markdown.count("| 11 | 2025-05-17T00:00 | 2025-05-24T00:00 | 2017 |") == 1


def test_fan_bands_are_quantiles_over_windows_with_the_seeds_pooled() -> None:
    """qwen ends each window at 1 + r/100: its median final value is the median of those; random
    pools 2 seeds x 12 windows = 24 curves."""
    data = windows()
    bands = fan_bands(data)
    finals = [1 + w.agent("qwen").return_pct / 100 for w in data]
    assert bands["qwen"].shape == (3, CURVE_POINTS)
    assert bands["qwen"][1][-1] == pytest.approx(np.median(finals))
    assert bands["qwen"][0][0] == pytest.approx(1.0)
    pooled = [1 + w.agent(n).return_pct / 100 for w in data for n in ("random-1", "random-2")]
    assert bands["random"][2][-1] == pytest.approx(np.quantile(pooled, 0.95))


def test_the_report_files_are_written_and_the_same_input_draws_the_same_bytes(
    tmp_path: Path,
) -> None:
    data = windows()
    report = build_report(data)
    first = write_evaluation_report(tmp_path / "one", data, report)
    second = write_evaluation_report(tmp_path / "two", data, report)
    for kind, path in first.items():
        assert path.stat().st_size > (10_000 if path.suffix == ".png" else 500), kind
        assert path.read_bytes() == second[kind].read_bytes(), kind
    assert json.loads(first["json"].read_text()) == report
    assert first["returns"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_window_results_survive_a_json_round_trip() -> None:
    original = windows(2)
    again = [WindowResult.from_json(json.loads(json.dumps(w.to_json()))) for w in original]
    assert again == original


def test_curves_take_the_last_value_at_or_before_each_point() -> None:
    """Window 0-100 s, 5 points at 0, 25, 50, 75, 100: values recorded at 10 s (10,100) and
    60 s (9,900) on 10,000 of cash give 1.0 (before any record), 1.01, 1.01, 0.99, 0.99."""
    seconds = 1_000_000_000
    found = sample_curve(
        [10 * seconds, 60 * seconds],
        [10_100.0, 9_900.0],
        start_ns=0,
        end_ns=100 * seconds,
        starting_cash_usd=10_000.0,
        points=5,
    )
    assert found == pytest.approx((1.0, 1.01, 1.01, 0.99, 0.99))
