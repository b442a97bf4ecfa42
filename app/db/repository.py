"""The arena's records in SQLite: agent-cycles written atomically, accounts restored exactly.

`SqlCycleStore` implements the `CycleStore` port for one run (the live arena or one backtest).
Writes use SQLAlchemy Core inserts inside one transaction per agent-cycle: a crash or a kill
leaves either the whole agent-cycle or none of it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from app.charts.png import compact_png
from app.db import models
from app.db.base import UTCDateTime
from app.db.bulk_insert import BulkInsert, Row
from app.db.llm_rows import LLM_CALL_DEFAULTS, StoredPart, llm_call_values
from app.domain import (
    AccountState,
    AccountView,
    ExitPlan,
    ImagePart,
    Position,
)
from app.errors import AppError, InvariantError
from app.ports import AccountEventsRecord, AgentCycleRecord, DecisionRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    """What the store needs to know about an agent to register it."""

    name: str
    provider: str
    model: str
    fallback_models: tuple[str, ...] = ()
    starting_cash_usd: float = 10_000.0


@dataclass(frozen=True, slots=True)
class RestoredAgent:
    """An agent's state as the database holds it."""

    agent_id: int
    books: AccountState
    invocations: int
    first_cycle_at: datetime | None
    last_cycle_at: datetime | None
    last_snapshot_at: datetime | None


def position_from_row(row: Any) -> Position:
    """Build a domain position from a `position` row."""
    return Position(
        coin=row.coin,
        side=row.side,
        quantity=row.quantity,
        entry_price=row.entry_price,
        leverage=row.leverage,
        margin_usd=row.margin_usd,
        liquidation_price=row.liquidation_price,
        opened_at=row.opened_at,
        exit_plan=ExitPlan(
            profit_target=row.profit_target,
            stop_loss=row.stop_loss,
            invalidation_condition=row.invalidation_condition or "",
        ),
        confidence=row.confidence,
        risk_usd=row.risk_usd,
        justification=row.justification or "",
        entry_fee_usd=row.entry_fee_usd,
        funding_usd=row.funding_usd,
    )


def _position_values(agent_id: int, position: Position) -> dict[str, Any]:
    return {
        "agent_id": agent_id,
        "coin": position.coin,
        "side": position.side,
        "quantity": position.quantity,
        "entry_price": position.entry_price,
        "leverage": position.leverage,
        "margin_usd": position.margin_usd,
        "liquidation_price": position.liquidation_price,
        "profit_target": position.exit_plan.profit_target,
        "stop_loss": position.exit_plan.stop_loss,
        "invalidation_condition": position.exit_plan.invalidation_condition,
        "confidence": position.confidence,
        "risk_usd": position.risk_usd,
        "justification": position.justification,
        "entry_fee_usd": position.entry_fee_usd,
        "funding_usd": position.funding_usd,
        "opened_at": position.opened_at,
        "status": "open",
    }


_CLOSE_POSITION = (
    update(models.Position)
    .where(models.Position.id == bindparam("b_id"))
    .values(
        status="closed",
        closed_at=bindparam("b_closed_at", type_=UTCDateTime()),
        exit_price=bindparam("b_exit_price"),
        exit_fee_usd=bindparam("b_exit_fee_usd"),
        exit_reason=bindparam("b_exit_reason"),
        gross_pnl_usd=bindparam("b_gross_pnl_usd"),
        net_pnl_usd=bindparam("b_net_pnl_usd"),
        funding_usd=bindparam("b_funding_usd"),
    )
)
_POSITION_FUNDING = (
    update(models.Position)
    .where(models.Position.id == bindparam("b_id"))
    .values(funding_usd=bindparam("b_funding_usd"))
)

# The recorder's inserts, each compiled once per dialect (see `BulkInsert`); rows are tuples in
# these columns' order, built by the `_..._values` functions below.
_CYCLE_COLUMNS: Final = (
    "agent_id",
    "scheduled_at",
    "invocation",
    "started_at",
    "finished_at",
    "status",
    "error",
    "prompt_version",
)
_INSERT_CYCLE: Final = BulkInsert(models.Cycle, _CYCLE_COLUMNS)
_INSERT_LLM_CALL: Final = BulkInsert(
    models.LlmCall, [c.name for c in models.LlmCall.__table__.columns if c.name != "id"]
)
_INSERT_POSITION: Final = BulkInsert(
    models.Position,
    [
        "agent_id",
        "coin",
        "side",
        "quantity",
        "entry_price",
        "leverage",
        "margin_usd",
        "liquidation_price",
        "profit_target",
        "stop_loss",
        "invalidation_condition",
        "confidence",
        "risk_usd",
        "justification",
        "entry_fee_usd",
        "funding_usd",
        "opened_at",
        "status",
    ],
)
_INSERT_FILL: Final = BulkInsert(
    models.Fill,
    [
        "agent_id",
        "cycle_id",
        "position_id",
        "coin",
        "side",
        "quantity",
        "price",
        "reference_price",
        "fee_usd",
        "reason",
        "realized_pnl_usd",
        "filled_at",
    ],
)
_INSERT_FUNDING: Final = BulkInsert(
    models.FundingPayment,
    [
        "agent_id",
        "position_id",
        "coin",
        "rate",
        "mark_price",
        "quantity",
        "amount_usd",
        "settled_at",
    ],
)
_INSERT_DECISION: Final = BulkInsert(
    models.Decision,
    [
        "cycle_id",
        "coin",
        "signal",
        "quantity",
        "leverage",
        "profit_target",
        "stop_loss",
        "invalidation_condition",
        "confidence",
        "risk_usd",
        "justification",
        "outcome",
        "reason",
        "filled_quantity",
    ],
)
_INSERT_SNAPSHOT: Final = BulkInsert(
    models.AccountSnapshot,
    [
        "agent_id",
        "cycle_id",
        "at",
        "cash_usd",
        "margin_usd",
        "unrealized_pnl_usd",
        "equity_usd",
        "realized_pnl_usd",
        "fees_paid_usd",
        "funding_paid_usd",
        "open_positions",
    ],
)


@dataclass
class _PositionChanges:
    """Open-position rows created and closed by writes not yet committed."""

    opened: dict[tuple[int, str], int] = field(default_factory=dict)
    closed: set[tuple[int, str]] = field(default_factory=set)
    new_parts: set[str] = field(default_factory=set)
    # Chart images written (spec key -> sha256 of the PNG).
    new_images: dict[str, str] = field(default_factory=dict)

    def copy(self) -> _PositionChanges:
        return _PositionChanges(
            dict(self.opened), set(self.closed), set(self.new_parts), dict(self.new_images)
        )

    def apply(self, index: dict[tuple[int, str], int]) -> None:
        for key in self.closed:
            index.pop(key, None)
        index.update(self.opened)


class SqlCycleStore:
    """Records of one run in SQLite; the `CycleStore` port for the engine."""

    def __init__(self, engine: Engine, *, run_id: str = models.LIVE_RUN_ID) -> None:
        self.engine = engine
        self.run_id = run_id
        self.agent_ids: dict[str, int] = {}
        # Each agent's (provider, first model): what a call row names when no request was made.
        self.agent_models: dict[str, tuple[str, str]] = {}
        # Open position row per (agent id, coin): the store is the only writer of its run.
        self._open_positions: dict[tuple[int, str], int] = {}
        # Shared prompt texts already in `prompt_part` (so each is written once).
        self._known_parts: set[str] = set()
        # Chart images already in `chart_image`: spec key -> sha256 of the PNG.
        self._known_images: dict[str, str] = {}

    # -- agents and restore -------------------------------------------------------------------

    def register_agents(self, agents: Sequence[AgentIdentity], *, at: datetime) -> dict[str, int]:
        """Create missing agents of this run (keeping existing ones' accounts); return their ids."""
        with self.engine.begin() as connection:
            for agent in agents:
                self.agent_models[agent.name] = (agent.provider, agent.model)
                existing = connection.execute(
                    select(models.Agent.id, models.Agent.provider, models.Agent.model).where(
                        models.Agent.run_id == self.run_id, models.Agent.name == agent.name
                    )
                ).first()
                if existing is None:
                    agent_id = connection.execute(
                        insert(models.Agent).values(
                            run_id=self.run_id,
                            name=agent.name,
                            provider=agent.provider,
                            model=agent.model,
                            fallback_models=list(agent.fallback_models),
                            starting_cash_usd=agent.starting_cash_usd,
                            created_at=at,
                        )
                    ).inserted_primary_key
                    assert agent_id is not None
                    self.agent_ids[agent.name] = int(agent_id[0])
                    continue
                self.agent_ids[agent.name] = existing.id
                if (existing.provider, existing.model) != (agent.provider, agent.model):
                    log.info(
                        "agent %s now uses %s:%s (was %s:%s); its account carries on",
                        agent.name,
                        agent.provider,
                        agent.model,
                        existing.provider,
                        existing.model,
                    )
                    connection.execute(
                        update(models.Agent)
                        .where(models.Agent.id == existing.id)
                        .values(
                            provider=agent.provider,
                            model=agent.model,
                            fallback_models=list(agent.fallback_models),
                        )
                    )
            self._load_open_positions(connection)
        return dict(self.agent_ids)

    def reload_open_positions(self) -> None:
        """Read the open position rows again (another writer may have opened or closed some)."""
        with self.engine.connect() as connection:
            self._load_open_positions(connection)

    def _load_open_positions(self, connection: Connection) -> None:
        ids = list(self.agent_ids.values())
        rows = connection.execute(
            select(models.Position.id, models.Position.agent_id, models.Position.coin).where(
                models.Position.agent_id.in_(ids), models.Position.status == "open"
            )
        )
        self._open_positions = {(row.agent_id, row.coin): row.id for row in rows}

    def restore(self, agent: str) -> RestoredAgent:
        """Return the agent's books as last recorded (its starting cash when nothing was)."""
        agent_id = self.agent_ids[agent]
        with self.engine.connect() as connection:
            starting_cash = connection.execute(
                select(models.Agent.starting_cash_usd).where(models.Agent.id == agent_id)
            ).scalar_one()
            snapshot = connection.execute(
                select(models.AccountSnapshot)
                .where(models.AccountSnapshot.agent_id == agent_id)
                .order_by(models.AccountSnapshot.id.desc())
                .limit(1)
            ).first()
            positions = {
                row.coin: position_from_row(row)
                for row in connection.execute(
                    select(models.Position).where(
                        models.Position.agent_id == agent_id, models.Position.status == "open"
                    )
                )
            }
            stats = connection.execute(
                select(
                    func.max(models.Cycle.invocation),
                    func.min(models.Cycle.scheduled_at),
                    func.max(models.Cycle.scheduled_at),
                ).where(models.Cycle.agent_id == agent_id)
            ).one()
            # Snapshots are written in order of events, not of their times: a slow cycle's
            # snapshot (at its scheduled time) may follow the monitor's later one.
            checked_until = connection.execute(
                select(func.max(models.AccountSnapshot.at)).where(
                    models.AccountSnapshot.agent_id == agent_id
                )
            ).scalar_one_or_none()
        if snapshot is None:
            books = AccountState(
                starting_cash_usd=starting_cash,
                cash_usd=starting_cash,
                realized_pnl_usd=0.0,
                fees_paid_usd=0.0,
                funding_paid_usd=0.0,
                positions=positions,
            )
        else:
            books = AccountState(
                starting_cash_usd=starting_cash,
                cash_usd=snapshot.cash_usd,
                realized_pnl_usd=snapshot.realized_pnl_usd,
                fees_paid_usd=snapshot.fees_paid_usd,
                funding_paid_usd=snapshot.funding_paid_usd,
                positions=positions,
            )
        first_at: datetime | None = stats[1]
        last_at: datetime | None = stats[2]
        return RestoredAgent(
            agent_id=agent_id,
            books=books,
            invocations=int(stats[0] or 0),
            first_cycle_at=first_at,
            last_cycle_at=last_at,
            last_snapshot_at=checked_until,
        )

    def recent_entries(self, agent: str, since: datetime) -> list[datetime]:
        """Return the times of the agent's entries at or after `since`."""
        agent_id = self.agent_ids[agent]
        with self.engine.connect() as connection:
            return list(
                connection.scalars(
                    select(models.Fill.filled_at).where(
                        models.Fill.agent_id == agent_id,
                        models.Fill.reason == "entry",
                        models.Fill.filled_at >= since,
                    )
                )
            )

    # -- the CycleStore port -----------------------------------------------------------------

    def cycle_done(self, agent: str, scheduled_at: datetime) -> bool:
        """Return True when this agent-cycle is already recorded."""
        agent_id = self.agent_ids[agent]
        with self.engine.connect() as connection:
            found = connection.execute(
                select(models.Cycle.id).where(
                    models.Cycle.agent_id == agent_id, models.Cycle.scheduled_at == scheduled_at
                )
            ).first()
        return found is not None

    def done_cycles(self) -> list[tuple[str, datetime]]:
        """Return every recorded (agent, scheduled time) of the registered agents."""
        names = {agent_id: name for name, agent_id in self.agent_ids.items()}
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(models.Cycle.agent_id, models.Cycle.scheduled_at).where(
                    models.Cycle.agent_id.in_(list(names))
                )
            )
            return [(names[row.agent_id], row.scheduled_at) for row in rows]

    def record_cycle(self, record: AgentCycleRecord) -> bool:
        """Write one agent-cycle in one transaction; False when it was already recorded."""
        return self.record_cycles([record]) == 1

    def record_cycles(self, records: Sequence[AgentCycleRecord | AccountEventsRecord]) -> int:
        """Write agent-cycles and monitor events in their order; return how many cycles were new.

        They share one transaction, written table by table (a backtest batches many this way),
        and each record stays whole. When a cycle is already recorded, the records are written
        one by one instead, each in a savepoint, so the duplicate is skipped and the others
        still land.
        """
        records = list(records)
        if not records:
            return 0
        changes = _PositionChanges()
        written: list[AgentCycleRecord] = []
        with self.engine.begin() as connection:
            savepoint = connection.begin_nested()
            try:
                self._write_records(connection, records, changes)
                savepoint.commit()
                written = [r for r in records if isinstance(r, AgentCycleRecord)]
            except IntegrityError:
                savepoint.rollback()
                changes = _PositionChanges()
                for record in records:
                    # Each record sees the positions the records before it opened or closed.
                    pending = changes.copy()
                    one = connection.begin_nested()
                    try:
                        self._write_records(connection, [record], pending)
                    except IntegrityError as error:
                        one.rollback()
                        if isinstance(record, AccountEventsRecord) or not self.cycle_done(
                            record.agent, record.scheduled_at
                        ):
                            # Not a duplicate cycle: a real constraint broke. Never drop it quietly.
                            raise InvariantError(
                                f"agent {record.agent}: the records of "
                                f"{_record_time(record).isoformat()} could not be written: {error}"
                            ) from error
                        log.info(
                            "agent %s: cycle %s already recorded; not trading it twice",
                            record.agent,
                            record.scheduled_at.isoformat(),
                        )
                        continue
                    one.commit()
                    changes = pending
                    if isinstance(record, AgentCycleRecord):
                        written.append(record)
        # The in-memory index follows the database only once the transaction has committed.
        changes.apply(self._open_positions)
        self._known_parts |= changes.new_parts
        self._known_images.update(changes.new_images)
        return len(written)

    def record_events(self, record: AccountEventsRecord) -> None:
        """Write exits and funding applied between cycles, in one transaction."""
        changes = _PositionChanges()
        with self.engine.begin() as connection:
            self._write_records(connection, [record], changes)
        changes.apply(self._open_positions)

    # -- writing ------------------------------------------------------------------------------

    def _write_records(
        self,
        connection: Connection,
        records: Sequence[AgentCycleRecord | AccountEventsRecord],
        changes: _PositionChanges,
    ) -> None:
        """Write records table by table, one statement per table, rows in the records' order.

        Ids follow the records' order in every table (the latest snapshot id is the current
        account); positions are resolved in that order too, so an exit finds the position an
        earlier record opened (see `_write_trading`).
        """
        cycles = [record for record in records if isinstance(record, AgentCycleRecord)]
        cycle_ids: list[int] = []
        if cycles:
            cycle_ids = _insert_ids(
                connection,
                _INSERT_CYCLE,
                models.Cycle,
                [
                    {
                        "agent_id": self.agent_ids[record.agent],
                        "scheduled_at": record.scheduled_at,
                        "invocation": record.invocation,
                        "started_at": record.started_at,
                        "finished_at": record.finished_at,
                        "status": record.status,
                        "error": record.error,
                        "prompt_version": record.prompt_version,
                    }
                    for record in cycles
                ],
            )
        calls: list[dict[str, Any]] = []
        # Per call row (by index in `calls`): the images its prompt carried.
        call_images: dict[int, tuple[ImagePart, ...]] = {}
        decisions: list[Row] = []
        snapshots: list[Row] = []
        trading: list[_Trading] = []
        parts: dict[str, StoredPart] = {}
        next_cycle_id = iter(cycle_ids)  # returned in the order the cycles were given
        for record in records:
            agent_id = self.agent_ids[record.agent]
            cycle_id: int | None = None
            if isinstance(record, AgentCycleRecord):
                cycle_id = next(next_cycle_id)
                rows = _llm_call_rows(
                    agent_id, cycle_id, record, parts, self.agent_models.get(record.agent)
                )
                images = tuple(image for m in record.messages for image in m.images)
                if images:
                    call_images.update(
                        (len(calls) + i, images)
                        for i, row in enumerate(rows)
                        if row["messages_z"] is not None
                    )
                calls.extend(rows)
                decisions.extend(_decision_values(cycle_id, item) for item in record.decisions)
                at = record.scheduled_at
            else:
                at = record.at
            if record.fills or record.closed_trades or record.funding:
                trading.append(_Trading(agent_id, cycle_id, record))
            if record.view is not None:
                # A cycle skipped without prices leaves no snapshot: the latest one still holds
                # the account, and its time is how far exits were checked.
                snapshots.append(_snapshot_values(agent_id, cycle_id, at, record.view, record))
        if trading:
            self._write_trading(connection, trading, changes)
        if cycles:
            self._write_parts(connection, parts, changes, at=cycles[-1].finished_at)
        self._write_calls(connection, cycles, calls, call_images, changes)
        _INSERT_DECISION.execute(connection, decisions)
        _INSERT_SNAPSHOT.execute(connection, snapshots)

    def _write_calls(
        self,
        connection: Connection,
        cycles: Sequence[AgentCycleRecord],
        calls: list[dict[str, Any]],
        call_images: dict[int, tuple[ImagePart, ...]],
        changes: _PositionChanges,
    ) -> None:
        """Write the cycles' `llm_call` rows (and which images each sent) in place of any
        `pending` rows written for them."""
        # The rows written (`pending`) before their requests were sent give way to the finished
        # rows, in the same transaction: a request is never counted twice, nor lost.
        pending_ids = [
            attempt.pending_id
            for record in cycles
            if record.answer is not None
            for attempt in record.answer.attempts
            if attempt.pending_id is not None
        ]
        if pending_ids:
            connection.execute(delete(models.LlmCall).where(models.LlmCall.id.in_(pending_ids)))
        if calls and call_images:
            call_ids = _insert_ids(connection, _INSERT_LLM_CALL, models.LlmCall, calls)
            self._write_images(
                connection, call_ids, call_images, changes, at=cycles[-1].finished_at
            )
        elif calls:
            _INSERT_LLM_CALL.execute(connection, _INSERT_LLM_CALL.tuples(calls))

    def _write_parts(
        self,
        connection: Connection,
        parts: dict[str, StoredPart],
        changes: _PositionChanges,
        *,
        at: datetime,
    ) -> None:
        new = {
            key: part
            for key, part in parts.items()
            if key not in self._known_parts and key not in changes.new_parts
        }
        if not new:
            return
        statement = _dialect_insert(connection)(models.PromptPart).on_conflict_do_nothing(
            index_elements=["hash"]
        )
        connection.execute(
            statement,
            [
                {
                    "hash": key,
                    "encoding": part.encoding,
                    "text_z": part.stored_blob(),
                    "created_at": at,
                }
                for key, part in new.items()
            ],
        )
        # Known once the transaction commits; until then a rollback may still drop them.
        changes.new_parts.update(new)

    def _write_images(
        self,
        connection: Connection,
        call_ids: Sequence[int],
        call_images: dict[int, tuple[ImagePart, ...]],
        changes: _PositionChanges,
        *,
        at: datetime,
    ) -> None:
        """Keep each chart image once and link it to the calls that sent it.

        An image is named by its spec key: one this store (or an earlier run in the same
        database) already wrote is linked without drawing it again.
        """
        known = {**self._known_images, **changes.new_images}
        wanted = {image.key: image for images in call_images.values() for image in images}
        unknown = [key for key in wanted if key not in known]
        if unknown:
            found = connection.execute(
                select(models.ChartImage.spec_key, models.ChartImage.sha256).where(
                    models.ChartImage.spec_key.in_(unknown)
                )
            ).all()
            known.update({key: sha for key, sha in found})
        new_rows = []
        for key in unknown:
            if key in known:
                continue
            try:
                drawn = wanted[key].image()
            except AppError as error:  # e.g. over VISION_MAX_IMAGE_BYTES: it was never sent
                log.warning("chart not stored: %s", error)
                continue
            known[key] = drawn.sha256
            encoding, data = _stored_png(drawn.png)
            new_rows.append(
                {
                    "sha256": drawn.sha256,
                    "spec_key": key,
                    "encoding": encoding,
                    "data": data,
                    "width_px": drawn.width_px,
                    "height_px": drawn.height_px,
                    "kind": drawn.kind,
                    "caption": drawn.caption,
                    "created_at": at,
                }
            )
        if new_rows:
            connection.execute(
                _dialect_insert(connection)(models.ChartImage).on_conflict_do_nothing(), new_rows
            )
        changes.new_images.update({key: known[key] for key in wanted if key in known})
        links = [
            {
                "llm_call_id": call_ids[index],
                "position": position,
                "image_sha256": known[image.key],
            }
            for index, images in call_images.items()
            for position, image in enumerate(images)
            if image.key in known
        ]
        if links:
            connection.execute(insert(models.LlmCallImage), links)

    def _write_trading(
        self, connection: Connection, trading: Sequence[_Trading], changes: _PositionChanges
    ) -> None:
        """Write the records' positions, fills, funding and closes, one statement each.

        The records are walked in their order against the open positions as the records before
        each left them, so an exit finds the position an earlier record opened. The new
        positions go in first (the entry fills point at them), then fills and funding; each
        position's funding updates come before its close, as they happened (once closed, a
        position is no longer open to be funded).
        """
        open_ids = dict(self._open_positions)
        changes.apply(open_ids)
        entries = [
            [
                fill
                for fill in item.record.fills
                if fill.reason == "entry" and item.record.books.positions.get(fill.coin) is not None
            ]
            for item in trading
        ]
        new_ids: list[int] = []
        if any(entries):
            new_ids = _insert_ids(
                connection,
                _INSERT_POSITION,
                models.Position,
                [
                    _position_values(item.agent_id, item.record.books.positions[fill.coin])
                    for item, opened in zip(trading, entries, strict=True)
                    for fill in opened
                ],
            )
        rows = _TradingRows()
        next_new_id = iter(new_ids)  # in the order of the entries
        for item, opened in zip(trading, entries, strict=True):
            for fill in opened:
                key = (item.agent_id, fill.coin)
                new_id = next(next_new_id)
                open_ids[key] = new_id
                changes.opened[key] = new_id
                changes.closed.discard(key)
            rows.add(item, open_ids, changes)
        _INSERT_FILL.execute(connection, rows.fills)
        _INSERT_FUNDING.execute(connection, rows.funding)
        if rows.funded:
            connection.execute(_POSITION_FUNDING, rows.funded)
        if rows.closing:
            connection.execute(_CLOSE_POSITION, rows.closing)


@dataclass(frozen=True, slots=True)
class _Trading:
    """A record with fills, closes or funding, and the ids its rows carry."""

    agent_id: int
    cycle_id: int | None
    record: AgentCycleRecord | AccountEventsRecord


@dataclass
class _TradingRows:
    """The trading rows of a batch, gathered record by record in their order."""

    fills: list[Row] = field(default_factory=list)
    funding: list[Row] = field(default_factory=list)
    closing: list[dict[str, Any]] = field(default_factory=list)
    funded: list[dict[str, Any]] = field(default_factory=list)

    def add(
        self, item: _Trading, open_ids: dict[tuple[int, str], int], changes: _PositionChanges
    ) -> None:
        """Add one record's rows; `open_ids` holds the positions open after its entries."""
        agent_id, cycle_id, record = item.agent_id, item.cycle_id, item.record
        books = record.books
        for fill in record.fills:
            if fill.reason == "entry" and books.positions.get(fill.coin) is None:
                # One record cannot open and close a position: entries come from cycles, exits
                # from the monitor's own records.
                raise InvariantError(
                    f"agent {agent_id}: an entry on {fill.coin} without its open position"
                )
            self.fills.append(
                (
                    agent_id,
                    cycle_id,
                    open_ids.get((agent_id, fill.coin)),
                    fill.coin,
                    fill.side,
                    fill.quantity,
                    fill.price,
                    fill.reference_price,
                    fill.fee_usd,
                    fill.reason,
                    fill.realized_pnl_usd,
                    fill.filled_at,
                )
            )
        self.funding.extend(
            (
                agent_id,
                open_ids.get((agent_id, payment.coin)),
                payment.coin,
                payment.rate,
                payment.mark_price,
                payment.quantity,
                payment.amount_usd,
                payment.settled_at,
            )
            for payment in record.funding
        )
        for trade in record.closed_trades:
            key = (agent_id, trade.coin)
            closed_id = open_ids.pop(key, None)
            changes.opened.pop(key, None)
            changes.closed.add(key)
            if closed_id is not None:
                self.closing.append(
                    {
                        "b_id": closed_id,
                        "b_closed_at": trade.closed_at,
                        "b_exit_price": trade.exit_price,
                        "b_exit_fee_usd": trade.exit_fee_usd,
                        "b_exit_reason": trade.exit_reason,
                        "b_gross_pnl_usd": trade.gross_pnl_usd,
                        "b_net_pnl_usd": trade.net_pnl_usd,
                        "b_funding_usd": trade.funding_usd,
                    }
                )
        # Positions still open after this record's closes: a closed one is not funded again.
        self.funded.extend(
            {"b_id": open_ids[(agent_id, coin)], "b_funding_usd": books.positions[coin].funding_usd}
            for coin in {payment.coin for payment in record.funding}
            if coin in books.positions and (agent_id, coin) in open_ids
        )


def _decision_values(cycle_id: int, item: DecisionRecord) -> Row:
    """Return a `decision` row in `_INSERT_DECISION`'s column order."""
    decision = item.decision
    if decision is None:
        # An unparsed decision keeps what could be read of its coin and signal.
        return (
            cycle_id,
            item.coin[:16] or "?",
            item.signal[:16] or "?",
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            item.outcome,
            item.reason,
            item.filled_quantity,
        )
    return (
        cycle_id,
        decision.coin,
        decision.signal,
        decision.quantity,
        decision.leverage,
        decision.profit_target,
        decision.stop_loss,
        decision.invalidation_condition or None,
        decision.confidence,
        decision.risk_usd,
        decision.justification or None,
        item.outcome,
        item.reason,
        item.filled_quantity,
    )


def _snapshot_values(
    agent_id: int,
    cycle_id: int | None,
    at: datetime,
    view: AccountView,
    record: AgentCycleRecord | AccountEventsRecord,
) -> Row:
    """Return an `account_snapshot` row in `_INSERT_SNAPSHOT`'s column order."""
    books = record.books
    return (
        agent_id,
        cycle_id,
        at,
        books.cash_usd,
        view.margin_usd,
        view.unrealized_pnl_usd,
        view.equity_usd,
        books.realized_pnl_usd,
        books.fees_paid_usd,
        books.funding_paid_usd,
        len(books.positions),
    )


def _llm_call_rows(
    agent_id: int,
    cycle_id: int,
    record: AgentCycleRecord,
    parts: dict[str, StoredPart],
    agent_model: tuple[str, str] | None,
) -> list[dict[str, Any]]:
    if record.answer is None and not record.messages:
        return []
    answer = record.answer
    return [
        {**LLM_CALL_DEFAULTS, **row}
        for row in llm_call_values(
            messages=record.messages,
            answer=None if answer is None else answer.chat,
            attempts=() if answer is None else answer.attempts,
            created_at=record.finished_at,
            agent_id=agent_id,
            cycle_id=cycle_id,
            prompt_version=record.prompt_version,
            parse_error=None if answer is None else answer.parse_error,
            error=record.error,
            shared=record.shared_texts,
            parts=parts,
            agent_model=agent_model,
            messages_hash=record.prompt_hash,
        )
    ]


def _stored_png(png: bytes) -> tuple[str, bytes]:
    """Return how a chart is kept: its rows in LZMA when that is smaller (a quarter, for the
    palette PNGs the renderer writes), else the PNG as it is."""
    try:
        compact = compact_png(png)
    except ValueError:  # not one of our palette PNGs
        return "png", png
    return ("compact", compact) if len(compact) < len(png) else ("png", png)


def _record_time(record: AgentCycleRecord | AccountEventsRecord) -> datetime:
    return record.at if isinstance(record, AccountEventsRecord) else record.scheduled_at


def _dialect_insert(connection: Connection) -> Any:
    """Return the INSERT of the connection's dialect: SQLite and PostgreSQL both say ON CONFLICT
    DO NOTHING, each through its own construct."""
    return postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert


def _insert_ids(
    connection: Connection,
    bulk: BulkInsert,
    model: type[models.Cycle] | type[models.LlmCall] | type[models.Position],
    rows: list[dict[str, Any]],
) -> list[int]:
    """Insert `rows` into `model`'s table (through `bulk`, its insert); return their new ids,
    in the rows' order.

    SQLite returns the ids of a many-row insert in order only row by row (one statement per row).
    It gives each new row the highest id + 1 (no AUTOINCREMENT here), and this transaction holds
    the write lock from its first write, so the rows took the ids ending at `last_insert_rowid()`.
    Other databases return them with the insert.
    """
    if connection.dialect.name == "sqlite":
        bulk.execute(connection, bulk.tuples(rows))
        last = int(connection.execute(text("SELECT last_insert_rowid()")).scalar_one())
        return list(range(last - len(rows) + 1, last + 1))
    return list(
        connection.execute(
            insert(model).returning(model.id, sort_by_parameter_order=True), rows
        ).scalars()
    )
