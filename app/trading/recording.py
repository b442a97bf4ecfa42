"""How the engine hands its records to the store: each agent-cycle at once, or in batches.

The engine moves an agent's account forward only once the recorder has accepted the record that
says so, whichever policy it is given:

- `ImmediateRecorder` (the daemon): every agent-cycle and every batch of monitor events is
  written in its own transaction before `accept` returns; `accept` is False when another writer
  recorded that agent-cycle first, and the account then stays as it was.
- `BatchRecorder` (backtests): the run is new and has one writer, so a record is accepted once it
  is known not to be a duplicate and is queued, in the order things happened; the queue is
  written in large transactions (each record still whole). A batch the store refuses in part
  means another writer reached the run: that is an `InvariantError`, never a quiet skip.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Protocol

from app.errors import InvariantError
from app.ports import AccountEventsRecord, AgentCycleRecord, CycleStore

# Agent-cycles and monitor events a batch writes per transaction.
DEFAULT_BATCH_RECORDS: Final = 600


class Recorder(Protocol):
    """The engine's recording policy (see the module docstring)."""

    def cycle_done(self, agent: str, scheduled_at: datetime) -> bool:
        """Return True when this agent-cycle is already recorded (or accepted)."""
        ...

    def accept(self, record: AgentCycleRecord) -> bool:
        """Take an agent-cycle; False when that agent-cycle was already recorded."""
        ...

    def accept_events(self, record: AccountEventsRecord) -> None:
        """Take the monitor's exits and funding for one agent."""
        ...

    def flush(self) -> None:
        """Write whatever is still held back."""
        ...


class ImmediateRecorder:
    """Write each record in its own transaction before accepting it."""

    def __init__(self, store: CycleStore) -> None:
        self.store = store

    def cycle_done(self, agent: str, scheduled_at: datetime) -> bool:
        """Ask the store."""
        return self.store.cycle_done(agent, scheduled_at)

    def accept(self, record: AgentCycleRecord) -> bool:
        """Write the agent-cycle now; False when another writer recorded it first."""
        return self.store.record_cycle(record)

    def accept_events(self, record: AccountEventsRecord) -> None:
        """Write the monitor events now."""
        self.store.record_events(record)

    def flush(self) -> None:
        """Nothing is held back."""


class BatchRecorder:
    """Queue records in order and write them `batch_records` at a time (one writer per run)."""

    def __init__(self, store: CycleStore, *, batch_records: int = DEFAULT_BATCH_RECORDS) -> None:
        if batch_records < 1:
            raise ValueError("batch_records must be at least 1")
        self.store = store
        self.batch_records = batch_records
        self._done: set[tuple[str, datetime]] = set(store.done_cycles())
        self._pending: list[AgentCycleRecord | AccountEventsRecord] = []

    def cycle_done(self, agent: str, scheduled_at: datetime) -> bool:
        """Answer from memory: what the run held at start plus what was accepted since."""
        return (agent, scheduled_at) in self._done

    def accept(self, record: AgentCycleRecord) -> bool:
        """Queue the agent-cycle unless it is already recorded or queued."""
        key = (record.agent, record.scheduled_at)
        if key in self._done:
            return False
        self._done.add(key)
        self._hold(record)
        return True

    def accept_events(self, record: AccountEventsRecord) -> None:
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
