"""Ports: what the core needs from the outside world, as Protocols.

Adapters in `app/market`, `app/llm` and `app/db` implement them; `app/wiring.py` picks which.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

import pandas as pd

from app.domain import MarketRules, MarketSnapshot

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a chat prompt."""

    role: Role
    content: str


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

    async def funding_rates(self, coin: str, start: datetime, end: datetime) -> pd.Series:
        """Return the funding rates settled in (`start`, `end`], indexed by settlement time."""
        ...

    async def market_rules(self) -> Mapping[str, MarketRules]:
        """Return precision and minimums per coin, for the risk checks."""
        ...

    async def close(self) -> None:
        """Release network resources."""
        ...


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Token counts of one call, as the provider reported them (0 where it did not)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ChatOptions:
    """Per-call options; the provider's traits decide which of them are actually sent."""

    temperature: float | None = None
    max_tokens: int | None = None
    json_mode: bool = False
    stream: bool | None = None
    timeout_s: float | None = None


@dataclass(frozen=True, slots=True)
class ChatResult:
    """What a model answered and what it cost."""

    text: str
    provider: str
    model: str
    reasoning: str = ""
    finish_reason: str | None = None
    usage: TokenUsage = field(default_factory=TokenUsage)
    latency_s: float = 0.0
    rate_limit_headers: Mapping[str, str] = field(default_factory=dict)
    cache_hit: bool = False


@runtime_checkable
class ChatModel(Protocol):
    """A chat-completion model behind some provider."""

    async def complete(
        self, messages: Sequence[ChatMessage], options: ChatOptions | None = None
    ) -> ChatResult:
        """Ask the model and return its answer; raise `app.errors` types on failure."""
        ...
