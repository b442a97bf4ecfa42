"""The evaluation report: per-window results in, one JSON object, Markdown and two charts out.

`build_report` does the statistics (docs/evaluation.md documents the object it returns, which is
what `arena evaluate --json` prints); `render_markdown` writes the summary from that object;
`write_return_chart` and `write_fan_chart` draw the PNGs (matplotlib's Agg backend: the same
inputs give the same bytes). Agents are reported by their `group`: the seeds of `random` are one
line, each window's value being the mean over the seeds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from app.evaluation.results import BUY_AND_HOLD_MODEL, CURVE_POINTS, AgentKind, WindowResult
from app.evaluation.stats import (
    CONFIDENCE,
    RESAMPLES,
    Estimate,
    Interval,
    PairedDifference,
    Proportion,
    estimate,
    indistinguishable_groups,
    paired_difference,
    proportion,
    small_sample_note,
)

REPORT_VERSION: Final = 1
METRICS: Final[tuple[str, ...]] = (
    "return_pct",
    "sharpe",
    "max_drawdown_pct",
    "win_rate",
    "trades",
)
COMPARED_METRICS: Final[tuple[str, ...]] = ("return_pct", "sharpe")
METRIC_LABELS: Final[Mapping[str, str]] = {
    "return_pct": "return (%)",
    "sharpe": "Sharpe ratio",
    "max_drawdown_pct": "max drawdown (%)",
    "win_rate": "win rate",
    "trades": "closed trades",
}
FEE_FREE_BENCHMARK: Final = "buy-and-hold (fee-free series)"
METHOD: Final = "expanded percentile bootstrap over windows"


@dataclass(frozen=True, slots=True)
class Line:
    """One line of the report: an agent, a baseline, or the seeds of `random` together."""

    name: str
    kind: AgentKind
    members: tuple[str, ...]
    models: tuple[str, ...]
    values: Mapping[str, tuple[float | None, ...]]

    @property
    def is_buy_and_hold(self) -> bool:
        """Return True for the buy-and-hold baseline."""
        return self.kind == "baseline" and BUY_AND_HOLD_MODEL in self.models


def report_lines(windows: Sequence[WindowResult]) -> list[Line]:
    """Return the report's lines, agents first then baselines, each in order of appearance."""
    order: list[str] = []
    kinds: dict[str, AgentKind] = {}
    members: dict[str, list[str]] = {}
    models: dict[str, list[str]] = {}
    for window in windows:
        for agent in window.agents:
            if agent.group not in members:
                order.append(agent.group)
                kinds[agent.group] = agent.kind
                members[agent.group], models[agent.group] = [], []
            if agent.name not in members[agent.group]:
                members[agent.group].append(agent.name)
                models[agent.group].append(agent.model)
    # Agents first, then the baselines with buy-and-hold last, so every comparison reads
    # "agent minus baseline" and "baseline minus buy-and-hold".
    order.sort(
        key=lambda group: (
            kinds[group] == "baseline",
            kinds[group] == "baseline" and BUY_AND_HOLD_MODEL in models[group],
        )
    )
    return [
        Line(
            name=group,
            kind=kinds[group],
            members=tuple(members[group]),
            models=tuple(models[group]),
            values={metric: _line_values(windows, group, metric) for metric in METRICS},
        )
        for group in order
    ]


def _line_values(
    windows: Sequence[WindowResult], group: str, metric: str
) -> tuple[float | None, ...]:
    """Return the group's value of `metric` in each window: the mean over its members."""
    values: list[float | None] = []
    for window in windows:
        found = [
            float(value)
            for agent in window.agents
            if agent.group == group
            and (value := getattr(agent, metric)) is not None
            and math.isfinite(value)
        ]
        values.append(sum(found) / len(found) if found else None)
    return tuple(values)


def build_report(
    windows: Sequence[WindowResult],
    *,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
    benchmark: str | None = None,
) -> dict[str, Any]:
    """Return the evaluation as one JSON-able object (docs/evaluation.md describes it).

    `benchmark` names the line that "beats buy-and-hold" compares with; by default the
    buy-and-hold baseline when it ran, else each window's fee-free buy-and-hold series.
    """
    if not windows:
        raise ValueError("an evaluation report needs at least one window")
    windows = sorted(windows, key=lambda window: window.index)
    lines = report_lines(windows)
    options = {"confidence": confidence, "resamples": resamples, "seed": seed}
    bench_name, bench_values = _benchmark(windows, lines, benchmark)
    agents = [_line_object(line, bench_name, bench_values, options) for line in lines]
    comparisons = _comparisons(lines, options)
    apart = [
        (item["a"], item["b"])
        for item in comparisons
        if item["metric"] == "return_pct" and not item["indistinguishable"]
    ]
    groups = indistinguishable_groups([line.name for line in lines], apart)
    return {
        "version": REPORT_VERSION,
        "method": {
            "interval": METHOD,
            "confidence": confidence,
            "resamples": resamples,
            "seed": seed,
        },
        "windows": [_window_object(window) for window in windows],
        "window_count": len(windows),
        "window_days": _median([window_days(window) for window in windows]),
        "interval": windows[0].interval,
        "symbols": list(windows[0].symbols),
        "benchmark": bench_name,
        "agents": agents,
        "comparisons": comparisons,
        "indistinguishable_groups": groups,
        "notes": _notes(lines, comparisons, confidence),
    }


def window_days(window: WindowResult) -> float:
    """Return the window's length in days."""
    return (window.end - window.start).total_seconds() / 86_400.0


def _benchmark(
    windows: Sequence[WindowResult], lines: Sequence[Line], wanted: str | None
) -> tuple[str, tuple[float | None, ...]]:
    if wanted is not None:
        for line in lines:
            if line.name == wanted:
                return line.name, line.values["return_pct"]
        raise ValueError(
            f"no agent {wanted!r} to compare with; have {[item.name for item in lines]}"
        )
    for line in lines:
        if line.is_buy_and_hold:
            return line.name, line.values["return_pct"]
    return FEE_FREE_BENCHMARK, tuple(window.buy_and_hold_return_pct for window in windows)


def _line_object(
    line: Line,
    bench_name: str,
    bench_values: Sequence[float | None],
    options: Mapping[str, Any],
) -> dict[str, Any]:
    metrics = {
        metric: _estimate_object(estimate(line.values[metric], **options)) for metric in METRICS
    }
    beats: dict[str, Any] | None = None
    if line.name != bench_name:
        pairs = [
            (value, bench)
            for value, bench in zip(line.values["return_pct"], bench_values, strict=True)
            if value is not None and bench is not None
        ]
        wins = sum(1 for value, bench in pairs if value > bench)
        beats = _proportion_object(proportion(wins, len(pairs), options["confidence"]))
    return {
        "name": line.name,
        "kind": line.kind,
        "members": list(line.members),
        "models": list(line.models),
        "metrics": metrics,
        "beats_benchmark": beats,
        "per_window": {metric: _rounded_list(line.values[metric]) for metric in METRICS},
    }


def _comparisons(lines: Sequence[Line], options: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every pair of lines: agents against baselines, agents between them, baselines between
    them; A is the earlier line, so A minus B reads "the agent minus the baseline"."""
    results = []
    for i, first in enumerate(lines):
        for second in lines[i + 1 :]:
            for metric in COMPARED_METRICS:
                difference = paired_difference(
                    first.values[metric], second.values[metric], **options
                )
                results.append(_difference_object(first.name, second.name, metric, difference))
    return results


def _notes(
    lines: Sequence[Line], comparisons: Sequence[Mapping[str, Any]], confidence: float
) -> list[str]:
    notes: list[str] = []
    windows = len(lines[0].values["return_pct"]) if lines else 0
    few = small_sample_note(windows)
    if few is not None:
        notes.append(few[0].upper() + few[1:] + ".")
    tests = sum(1 for item in comparisons if item["metric"] == "return_pct")
    if tests > 1:
        notes.append(
            f"{tests} pairs are compared on return: if every line were equally good, "
            f"{tests * (1 - confidence):.1f} of them on average would still look different at "
            f"{confidence:.0%} by chance alone, so treat a single difference near the edge of "
            "its interval with care (docs/evaluation.md)."
        )
    for line in lines:
        if len(line.members) > 1:
            notes.append(
                f"{line.name}: each window's value is the mean of {len(line.members)} runs "
                f"({', '.join(line.members)})."
            )
    seen: set[str] = set()
    for line in lines:
        for metric in METRICS:
            values = line.values[metric]
            missing = sum(1 for value in values if value is None)
            if missing and metric in ("sharpe", "win_rate"):
                key = f"{line.name}:{metric}"
                if key not in seen:
                    seen.add(key)
                    notes.append(
                        f"{line.name}: no {METRIC_LABELS[metric]} in {missing} of {len(values)} "
                        "windows (a flat account has no Sharpe ratio, no closed trade no win "
                        "rate); those windows are left out of that figure."
                    )
    return notes


# -- JSON pieces ----------------------------------------------------------------------------


def _window_object(window: WindowResult) -> dict[str, Any]:
    return {
        "index": window.index,
        "start": window.start.isoformat(),
        "end": window.end.isoformat(),
        "cycles": window.cycles,
        "buy_and_hold_return_pct": _round(window.buy_and_hold_return_pct),
        "run_id": window.run_id,
    }


def _interval(ci: Interval | None) -> list[float | None] | None:
    return None if ci is None else [_round(ci.low), _round(ci.high)]


def _estimate_object(found: Estimate) -> dict[str, Any]:
    return {
        "n": found.n,
        "missing": found.missing,
        "mean": _round(found.mean),
        "mean_ci": _interval(found.mean_ci),
        "median": _round(found.median),
        "median_ci": _interval(found.median_ci),
        "std": _round(found.std),
        "note": found.note,
    }


def _proportion_object(found: Proportion) -> dict[str, Any]:
    return {
        "windows": found.successes,
        "of": found.n,
        "fraction": _round(found.fraction),
        "ci": _interval(found.ci),
    }


def _difference_object(a: str, b: str, metric: str, found: PairedDifference) -> dict[str, Any]:
    return {
        "a": a,
        "b": b,
        "metric": metric,
        "n": found.n,
        "missing": found.missing,
        "mean_difference": _round(found.mean),
        "ci": _interval(found.ci),
        "median_difference": _round(found.median),
        "a_better_windows": found.a_better,
        "indistinguishable": found.indistinguishable,
        "note": found.note,
    }


def _round(value: float | None, digits: int = 6) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)


def _rounded_list(values: Iterable[float | None]) -> list[float | None]:
    return [_round(value) for value in values]


def _median(values: Sequence[float]) -> float:
    return float(np.median(values))


# -- Markdown -------------------------------------------------------------------------------


def render_markdown(report: Mapping[str, Any], *, title: str = "Evaluation") -> str:
    """Return the report as a Markdown summary."""
    method = report["method"]
    level = f"{method['confidence']:.0%}"
    windows = report["windows"]
    parts = [
        f"# {title}",
        "",
        f"{report['window_count']} windows of {report['window_days']:g} days"
        f"{' on ' + ', '.join(report['symbols']) if report['symbols'] else ''}, a cycle every "
        f"{report['interval']}, from {windows[0]['start'][:16]} to {windows[-1]['end'][:16]} UTC. "
        f"Intervals: {level}, {method['interval']} ({method['resamples']:,} resamples, seed "
        f"{method['seed']}). Buy-and-hold line: {report['benchmark']}.",
        "",
        "## Return per window",
        "",
        _summary_table(report, level),
        "",
    ]
    for metric in METRICS[1:]:
        parts += [f"## {METRIC_LABELS[metric].capitalize()}", "", _metric_table(report, metric)]
        parts.append("")
    parts += ["## Paired differences in return (A minus B, same windows)", ""]
    parts += [_comparison_table(report, level), ""]
    parts += ["## Lines that cannot be told apart on return", ""]
    parts += [_groups_text(report, level), ""]
    if report["notes"]:
        parts += ["## Notes", ""] + [f"- {note}" for note in report["notes"]] + [""]
    parts += ["## Windows", "", _windows_table(report), ""]
    return "\n".join(parts)


def _pct(value: float | None, digits: int = 2, *, signed: bool = True) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _ci(ci: Sequence[float | None] | None, digits: int = 2, *, signed: bool = True) -> str:
    if ci is None:
        return "no interval"
    return f"[{_pct(ci[0], digits, signed=signed)}, {_pct(ci[1], digits, signed=signed)}]"


def _summary_table(report: Mapping[str, Any], level: str) -> str:
    rows = [
        f"| agent | windows | mean | {level} CI | median | {level} CI | beats buy-and-hold |",
        "|---|---:|---:|---|---:|---|---|",
    ]
    for agent in report["agents"]:
        found = agent["metrics"]["return_pct"]
        beats = agent["beats_benchmark"]
        beat_text = "(the line itself)"
        if beats is not None:
            beat_text = _fraction_ci(beats) if beats["of"] else "n/a"
        rows.append(
            f"| {_label(agent)} | {found['n']} | {_pct(found['mean'])} | "
            f"{_ci(found['mean_ci'])} | {_pct(found['median'])} | {_ci(found['median_ci'])} | "
            f"{beat_text} |"
        )
    return "\n".join(rows)


def _fraction_ci(beats: Mapping[str, Any]) -> str:
    text = f"{beats['windows']}/{beats['of']} ({beats['fraction']:.0%})"
    if beats["ci"] is not None:
        low, high = beats["ci"]
        text += f" [{low:.0%}, {high:.0%}]"
    return text


def _label(agent: Mapping[str, Any]) -> str:
    suffix = " (baseline)" if agent["kind"] == "baseline" else ""
    if len(agent["members"]) > 1:
        suffix += f" ({len(agent['members'])} seeds)"
    return f"{agent['name']}{suffix}"


def _metric_table(report: Mapping[str, Any], metric: str) -> str:
    digits = 3 if metric == "win_rate" else 2
    signed = metric in ("sharpe",)
    rows = [
        "| agent | windows | missing | mean | CI | median | CI |",
        "|---|---:|---:|---:|---|---:|---|",
    ]
    for agent in report["agents"]:
        found = agent["metrics"][metric]
        rows.append(
            f"| {_label(agent)} | {found['n']} | {found['missing']} | "
            f"{_pct(found['mean'], digits, signed=signed)} | "
            f"{_ci(found['mean_ci'], digits, signed=signed)} | "
            f"{_pct(found['median'], digits, signed=signed)} | "
            f"{_ci(found['median_ci'], digits, signed=signed)} |"
        )
    return "\n".join(rows)


def _comparison_table(report: Mapping[str, Any], level: str) -> str:
    rows = [
        f"| A | B | windows | mean A - B (points) | {level} CI | A ahead in | verdict |",
        "|---|---|---:|---:|---|---:|---|",
    ]
    for item in report["comparisons"]:
        if item["metric"] != "return_pct":
            continue
        rows.append(
            f"| {item['a']} | {item['b']} | {item['n']} | {_pct(item['mean_difference'])} | "
            f"{_ci(item['ci'])} | {item['a_better_windows']}/{item['n']} | {_verdict(item)} |"
        )
    return "\n".join(rows)


def _verdict(item: Mapping[str, Any]) -> str:
    if item["ci"] is None:
        return "too few windows to tell"
    if item["indistinguishable"]:
        return "indistinguishable"
    better = item["a"] if item["mean_difference"] > 0 else item["b"]
    return f"{better} better"


def _groups_text(report: Mapping[str, Any], level: str) -> str:
    groups = report["indistinguishable_groups"]
    lines = [
        f"Within a group, every paired difference's {level} interval covers 0: these lines "
        "cannot be told apart over these windows (which is not the same as being equal). A line "
        "may sit in several groups.",
        "",
    ]
    letters = "abcdefghijklmnopqrstuvwxyz"
    for i, group in enumerate(groups):
        letter = letters[i] if i < len(letters) else str(i + 1)
        lines.append(f"- {letter}: {', '.join(group)}")
    return "\n".join(lines)


def _windows_table(report: Mapping[str, Any]) -> str:
    rows = [
        "| # | first cycle (UTC) | last cycle (UTC) | cycles | buy-and-hold, fee-free (%) |",
        "|---:|---|---|---:|---:|",
    ]
    for window in report["windows"]:
        rows.append(
            f"| {window['index']} | {window['start'][:16]} | {window['end'][:16]} | "
            f"{window['cycles']} | {_pct(window['buy_and_hold_return_pct'])} |"
        )
    return "\n".join(rows)


# -- charts ---------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_return_chart(path: Path, report: Mapping[str, Any]) -> None:
    """Draw each line's returns over windows: a box, every window as a dot, the mean's interval."""
    plt = _pyplot()
    agents = report["agents"]
    figure, axes = plt.subplots(figsize=(max(6.0, 1.3 * len(agents) + 2), 5.0), dpi=110)
    positions = np.arange(1, len(agents) + 1)
    data = [
        [value for value in agent["per_window"]["return_pct"] if value is not None]
        for agent in agents
    ]
    axes.boxplot(data, positions=positions, widths=0.5, showfliers=False)
    for position, values in zip(positions, data, strict=True):
        if values:
            # Evenly spread dots (no random jitter: the same report draws the same picture).
            offsets = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else [0.0]
            axes.scatter(position + np.asarray(offsets), values, s=14, alpha=0.7, zorder=3)
    for position, agent in zip(positions, agents, strict=True):
        found = agent["metrics"]["return_pct"]
        if found["mean"] is not None:
            low, high = found["mean_ci"] or (found["mean"], found["mean"])
            axes.errorbar(
                position + 0.32,
                found["mean"],
                yerr=[[found["mean"] - low], [high - found["mean"]]],
                fmt="D",
                color="black",
                markersize=4,
                capsize=3,
            )
    axes.axhline(0.0, color="grey", linewidth=0.8)
    axes.set_xticks(positions, [_label(agent) for agent in agents], rotation=20, ha="right")
    axes.set_ylabel("return per window (%)")
    level = f"{report['method']['confidence']:.0%}"
    axes.set_title(
        f"Return over {report['window_count']} windows of {report['window_days']:g} days\n"
        f"box: quartiles; dots: windows; diamond: mean with its {level} interval",
        fontsize="medium",
    )
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, metadata={"Software": None})
    plt.close(figure)


def fan_bands(
    windows: Sequence[WindowResult], *, quantiles: Sequence[float] = (0.05, 0.5, 0.95)
) -> dict[str, np.ndarray]:
    """Return, per line, the quantiles over windows of the normalised account value.

    Every run is one curve: the seeds of `random` are pooled, so its band shows the spread of
    luck. The result maps the line's name to a (len(quantiles), CURVE_POINTS) array.
    """
    curves: dict[str, list[tuple[float, ...]]] = {}
    for line in report_lines(windows):
        curves[line.name] = []
    for window in windows:
        for agent in window.agents:
            if len(agent.curve) == CURVE_POINTS:
                curves[agent.group].append(agent.curve)
    return {
        name: np.quantile(np.asarray(found), list(quantiles), axis=0)
        for name, found in curves.items()
        if found
    }


def write_fan_chart(path: Path, windows: Sequence[WindowResult]) -> None:
    """Draw, per line, the median account value over windows and its 5-95% band."""
    plt = _pyplot()
    bands = fan_bands(windows, quantiles=(0.05, 0.25, 0.5, 0.75, 0.95))
    names = list(bands)
    columns = min(3, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / columns))
    figure, grid = plt.subplots(
        rows,
        columns,
        figsize=(4.2 * columns, 3.2 * rows),
        dpi=110,
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    days = _median([window_days(window) for window in windows])
    elapsed = np.linspace(0.0, days, CURVE_POINTS)
    for i, name in enumerate(names):
        axes = grid[i // columns][i % columns]
        low, lower, middle, upper, high = bands[name]
        axes.fill_between(elapsed, low, high, color="C0", alpha=0.15, label="5-95%")
        axes.fill_between(elapsed, lower, upper, color="C0", alpha=0.35, label="25-75%")
        axes.plot(elapsed, middle, color="C0", linewidth=1.4, label="median")
        axes.axhline(1.0, color="grey", linewidth=0.8)
        axes.set_title(name, fontsize="medium")
        axes.grid(alpha=0.3)
    for j in range(len(names), rows * columns):
        grid[j // columns][j % columns].set_visible(False)
    grid[0][0].legend(loc="upper left", fontsize="small")
    for axes in grid[-1]:
        axes.set_xlabel("days into the window")
    for row in grid:
        row[0].set_ylabel("account value / start")
    figure.suptitle(f"Account value over {len(windows)} windows (normalised to the start)")
    figure.tight_layout()
    figure.savefig(path, metadata={"Software": None})
    plt.close(figure)


def write_evaluation_report(
    directory: Path,
    windows: Sequence[WindowResult],
    report: Mapping[str, Any],
    *,
    title: str = "Evaluation",
) -> dict[str, Path]:
    """Write summary.md, evaluation.json, returns.png and account_value_fan.png into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": directory / "summary.md",
        "json": directory / "evaluation.json",
        "returns": directory / "returns.png",
        "fan": directory / "account_value_fan.png",
    }
    paths["markdown"].write_text(render_markdown(report, title=title), encoding="utf-8")
    paths["json"].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    write_return_chart(paths["returns"], report)
    write_fan_chart(paths["fan"], windows)
    return paths
