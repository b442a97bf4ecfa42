"""The prompt: nof1's layout, honest numbers, the actual limits, same inputs giving same bytes."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import timedelta

import numpy as np
import pytest

from app.decisions import TradeDecision
from app.prompts import (
    PROMPT_VERSION,
    build_messages,
    render_market_section,
    render_system_prompt,
)
from tests.prompts import golden

LIMITS = {"fee_bps": 4.5, "slippage_bps": 1.0, "max_leverage": 20, "max_position_margin_pct": 50.0}
REGENERATE = "regenerate with `.venv/bin/python -m tests.prompts.golden` and review the diff"


def user_text(**changes: object) -> str:
    arguments: dict[str, object] = {
        "started_at": golden.STARTED_AT,
        "invocation": 7,
        "sharpe": 1.25,
        **LIMITS,
    }
    snapshot = changes.pop("snapshot", golden.snapshot())
    account = changes.pop("account", golden.account())
    arguments.update(changes)
    _, user = build_messages(snapshot, account, **arguments)  # type: ignore[arg-type]
    return user.content


def test_prompt_matches_the_checked_in_expected_text() -> None:
    system, user = golden.messages()

    assert (system.role, user.role) == ("system", "user")
    assert system.content == golden.SYSTEM_FILE.read_text(encoding="utf-8"), REGENERATE
    assert user.content == golden.USER_FILE.read_text(encoding="utf-8"), REGENERATE


def test_prompt_never_shows_the_forming_context_candle() -> None:
    """The golden context frames end with a 4h candle opened at 04:00, closing at 08:00 > 07:03."""
    text = user_text()

    assert "31337" not in text
    assert text.count("Last closed candle volume: 1100 vs. Average Volume:") == 3


def test_prompt_says_not_available_for_missing_open_interest_and_funding() -> None:
    text = user_text()
    xrp = text.split("### ALL XRP DATA")[1].split("### ALL DOGE DATA")[0]
    doge = text.split("### ALL DOGE DATA")[1].split("### HERE IS YOUR ACCOUNT")[0]

    assert "Open Interest: not available" in xrp
    assert "Funding Rate: -0.0000068904" in xrp
    assert "Funding Rate: not available" in doge
    assert "Open Interest: Latest: 585165400  Average: 585177000" in doge


def test_prompt_treats_a_nan_funding_rate_as_not_available() -> None:
    snapshot = golden.snapshot()
    btc = dataclasses.replace(snapshot.coins["BTC"], funding_rate=float("nan"))
    snapshot = dataclasses.replace(snapshot, coins={**snapshot.coins, "BTC": btc})

    btc_block = user_text(snapshot=snapshot).split("### ALL XRP DATA")[0]

    assert "Funding Rate: not available" in btc_block


def test_prompt_keeps_small_prices_and_indicators_significant() -> None:
    """DOGE's MACD is ~2e-5 and its EMA ~0.2025: neither may print as 0.0 or a flat 0.2."""
    text = user_text()
    doge = text.split("### ALL DOGE DATA")[1]

    assert "current_macd = 0.00002015" in doge
    assert "current_ema20 = 0.2025069" in doge
    market = render_market_section(golden.snapshot())
    numbers = re.findall(r"-?\d+\.\d+|-?\d+", market)
    significant = [len(number.strip("-").replace(".", "").strip("0")) for number in numbers]
    assert max(significant) <= 7, "a market number has more than 7 significant digits"


def test_prompt_prints_na_for_indicators_still_warming_up() -> None:
    doge = user_text().split("### ALL DOGE DATA")[1]

    assert "EMA indicators (20-period): [n/a, n/a, n/a, 0.2022048," in doge
    assert "50-Period EMA: n/a" in doge


def test_prompt_prints_na_when_an_indicator_column_is_absent() -> None:
    snapshot = golden.snapshot()
    btc = snapshot.coins["BTC"]
    btc = dataclasses.replace(btc, intraday=btc.intraday.drop(columns=["rsi14"]))
    snapshot = dataclasses.replace(snapshot, coins={**snapshot.coins, "BTC": btc})

    text = user_text(snapshot=snapshot)

    assert "RSI indicators (14-Period): [" + ", ".join(["n/a"] * 10) + "]" in text


def test_prompt_reads_numbers_past_a_non_numeric_column() -> None:
    snapshot = golden.snapshot()
    btc = snapshot.coins["BTC"]
    intraday = btc.intraday.assign(note="x")
    intraday["rsi7"] = intraday["rsi7"].astype(object)
    intraday.iloc[-1, intraday.columns.get_loc("rsi7")] = "oops"
    snapshot = dataclasses.replace(
        snapshot, coins={**snapshot.coins, "BTC": dataclasses.replace(btc, intraday=intraday)}
    )

    text = user_text(snapshot=snapshot)

    assert "current_rsi (7 period) = n/a" in text
    assert "RSI indicators (7-Period): [72.5, 41, 77, 59, 36.5, 54.5, 68, 50, 32, n/a]" in text
    assert text.replace("= n/a", "= 59", 1).replace("32, n/a]", "32, 59]", 1) == user_text()


def test_prompt_states_the_snapshot_timeframe() -> None:
    snapshot = dataclasses.replace(golden.snapshot(), intraday_timeframe="5m")

    text = user_text(snapshot=snapshot)

    assert "intraday series are 5-minute candles" in text
    assert "**Intraday series (5-minute candles, oldest → latest):**" in text
    assert "3-minute" not in text.replace("on the 3-minute chart", "")


def test_prompt_preamble_counts_minutes_since_the_start_and_the_invocation() -> None:
    """2025-10-22 09:00 to 2025-10-28 07:03 is 5 days 22 h 3 min = 8523 minutes."""
    text = user_text(invocation=42)

    assert text.startswith(
        "It has been 8523 minutes since you started trading. The current time is "
        "2025-10-28 07:03:00 UTC and you have been invoked 42 times."
    )
    assert "**ALL OF THE PRICE OR SIGNAL DATA BELOW IS ORDERED: OLDEST → NEWEST**" in text


def test_prompt_refuses_a_start_after_the_snapshot() -> None:
    with pytest.raises(ValueError, match="after the snapshot time"):
        user_text(started_at=golden.AT + timedelta(minutes=1))


def test_prompt_shows_positions_as_json_with_their_exit_plan() -> None:
    text = user_text()
    lines = [line for line in text.splitlines() if line.startswith('{"coin"')]

    positions = [json.loads(line) for line in lines]

    assert [position["coin"] for position in positions] == ["BTC", "DOGE"]
    doge = positions[1]
    assert doge["side"] == "short" and doge["quantity"] == 15000
    assert doge["exit_plan"] == {
        "profit_target": 0.1931,
        "stop_loss": 0.2112,
        "invalidation_condition": 'Intraday close above the "breakout" level 0.21',
    }
    assert doge["held_for"] == "1h 51m" and doge["liquidation_price"] == 0.2245845
    assert doge["justification"].startswith("Momentum fading")
    # Short: (entry - price) x quantity = (0.2051 - 0.2026285...) x 15000 = 37.07.
    assert doge["unrealized_pnl_usd"] == 37.07


def test_position_json_survives_any_justification_and_follows_the_price() -> None:
    """A model's free text (quotes, a newline, a NUL) stays valid JSON; the same position at a
    later cycle shows the new price and time held while its other fields stay put."""
    account = golden.account()
    odd = 'said "go"\nthen\x00left {}'
    doge = dataclasses.replace(account.positions["DOGE"], justification=odd)
    account = dataclasses.replace(account, positions={**account.positions, "DOGE": doge})
    snapshot = golden.snapshot()
    cheaper = dataclasses.replace(snapshot.coins["DOGE"], last_price=0.2)
    later = dataclasses.replace(
        snapshot, at=snapshot.at + timedelta(minutes=9), coins={**snapshot.coins, "DOGE": cheaper}
    )

    def doge_json(text: str) -> dict[str, object]:
        line = next(line for line in text.splitlines() if line.startswith('{"coin": "DOGE"'))
        return json.loads(line)  # type: ignore[no-any-return]

    now, then = (
        doge_json(user_text(account=account)),
        doge_json(user_text(account=account, snapshot=later)),
    )

    assert now["justification"] == odd
    assert (now["held_for"], then["held_for"]) == ("1h 51m", "2h 0m")
    # Short 15000 DOGE from 0.2051, now at 0.2: PnL (0.2051 - 0.2) x 15000 = 76.50, notional 3000.
    assert (then["current_price"], then["unrealized_pnl_usd"], then["notional_usd"]) == (
        0.2,
        76.5,
        3000.0,
    )
    moving = {"held_for", "current_price", "unrealized_pnl_usd", "notional_usd"}
    assert {k: v for k, v in now.items() if k not in moving} == {
        k: v for k, v in then.items() if k not in moving
    }


def test_prompt_is_the_same_whatever_the_order_of_the_account_positions() -> None:
    account = golden.account()
    reordered = dataclasses.replace(account, positions=dict(reversed(account.positions.items())))

    assert user_text(account=reordered) == user_text(account=account)


def test_prompt_without_positions_or_sharpe_says_so() -> None:
    account = dataclasses.replace(
        golden.account(), positions={}, margin_usd=0.0, unrealized_pnl_usd=0.0
    )

    text = user_text(account=account, sharpe=None)

    assert "Current live positions & performance: none (no open position)" in text
    assert text.endswith("Sharpe Ratio: not available yet")


def test_prompt_reuses_a_market_section_rendered_once() -> None:
    snapshot = golden.snapshot()
    market = render_market_section(snapshot)

    assert user_text(market_section=market) == user_text()
    assert "MARKET-SENTINEL" in user_text(market_section="MARKET-SENTINEL")
    assert "### ALL BTC DATA" not in user_text(market_section="MARKET-SENTINEL")


def test_prompt_rendering_does_not_change_the_snapshot_frames() -> None:
    snapshot = golden.snapshot()
    before = {name: coin.context.copy() for name, coin in snapshot.coins.items()}

    render_market_section(snapshot)

    for name, coin in snapshot.coins.items():
        assert coin.context.equals(before[name])
        assert np.isfinite(coin.context["volume"].iloc[-1])


def test_system_prompt_states_the_rules_limits_costs_and_schema() -> None:
    system = render_system_prompt(coins=("BTC", "ETH"), **LIMITS)  # type: ignore[arg-type]

    assert "JSON" in system and "json" in system.lower()
    for field in TradeDecision.model_fields:
        assert f'"{field}"' in system, field
    for signal in ("buy_to_enter", "sell_to_enter", "hold", "close_position"):
        assert signal in system
    assert "on these coins only: BTC, ETH." in system
    assert "an integer from 1 to 20" in system
    assert "at most 50% of your account value" in system
    assert "taker fee of 0.045% of its notional" in system
    assert "about 0.01% worse" in system
    assert "round trip therefore costs about 0.11%" in system
    assert "No pyramiding" in system and "no hedging" in system
    assert "Do not overtrade" in system
    assert "$" not in system, "an unfilled template placeholder"


def test_system_prompt_follows_its_parameters() -> None:
    system = render_system_prompt(
        coins=("SOL",),
        fee_bps=2.0,
        slippage_bps=0.5,
        max_leverage=5,
        max_position_margin_pct=12.5,
    )

    assert "an integer from 1 to 5" in system and "at most 12.5%" in system
    assert "taker fee of 0.02%" in system and '"SOL": {' in system


def test_prompt_version_names_a_shipped_template() -> None:
    from importlib import resources

    template = resources.files("app.prompts").joinpath("templates", f"system_{PROMPT_VERSION}.md")

    assert PROMPT_VERSION == "v1"
    assert template.is_file()
