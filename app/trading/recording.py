"""How the engine hands its records to the store: each agent-cycle at once, or in batches.

The engine moves an agent's account forward only once the recorder has accepted the record that
says so, whichever policy it is given:

- `ImmediateRecorder` (the daemon): every agent-cycle and every batch of monitor events is
  written in its own transaction before `accept` returns, off the event loop, tried again when
  the database refuses it; `accept` is False when another writer recorded that agent-cycle
  first, and the engine then reloads the agent from the database.
- `BatchRecorder` (backtests): the run is new and has one writer, so a record is accepted once it
  is known not to be a duplicate and is queued, in the order things happened; the queue is
  written in large transactions (each record still whole). A batch the store refuses in part
  means another writer reached the run: that is an `InvariantError`, never a quiet skip.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Final, Protocol, TypeVar

from app.errors import DatabaseError, InvariantError
from app.ports import AccountEventsRecord, AgentCycleRecord, CycleStore

log = logging.getLogger(__name__)
T = TypeVar("T")

# Agent-cycles and monitor events a batch writes per transaction.
DEFAULT_BATCH_RECORDS: Final = 600


# Runs a piece of database work somewhere off the event loop and awaits its result.
Run = Callable[[Callable[[], T]], Awaitable[T]]


async def run_inline(work: Callable[[], T]) -> T:
    """Run `work` on the caller's thread (tests and tools without an event loop to protect)."""
    return work()


async def _no_wait(_seconds: float) -> None:
    return None


class Recorder(Protocol):
    """The engine's recording policy (see the module docstring)."""

    async def cycle_done(self, agent: str, scheduled_at: datetime) -> bool:
        """Return True when this agent-cycle is already recorded (or accepted)."""
        ...

    async def accept(self, record: AgentCycleRecord) -> bool:
        """Take an agent-cycle; False when that agent-cycle was already recorded."""
        ...

    async def accept_events(self, record: AccountEventsRecord) -> None:
        """Take the monitor's exits and funding for one agent."""
        ...

    def flush(self) -> None:
        """Write whatever is still held back."""
        ...


class ImmediateRecorder:
    """Write each record in its own transaction before accepting it.

    `write` runs the store's writes (the daemon: on one writer thread, so a slow or locked
    database delays the records and never the event loop, where the models' calls and their
    deadlines live); `read` runs its reads (any thread: SQLite in WAL mode reads while another
    connection writes). A write that fails with a `DatabaseError` is tried `attempts` times,
    `retry_delay_s` apart (doubling), then the error reaches the engine, which records the
    agent-cycle as failed when it can.
    """

    def __init__(
        self,
        store: CycleStore,
        *,
        write: Run[Any] = run_inline,
        read: Run[Any] = run_inline,
        attempts: int = 3,
        retry_delay_s: float = 1.0,
        sleep: Callable[[float], Awaitable[None]] = _no_wait,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.store = store
        self._write = write
        self._read = read
        self.attempts = attempts
        self.retry_delay_s = retry_delay_s
        self._sleep = sleep

    async def cycle_done(self, agent: str, scheduled_at: datetime) -> bool:
        """Ask the store."""
        done: bool = await self._read(lambda: self.store.cycle_done(agent, scheduled_at))
        return done

    async def accept(self, record: AgentCycleRecord) -> bool:
        """Write the agent-cycle now; False when another writer recorded it first."""
        accepted: bool = await self._retried(
            f"agent {record.agent}: cycle {record.scheduled_at.isoformat()}",
            lambda: self.store.record_cycle(record),
        )
        return accepted

    async def accept_events(self, record: AccountEventsRecord) -> None:
        """Write the monitor events now."""
        await self._retried(
            f"agent {record.agent}: exits up to {record.at.isoformat()}",
            lambda: self.store.record_events(record),
        )

    def flush(self) -> None:
        """Nothing is held back."""

    async def _retried(self, what: str, work: Callable[[], T]) -> T:
        delay_s = self.retry_delay_s
        for attempt in range(1, self.attempts + 1):
            try:
                result: T = await self._write(work)
                return result
            except DatabaseError as error:
                if attempt == self.attempts:
                    raise
                log.warning(
                    "%s could not be written (%s); attempt %d of %d in %g s",
                    what,
                    error,
                    attempt + 1,
                    self.attempts,
                    delay_s,
                )
                await self._sleep(delay_s)
                delay_s *= 2
        raise AssertionError("unreachable")  # pragma: no cover


class BatchRecorder:
    """Queue records in order and write them `batch_records` at a time (one writer per run)."""

    def __init__(self, store: CycleStore, *, batch_records: int = DEFAULT_BATCH_RECORDS) -> None:
        if batch_records < 1:
            raise ValueError("batch_records must be at least 1")
        self.store = store
        self.batch_records = batch_records
        self._done: set[tuple[str, datetime]] = set(store.done_cycles())
        self._pending: list[AgentCycleRecord | AccountEventsRecord] = []

    async def cycle_done(self, agent: str, scheduled_at: datetime) -> bool:
        """Answer from memory: what the run held at start plus what was accepted since."""
        return (agent, scheduled_at) in self._done

    async def accept(self, record: AgentCycleRecord) -> bool:
        """Queue the agent-cycle unless it is already recorded or queued."""
        key = (record.agent, record.scheduled_at)
        if key in self._done:
            return False
        self._done.add(key)
        self._hold(record)
        return True

    async def accept_events(self, record: AccountEventsRecord) -> None:
        """Queue the monitor events in their place among the cycles."""
        self._hold(record)

    def flush(self) -> None:
        """Write the queue; raise `InvariantError` when the store did not take every cycle."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        expected = sum(1 for record in pending if isinstance(record, AgentCycleRecord))
        written = self.store.record_cycles(pending)
        if written != expected:
            raise InvariantError(
                f"{expected - written} of {expected} agent-cycles in a batch were already "
                "recorded by another writer; a backtest's run must have one writer"
            )

    def _hold(self, record: AgentCycleRecord | AccountEventsRecord) -> None:
        self._pending.append(record)
        if len(self._pending) >= self.batch_records:
            self.flush()
