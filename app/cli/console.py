"""Where the command line writes: rich consoles for people, bare JSON for programs."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rich.console import Console, ConsoleDimensions


def _piped_width() -> int:
    """Return the width of output that goes to a file or a pipe: COLUMNS if set, else 220."""
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else 220


class _Stdout(Console):
    """A console whose width follows where it writes now: the terminal's, or the piped width.

    Decided at each print, not at import: the same process may print to a terminal, a pipe or a
    captured buffer (tests), and COLUMNS may change in between.
    """

    @property
    def size(self) -> ConsoleDimensions:
        found = super().size
        if self._width is not None or self.is_terminal:
            return found
        return ConsoleDimensions(_piped_width(), found.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


# Piped output gets room for the wide leaderboard instead of a squeezed 80 columns, unless
# COLUMNS says how wide it should be.
stdout = _Stdout()
# Rich took COLUMNS as a fixed width at construction; the width is decided at each print instead.
stdout._width = None
stderr = Console(stderr=True)


def print_json(payload: Any) -> None:
    """Print exactly one JSON document on stdout."""
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
    sys.stdout.flush()
