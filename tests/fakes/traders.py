"""Fake LLM traders: responders for `FakeOpenAIServer` that read the real prompt and decide.

They parse what the prompt shows (each coin's current price, EMA20 and RSI7, and the open positions
as JSON), so two fake agents trade differently from the same market and their answers depend only
on the prompt: the same prompt always gets the same answer, as a cached model would give.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

_COIN_LINE = re.compile(
    r"### ALL (?P<coin>[A-Z0-9]+) DATA\s+current_price = (?P<price>[-0-9.e]+), "
    r"current_ema20 = (?P<ema>[-0-9.e]+|n/a), current_macd = [^,]+, "
    r"current_rsi \(7 period\) = (?P<rsi>[-0-9.e]+|n/a)"
)


def prompt_text(request: Mapping[str, Any]) -> str:
    """Return the user message of a chat request (the system prompt may be folded into it)."""
    messages = request.get("messages") or []
    users = [m.get("content", "") for m in messages if m.get("role") == "user"]
    if not users:
        return ""
    content = users[-1]
    if isinstance(content, list):  # a vision agent's content parts: their texts
        return "\n".join(
            str(part.get("text", "")) for part in content if part.get("type") == "text"
        )
    return str(content)


def market_view(prompt: str) -> dict[str, tuple[float, float | None, float | None]]:
    """Return {coin: (price, ema20, rsi7)} as the prompt shows them."""
    found = {}
    for match in _COIN_LINE.finditer(prompt):
        ema = None if match["ema"] == "n/a" else float(match["ema"])
        rsi = None if match["rsi"] == "n/a" else float(match["rsi"])
        found[match["coin"]] = (float(match["price"]), ema, rsi)
    return found


def open_positions(prompt: str) -> dict[str, str]:
    """Return {coin: side} of the positions listed in the prompt."""
    positions = {}
    for line in prompt.splitlines():
        if line.startswith('{"coin"'):
            data = json.loads(line)
            positions[data["coin"]] = data["side"]
    return positions


def _entry(coin: str, price: float, long: bool, *, notional_usd: float) -> dict[str, Any]:
    direction = 1 if long else -1
    return {
        "coin": coin,
        "signal": "buy_to_enter" if long else "sell_to_enter",
        "quantity": round(notional_usd / price, 8),
        "leverage": 3,
        "profit_target": round(price * (1 + direction * 0.015), 8),
        "stop_loss": round(price * (1 - direction * 0.008), 8),
        "invalidation_condition": "price closes back through the 20-period EMA",
        "confidence": 0.6,
        "risk_usd": round(notional_usd * 0.008, 2),
        "justification": f"{'above' if long else 'below'} the 20-EMA with room on RSI",
    }


def trend_trader(request: Mapping[str, Any], *, contrarian: bool = False) -> str:
    """Enter with (or, contrarian, against) the price's side of EMA20 when RSI7 is not extreme."""
    prompt = prompt_text(request)
    held = open_positions(prompt)
    decisions: dict[str, Any] = {}
    for coin, (price, ema, rsi) in market_view(prompt).items():
        if coin in held or ema is None or rsi is None or not 30 < rsi < 70:
            decisions[coin] = {"coin": coin, "signal": "hold"}
            continue
        above = price > ema
        decisions[coin] = _entry(coin, price, above != contrarian, notional_usd=1500.0)
    return json.dumps(decisions)


def contrarian_trader(request: Mapping[str, Any]) -> str:
    """The mirror image of `trend_trader`."""
    return trend_trader(request, contrarian=True)


def by_model(
    traders: Mapping[str, Callable[[Mapping[str, Any]], str]],
) -> Callable[[dict[str, Any]], str]:
    """Return a responder that dispatches on the requested model (unknown models hold)."""

    def respond(request: dict[str, Any]) -> str:
        trader = traders.get(str(request.get("model")))
        return trader(request) if trader is not None else json.dumps({})

    return respond
