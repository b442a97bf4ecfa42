"""Number and time formatting for prompts: significant digits, never a locale, never a clock.

nof1 rounded every value to 3 decimals, so DOGE's EMA printed as a flat 0.2 and XRP's MACD as
0.0. Rounding to significant digits keeps the information at every price scale: 0.00012346 for a
DOGE MACD, 114207.5 for BTC (not 12 digits).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Final

NOT_AVAILABLE: Final = "n/a"

# Prices and price-like indicators (EMA) keep 7 digits: BTC 114207.5, DOGE 0.2015450 -> 0.201545.
PRICE_DIGITS: Final = 7
# Oscillators, ATR, volumes and rates: 5 digits are more than any decision needs.
INDICATOR_DIGITS: Final = 5
# Quantities and amounts the model may echo back keep more, so a copy stays exact.
QUANTITY_DIGITS: Final = 10
# Below this a value is floating-point noise (a MACD of a flat series), not a signal.
_ZERO_BELOW: Final = 1e-15

_TIMEFRAME_RE: Final = re.compile(r"^(\d+)([smhdw])$")
_TIMEFRAME_UNITS: Final = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week"}


def format_sig(value: float | None, digits: int = INDICATOR_DIGITS) -> str:
    """Return `value` rounded to `digits` significant digits, positional, or "n/a" when unknown."""
    if value is None:
        return NOT_AVAILABLE
    try:
        number = float(value)
    except (TypeError, ValueError):
        return NOT_AVAILABLE
    if not math.isfinite(number):
        return NOT_AVAILABLE
    if abs(number) < _ZERO_BELOW:
        return "0"
    return _format_finite(number, digits)


# A prompt's series shift by one value per cycle, so most numbers were formatted a cycle ago.
@functools.lru_cache(maxsize=1 << 16)
def _format_finite(number: float, digits: int) -> str:
    text = f"{number:.{digits}g}"
    if "e" in text:
        # `g` switches to exponents below 1e-4 and above 10**digits; models read positional best.
        text = format(Decimal(text), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def format_usd(value: float | None) -> str:
    """Return an amount of money with two decimals (no thousands separator), or "n/a"."""
    if value is None or not math.isfinite(value):
        return NOT_AVAILABLE
    text = f"{value:.2f}"
    return "0.00" if text == "-0.00" else text


def format_pct(value: float | None) -> str:
    """Return a percentage (already in percent) with two decimals and a % sign, or "n/a"."""
    if value is None or not math.isfinite(value):
        return NOT_AVAILABLE
    text = f"{value:.2f}"
    return ("0.00" if text == "-0.00" else text) + "%"


def format_bps_as_pct(bps: float) -> str:
    """Return basis points as a percentage: 4.5 -> "0.045%"."""
    return format_sig(bps / 100.0, 6) + "%"


def format_series(values: Iterable[float], digits: int = INDICATOR_DIGITS) -> str:
    """Return a list of numbers as `[a, b, c]`, each by significant digits."""
    # The common case (a finite float) goes straight to the cached formatter.
    texts = [
        _format_finite(value, digits)
        if type(value) is float and math.isfinite(value) and abs(value) >= _ZERO_BELOW
        else format_sig(value, digits)
        for value in values
    ]
    return "[" + ", ".join(texts) + "]"


def format_duration(span: timedelta) -> str:
    """Return a holding time such as "2d 3h 15m" (whole minutes; "0m" under a minute)."""
    minutes = max(0, int(span.total_seconds() // 60))
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    parts = [f"{days}d"] if days else []
    if days or hours:
        parts.append(f"{hours}h")
    parts.append(f"{minutes}m")
    return " ".join(parts)


@functools.lru_cache(maxsize=64)
def describe_timeframe(timeframe: str) -> str:
    """Return a ccxt timeframe in words for a heading: "3m" -> "3-minute", "4h" -> "4-hour"."""
    match = _TIMEFRAME_RE.match(timeframe.strip())
    if match is None:
        return timeframe
    return f"{int(match.group(1))}-{_TIMEFRAME_UNITS[match.group(2)]}"


class RawJson(str):
    """A piece of JSON already formatted (a number with chosen digits), emitted verbatim."""

    __slots__ = ()


JsonValue = (
    RawJson | str | int | float | bool | None | Mapping[str, "JsonValue"] | Sequence["JsonValue"]
)


def json_number(value: float | None, digits: int) -> RawJson:
    """Return `value` as a JSON number by significant digits (null when unknown)."""
    text = format_sig(value, digits)
    return RawJson("null" if text == NOT_AVAILABLE else text)


def json_usd(value: float | None) -> RawJson:
    """Return an amount of money as a JSON number with two decimals (null when unknown)."""
    text = format_usd(value)
    return RawJson("null" if text == NOT_AVAILABLE else text)


def to_json(value: JsonValue, digits: int = PRICE_DIGITS) -> str:
    """Return compact one-line JSON; floats by significant digits, NaN and inf as null.

    `json.dumps` would print floats by `repr` (110879.69000000001) and NaN as invalid JSON.
    """
    if isinstance(value, RawJson):
        return str(value)
    if value is None or isinstance(value, bool):
        return "null" if value is None else ("true" if value else "false")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(json_number(value, digits))
    if isinstance(value, str):
        return _json_string(value)
    if isinstance(value, Mapping):
        items = (
            f"{_json_string(str(key))}: {to_json(item, digits)}" for key, item in value.items()
        )
        return "{" + ", ".join(items) + "}"
    return "[" + ", ".join(to_json(item, digits) for item in value) + "]"


# Keys, sides and justifications come back every cycle for as long as a position is open.
@functools.lru_cache(maxsize=4096)
def _json_string(text: str) -> str:
    # Most keys and values need no escaping; json.dumps is the slow, always-right path.
    if _PLAIN_STRING_RE.fullmatch(text):
        return f'"{text}"'
    return json.dumps(text, ensure_ascii=False)


_PLAIN_STRING_RE: Final = re.compile(r'[^"\\\x00-\x1f\x7f\u2028\u2029]*')
