"""What the commands show: rich tables and text for people, `--json` documents for programs.

Only rendering lives here; the figures come from `app.reports`, `app.db.queries` and
`app.llm.quota_report`. Their types are imported for type checking only, so that `arena --help`
does not load the database and LLM stacks.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from rich.console import Console
from rich.markup import escape

from app.cli.tables import Column, FittedTable

if TYPE_CHECKING:
    from pathlib import Path

    from app.config import Settings
    from app.db.queries import ChatEntry, DecisionDetail, SentImage
    from app.domain import ChatMessage, ClosedTrade, Position
    from app.market.ccxt_feed import DownloadResult
    from app.quota_report import ModelQuota, ProbeResult
    from app.reports import LeaderboardRow

# Providers whose API key `arena config` reports as set or not (never the key itself).
KEYED_PROVIDERS = ("modelscope", "deepseek", "dashscope", "openai")


# What a table shows for a figure that does not exist (no trade, too short a sample...).
MISSING = "–"


def _money(value: float | None) -> str:
    return MISSING if value is None else f"{value:,.2f}"


def _pct(value: float | None) -> str:
    return MISSING if value is None else f"{value:+.2f}%"


def _ratio(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f}"


def _number(value: float | None, digits: int = 6) -> str:
    """Return a quantity with up to `digits` significant digits, never in exponent form."""
    if value is None or not math.isfinite(value):
        return MISSING
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    text = f"{value:,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _price(value: float | None) -> str:
    """Return a price: cents from 1,000 up (110,234.50), else 6 significant digits (0.186540)."""
    if value is None or not math.isfinite(value):
        return MISSING
    if abs(value) >= 1000:
        return f"{value:,.2f}"
    if value == 0:
        return "0"
    decimals = max(2, 5 - math.floor(math.log10(abs(value))))
    return f"{value:,.{decimals}f}"


def synthetic_label(name: str) -> str:
    """Return an agent's label in a run on synthetic data."""
    return f"{name} (SYNTHETIC)"


def config_json(settings: Settings) -> dict[str, Any]:
    """Return the settings as a JSON-ready dict, each API key shown only as set or not, the
    database URL without its password, and the verdict (`config_verdict`) under `verdict`."""
    from app.db.session import safe_url

    payload = settings.model_dump(mode="json")
    for provider in KEYED_PROVIDERS:
        key = settings.provider_settings(provider).api_key
        payload[provider]["api_key"] = "set" if key is not None else None
    payload["database"]["url"] = safe_url(settings.database.url)
    payload["verdict"] = config_verdict(settings)
    return payload


def config_verdict(settings: Settings) -> dict[str, Any]:
    """Return, per agent, whether it can run (and which key it lacks), and what `start` does."""
    from app.providers import BASELINE, POOL, PROVIDERS

    agents = []
    for agent in settings.agents:
        if agent.provider == BASELINE:
            agents.append({"agent": agent.name, "ready": True, "detail": "rule-based, no key"})
            continue
        if agent.provider == POOL:
            lacking = []
            for provider in dict.fromkeys(p for p, _ in settings.agent_chain(agent)):
                pool_key = settings.provider_settings(provider).api_key
                if PROVIDERS[provider].key_required and (
                    pool_key is None or not pool_key.get_secret_value()
                ):
                    lacking.append(PROVIDERS[provider].key_env)
            detail = f"pool {agent.model}: " + (
                f"needs {', '.join(lacking)}: not set" if lacking else "keys set"
            )
            agents.append({"agent": agent.name, "ready": not lacking, "detail": detail})
            continue
        traits = PROVIDERS[agent.provider]
        key = settings.provider_settings(agent.provider).api_key
        if not traits.key_required:
            detail, ready = f"{traits.key_env} not needed (any key is accepted)", True
        elif key is None or not key.get_secret_value():
            detail, ready = f"needs {traits.key_env}: not set", False
        else:
            detail, ready = f"{traits.key_env}: set", True
        agents.append({"agent": agent.name, "ready": ready, "detail": detail})
    models_ready = [
        a
        for a, agent in zip(agents, settings.agents, strict=True)
        if a["ready"] and agent.provider != BASELINE
    ]
    if models_ready:
        start = "arena start runs the live arena (arena run) with the agents that are ready"
    else:
        start = (
            "no model agent can run: arena start gives the first look (the baselines on recent "
            "candles); set a key in .env to let a model trade"
        )
    return {"agents": agents, "start": start}


def config_verdict_lines(verdict: Mapping[str, Any]) -> list[str]:
    """Return the verdict as lines for people (rich markup)."""
    lines = ["[bold]Verdict[/]"]
    for item in verdict["agents"]:
        mark = "[green]ready[/]" if item["ready"] else "[red]not ready[/]"
        lines.append(f"  agent {escape(item['agent'])}: {mark}, {escape(item['detail'])}")
    lines.append(f"  {escape(verdict['start'])}")
    return lines


# The leaderboard's columns; priority 0 always shows, the others go highest first as the
# terminal narrows (the order here is the order on screen).
LEADERBOARD_COLUMNS = (
    Column("#", "right"),
    Column("agent", text=True, max_width=26),
    Column("model", priority=9, text=True, max_width=40),
    Column("account value", "right"),
    Column("return", "right"),
    Column("Sharpe", "right"),
    Column("max DD", "right", priority=1),
    Column("trades", "right"),
    Column("win rate", "right", priority=2),
    Column("fees", "right", priority=3),
    Column("funding", "right", priority=6),
    Column("LLM calls", "right", priority=4),
    Column("held", "right", priority=4),
    Column("failed", "right", priority=5),
    Column("cache hits", "right", priority=7),
    Column("parse failures", "right", priority=8),
    Column("rejected", "right", priority=8),
    Column("tokens in/out", "right", priority=10),
)


def leaderboard_table(
    rows: Sequence[LeaderboardRow],
    *,
    title: str,
    hodl_pct: float | None,
    wide: bool = False,
    synthetic: bool = False,
) -> FittedTable:
    """Return the leaderboard (buy-and-hold as the last line when known) fitted to the width.

    An agent with no cycle yet shows its starting cash and "no cycle yet"; `synthetic` labels
    every agent of a run on synthetic data.
    """
    cells: list[tuple[str, ...]] = []
    for rank, row in enumerate(rows, start=1):
        started = row.last_at is not None
        cells.append(
            (
                str(rank),
                synthetic_label(row.name) if synthetic else row.name,
                f"{row.provider}:{row.model}",
                _money(row.final_equity),
                _pct(row.return_pct) if started else "no cycle yet",
                _ratio(row.sharpe),
                f"{row.max_drawdown_pct:.2f}%" if started else MISSING,
                str(row.trades),
                MISSING if row.win_rate is None else f"{row.win_rate * 100:.1f}%",
                _money(row.fees_paid),
                _money(row.funding_paid),
                str(row.llm_calls),
                row.held_text,
                str(row.failed_cycles),
                str(row.cache_hits),
                str(row.parse_failures),
                str(row.rejected_decisions),
                f"{row.prompt_tokens:,}/{row.completion_tokens:,}",
            )
        )
    if hodl_pct is not None:
        benchmark = ["", "buy & hold (no fees)", "equal weight", "", _pct(hodl_pct)]
        cells.append((*benchmark, *[""] * (len(LEADERBOARD_COLUMNS) - len(benchmark))))
    notes = sorted({row.sharpe_note for row in rows if row.sharpe is None and row.sharpe_note})
    lines = [f"Sharpe {MISSING}: {'; '.join(notes)}"] if notes else []
    # A quota-starved agent must not pass for a quiet one (+0.00%): say so whatever the width.
    held = [f"{row.name} {row.held_text}" for row in rows if row.held_text]
    if held:
        lines.append(f"held (no model could be asked, no request sent): {'; '.join(held)}")
    caption = "\n".join(lines) if lines else None
    return FittedTable(LEADERBOARD_COLUMNS, cells, title=title, caption=caption, wide=wide)


def leaderboard_json(
    run_id: str, rows: Sequence[LeaderboardRow], *, synthetic: bool = False
) -> dict[str, Any]:
    """Return `arena leaderboard --json`'s document (`run` is the older name of `run_id`)."""
    return {
        "run": run_id,
        "run_id": run_id,
        "synthetic": synthetic,
        "agents": [dataclasses.asdict(row) for row in rows],
    }


def positions_json(
    items: Sequence[tuple[str, Position]], prices: Mapping[str, float] | None = None
) -> list[dict[str, Any]]:
    """Return `arena positions --json`'s document from (agent name, position) pairs.

    `prices` are the coins' last known prices: each position then carries `price` and
    `unrealized_pnl_usd` (null where the price is unknown).
    """
    prices = prices or {}
    documents = []
    for name, p in items:
        price = prices.get(p.coin)
        documents.append(
            {
                "agent": name,
                "coin": p.coin,
                "side": p.side,
                "quantity": p.quantity,
                "entry_price": p.entry_price,
                "price": price,
                "unrealized_pnl_usd": None if price is None else p.unrealized_pnl_usd(price),
                "leverage": p.leverage,
                "margin_usd": p.margin_usd,
                "liquidation_price": p.liquidation_price,
                "profit_target": p.exit_plan.profit_target,
                "stop_loss": p.exit_plan.stop_loss,
                "invalidation_condition": p.exit_plan.invalidation_condition,
                "opened_at": p.opened_at.isoformat(),
                "funding_usd": p.funding_usd,
            }
        )
    return documents


POSITION_COLUMNS = (
    Column("agent", text=True, max_width=20),
    Column("coin"),
    Column("side"),
    Column("qty", "right"),
    Column("entry", "right"),
    Column("price", "right"),
    Column("uPnL", "right"),
    Column("lev", "right", priority=2),
    Column("margin", "right", priority=4),
    Column("liq.", "right", priority=3),
    Column("target", "right", priority=1),
    Column("stop", "right", priority=1),
    Column("opened (UTC)", priority=5),
)


def positions_table(
    run_id: str,
    items: Sequence[tuple[str, Position]],
    *,
    prices: Mapping[str, float] | None = None,
    prices_note: str | None = None,
    wide: bool = False,
) -> FittedTable:
    """Return the open positions, one row per (agent name, position), fitted to the width.

    `prices` are the coins' last known prices (the price and unrealized PnL columns show
    "–" without them); `prices_note` says where they come from.
    """
    prices = prices or {}
    cells = []
    for name, p in items:
        price = prices.get(p.coin)
        cells.append(
            (
                name,
                p.coin,
                p.side,
                _number(p.quantity),
                _price(p.entry_price),
                _price(price),
                MISSING if price is None else f"{p.unrealized_pnl_usd(price):+,.2f}",
                f"{p.leverage}x",
                _money(p.margin_usd),
                _price(p.liquidation_price),
                _price(p.exit_plan.profit_target),
                _price(p.exit_plan.stop_loss),
                f"{p.opened_at:%Y-%m-%d %H:%M}",
            )
        )
    return FittedTable(
        POSITION_COLUMNS,
        cells,
        title=f"Open positions ({run_id})",
        caption=prices_note,
        wide=wide,
    )


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


TRADE_COLUMNS = (
    Column("agent", text=True, max_width=20),
    Column("coin"),
    Column("side"),
    Column("qty", "right", priority=5),
    Column("entry", "right", priority=2),
    Column("exit", "right", priority=2),
    Column("lev", "right", priority=6),
    Column("fees", "right", priority=4),
    Column("funding", "right", priority=4),
    Column("net PnL", "right"),
    Column("held", "right", priority=3),
    Column("exit reason", priority=1, text=True, max_width=14),
    Column("closed (UTC)"),
)


def trades_table(
    run_id: str, items: Sequence[tuple[str, ClosedTrade]], *, wide: bool = False
) -> FittedTable:
    """Return the closed trades, one row per (agent name, trade), fitted to the width."""
    cells = [
        (
            name,
            t.coin,
            t.side,
            _number(t.quantity),
            _price(t.entry_price),
            _price(t.exit_price),
            f"{t.leverage}x",
            _money(t.entry_fee_usd + t.exit_fee_usd),
            _money(t.funding_usd),
            f"{t.net_pnl_usd:+,.2f}",
            f"{t.holding_time.total_seconds() / 3600:.1f}h",
            t.exit_reason,
            f"{t.closed_at:%Y-%m-%d %H:%M}",
        )
        for name, t in items
    ]
    return FittedTable(
        TRADE_COLUMNS, cells, title=f"Closed trades ({run_id}), newest first", wide=wide
    )


def _decision_json(detail: DecisionDetail) -> dict[str, Any]:
    return {
        "coin": detail.coin,
        "signal": detail.signal,
        "outcome": detail.outcome,
        "reason": detail.reason,
        "quantity": detail.quantity,
        "leverage": detail.leverage,
        "confidence": detail.confidence,
        "profit_target": detail.profit_target,
        "stop_loss": detail.stop_loss,
        "justification": detail.justification,
        "filled_quantity": detail.filled_quantity,
        "fill_price": detail.fill_price,
    }


def chat_json(
    entries: Sequence[ChatEntry],
    details: Mapping[int, Sequence[DecisionDetail]] | None = None,
    prompts: Mapping[int, Sequence[ChatMessage]] | None = None,
    *,
    images: Mapping[int, Sequence[SentImage]] | None = None,
    files: Mapping[tuple[int, int], Path] | None = None,
    run_id: str = "live",
) -> list[dict[str, Any]]:
    """Return `arena chat --json`'s document.

    `details` (by cycle id) give each decision in full; `prompts` (by call id, with `--prompt`)
    add the messages each call was sent; `images` (by call id) the chart images it sent, each
    with its sha256, caption, size, the dashboard's path to its bytes and, from `files` (with
    `--images DIR`), the file it was written to.
    """
    documents = []
    for e in entries:
        full = (details or {}).get(e.cycle_id or -1)
        decisions = (
            [_decision_json(d) for d in full]
            if full is not None
            else [{"coin": c, "signal": s, "outcome": o, "reason": r} for c, s, o, r in e.decisions]
        )
        document: dict[str, Any] = {
            "agent": e.agent,
            "at": e.at.isoformat(),
            "model": e.model,
            "answered": e.answered,
            "outcome": e.outcome,
            "reasoning": e.reasoning,
            "response": e.response_text,
            "error": e.error,
            "decisions": decisions,
        }
        document["call_id"] = e.call_id
        sent = (images or {}).get(e.call_id, ()) if e.call_id is not None else ()
        document["images"] = [
            _image_json(i, run_id, e.call_id, (files or {}).get((e.call_id, i.position)))
            for i in sent
            if e.call_id is not None
        ]
        if prompts is not None and e.call_id is not None:
            document["prompt"] = [
                {"role": m.role, "content": m.content} for m in prompts.get(e.call_id, ())
            ]
        documents.append(document)
    return documents


def _image_json(image: SentImage, run_id: str, call_id: int, file: Path | None) -> dict[str, Any]:
    """Return one image a call sent: what it is, and where its PNG bytes are."""
    number = image.position + 1
    return {
        "position": number,
        "kind": image.kind,
        "caption": image.caption,
        "sha256": image.sha256,
        "width_px": image.width_px,
        "height_px": image.height_px,
        "size_bytes": len(image.png),
        # Served by `arena web` (the dashboard's API) exactly as the model was sent it.
        "url_path": f"/api/v1/runs/{quote(run_id, safe='')}/calls/{call_id}/images/{number}.png",
        "file": str(file) if file is not None else None,
    }


def _decision_line(d: DecisionDetail) -> str:
    """Return one decision as a line: signal, size, prices, confidence, and what became of it."""
    parts = [f"{d.coin}: {d.signal}"]
    if d.quantity:
        parts.append(f"{_number(d.quantity)}")
    if d.leverage:
        parts.append(f"{d.leverage}x")
    if d.fill_price is not None:
        parts.append(f"@ {_price(d.fill_price)}")
    if d.profit_target is not None or d.stop_loss is not None:
        parts.append(f"target {_price(d.profit_target)} stop {_price(d.stop_loss)}")
    if d.confidence is not None:
        parts.append(f"confidence {d.confidence:.2f}")
    line = "  " + " ".join(parts) + f" → {d.outcome}"
    if d.reason:
        line += f" ({d.reason})"
    return line


def print_chat(
    console: Console,
    entries: Sequence[ChatEntry],
    details: Mapping[int, Sequence[DecisionDetail]] | None = None,
    prompts: Mapping[int, Sequence[ChatMessage]] | None = None,
    *,
    coin: str | None = None,
) -> None:
    """Print each call as a rule, its reasoning summary, its error and its decisions.

    With `details`, each decision shows its size, prices, confidence and justification; with
    `prompts`, the messages the call was sent come first; `coin` shows that coin's decisions only.
    """
    from app.db.queries import summarize_reasoning

    for e in entries:
        model = e.model if e.answered else f"{e.model} (no answer)"
        console.rule(
            f"{e.agent} · {e.at:%Y-%m-%d %H:%M:%S} UTC · {model} · {e.outcome}", align="left"
        )
        if prompts is not None and e.call_id is not None:
            for message in prompts.get(e.call_id, ()):
                console.print(f"[bold]{message.role}[/]", highlight=False)
                console.print(message.content, markup=False, highlight=False)
            console.print("[bold]answer[/]", highlight=False)
        summary = summarize_reasoning(e.reasoning or e.response_text)
        if summary:
            console.print(summary, markup=False, highlight=False)
        if e.error:
            console.print(f"[red]{escape(e.error)}[/]", highlight=False)
        full = (details or {}).get(e.cycle_id or -1)
        if full is None:
            for c, signal, outcome, reason in e.decisions:
                if coin is None or c == coin.upper():
                    note = f" ({reason})" if reason else ""
                    console.print(f"  {c}: {signal} → {outcome}{note}", markup=False)
            continue
        for d in full:
            if coin is not None and d.coin != coin.upper():
                continue
            console.print(_decision_line(d), markup=False, highlight=False)
            if d.justification:
                console.print(f"    why: {d.justification}", markup=False, highlight=False)


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


QUOTA_COLUMNS = (
    Column("model", text=True, max_width=48),
    Column("calls today", "right"),
    Column("model left", "right", priority=2),
    Column("account left", "right", priority=3),
    Column("needed today", "right", priority=1),
    Column("verdict", text=True, max_width=30),
)


def quota_table(
    interval: str, report: Sequence[ModelQuota], *, wide: bool = False
) -> FittedTable | str:
    """Return the quota report fitted to the width (or a sentence when no agent uses a model)."""
    if not report:
        return "No LLM agents configured (only baselines): no quota is used."
    cells = [
        (
            f"{item.provider}:{item.model}",
            f"{item.calls_today}"
            + (f" ({item.failures_today} failed)" if item.failures_today else ""),
            _fraction(item.model_requests_remaining, item.model_requests_limit),
            _fraction(item.requests_remaining, item.requests_limit),
            str(item.calls_needed_today),
            _verdict(item),
        )
        for item in report
    ]
    return FittedTable(
        QUOTA_COLUMNS,
        cells,
        title=f"LLM quota, today (UTC), one decision every {interval}",
        caption=(
            "model/account left: the last-seen remainder/limit (? unknown: arena quota --probe); "
            f"needed today: the calls this model takes until 00:00 UTC at one decision every "
            f"{interval} (cycles left x the agents that ask it first)"
        ),
        wide=wide,
    )


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
