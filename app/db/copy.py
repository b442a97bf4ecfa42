"""`arena db copy`: move an arena (every run, or one) from one database to another, and prove it.

Tables are copied parent first (agents, cycles, then what hangs off them) in batches, keeping
every primary key, so a copy of a whole arena is the same arena. A single run copied into a
database that holds other runs gets its integer ids shifted past the target's highest id, the
foreign keys that point at them shifted alike. At the end each table's copied rows are counted
and checksummed on both sides (values normalised, so SQLite and PostgreSQL agree on a row).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final

from sqlalchemy import Column, ColumnElement, Connection, Engine, Table, delete, func, select, text

from app.db import models
from app.db.base import Base
from app.db.migrate import upgrade
from app.db.session import make_engine, safe_url
from app.errors import ConfigError, InvariantError

BATCH_ROWS: Final = 1_000
# Tables not part of any run: copied only with the whole arena.
SHARED_TABLES: Final = frozenset(
    {"quota_usage", "llm_cache", "candle", "evaluation_plan", "evaluation_window"}
)
# Content-addressed tables (their key column): shared by every run that uses a row, so a run's
# copy adds the rows the target lacks and keeps the others.
CONTENT_TABLES: Final = {"prompt_part": "hash", "chart_image": "sha256"}
# Columns a checksum leaves out: a row already in the target keeps its first date.
UNCHECKED_COLUMNS: Final = {
    "prompt_part": frozenset({"created_at"}),
    "chart_image": frozenset({"created_at"}),
}

# (table name, rows done, rows in all): called as batches land.
ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True, slots=True)
class TableReport:
    """One table's copy, verified: its rows and their checksum, equal on both sides."""

    table: str
    rows: int
    checksum: str


def copy_arena(
    source_url: str,
    target_url: str,
    *,
    run: str | None = None,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> list[TableReport]:
    """Copy the arena (or `run`) at `source_url` into `target_url`; return the verified tables.

    Raises `ConfigError` when the target already holds what would be copied (the arena's rows,
    or that run) and `force` is not set; `InvariantError` when a verification fails.
    """
    if safe_url(source_url) == safe_url(target_url):
        raise ConfigError("--from and --to are the same database")
    source, target = make_engine(source_url), make_engine(target_url)
    try:
        _require_migrated(source, source_url)
        upgrade(target_url, engine=target)
        with source.connect() as reader, target.begin() as writer:
            if run is not None and not _run_exists(reader, run):
                raise ConfigError(f"no run {run!r} in {safe_url(source_url)}")
            tables = _tables(run)
            _make_room(writer, tables, run=run, force=force, target_url=target_url)
            offsets = _id_offsets(writer, tables) if run is not None else {}
            totals = {table.name: _count(reader, table, run) for table in tables}
            reports = []
            for table in tables:
                digest = _copy_table(
                    reader, writer, table, run, offsets, totals[table.name], progress
                )
                reports.append(TableReport(table.name, totals[table.name], digest))
            _advance_sequences(writer, tables)
        _verify(target, tables, run, reports)
        return reports
    finally:
        source.dispose()
        target.dispose()


def _require_migrated(engine: Engine, url: str) -> None:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from app.db.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    if current != head:
        raise ConfigError(
            f"the source {safe_url(url)} is at schema revision {current or 'none'}, not {head}: "
            "run `arena db upgrade` on it first (DATABASE_URL=... arena db upgrade)"
        )


def _run_exists(connection: Connection, run: str) -> bool:
    agent = models.Agent.__table__
    found = connection.execute(select(agent.c.id).where(agent.c.run_id == run).limit(1)).first()
    return found is not None


def _tables(run: str | None) -> list[Table]:
    tables = [table for table in Base.metadata.sorted_tables]
    if run is None:
        return tables
    return [table for table in tables if table.name not in SHARED_TABLES]


def _run_filter(table: Table, run: str | None) -> ColumnElement[bool] | None:
    """Return the condition selecting `run`'s rows of `table` (None: every row)."""
    if run is None or table.name in CONTENT_TABLES:
        return None
    agent, cycle = models.Agent.__table__, models.Cycle.__table__
    agents = select(agent.c.id).where(agent.c.run_id == run)
    if "run_id" in table.c:
        return table.c.run_id == run
    if "agent_id" in table.c:
        return table.c.agent_id.in_(agents)
    if "cycle_id" in table.c:
        return table.c.cycle_id.in_(select(cycle.c.id).where(cycle.c.agent_id.in_(agents)))
    if "llm_call_id" in table.c:
        call = models.LlmCall.__table__
        return table.c.llm_call_id.in_(select(call.c.id).where(call.c.agent_id.in_(agents)))
    raise InvariantError(f"table {table.name} belongs to no run: teach `arena db copy` about it")


def _select(table: Table, run: str | None) -> Any:
    statement = select(table).order_by(*table.primary_key.columns)
    condition = _run_filter(table, run)
    return statement if condition is None else statement.where(condition)


def _count(connection: Connection, table: Table, run: str | None) -> int:
    statement = select(func.count()).select_from(table)
    condition = _run_filter(table, run)
    if condition is not None:
        statement = statement.where(condition)
    return int(connection.execute(statement).scalar_one())


def _make_room(
    writer: Connection, tables: Sequence[Table], *, run: str | None, force: bool, target_url: str
) -> None:
    """Refuse a target holding what would be copied, or (with `force`) delete it."""
    holding = [
        table.name
        for table in tables
        if (run is None or table.name not in CONTENT_TABLES) and _count(writer, table, run) > 0
    ]
    if not holding:
        return
    what = "the arena's tables" if run is None else f"run {run!r}"
    if not force:
        raise ConfigError(
            f"the target {safe_url(target_url)} already holds {what} ({', '.join(holding)}); "
            "pass --force to replace it"
        )
    for table in reversed(tables):
        if run is not None and table.name in CONTENT_TABLES:
            continue  # shared by every run: kept, and new rows added beside them
        condition = _run_filter(table, run)
        writer.execute(delete(table) if condition is None else delete(table).where(condition))


def _integer_key(table: Table) -> Column[Any] | None:
    keys = list(table.primary_key.columns)
    if len(keys) == 1 and keys[0].name == "id":
        return keys[0]
    return None


def _id_offsets(writer: Connection, tables: Sequence[Table]) -> dict[str, int]:
    """Shift each copied table's ids past the target's highest, so no copied id collides."""
    offsets = {}
    for table in tables:
        key = _integer_key(table)
        if key is not None:
            offsets[table.name] = int(writer.execute(select(func.max(key))).scalar() or 0)
    return offsets


def _shift(table: Table, row: dict[str, Any], offsets: dict[str, int]) -> dict[str, Any]:
    if not offsets:
        return row
    shifted = dict(row)
    if table.name in offsets and _integer_key(table) is not None:
        shifted["id"] = row["id"] + offsets[table.name]
    for column in table.c:
        for foreign in column.foreign_keys:
            parent = foreign.column.table.name
            if shifted[column.name] is not None and parent in offsets:
                shifted[column.name] += offsets[parent]
    return shifted


def _copy_table(
    reader: Connection,
    writer: Connection,
    table: Table,
    run: str | None,
    offsets: dict[str, int],
    total: int,
    progress: ProgressCallback | None,
) -> str:
    """Copy `table`'s rows in batches; return the checksum of what was written."""
    digest = hashlib.sha256()
    done = 0
    content_key = CONTENT_TABLES.get(table.name) if run is not None else None
    for batch in _batches(reader, _select(table, run)):
        rows = [_shift(table, row, offsets) for row in batch]
        if content_key is not None:
            key = table.c[content_key]
            wanted = [row[content_key] for row in rows]
            present = set(writer.scalars(select(key).where(key.in_(wanted))))
            new = [row for row in rows if row[content_key] not in present]
        else:
            new = rows
        if new:
            writer.execute(table.insert(), new)
        for row in rows:
            digest.update(_canonical(table, row))
        done += len(rows)
        if progress is not None:
            progress(table.name, done, total)
    if progress is not None and total == 0:
        progress(table.name, 0, 0)
    return digest.hexdigest()


def _batches(connection: Connection, statement: Any) -> Iterator[list[dict[str, Any]]]:
    result = connection.execution_options(stream_results=True).execute(statement)
    while batch := result.mappings().fetchmany(BATCH_ROWS):
        yield [dict(row) for row in batch]


def _advance_sequences(writer: Connection, tables: Sequence[Table]) -> None:
    """PostgreSQL's id sequences do not see explicit ids: move them past the highest copied."""
    if writer.dialect.name != "postgresql":
        return
    for table in tables:
        key = _integer_key(table)
        if key is None:
            continue
        writer.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "  # noqa: S608
                f"COALESCE((SELECT max(id) FROM {table.name}), 0) + 1, false)"
            )
        )


def _verify(
    target: Engine, tables: Sequence[Table], run: str | None, reports: Sequence[TableReport]
) -> None:
    """Count and checksum each table's copied rows in the target; raise when one differs."""
    expected = {report.table: report for report in reports}
    with target.connect() as connection:
        for table in tables:
            report = expected[table.name]
            if run is not None and table.name in CONTENT_TABLES:
                continue  # rows shared with other runs: checked by the llm_call rows using them
            digest, rows = hashlib.sha256(), 0
            statement = _select(table, run)
            for batch in _batches(connection, statement):
                for row in batch:
                    digest.update(_canonical(table, row))
                rows += len(batch)
            if rows != report.rows or digest.hexdigest() != report.checksum:
                raise InvariantError(
                    f"copy check failed for table {table.name}: {report.rows} rows copied, "
                    f"{rows} found in the target (checksums {report.checksum[:12]} and "
                    f"{digest.hexdigest()[:12]}); the target is incomplete, copy again with --force"
                )


def _canonical(table: Table, row: dict[str, Any]) -> bytes:
    """Return a row's values in one spelling both databases agree on."""
    skipped = UNCHECKED_COLUMNS.get(table.name, frozenset())
    values = [_plain(row[column.name]) for column in table.c if column.name not in skipped]
    return json.dumps(values, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    if isinstance(value, float):
        return repr(value)
    return value
