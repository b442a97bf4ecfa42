"""The seeded fault schedule shared by the exchange proxy and the faulty model server.

Each request is given a fault kind (or none) from a random stream seeded by `seed`, the kind of
request and its position in the stream: the same seed gives the same sequence of faults, whatever
the machine. Candle faults are decided per candle instead: the klines request's `endTime` names
the newest candle a cycle wants, so every request for the same candle gets the same fault, and the
cycles that asked for it are known (`FaultLog.bad_candle_ends_ms`).

Every fault served is appended to a `FaultLog` (thread-safe), which the harness writes to JSON
for the invariant checker: what was injected, when, and to whom.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

# A request-level exchange fault: the whole answer is wrong, ccxt raises.
EXCHANGE_FAULTS: Final = ("down", "slow", "malformed", "html", "http_5xx", "truncated")
# A data fault: the answer parses, the candles in it are bad.
CANDLE_FAULTS: Final = ("empty", "stale", "frozen", "wick", "zero")
# Candle faults after which a cycle must not decide (its newest candle is missing, old or absurd).
BAD_DATA_FAULTS: Final = frozenset(CANDLE_FAULTS)
LLM_FAULTS: Final = (
    "rate_minute",
    "rate_daily",
    "unauthorized",
    "server_error",
    "timeout",
    "truncated",
    "html_200",
    "bad_utf8",
    "bad_json",
    "bad_schema",
    "huge",
    "slow_stream",
)


@dataclass(frozen=True)
class FaultPlan:
    """How often each family of fault happens; `seed` fixes which requests get which."""

    seed: int = 17
    exchange_rate: float = 0.12
    candle_rate: float = 0.5
    llm_rate: float = 0.5
    # Lives (0 is the first start) whose candles are all served bad: candle faults then come up
    # whatever minutes the wall clock gives a short run.
    bad_candle_lives: tuple[int, ...] = ()
    # Rarer kinds: an agent stopped by a 401 sits out the rest of its daemon's life, and a
    # daily-quota 429 may bench a model until 00:00 UTC; a huge answer costs megabytes.
    llm_weights: dict[str, float] = field(
        default_factory=lambda: {"unauthorized": 0.3, "rate_daily": 0.3, "huge": 0.5}
    )

    def _pick(self, stream: str, number: int, rate: float, kinds: tuple[str, ...]) -> str | None:
        rng = random.Random(f"{self.seed}:{stream}:{number}")
        if rng.random() >= rate:
            return None
        weights = [self.llm_weights.get(kind, 1.0) for kind in kinds]
        return rng.choices(kinds, weights=weights)[0]

    def exchange_fault(self, number: int) -> str | None:
        """Return the fault for the exchange's `number`th request (None: answer it)."""
        return self._pick("exchange", number, self.exchange_rate, EXCHANGE_FAULTS)

    def candle_bad(self, newest_close_ms: int, life: int) -> bool:
        """Return whether the candles closing at `newest_close_ms` are served bad in `life`.

        Keyed by the daemon's life too, so a short run with many restarts sees many bad candles.
        """
        if life in self.bad_candle_lives:
            return True
        rng = random.Random(f"{self.seed}:candles:{life}:{newest_close_ms}")
        return rng.random() < self.candle_rate

    def candle_kind(self, turn: int) -> str:
        """Return the kind of the `turn`th bad candle: the kinds take turns, so every one comes
        up within five bad candles."""
        return CANDLE_FAULTS[(turn + self.seed) % len(CANDLE_FAULTS)]

    def llm_fault(self, number: int) -> str | None:
        """Return the fault for the model server's `number`th request (None: answer it)."""
        return self._pick("llm", number, self.llm_rate, LLM_FAULTS)


@dataclass
class FaultLog:
    """What was injected: one event per faulty answer served (thread-safe)."""

    events: list[dict[str, Any]] = field(default_factory=list)
    llm_requests: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, source: str, kind: str, **detail: Any) -> None:
        with self._lock:
            self.events.append({"source": source, "kind": kind, "at": time.time(), **detail})

    def llm_request(self, **detail: Any) -> None:
        """Note a request the model server received (faulty or not)."""
        with self._lock:
            self.llm_requests.append({"at": time.time(), **detail})

    def counts(self) -> dict[str, int]:
        """Return the faults served per `source:kind`."""
        out: dict[str, int] = {}
        with self._lock:
            for event in self.events:
                key = f"{event['source']}:{event['kind']}"
                out[key] = out.get(key, 0) + 1
        return dict(sorted(out.items()))

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {"events": list(self.events), "llm_requests": list(self.llm_requests)}

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json()))
