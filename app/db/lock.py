"""One daemon per database: a lock file beside a SQLite file (its resolved path), an advisory
lock on PostgreSQL.

`fcntl.flock` is released by the kernel when the holder dies, even on SIGKILL, so a crashed daemon
never blocks the next start; the file's text says who holds it for the refusal message.

A file lock is no singleton across machines, so on PostgreSQL the daemon takes a session-level
advisory lock on a connection of its own (`PostgresDaemonLock`): the server lets go of it when
that connection ends, whether the daemon exits, is killed or loses the network. The holder's pid
and host travel in the connection's `application_name`, which `pg_stat_activity` shows to the
next daemon for its refusal message.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Protocol, Self
from zlib import crc32

from sqlalchemy import Connection, NullPool, text
from sqlalchemy.exc import SQLAlchemyError

from app.errors import ConfigError, DatabaseError

log = logging.getLogger(__name__)

REFUSAL: Final = "another `arena run` already uses this database"
# The advisory lock's first key: this project's, so no other application's locks collide with it.
ADVISORY_NAMESPACE: Final = 0x4152_4E41  # "ARNA"
# PostgreSQL keeps the first 63 bytes of an application_name.
_APPLICATION_NAME_BYTES: Final = 63


class ArenaLock(Protocol):
    """What the daemon holds for its lifetime so that no second daemon writes the same arena."""

    def acquire(self) -> None: ...

    def release(self) -> None: ...

    def check(self) -> None: ...


class _HeldLock:
    """A lock held for a `with` block: `acquire` on entry, `release` on exit."""

    def acquire(self) -> None:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


class DaemonLock(_HeldLock):
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
                f"{REFUSAL} ({describe_holder(holder)}); "
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

    def check(self) -> None:
        """Nothing to check: a file lock lasts as long as the process."""


def describe_holder(text: str) -> str:
    """Return 'pid N on HOST since TIME' from the lock file's text, or a generic phrase."""
    try:
        data = json.loads(text)
        return f"pid {data['pid']} on {data['host']}, started {data['started_at']}"
    except (ValueError, KeyError, TypeError):
        return "a process whose details are unknown"


def holder_name(pid: int, host: str) -> str:
    """Return the `application_name` the PostgreSQL lock's connection carries: who holds it."""
    name = f"arena run pid={pid} host={host}"
    return name.encode()[:_APPLICATION_NAME_BYTES].decode(errors="ignore")


def describe_pg_holder(application_name: str | None, started_at: datetime | None) -> str:
    """Return 'pid N on HOST, started TIME' from the holder's `application_name`."""
    fields = dict(part.split("=", 1) for part in (application_name or "").split() if "=" in part)
    if "pid" not in fields or "host" not in fields:
        return "a process whose details are unknown"
    since = "" if started_at is None else f", started {started_at.isoformat(timespec='seconds')}"
    return f"pid {fields['pid']} on {fields['host']}{since}"


class PostgresDaemonLock(_HeldLock):
    """A session-level advisory lock on PostgreSQL, keyed by the arena (database and schema)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._connection: Connection | None = None
        self._key = 0

    def acquire(self) -> None:
        """Take the lock or raise `ConfigError` naming the process that holds it."""
        from app.db.session import make_engine

        # A pool of its own with no idle connections: this one connection is the lock.
        engine = make_engine(self.url, poolclass=NullPool)
        connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            connection.execute(
                text("SELECT set_config('application_name', :name, false)"),
                {"name": holder_name(os.getpid(), socket.gethostname())},
            )
            # The arena is the schema in the database: advisory locks are per database already.
            schema = connection.execute(text("SELECT current_schema()")).scalar_one()
            self._key = _signed_int32(crc32(str(schema).encode()))
            taken = connection.execute(
                text("SELECT pg_try_advisory_lock(:space, :key)"),
                {"space": ADVISORY_NAMESPACE, "key": self._key},
            ).scalar_one()
            if not taken:
                holder = self._holder(connection)
                raise ConfigError(
                    f"{REFUSAL} ({holder}); stop it first, or point DATABASE_URL at another "
                    f"database (lock: PostgreSQL advisory lock {ADVISORY_NAMESPACE}/{self._key})"
                )
        except BaseException:
            connection.close()
            engine.dispose()
            raise
        self._connection = connection

    def _holder(self, connection: Connection) -> str:
        row = connection.execute(
            text(
                "SELECT a.application_name, a.backend_start FROM pg_locks l "
                "JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
                "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND l.classid = :space AND l.objid = :key"
            ),
            # pg_locks shows the keys as unsigned oids.
            {"space": ADVISORY_NAMESPACE, "key": self._key & 0xFFFF_FFFF},
        ).first()
        if row is None:
            return "a process whose details are unknown"
        return describe_pg_holder(row[0], row[1])

    def check(self) -> None:
        """Make sure the lock is still held; take it back when its connection was lost.

        The server let go of the lock with the connection, so another daemon may hold it by now:
        then taking it back fails with the refusal (a `ConfigError`) and the caller must not
        write.
        """
        try:
            self._still_held()
        except DatabaseError as error:
            log.warning("%s; taking the lock again", error)
            self.release()
            self.acquire()
            log.info("daemon lock taken again")

    def _still_held(self) -> None:
        if self._connection is None:
            raise DatabaseError("the daemon lock is not held")
        try:
            held = self._connection.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND pid = pg_backend_pid() AND classid = :space AND objid = :key "
                    "AND objsubid = 2"
                ),
                {"space": ADVISORY_NAMESPACE, "key": self._key & 0xFFFF_FFFF},
            ).scalar_one()
        except SQLAlchemyError as error:
            raise DatabaseError(
                f"the daemon lock's database connection was lost ({error.__class__.__name__})"
            ) from error
        if not held:
            raise DatabaseError("the daemon lock was lost")

    def release(self) -> None:
        """Let go of the lock: closing its connection ends the session, and the lock with it."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        engine = connection.engine
        try:
            connection.execute(
                text("SELECT pg_advisory_unlock(:space, :key)"),
                {"space": ADVISORY_NAMESPACE, "key": self._key},
            )
        except SQLAlchemyError:
            pass  # the connection is gone, and the lock with it
        finally:
            connection.close()
            engine.dispose()


def _signed_int32(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


def daemon_lock_for(database_url: str) -> ArenaLock:
    """Return the single-daemon lock of a database: a file for SQLite, advisory on PostgreSQL."""
    from sqlalchemy.engine import make_url

    from app.db.session import sqlite_path

    if sqlite_path(database_url) is None and make_url(database_url).get_backend_name() == (
        "postgresql"
    ):
        return PostgresDaemonLock(database_url)
    return DaemonLock(lock_path_for(database_url))


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
