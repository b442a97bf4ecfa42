"""Where the command line writes: rich consoles for people, bare JSON for programs."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

# Piped output gets room for the wide leaderboard instead of a squeezed 80 columns.
stdout = Console() if sys.stdout.isatty() else Console(width=220)
stderr = Console(stderr=True)


def print_json(payload: Any) -> None:
    """Print exactly one JSON document on stdout."""
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
    sys.stdout.flush()
