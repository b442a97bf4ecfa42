"""Errors grouped by what the loop does next.

- `TemporaryError`: skip this step, try again on the next cycle (network, rate limit, timeout).
- `DecisionError`: the model's answer cannot be used; record it with the reason, trade nothing.
- `ConfigError`: refuse to start; the message says what to change.
- `InvariantError`: the books do not add up; stop before doing more damage.
- `DatabaseError`: the database cannot be used; the entry point stops with the reason.

Adapters translate library exceptions into these at the edge (`raise ... from e`), so the core and
the entry points never see a ccxt, openai or SQLAlchemy exception.
"""

from __future__ import annotations

from datetime import datetime

from app.domain import CallAttempt


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


class DatabaseError(AppError):
    """The database could not be used (unreachable, unwritable, locked); the message says why."""


class DatabaseLockedError(DatabaseError, TemporaryError):
    """Another connection held the database's write lock for longer than the busy timeout."""


class ModelCallError(AppError):
    """A model call that ended without a usable answer; `attempts` lists every request it made.

    The concrete classes below also derive from the group that says what the loop does next
    (`ConfigError`, `TemporaryError`, `RateLimitedError`), so `except ConfigError` still catches a
    rejected key; the engine reads `attempts` to record each request.
    """

    def __init__(self, message: str, *, attempts: tuple[CallAttempt, ...] = ()) -> None:
        super().__init__(message)
        self.attempts: tuple[CallAttempt, ...] = attempts


class ModelAuthError(ModelCallError, ConfigError):
    """The provider refused the API key (401/403): the user must fix the key."""


class ModelBillingError(ModelCallError, ConfigError):
    """The provider account cannot pay for calls (DeepSeek's 402 insufficient balance)."""


class ModelNotServedError(ModelCallError, ConfigError):
    """The provider does not serve the model id (ModelScope's "has no provider supported")."""


class ReplayMissError(ModelCallError, ConfigError):
    """Replay mode found no stored answer for a prompt; the message says which one."""


class ModelQuotaError(ModelCallError, RateLimitedError):
    """A 429 or an exhausted quota; for a chain: every model is out until its skip ends."""


class ModelTimeoutError(ModelCallError, TemporaryError):
    """The model did not answer within the timeout."""


class ModelUnavailableError(ModelCallError, TemporaryError):
    """A 5xx, a network failure or an error reported inside a stream."""


class TruncatedAnswerError(ModelCallError, TemporaryError):
    """A streamed answer that ended without a finish reason (cut short)."""


class EmptyAnswerError(ModelCallError, TemporaryError):
    """An answer with no choices (`choices: null`) or only whitespace."""


class ModelRequestError(ModelCallError, TemporaryError):
    """The provider rejected this request (a 4xx other than key, balance, quota or model id)."""


class ModelImagesRefusedError(ModelRequestError):
    """The model takes no images (a 400 saying so to a request with chart images).

    A vision agent goes on text-only for the rest of the run (`app.llm.strategy`).
    """


class NoModelAvailableError(ModelQuotaError):
    """Every model of a chain is skipped (quota, cooldown or not served): hold until `until`.

    Temporary on purpose: ModelScope answers "has no provider supported" for hours at a time, so
    even a chain whose only model is not served waits for the next quota day instead of stopping.
    """

    def __init__(
        self,
        message: str,
        *,
        attempts: tuple[CallAttempt, ...] = (),
        until: datetime | None = None,
    ) -> None:
        super().__init__(message, attempts=attempts)
        self.until = until
