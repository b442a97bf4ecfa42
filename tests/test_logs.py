"""Secrets never reach a log line, even inside a traceback: the real `configure_logging` checked.

Each test configures logging exactly as every command does (`configure_logging` with the
configured secrets and a log file) and reads what its own handlers wrote, on stderr and in the
file: a `configure_logging` that forgot the masking, a handler or the level fails here.
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.logs import configure_logging, mask_secrets

CANARY = "canary-secret-7f3a9c"

Outputs = Callable[[], tuple[str, str]]


@pytest.fixture
def configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> Iterator[Callable[..., Outputs]]:
    """Return a function that runs `configure_logging` and returns a reader of its outputs.

    The reader returns (what went to stderr, what went to the log file).
    """

    def configure(level: str = "DEBUG", secrets: tuple[str, ...] = (CANARY,)) -> Outputs:
        stderr = io.StringIO()
        # The stream handler writes to the stderr of the moment it is made.
        monkeypatch.setattr(sys, "stderr", stderr)
        log_file = tmp_path / "logs" / "arena.log"
        configure_logging(level, secrets=secrets, file=str(log_file))

        def outputs() -> tuple[str, str]:
            for handler in logging.getLogger().handlers:
                handler.flush()
            return stderr.getvalue(), log_file.read_text(encoding="utf-8")

        return outputs

    yield configure


def test_configured_secret_is_masked_in_message_and_args(
    configured: Callable[..., Outputs],
) -> None:
    outputs = configured()
    log = logging.getLogger("app.tests")
    log.info("calling with key %s", CANARY)
    log.warning(f"inline {CANARY}")

    for written in outputs():
        assert "calling with key ***" in written
        assert "inline ***" in written
        assert CANARY not in written
    stderr, log_file = outputs()
    assert stderr == log_file  # both handlers wrote the same masked lines


def test_secret_is_masked_in_tracebacks(configured: Callable[..., Outputs]) -> None:
    outputs = configured()
    log = logging.getLogger("app.tests")
    try:
        raise RuntimeError(f"boom with {CANARY}")
    except RuntimeError:
        log.exception("failed")

    for written in outputs():
        assert "failed" in written
        assert "RuntimeError: boom with ***" in written
        assert "Traceback" in written
        assert CANARY not in written


def test_key_shapes_are_masked_in_log_lines_even_when_not_configured(
    configured: Callable[..., Outputs],
) -> None:
    outputs = configured(secrets=())
    # Key-shaped fakes, assembled so no scanner mistakes the source for leaked keys.
    deepseek_shaped = "sk-" + "0123456789abcdef" * 2
    logging.getLogger("app.tests").error("provider echoed %s", deepseek_shaped)

    for written in outputs():
        assert "provider echoed ***" in written
        assert deepseek_shaped not in written


def test_key_shapes_are_masked_even_when_not_configured() -> None:
    # Key-shaped fakes, assembled so no scanner mistakes the source for leaked keys.
    deepseek_shaped = "sk-" + "0123456789abcdef" * 2
    modelscope_shaped = "ms-" + "-".join(("12345678", "1234", "1234", "1234", "123456789abc"))
    text = (
        "Authorization: Bearer abcdefghijklmnop "
        f"{deepseek_shaped} {modelscope_shaped} api_key=zzzzzzzzzzzz"
    )
    masked = mask_secrets(text)
    for secret in ("abcdefghijklmnop", "sk-0123", "ms-1234", "zzzzzzzzzzzz"):
        assert secret not in masked
    assert masked.count("***") == 4


def test_level_comes_from_settings(configured: Callable[..., Outputs]) -> None:
    outputs = configured("WARNING")
    log = logging.getLogger("app.tests")
    log.info("routine detail")
    log.warning("worth a look")

    assert logging.getLogger().level == logging.WARNING
    for written in outputs():
        assert "worth a look" in written
        assert "routine detail" not in written


def test_configuring_again_replaces_the_handlers(configured: Callable[..., Outputs]) -> None:
    configured()
    outputs = configured()
    logging.getLogger("app.tests").warning("once")

    for written in outputs():
        assert written.count("once") == 1
