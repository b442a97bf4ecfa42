"""nof1's read API, with our data: the paths, field names and nesting of nof1.ai/api/*.

Pure functions from the read model's views to nof1's JSON. nof1's shapes never carry null where
nof1 had a number: a figure we cannot compute (a Sharpe ratio on too short a sample, the average of
no trades) is 0, as nof1 itself showed it. Our own API (`/api/v1`) keeps such values null.
Times follow nof1: seconds as floats in documents, milliseconds in `serverTime` and prices.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import numpy as np

from app.metrics import SHARPE_MINIMUM
from app.web.readmodel import (
    AgentFacts,
    AgentInfo,
    BoardRow,
    CallCard,
    PositionView,
    Price,
    SignalStats,
    TradeView,
)

SKILL: Final = "swing_trading"
_HOUR_MS: Final = 3_600_000
# Below the arena's minimum sample (`app.metrics.SHARPE_MINIMUM`: 30 returns covering 7 days) a
# Sharpe ratio says more about the sample than the agent: nof1's shape has a number, so 0.
MIN_RETURNS_FOR_SHARPE: Final = SHARPE_MINIMUM.returns
_MINUTE_MS: Final = 60_000


def _num(value: float | int | None) -> float:
    if value is None:
        return 0.0
    number = float(value)
    return number if math.isfinite(number) else 0.0


def _seconds(moment: datetime) -> float:
    return moment.timestamp()


def _signed(quantity: float, side: str) -> float:
    return quantity if side == "long" else -quantity


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else 0.0


def _std(values: Sequence[float]) -> float:
    return float(np.std(values)) if len(values) > 1 else 0.0


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def server_time(now: datetime) -> int:
    """Return nof1's `serverTime`: milliseconds since the epoch."""
    return int(now.timestamp() * 1000)


def crypto_prices(prices: Mapping[str, Price], *, now: datetime) -> dict[str, Any]:
    """`/api/crypto-prices`: each coin's latest price."""
    return {
        "prices": {
            coin: {
                "symbol": coin,
                "price": price.price,
                "timestamp": int(price.at.timestamp() * 1000),
            }
            for coin, price in prices.items()
        },
        "serverTime": server_time(now),
    }


def _exit_plan(
    profit_target: float | None, stop_loss: float | None, invalidation_condition: str
) -> dict[str, Any]:
    return {
        "profit_target": _num(profit_target),
        "stop_loss": _num(stop_loss),
        "invalidation_condition": invalidation_condition,
    }


def position_document(position: PositionView) -> dict[str, Any]:
    """One open position as nof1 nests it under its coin."""
    price = position.current_price if position.current_price is not None else position.entry_price
    return {
        "entry_oid": position.position_id,
        "risk_usd": _num(position.risk_usd),
        "confidence": _num(position.confidence),
        "exit_plan": _exit_plan(
            position.profit_target, position.stop_loss, position.invalidation_condition
        ),
        "entry_time": _seconds(position.opened_at),
        "symbol": position.coin,
        "entry_price": position.entry_price,
        "margin": position.margin_usd,
        "leverage": position.leverage,
        "quantity": _signed(position.quantity, position.side),
        "current_price": price,
        "unrealized_pnl": _num(position.unrealized_pnl_usd),
        # What the position has cost so far besides its price move: fees and funding.
        "closed_pnl": -(position.entry_fee_usd + position.funding_usd),
    }


def positions(
    agents: Sequence[AgentInfo], views: Sequence[PositionView], *, limit: int
) -> dict[str, Any]:
    """`/api/positions?limit=`: each model's open positions keyed by coin."""
    kept = list(views)[:limit]
    return {
        "accountTotals": [
            {
                "model_id": agent.name,
                "positions": {
                    view.coin: position_document(view) for view in kept if view.agent == agent.name
                },
            }
            for agent in agents
        ]
    }


def _human(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def trade_document(trade: TradeView) -> dict[str, Any]:
    """One closed trade in nof1's fields (order and trade ids are our position and fill ids)."""
    return {
        "id": f"{trade.agent}_{trade.position_id}",
        "exit_sz": trade.quantity,
        "exit_human_time": _human(trade.closed_at),
        "entry_commission_dollars": trade.entry_fee_usd,
        "symbol": trade.coin,
        "total_commission_dollars": trade.entry_fee_usd + trade.exit_fee_usd,
        "entry_liquidation": None,
        "entry_sz": trade.quantity,
        "entry_human_time": _human(trade.opened_at),
        "entry_tid": trade.entry_fill_id,
        "quantity": _signed(trade.quantity, trade.side),
        "exit_crossed": True,
        "confidence": _num(trade.confidence),
        "exit_commission_dollars": trade.exit_fee_usd,
        "entry_oid": trade.position_id,
        "exit_oid": trade.exit_fill_id,
        "entry_closed_pnl": -trade.entry_fee_usd,
        "exit_tid": trade.exit_fill_id,
        "exit_plan": _exit_plan(trade.profit_target, trade.stop_loss, trade.invalidation_condition),
        "exit_time": _seconds(trade.closed_at),
        "exit_liquidation": None,
        "entry_time": _seconds(trade.opened_at),
        "side": trade.side,
        "entry_price": trade.entry_price,
        # Market orders take liquidity on both legs.
        "entry_crossed": True,
        "exit_closed_pnl": trade.gross_pnl_usd - trade.exit_fee_usd,
        "realized_net_pnl": trade.net_pnl_usd,
        "exit_price": trade.exit_price,
        "trade_id": (
            f"{_seconds(trade.opened_at)}_{trade.coin}_{_seconds(trade.closed_at)}_{trade.agent}"
        ),
        "realized_gross_pnl": trade.gross_pnl_usd,
        "leverage": trade.leverage,
        "trade_type": trade.side,
        "model_id": trade.agent,
    }


def trades(items: Iterable[TradeView], *, now: datetime) -> dict[str, Any]:
    """`/api/trades`: every closed trade, newest first."""
    return {"trades": [trade_document(trade) for trade in items], "serverTime": server_time(now)}


def leaderboard(rows: Sequence[BoardRow]) -> dict[str, Any]:
    """`/api/leaderboard`: nof1's nine figures per model, best account value first."""
    return {
        "leaderboard": [
            {
                "id": row.base.name,
                "num_trades": row.base.trades,
                "sharpe": _num(row.base.sharpe),
                "win_dollars": row.win_dollars,
                "num_losses": row.losses,
                "lose_dollars": row.lose_dollars,
                "return_pct": row.base.return_pct,
                "equity": row.base.final_equity,
                "num_wins": row.wins,
            }
            for row in rows
        ]
    }


def since_inception(agents: Sequence[AgentInfo], *, now: datetime) -> dict[str, Any]:
    """`/api/since-inception-values`: each model's starting value, start and call count."""
    return {
        "sinceInceptionValues": [
            {
                "id": f"{agent.name}_{agent.agent_id}",
                "nav_since_inception": agent.starting_cash_usd,
                "inception_date": _seconds(agent.first_cycle_at or agent.created_at),
                "num_invocations": agent.invocations,
                "model_id": agent.name,
            }
            for agent in agents
        ],
        "serverTime": server_time(now),
    }


def _running_sharpe(times_ms: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Sharpe ratio of the series up to each point (0 on a short sample or without spread)."""
    result = np.zeros(len(values))
    if len(values) < 3 or (values <= 0).any():
        return result
    returns = values[1:] / values[:-1] - 1.0
    count = np.arange(1, len(returns) + 1)
    mean = np.cumsum(returns) / count
    squares = np.cumsum(returns**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        variance = (squares - count * mean**2) / np.maximum(count - 1, 1)
        spacing_s = float(np.median(np.diff(times_ms))) / 1000.0
        per_year = 365.0 * 86_400.0 / spacing_s if spacing_s > 0 else 0.0
        ratio = mean / np.sqrt(variance) * math.sqrt(per_year)
    short = (count < MIN_RETURNS_FOR_SHARPE) | (
        count * spacing_s < SHARPE_MINIMUM.span.total_seconds()
    )
    ratio[short | ~np.isfinite(ratio) | (variance <= 1e-18)] = 0.0
    result[1:] = ratio
    return result


def account_totals(
    agents: Sequence[AgentInfo],
    series: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    open_positions: Sequence[PositionView],
    *,
    last_hourly_marker: int | None,
    now: datetime,
) -> dict[str, Any]:
    """`/api/account-totals?lastHourlyMarker=`: per model, the last account value of each hour
    since its start (only hours after the marker); the newest one carries the open positions.

    `series` maps an agent to (times in ms, account value, realized PnL, unrealized PnL).
    """
    documents: list[dict[str, Any]] = []
    read = -1 if last_hourly_marker is None else last_hourly_marker
    for agent in agents:
        found = series.get(agent.name)
        if found is None or not len(found[0]):
            continue
        times, equity, realized, unrealized = found
        inception = int(times[0])
        hours = (times - inception) // _HOUR_MS
        last_of_hour = np.flatnonzero(np.append(hours[1:] != hours[:-1], True))
        sharpe = _running_sharpe(times, equity)
        for index in last_of_hour:
            marker = int(hours[index])
            if last_hourly_marker is not None and marker <= last_hourly_marker:
                continue
            newest = index == len(times) - 1
            documents.append(
                {
                    "id": f"{agent.name}_{marker}",
                    "model_id": agent.name,
                    "timestamp": float(times[index]) / 1000.0,
                    "realized_pnl": float(realized[index]),
                    "total_unrealized_pnl": float(unrealized[index]),
                    "dollar_equity": float(equity[index]),
                    "sharpe_ratio": float(sharpe[index]),
                    "cum_pnl_pct": (float(equity[index]) / agent.starting_cash_usd - 1.0) * 100.0,
                    "since_inception_minute_marker": int((times[index] - inception) // _MINUTE_MS),
                    "since_inception_hourly_marker": marker,
                    "positions": {
                        p.coin: position_document(p)
                        for p in open_positions
                        if newest and p.agent == agent.name
                    },
                }
            )
            read = max(read, marker)
    return {
        "accountTotals": documents,
        "lastHourlyMarkerRead": max(read, 0),
        "serverTime": server_time(now),
    }


def _decision_document(decision: Any) -> dict[str, Any]:
    return {
        "quantity": _num(decision.quantity),
        "stop_loss": _num(decision.stop_loss),
        "signal": decision.signal,
        "profit_target": _num(decision.profit_target),
        "invalidation_condition": decision.invalidation_condition or "",
        "justification": decision.justification or "",
        "confidence": _num(decision.confidence),
        "leverage": int(decision.leverage or 0),
        "risk_usd": _num(decision.risk_usd),
        "coin": decision.coin,
    }


def conversations(
    cards: Sequence[CallCard],
    prompts: Mapping[int, tuple[str, str]],
    *,
    run_id: str,
) -> dict[str, Any]:
    """`/api/conversations`: the latest answered calls with prompt, reasoning and decisions."""
    documents = []
    for card in cards:
        user_prompt, reasoning = prompts.get(card.call_id, ("", ""))
        at = _seconds(card.created_at)
        documents.append(
            {
                "id": f"{card.agent}_{at}",
                "user_prompt": user_prompt,
                "llm_response": {d.coin: _decision_document(d) for d in card.decisions},
                "cycle_id": int(card.invocation or 0),
                "inserted_at": at,
                "cot_trace": reasoning,
                "model_id": card.agent,
                "skill": SKILL,
                "cot_trace_summary": card.summary,
                "timestamp": _seconds(card.scheduled_at or card.created_at),
                "run_id": run_id,
            }
        )
    return {"conversations": documents}


# -- analytics ---------------------------------------------------------------------------------

_SIGNALS: Final = {
    "long": "buy_to_enter",
    "short": "sell_to_enter",
    "hold": "hold",
    "close": "close_position",
}


def _signal_std(stats: SignalStats, *, leverage: bool) -> float:
    mean = stats.leverage_mean if leverage else stats.confidence_mean
    square = stats.leverage_sq_mean if leverage else stats.confidence_sq_mean
    if mean is None or square is None or stats.count < 2:
        return 0.0
    return math.sqrt(max(0.0, square - mean * mean))


def _combined(signals: Mapping[str, SignalStats], kinds: Sequence[str]) -> SignalStats:
    parts = [signals[_SIGNALS[kind]] for kind in kinds if _SIGNALS[kind] in signals]
    count = sum(p.count for p in parts)
    if not count:
        return SignalStats()

    def weighted(attribute: str) -> float | None:
        known = [
            (getattr(p, attribute), p.count) for p in parts if getattr(p, attribute) is not None
        ]
        total = sum(weight for _, weight in known)
        return sum(value * weight for value, weight in known) / total if total else None

    return SignalStats(
        count=count,
        confidence_mean=weighted("confidence_mean"),
        confidence_sq_mean=weighted("confidence_sq_mean"),
        leverage_mean=weighted("leverage_mean"),
        leverage_sq_mean=weighted("leverage_sq_mean"),
    )


def _minutes_held(facts: AgentFacts, side: str, start_s: float, end_s: float) -> float:
    """Minutes with at least one position of `side` open, between start and end."""
    spans = [
        (t.opened_at.timestamp(), t.closed_at.timestamp()) for t in facts.trades if t.side == side
    ]
    spans += [(p.opened_at.timestamp(), end_s) for p in facts.open_positions if p.side == side]
    covered, current_start, current_end = 0.0, None, None
    for a, b in sorted((max(a, start_s), min(b, end_s)) for a, b in spans if b > a):
        if current_end is None or a > current_end:
            if current_end is not None and current_start is not None:
                covered += current_end - current_start
            current_start, current_end = a, b
        else:
            current_end = max(current_end, b)
    if current_end is not None and current_start is not None:
        covered += current_end - current_start
    return covered / 60.0


def _group_table(prefix: str, trades: Sequence[TradeView]) -> dict[str, float]:
    notional = [t.quantity * t.entry_price for t in trades]
    net = [t.net_pnl_usd for t in trades]
    held = [t.holding_s / 60.0 for t in trades]
    return {
        f"avg_{prefix}_notional": _mean(notional),
        f"std_{prefix}_notional": _std(notional),
        f"avg_{prefix}_net_pnl": _mean(net),
        f"std_{prefix}_net_pnl": _std(net),
        f"avg_{prefix}_holding_period": _mean(held),
        f"std_{prefix}_holding_period": _std(held),
    }


def _signals_table(facts: AgentFacts, *, now: datetime) -> dict[str, float]:
    signals = facts.signals
    total = sum(stats.count for stats in signals.values())
    table: dict[str, float] = {"total_signals": total}
    for kind, signal in _SIGNALS.items():
        stats = signals.get(signal, SignalStats())
        table[f"num_{kind}_signals"] = stats.count
        table[f"{kind}_signal_pct"] = stats.count / total * 100.0 if total else 0.0
        table[f"avg_confidence_{kind}"] = _num(stats.confidence_mean)
        table[f"std_confidence_{kind}"] = _signal_std(stats, leverage=False)
        if kind in ("long", "short"):
            table[f"avg_leverage_{kind}"] = _num(stats.leverage_mean)
            table[f"std_leverage_{kind}"] = _signal_std(stats, leverage=True)
    every = _combined(signals, list(_SIGNALS))
    entries = _combined(signals, ["long", "short"])
    table["avg_confidence"] = _num(every.confidence_mean)
    table["std_confidence"] = _signal_std(every, leverage=False)
    table["median_confidence"] = _median(list(facts.entry_confidences))
    table["avg_leverage"] = _num(entries.leverage_mean)
    table["std_leverage"] = _signal_std(entries, leverage=True)
    table["median_leverage"] = _median([float(x) for x in facts.entry_leverages])
    shorts = table["num_short_signals"]
    table["long_short_ratio"] = table["num_long_signals"] / shorts if shorts else 0.0
    start_s = facts.cycle_times_s[0] if facts.cycle_times_s else now.timestamp()
    end_s = max(now.timestamp(), start_s)
    span_min = max((end_s - start_s) / 60.0, 0.0)
    long_min = _minutes_held(facts, "long", start_s, end_s)
    short_min = _minutes_held(facts, "short", start_s, end_s)
    flat_min = max(span_min - long_min - short_min, 0.0)
    for name, minutes in (("long", long_min), ("short", short_min), ("flat", flat_min)):
        table[f"mins_{name}_combined"] = minutes
        table[f"pct_mins_{name}_combined"] = minutes / span_min * 100.0 if span_min else 0.0
    return table


def analytics_document(facts: AgentFacts, *, now: datetime) -> dict[str, Any]:
    """One model's analytics tables, in nof1's fields (percentages in percent, times in
    minutes)."""
    trades = list(facts.trades)
    net = [t.net_pnl_usd for t in trades]
    gross = [t.gross_pnl_usd for t in trades]
    fees = [t.entry_fee_usd + t.exit_fee_usd for t in trades]
    winners = [t for t in trades if t.net_pnl_usd > 0]
    losers = [t for t in trades if t.net_pnl_usd <= 0]
    longs = [t for t in trades if t.side == "long"]
    shorts = [t for t in trades if t.side == "short"]
    held = [t.holding_s / 60.0 for t in trades]
    notional = [t.quantity * t.entry_price for t in trades]
    cash = facts.agent.starting_cash_usd
    plans: list[TradeView | PositionView] = [*trades, *facts.open_positions]
    take_profit = [
        abs(p.profit_target - p.entry_price) / p.entry_price * 100.0
        for p in plans
        if p.profit_target is not None and p.entry_price
    ]
    stop_loss = [
        abs(p.stop_loss - p.entry_price) / p.entry_price * 100.0
        for p in plans
        if p.stop_loss is not None and p.entry_price
    ]
    gap_list = [float(x) for x in np.diff(np.asarray(facts.cycle_times_s)) / 60.0]
    winners_table = _group_table("winners", winners)
    losers_table = _group_table("losers", losers)
    last_trade = max(trades, key=lambda t: t.closed_at, default=None)
    total_gross = sum(gross)
    signals = _signals_table(facts, now=now)
    return {
        "id": facts.agent.name,
        "model_id": facts.agent.name,
        "updated_at": now.timestamp(),
        "fee_pnl_moves_breakdown_table": {
            "std_net_pnl": _std(net),
            "total_fees_paid": sum(fees),
            "overall_pnl_without_fees": total_gross,
            "total_fees_as_pct_of_pnl": sum(fees) / abs(total_gross) * 100.0
            if total_gross
            else 0.0,
            "overall_pnl_with_fees": sum(net),
            "avg_taker_fee": _mean(fees),
            "std_gross_pnl": _std(gross),
            "avg_net_pnl": _mean(net),
            "biggest_net_loss": min(net, default=0.0),
            "biggest_net_gain": max(net, default=0.0),
            "avg_gross_pnl": _mean(gross),
            "std_taker_fee": _std(fees),
        },
        "winners_losers_breakdown_table": {
            **winners_table,
            **losers_table,
            "win_rate": len(winners) / len(trades) * 100.0 if trades else 0.0,
        },
        "signals_breakdown_table": signals,
        "last_trade_exit_time": 0.0 if last_trade is None else _seconds(last_trade.closed_at),
        "invocation_breakdown_table": {
            "max_invocation_break_mins": max(gap_list, default=0.0),
            "std_invocation_break_mins": _std(gap_list),
            "num_invocations": facts.agent.invocations,
            "min_invocation_break_mins": min(gap_list, default=0.0),
            "avg_invocation_break_mins": _mean(gap_list),
        },
        "longs_shorts_breakdown_table": {
            **_group_table("longs", longs),
            **_group_table("shorts", shorts),
            "num_long_trades": len(longs),
            "num_short_trades": len(shorts),
            "long_short_trades_ratio": len(longs) / len(shorts) if shorts else 0.0,
        },
        "last_convo_doc_id": ""
        if facts.last_call_at is None
        else f"{facts.agent.name}_{_seconds(facts.last_call_at)}",
        "last_convo_timestamp": 0.0 if facts.last_call_at is None else _seconds(facts.last_call_at),
        "overall_trades_overview_table": {
            "avg_convo_leverage": signals["avg_leverage"],
            "avg_holding_period_mins": _mean(held),
            "avg_take_profit_distance_pct": _mean(take_profit),
            "median_holding_period_mins": _median(held),
            "std_size_of_trade_notional": _std(notional),
            "avg_size_of_trade_notional": _mean(notional),
            "total_trades": len(trades),
            "median_size_of_trade_notional": _median(notional),
            "avg_size_of_trade_portfolio_pct": _mean([n / cash * 100.0 for n in notional]),
            "std_holding_period_mins": _std(held),
            "avg_stop_loss_distance_pct": _mean(stop_loss),
            "std_size_of_trade_portfolio_pct": _std([n / cash * 100.0 for n in notional]),
            "median_convo_leverage": signals["median_leverage"],
        },
        "last_trade_doc_id": ""
        if last_trade is None
        else f"{last_trade.agent}_{last_trade.position_id}",
    }


def analytics(facts: Sequence[AgentFacts], *, now: datetime) -> dict[str, Any]:
    """`/api/analytics`: every model's analytics tables."""
    return {
        "analytics": [analytics_document(item, now=now) for item in facts],
        "serverTime": server_time(now),
    }


def model_analytics(facts: AgentFacts, *, now: datetime) -> dict[str, Any]:
    """`/api/analytics/{modelId}`: one model's analytics tables."""
    return {"analytics": [analytics_document(facts, now=now)]}
