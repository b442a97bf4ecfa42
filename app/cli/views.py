"""What the commands show: rich tables and text for people, `--json` documents for programs.

Only rendering lives here; the figures come from `app.reports`, `app.db.queries` and
`app.llm.quota_report`. Their types are imported for type checking only, so that `arena --help`
does not load the database and LLM stacks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from app.config import Settings
    from app.db.queries import ChatEntry
    from app.domain import ClosedTrade, Position
    from app.market.ccxt_feed import DownloadResult
    from app.quota_report import ModelQuota, ProbeResult
    from app.reports import LeaderboardRow

# Providers whose API key `arena config` reports as set or not (never the key itself).
KEYED_PROVIDERS = ("modelscope", "deepseek", "dashscope", "openai")


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}%"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _price(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def config_json(settings: Settings) -> dict[str, Any]:
    """Return the settings as a JSON-ready dict, each API key shown only as set or not."""
    payload = settings.model_dump(mode="json")
    for provider in KEYED_PROVIDERS:
        key = settings.provider_settings(provider).api_key
        payload[provider]["api_key"] = "set" if key is not None else None
    return payload


def leaderboard_table(
    rows: Sequence[LeaderboardRow], *, title: str, hodl_pct: float | None
) -> Table:
    """Return the leaderboard as a rich table (buy-and-hold as the last line when known)."""
    table = Table(title=title, title_justify="left")
    for header, justify in (
        ("#", "right"),
        ("agent", "left"),
        ("model", "left"),
        ("account value", "right"),
        ("return", "right"),
        ("Sharpe", "right"),
        ("max DD", "right"),
        ("trades", "right"),
        ("win rate", "right"),
        ("fees", "right"),
        ("funding", "right"),
        ("LLM calls", "right"),
        ("cache hits", "right"),
        ("parse failures", "right"),
        ("rejected", "right"),
        ("tokens in/out", "right"),
    ):
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    for rank, row in enumerate(rows, start=1):
        table.add_row(
            str(rank),
            row.name,
            f"{row.provider}:{row.model}",
            _money(row.final_equity),
            _pct(row.return_pct),
            _ratio(row.sharpe),
            f"{row.max_drawdown_pct:.2f}%",
            str(row.trades),
            "-" if row.win_rate is None else f"{row.win_rate * 100:.1f}%",
            _money(row.fees_paid),
            _money(row.funding_paid),
            str(row.llm_calls),
            str(row.cache_hits),
            str(row.parse_failures),
            str(row.rejected_decisions),
            f"{row.prompt_tokens:,}/{row.completion_tokens:,}",
        )
    if hodl_pct is not None:
        table.add_row("", "buy & hold", "equal weight, no fees", "", _pct(hodl_pct), *[""] * 11)
    return table


def leaderboard_json(run_id: str, rows: Sequence[LeaderboardRow]) -> dict[str, Any]:
    """Return `arena leaderboard --json`'s document."""
    return {"run": run_id, "agents": [dataclasses.asdict(row) for row in rows]}


def positions_json(items: Sequence[tuple[str, Position]]) -> list[dict[str, Any]]:
    """Return `arena positions --json`'s document from (agent name, position) pairs."""
    return [
        {
            "agent": name,
            "coin": p.coin,
            "side": p.side,
            "quantity": p.quantity,
            "entry_price": p.entry_price,
            "leverage": p.leverage,
            "margin_usd": p.margin_usd,
            "liquidation_price": p.liquidation_price,
            "profit_target": p.exit_plan.profit_target,
            "stop_loss": p.exit_plan.stop_loss,
            "invalidation_condition": p.exit_plan.invalidation_condition,
            "opened_at": p.opened_at.isoformat(),
            "funding_usd": p.funding_usd,
        }
        for name, p in items
    ]


def positions_table(run_id: str, items: Sequence[tuple[str, Position]]) -> Table:
    """Return the open positions, one row per (agent name, position), as a rich table."""
    table = Table(title=f"Open positions ({run_id})", title_justify="left")
    for header in (
        "agent",
        "coin",
        "side",
        "qty",
        "entry",
        "lev",
        "margin",
        "liq.",
        "target",
        "stop",
        "opened (UTC)",
    ):
        table.add_column(header)
    for name, p in items:
        table.add_row(
            name,
            p.coin,
            p.side,
            f"{p.quantity:.6g}",
            f"{p.entry_price:.6g}",
            f"{p.leverage}x",
            _money(p.margin_usd),
            f"{p.liquidation_price:.6g}",
            _price(p.exit_plan.profit_target),
            _price(p.exit_plan.stop_loss),
            f"{p.opened_at:%Y-%m-%d %H:%M}",
        )
    return table


def trades_json(items: Sequence[tuple[str, ClosedTrade]]) -> list[dict[str, Any]]:
    """Return `arena trades --json`'s document from (agent name, trade) pairs."""
    return [
        {
            "agent": name,
            **dataclasses.asdict(trade),
            "holding_hours": trade.holding_time.total_seconds() / 3600,
        }
        for name, trade in items
    ]


def trades_table(run_id: str, items: Sequence[tuple[str, ClosedTrade]]) -> Table:
    """Return the closed trades, one row per (agent name, trade), as a rich table."""
    table = Table(title=f"Closed trades ({run_id}), newest first", title_justify="left")
    for header in (
        "agent",
        "coin",
        "side",
        "qty",
        "entry",
        "exit",
        "lev",
        "fees",
        "funding",
        "net PnL",
        "held",
        "exit reason",
        "closed (UTC)",
    ):
        table.add_column(header)
    for name, t in items:
        table.add_row(
            name,
            t.coin,
            t.side,
            f"{t.quantity:.6g}",
            f"{t.entry_price:.6g}",
            f"{t.exit_price:.6g}",
            f"{t.leverage}x",
            _money(t.entry_fee_usd + t.exit_fee_usd),
            _money(t.funding_usd),
            _money(t.net_pnl_usd),
            f"{t.holding_time.total_seconds() / 3600:.1f}h",
            t.exit_reason,
            f"{t.closed_at:%Y-%m-%d %H:%M}",
        )
    return table


def chat_json(entries: Sequence[ChatEntry]) -> list[dict[str, Any]]:
    """Return `arena chat --json`'s document."""
    return [
        {
            "agent": e.agent,
            "at": e.at.isoformat(),
            "model": e.model,
            "outcome": e.outcome,
            "reasoning": e.reasoning,
            "response": e.response_text,
            "error": e.error,
            "decisions": [
                {"coin": c, "signal": s, "outcome": o, "reason": r} for c, s, o, r in e.decisions
            ],
        }
        for e in entries
    ]


def print_chat(console: Console, entries: Sequence[ChatEntry]) -> None:
    """Print each call as a rule, its reasoning summary, its error and its decisions."""
    from app.db.queries import summarize_reasoning

    for e in entries:
        console.rule(
            f"{e.agent} · {e.at:%Y-%m-%d %H:%M:%S} UTC · {e.model} · {e.outcome}", align="left"
        )
        summary = summarize_reasoning(e.reasoning or e.response_text)
        if summary:
            console.print(summary, highlight=False)
        if e.error:
            console.print(f"[red]{e.error}[/]", highlight=False)
        for coin, signal, outcome, reason in e.decisions:
            note = f" ({reason})" if reason else ""
            console.print(f"  {coin}: {signal} → {outcome}{note}", highlight=False)


def quota_json(
    interval: str, report: Sequence[ModelQuota], probes: Sequence[ProbeResult] = ()
) -> dict[str, Any]:
    """Return `arena quota --json`'s document (`interval`: the decision cadence)."""
    return {
        "interval": interval,
        "models": [item.as_json() for item in report],
        "probes": [dataclasses.asdict(probe) for probe in probes],
    }


def probe_lines(probes: Sequence[ProbeResult]) -> list[str]:
    """Return one rich-markup line per probe outcome."""
    lines = []
    for probe in probes:
        if probe.outcome == "ok":
            lines.append(f"probe {probe.provider}:{probe.model}: [green]ok[/]")
        else:
            lines.append(
                f"probe {probe.provider}:{probe.model}: [red]{probe.outcome}[/] ({probe.detail})"
            )
    return lines


def _fraction(left: int | None, limit: int | None) -> str:
    if left is None and limit is None:
        return "?"
    return f"{'?' if left is None else left}/{limit or '?'}"


def _verdict(item: ModelQuota) -> str:
    if item.exhausted:
        return "[red]exhausted today[/]"
    if item.enough_for_today is None:
        return "unknown"
    left = f"{item.calls_left}{' (est.)' if item.calls_left_estimated else ''} left"
    if item.enough_for_today:
        return f"[green]enough[/]: {left}"
    return f"[yellow]runs out ~{item.runs_out_at}[/]: {left}"


def quota_table(interval: str, report: Sequence[ModelQuota]) -> Table | str:
    """Return the quota report as a rich table (or a sentence when no agent uses a model)."""
    if not report:
        return "No LLM agents configured (only baselines): no quota is used."
    table = Table(
        title=f"LLM quota, today (UTC), one decision every {interval}",
        caption="model/account left: last-seen remainder/limit; unknown: run arena quota --probe",
    )
    for column in ("model", "calls today", "model left", "account left", "needed", "verdict"):
        table.add_column(column, overflow="fold")
    for item in report:
        table.add_row(
            f"{item.provider}:{item.model}",
            f"{item.calls_today}"
            + (f" ({item.failures_today} failed)" if item.failures_today else ""),
            _fraction(item.model_requests_remaining, item.model_requests_limit),
            _fraction(item.requests_remaining, item.requests_limit),
            str(item.calls_needed_today),
            _verdict(item),
        )
    return table


def download_json(results: Sequence[DownloadResult]) -> list[dict[str, Any]]:
    """Return `arena data download --json`'s document."""
    return [dataclasses.asdict(result) for result in results]


def download_lines(results: Sequence[DownloadResult]) -> list[str]:
    """Return one line per downloaded series, then how to replay them."""
    lines = [
        f"{r.symbol} {r.timeframe}: {r.cached_before} already cached, "
        f"{r.fetched} fetched, {r.expected} expected"
        for r in results
    ]
    if results:
        lines.append(
            f"replay them with: arena backtest --data cache:{results[0].source} --agent ..."
        )
    return lines
