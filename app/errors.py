"""Errors grouped by what the loop does next.

- `TemporaryError`: skip this step, try again on the next cycle (network, rate limit, timeout).
- `DecisionError`: the model's answer cannot be used; record it with the reason, trade nothing.
- `ConfigError`: refuse to start; the message says what to change.
- `InvariantError`: the books do not add up; stop before doing more damage.

Adapters translate library exceptions into these at the edge (`raise ... from e`), so the core and
the entry points never see a ccxt, openai or SQLAlchemy exception.
"""

from __future__ import annotations


class AppError(Exception):
    """Base class of every error this project raises on purpose."""


class TemporaryError(AppError):
    """A failure that may pass: retry later (network, 5xx, timeout, rate limit)."""


class RateLimitedError(TemporaryError):
    """The provider or exchange refused because of a rate limit or an exhausted quota."""


class DataUnavailableError(TemporaryError):
    """The source has no data for what was asked (yet)."""


class DecisionError(AppError):
    """A model answer that cannot be turned into valid decisions; the reason is the message."""


class ConfigError(AppError):
    """A setting or input that must be fixed by the user before anything can run."""


class InvariantError(AppError):
    """An accounting or state invariant does not hold: stop."""
