"""The command line in-process: `main`'s exit codes, database errors, option parsing."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from typer.testing import CliRunner

from app import __version__
from app.cli import app, main
from app.cli.options import parse_time
from app.config import load_settings
from app.db import session
from app.db.session import make_engine
from app.domain import LlmMode
from app.errors import ConfigError, DatabaseError, DatabaseLockedError, TemporaryError
from app.logs import configure_logging

# The lock is never released while a test waits, so the wait always ends in "locked": this only
# bounds how long the test takes, it is not a race.
SHORT_BUSY_TIMEOUT_MS = 50


@pytest.fixture(autouse=True)
def _log_elsewhere_after() -> Iterator[None]:
    yield
    # A command logs to the stream captured for the test: log elsewhere again afterwards.
    configure_logging("WARNING")


@pytest.fixture
def write_locked_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Yield a WAL SQLite file whose write lock another connection holds (short busy timeout)."""
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("CREATE TABLE held (id INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO held VALUES (1)")
    monkeypatch.setattr(session, "BUSY_TIMEOUT_MS", SHORT_BUSY_TIMEOUT_MS)
    try:
        yield path
    finally:
        holder.rollback()
        holder.close()


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run `main(argv)` and return its exit code and what it printed on stderr."""
    with pytest.raises(SystemExit) as ended:
        main(argv)
    code = ended.value.code
    return (code if isinstance(code, int) else 1), capsys.readouterr().err


def test_a_locked_database_is_one_line_and_exit_1(
    write_locked_db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{write_locked_db}")

    code, err = run_main(["db", "upgrade"], capsys)

    assert code == 1
    assert err.splitlines() == [
        "error: the database failed: database is locked; another process holds the database; "
        "stop it or use another DATABASE_URL"
    ]


def test_a_database_that_cannot_be_opened_is_one_line_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A folder where the database file should be: SQLite cannot open it.
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}")

    code, err = run_main(["db", "upgrade"], capsys)

    assert code == 1
    assert err.splitlines() == [
        "error: the database failed: unable to open database file; check DATABASE_URL and the disk"
    ]


def test_a_locked_write_raises_a_temporary_database_error_the_stores_still_catch(
    write_locked_db: Path,
) -> None:
    """The stores that log a failed write and go on catch `SQLAlchemyError`: they still do."""
    engine = make_engine(f"sqlite:///{write_locked_db}")

    with pytest.raises(DatabaseLockedError) as raised, engine.begin() as connection:
        connection.execute(text("INSERT INTO held VALUES (2)"))

    assert isinstance(raised.value, DatabaseError | TemporaryError | SQLAlchemyError)
    assert str(raised.value).startswith("the database failed: database is locked;")


def test_a_password_never_reaches_a_database_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "nosuchdialect://arena:hunter2@db.example/arena")

    with pytest.raises(ConfigError) as raised:
        make_engine(load_settings(env_file=None).database.url)

    assert "hunter2" not in str(raised.value) and "arena:***@db.example" in str(raised.value)


def test_a_bad_llm_mode_is_a_usage_error() -> None:
    args = ["backtest", "--data", "x", "--llm-mode", "bogus"]

    # Wide enough that typer's error box does not fold the message.
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})

    assert result.exit_code == 2
    assert "'bogus' is not one of 'live', 'cached', 'replay'" in result.output


def test_llm_mode_members_are_their_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_CACHE_MODE", "replay")

    mode = load_settings(env_file=None).llm.cache_mode

    assert mode is LlmMode.REPLAY and mode == "replay"
    # Messages quote the mode with !r and keep reading as before the enum.
    assert f"{mode} {mode!r}" == "replay 'replay'"


def test_version_prints_without_a_command() -> None:
    result = CliRunner().invoke(app, ["--version"])

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"arena {__version__}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-10-17", datetime(2025, 10, 17, tzinfo=UTC)),
        ("2025-10-17T22:00", datetime(2025, 10, 17, 22, 0, tzinfo=UTC)),
        ("2025-10-17T22:00:00Z", datetime(2025, 10, 17, 22, 0, tzinfo=UTC)),
        # 06:00 at UTC+8 is 22:00 UTC the day before.
        ("2025-10-18T06:00+08:00", datetime(2025, 10, 17, 22, 0, tzinfo=UTC)),
    ],
)
def test_parse_time_reads_iso_dates_and_times_as_utc(text: str, expected: datetime) -> None:
    parsed = parse_time(text, option="--start")

    assert parsed == expected and parsed.tzinfo is UTC


def test_parse_time_names_the_option_it_refuses() -> None:
    with pytest.raises(ConfigError, match=r"^--until 'yesterday' is not an ISO 8601 date or time"):
        parse_time("yesterday", option="--until")
