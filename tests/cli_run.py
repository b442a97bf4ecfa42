"""`arena ARGS` run in the test process through `app.cli.main`, with its exit code and output.

`main` is what the installed `arena` script and `python -m app` call, so the exit codes and the
one-line error messages are the real ones. The run sees the test's environment (cleaned of
settings by `tests/conftest.py`) plus `env`, in the test's folder; logging is put back after it,
so a run's handlers (bound to its captured stderr) never outlive it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from unittest import mock

from typer.testing import CliRunner

from app.cli import main


@dataclass(frozen=True)
class ArenaRun:
    """How one `arena` run ended."""

    exit_code: int
    stdout: str
    stderr: str


def arena(*args: str, env: Mapping[str, str] | None = None) -> ArenaRun:
    """Run `arena ARGS` in this process and return its exit code and output."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    runner = CliRunner()
    try:
        with (
            runner.isolation(env=dict(env or {})) as (stdout, stderr, _),
            mock.patch.object(sys, "argv", ["arena", *args]),
        ):
            try:
                main()
            except SystemExit as ended:
                code = (
                    ended.code if isinstance(ended.code, int) else (0 if ended.code is None else 1)
                )
            else:
                code = 0
            sys.stdout.flush()
            sys.stderr.flush()
            return ArenaRun(code, stdout.getvalue().decode(), stderr.getvalue().decode())
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)
