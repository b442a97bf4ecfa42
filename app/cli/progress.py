"""Progress bars on stderr: the backtest's (its `Progress` protocol) and the candle download's."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from app.cli.console import stderr

if TYPE_CHECKING:
    from app.market.download import ProgressFactory

# Redraw the backtest bar every this many cycles: updating it costs more than a cached cycle.
REDRAW_EVERY_CYCLES = 50


class RichProgress:
    """The backtest's bar (an `app.backtest.Progress`): cycles/s, LLM calls and cache hits."""

    def __init__(self) -> None:
        self._progress = Progress(
            TextColumn("backtest"),
            # A short bar: the figures after it fit an 80-column terminal.
            BarColumn(bar_width=16),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}/s"),
            TextColumn("calls {task.fields[calls]} hits {task.fields[hits]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=stderr,
            transient=False,
        )
        self._task: Any = None
        self._calls = 0
        self._hits = 0
        self._done = 0
        self._started_s = 0.0
        self._pending = 0

    def start(self, total: int) -> None:
        """Show the bar for `total` cycles."""
        self._started_s = time.perf_counter()
        self._progress.start()
        self._task = self._progress.add_task("cycles", total=total, rate="-", calls=0, hits=0)

    def advance(self, cycles: int, *, llm_calls: int, cache_hits: int) -> None:
        """Count `cycles` more cycles; redraw after a model call or every few dozen cycles."""
        self._done += cycles
        self._pending += cycles
        self._calls += llm_calls
        self._hits += cache_hits
        if self._pending < REDRAW_EVERY_CYCLES and llm_calls == 0:
            return
        elapsed_s = max(time.perf_counter() - self._started_s, 1e-9)
        self._progress.update(
            self._task,
            advance=self._pending,
            rate=f"{self._done / elapsed_s:,.0f}",
            calls=self._calls,
            hits=self._hits,
        )
        self._pending = 0

    def stop(self) -> None:
        """Draw the cycles not yet shown and leave the bar on screen."""
        if self._task is not None and self._pending:
            self._progress.update(
                self._task, advance=self._pending, calls=self._calls, hits=self._hits
            )
        self._progress.stop()


@contextmanager
def download_progress(timeframe: str) -> Iterator[ProgressFactory]:
    """Yield the download's progress factory: one bar per coin, advanced by candles found."""
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=stderr
    ) as bar:

        def track(coin: str, total: int) -> Callable[[int], None]:
            task = bar.add_task(f"{coin} {timeframe}", total=total)
            return lambda found: bar.advance(task, found)

        yield track


@contextmanager
def copy_progress() -> Iterator[Callable[[str, int, int], None]]:
    """Yield `arena db copy`'s progress callback: one bar per table, set to the rows copied."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr,
    ) as bar:
        tasks: dict[str, Any] = {}

        def update(table: str, done: int, total: int) -> None:
            if table not in tasks:
                tasks[table] = bar.add_task(table, total=total)
            bar.update(tasks[table], completed=done)

        yield update
