"""Coins to perpetual symbols, and ccxt markets to MarketRules."""

from __future__ import annotations

import pytest

from app.errors import ConfigError
from app.market.symbols import (
    DECIMAL_PLACES,
    TICK_SIZE,
    default_quote,
    market_rules,
    perpetual_symbol,
)

MARKETS = {
    "BTC/USDT": {"symbol": "BTC/USDT", "base": "BTC", "settle": None, "swap": False, "spot": True},
    "BTC/USDT:USDT": {
        "symbol": "BTC/USDT:USDT",
        "base": "BTC",
        "settle": "USDT",
        "swap": True,
        "linear": True,
    },
    "BTC/USD:BTC": {
        "symbol": "BTC/USD:BTC",
        "base": "BTC",
        "settle": "BTC",
        "swap": True,
        "linear": False,
    },
    "ETH/USDC:USDC": {
        "symbol": "ETH/USDC:USDC",
        "base": "ETH",
        "settle": "USDC",
        "swap": True,
        "linear": True,
    },
}


def test_the_linear_perpetual_settled_in_the_quote_is_chosen() -> None:
    assert perpetual_symbol("BTC", MARKETS, quote="USDT", exchange_id="okx") == "BTC/USDT:USDT"
    assert (
        perpetual_symbol("ETH", MARKETS, quote="USDC", exchange_id="hyperliquid") == "ETH/USDC:USDC"
    )


def test_a_perpetual_in_another_settle_currency_is_named_in_the_error() -> None:
    with pytest.raises(ConfigError, match="ETH/USDC:USDC; set EXCHANGE_QUOTE"):
        perpetual_symbol("ETH", MARKETS, quote="USDT", exchange_id="okx")


def test_hyperliquid_settles_in_usdc_and_the_others_in_usdt() -> None:
    assert default_quote("hyperliquid") == "USDC"
    assert default_quote("bybit") == "USDT"


def test_tick_size_precision_is_a_step_and_decimal_places_become_one() -> None:
    market = {
        "symbol": "BTC/USDT:USDT",
        "precision": {"amount": 3, "price": 1},
        "limits": {"amount": {"min": 0.001}, "cost": {"min": 5}},
    }
    rules = market_rules(market, DECIMAL_PLACES)
    assert (rules.amount_step, rules.price_step) == (0.001, 0.1)
    assert (rules.min_amount, rules.min_notional_usd) == (0.001, 5.0)


def test_contract_markets_are_converted_to_coin_units() -> None:
    """OKX's BTC-USDT-SWAP counts in contracts of 0.01 BTC with a step of 0.01 contract:
    in coins that is a step and a minimum of 0.0001 BTC."""
    market = {
        "symbol": "BTC/USDT:USDT",
        "contractSize": 0.01,
        "precision": {"amount": 0.01, "price": 0.1},
        "limits": {"amount": {"min": 0.01}, "cost": {"min": None}},
    }
    rules = market_rules(market, TICK_SIZE)
    assert rules.amount_step == pytest.approx(0.0001)
    assert rules.min_amount == pytest.approx(0.0001)
    assert rules.min_notional_usd is None
    assert rules.contract_size == 0.01
