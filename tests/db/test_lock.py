"""One daemon per arena: a file lock on SQLite, an advisory lock on PostgreSQL."""

from __future__ import annotations

import os
import socket

import pytest
from sqlalchemy import text

from app.db.lock import PostgresDaemonLock, daemon_lock_for
from app.db.session import make_engine
from app.errors import ConfigError


def test_a_second_lock_is_refused_naming_the_holder_and_free_after_release(db_url: str) -> None:
    first = daemon_lock_for(db_url)
    first.acquire()
    try:
        with pytest.raises(ConfigError) as refused:
            daemon_lock_for(db_url).acquire()
        message = str(refused.value)
        assert "another `arena run` already uses this database" in message
        assert f"pid {os.getpid()} on {socket.gethostname()}" in message
        assert "***" not in message and "password" not in message
    finally:
        first.release()
    again = daemon_lock_for(db_url)
    again.acquire()
    again.release()


def test_postgres_uses_an_advisory_lock_held_by_its_own_connection(postgres_url: str) -> None:
    lock = daemon_lock_for(postgres_url)
    assert isinstance(lock, PostgresDaemonLock)
    with lock, make_engine(postgres_url).connect() as connection:
        held = connection.execute(
            text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")
        ).scalar_one()
        assert held == 1
        lock.check()  # held: nothing to do


def _kill_lock_connection(url: str) -> None:
    with make_engine(url).connect() as connection:
        connection.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name LIKE 'arena run pid=%' AND datname = current_database()"
            )
        )
        connection.commit()


def test_a_lost_connection_releases_the_lock_and_check_takes_it_back(postgres_url: str) -> None:
    """The server drops the lock's connection: the lock is free at once; the holder's next check
    takes it back when nobody else did."""
    first = PostgresDaemonLock(postgres_url)
    first.acquire()
    try:
        _kill_lock_connection(postgres_url)
        first.check()  # lost, free, taken again
        with pytest.raises(ConfigError, match=f"pid {os.getpid()}"):
            PostgresDaemonLock(postgres_url).acquire()
    finally:
        first.release()


def test_after_a_lost_connection_another_daemon_may_take_it_and_check_refuses(
    postgres_url: str,
) -> None:
    first = PostgresDaemonLock(postgres_url)
    first.acquire()
    second = PostgresDaemonLock(postgres_url)
    try:
        _kill_lock_connection(postgres_url)
        second.acquire()  # released by the server with the connection
        with pytest.raises(ConfigError, match="another `arena run` already uses this database"):
            first.check()
    finally:
        second.release()
        first.release()
