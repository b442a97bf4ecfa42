"""`arena evaluate`: every agent and the baselines over many windows, with confidence intervals."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from app.cli.console import print_json, stderr, stdout
from app.cli.context import get_settings
from app.cli.options import AgentOption, WideOption, agents_from, parse_coins, parse_timeframe
from app.cli.tables import Column, FittedTable
from app.domain import LlmMode
from app.errors import ConfigError

KEEP_CHOICES = ("summary", "trades", "full")


def evaluate_command(
    data: Annotated[
        list[Path],
        typer.Option("--data", help="Candle files or folders, as for `arena backtest`."),
    ],
    agent: AgentOption = None,
    windows: Annotated[
        int | None,
        typer.Option("--windows", help="How many windows (default: as many as fit apart)."),
    ] = None,
    window_days: Annotated[
        float, typer.Option("--window-days", help="Each window's length in days.")
    ] = 7.0,
    interval: Annotated[
        str | None, typer.Option("--interval", help="Cadence, e.g. 5m (default: the config's).")
    ] = None,
    symbols: Annotated[
        str | None, typer.Option("--symbols", help="Coins, e.g. BTC,ETH (default: all).")
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option("--seed", help="Random window starts from this seed (they may overlap)."),
    ] = None,
    random_seeds: Annotated[
        int, typer.Option("--random-seeds", help="Seeds of the random baseline (the luck line).")
    ] = 5,
    executor: Annotated[
        str, typer.Option("--executor", help="local (a process pool) or ray.")
    ] = "local",
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", help="Windows run at once (default: every CPU; 0: in this process)."
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option("--ray-address", help="Ray cluster, e.g. ray://head:10001 (default: local)."),
    ] = None,
    llm_mode: Annotated[
        LlmMode,
        typer.Option(
            "--llm-mode",
            help="cached: call only for prompts not answered before; "
            "replay: never call a model; live: always call.",
        ),
    ] = LlmMode.CACHED,
    keep: Annotated[
        str,
        typer.Option(
            "--keep",
            help="What each window's backtest keeps: summary (figures and trades), "
            "trades (also decisions), full (also every cycle's prompt and answer).",
        ),
    ] = "summary",
    cash: Annotated[float, typer.Option("--cash", help="Starting cash per agent, USD.")] = 10_000.0,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="Write summary.md, evaluation.json and charts here."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print only the report, as one JSON object.")
    ] = False,
    yes: Annotated[
        bool,
        typer.Option("--yes", help="Run even when the model calls exceed today's quota."),
    ] = False,
    wide: WideOption = False,
) -> None:
    """Is it better than luck? Every agent, buy-and-hold, ema_trend and random over many windows."""
    from app.evaluation.executors import build_executor
    from app.evaluation.plan import EvaluationPlan, open_plan, run_plan, with_baselines
    from app.evaluation.report import build_report, write_evaluation_report
    from app.evaluation.window_run import WindowJob, data_range
    from app.evaluation.windows import plan_windows
    from app.wiring import evaluation_plan_store, open_database, require_keys

    settings = get_settings()
    if cash <= 0:
        raise ConfigError(f"--cash must be positive, got {cash}")
    if keep not in KEEP_CHOICES:
        raise ConfigError(f"--keep must be one of {', '.join(KEEP_CHOICES)}, got {keep!r}")
    pool = build_executor(executor, workers=workers, address=ray_address)
    agents = with_baselines(agents_from(agent, settings), random_seeds=random_seeds)
    job = WindowJob(
        data=tuple(data),
        agents=agents,
        interval=parse_timeframe(interval, option="--interval") if interval else None,
        symbols=tuple(parse_coins(symbols)) if symbols else None,
        llm_mode=llm_mode,
        cash_usd=cash,
        keep=keep,
    )
    if llm_mode != LlmMode.REPLAY:
        require_keys(
            settings,
            agents,
            hint="or re-run with --llm-mode replay to use only answers stored by an earlier run",
        )
    database = open_database(settings)
    found, cadence = data_range(settings, job, database=database)
    planned = plan_windows(found, days=window_days, count=windows, seed=seed)
    plan = EvaluationPlan(
        job=job, windows=planned, window_days=window_days, interval=cadence, seed=seed
    )
    store = evaluation_plan_store(database)
    status = open_plan(plan, store)
    remaining = status.remaining(planned)
    limits = _check_budget(settings, database, plan, remaining, step=found.step, yes=yes)
    stderr.print(
        f"{len(planned)} windows of {window_days:g} days every {cadence}, "
        f"{len(agents)} agents and baselines; {len(planned) - len(remaining)} finished before, "
        f"{len(remaining)} to run on {executor}" + _workers_text(executor, workers, pool.workers),
        soft_wrap=True,
        highlight=False,
    )
    with _window_bar(len(planned), done=len(planned) - len(remaining)) as advance:
        results = run_plan(
            settings,
            plan,
            status,
            store=store,
            executor=pool,
            on_window=lambda _: advance(),
            call_limits=limits,
        )
    evaluation = build_report(results)
    if report is not None:
        paths = write_evaluation_report(report, results, evaluation)
        names = ", ".join(path.name for path in paths.values())
        stderr.print(f"report written to {report}/ ({names})", soft_wrap=True, highlight=False)
    if as_json:
        print_json(evaluation)
        return
    stdout.print(_returns_table(evaluation, wide=wide))
    for note in evaluation["notes"]:
        stderr.print(f"note: {note}", highlight=False, soft_wrap=True)


def _workers_text(executor: str, asked: int | None, workers: int) -> str:
    if executor == "local" and asked == 0:
        return " (in this process)"
    return f" ({workers} workers)" if workers else ""


def _check_budget(
    settings: Any, database: Any, plan: Any, remaining: Any, *, step: Any, yes: bool
) -> dict[tuple[str, str], int]:
    """Print the model calls the plan needs; refuse when they exceed today's quota, unless --yes.

    Return the calls each model may be sent today (known remainders only): one budget that every
    worker takes its calls from, so parallel windows never send more than the quota leaves.
    """
    from datetime import UTC, datetime

    from app import quota_report as quota
    from app.db import queries
    from app.evaluation.budget import call_budget

    models = [agent for agent in plan.job.agents if agent.provider != "baseline"]
    if not models or not remaining:
        return {}
    picture = quota.quota_report(
        settings.model_copy(update={"agents": models}), database.sessions, now=datetime.now(UTC)
    )
    budgets = call_budget(
        models,
        remaining,
        step_cycles=lambda window: window.cycles(step),
        stored=lambda provider, model: queries.stored_answers(database.engine, provider, model),
        calls_left={(row.provider, row.model): row.calls_left for row in picture},
    )
    for budget in budgets:
        stderr.print(f"model calls: {budget.describe()}", highlight=False, soft_wrap=True)
    if plan.job.llm_mode == LlmMode.REPLAY:
        stderr.print("--llm-mode replay: no model is called; an answer not stored fails its window")
        return {}
    over = [budget for budget in budgets if budget.exceeds_today]
    if over and not yes:
        names = ", ".join(f"{b.provider}:{b.model}" for b in over)
        raise ConfigError(
            f"the plan needs more calls than today's quota leaves on {names}; run with --yes to "
            "start anyway (calls beyond the quota are not sent: the agent holds), or use fewer "
            "--windows, shorter --window-days, or --llm-mode replay"
        )
    return {
        (budget.provider, budget.model): budget.calls_left_today
        for budget in budgets
        if budget.calls_left_today is not None
    }


def _window_bar(total: int, *, done: int) -> Any:
    from contextlib import contextmanager

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    @contextmanager
    def bar() -> Any:
        with Progress(
            TextColumn("windows"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=stderr,
        ) as progress:
            task = progress.add_task("windows", total=total, completed=done)
            yield lambda: progress.advance(task)

    return bar()


def _returns_table(evaluation: dict[str, Any], *, wide: bool) -> FittedTable:
    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:+.2f}%"

    def ci(values: list[float | None] | None) -> str:
        if not values or values[0] is None or values[1] is None:
            return "-"
        return f"[{values[0]:+.2f}, {values[1]:+.2f}]"

    rows = []
    for line in evaluation["agents"]:
        returns = line["metrics"]["return_pct"]
        sharpe = line["metrics"]["sharpe"]
        beats = line["beats_benchmark"]
        rows.append(
            (
                line["name"],
                pct(returns["mean"]),
                ci(returns["mean_ci"]),
                pct(returns["median"]),
                "-" if sharpe["mean"] is None else f"{sharpe['mean']:.2f}",
                "-" if beats is None else f"{beats['windows']}/{beats['of']}",
                f"{line['metrics']['trades']['mean']:.1f}",
            )
        )
    columns = (
        Column("agent", text=True, max_width=24),
        Column("mean return", "right"),
        Column("95% interval", "right"),
        Column("median", "right", priority=2),
        Column("Sharpe", "right", priority=3),
        Column("beat B&H", "right", priority=1),
        Column("trades", "right", priority=4),
    )
    title = (
        f"Evaluation over {evaluation['window_count']} windows of "
        f"{evaluation['window_days']:g} days, every {evaluation['interval']}"
    )
    return FittedTable(columns, rows, title=title, wide=wide)
