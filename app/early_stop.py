"""A stop asked before the daemon's event loop runs is remembered, never a kill.

Python ends a process on SIGTERM until a handler is installed, and the daemon's own handler can
only be installed once its event loop runs, seconds later (imports, migrations, the exchange's
markets). `arena run` therefore holds SIGTERM from its very first line (`app/__main__.py`, then
`app.cli.main`): a stop asked meanwhile is remembered, and the daemon honours it as soon as it
takes the signal over (it stops before its first cycle, exit code 0). A command that turns out
not to be the daemon gives the signal back, and a stop already asked ends it at once.

Standard library only: this module is imported before anything else.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

# Root options of `arena` that take a value (so the value is not taken for the command).
_VALUED_ROOT_OPTIONS = frozenset({"--config", "--env-file"})
DAEMON_COMMANDS = frozenset({"run", "start"})

_pending: list[int] = []
_previous: dict[int, Any] = {}
_watchdogs: list[threading.Timer] = []


def is_daemon_command(argv: Sequence[str]) -> bool:
    """Return True when `arena ARGV` starts the daemon (`run` or `start`, not `--once`)."""
    args = list(argv)
    index = 0
    while index < len(args):
        arg = args[index]
        if arg in _VALUED_ROOT_OPTIONS:
            index += 2
            continue
        if arg.startswith("-"):
            index += 1
            continue
        return arg in DAEMON_COMMANDS and "--once" not in args[index + 1 :]
    return False


def hold_stop_signals(argv: Sequence[str]) -> None:
    """From now on, remember SIGTERM instead of dying, when `argv` starts the daemon."""
    if _previous or not is_daemon_command(argv):
        return
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set handlers (a command run inside another program)
    _previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, _remember)


def pending_stop() -> int | None:
    """Return the signal that asked the daemon to stop before it could handle it, if any."""
    return _pending[0] if _pending else None


def take_pending_stop() -> int | None:
    """Return that signal and forget it: the daemon, now handling signals, honours it."""
    pending = pending_stop()
    _pending.clear()
    return pending


def release_stop_signals() -> None:
    """Give the signals back their previous handlers; deliver a stop that was already asked."""
    disarm_watchdogs()
    pending = pending_stop()
    for signum, handler in _previous.items():
        signal.signal(signum, handler)
    _previous.clear()
    _pending.clear()
    if pending is not None:
        os.kill(os.getpid(), pending)


def arm_watchdog(delay_s: float, action: Callable[[], None]) -> threading.Timer:
    """Run `action` on its own thread after `delay_s` unless the command ends first."""
    timer = threading.Timer(max(0.0, delay_s), action)
    timer.daemon = True  # never keeps the process alive by itself
    timer.start()
    _watchdogs.append(timer)
    return timer


def disarm_watchdogs() -> None:
    """Cancel the watchdogs (the command has ended on its own)."""
    for timer in _watchdogs:
        timer.cancel()
    _watchdogs.clear()


def end_command(exit_code: object) -> None:
    """The command is over: give the signals back; a daemon that was stopped leaves at once.

    Once stopped, everything is recorded and closed; what the interpreter would still do on its
    way out (joining library threads, collecting objects) took seconds and counted against the
    stop's 30 s, so the process ends here with its exit code.
    """
    stopped = bool(_watchdogs)
    release_stop_signals()
    if not stopped:
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    code = exit_code if isinstance(exit_code, int) else (0 if exit_code is None else 1)
    os._exit(code)


def _remember(signum: int, _frame: FrameType | None) -> None:
    if not _pending:
        _pending.append(signum)
