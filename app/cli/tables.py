"""Tables that fit the terminal: key columns always whole, the others while there is room.

A rich table squeezed into a narrow terminal cuts every cell (`9,…`). A `FittedTable` decides
at render time, from the console's width, which columns to show: every key column, then the
secondary ones by priority for as long as the table still fits without cutting a cell; a caption
names what was left out. `wide=True` shows every column whatever the width (`--wide`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table

Justify = Literal["left", "right", "center"]
# A width no terminal has: measures a table's natural width, nothing cut.
_UNBOUNDED = 100_000


@dataclass(frozen=True, slots=True)
class Column:
    """One column: its header, alignment, and how readily it is left out when space runs short.

    `priority` 0 is a key column, always shown; secondary columns are left out highest first.
    `text` columns (names, reasons) wrap onto more lines beyond `max_width`; figures never wrap.
    """

    header: str
    justify: Justify = "left"
    priority: int = 0
    text: bool = False
    max_width: int | None = None


class FittedTable:
    """A rich renderable: the table with the columns that fit the width it is drawn at."""

    def __init__(
        self,
        columns: Sequence[Column],
        rows: Iterable[Sequence[str]],
        *,
        title: str | None = None,
        caption: str | None = None,
        wide: bool = False,
    ) -> None:
        self.columns = tuple(columns)
        self.rows = [tuple(row) for row in rows]
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(f"a row has {len(row)} cells for {len(self.columns)} columns")
        self.title = title
        self.caption = caption
        self.wide = wide

    def shown(self, console: Console, width: int) -> list[int]:
        """Return the indexes of the columns drawn at `width`, in display order."""
        shown = list(range(len(self.columns)))
        if self.wide:
            return shown
        # Leave out the least important secondary column until the table fits uncut.
        droppable = sorted(
            (i for i in shown if self.columns[i].priority > 0),
            key=lambda i: (self.columns[i].priority, i),
        )
        while droppable and self._natural_width(console, shown) > width:
            shown.remove(droppable.pop())
        return shown

    def table(self, console: Console, width: int) -> Table:
        """Return the rich table drawn at `width`."""
        shown = self.shown(console, width)
        hidden = [self.columns[i].header for i in range(len(self.columns)) if i not in shown]
        return self._build(shown, hidden=hidden)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.table(console, options.max_width)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.table(console, options.max_width))

    def _natural_width(self, console: Console, shown: Sequence[int]) -> int:
        options = console.options.update_width(_UNBOUNDED)
        return Measurement.get(console, options, self._build(shown, hidden=())).maximum

    def _build(self, shown: Sequence[int], *, hidden: Sequence[str]) -> Table:
        caption = self.caption
        if hidden:
            left_out = f"not shown for lack of width: {', '.join(hidden)} (--wide shows them)"
            caption = f"{caption}\n{left_out}" if caption else left_out
        table = Table(
            title=self.title,
            caption=caption,
            title_justify="left",
            caption_justify="left",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
        )
        for i in shown:
            column = self.columns[i]
            table.add_column(
                column.header,
                justify=column.justify,
                no_wrap=not column.text,
                overflow="fold" if column.text else "ellipsis",
                max_width=column.max_width if column.text else None,
            )
        for row in self.rows:
            table.add_row(*(row[i] for i in shown))
        return table
