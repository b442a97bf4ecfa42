"""Coins to ccxt perpetual symbols, and ccxt markets to `MarketRules` (precision and minimums)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from app.domain import MarketRules
from app.errors import ConfigError

# ccxt's precisionMode values (ccxt.base.decimal_to_precision), repeated here so this module does
# not need ccxt: with TICK_SIZE precision holds steps (0.001), with DECIMAL_PLACES digit counts (3).
DECIMAL_PLACES: Final = 2
SIGNIFICANT_DIGITS: Final = 3
TICK_SIZE: Final = 4

# Hyperliquid's perpetuals settle in USDC; the other venues' USD-margined perps in USDT.
_DEFAULT_QUOTES: Final = {"hyperliquid": "USDC"}


def default_quote(exchange_id: str) -> str:
    """Return the usual settle currency of `exchange_id`'s linear perpetuals."""
    return _DEFAULT_QUOTES.get(exchange_id, "USDT")


# Words an exchange's market id may hold besides the coin and the quote (OKX's BTC-USDT-SWAP).
_ID_WORDS: Final = frozenset({"SWAP", "PERP", "PERPETUAL"})
_ID_SEPARATORS: Final = re.compile(r"[^A-Z0-9]+")


def names_coin_exactly(market: Mapping[str, Any], coin: str, quote: str) -> bool:
    """Return True when the exchange's own id of `market` names `coin` and nothing more.

    ccxt keys markets by unified symbol, built from the base asset: a look-alike listed under the
    same base (`BTCUSD_FAKE` with base BTC) can take `BTC/USDT:USDT`. Its id gives it away: with
    the quote, the settle currency and SWAP/PERP removed, an id must leave the coin itself
    (BTCUSDT, BTC-USDT-SWAP). Ids that are numbers (Hyperliquid's asset index) say nothing.
    """
    market_id = str(market.get("id") or "").upper()
    if not market_id or market_id.isdigit():
        return True
    settle = str(market.get("settle") or quote).upper()
    words = [w for w in _ID_SEPARATORS.split(market_id) if w and w not in _ID_WORDS]
    words = [w for w in words if w not in (quote.upper(), settle)]
    rest = "".join(words)
    for suffix in (quote.upper(), settle):
        if rest.endswith(suffix) and len(rest) > len(suffix):
            rest = rest[: -len(suffix)]
            break
    names = {coin.upper(), str(market.get("baseId") or coin).upper()}
    return rest in names


def _is_linear_perpetual(market: Mapping[str, Any], quote: str) -> bool:
    return bool(
        market.get("swap")
        and market.get("linear", True)
        and market.get("settle") == quote
        and market.get("active") is not False
    )


def perpetual_symbol(
    coin: str, markets: Mapping[str, Mapping[str, Any]], *, quote: str, exchange_id: str
) -> str:
    """Return the symbol of `coin`'s linear perpetual settled in `quote`, e.g. BTC/USDT:USDT.

    A full unified symbol (with "/") is accepted as is when the exchange lists it.
    """
    if "/" in coin:
        if coin in markets:
            return coin
        raise ConfigError(f"{exchange_id} does not list {coin}")
    preferred = f"{coin}/{quote}:{quote}"
    candidates = sorted(
        symbol
        for symbol, market in markets.items()
        if market.get("base") == coin and _is_linear_perpetual(market, quote)
    )
    exact = [s for s in candidates if names_coin_exactly(markets[s], coin, quote)]
    if preferred in exact:
        return preferred
    if exact:
        return exact[0]
    if candidates:
        ids = ", ".join(f"{s} is {markets[s].get('id')}" for s in candidates[:3])
        raise ConfigError(
            f"{exchange_id} lists no perpetual named {coin} settled in {quote}: only look-alikes "
            f"({ids}); remove {coin} from SYMBOLS or name the market in full"
        )
    others = sorted(
        symbol
        for symbol, market in markets.items()
        if market.get("base") == coin and market.get("swap")
    )
    if others:
        hint = f"its perpetuals there are {', '.join(others[:5])}; set EXCHANGE_QUOTE to match"
    else:
        bases = sorted({str(m.get("base")) for m in markets.values() if m.get("swap")})
        close = difflib.get_close_matches(coin, bases, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "remove it from SYMBOLS"
    raise ConfigError(
        f"{exchange_id} has no linear perpetual for {coin} settled in {quote}; {hint}"
    )


def resolve_symbols(
    coins: Sequence[str], markets: Mapping[str, Mapping[str, Any]], *, quote: str, exchange_id: str
) -> dict[str, str]:
    """Return {coin: unified perpetual symbol}; `ConfigError` names every coin not found."""
    symbols: dict[str, str] = {}
    problems: list[str] = []
    for coin in coins:
        try:
            symbols[coin] = perpetual_symbol(coin, markets, quote=quote, exchange_id=exchange_id)
        except ConfigError as error:
            problems.append(str(error))
    if problems:
        raise ConfigError("; ".join(problems))
    return symbols


def _step(value: Any, precision_mode: int) -> float | None:
    if value is None:
        return None
    number = float(value)
    if precision_mode == TICK_SIZE:
        return number
    if precision_mode == DECIMAL_PLACES:
        return float(10.0 ** (-int(number)))
    # Significant digits do not give a fixed step; leave rounding to the exchange.
    return None


def _limit(market: Mapping[str, Any], kind: str) -> float | None:
    limits = market.get("limits") or {}
    value = (limits.get(kind) or {}).get("min")
    return float(value) if value is not None else None


def market_rules(market: Mapping[str, Any], precision_mode: int) -> MarketRules:
    """Return the precision steps and minimums of a ccxt market, amounts in coin units.

    Exchanges that count in contracts (OKX: 0.01 BTC per BTC-USDT-SWAP contract) have their
    amount step and minimum multiplied by the contract size, so the risk checks think in coins.
    """
    precision = market.get("precision") or {}
    contract_size = float(market.get("contractSize") or 1.0)
    amount_step = _step(precision.get("amount"), precision_mode)
    min_amount = _limit(market, "amount")
    return MarketRules(
        symbol=str(market["symbol"]),
        amount_step=amount_step * contract_size if amount_step is not None else None,
        price_step=_step(precision.get("price"), precision_mode),
        min_amount=min_amount * contract_size if min_amount is not None else None,
        min_notional_usd=_limit(market, "cost"),
        contract_size=contract_size,
    )
