"""Reading the models' answers: every shape, malformed entries, hostile input, real data."""

from __future__ import annotations

import collections
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.decisions import (
    MAX_ANSWER_CHARS,
    ParseReport,
    TradeDecision,
    parse_decisions,
    parse_decisions_report,
)
from app.domain import ALPHA_ARENA_COINS
from app.errors import DecisionError
from tests.conftest import shared_data

COINS = ALPHA_ARENA_COINS

BTC_ENTRY = {
    "coin": "BTC",
    "signal": "buy_to_enter",
    "quantity": 0.05,
    "leverage": 10,
    "profit_target": 118000.0,
    "stop_loss": 112000.0,
    "invalidation_condition": "4-hour close below the 50-period EMA",
    "confidence": 0.65,
    "risk_usd": 150.0,
    "justification": "4h uptrend, intraday pullback held the 20-EMA.",
}
ETH_HOLD = {"coin": "ETH", "signal": "hold"}
KEYED = json.dumps({"BTC": BTC_ENTRY, "ETH": ETH_HOLD})
EXPECTED = [("BTC", "buy_to_enter"), ("ETH", "hold")]


def signals(decisions: list[TradeDecision] | tuple[TradeDecision, ...]) -> list[tuple[str, str]]:
    return [(decision.coin, decision.signal) for decision in decisions]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(KEYED, id="dict-keyed-by-coin"),
        pytest.param(json.dumps([BTC_ENTRY, ETH_HOLD]), id="list-of-entries"),
        pytest.param(
            json.dumps(
                {"BTC": {"trade_signal_args": BTC_ENTRY}, "ETH": {"trade_signal_args": ETH_HOLD}}
            ),
            id="nof1-trade-signal-args",
        ),
        pytest.param(
            json.dumps(
                [
                    {"BTC": {"trade_signal_args": BTC_ENTRY}},
                    {"ETH": {"trade_signal_args": ETH_HOLD}},
                ]
            ),
            id="list-of-single-coin-objects",
        ),
        pytest.param(f"```json\n{KEYED}\n```", id="markdown-fence"),
        pytest.param(f"Here you go:\n```\n{KEYED}\n```\nGood luck!", id="bare-fence-with-prose"),
        pytest.param(
            f"<think>Draft: {json.dumps({'BTC': {'signal': 'sell_to_enter'}})} no...</think>\n"
            f"{KEYED}",
            id="after-think-block-with-a-draft-inside",
        ),
        pytest.param(f"the reasoning, whose opening tag was eaten</think>{KEYED}", id="close-only"),
        pytest.param(f"<think>I will answer now. {KEYED}", id="unclosed-think-block"),
        pytest.param(
            f"Analysis: BTC looks strong {{ see 4h }}.\n\nDecision: {KEYED}\nThat is all.",
            id="prose-around",
        ),
        pytest.param(
            KEYED.replace('"', "“", 1)  # one curly quote is enough to need the repair
            .replace(",", "，")
            .replace(":", "：")
            .replace("{", "｛")
            .replace("}", "｝"),
            id="full-width-punctuation",
        ),
        pytest.param(KEYED.replace("}}", "},}"), id="trailing-comma"),
        pytest.param(json.dumps({"decisions": [BTC_ENTRY, ETH_HOLD]}), id="wrapper-key"),
        pytest.param(
            json.dumps({"btc": {**BTC_ENTRY, "coin": "BTC/USDT"}, "ETH-PERP": "hold"}),
            id="coin-spellings-and-bare-signal",
        ),
    ],
)
def test_parse_decisions_reads_every_answer_shape(text: str) -> None:
    decisions = parse_decisions(text, COINS)

    assert signals(decisions) == EXPECTED
    assert decisions[0] == TradeDecision.model_validate(BTC_ENTRY)


def test_parse_decisions_keeps_full_width_quotes_inside_text() -> None:
    """Structural “ ” become ASCII; the ones inside a justification stay as the model wrote them."""
    text = "｛“BTC”：｛“signal”：“close_position”，“justification”：“跌破“支撑”了”｝｝"

    (decision,) = parse_decisions(text, COINS)

    assert decision.signal == "close_position"
    assert decision.justification == "跌破“支撑”了"


def test_parse_decisions_accepts_a_hold_without_the_echo() -> None:
    (decision,) = parse_decisions('{"SOL": {"signal": "hold"}}', COINS)

    assert decision == TradeDecision(coin="SOL", signal="hold")
    assert decision.quantity is None and decision.stop_loss is None


def test_parse_decisions_keeps_a_hold_whose_echo_is_garbled_and_notes_it() -> None:
    """nof1's models echoed shorts with a negative quantity; a hold needs none of those fields."""
    echo = {"signal": "hold", "quantity": -1862, "confidence": 65, "leverage": 15}
    text = json.dumps({"XRP": echo})

    report = parse_decisions_report(text, COINS)

    assert report.problems == ()
    assert report.decisions == (TradeDecision(coin="XRP", signal="hold", leverage=15),)
    assert "quantity" in report.notes[0] and "confidence" in report.notes[0]


def test_parse_decisions_normalises_signal_spelling_and_numeric_text() -> None:
    text = json.dumps(
        [{"Coin": "doge", "Signal": "Sell-To-Enter", "Quantity": "1500", "Leverage": 5.0}]
    )

    (decision,) = parse_decisions(text, COINS)

    assert (decision.coin, decision.signal) == ("DOGE", "sell_to_enter")
    assert decision.quantity == 1500.0 and decision.leverage == 5


@pytest.mark.parametrize(
    ("change", "reason_part"),
    [
        ({"signal": "long"}, "not one of buy_to_enter"),
        ({"signal": None}, "no signal"),
        ({"leverage": 0}, "leverage"),
        ({"leverage": 10.5}, "leverage"),
        ({"confidence": 1.5}, "confidence"),
        ({"quantity": -0.05}, "quantity"),
        ({"quantity": 0}, "quantity above 0"),
        ({"quantity": None}, "quantity above 0"),
        ({"stop_loss": 0}, "stop_loss"),
        ({"risk_usd": "a lot"}, "risk_usd"),
        ({"coin": "PEPE"}, "listed under BTC but"),
    ],
)
def test_parse_decisions_reports_a_malformed_entry_and_keeps_the_others(
    change: dict[str, Any], reason_part: str
) -> None:
    bad = {key: value for key, value in {**BTC_ENTRY, **change}.items() if value is not None}
    if change.get("coin") == "PEPE":
        bad["coin"] = "ETH"  # the key says BTC, the entry says ETH
        reason_part = "listed under BTC but its coin is ETH"
    text = json.dumps({"BTC": bad, "SOL": {"coin": "SOL", "signal": "hold"}})

    report = parse_decisions_report(text, COINS)

    assert signals(report.decisions) == [("SOL", "hold")]
    (problem,) = report.problems
    assert problem.coin == "BTC"
    assert reason_part in problem.reason
    assert parse_decisions(text, COINS) == list(report.decisions)


def test_parse_decisions_reports_an_unknown_coin_by_name() -> None:
    text = json.dumps({"PEPE": {**BTC_ENTRY, "coin": "PEPE"}, "ETH": ETH_HOLD})

    report = parse_decisions_report(text, COINS)

    assert signals(report.decisions) == [("ETH", "hold")]
    (problem,) = report.problems
    assert (problem.coin, problem.signal) == ("PEPE", "buy_to_enter")
    assert "not a coin of this arena" in problem.reason and "BTC, ETH" in problem.reason
    assert '"PEPE"' in problem.raw


def test_parse_decisions_rejects_a_coin_given_two_different_decisions() -> None:
    text = json.dumps([BTC_ENTRY, {"coin": "BTC", "signal": "close_position"}, ETH_HOLD])

    report = parse_decisions_report(text, COINS)

    assert signals(report.decisions) == [("ETH", "hold")]
    assert [problem.signal for problem in report.problems] == ["buy_to_enter", "close_position"]
    assert all("one action per coin" in problem.reason for problem in report.problems)


def test_parse_decisions_keeps_one_copy_of_a_repeated_identical_decision() -> None:
    report = parse_decisions_report(json.dumps([ETH_HOLD, ETH_HOLD]), COINS)

    assert signals(report.decisions) == [("ETH", "hold")]
    assert report.problems == ()
    assert "2 times" in report.notes[0]


def test_parse_decisions_reads_an_empty_object_as_no_action() -> None:
    assert parse_decisions("{}", COINS) == []


def test_parse_decisions_raises_when_every_entry_is_malformed() -> None:
    text = json.dumps({"BTC": {**BTC_ENTRY, "leverage": -3}})

    with pytest.raises(DecisionError, match=r"no valid decision.*BTC buy_to_enter: leverage"):
        parse_decisions(text, COINS)


@pytest.mark.parametrize(
    ("text", "reason_part"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("I would hold everything this round.", "no JSON object in the answer"),
        ('{"BTC": {"coin": "BTC", "signal": "ho', "cannot be read (Unterminated string"),
        ('{"BTC": {"signal": hold}}', "cannot be read (Expecting value"),
        ("[" * 5000, "cannot be read"),
        ("x" * (MAX_ANSWER_CHARS + 1), "more than the 262,144"),
        (json.dumps([ETH_HOLD] * 300), "more than 256 entries"),
    ],
)
def test_parse_decisions_raises_decision_error_with_the_reason(text: str, reason_part: str) -> None:
    with pytest.raises(DecisionError) as caught:
        parse_decisions(text, COINS)

    assert reason_part in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        "[{" * 400_000,
        '{"a": x ' * 100_000,
        "x" * 500_000 + '{"a": x ' * 50_000,
        '{"' + "x" * 900_000,
        '{"BTC": {"signal": "hold", "quantity": ' + "9" * 100_000 + "}}",
        "<think>" + '{"a":' * 100_000,
    ],
    ids=[
        "nested-starts",
        "many-broken-objects",
        "padding-then-broken",
        "endless-string",
        "huge-number",
        "deep-inside-think",
    ],
)
def test_parse_decisions_bounds_its_work_on_hostile_input(text: str) -> None:
    """Each of these made a naive scan quadratic or recursive; here they end in a DecisionError."""
    with pytest.raises(DecisionError):
        parse_decisions(text, COINS)


def test_trade_decision_refuses_nan_and_infinity() -> None:
    """NaN passes every `ge`/`le` check, so the model refuses non-finite numbers outright."""
    with pytest.raises(ValueError, match="finite"):
        TradeDecision(coin="BTC", signal="buy_to_enter", quantity=float("inf"))
    report = parse_decisions_report('{"BTC": {"signal": "buy_to_enter", "quantity": NaN}}', COINS)
    assert "finite" in report.problems[0].reason


def _only_decision_error(text: str) -> ParseReport | None:
    try:
        report = parse_decisions_report(text, COINS)
    except DecisionError:
        return None
    try:
        parse_decisions(text, COINS)
    except DecisionError:
        pass
    return report


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_parse_decisions_raises_nothing_but_decision_error_on_arbitrary_text(text: str) -> None:
    _only_decision_error(text)


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["BTC", "eth", "hold", "buy_to_enter", "close position", "-1", "1e400"])
    | st.text(max_size=12)
)
field_names = st.sampled_from(
    [
        "coin",
        "signal",
        "quantity",
        "leverage",
        "profit_target",
        "stop_loss",
        "confidence",
        "risk_usd",
        "justification",
        "invalidation_condition",
        "trade_signal_args",
        "Signal",
    ]
)
coin_names = st.sampled_from(["BTC", "ETH", "doge", "BTC/USDT", "PEPE", "decisions", ""])
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(field_names | coin_names | st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=30,
)
entries = st.dictionaries(field_names, scalars | json_values, max_size=10)
answers = (
    st.dictionaries(coin_names, entries | scalars, max_size=8)
    | st.lists(entries | st.dictionaries(coin_names, entries, max_size=1), max_size=8)
    | json_values
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers, st.text(max_size=30), st.text(max_size=30), st.booleans())
def test_parse_decisions_raises_nothing_but_decision_error_on_arbitrary_json(
    value: Any, before: str, after: str, fenced: bool
) -> None:
    body = json.dumps(value)
    text = f"{before}```json\n{body}\n```{after}" if fenced else f"{before}{body}{after}"
    report = _only_decision_error(text)
    if report is not None:
        assert all(decision.coin in COINS for decision in report.decisions)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=len(KEYED)), st.text(max_size=5), st.booleans())
def test_parse_decisions_raises_nothing_but_decision_error_on_a_damaged_answer(
    cut: int, inserted: str, truncate: bool
) -> None:
    text = KEYED[:cut] if truncate else KEYED[:cut] + inserted + KEYED[cut:]
    _only_decision_error(text)


# --- The real answers of nof1's Alpha Arena season 1 --------------------------------------------

EXPECTED_SIGNALS_PER_MODEL = {
    ("claude-sonnet-4-5", "hold"): 85,
    ("deepseek-chat-v3.1", "hold"): 72,
    ("gemini-2.5-pro", "hold"): 92,
    ("gemini-2.5-pro", "buy_to_enter"): 2,
    ("gemini-2.5-pro", "close_position"): 2,
    ("gpt-5", "hold"): 90,
    ("grok-4", "hold"): 90,
    ("qwen3-max", "hold"): 23,
}


def load_conversations() -> list[dict[str, Any]]:
    path = shared_data("alpha-arena-s1", "conversations.json")
    records: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))["conversations"]
    return records


def as_sent(record: dict[str, Any], form: str) -> str:
    """Return the answer as text: bare JSON, or as a thinking model sends it (reasoning first)."""
    body = json.dumps(record["llm_response"])
    if form == "bare":
        return body
    trace = record["cot_trace"]
    reasoning = trace if isinstance(trace, str) else json.dumps(trace)
    return f"{reasoning}\n\n```json\n{body}\n```"


@pytest.mark.parametrize("form", ["bare", "thinking"])
def test_parse_decisions_reads_every_real_alpha_arena_answer(form: str) -> None:
    """100 calls, 457 per-coin entries: 452 hold, 2 buy_to_enter, 2 close_position, 1 malformed.

    The malformed one is DeepSeek's `{"failed_json_response_raw_text": "..."}`, nof1's record of
    an answer it could not parse: it must come back as a problem, not stop the other 99 calls.
    """
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    problems = []
    for record in load_conversations():
        report = parse_decisions_report(as_sent(record, form), COINS)
        counts.update((record["model_id"], decision.signal) for decision in report.decisions)
        problems.extend(report.problems)
        expected = [
            (coin, entry["signal"])
            for coin, entry in record["llm_response"].items()
            if isinstance(entry, dict)
        ]
        assert signals(report.decisions) == expected, record["id"]

    assert dict(counts) == EXPECTED_SIGNALS_PER_MODEL
    totals = collections.Counter(signal for (_, signal), n in counts.items() for _ in range(n))
    assert totals == {"hold": 452, "buy_to_enter": 2, "close_position": 2}
    (problem,) = problems
    assert problem.coin == "failed_json_resp"
    assert "not a coin of this arena" in problem.reason
    assert sum(counts.values()) + len(problems) == 457


def test_parse_decisions_reads_the_answer_nof1_failed_to_parse() -> None:
    """DeepSeek's failed answer is prose, a template in a ```json fence with `<int 5–40>`
    placeholders, then a list of `{COIN: {"trade_signal_args": {...}}}`: six holds."""
    (record,) = [
        record
        for record in load_conversations()
        if "failed_json_response_raw_text" in record["llm_response"]
    ]
    raw = record["llm_response"]["failed_json_response_raw_text"]

    decisions = parse_decisions(raw, COINS)

    assert signals(decisions) == [
        (coin, "hold") for coin in ("ETH", "SOL", "XRP", "BTC", "DOGE", "BNB")
    ]
    assert decisions[2].quantity == 3609.0 and decisions[2].stop_loss == 2.325
