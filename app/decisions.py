"""Reading and validating the models' JSON trade decisions (nof1's schema, docs/prompt.md).

How an answer is read (docs/prompt.md has the examples):
1. The text outside `<think>...</think>` first (the answer follows the reasoning; a missing
   opening tag is fine), then the whole text (JSON left inside an unclosed think block).
2. Each as written, then with full-width punctuation (，：｛｝“” ...) and trailing commas fixed.
3. Every top-level JSON object or array found in the text, fenced or not; the answer is the LAST
   one that looks like decisions, so drafts, templates and prose before it are ignored.
4. Its entries: a dict keyed by coin, a list of entries, a list of `{COIN: entry}`, nof1's
   `{COIN: {"trade_signal_args": {...}}}`, a single entry, or one of these under a wrapper key.
5. Each entry is validated on its own. A malformed entry becomes a `DecisionProblem` and the others
   still count (the engine stores problems as rejected decisions); a `hold` or `close_position`
   whose echoed fields are invalid keeps its signal and drops those fields (noted). Two different
   decisions for one coin reject that coin (one action per coin).

Only `DecisionError` ever leaves this module, and the work is bounded for any input size.
"""

from __future__ import annotations

import json
import logging
import re
import reprlib
import unicodedata
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.domain import SIGNALS, Signal
from app.errors import DecisionError

logger = logging.getLogger(__name__)


class TradeDecision(BaseModel):
    """One coin's decision in nof1's schema; numbers are validated, extra keys ignored.

    `quantity` is in coin units; `confidence` is 0-1; `risk_usd` is what the model says it risks.
    A `hold` may leave everything but `coin` and `signal` empty.
    """

    # NaN and infinity pass every range check, so they are refused outright.
    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    coin: str = Field(min_length=1, max_length=16)
    signal: Signal
    quantity: float | None = Field(default=None, ge=0)
    leverage: int | None = Field(default=None, ge=1, le=1000)
    profit_target: float | None = Field(default=None, gt=0)
    stop_loss: float | None = Field(default=None, gt=0)
    invalidation_condition: str = ""
    confidence: float | None = Field(default=None, ge=0, le=1)
    risk_usd: float | None = Field(default=None, ge=0)
    justification: str = ""


# Bounds that keep the work linear whatever the model (or an attacker) sends.
# The same 256 Ki characters the records keep of an answer (`app.db.llm_rows`).
MAX_ANSWER_CHARS: Final = 262_144
MAX_ENTRIES: Final = 256
_SCAN_BUDGET_CHARS: Final = 4_000_000
_FAILED_SCAN_COST: Final = 10_000
# Each failed attempt costs O(position): `JSONDecodeError` counts the lines before the error.
_MAX_FAILED_ATTEMPTS: Final = 1_000
_MAX_JSON_VALUES: Final = 1_000
_MAX_WRAPPER_DEPTH: Final = 2
_MAX_UNWRAP: Final = 3
_EXCERPT_CHARS: Final = 300
_FIELD_CHARS: Final = 16

_ENTRY_SIGNS: Final = frozenset({"signal", "trade_signal_args"})
_ENTRY_SIGNALS: Final = frozenset({"buy_to_enter", "sell_to_enter"})
_OPTIONAL_FIELDS: Final = (
    "quantity",
    "leverage",
    "profit_target",
    "stop_loss",
    "invalidation_condition",
    "confidence",
    "risk_usd",
    "justification",
)
_TEXT_FIELDS: Final = frozenset({"invalidation_condition", "justification"})
_SCHEMA_KEYS: Final[dict[object, str]] = {
    name: name for name in ("coin", "signal", "trade_signal_args", *_OPTIONAL_FIELDS)
}
_QUOTE_SUFFIXES: Final = ("USDT", "USDC", "USD", "PERP")

# A JSON value worth trying starts like an object (`{"` or `{}`) or an array of them.
_JSON_START_RE: Final = re.compile(r"\{\s*[\"}]|\[\s*[\[{\]]")
_THINK_CLOSE_RE: Final = re.compile(r"</think\s*>", re.IGNORECASE)
_THINK_OPEN_RE: Final = re.compile(r"<think\s*>", re.IGNORECASE)
_TRAILING_COMMA_RE: Final = re.compile(r",(\s*[}\]])")
_QUOTE_AFTER_RE: Final = re.compile(r"([{\[,:]\s*)[“”„‟″]")
_QUOTE_BEFORE_RE: Final = re.compile(r"[“”„‟″](\s*[}\],:])")
_SIGNAL_SEPARATORS_RE: Final = re.compile(r"[\s\-]+")
_COIN_SEPARATORS_RE: Final = re.compile(r"[/:\-_\s]")
# NFKC maps full-width ASCII (，：｛｝［］＂) to ASCII; typographic quotes are handled apart.
_DECODER: Final = json.JSONDecoder()


@dataclass(frozen=True, slots=True)
class DecisionProblem:
    """One entry of an answer that could not become a decision, and why.

    `coin` is the coin it was about (or what the model wrote in its place, cut to 16 characters);
    `signal` likewise, None when absent; `raw` is an excerpt of the entry as the model wrote it.
    """

    coin: str
    signal: str | None
    reason: str
    raw: str = ""

    def describe(self) -> str:
        """Return the problem as one line: coin, signal and reason."""
        signal = f" {self.signal}" if self.signal else ""
        return f"{self.coin}{signal}: {self.reason}"


@dataclass(frozen=True, slots=True)
class ParseReport:
    """What an answer held: valid decisions in answer order, per-entry problems, repair notes."""

    decisions: tuple[TradeDecision, ...]
    problems: tuple[DecisionProblem, ...] = ()
    notes: tuple[str, ...] = ()


def parse_decisions(text: str, coins: Collection[str]) -> list[TradeDecision]:
    """Return the valid decisions in a model's answer; malformed entries are logged and dropped.

    Raises `DecisionError` with the reason when the answer holds no readable JSON, or when it
    holds entries but none of them is valid. An empty object (`{}`) means no action: `[]`.
    Use `parse_decisions_report` to keep the per-entry problems.
    """
    report = parse_decisions_report(text, coins)
    if report.problems and not report.decisions:
        raise DecisionError(
            "no valid decision in the answer: "
            + "; ".join(problem.describe() for problem in report.problems[:6])
        )
    if report.problems:
        logger.warning(
            "ignored %d malformed decision(s): %s",
            len(report.problems),
            "; ".join(problem.describe() for problem in report.problems[:6]),
        )
    return list(report.decisions)


def parse_decisions_report(text: str, coins: Collection[str]) -> ParseReport:
    """Read a model's answer into valid decisions plus one `DecisionProblem` per bad entry.

    Raises `DecisionError` only when no JSON answer can be found at all (or it is oversized).
    """
    if not isinstance(text, str):
        raise DecisionError(f"the answer is {type(text).__name__}, not text")
    if not text.strip():
        raise DecisionError("the answer is empty: expected one JSON object keyed by coin")
    if len(text) > MAX_ANSWER_CHARS:
        raise DecisionError(
            f"the answer is {len(text):,} characters, more than the {MAX_ANSWER_CHARS:,} read; "
            "ask the model for the JSON object only"
        )
    lookup = {str(coin).strip().upper(): str(coin) for coin in coins}
    answer = _find_answer(text, lookup)
    entries = _raw_entries(answer, lookup, depth=0)
    if len(entries) > MAX_ENTRIES:
        raise DecisionError(
            f"the answer lists more than {MAX_ENTRIES} entries: expected one decision per coin"
        )
    return _read_entries(entries, lookup)


def _find_answer(text: str, lookup: Mapping[str, str]) -> object:
    """Return the JSON value that holds the decisions, trying the readings in order of trust."""
    fallback: object | None = None
    first_error: str | None = None
    for region in _regions(text):
        for candidate in _readings(region):
            values, error = _json_values(candidate)
            first_error = first_error or error
            for value in reversed(values):
                if _looks_like_decisions(value, lookup, depth=0):
                    return value
            if values and fallback is None:
                fallback = values[-1]
    if fallback is not None:
        return fallback
    if first_error is not None:
        raise DecisionError(
            f"the answer's JSON cannot be read ({first_error}); "
            "expected one complete JSON object keyed by coin"
        )
    raise DecisionError(
        f"no JSON object in the answer (it begins {_excerpt_text(text.strip(), 80)}): "
        "expected one JSON object keyed by coin"
    )


def _regions(text: str) -> list[str]:
    """Return where to look: the text after the reasoning first, then the whole text."""
    closes = list(_THINK_CLOSE_RE.finditer(text))
    if closes:
        outside = text[closes[-1].end() :]
    else:
        opening = _THINK_OPEN_RE.search(text)
        outside = text[: opening.start()] if opening else text
    return [outside, text] if outside != text else [text]


def _readings(region: str) -> Iterator[str]:
    """Yield the region as written, then repaired if that changes it.

    The repair (a Unicode normalisation of the whole text) is made only when the text as
    written held no decisions: a well-formed answer never pays for it.
    """
    yield region
    repaired = _repair(region)
    if repaired != region:
        yield repaired


def _repair(text: str) -> str:
    """Return the text with full-width punctuation as ASCII and trailing commas removed.

    Typographic quotes become ASCII only next to JSON punctuation, so the quotes inside a
    justification (价格“突破”) stay part of the text.
    """
    text = unicodedata.normalize("NFKC", text)
    text = _QUOTE_AFTER_RE.sub(r'\1"', text)
    text = _QUOTE_BEFORE_RE.sub(r'"\1', text)
    return _TRAILING_COMMA_RE.sub(r"\1", text)


def _json_values(text: str) -> tuple[list[object], str | None]:
    """Return the top-level JSON objects and arrays in `text`, in order, and the first error.

    After a failed attempt the scan resumes where the decoder stopped, so a broken object is
    not mistaken for the fragments nested in it. The work is bounded by a scan budget.
    """
    values: list[object] = []
    first_error: str | None = None
    budget = _SCAN_BUDGET_CHARS
    failures = 0
    position = 0
    while budget > 0 and len(values) < _MAX_JSON_VALUES and failures < _MAX_FAILED_ATTEMPTS:
        match = _JSON_START_RE.search(text, position)
        if match is None:
            break
        start = match.start()
        try:
            value, end = _DECODER.raw_decode(text, start)
        except json.JSONDecodeError as error:
            failures += 1
            first_error = first_error or _describe_json_error(text, error)
            # An unterminated string is reported where it starts but was scanned to the end.
            unterminated = error.msg.startswith("Unterminated string")
            budget -= len(text) - start if unterminated else max(error.pos - start, 1)
            position = max(error.pos, start + 1)
            continue
        except (ValueError, RecursionError):
            # Too deeply nested, or an integer with thousands of digits.
            failures += 1
            first_error = first_error or f"too deep or a number too long at character {start}"
            budget -= _FAILED_SCAN_COST
            position = start + 1
            continue
        budget -= end - start
        values.append(value)
        position = end
    return values, first_error


def _describe_json_error(text: str, error: json.JSONDecodeError) -> str:
    near = text[max(0, error.pos - 30) : error.pos + 10]
    return f"{error.msg} at line {error.lineno} column {error.colno}, near {near!r}"


def _looks_like_decisions(value: object, lookup: Mapping[str, str], *, depth: int) -> bool:
    if isinstance(value, dict):
        if _is_entry(value):
            return True
        for key, item in islice(value.items(), MAX_ENTRIES):
            if _canonical_coin(key, lookup) is not None:
                return True
            if depth < _MAX_WRAPPER_DEPTH and _looks_like_decisions(item, lookup, depth=depth + 1):
                return True
        return False
    if isinstance(value, list) and depth <= _MAX_WRAPPER_DEPTH:
        return any(
            isinstance(item, dict) and _looks_like_decisions(item, lookup, depth=depth + 1)
            for item in islice(value, MAX_ENTRIES)
        )
    return False


def _is_entry(value: Mapping[object, object]) -> bool:
    """Return whether a dict is one decision (it has a signal) rather than a map of coins."""
    keys = {str(key).strip().lower() for key in islice(value, MAX_ENTRIES)}
    if keys & _ENTRY_SIGNS:
        return True
    return "coin" in keys and not any(isinstance(item, dict) for item in value.values())


def _raw_entries(
    value: object, lookup: Mapping[str, str], *, depth: int
) -> list[tuple[str | None, object]]:
    """Return (key the model filed it under, entry) pairs from the answer's JSON value."""
    if isinstance(value, list):
        entries: list[tuple[str | None, object]] = []
        for item in islice(value, MAX_ENTRIES + 1):
            if isinstance(item, dict) and len(item) == 1 and not _is_entry(item):
                ((key, inner),) = item.items()
                entries.append((str(key), inner))
            else:
                entries.append((None, item))
        return entries
    if isinstance(value, dict):
        if _is_entry(value):
            return [(None, value)]
        if depth < _MAX_WRAPPER_DEPTH and not any(
            _canonical_coin(key, lookup) is not None for key in islice(value, MAX_ENTRIES)
        ):
            # A wrapper such as {"decisions": [...]} or {"analysis": "...", "trades": {...}}.
            inner = [
                item
                for item in islice(value.values(), MAX_ENTRIES)
                if _looks_like_decisions(item, lookup, depth=depth + 1)
            ]
            if len(inner) == 1:
                return _raw_entries(inner[0], lookup, depth=depth + 1)
        return [(str(key), item) for key, item in islice(value.items(), MAX_ENTRIES + 1)]
    return [(None, value)]


@dataclass(slots=True)
class _Read:
    coin: str | None
    decision: TradeDecision | None
    problem: DecisionProblem | None
    note: str | None = None


def _read_entries(
    entries: list[tuple[str | None, object]], lookup: Mapping[str, str]
) -> ParseReport:
    reads = [_read_entry(key, raw, lookup) for key, raw in entries]
    by_coin: dict[str, list[_Read]] = {}
    for read in reads:
        if read.coin is not None:
            by_coin.setdefault(read.coin, []).append(read)
    decisions: list[TradeDecision] = []
    problems: list[DecisionProblem] = []
    notes: list[str] = [read.note for read in reads if read.note]
    for read in reads:
        if read.problem is not None:
            problems.append(read.problem)
            continue
        assert read.decision is not None and read.coin is not None
        same_coin = by_coin[read.coin]
        if len(same_coin) == 1:
            decisions.append(read.decision)
        elif all(other.decision == read.decision for other in same_coin):
            if same_coin[0] is read:
                decisions.append(read.decision)
                notes.append(f"{read.coin}: the same decision was given {len(same_coin)} times")
        else:
            signals = ", ".join(
                other.decision.signal if other.decision else "malformed" for other in same_coin
            )
            problems.append(
                DecisionProblem(
                    coin=read.coin,
                    signal=read.decision.signal,
                    reason=f"{len(same_coin)} different decisions for this coin ({signals}): "
                    "one action per coin, so none is taken",
                    raw=_excerpt(read.decision.model_dump()),
                )
            )
    return ParseReport(tuple(decisions), tuple(problems), tuple(notes))


def _read_entry(key: str | None, raw: object, lookup: Mapping[str, str]) -> _Read:
    # A problem quotes the entry as the model wrote it; a valid entry needs no excerpt.
    written = raw
    if isinstance(raw, str) and key is not None and _canonical_coin(key, lookup) is not None:
        raw = {"signal": raw}  # {"BTC": "hold"}: a bare signal
    if not isinstance(raw, dict):
        reason = (
            f"{_excerpt_text(key, 40)} is not a coin of this arena {_arena(lookup)}"
            if key is not None and _canonical_coin(key, lookup) is None
            else f"expected an object with coin and signal, got {_kind(raw)}"
        )
        problem = DecisionProblem(_label(key), None, reason, _excerpt(written))
        return _Read(None, None, problem)
    entry = _lower_keys(raw)
    for _ in range(_MAX_UNWRAP):
        inner = entry.get("trade_signal_args")
        if not isinstance(inner, dict):
            break
        outer = {name: value for name, value in entry.items() if name != "trade_signal_args"}
        entry = {**outer, **_lower_keys(inner)}
    entry = {name: value for name, value in entry.items() if value is not None}

    field = entry.get("coin")
    coin, coin_problem = _resolve_coin(key, field, lookup)
    raw_signal = entry.get("signal")
    if coin is None:
        label = _cut(field) if isinstance(field, str) and key is None else _label(key)
        problem = DecisionProblem(label, _signal_label(raw_signal), coin_problem, _excerpt(written))
        return _Read(None, None, problem)
    signal = _normalise_signal(raw_signal)
    if signal is None:
        reason = (
            "no signal given"
            if raw_signal is None
            else f"signal {_excerpt_text(str(raw_signal), 40)} is not one of {', '.join(SIGNALS)}"
        )
        problem = DecisionProblem(coin, _signal_label(raw_signal), reason, _excerpt(written))
        return _Read(coin, None, problem)
    return _validate(coin, signal, entry, written)


def _label(key: str | None) -> str:
    """Return what a problem names an entry by when it has no coin: the key it was filed under."""
    return _cut(key) if key is not None else "?"


def _signal_label(raw_signal: object) -> str | None:
    return _cut(raw_signal) if isinstance(raw_signal, str) else None


def _validate(coin: str, signal: Signal, entry: dict[str, object], written: object) -> _Read:
    fields: dict[str, object] = {name: entry[name] for name in _OPTIONAL_FIELDS if name in entry}
    for name in _TEXT_FIELDS & fields.keys():
        if isinstance(fields[name], int | float) and not isinstance(fields[name], bool):
            fields[name] = str(fields[name])
    try:
        decision = TradeDecision.model_validate({"coin": coin, "signal": signal, **fields})
    except ValidationError as error:
        bad = sorted({str(item["loc"][0]) for item in error.errors() if item["loc"]})
        if signal in _ENTRY_SIGNALS:
            problem = DecisionProblem(coin, signal, _explain(error), _excerpt(written))
            return _Read(coin, None, problem)
        # A hold or close needs none of the echoed fields: drop the garbled ones, keep the signal.
        kept = {name: value for name, value in fields.items() if name not in bad}
        try:
            decision = TradeDecision.model_validate({"coin": coin, "signal": signal, **kept})
        except ValidationError as again:
            problem = DecisionProblem(coin, signal, _explain(again), _excerpt(written))
            return _Read(coin, None, problem)
        note = f"{coin} {signal}: ignored invalid {', '.join(bad)} ({_explain(error)})"
        return _Read(coin, decision, None, note)
    if signal in _ENTRY_SIGNALS and not decision.quantity:
        reason = "an entry needs a quantity above 0 (in coin units)"
        return _Read(coin, None, DecisionProblem(coin, signal, reason, _excerpt(written)))
    return _Read(coin, decision, None)


def _resolve_coin(
    key: str | None, field: object, lookup: Mapping[str, str]
) -> tuple[str | None, str]:
    """Return the coin an entry is about, or None and the reason."""
    key_coin = _canonical_coin(key, lookup) if key is not None else None
    field_coin = _canonical_coin(field, lookup) if isinstance(field, str) else None
    if key_coin is not None and field_coin is not None and key_coin != field_coin:
        return None, f"listed under {key_coin} but its coin is {field_coin}"
    coin = key_coin or field_coin
    if coin is not None:
        return coin, ""
    if isinstance(field, str):
        return None, f"coin {_excerpt_text(field, 40)} is not a coin of this arena {_arena(lookup)}"
    if key is not None:
        return None, f"{_excerpt_text(key, 40)} is not a coin of this arena {_arena(lookup)}"
    return None, "the entry names no coin"


def _canonical_coin(name: object, lookup: Mapping[str, str]) -> str | None:
    """Return the arena's spelling of a coin the model wrote as btc, BTC/USDT, BTC-PERP, BTCUSDT."""
    if not isinstance(name, str) or len(name) > 40:
        return None
    upper = name.strip().upper()
    if upper in lookup:
        return lookup[upper]
    base = _COIN_SEPARATORS_RE.split(upper, maxsplit=1)[0]
    if base in lookup:
        return lookup[base]
    for suffix in _QUOTE_SUFFIXES:
        if upper.endswith(suffix) and upper[: -len(suffix)] in lookup:
            return lookup[upper[: -len(suffix)]]
    return None


def _normalise_signal(value: object) -> Signal | None:
    if not isinstance(value, str) or len(value) > 40:
        return None
    if value in SIGNALS:
        return value  # as the prompt asks: nothing to normalise
    name = _SIGNAL_SEPARATORS_RE.sub("_", value.strip().lower())
    return name if name in SIGNALS else None


def _lower_keys(entry: Mapping[object, object]) -> dict[str, object]:
    # The schema's own names (most keys of most answers) are already as they should be.
    return {
        _SCHEMA_KEYS.get(name) or str(name).strip().lower(): value
        for name, value in islice(entry.items(), 64)
    }


def _explain(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(part) for part in item["loc"]) or "entry"
        got = _shorten(repr(item.get("input")), 40)
        parts.append(f"{where}: {item['msg']} (got {got})")
    return "; ".join(parts)


def _arena(lookup: Mapping[str, str]) -> str:
    return "(it trades " + ", ".join(lookup.values()) + ")" if lookup else "(no coin is traded)"


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the text {_excerpt_text(value, 40)}"
    return "null" if value is None else f"{type(value).__name__} {_shorten(repr(value), 40)}"


def _cut(text: str) -> str:
    return text.strip()[:_FIELD_CHARS] or "?"


def _excerpt(value: object) -> str:
    """Return the entry as compact JSON for the record, cut to a few hundred characters."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        text = reprlib.repr(value)
    return text if len(text) <= _EXCERPT_CHARS else text[: _EXCERPT_CHARS - 1] + "…"


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _excerpt_text(text: str, limit: int) -> str:
    return repr(_shorten(text, limit))
