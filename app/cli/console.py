"""Where the command line writes: rich consoles for people, bare JSON for programs."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rich.console import Console


def _piped_width() -> int:
    """Return the width of output that goes to a file or a pipe: COLUMNS if set, else 220."""
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else 220


# Piped output gets room for the wide leaderboard instead of a squeezed 80 columns, unless
# COLUMNS says how wide it should be.
stdout = Console() if sys.stdout.isatty() else Console(width=_piped_width())
stderr = Console(stderr=True)


def print_json(payload: Any) -> None:
    """Print exactly one JSON document on stdout."""
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
    sys.stdout.flush()
