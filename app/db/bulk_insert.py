"""Many-row INSERTs of fixed columns, compiled once per dialect and handed to the driver.

SQLAlchemy's executemany builds a parameter dict per row, looks up every bind in it and runs the
bind processors through generic code: for the recorder's tens of thousands of small rows that is
most of the SQL-side cost of a batch. A `BulkInsert` lets SQLAlchemy compile its statement once
per dialect (the same SQL, casts and bind processors an `insert()` executemany uses), then takes
rows as tuples in the table's column order and only runs the processors of the columns that have
one, so the driver receives the same values.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import Connection, Dialect, Table, insert
from sqlalchemy.types import TypeEngine

from app.db.base import Base
from app.errors import InvariantError

Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class _Processor:
    """How one column's values are converted for the driver."""

    index: int  # in the row
    process: Callable[[Any], Any]
    # Equal values convert alike (times): each distinct value is converted once. A batch's rows
    # share their times (a cycle's agents, its snapshots and calls).
    once_per_value: bool


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    processors: tuple[_Processor, ...]
    # Bind names in row order when the driver takes named parameters; None when positional.
    names: tuple[str, ...] | None


class BulkInsert:
    """An INSERT of `columns` (in the table's order) into `model`'s table, for rows given as
    tuples."""

    def __init__(self, model: type[Base], columns: Sequence[str]) -> None:
        table = cast(Table, model.__table__)
        order = [column.name for column in table.columns if column.name in columns]
        if order != list(columns) or len(order) != len(columns):
            raise InvariantError(f"{table.name}: columns {columns} are not in the table's order")
        self.table = table
        self.columns = tuple(columns)
        # Turns a row dict into the tuple `execute` takes.
        self._values = itemgetter(*self.columns)
        # Per dialect instance: an engine's dialect may carry its own settings (JSON serializer).
        self._compiled: weakref.WeakKeyDictionary[Dialect, _Compiled] = weakref.WeakKeyDictionary()

    def tuples(self, rows: Sequence[Mapping[str, Any]]) -> list[Row]:
        """Return `rows` as tuples in this insert's column order (a missing column raises)."""
        if len(self.columns) == 1:
            return [(self._values(row),) for row in rows]
        return [self._values(row) for row in rows]

    def execute(self, connection: Connection, rows: Sequence[Row]) -> None:
        """Insert `rows` (tuples in `columns` order) in one executemany."""
        if not rows:
            return
        dialect = connection.dialect
        compiled = self._compiled.get(dialect)
        if compiled is None:
            compiled = self._compiled[dialect] = self._compile(dialect)
        params: Sequence[Any] = rows
        if compiled.processors:
            params = _processed(rows, compiled.processors)
        if compiled.names is not None:
            names = compiled.names
            params = [dict(zip(names, row, strict=True)) for row in params]
        connection.exec_driver_sql(compiled.sql, params)

    def _compile(self, dialect: Dialect) -> _Compiled:
        compiled: Any = insert(self.table).compile(
            dialect=dialect, column_keys=list(self.columns), for_executemany=True
        )
        # Whatever SQLAlchemy would add per row (Python-side defaults, escaped or expanded
        # parameters) is refused: the rows must carry every value themselves.
        if compiled.insert_prefetch or compiled.escaped_bind_names or compiled.post_compile_params:
            raise InvariantError(f"{self.table.name}: insert needs per-row parameter work")
        binds = tuple(compiled.positiontup) if compiled.positional else tuple(compiled.binds)
        if binds != self.columns:
            raise InvariantError(f"{self.table.name}: insert binds {binds}, not {self.columns}")
        processors = compiled._bind_processors
        return _Compiled(
            sql=compiled.string,
            processors=tuple(
                _Processor(
                    index,
                    processors[name],
                    once_per_value=_python_type(self.table.columns[name].type) is datetime,
                )
                for index, name in enumerate(self.columns)
                if name in processors
            ),
            names=None if compiled.positional else self.columns,
        )


def _processed(rows: Sequence[Row], processors: tuple[_Processor, ...]) -> list[Row]:
    """Return `rows` with each processed column's values converted, None included (as
    SQLAlchemy's executemany does), column by column."""
    columns = list(zip(*rows, strict=True))
    for processor in processors:
        values = columns[processor.index]
        if processor.once_per_value:
            converted = {value: processor.process(value) for value in set(values)}
            columns[processor.index] = tuple(map(converted.__getitem__, values))
        else:
            columns[processor.index] = tuple(map(processor.process, values))
    return list(zip(*columns, strict=True))


def _python_type(type_: TypeEngine[Any]) -> type | None:
    try:
        return type_.python_type
    except NotImplementedError:
        return None
