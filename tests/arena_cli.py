"""`arena` run inside the test process, exactly as the installed script runs it, in milliseconds.

`arena(*args)` calls `app.cli.main()` (what the `arena` script and `python -m app` call) with
`sys.argv` set, stdout and stderr captured by typer's `CliRunner`, and returns the exit code the
process would have ended with: the same error-to-exit-code translation, the same one-line
messages, the same log lines on stderr. Only what needs a real process (signals, SIGKILL, the
lock held by another process) is left to the few subprocess tests marked `slow`.

A run sees the test's environment (from which `tests/conftest.py` removed the developer's
settings) plus `env`, and runs in the test's folder unless `cwd` says otherwise. Logging is put
back afterwards, so one run's handlers (bound to its captured stderr) never outlive it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from typer.testing import CliRunner

from app.cli import main
from tests.conftest import logging_restored


@dataclass(frozen=True)
class ArenaRun:
    """How one `arena` run ended: its exit code and what it printed."""

    exit_code: int
    stdout: str
    stderr: str


def arena(*args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> ArenaRun:
    """Run `arena ARGS` in this process (in `cwd` when given); see the module docstring."""
    runner = CliRunner()
    with (
        logging_restored(),
        contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext(),
        runner.isolation(env=env) as (stdout, stderr, _),
        mock.patch.object(sys, "argv", ["arena", *args]),
    ):
        try:
            main()
        except SystemExit as exit_:
            code = _exit_code(exit_.code)
        else:
            code = 0
        sys.stdout.flush()
        sys.stderr.flush()
        return ArenaRun(
            exit_code=code,
            stdout=stdout.getvalue().decode(),
            stderr=stderr.getvalue().decode(),
        )


def _exit_code(code: object) -> int:
    # What the interpreter makes of `SystemExit(code)`: None is 0, a message is 1.
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    sys.stderr.write(f"{code}\n")
    return 1
