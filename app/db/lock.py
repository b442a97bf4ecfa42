"""One daemon per database: an exclusive lock file beside the SQLite file (its resolved path).

`fcntl.flock` is released by the kernel when the holder dies, even on SIGKILL, so a crashed daemon
never blocks the next start; the file's text says who holds it for the refusal message.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO

from app.errors import ConfigError


class DaemonLock:
    """An exclusive, process-lifetime lock on `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock or raise `ConfigError` naming the process that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            raise ConfigError(
                f"another `arena run` already uses this database ({describe_holder(holder)}); "
                f"stop it first, or point DATABASE_URL at another database (lock: {self.path})"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
                }
            )
        )
        handle.flush()
        self._file = handle

    def release(self) -> None:
        """Let go of the lock (also happens when the process ends)."""
        if self._file is None:
            return
        fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
        self._file.close()
        self._file = None

    def __enter__(self) -> DaemonLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def describe_holder(text: str) -> str:
    """Return 'pid N on HOST since TIME' from the lock file's text, or a generic phrase."""
    try:
        data = json.loads(text)
        return f"pid {data['pid']} on {data['host']}, started {data['started_at']}"
    except (ValueError, KeyError, TypeError):
        return "a process whose details are unknown"


def lock_path_for(database_url: str) -> Path:
    """Return the lock file of a database: beside the SQLite file, or under data/ otherwise.

    The file's path is resolved first (symbolic links to the file or to a folder on the way,
    `..`, a relative path from another working folder), so every path that reaches one database
    names the same lock.
    """
    from app.db.session import sqlite_path

    path = sqlite_path(database_url)
    if path is None:
        return Path("data") / "arena.lock"
    path = path.expanduser().resolve()
    return path.with_name(path.name + ".lock")
