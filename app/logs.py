"""One logging configuration for every entry point, with secrets masked on the way out."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Final

MASK: Final = "***"

# Shapes of API keys this project handles, masked even when they were never configured
# (a key pasted into a base URL or echoed in a provider's error text).
_KEY_PATTERNS: Final = (
    re.compile(r"\bsk-[A-Za-z0-9_\-]{12,}"),
    re.compile(
        r"\bms-[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
    ),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9_\-.=]{8,}"),
    re.compile(r"(?i)(api[_-]?key[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9_\-.]{8,}"),
)


def mask_secrets(text: str, secrets: Iterable[str] = ()) -> str:
    """Return `text` with every configured secret and anything shaped like an API key masked."""
    for secret in sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    for pattern in _KEY_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + MASK, text)
    return text


class SecretMaskingFilter(logging.Filter):
    """Rewrite each record's message (and traceback) with secrets masked before output."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: list[str] = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = mask_secrets(record.getMessage(), self.secrets)
        record.msg, record.args = message, None
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = mask_secrets(text, self.secrets)
            record.exc_info = None
        return True


_handlers: list[logging.Handler] = []


def configure_logging(
    level: str = "INFO", *, secrets: Iterable[str] = (), file: str | None = None
) -> None:
    """Configure the root logger once per process (calling again replaces the configuration)."""
    root = logging.getLogger()
    for handler in _handlers:
        root.removeHandler(handler)
        handler.close()
    _handlers.clear()
    masking = SecretMaskingFilter(secrets)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if file:
        Path(file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(file, encoding="utf-8"))
    for handler in handlers:
        handler.addFilter(masking)
        handler.setFormatter(formatter)
        root.addHandler(handler)
        _handlers.append(handler)
    root.setLevel(level.upper())
    # Third-party chatter that would otherwise drown the cycle log.
    for noisy in (
        "httpx",
        "httpx2",
        "openai",
        "ccxt",
        "alembic",
        "apscheduler.executors",
        "urllib3",
        "asyncio",
    ):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
