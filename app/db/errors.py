"""SQLAlchemy's operational errors raised as `app.errors` types, at the engine (`handle_error`).

`make_engine` installs `translate_operational_error` on every engine, so a locked, unreachable or
unwritable database reaches the entry points as a `DatabaseError` whose message says what to check.
The raised classes are also SQLAlchemy `OperationalError`s: the stores that log a failed write
and go on (`except SQLAlchemyError`) keep doing so.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import OperationalError

from app.errors import DatabaseError, DatabaseLockedError

LOCKED_HINT = "another process holds the database; stop it or use another DATABASE_URL"
OTHER_HINT = "check DATABASE_URL and the disk"


class OperationalDatabaseError(DatabaseError, OperationalError):
    """A `DatabaseError` in place of SQLAlchemy's `OperationalError` (and still one)."""

    def __init__(self, message: str, original: OperationalError) -> None:
        OperationalError.__init__(
            self,
            original.statement,
            original.params,
            original.orig or original,
            hide_parameters=original.hide_parameters,
            connection_invalidated=original.connection_invalidated,
            code=original.code,
        )
        self.message = message
        self.original = original

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> Any:
        return (self.__class__, (self.message, self.original))


class LockedDatabaseError(DatabaseLockedError, OperationalDatabaseError):
    """The database stayed locked by another connection for longer than the busy timeout."""


def database_error(error: OperationalError, *, password: str | None = None) -> DatabaseError:
    """Return the `app.errors` type for `error`, its message free of `password`."""
    reason = str(error.orig)
    if password:
        reason = reason.replace(password, "***")
    if "locked" in reason:
        return LockedDatabaseError(f"the database failed: {reason}; {LOCKED_HINT}", error)
    return OperationalDatabaseError(f"the database failed: {reason}; {OTHER_HINT}", error)


def translate_operational_error(context: ExceptionContext) -> None:
    """`handle_error` listener: raise a `DatabaseError` in place of an `OperationalError`."""
    error = context.sqlalchemy_exception
    if not isinstance(error, OperationalError) or isinstance(error, DatabaseError):
        return
    password = context.engine.url.password if context.engine is not None else None
    raise database_error(error, password=password) from context.original_exception
