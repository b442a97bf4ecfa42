"""Ports: what the core needs from the outside world, as Protocols.

Adapters in `app/market`, `app/llm` and `app/db` implement them; `app/wiring.py` picks which.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal, Protocol, runtime_checkable

import pandas as pd

from app.decisions import DecisionProblem, TradeDecision
from app.domain import (
    AccountState,
    AccountView,
    Bars,
    CallAttempt,
    ChatMessage,
    ChatOptions,
    ChatResult,
    ClosedTrade,
    ExhaustedModel,
    Fill,
    FundingPayment,
    ImagePart,
    MarketRules,
    MarketSnapshot,
    Position,
    QuotaDelta,
    RecordedFailure,
    Settlements,
)


@runtime_checkable
class MarketData(Protocol):
    """Source of market snapshots: a live exchange or replayed history."""

    async def snapshot(self, at: datetime) -> MarketSnapshot:
        """Return the market for every configured coin as it was known at `at`."""
        ...

    async def candles(
        self, coin: str, timeframe: str, start: datetime, end: datetime
    ) -> pd.DataFrame:
        """Return the closed candles of `coin` with open time in [`start`, `end`)."""
        ...

    async def funding(self, coin: str, start: datetime, end: datetime) -> pd.DataFrame:
        """Return the settlements in (`start`, `end`]: columns `funding_rate` and `mark_price`.

        `mark_price` is NaN where the source has no mark price for the settlement; the paper
        exchange then uses the candle price at that time.
        """
        ...

    async def market_rules(self) -> Mapping[str, MarketRules]:
        """Return precision and minimums per coin, for the risk checks."""
        ...

    async def close(self) -> None:
        """Release network resources."""
        ...


@runtime_checkable
class BarSource(Protocol):
    """A market that hands out candles and settlements as arrays (history held in memory).

    The engine's exit monitor uses it instead of `MarketData.candles`/`funding` when the market
    offers it at the monitor's timeframe: a backtest then scans exits without building a
    DataFrame per coin per cycle.
    """

    base_timeframe: str

    def bars_between(self, coin: str, start: datetime, end: datetime) -> Bars:
        """Return the candles with open time in [`start`, `end`)."""
        ...

    def settlements_between(self, coin: str, start: datetime, end: datetime) -> Settlements:
        """Return the funding settlements in (`start`, `end`]."""
        ...


@runtime_checkable
class ChatModel(Protocol):
    """A chat-completion model behind some provider."""

    async def complete(
        self, messages: Sequence[ChatMessage], options: ChatOptions | None = None
    ) -> ChatResult:
        """Ask the model and return its answer; raise `app.errors` types on failure."""
        ...


class AnswerCache(Protocol):
    """Where answers (and failure markers) are kept by cache key, for cached and replay modes."""

    def lookup(self, key: str) -> ChatResult | RecordedFailure | None:
        """Return what is stored under `key` (an answer marked `cache_hit`, or a failure)."""
        ...

    def count_hit(self, key: str) -> None:
        """Count one use of what is stored under `key`."""
        ...

    async def put(self, key: str, *, model: str, answer: ChatResult) -> None:
        """Store `answer` (asked of `model`) under `key`; a failure to store is only logged."""
        ...

    async def put_failure(self, key: str, failure: RecordedFailure, *, latency_s: float) -> None:
        """Store a failure marker under `key`; a failure to store is only logged."""
        ...

    def close(self) -> None:
        """Write what is still held (hit counts)."""
        ...


class RecordedAnswers(Protocol):
    """One recorded run's answers and failures, by agent and prompt, for `--replay-run`.

    Unlike the `AnswerCache` (one entry per prompt, whichever run stored it), this is what that
    one run got: its replay gives back its answers and fails where it failed.
    """

    run_id: str

    def agents(self) -> frozenset[str]:
        """Return the names of the run's agents."""
        ...

    def lookup(self, agent: str, prompt_hash: str) -> ChatResult | RecordedFailure | None:
        """Return the run's answer (marked `cache_hit`) or failure for this prompt, or None.

        A prompt the agent asked more than once gives the run's calls in their order (then the
        last again).
        """
        ...


class QuotaLedger(Protocol):
    """Where requests per provider, model and UTC day are counted (raises `TemporaryError`)."""

    def record(self, deltas: Sequence[QuotaDelta]) -> None:
        """Add the deltas to their days' counts (blocking; callers run it in a thread)."""
        ...

    def exhausted_on(self, day: date) -> list[ExhaustedModel]:
        """Return the models found exhausted (or not served) on `day`."""
        ...

    def begin(self, provider: str, model: str, *, agent: str, at: datetime) -> int | None:
        """Count one request about to be sent and write its pending call row; return its id.

        None when no pending row could be written (the request is then counted when it ends).
        """
        ...


class CandleStore(Protocol):
    """Where the exchange feed keeps closed candles between requests and restarts."""

    def load(
        self, *, exchange: str, symbol: str, timeframe: str, start: datetime, end: datetime
    ) -> pd.DataFrame:
        """Return the stored candles with open time in [`start`, `end`), oldest first."""
        ...

    def save(self, *, exchange: str, symbol: str, timeframe: str, frame: pd.DataFrame) -> int:
        """Store closed candles (replacing any with the same open time); return how many."""
        ...

    def count(self, *, exchange: str, symbol: str, timeframe: str) -> int:
        """Return how many candles of this series are stored."""
        ...


@dataclass(frozen=True, slots=True)
class DecisionRequest:
    """What an agent is given in one cycle.

    `messages` is empty for strategies that do not read a prompt (`Strategy.uses_prompt` False), so
    the engine renders prompts only for the agents that read them.
    """

    at: datetime
    snapshot: MarketSnapshot
    account: AccountView
    coins: tuple[str, ...]
    messages: tuple[ChatMessage, ...] = ()
    prompt_version: str | None = None
    invocation: int = 0
    shared_texts: tuple[str, ...] = ()
    # Seconds the agent has to answer (passed to the model call as `ChatOptions.budget_s`).
    budget_s: float | None = None


@dataclass(frozen=True, slots=True)
class StrategyAnswer:
    """An agent's answer: validated decisions, or the reason none could be read.

    `chat` is the model's raw answer (None for rule-based baselines). When the text could not be
    parsed, `decisions` is empty and `parse_error` says why; the engine stores both and holds.
    `problems` are the entries that could not be read while others could: each is stored as a
    rejected decision with its reason.
    """

    decisions: tuple[TradeDecision, ...]
    chat: ChatResult | None = None
    parse_error: str | None = None
    attempts: tuple[CallAttempt, ...] = ()
    problems: tuple[DecisionProblem, ...] = ()


@runtime_checkable
class Strategy(Protocol):
    """An agent's brain: an LLM behind a prompt, or a rule-based baseline."""

    name: str
    uses_prompt: bool

    async def decide(self, request: DecisionRequest) -> StrategyAnswer:
        """Return this cycle's decisions; raise `app.errors` types when no answer came back."""
        ...


@runtime_checkable
class SeesCharts(Protocol):
    """A strategy that may be shown chart images (a vision agent), while `wants_images` holds."""

    wants_images: bool


class ChartSource(Protocol):
    """Chart images of a market snapshot, for vision agents' prompts."""

    def charts(
        self, snapshot: MarketSnapshot, positions: Mapping[str, Position]
    ) -> tuple[ImagePart, ...]:
        """Return the images for an agent holding `positions`, drawn only from candles closed
        by `snapshot.at` (named now, drawn when first needed, each the same for every agent
        with the same positions)."""
        ...


@runtime_checkable
class ReportsAttempts(Protocol):
    """A strategy that can list the requests a `decide` made, even one that was cancelled."""

    def attempts_made(self, request: DecisionRequest) -> tuple[CallAttempt, ...]:
        """Return the requests made so far for `request` (empty when it is not the latest)."""
        ...


DecisionRecordKind = Literal["executed", "rejected", "held"]


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """What became of one decision: executed (with the filled quantity), rejected, or held.

    `decision` is None for an entry of the answer that could not be read; `coin` and `signal` then
    say what the model wrote, and `reason` why it was refused.
    """

    decision: TradeDecision | None
    outcome: DecisionRecordKind
    reason: str | None = None
    filled_quantity: float | None = None
    coin: str = ""
    signal: str = ""


@dataclass(frozen=True, slots=True)
class AgentCycleRecord:
    """Everything one agent-cycle produced; the store writes it in one transaction."""

    agent: str
    scheduled_at: datetime
    started_at: datetime
    finished_at: datetime
    invocation: int
    # ok: decided (and filled); failed: asked, with no usable outcome; skipped: not asked (no
    # market data, stale or contradictory data, exits unchecked...). `error` says why for the
    # last two.
    status: Literal["ok", "failed", "skipped"]
    books: AccountState
    # The account valued at the cycle's prices; None when there were none to value it at (the
    # store then writes no account snapshot for it).
    view: AccountView | None
    error: str | None = None
    prompt_version: str | None = None
    messages: tuple[ChatMessage, ...] = ()
    answer: StrategyAnswer | None = None
    decisions: tuple[DecisionRecord, ...] = ()
    fills: tuple[Fill, ...] = ()
    closed_trades: tuple[ClosedTrade, ...] = ()
    funding: tuple[FundingPayment, ...] = ()
    # Long texts this prompt shares with others (system prompt, the cycle's market section):
    # the store keeps each once and refers to it.
    shared_texts: tuple[str, ...] = ()
    # `prompt_hash(messages)`, taken when the call was made (its cache key had just hashed the
    # prompt): a backtest writes the record hundreds of cycles later. None: the store hashes.
    prompt_hash: str | None = None


@dataclass(frozen=True, slots=True)
class AccountEventsRecord:
    """Exits and funding the monitor applied between cycles; written in one transaction."""

    agent: str
    at: datetime
    books: AccountState
    view: AccountView
    fills: tuple[Fill, ...] = ()
    closed_trades: tuple[ClosedTrade, ...] = ()
    funding: tuple[FundingPayment, ...] = ()


class CycleStore(Protocol):
    """Where the engine's recorder writes agent-cycles and monitor events (the database)."""

    def cycle_done(self, agent: str, scheduled_at: datetime) -> bool:
        """Return True when this agent's cycle at `scheduled_at` is already recorded."""
        ...

    def done_cycles(self) -> Iterable[tuple[str, datetime]]:
        """Return every recorded (agent, scheduled time) of the store's agents."""
        ...

    def record_cycle(self, record: AgentCycleRecord) -> bool:
        """Write one agent-cycle atomically; return False if it was already recorded."""
        ...

    def record_cycles(self, records: Sequence[AgentCycleRecord | AccountEventsRecord]) -> int:
        """Write agent-cycles and monitor events in their order, each whole or not at all.

        Return how many agent-cycles were new.
        """
        ...

    def record_events(self, record: AccountEventsRecord) -> None:
        """Write the monitor's exits and funding atomically."""
        ...
