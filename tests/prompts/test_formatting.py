"""Numbers by significant digits: every price scale keeps its information; no locale is read."""

from __future__ import annotations

import json
import math
from datetime import timedelta

import pytest

from app.prompts.formatting import (
    PRICE_DIGITS,
    RawJson,
    describe_timeframe,
    format_bps_as_pct,
    format_duration,
    format_pct,
    format_series,
    format_sig,
    format_usd,
    json_number,
    to_json,
)


@pytest.mark.parametrize(
    ("value", "digits", "expected"),
    [
        pytest.param(114207.5, PRICE_DIGITS, "114207.5", id="btc-price-kept-whole"),
        pytest.param(113983.61123456, PRICE_DIGITS, "113983.6", id="btc-ema-not-12-digits"),
        pytest.param(0.201545, PRICE_DIGITS, "0.201545", id="doge-price"),
        pytest.param(0.19987654321, PRICE_DIGITS, "0.1998765", id="doge-ema-not-flat-0.2"),
        pytest.param(2.65395, PRICE_DIGITS, "2.65395", id="xrp-price"),
        pytest.param(0.000123456, 5, "0.00012346", id="doge-macd-not-0.0"),
        pytest.param(-0.0000262, 5, "-0.0000262", id="xrp-macd-negative-positional"),
        pytest.param(1.25e-05, 5, "0.0000125", id="funding-rate-no-exponent"),
        pytest.param(585165412.0, PRICE_DIGITS, "585165400", id="large-rounds-integer-part"),
        pytest.param(84.50412, 4, "84.5", id="rsi-trailing-zeros-stripped"),
        pytest.param(100.0, 5, "100", id="integer-zeros-kept"),
        pytest.param(-0.0, 5, "0", id="negative-zero"),
        pytest.param(3e-17, 5, "0", id="float-noise-is-zero"),
        pytest.param(float("nan"), 5, "n/a", id="nan-in-warm-up"),
        pytest.param(math.inf, 5, "n/a", id="infinity"),
        pytest.param(None, 5, "n/a", id="none"),
    ],
)
def test_format_sig_rounds_to_significant_digits(
    value: float | None, digits: int, expected: str
) -> None:
    assert format_sig(value, digits) == expected


def test_format_helpers_render_money_percent_and_series() -> None:
    assert format_usd(1791.5) == "1791.50"
    assert format_usd(-0.001) == "0.00"
    assert format_pct(-61.157) == "-61.16%"
    assert format_bps_as_pct(4.5) == "0.045%"
    assert format_series([0.0001, float("nan"), 2.0]) == "[0.0001, n/a, 2]"


@pytest.mark.parametrize(
    ("timeframe", "expected"),
    [("3m", "3-minute"), ("5m", "5-minute"), ("4h", "4-hour"), ("1d", "1-day"), ("odd", "odd")],
)
def test_describe_timeframe_names_the_candle_length(timeframe: str, expected: str) -> None:
    assert describe_timeframe(timeframe) == expected


@pytest.mark.parametrize(
    ("span", "expected"),
    [
        (timedelta(seconds=59), "0m"),
        (timedelta(minutes=75), "1h 15m"),
        (timedelta(days=2, minutes=5), "2d 0h 5m"),
    ],
)
def test_format_duration_reads_as_days_hours_minutes(span: timedelta, expected: str) -> None:
    assert format_duration(span) == expected


def test_to_json_writes_valid_json_with_chosen_digits() -> None:
    document = {
        "price": 110879.69000000001,
        "tiny": 0.0000125,
        "missing": float("nan"),
        "kept": json_number(0.123456789, 3),
        "usd": RawJson("85.00"),
        "text": 'close above the "breakout" — 突破',
        "nested": [1, True, None],
    }

    text = to_json(document)

    assert text == (
        '{"price": 110879.7, "tiny": 0.0000125, "missing": null, "kept": 0.123, "usd": 85.00, '
        '"text": "close above the \\"breakout\\" — 突破", "nested": [1, true, null]}'
    )
    assert json.loads(text)["text"] == document["text"]
