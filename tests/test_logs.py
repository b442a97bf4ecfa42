"""Secrets never reach a log line, even inside a traceback."""

from __future__ import annotations

import io
import logging

from app.logs import SecretMaskingFilter, configure_logging, mask_secrets

CANARY = "canary-secret-7f3a9c"


def capture(secrets: list[str]) -> tuple[logging.Logger, io.StringIO]:
    configure_logging("DEBUG", secrets=secrets)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(SecretMaskingFilter(secrets))
    logger = logging.getLogger("tests.logs")
    logger.addHandler(handler)
    return logger, stream


def test_configured_secret_is_masked_in_message_and_args() -> None:
    logger, stream = capture([CANARY])
    logger.info("calling with key %s", CANARY)
    logger.warning(f"inline {CANARY}")
    assert CANARY not in stream.getvalue()
    assert "***" in stream.getvalue()


def test_secret_is_masked_in_tracebacks() -> None:
    logger, stream = capture([CANARY])
    try:
        raise RuntimeError(f"boom with {CANARY}")
    except RuntimeError:
        logger.exception("failed")
    assert "RuntimeError" in stream.getvalue()
    assert CANARY not in stream.getvalue()


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


def test_level_comes_from_settings() -> None:
    configure_logging("WARNING")
    assert logging.getLogger().level == logging.WARNING
